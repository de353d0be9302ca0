"""Clear errors and protected runs (issue #15, part A): values validated where the config is
resolved, one line and exit code 2 for a user's mistake on every entry point, finished runs
refused without --force, interrupted runs resumed only with their own config, and recipe stages
retrained when their checkpoint was trained with another config."""

import json
import os
import shutil
import subprocess
import sys

import cv2
import numpy as np
import pytest

from dked_tf import cli
from dked_tf.config import LARGEST_STRIDE, PRESETS, ConfigError, preset_config, resolve_config, validate_config
from dked_tf.experiment import recipe, train_lib
from dked_tf.experiment.saving import MODEL_FILE, RECORD_KEY, WEIGHTS_FILE

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _one_error_line(capsys, command):
    """The single line a failed command printed on stderr (asserts there is exactly one)."""
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith(f"{command}: error: ") and "Traceback" not in err
    return lines[0]


# ----------------------------------------------------------------------------- validation


def test_every_preset_is_valid():
    for name in PRESETS:
        for task in ("hrsc", "dota"):
            validate_config(preset_config(name, task))


@pytest.mark.parametrize(
    "override, message",
    [
        ("train.epochs=0", "train.epochs=0: needs at least 1"),
        ("teacher_train.epochs=-1", "teacher_train.epochs=-1: needs at least 1"),
        ("data.batch_size=0", "data.batch_size=0: needs at least 1"),
        (
            "data.image_size=100",
            "data.image_size=100: needs a multiple of 32 (the models' largest stride), e.g. 96 or 128",
        ),
        ("data.image_size=0", "data.image_size=0: needs a positive multiple of 32"),
        ("data.image_size=16", "data.image_size=16: needs a multiple of 32 (the models' largest stride), e.g. 32"),
        ("data.test_image_size=33", "data.test_image_size=33: needs a multiple of 32"),
        ("data.multiscale=[224,250]", "data.multiscale=250: needs a multiple of 32"),
        ("data.input_scale=-1", 'data.input_scale=\'-1\': use "fit", "auto" or a number > 0'),
        ("data.patch_gap=64", "data.patch_gap=64: must be below data.patch_size (64)"),
        ("model.score_threshold=1.5", "model.score_threshold=1.5: needs a number in [0, 1]"),
        ("model.iou_threshold=-0.1", "model.iou_threshold=-0.1: needs a number in [0, 1]"),
        ("model.max_detections=0", "model.max_detections=0: needs at least 1"),
        ("train.learning_rate=0", "train.learning_rate=0.0: needs a number > 0"),
        ("train.min_learning_rate=1", "train.min_learning_rate=1.0: exceeds train.learning_rate"),
        ("train.momentum=1.5", "train.momentum=1.5: needs a number in [0, 1]"),
        ("train.optimizer=adam", "train.optimizer='adam': choose from adamw, sgd"),
        ("distill.lam=2", "distill.lam=2.0: needs a number in [0, 1]"),
        ("distill.response_scale=-1", "distill.response_scale=-1.0: needs at least 0"),
        ("export.quantize=int4", "export.quantize='int4': choose from none, fp16, int8"),
        ("seed_jobs=0", "seed_jobs=0: needs at least 1"),
    ],
)
def test_a_bad_value_is_a_config_error_naming_key_value_and_rule(override, message):
    with pytest.raises(ConfigError) as caught:
        resolve_config("smoke", overrides=[override])
    assert str(caught.value).startswith(message)


@pytest.mark.parametrize(
    "override", ["data.image_size=32", "model.score_threshold=0", "model.iou_threshold=1", "data.test_image_size=0"]
)
def test_the_edges_of_the_ranges_are_accepted(override):
    resolve_config("smoke", overrides=[override])


def test_the_largest_stride_is_the_models_and_the_pipelines(tiny_detector):

    assert LARGEST_STRIDE == max(tiny_detector("lodet_mobilenetv2_t", 1).strides)


