import json
import os
import runpy
import subprocess
import sys

import numpy as np
import pytest

from dked_tf.config import preset_config
from dked_tf.data.split import merge_detections
from dked_tf.evaluation.top_ranked import OUTCOMES
from dked_tf.experiment import recipe
from dked_tf.experiment.evaluate import MERGE_IOU
from dked_tf.experiment.report import PAPER_HRSC, render_report, seed_summary
from dked_tf.experiment.saving import is_saved_detector, save_detector

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_script(name, argv):
    """main(argv) of recipes/<name>.py, loaded as the script file it is."""
    return runpy.run_path(os.path.join(ROOT, "recipes", name))["main"](argv)


CONTRACT_KEYS = ("map07", "map12", "params", "gflops", "latency_ms_cpu", "train_seconds")


def test_patch_detections_merge_back_to_scenes():
    box = np.array([10, 10, 50, 10, 50, 30, 10, 30], float)
    # the same object seen by two overlapping patches (offsets 0 and 40) plus a weaker duplicate
    patch = {
        "ship": [("P1__1__0___0", 0.9, box + [40, 0] * 4), ("P1__1__40___0", 0.8, box), ("P2__1__0___100", 0.7, box)]
    }
    merged = merge_detections(patch, iou_threshold=MERGE_IOU)
    by_scene = {}
    for scene, score, poly in merged["ship"]:
        by_scene.setdefault(scene, []).append((score, np.asarray(poly, float)))
    assert sorted(by_scene) == ["P1", "P2"]
    assert len(by_scene["P1"]) == 1 and by_scene["P1"][0][0] == pytest.approx(0.9)
    np.testing.assert_allclose(by_scene["P1"][0][1], box + [40, 0] * 4)
    np.testing.assert_allclose(by_scene["P2"][0][1], box + [0, 100] * 4)


