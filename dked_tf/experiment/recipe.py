"""The paper's experiment as stages over one output folder: teacher → student → DKED student →
evaluate → export → report. `recipes/*.py` are thin scripts over `run_recipe`.

Stages (each resumable: finished models are found in checkpoints/ and skipped when the config
they were trained with (`trained_with` in their model.json) matches the current one, else
retrained; an interrupted training continues from its last backup):

1. teacher   the GGHL teacher (model.teacher, teacher_train schedule)
2. student   the student alone, the baseline (model.student, train schedule), once per seed
3. dked      the same student with DKED from the teacher, same schedule and seed as 2
4. evaluate  mAP(07), mAP(12), localisation quality, params, GFLOPs, CPU latency of all of them
5. export    SavedModel and TFLite of the distilled student (first seed), TFLite mAP
6. report    report.md: the paper-style table next to the paper's figures, seeds and spread

With seeds side by side (seed_jobs > 1) each seed process also evaluates the model it trained
and the first seed's DKED process exports it; the figures stay in the model's folder
(evaluation.json) and in export/exported.json, and stages 4 and 5 reuse them while they are up
to date (`Recipe.checkpoint_evaluation`, `Recipe.export_student`).

Output: config.yaml/json, checkpoints/ (each model's folder with history.csv and tensorboard/;
best.weights.h5 with train.val_every; evaluation.json), logs/ (seeds trained side by side),
results.json, report.md, pr_curves/, detections/, export/.
"""

import argparse
import dataclasses
import hashlib
import importlib.util
import os
import sys
import time
import zipfile

import numpy as np

from dked_tf import visualize
from dked_tf.config import (
    ConfigError,
    add_set_argument,
    apply_overrides,
    flag_overrides,
    load_config,
    preset_config,
    save_run_config,
    validate_config,
)
from dked_tf.data.dota import write_task1
from dked_tf.errors import EXIT_USER_ERROR, USER_ERRORS, error_line
from dked_tf.evaluation.box_errors import box_errors
from dked_tf.evaluation.diagnostics import localisation_diagnostics
from dked_tf.evaluation.top_ranked import ranked_false_positives, top_ranked
from dked_tf.experiment.callbacks import DRAWN_SCORE
from dked_tf.experiment.data import describe_object_scale, load_records, prepare_records, resolve_input
from dked_tf.experiment.evaluate import detect_scenes, evaluate_map, measure_latency_ms, score_detections
from dked_tf.experiment.inference import Detector
from dked_tf.experiment.report import PAPER_DOTA, PAPER_HRSC, PAPER_SELF, render_report, seed_summary
from dked_tf.experiment.saving import EVALUATION_FILE, WEIGHTS_FILE, is_saved_detector, load_detector
from dked_tf.experiment.train_lib import (
    check_resumable,
    record_differences,
    role_settings,
    run_record,
    saved_record,
    train,
)
from dked_tf.export.saved_model import export_saved_model
from dked_tf.export.tflite import export_tflite, predict_tflite, representative_from_records
from dked_tf.files import CorruptFileError, read_json, replacing, write_json, write_text_atomic
from dked_tf.jobs import Job, run_jobs
from dked_tf.models.presets import count_params, gflops

STAGES = ("teacher", "student", "dked", "evaluate", "export", "report")
# training stage -> the model key its checkpoint and results are filed under
SEED_STAGES = (("student", "student"), ("dked", "student_dked"))
# export/: what the export stage made, and from what (`Recipe.export_student`)
EXPORTED_FILE = "exported.json"
# what checkpoint_evaluation computes for every model (a kept evaluation.json without one is redone)
EVALUATION_FIGURES = ("map07", "map12", "per_class07", "localisation", "box_errors", "top_ranked")
# highest-scored false positives drawn per table model (detections/<key>_top_false_positives.png)
DRAWN_FALSE_POSITIVES = 12