def test_the_recipe_validates_its_config_and_reports_one_line(tmp_path, capsys):
    args = recipe.build_parser("", "runs/x").parse_args(["--smoke", "--set", "train.epochs=0"])
    with pytest.raises(ConfigError, match="train.epochs=0"):
        recipe.resolve_recipe_config(args)
    code = recipe.run_recipe(["--smoke", "--out", str(tmp_path / "run"), "--set", "data.image_size=100"])
    assert code == 2
    assert "data.image_size=100: needs a multiple of 32" in _one_error_line(capsys, os.path.basename(sys.argv[0]))
    assert not (tmp_path / "run").exists()


# ----------------------------------------------------------------------------- one line, exit 2


@pytest.mark.parametrize(
    "argv, expected",
    [
        (["--epochs", "0"], "train.epochs=0: needs at least 1"),
        (["--epochs", "-1"], "train.epochs=-1: needs at least 1"),
        (["--image-size", "100"], "data.image_size=100: needs a multiple of 32"),
        (["--set", "data.batch_size=0"], "data.batch_size=0: needs at least 1"),
        (["--set", "model.iou_threshold=1.5"], "model.iou_threshold=1.5: needs a number in [0, 1]"),
        (["--config", "{missing}"], "cannot read config file {missing}"),
        (["--config", "{bad}"], "{bad}: not valid YAML"),
    ],
)
def test_train_mistakes_are_one_line_and_exit_code_2(tmp_path, capsys, argv, expected):
    missing, bad = str(tmp_path / "missing.yaml"), str(tmp_path / "bad.yaml")
    with open(bad, "w") as handle:
        handle.write("train:\n  epochs: [1\n")
    argv = [a.format(missing=missing, bad=bad) for a in argv]
    out = tmp_path / "run"
    code = cli.main(["train", "--preset", "smoke", "--out", str(out), "--data-cache", str(tmp_path / "c"), *argv])
    assert code == 2
    line = _one_error_line(capsys, "dked-tf train")
    assert expected.format(missing=missing, bad=bad) in line
    assert not out.exists() and not (tmp_path / "c").exists()  # nothing started
    if "bad.yaml" in expected:
        assert "line 2" in line


def test_the_installed_entry_point_prints_no_traceback(tmp_path):
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""), TF_CPP_MIN_LOG_LEVEL="3")
    proc = subprocess.run(
        [sys.executable, "-m", "dked_tf", "train", "--preset", "smoke", "--epochs", "0", "--out", str(tmp_path / "r")],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1] == "dked-tf train: error: train.epochs=0: needs at least 1"
    assert "Traceback" not in proc.stderr and proc.stdout == ""


def _fake_saved_detector(folder, record=None, **meta):
    """A folder that counts as a saved detector (model.json + a weights file); the weights are
    not read by the code under test."""
    os.makedirs(folder, exist_ok=True)
    data = {"architecture": "lodet_mobilenetv2_t", "num_classes": 1, "class_names": ["ship"], "image_size": 64}
    data.update(meta)
    if record is not None:
        data[RECORD_KEY] = record
    with open(os.path.join(folder, MODEL_FILE), "w") as handle:
        json.dump(data, handle)
    with open(os.path.join(folder, WEIGHTS_FILE), "wb") as handle:
        handle.write(b"weights")
    return str(folder)


def test_a_zero_byte_weights_file_is_one_line_naming_it_in_export_and_predict(tiny_detector, tmp_path, capsys):
    from dked_tf.experiment.saving import save_detector

    run = str(tmp_path / "run")
    save_detector(
        tiny_detector("lodet_mobilenetv2_t", 1, forward_size=64),
        run,
        architecture="lodet_mobilenetv2_t",
        class_names=("ship",),
        image_size=64,
    )
    weights = os.path.join(run, WEIGHTS_FILE)
    open(weights, "wb").close()
    code = cli.main(["export", "--weights", run, "--format", "saved_model", "--out", str(tmp_path / "sm")])
    assert code == 2
    assert f"{weights} cannot be read (0 bytes" in _one_error_line(capsys, "dked-tf export")
    image = tmp_path / "images"
    image.mkdir()
    # one readable image, so predict gets past its "no images" check to loading the model
    cv2.imwrite(str(image / "scene.png"), np.zeros((32, 32, 3), np.uint8))
    code = cli.main(["predict", str(image), "--model", run, "--out", str(tmp_path / "pred")])
    assert code == 2
    assert f"{weights} cannot be read (0 bytes" in _one_error_line(capsys, "dked-tf predict")