def test_seed_summary_and_report_table():
    seeds = {
        "0": {
            "student": {"map07": 0.50, "map12": 0.40, "quality_median": 0.30, "first_true_positive_rank": {"ship": 3}},
            "student_dked": {
                "map07": 0.58,
                "map12": 0.45,
                "quality_median": 0.35,
                "first_true_positive_rank": {"ship": 1},
            },
        },
        "1": {
            "student": {"map07": 0.54, "map12": 0.42, "quality_median": 0.28},
            "student_dked": {"map07": 0.60, "map12": 0.43, "quality_median": 0.36},
        },
    }
    summary = seed_summary(seeds)
    assert summary["student"]["map07_spread"] == pytest.approx(0.04)
    assert summary["dked_gain_map07"] == pytest.approx([0.08, 0.06])
    assert summary["student"]["map12_spread"] == pytest.approx(0.02)
    assert summary["dked_gain_map12"] == pytest.approx([0.05, 0.01])
    assert summary["quality"]["student_spread"] == pytest.approx(0.02)
    assert summary["quality"]["dked_gain"] == pytest.approx([0.05, 0.08])
    models = {
        k: dict(zip(CONTRACT_KEYS, values))
        for k, values in {
            "teacher": (0.7, 0.72, 2.7e6, 0.58, 25.0, 100.0),
            "student": (0.5, 0.52, 6.4e5, 0.12, 15.0, 60.0),
            "student_dked": (0.58, 0.6, 6.4e5, 0.12, 15.0, 80.0),
        }.items()
    }
    text = render_report(
        {"models": models, "seeds": seeds, "seed_summary": summary, "dataset": "x"},
        preset_config("quick"),
        "HRSC2016",
        PAPER_HRSC,
        {"teacher": "T", "student": "S", "student_dked": "S+DKED"},
    )
    assert "| S+DKED | 58.00 | 60.00 | 0.64 | 0.12 | 15.0 | 80 | - | 85.17" in text
    assert "+8.00 mAP(07)" in text and "80.05 → 85.17" in text
    assert "closes 40% of it" in text  # gap 20 points, gain 8
    assert "DKED gain per seed +0.050, +0.080 (mean +0.065)" in text
    assert "| 1 | 54.00 | 60.00 | +6.00 | 42.00 | 43.00 | +1.00 | 0.280 | 0.360 | - / - |" in text
    assert "| 0.300 | 0.350 | 3 / 1 |" in text
    # gains 8 and 6 against a spread of 4; in mAP(12) 5 and 1 against 2
    assert "mean gain +7.00; the gain exceeds the student's spread on 2 of 2 seeds." in text
    assert "mean gain +3.00; the gain exceeds the student's spread on 1 of 2 seeds." in text
    assert "side by side" not in text  # the quick preset trains seeds one after the other
    assert "Why found objects miss" not in text  # results without box errors: no table
    errors = {
        "ground_truths": 10,
        "found": 0.9,
        "passed": 0.2,
        "iou_median": 0.3,
        "length_ratio_median": 1.1,
        "width_ratio_median": 2.0,
        "angle_error_median": 7.5,
        "centre_across_median": 0.8,
        "centre_along_median": 0.05,
        "passed_if_exact": {"centre_across": 0.3, "centre_along": 0.25, "length": 0.22, "width": 0.4, "angle": 0.21},
    }
    with_errors = render_report(
        {"models": {**models, "student": {**models["student"], "box_errors": errors}}, "dataset": "x"},
        preset_config("quick"),
        "HRSC2016",
        PAPER_HRSC,
        {"teacher": "T", "student": "S", "student_dked": "S+DKED"},
    )
    assert "| S | 0.90 | 0.20 | 1.10 | 2.00 | 7.5 | 0.80 | 0.30 | 0.22 | 0.40 | 0.21 |" in with_errors
    assert "The top of the ranking" not in with_errors  # results without it: no table
    top = {
        "ranked": 10,
        "true_positive": 0.3,
        "duplicate": 0.1,
        "near_miss": 0.4,
        "background": 0.2,
        "difficult": 0.0,
        "precision_at": {"1": 0.0, "5": 0.2, "10": 0.3, "20": 0.3, "50": 0.3, "100": 0.3},
        "first_true_positive_rank": {"ship": 4},
    }
    with_top = render_report(
        {"models": {**models, "student_dked": {**models["student_dked"], "top_ranked": top}}, "dataset": "x"},
        preset_config("quick"),
        "HRSC2016",
        PAPER_HRSC,
        {"teacher": "T", "student": "S", "student_dked": "S+DKED"},
    )
    assert "| S+DKED | 4 | 0.00 | 0.30 | 0.30 | 10 | 0.30 | 0.10 | 0.40 | 0.20 |" in with_top
    side_by_side = render_report(
        {"models": models, "seeds": seeds, "seed_summary": summary},
        preset_config("default"),
        "HRSC2016",
        PAPER_HRSC,
        {"teacher": "T", "student": "S", "student_dked": "S+DKED"},
    )
    assert "wall time while 2 seeds trained side by side" in side_by_side
    # older results without mAP(12) per seed still render
    old = {k: {m: {"map07": e["map07"]} for m, e in v.items()} for k, v in seeds.items()}
    text = render_report(
        {"models": models, "seeds": old, "seed_summary": seed_summary(old), "dataset": "x"},
        preset_config("quick"),
        "HRSC2016",
        PAPER_HRSC,
        {"teacher": "T", "student": "S", "student_dked": "S+DKED"},
    )
    assert "| 1 | 54.00 | 60.00 | +6.00 | - | - | - | - | - |" in text and "mAP(12): seed" not in text


def test_unknown_stage_is_rejected():
    with pytest.raises(SystemExit, match="unknown stage"):
        recipe.parse_stages("teacher,distil")


def test_recipe_stages_resume_from_checkpoints_and_write_the_contract(tiny_detector, tmp_path):
    """Checkpoints of the three models already exist (as after an interrupted run): the training
    stages find and skip them, evaluate/report write results.json with the contract keys."""
    out = tmp_path / "run"
    cache = tmp_path / "cache"
    arch = "gghl_darknet53_t"
    for key in ("teacher", "student", "student_dked"):
        model = tiny_detector(arch, 1, forward_size=64)
        save_detector(
            model,
            str(out / "checkpoints" / key),
            architecture=arch,
            class_names=("ship",),
            image_size=64,
            train_seconds=1.0,
        )
    code = run_script(
        "hrsc_lodet.py",
        [
            "--smoke",
            "--out",
            str(out),
            "--data-cache",
            str(cache),
            "--verbose",
            "0",
            "--stages",
            "teacher,student,dked,evaluate,report",
            "--set",
            f"model.teacher={arch}",
            "--set",
            f"model.student={arch}",
        ],
    )
    assert code == 0
    results = json.loads((out / "results.json").read_text())
    assert {"dataset", "metric", "models"} <= set(results)
    assert "synthetic" in results["dataset"]
    for key in ("teacher", "student", "student_dked"):
        entry = results["models"][key]
        for name in CONTRACT_KEYS:
            assert isinstance(entry[name], (int, float)) and np.isfinite(entry[name]), (key, name)
        assert 0.0 <= entry["map07"] <= 1.0 and entry["train_seconds"] == 1.0
        assert entry["num_gt"]["ship"] > 0
        assert entry["localisation"]["positive_cells"] > 0
        assert 0.0 <= entry["localisation"]["quality_median"] <= 1.0
        top = entry["top_ranked"]
        assert top["ranked"] <= entry["num_gt"]["ship"]
        assert sum(top[name] for name in OUTCOMES) == pytest.approx(1.0) if top["ranked"] else True
        # an untrained model's highest-scored detections are false positives, drawn on one sheet
        assert (out / "detections" / f"{key}_top_false_positives.png").exists() == (entry["num_det"]["ship"] > 0)
    report = (out / "report.md").read_text()
    assert "| Methods | mAP(07) | mAP(12) |" in report and "85.17" in report and "Loc. q" in report
    assert (out / "config.yaml").exists() and (out / "pr_curves").is_dir()
    assert len(os.listdir(out / "detections" / "student_dked")) == 1