class Recipe:
    """The six stages over one output folder (HRSC2016: whole images)."""

    title = "HRSC2016"
    paper = PAPER_HRSC
    labels = {
        "teacher": "GGHL-Darknet53 (teacher)",
        "student": "LO-Det-MobileNetV2 (student)",
        "student_dked": "LO-Det-MobileNetV2 + DKED",
    }

    def __init__(self, cfg, out, seeds, verbose=1, force=False, start=None, tensorboard=None):
        self.cfg = cfg
        self.tensorboard = tensorboard  # TensorBoard root (a folder per model) instead of each model's folder
        self.out = out
        self.seeds = list(seeds)
        self.verbose = verbose
        self.force = force
        self.start = time.perf_counter() if start is None else start
        self._data = {}
        self.extra_results = {}  # merged into results.json by the evaluate stage
        os.makedirs(out, exist_ok=True)
        self.results_path = os.path.join(out, "results.json")

    # ------------------------------------------------------------------ bookkeeping

    def log(self, text):
        if self.verbose:
            elapsed = time.perf_counter() - self.start
            print(f"[{int(elapsed) // 60:02d}:{int(elapsed) % 60:02d}] {text}", flush=True)

    def seed_tag(self, seed):
        """The seed a student is reported under: None when the run has only one seed."""
        return None if len(self.seeds) == 1 else seed

    def checkpoint(self, key, seed=None):
        suffix = "" if seed is None or len(self.seeds) == 1 else f"_seed{seed}"
        return os.path.join(self.out, "checkpoints", key + suffix)

    def load_results(self):
        return read_json(self.results_path, default={})

    def save_results(self, results):
        write_json(self.results_path, results)

    # ------------------------------------------------------------------ data

    def records(self, split):
        if split not in self._data:
            self._data[split] = prepare_records(self.cfg, split, verbose=self.verbose)
        return self._data[split]

    @property
    def class_names(self):
        return self.records("train")[1]

    def eval_records(self):
        """The records the models are scored on (HRSC: the test images)."""
        return self.records("test")[0]

    def dataset_description(self):
        cfg = self.cfg.data
        train_records, test = self.records("train")[0], self.eval_records()
        if cfg.root:
            return f"{self.title} at {cfg.root} ({len(train_records)} train / {len(test)} test images)"
        kind = "realistic synthetic" if cfg.synthetic_kind == "realistic" and cfg.format == "hrsc" else "synthetic"
        return (
            f"{kind} {self.title}-format set ({len(train_records)} train / {len(test)} test images, "
            f"{cfg.synthetic_image_size} px, seed {cfg.synthetic_seed})"
        )

    # ------------------------------------------------------------------ training stages

    def require_teacher(self):
        """Stops the run (SystemExit) when the dked stage has no trained teacher to load."""
        teacher_dir = self.checkpoint("teacher")
        if not is_saved_detector(teacher_dir):
            raise SystemExit(f"the dked stage needs a trained teacher in {teacher_dir}: run the teacher stage")

    def stage_record(self, key, seed):
        """The run record (`train_lib.run_record`) the checkpoint of `key` (and seed) must have."""
        role = "teacher" if key == "teacher" else "student"
        teacher = self.checkpoint("teacher") if key == "student_dked" else None
        return run_record(self.cfg, role, seed=None if role == "teacher" else seed, teacher=teacher)

    def stale_differences(self, key, seed):
        """None when `key` (and seed) has no checkpoint; else how its recorded config differs from
        the current one ([] when it matches: the checkpoint can be used as it is)."""
        folder = self.checkpoint(key, None if key == "teacher" else seed)
        if not is_saved_detector(folder):
            return None
        return record_differences(saved_record(folder), self.stage_record(key, seed))

    def is_current(self, key, seed):
        """True when the checkpoint of `key` (and seed) exists and was trained with this config."""
        return self.stale_differences(key, seed) == []

    def train_stage(self, key, seed):
        """Train (or find) one of teacher / student / student_dked; returns its folder. A
        checkpoint trained with another config (model, input size, data, schedule, teacher) is
        retrained, and so is the backup of an interrupted run of another config started over."""
        folder = self.checkpoint(key, None if key == "teacher" else seed)
        differences = self.stale_differences(key, seed)
        if differences == [] and not self.force:
            self.log(f"{key}: found {folder}, skipping (use --force to retrain)")
            return folder
        if differences and not self.force:
            self.log(f"{key}: {folder} was trained with another config ({_listed(differences)}); retraining")
        teacher = None
        if key == "student_dked":
            self.require_teacher()
            teacher = self.checkpoint("teacher")
        role = "teacher" if key == "teacher" else "student"
        architecture, _, schedule = role_settings(self.cfg, role)
        seed = schedule.seed if role == "teacher" else seed
        backup_dir = os.path.join(self.out, "checkpoints", "backup", os.path.basename(folder))
        resume = not self.force
        if resume:
            try:
                check_resumable(backup_dir, self.stage_record(key, seed))
            except ConfigError:
                self.log(f"{key}: the backup in {backup_dir} is of another config; starting this training over")
                resume = False
        train_records = self.records("train")[0]
        self.log(
            f"{key}: training {architecture} for {schedule.epochs} epochs at {self.cfg.data.image_size} px, "
            f"{len(train_records)} images, seed {seed}"
        )
        result = train(
            self.cfg,
            role,
            seed=seed,
            out=folder,
            teacher=teacher,
            records=self.records("train"),
            stage=key,
            backup_dir=backup_dir,
            resume=resume,
            verbose=self.verbose,
            tensorboard_dir=os.path.join(self.tensorboard, os.path.basename(folder)) if self.tensorboard else None,
        )
        best = result.outcome.best
        if best:
            self.log(f"{key}: best val mAP(07) {100 * best['val_map07']:.2f} at epoch {best['epoch']}")
        self.log(f"{key}: done in {result.outcome.train_seconds:.0f} s -> {folder}")
        return folder

    def train_seeds_side_by_side(self, keys, jobs, evaluate=False, export=False):
        """Training stages `keys` (student, student_dked) of every seed, `jobs` trainings at a
        time, each (seed, stage) in its own process (`dked_tf.jobs`; the DKED students, the longer
        ones, first). The processes write logs/seed<N>_<stage>.log; their epoch lines are echoed
        here with the seed in front. evaluate: each process then evaluates the model it trained
        (`checkpoint_evaluation`), and the teacher is evaluated in a last process, so the
        evaluations run beside the trainings instead of after them; export: the process of the
        first seed's DKED student exports it (`export_student`)."""
        if "student_dked" in keys:
            self.require_teacher()
        current = {(seed, key): self.is_current(key, seed) for seed in self.seeds for key in keys}
        done = {seed for seed in self.seeds if all(current[seed, key] for key in keys)}
        for seed in sorted(done, key=self.seeds.index):
            if not self.force:
                self.log(f"seed {seed}: found {', '.join(keys)} checkpoints, skipping (use --force to retrain)")
        order = sorted(keys, key=lambda key: key != "student_dked")
        todo = [(seed, key) for key in order for seed in self.seeds if self.force or not current[seed, key]]
        if not todo:
            return
        self.records("train")  # a synthetic set is generated here once, not by every process
        if evaluate:
            self.records("test")
        origin = time.time() - (time.perf_counter() - self.start)
        log_dir = os.path.join(self.out, "logs")
        seeds = sorted({seed for seed, _ in todo}, key=self.seeds.index)
        self.log(
            f"training seeds {', '.join(map(str, seeds))}: {jobs} trainings at a time, one process each "
            f"(progress below; full logs in {log_dir})"
        )
        common = (type(self), self.cfg, self.out, self.seeds)
        queue = [
            Job(
                f"seed {seed}",
                train_seed_stages,
                (*common, seed, (key,), self.force, origin, self.tensorboard, evaluate, export),
                os.path.join(log_dir, f"seed{seed}_{key}.log"),
            )
            for seed, key in todo
        ]
        if evaluate and is_saved_detector(self.checkpoint("teacher")):
            queue.append(
                Job(
                    "teacher",
                    evaluate_checkpoint_job,
                    (*common, "teacher", None, self.checkpoint("teacher"), origin),
                    os.path.join(log_dir, "teacher_evaluate.log"),
                )
            )
        run_jobs(queue, parallel=jobs, echo=lambda line: print(line, flush=True) if self.verbose else None)

    # ------------------------------------------------------------------ evaluation

    def evaluate_model(self, model):
        """(metrics dict, {"voc07": EvalResult, ...}, detections) on the test split."""
        return evaluate_map(
            model, self.eval_records(), self.class_names, self.cfg, verbose=self.verbose, return_results=True
        )

    def is_table_row(self, key, tag):
        """True for the models of the results table (the teacher and the first seed's students):
        their pictures are drawn and their params, GFLOPs and latency measured."""
        return key == "teacher" or tag is None or tag == self.seeds[0]

    def evaluation_inputs(self, folder):
        """What a checkpoint's test-split figures are computed from: its weights file (size and
        modification time), the test images and their ground truth, the classes and the decode
        settings. A cached evaluation (`checkpoint_evaluation`) counts only while these are
        unchanged."""
        weights = os.stat(os.path.join(folder, WEIGHTS_FILE))
        cfg = self.cfg
        digest = hashlib.sha256()
        for record in self.eval_records():
            digest.update(f"{record.image_id} {record.image_path}".encode())
            for array in (record.polygons, record.classes, record.difficult):
                digest.update(np.ascontiguousarray(array).tobytes())
        return {
            "weights": {"bytes": weights.st_size, "mtime_ns": weights.st_mtime_ns},
            "test_images": {"count": len(self.eval_records()), "sha256": digest.hexdigest()},
            "classes": list(self.class_names),
            "inference_size": cfg.data.inference_size,
            "score_threshold": cfg.model.score_threshold,
            "iou_threshold": cfg.model.iou_threshold,
            "max_detections": cfg.model.max_detections,
            "max_objects": cfg.data.max_objects,
        }

    def checkpoint_evaluation(self, key, tag, folder):
        """The test-split figures of the checkpoint in `folder` (mAP(07), mAP(12), per class,
        localisation, box errors; pictures for a table row), computed once and kept in
        folder/evaluation.json with `evaluation_inputs`: a seed's job evaluates its model as soon
        as it is trained (in parallel with the other trainings) and the evaluate stage reuses
        it. tag: the seed of a student, None for the teacher or the only seed."""
        path = os.path.join(folder, EVALUATION_FILE)
        inputs = self.evaluation_inputs(folder)
        drawn = self.is_table_row(key, tag)
        name = key if tag is None else f"{key} (seed {tag})"
        cached = _kept_record(path, inputs)
        if cached is not None and set(EVALUATION_FIGURES) - set(cached["entry"]):
            cached = None  # kept by an older version, without some of today's figures
        if cached is not None and (cached.get("drawn") or not drawn):
            self.log(f"evaluate: {name}: figures of {path}")
            return cached["entry"]
        model, meta = load_detector(folder)
        self.log(f"evaluate: {name}")
        metrics, evals, detections = self.evaluate_model(model)
        localisation = self.localisation(model)
        entry = {
            "map07": metrics["map07"],
            "map12": metrics["map12"],
            "train_seconds": float(meta.get("train_seconds", 0.0)),
            "architecture": meta["architecture"],
            "checkpoint": folder,
            "per_class07": metrics["per_class07"],
            "num_gt": metrics["num_gt"],
            "num_det": metrics["num_det"],
            "localisation": localisation,
            "box_errors": box_errors(detections, self.eval_records(), self.class_names),
            "top_ranked": top_ranked(detections, self.eval_records(), self.class_names),
            "files": self.pictures(key, evals, detections) if drawn else {},
        }
        write_json(path, {"inputs": inputs, "drawn": drawn, "entry": entry})
        self.log(
            f"evaluate: {name} mAP(07) {100 * entry['map07']:.2f}  "
            f"mAP(12) {100 * entry['map12']:.2f}  localisation q {localisation['quality_median']:.3f}"
        )
        return entry

    def evaluate_stage(self, keys_and_folders):
        results = self.load_results()
        results["dataset"] = self.dataset_description()
        results["metric"] = {
            "name": "rotated-box VOC AP (DOTA devkit semantics: polygon IoU > 0.5, difficult ignored)",
            "map07": "VOC2007 11-point AP",
            "map12": "VOC2012 all-point AP",
            "image_size": self.cfg.data.inference_size,
            "score_threshold": self.cfg.model.score_threshold,
            "nms_iou_threshold": self.cfg.model.iou_threshold,
            "classes": list(self.class_names),
        }
        results["preset"] = self.cfg.preset
        models = results.setdefault("models", {})
        seeds = results.setdefault("seeds", {})
        size = self.cfg.data.inference_size
        for key, seed, folder in keys_and_folders:
            if not is_saved_detector(folder):
                self.log(f"evaluate: {key} has no checkpoint in {folder}, skipped")
                continue
            differences = self.stale_differences(key, None if key == "teacher" else seed_of(seed, self.seeds))
            if differences:
                self.log(f"evaluate: warning: {folder} was trained with another config ({_listed(differences)})")
            entry = dict(self.checkpoint_evaluation(key, seed, folder))
            for name, files in entry.pop("files", {}).items():
                self.extra_results.setdefault(name, {})[key] = files
            if seed is not None:
                seeds.setdefault(str(seed), {})[key] = {
                    **{k: entry[k] for k in ("map07", "map12", "train_seconds")},
                    "quality_median": entry["localisation"]["quality_median"],
                    "first_true_positive_rank": entry["top_ranked"]["first_true_positive_rank"],
                }
            if self.is_table_row(key, seed):
                model, _ = load_detector(folder)
                entry["params"] = count_params(model)
                entry["gflops"] = float(gflops(model, size))
                entry["latency_ms_cpu"] = measure_latency_ms(model, size, runs=10 if self.cfg.preset == "smoke" else 30)
                models[key] = entry
                self.log(
                    f"evaluate: {key} mAP(07) {100 * entry['map07']:.2f}  mAP(12) {100 * entry['map12']:.2f}  "
                    f"{entry['params'] / 1e6:.2f} M params  {entry['gflops']:.2f} GFLOPs  "
                    f"{entry['latency_ms_cpu']:.1f} ms  localisation q {entry['localisation']['quality_median']:.3f}"
                )
        if len(self.seeds) > 1:
            results["seed_summary"] = seed_summary(seeds)
        results.update(self.extra_results)
        self.save_results(results)
        return results

    def localisation(self, model):
        """`dked_tf.evaluation.diagnostics` on the test images (patches for DOTA) at the model's size."""
        cfg = self.cfg
        return localisation_diagnostics(
            model,
            self.records("test")[0],
            cfg.data.inference_size,
            batch_size=cfg.eval_batch_size,
            max_objects=cfg.data.max_objects,
        )

    def pictures(self, key, evals, detections):
        """PR curves and a few test images with ground truth and detections drawn. Returns the
        files for results.json beyond those pictures ({} here; DOTA: its Task1 zip)."""
        curves_dir = os.path.join(self.out, "pr_curves")
        os.makedirs(curves_dir, exist_ok=True)
        for metric, result in evals.items():
            if result.pr_curves:
                visualize.plot_pr_curves(
                    result.pr_curves,
                    os.path.join(curves_dir, f"{key}_{metric}.png"),
                    ap=result.per_class,
                    title=f"{key} ({metric})",
                )
        self.draw(key, detections)
        return {}

    def draw(self, key, detections):
        """detections/<key>/<image id>.png: the first test images with ground truth and detections;
        detections/<key>_top_false_positives.png: the highest-scored false positives, cropped."""
        folder = os.path.join(self.out, "detections", key)
        os.makedirs(folder, exist_ok=True)
        for record in self.eval_records()[: self.cfg.num_drawn_images]:
            drawn = visualize.draw_record(record, detections, DRAWN_SCORE)
            if drawn is not None:
                visualize.save_image(os.path.join(folder, f"{record.image_id}.png"), drawn)
        misses = ranked_false_positives(detections, self.eval_records(), self.class_names, count=DRAWN_FALSE_POSITIVES)
        several = len(self.class_names) > 1
        entries = [
            (
                miss["image_id"],
                miss["polygon"],
                f"#{miss['rank']}{' ' + miss['class'] if several else ''} {miss['score']:.2f} "
                f"{miss['outcome'].replace('_', ' ')} IoU {miss['iou']:.2f}",
            )
            for miss in misses
        ]
        sheet = visualize.detection_sheet(self.eval_records(), entries)
        if sheet is not None:
            visualize.save_image(os.path.join(self.out, "detections", f"{key}_top_false_positives.png"), sheet)

    # ------------------------------------------------------------------ export

    def export_stage(self):
        exported = self.export_student()
        if exported is not None:
            results = self.load_results()
            results["export"] = exported
            self.save_results(results)

    def export_student(self):
        """`.keras`, SavedModel and TFLite of the first seed's DKED student, and the TFLite mAP;
        returns results.json's "export" section (None without that student). Done once and
        kept in export/exported.json with what it was made from (`evaluation_inputs` and the
        export config): the seed job that trains the student exports it right away and the
        export stage reuses it while every file is still there."""
        folder = self.checkpoint("student_dked", self.seeds[0])
        if not is_saved_detector(folder):
            self.log(f"export: no distilled student in {folder}, skipped")
            return None
        export_dir = os.path.join(self.out, "export")
        record_path = os.path.join(export_dir, EXPORTED_FILE)
        inputs = {
            **self.evaluation_inputs(folder),
            "export": dataclasses.asdict(self.cfg.export),
            "litert": importlib.util.find_spec("ai_edge_litert") is not None,
        }
        cached = _kept_record(record_path, inputs)
        if cached is not None and all(os.path.exists(item["path"]) for item in cached["export"].values()):
            self.log(f"export: found the exported files of {record_path}")
            return cached["export"]
        detector = Detector.load(folder)
        model, meta = detector.model, detector.meta
        os.makedirs(export_dir, exist_ok=True)
        exported = {}
        cfg = self.cfg
        # the one-file model of the public API: `Detector.load(path)`, `dked-tf predict --model path`
        path = os.path.join(export_dir, "student_dked.keras")
        self.log(f"export: one-file model -> {path}")
        detector.save(path)
        exported["keras"] = {"path": path, "megabytes": os.path.getsize(path) / 2**20}
        decode = dict(
            score_threshold=cfg.model.score_threshold,
            iou_threshold=cfg.model.iou_threshold,
            max_detections=cfg.model.max_detections,
            class_names=list(meta["class_names"]),
        )
        if cfg.export.saved_model:
            path = os.path.join(export_dir, "saved_model")
            self.log(f"export: SavedModel -> {path}")
            export_saved_model(model, path, image_size=cfg.data.inference_size, **decode)
            exported["saved_model"] = {"path": path, "megabytes": _folder_mb(path)}
        if cfg.export.tflite and importlib.util.find_spec("ai_edge_litert") is None:
            self.log("export: TFLite skipped: the LiteRT interpreter is not installed (pip install -e '.[export]')")
        elif cfg.export.tflite:
            path = os.path.join(export_dir, f"student_dked_{cfg.export.quantize}.tflite")
            self.log(f"export: TFLite ({cfg.export.quantize}) -> {path}")
            representative = None
            if cfg.export.quantize == "int8":
                representative = representative_from_records(
                    self.records("train")[0], cfg.data.inference_size, limit=cfg.export.representative_images
                )
            export_tflite(
                model,
                path,
                image_size=cfg.data.inference_size,
                quantize=cfg.export.quantize,
                representative_images=representative,
                verbose=self.verbose,
                **decode,
            )
            exported["tflite"] = {
                "path": path,
                "megabytes": os.path.getsize(path) / 2**20,
                "quantize": cfg.export.quantize,
                **self.tflite_map(path),
            }
        write_json(record_path, {"inputs": inputs, "export": exported})
        return exported

    def tflite_map(self, path):
        """mAP(07)/mAP(12) of the exported .tflite on the test split (LiteRT interpreter, host NMS)."""
        cfg = self.cfg
        try:
            detections = predict_tflite(
                path,
                self.eval_records(),
                class_names=list(self.class_names),
                score_threshold=cfg.model.score_threshold,
                iou_threshold=cfg.model.iou_threshold,
                max_detections=cfg.model.max_detections,
                verbose=self.verbose,
            )
            metrics = score_detections(detections, self.eval_records(), self.class_names)
        except Exception as error:  # noqa: BLE001 - a report line, not a crash of the whole recipe
            self.log(f"export: TFLite evaluation failed: {error}")
            return {"evaluation_error": str(error)}
        self.log(f"export: TFLite mAP(07) {100 * metrics['map07']:.2f}  mAP(12) {100 * metrics['map12']:.2f}")
        return {"tflite_map07": metrics["map07"], "tflite_map12": metrics["map12"]}

    # ------------------------------------------------------------------ report

    def report_stage(self):
        results = self.load_results()
        if len(results.get("seeds", {})) > 1:
            # recomputed from the per-seed figures, so a report of older results has every field
            results["seed_summary"] = seed_summary(results["seeds"])
            self.save_results(results)
        text = render_report(results, self.cfg, title=self.title, paper=self.paper, labels=self.labels)
        path = os.path.join(self.out, "report.md")
        write_text_atomic(path, text)
        self.log(f"report: {path}")
        if self.verbose:
            print(text)

    # ------------------------------------------------------------------ all

    def run(self, stages):
        self.cfg, input_line = resolve_input(self.cfg, self.records("train")[0])
        save_run_config(self.cfg, self.out)
        if any(stage in stages for stage in ("teacher", "student", "dked")):
            self.log(input_line)
            self.log(
                describe_object_scale(
                    self.records("train")[0],
                    self.cfg.data.inference_size,
                    min_stride=min(self.cfg.model.min_stride(role) for role in ("teacher", "student")),
                )
            )
        key_folders = []
        if "teacher" in stages:
            self.train_stage("teacher", self.cfg.teacher_train.seed)
        key_folders.append(("teacher", None, self.checkpoint("teacher")))
        seed_keys = [key for stage, key in SEED_STAGES if stage in stages]
        jobs = min(int(self.cfg.seed_jobs), len(self.seeds))
        if seed_keys and jobs > 1:
            self.train_seeds_side_by_side(seed_keys, jobs, evaluate="evaluate" in stages, export="export" in stages)
        for seed in self.seeds:
            if jobs <= 1:
                for key in seed_keys:
                    self.train_stage(key, seed)
            tag = self.seed_tag(seed)
            key_folders.append(("student", tag, self.checkpoint("student", seed)))
            key_folders.append(("student_dked", tag, self.checkpoint("student_dked", seed)))
        if "evaluate" in stages:
            self.evaluate_stage(key_folders)
        if "export" in stages:
            self.export_stage()
        if "report" in stages:
            self.report_stage()
        results = self.load_results()
        results["wall_seconds_last_run"] = time.perf_counter() - self.start
        self.save_results(results)
        self.log(f"finished in {time.perf_counter() - self.start:.0f} s; results in {self.results_path}")
        return 0