@pytest.mark.parametrize(
    "argv, expected",
    [
        (["--image-size", "100"], "--image-size=100: needs a multiple of 32"),
        (["--score-threshold", "2"], "--score-threshold=2.0: needs a number in [0, 1]"),
        (["--format", "tflite", "--quantize", "int8"], "--quantize int8 needs --representative-data DIR"),
    ],
)
def test_export_checks_its_values_before_loading(tmp_path, capsys, argv, expected):
    args = ["export", "--weights", str(tmp_path / "nothing"), "--out", str(tmp_path / "o")]
    if "--format" not in argv:
        args += ["--format", "saved_model"]
    assert cli.main(args + argv) == 2
    assert expected in _one_error_line(capsys, "dked-tf export")


def test_distill_from_a_missing_teacher_is_one_line(tmp_path, capsys):
    code = cli.main(["distill", "--teacher", str(tmp_path / "nope"), "--preset", "smoke", "--out", str(tmp_path / "d")])
    assert code == 2
    assert f"{tmp_path / 'nope'} is not a saved detector" in _one_error_line(capsys, "dked-tf distill")


# ----------------------------------------------------------------------------- protected runs


@pytest.mark.parametrize("command", ["train", "distill"])
def test_a_finished_run_is_refused_without_force(tmp_path, capsys, command):
    out = _fake_saved_detector(tmp_path / "run")
    before = {name: open(os.path.join(out, name), "rb").read() for name in os.listdir(out)}
    teacher = _fake_saved_detector(tmp_path / "teacher")
    extra = ["--teacher", teacher] if command == "distill" else []
    code = cli.main([command, "--preset", "smoke", "--out", out, "--data-cache", str(tmp_path / "c"), *extra])
    assert code == 2
    line = _one_error_line(capsys, f"dked-tf {command}")
    assert f"{out} holds a finished model" in line and "--force" in line
    assert {name: open(os.path.join(out, name), "rb").read() for name in os.listdir(out)} == before
    assert not (tmp_path / "c").exists()  # refused before any data was prepared


def test_force_removes_the_finished_model_before_training(tmp_path, monkeypatch):
    """--force: model.json (what marks the run finished), weights, history and metrics go first,
    then training starts over (resume=False)."""
    from dked_tf.commands import train as train_command

    out = _fake_saved_detector(tmp_path / "run")
    for name in ("history.json", "metrics.json"):
        with open(os.path.join(out, name), "w") as handle:
            handle.write("{}")
    seen = {}

    class Stop(Exception):
        pass

    def fake_train(cfg, role, **kwargs):
        seen.update(kwargs, files=sorted(os.listdir(out)))
        raise Stop

    monkeypatch.setattr(train_command, "train", fake_train)
    with pytest.raises(Stop):
        cli.main(["train", "--preset", "smoke", "--out", out, "--data-cache", str(tmp_path / "c"), "--force"])
    assert seen["resume"] is False and seen["files"] == ["config.json", "config.yaml"]


def _smoke_args(tmp_path, *extra):
    return ["train", "--preset", "smoke", "--data-cache", str(tmp_path / "cache"), "--out", str(tmp_path / "run")] + [
        *extra
    ]