def test_evaluations_are_kept_beside_each_checkpoint_and_redone_when_it_changes(tiny_detector, tmp_path, capsys):
    """The evaluate stage keeps each model's test figures in its checkpoint folder; a second run
    reuses them (same figures), a retrained checkpoint (new weights file) or other decode
    settings are evaluated anew, and a corrupt file is evaluated over."""
    out, cache = tmp_path / "run", tmp_path / "cache"
    arch = "gghl_darknet53_t"
    for key in ("teacher", "student", "student_dked"):
        save_detector(
            tiny_detector(arch, 1, forward_size=64),
            str(out / "checkpoints" / key),
            architecture=arch,
            class_names=("ship",),
            image_size=64,
        )
    argv = ["--smoke", "--out", str(out), "--data-cache", str(cache), "--stages", "evaluate"]
    argv += ["--set", f"model.teacher={arch}", "--set", f"model.student={arch}"]
    assert run_script("hrsc_lodet.py", argv) == 0
    first = json.loads((out / "results.json").read_text())["models"]
    kept = json.loads((out / "checkpoints" / "student" / "evaluation.json").read_text())
    assert kept["entry"]["map07"] == first["student"]["map07"] and kept["drawn"] is True
    assert kept["inputs"]["test_images"]["count"] > 0 and kept["inputs"]["classes"] == ["ship"]
    capsys.readouterr()

    # the student is trained again (its weights file rewritten); the others are unchanged
    student = tiny_detector(arch, 1, forward_size=64)
    student.set_weights([w * 0.5 for w in student.get_weights()])
    save_detector(
        student, str(out / "checkpoints" / "student"), architecture=arch, class_names=("ship",), image_size=64
    )
    (out / "checkpoints" / "student_dked" / "evaluation.json").write_text("{ truncated")
    assert run_script("hrsc_lodet.py", argv) == 0
    printed = capsys.readouterr().out
    assert "evaluate: teacher: figures of" in printed
    assert "evaluate: student: figures of" not in printed and "evaluate: student_dked: figures of" not in printed
    second = json.loads((out / "results.json").read_text())["models"]
    assert second["teacher"]["map07"] == first["teacher"]["map07"]
    assert second["teacher"]["per_class07"] == first["teacher"]["per_class07"]
    assert {"params", "gflops", "latency_ms_cpu"} <= set(second["teacher"])
    json.loads((out / "checkpoints" / "student_dked" / "evaluation.json").read_text())  # written anew

    assert run_script("hrsc_lodet.py", [*argv, "--set", "model.score_threshold=0.5"]) == 0
    assert "figures of" not in capsys.readouterr().out