class SelfDistillRecipe(Recipe):
    """GGHL → GGHL self-distillation on HRSC2016 (the paper's 87.30 → 93.45)."""

    paper = PAPER_SELF
    labels = {
        "teacher": "GGHL-Darknet53 (teacher)",
        "student": "GGHL-Darknet53 (student alone)",
        "student_dked": "GGHL-Darknet53 + DKED (self-distillation)",
    }


class DotaRecipe(Recipe):
    """DOTA: models train on patches of the train scenes; the test scenes are cut the same way,
    predicted patch by patch, merged back to scenes (class-wise polygon NMS, IoU 0.1, as the
    devkit) and scored on the scenes. The distilled student's merged detections are written as
    a server-ready Task1 zip."""

    title = "DOTA"
    paper = PAPER_DOTA

    def eval_records(self):
        """The test scenes (merged detections are scored on these)."""
        if "scenes" not in self._data:
            self._data["scenes"] = load_records(self.cfg.data, "test", verbose=self.verbose)
        return self._data["scenes"][0]

    def evaluate_model(self, model):
        detections = detect_scenes(model, self.records("test")[0], self.class_names, self.cfg, verbose=self.verbose)
        return score_detections(detections, self.eval_records(), self.class_names, return_results=True)

    def pictures(self, key, evals, detections):
        files = super().pictures(key, evals, detections)
        if key == "student_dked":
            files["task1"] = self.write_task1_zip(key, detections)
        return files

    def write_task1_zip(self, key, detections):
        paths = write_task1(detections, os.path.join(self.out, f"task1_{key}"), list(self.class_names))
        archive = os.path.join(self.out, f"task1_{key}.zip")
        with replacing(archive) as temporary, zipfile.ZipFile(temporary, "w", zipfile.ZIP_DEFLATED) as handle:
            for path in paths:
                handle.write(path, arcname=os.path.basename(path))
        self.log(f"evaluate: Task1 results of {key} -> {archive}")
        return archive