def test_an_interrupted_run_of_another_config_is_refused_and_one_of_the_same_config_resumes(tmp_path, capsys):
    """An interrupted run (its backup recorded with train.epochs=2): rerun with --epochs 3 it is
    refused in one line naming the difference (before config.yaml is overwritten); rerun with its
    own config, or with --no-resume, the check passes."""
    cfg = resolve_config("smoke", overrides=[f"data.cache_dir={tmp_path / 'cache'}", "train.epochs=2"])
    from dked_tf.experiment.data import prepare_records, resolve_input

    records = prepare_records(cfg, "train", verbose=0)
    cfg, _ = resolve_input(cfg, records[0])
    backup = tmp_path / "run" / "backup" / "backup"
    backup.mkdir(parents=True)
    (backup / "epoch-0001.weights.h5").write_bytes(b"w")
    record = train_lib.run_record(cfg, "student")
    (backup / "epoch-0001.json").write_text(json.dumps({"epoch": 1, "weights_bytes": 1, "record": record}))
    (tmp_path / "run" / "config.yaml").write_text("the interrupted run's config\n")
    code = cli.main(_smoke_args(tmp_path, "--epochs", "3", "--verbose", "0"))
    assert code == 2
    line = _one_error_line(capsys, "dked-tf train")
    assert f"{tmp_path / 'run' / 'backup'} holds an interrupted run of another config (schedule.epochs: 2 -> 3)" in line
    assert "--no-resume" in line
    assert (tmp_path / "run" / "config.yaml").read_text() == "the interrupted run's config\n"
    from dked_tf.commands import train as train_command

    for argv in (["--epochs", "2"], ["--epochs", "3", "--no-resume"]):
        args = cli._command_parser("train")[1].parse_args(_smoke_args(tmp_path, *argv, "--verbose", "0")[1:])
        train_command.start_run(train_command.config_from_args(args, "train"), args, "student")  # no error


def test_train_keeps_the_backup_until_the_model_and_its_history_are_saved(tmp_path, monkeypatch):
    """A kill after the last epoch's backup, before model.json is written (on the old code
    Keras had already deleted the backup: the whole training was lost): the backup and
    history.json are still there; once the model is saved the backup goes. The training itself
    is a stand-in here (`fit` is tested with real backups in test_reliability_runs.py)."""
    cfg = resolve_config("smoke", overrides=[f"data.cache_dir={tmp_path / 'cache'}"])
    out = tmp_path / "run"
    seen = {}

    def fake_fit(model, dataset, *, checkpoint_dir, keep_backup, record, **kwargs):
        seen.update(keep_backup=keep_backup, record=record)
        os.makedirs(os.path.join(checkpoint_dir, "backup"))
        with open(os.path.join(checkpoint_dir, "backup", "epoch-0001.json"), "w") as handle:
            handle.write("{}")
        return train_lib.TrainOutcome(history={"loss": [3.0]}, train_seconds=2.0, epochs=1)

    def killed(*args, **kwargs):
        raise KeyboardInterrupt("killed before the model was saved")

    monkeypatch.setattr(train_lib, "fit", fake_fit)
    monkeypatch.setattr(train_lib, "save_detector", killed)
    with pytest.raises(KeyboardInterrupt):
        train_lib.train(cfg, "student", out=str(out), verbose=0)
    assert seen["keep_backup"] is True and seen["record"] == train_lib.run_record(cfg, "student")
    assert (out / "backup" / "backup" / "epoch-0001.json").exists() and not (out / MODEL_FILE).exists()
    history = json.loads((out / "history.json").read_text())
    assert history == {"history": {"loss": [3.0]}, "train_seconds": 2.0, "epochs": 1}
    monkeypatch.undo()
    monkeypatch.setattr(train_lib, "fit", fake_fit)
    shutil.rmtree(out / "backup")
    train_lib.train(cfg, "student", out=str(out), verbose=0)
    assert json.loads((out / MODEL_FILE).read_text())[RECORD_KEY] == seen["record"]
    assert not (out / "backup").exists()


# ----------------------------------------------------------------------------- recipe stages


@pytest.fixture
def smoke_recipe(tmp_path, monkeypatch):
    """A Recipe over tmp_path/run with a stand-in for training (records the calls, writes a
    checkpoint with the record the real `train` would write)."""
    cfg = preset_config("smoke")
    calls = []

    def fake_train(cfg, role, seed=None, out=None, teacher=None, *, resume=True, **kwargs):
        calls.append({"role": role, "out": out, "resume": resume, "teacher": teacher})
        _fake_saved_detector(out, train_lib.run_record(cfg, role, seed=seed, teacher=teacher))

        class Result:
            outcome = train_lib.TrainOutcome(history={}, train_seconds=1.0, epochs=1)

        return Result()

    monkeypatch.setattr(recipe, "train", fake_train)

    def make(cfg=cfg):
        made = recipe.Recipe(cfg, str(tmp_path / "run"), [0], verbose=1)
        made._data["train"] = ([], ("ship",))
        return made

    return make, calls