@pytest.mark.skipif(
    not os.environ.get("DKED_TF_SLOW_TESTS"), reason="full smoke run (minutes); set DKED_TF_SLOW_TESTS=1"
)
def test_full_smoke_run_of_the_main_recipe(tmp_path):
    out = tmp_path / "run"
    proc = subprocess.run(
        [
            sys.executable,
            os.path.join(ROOT, "recipes", "hrsc_lodet.py"),
            "--smoke",
            "--out",
            str(out),
            "--data-cache",
            str(tmp_path / "cache"),
            "--verbose",
            "0",
        ],
        capture_output=True,
        text=True,
        timeout=1800,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads((out / "results.json").read_text())
    for key in ("teacher", "student", "student_dked"):
        assert set(CONTRACT_KEYS) <= set(results["models"][key])
    assert (out / "export" / "saved_model" / "saved_model.pb").exists()
    assert (out / "export" / "student_dked.keras").exists()


def test_self_distillation_student_follows_the_teacher():
    parser = recipe.build_parser("", "runs/x")
    args = parser.parse_args(["--quick", "--set", "model.teacher=gghl_darknet53_t", "--seed", "7"])
    cfg = recipe.resolve_recipe_config(args, student_is_teacher=True)
    assert cfg.model.student == cfg.model.teacher == "gghl_darknet53_t"
    assert cfg.train.seed == cfg.teacher_train.seed == 7 and cfg.preset == "quick"
    args = parser.parse_args(["--set", "model.student=gghl_darknet53_s"])
    assert recipe.resolve_recipe_config(args, student_is_teacher=True).model.student == "gghl_darknet53_s"
    dota = recipe.resolve_recipe_config(parser.parse_args(["--smoke"]), task="dota")
    assert dota.data.format == "dota" and dota.data.synthetic_image_size >= 2 * dota.data.patch_size


def test_seeds_train_side_by_side_in_their_own_processes(tiny_detector, tmp_path, capsys):
    """--jobs 2: the two seeds' student and DKED student train at once, one process each; their
    epoch lines are echoed with the seed in front, their logs kept; each process evaluates its
    model, the first seed's DKED process exports it, a last process evaluates the teacher, and
    the evaluate and export stages take those results; a rerun finds and skips them."""
    out, cache = tmp_path / "run", tmp_path / "cache"
    teacher = tiny_detector("gghl_darknet53_t", 1, forward_size=64)
    save_detector(
        teacher,
        str(out / "checkpoints" / "teacher"),
        architecture="gghl_darknet53_t",
        class_names=("ship",),
        image_size=64,
    )
    argv = [
        "--smoke",
        "--out",
        str(out),
        "--data-cache",
        str(cache),
        "--seeds",
        "0",
        "1",
        "--jobs",
        "2",
        "--stages",
        "student,dked,evaluate,export",
    ]
    assert run_script("hrsc_lodet.py", argv) == 0
    printed = capsys.readouterr().out
    for seed in (0, 1):
        for key in ("student", "student_dked"):
            folder = out / "checkpoints" / f"{key}_seed{seed}"
            assert is_saved_detector(str(folder))
            assert f"seed {seed} | [{key}] epoch 1/1 " in printed
            # evaluated in the process that trained it; the evaluate stage took its figures
            assert f"seed {seed} | " in printed and f"evaluate: {key} (seed {seed}) mAP(07)" in printed
            assert f"evaluate: {key} (seed {seed}): figures of {folder / 'evaluation.json'}" in printed
        log = (out / "logs" / f"seed{seed}_student_dked.log").read_text()
        assert f"student_dked: training lodet_mobilenetv2_t for 1 epochs at 64 px, 8 images, seed {seed}" in log
        assert ("export: one-file model" in log) == (seed == 0)
    assert "teacher | " in printed and "evaluate: teacher: figures of" in printed
    results = json.loads((out / "results.json").read_text())
    assert set(results["seeds"]) == {"0", "1"} and set(results["models"]) == {"teacher", "student", "student_dked"}
    for key, entry in results["models"].items():
        assert {"params", "gflops", "latency_ms_cpu", "map07", "localisation"} <= set(entry), key
    assert (
        results["seeds"]["1"]["student_dked"]["map07"]
        == json.loads((out / "checkpoints" / "student_dked_seed1" / "evaluation.json").read_text())["entry"]["map07"]
    )
    assert "export: found the exported files" in printed
    exported = results["export"]
    assert os.path.exists(exported["keras"]["path"]) and os.path.isdir(exported["saved_model"]["path"])
    assert run_script("hrsc_lodet.py", argv) == 0
    printed = capsys.readouterr().out
    assert "seed 0: found student, student_dked checkpoints, skipping" in printed and " | started" not in printed


def test_side_by_side_dked_without_a_teacher_stops_before_starting_processes(tmp_path):
    with pytest.raises(SystemExit, match="needs a trained teacher"):
        run_script(
            "hrsc_lodet.py",
            [
                "--smoke",
                "--out",
                str(tmp_path / "run"),
                "--data-cache",
                str(tmp_path / "cache"),
                "--seeds",
                "0",
                "1",
                "--jobs",
                "2",
                "--stages",
                "dked",
                "--verbose",
                "0",
            ],
        )
    assert not (tmp_path / "run" / "logs").exists()
    with pytest.raises(SystemExit, match="--jobs 0: needs at least 1"):
        run_script("hrsc_lodet.py", ["--smoke", "--out", str(tmp_path / "run"), "--jobs", "0"])


@pytest.mark.parametrize("script", ["hrsc_lodet.py", "dota_lodet.py", "hrsc_gghl_selfdistill.py"])
def test_recipe_scripts_show_their_help(script, capsys):
    with pytest.raises(SystemExit) as stop:
        run_script(script, ["--help"])
    assert stop.value.code == 0
    assert "--stages" in capsys.readouterr().out