def seed_of(tag, seeds):
    """The seed of an evaluated model: its tag, or the only seed when the tag is None."""
    return seeds[0] if tag is None else tag


def _listed(differences, limit=3):
    """Up to `limit` record differences, for a log line."""
    return "; ".join(differences[:limit]) + ("; ..." if len(differences) > limit else "")


def train_seed_stages(
    recipe_class, cfg, out, seeds, seed, keys, force, origin, tensorboard=None, evaluate=False, export=False
):
    """One seed's training stages in a `dked_tf.jobs` child process, each followed by the
    evaluation of its model when `evaluate`, and by the export of the first seed's DKED student
    when `export`. origin: the parent's start time (time.time()), so the [mm:ss] stamps of both
    processes agree."""
    recipe = _child_recipe(recipe_class, cfg, out, seeds, force, origin, tensorboard)
    for key in keys:
        folder = recipe.train_stage(key, seed)
        if evaluate:
            recipe.checkpoint_evaluation(key, recipe.seed_tag(seed), folder)
        if export and key == "student_dked" and seed == seeds[0]:
            recipe.export_student()


def evaluate_checkpoint_job(recipe_class, cfg, out, seeds, key, tag, folder, origin):
    """`Recipe.checkpoint_evaluation` of one checkpoint in a `dked_tf.jobs` child process."""
    _child_recipe(recipe_class, cfg, out, seeds, False, origin).checkpoint_evaluation(key, tag, folder)