def test_a_stage_whose_checkpoint_matches_is_skipped_and_one_of_another_config_retrained(smoke_recipe, capsys):
    make, calls = smoke_recipe
    first = make()
    first.train_stage("teacher", 0)
    assert len(calls) == 1
    make().train_stage("teacher", 0)
    assert len(calls) == 1 and "teacher: found" in capsys.readouterr().out
    changed = preset_config("smoke")
    changed.data.image_size = 96
    make(changed).train_stage("teacher", 0)
    assert len(calls) == 2 and calls[-1]["resume"] is True
    printed = capsys.readouterr().out
    assert "was trained with another config (data.image_size: 64 -> 96); retraining" in printed


def test_a_retrained_teacher_makes_the_dked_student_stale_but_not_the_plain_one(smoke_recipe, capsys):
    make, calls = smoke_recipe
    for key in ("teacher", "student", "student_dked"):
        make().train_stage(key, 0)
    assert [c["role"] for c in calls] == ["teacher", "student", "student"]
    changed = preset_config("smoke")
    changed.teacher_train.epochs = 3
    for key in ("teacher", "student", "student_dked"):
        make(changed).train_stage(key, 0)
    assert len(calls) == 5 and calls[-1]["teacher"] is not None  # teacher and dked student again
    printed = capsys.readouterr().out
    assert "student: found" in printed and "teacher.schedule.epochs: 1 -> 3" in printed


def test_a_checkpoint_saved_without_a_record_is_compared_on_what_it_says(smoke_recipe, tmp_path, capsys):
    make, calls = smoke_recipe
    folder = str(tmp_path / "run" / "checkpoints" / "teacher")
    _fake_saved_detector(folder, architecture="gghl_darknet53_t", image_size=64)
    make().train_stage("teacher", 0)
    assert not calls
    _fake_saved_detector(folder, architecture="gghl_darknet53_t", image_size=128)
    make().train_stage("teacher", 0)
    assert len(calls) == 1 and "data.image_size: 128 -> 64" in capsys.readouterr().out


def test_the_backup_of_another_config_is_started_over(smoke_recipe, tmp_path, capsys):
    make, calls = smoke_recipe
    other = preset_config("smoke")
    other.teacher_train.learning_rate = 0.5
    backup = tmp_path / "run" / "checkpoints" / "backup" / "teacher" / "backup"
    backup.mkdir(parents=True)
    (backup / "epoch-0001.weights.h5").write_bytes(b"w")
    record = train_lib.run_record(other, "teacher")
    (backup / "epoch-0001.json").write_text(json.dumps({"epoch": 1, "record": record}))
    make().train_stage("teacher", 0)
    assert calls[-1]["resume"] is False
    assert "the backup in" in capsys.readouterr().out


def test_seeds_side_by_side_retrain_only_the_stale_ones(smoke_recipe, monkeypatch):
    make, calls = smoke_recipe
    for seed in (0, 1):
        made = make()
        made.seeds = [0, 1]
        made.train_stage("student", seed)
    started = []
    monkeypatch.setattr(recipe, "run_jobs", lambda jobs, **kwargs: started.extend(job.label for job in jobs))
    made = make()
    made.seeds = [0, 1]
    made.train_seeds_side_by_side(["student"], 2)
    assert started == []
    folder = made.checkpoint("student", 1)
    meta = json.loads(open(os.path.join(folder, MODEL_FILE)).read())
    meta[RECORD_KEY]["schedule"]["learning_rate"] = 1.0
    with open(os.path.join(folder, MODEL_FILE), "w") as handle:
        json.dump(meta, handle)
    made.train_seeds_side_by_side(["student"], 2)
    assert started == ["seed 1"]