def _child_recipe(recipe_class, cfg, out, seeds, force, origin, tensorboard=None):
    start = time.perf_counter() - (time.time() - origin)
    return recipe_class(cfg, out, seeds, verbose=2, force=force, start=start, tensorboard=tensorboard)


def _kept_record(path, inputs):
    """The JSON record at `path` ({"inputs": ..., ...}) when it was made from `inputs`; None when
    it is missing, unreadable or was made from something else."""
    try:
        kept = read_json(path)
    except CorruptFileError:
        return None
    return kept if isinstance(kept, dict) and kept.get("inputs") == inputs else None


def _folder_mb(path):
    total = 0
    for base, _, files in os.walk(path):
        total += sum(os.path.getsize(os.path.join(base, f)) for f in files)
    return total / 2**20


# ----------------------------------------------------------------------------- command line


def build_parser(description, default_out):
    """The options every recipe script takes."""
    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--data-root",
        default=None,
        metavar="DIR",
        help="a real dataset tree (HRSC2016: FullDataSet/ + ImageSets/, or Train/ + Test/; DOTA: "
        "train/ and val/). Default: the built-in synthetic set in that format, generated once "
        "and cached",
    )
    parser.add_argument(
        "--data-cache",
        default=None,
        metavar="DIR",
        help="cache folder of the synthetic set and DOTA patches (default ~/.cache/dked_tf)",
    )
    parser.add_argument("--out", default=default_out, metavar="DIR", help="output folder (default %(default)s)")
    size = parser.add_mutually_exclusive_group()
    size.add_argument("--quick", action="store_true", help="real but minimal run (< 4 minutes on 2 CPU cores)")
    size.add_argument(
        "--paper",
        action="store_true",
        help="paper-scale models at 800 px with the reference hyper-parameters (GPU machines)",
    )
    size.add_argument(
        "--easy",
        action="store_true",
        help="the easy synthetic set (256 px scenes, large ships up to 5:1) with the previous default's schedule",
    )
    size.add_argument("--smoke", action="store_true", help=argparse.SUPPRESS)  # tiny everything, for tests
    parser.add_argument(
        "--seed",
        type=int,
        default=None,
        help="seed of the student and DKED student runs (and the teacher); default from the config",
    )
    parser.add_argument(
        "--seeds",
        type=int,
        nargs="+",
        default=None,
        metavar="SEED",
        help="train the student and the DKED student once per seed (the teacher once) and report "
        "each, the mean and the seed-to-seed spread; results.json 'models' holds the first seed",
    )
    parser.add_argument(
        "--jobs",
        type=int,
        default=None,
        metavar="N",
        help="train N seeds at the same time, each in its own process with cores / N threads "
        "(config seed_jobs; the default preset uses 2; 1: one after the other)",
    )
    parser.add_argument(
        "--stages",
        default=",".join(STAGES),
        metavar="LIST",
        help="comma-separated stages to run, from: " + ", ".join(STAGES) + " (default: all)",
    )
    parser.add_argument(
        "--force", action="store_true", help="retrain the selected training stages even if their checkpoints exist"
    )
    parser.add_argument(
        "--config",
        default=None,
        metavar="FILE",
        help="YAML/JSON config file applied on top of the preset (keys as in config.yaml of a run)",
    )
    add_set_argument(parser)
    parser.add_argument(
        "--tensorboard",
        default=None,
        metavar="DIR",
        help="TensorBoard event files of every trained model in DIR/<model> (default: each model's "
        "checkpoints/<model>/tensorboard; --set train.tensorboard=false --set teacher_train.tensorboard=false: none)",
    )
    parser.add_argument(
        "--verbose", type=int, default=1, choices=(0, 1), help="1: progress bars (on a terminal) and an ETA per epoch"
    )
    return parser


def parse_stages(text):
    stages = [s.strip() for s in text.split(",") if s.strip()]
    unknown = [s for s in stages if s not in STAGES]
    if unknown:
        raise SystemExit(f"unknown stage(s) {', '.join(unknown)}; choose from {', '.join(STAGES)}")
    return stages


def resolve_recipe_config(args, task="hrsc", name="hrsc_lodet", student_is_teacher=False):
    """The ExperimentConfig of a recipe invocation: preset (--quick/--easy/--paper/--smoke, else default)
    -> --config -> the flags -> --set. student_is_teacher: the student architecture is the
    teacher's (self-distillation) unless --set model.student=... says otherwise."""
    if args.jobs is not None and args.jobs < 1:
        raise SystemExit(f"--jobs {args.jobs}: needs at least 1")
    preset = next((name for name in ("smoke", "quick", "paper", "easy") if getattr(args, name, False)), "default")
    cfg = preset_config(preset, task=task)
    cfg.name = name
    if args.config:
        cfg = load_config(args.config, base=cfg)
    flags = flag_overrides(
        {
            "data.root": args.data_root,
            "data.cache_dir": args.data_cache,
            "train.seed": args.seed,
            "teacher_train.seed": args.seed,
            "seed_jobs": args.jobs,
        }
    )
    cfg = apply_overrides(cfg, flags + list(args.overrides))
    if student_is_teacher and not any(o.strip().startswith("model.student=") for o in args.overrides):
        cfg.model.student = cfg.model.teacher
    return validate_config(cfg)


def run_recipe(
    argv=None,
    *,
    recipe_class=Recipe,
    task="hrsc",
    name="hrsc_lodet",
    default_out="runs/hrsc_lodet",
    description=__doc__,
    student_is_teacher=False,
):
    """Parse a recipe script's command line and run its stages. Returns the exit code."""
    parser = build_parser(description, default_out)
    args = parser.parse_args(argv)
    stages = parse_stages(args.stages)
    try:
        cfg = resolve_recipe_config(args, task=task, name=name, student_is_teacher=student_is_teacher)
        seeds = args.seeds or ([args.seed] if args.seed is not None else None) or list(cfg.seeds) or [cfg.train.seed]
        recipe = recipe_class(
            cfg, args.out, seeds, verbose=args.verbose, force=args.force, tensorboard=args.tensorboard
        )
        return recipe.run(stages)
    except USER_ERRORS as error:
        print(f"{parser.prog}: error: {error_line(error)}", file=sys.stderr, flush=True)
        return EXIT_USER_ERROR
