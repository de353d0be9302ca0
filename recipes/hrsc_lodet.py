#!/usr/bin/env python
"""HRSC2016: GGHL teacher -> LO-Det student -> LO-Det student with DKED, evaluated and exported.

    python recipes/hrsc_lodet.py                         # built-in synthetic HRSC2016 set, ~15 min on 2 cores
    python recipes/hrsc_lodet.py --quick                 # real but minimal run (< 4 min): a smoke check
    python recipes/hrsc_lodet.py --data-root ~/data/HRSC2016 --paper   # the real thing, on a GPU

Stages (each skippable with --stages, each resumable: finished models are reloaded from
checkpoints/, an interrupted training continues from its last backup, taken every
train.checkpoint_every epochs):

1. teacher   train the GGHL teacher (model.teacher, teacher_train schedule)
2. student   train the LO-Det student alone: the baseline (model.student, train schedule, seed)
3. dked      train the same student with DKED from the teacher, same schedule and seed as 2
4. evaluate  mAP(07) and mAP(12) of all three on the test split, params, GFLOPs, CPU latency
5. export    SavedModel and TFLite of the distilled student
6. report    report.md: the paper-style table next to the paper's HRSC2016 figures

Output (--out, default runs/hrsc_lodet/): config.yaml/json, checkpoints/, results.json,
report.md, pr_curves/, detections/ (test images with detections drawn), export/.
"""

import argparse
import json
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

STAGES = ("teacher", "student", "dked", "evaluate", "export", "report")

# The DKED poster's HRSC2016 mAPs (metric not stated in the sources we have; see
# shared/reference/gghl_lodet_dked.md §3.2).
PAPER_HRSC = {
    "teacher": ("GGHL (teacher)", 87.30),
    "student": ("LO-Det (student)", 80.05),
    "student_dked": ("LO-Det + DKED", 85.17),
}
PAPER_SELF = {
    "teacher": ("GGHL (teacher)", 87.30),
    "student": ("GGHL (student)", 87.30),
    "student_dked": ("GGHL + DKED (self)", 93.45),
}


def summary_has_spread(results):
    """True when results.json holds a multi-seed summary (gain vs seed-to-seed spread)."""
    return bool(results.get("seed_summary"))


def build_parser(description=__doc__, default_out="runs/hrsc_lodet"):
    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-root", default=None, metavar="DIR",
                        help="a real HRSC2016 tree (FullDataSet/ + ImageSets/, or Train/ + Test/). "
                             "Default: the built-in synthetic HRSC2016-format set, generated once and cached")
    parser.add_argument("--data-cache", default=None, metavar="DIR",
                        help="cache folder of the synthetic set (default ~/.cache/dked_tf)")
    parser.add_argument("--out", default=default_out, metavar="DIR", help="output folder (default %(default)s)")
    size = parser.add_mutually_exclusive_group()
    size.add_argument("--quick", action="store_true", help="real but minimal run (< 4 minutes on 2 CPU cores)")
    size.add_argument("--paper", action="store_true",
                      help="paper-scale models at 800 px with the reference hyper-parameters (GPU machines)")
    size.add_argument("--smoke", action="store_true", help=argparse.SUPPRESS)  # tiny everything, for tests
    parser.add_argument("--seed", type=int, default=None,
                        help="seed of the student and DKED student runs (and the teacher); default from the config")
    parser.add_argument("--seeds", type=int, nargs="+", default=None, metavar="SEED",
                        help="train the student and the DKED student once per seed (the teacher once) and report "
                             "each, the mean and the seed-to-seed spread; results.json 'models' holds the first seed")
    parser.add_argument("--jobs", type=int, default=None, metavar="N",
                        help="train N seeds at the same time, each in its own process with cores / N threads "
                             "(config seed_jobs; the default preset uses 2; 1: one after the other)")
    parser.add_argument("--stages", default=",".join(STAGES), metavar="LIST",
                        help="comma-separated stages to run, from: " + ", ".join(STAGES) + " (default: all)")
    parser.add_argument("--force", action="store_true",
                        help="retrain the selected training stages even if their checkpoints exist")
    parser.add_argument("--config", default=None, metavar="FILE",
                        help="YAML/JSON config file applied on top of the preset (keys as in config.yaml of a run)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config value, e.g. --set train.epochs=20 --set distill.delta=0.1")
    parser.add_argument("--verbose", type=int, default=1, choices=(0, 1), help="1: progress bars and ETA")
    return parser


def resolve_config(args, task="hrsc", student=None, name="hrsc_lodet"):
    from dked_tf import config as C

    preset = "smoke" if args.smoke else "quick" if args.quick else "paper" if args.paper else "default"
    cfg = C.preset_config(preset, task=task)
    cfg.name = name
    if args.config:
        cfg = C.load_config(args.config, base=cfg)
    shortcuts = []
    if args.data_root:
        shortcuts.append(f"data.root={args.data_root}")
    if args.data_cache:
        shortcuts.append(f"data.cache_dir={args.data_cache}")
    if args.seed is not None:
        shortcuts += [f"train.seed={args.seed}", f"teacher_train.seed={args.seed}"]
    if args.jobs is not None:
        if args.jobs < 1:
            raise SystemExit(f"--jobs {args.jobs}: needs at least 1")
        shortcuts.append(f"seed_jobs={args.jobs}")
    cfg = C.apply_overrides(cfg, shortcuts + list(args.overrides))
    if student is not None and not any(o.strip().startswith("model.student=") for o in args.overrides):
        cfg.model.student = student(cfg)  # e.g. self-distillation: the student is the teacher's architecture
    return cfg


def parse_stages(text):
    stages = [s.strip() for s in text.split(",") if s.strip()]
    unknown = [s for s in stages if s not in STAGES]
    if unknown:
        raise SystemExit(f"unknown stage(s) {', '.join(unknown)}; choose from {', '.join(STAGES)}")
    return stages


class Recipe:
    """The six stages over one output folder. Subclasses (DOTA) replace data and evaluation."""

    title = "HRSC2016"
    paper = PAPER_HRSC
    teacher_label = "GGHL-Darknet53 (teacher)"
    student_label = "LO-Det-MobileNetV2 (student)"
    dked_label = "LO-Det-MobileNetV2 + DKED"

    def __init__(self, cfg, out, seeds, verbose=1, force=False):
        self.cfg = cfg
        self.out = out
        self.seeds = list(seeds)
        self.verbose = verbose
        self.force = force
        self.start = time.perf_counter()
        self._data = {}
        self.extra_results = {}  # merged into results.json by the evaluate stage
        os.makedirs(out, exist_ok=True)
        self.results_path = os.path.join(out, "results.json")

    # ------------------------------------------------------------------ bookkeeping

    def log(self, text):
        if self.verbose:
            elapsed = time.perf_counter() - self.start
            print(f"[{int(elapsed) // 60:02d}:{int(elapsed) % 60:02d}] {text}", flush=True)

    def checkpoint(self, key, seed=None):
        suffix = "" if seed is None or len(self.seeds) == 1 else f"_seed{seed}"
        return os.path.join(self.out, "checkpoints", key + suffix)

    def load_results(self):
        if os.path.exists(self.results_path):
            with open(self.results_path, encoding="utf-8") as handle:
                return json.load(handle)
        return {}

    def save_results(self, results):
        with open(self.results_path, "w", encoding="utf-8") as handle:
            json.dump(results, handle, indent=2)

    # ------------------------------------------------------------------ data

    def records(self, split):
        from dked_tf import training as T

        if split not in self._data:
            self._data[split] = T.prepare_records(self.cfg, split, verbose=self.verbose)
        return self._data[split]

    @property
    def class_names(self):
        return self.records("train")[1]

    def dataset_description(self):
        cfg = self.cfg.data
        train, test = self.records("train")[0], self.eval_records()
        if cfg.root:
            return f"{self.title} at {cfg.root} ({len(train)} train / {len(test)} test images)"
        return (f"synthetic {self.title}-format set ({len(train)} train / {len(test)} test images, "
                f"{cfg.synthetic_image_size} px, seed {cfg.synthetic_seed})")

    def eval_records(self):
        return self.records("test")[0]

    # ------------------------------------------------------------------ training stages

    def require_teacher(self):
        """Stops the run (SystemExit) when the dked stage has no trained teacher to load."""
        from dked_tf import training as T

        teacher_dir = self.checkpoint("teacher")
        if not T.is_saved_detector(teacher_dir):
            raise SystemExit(f"the dked stage needs a trained teacher in {teacher_dir}: run the teacher stage")

    def train_stage(self, key, seed):
        """Train (or find) one of teacher / student / student_dked; returns its folder."""
        from dked_tf import training as T

        cfg = self.cfg
        folder = self.checkpoint(key, None if key == "teacher" else seed)
        if T.is_saved_detector(folder) and not self.force:
            self.log(f"{key}: found {folder}, skipping (use --force to retrain)")
            return folder
        if key == "student_dked":
            self.require_teacher()
        schedule = cfg.teacher_train if key == "teacher" else cfg.train
        if key != "teacher":
            schedule = type(schedule)(**{**vars(schedule), "seed": seed})
        arch = cfg.model.teacher if key == "teacher" else cfg.model.student
        overrides = cfg.model.teacher_overrides if key == "teacher" else cfg.model.student_overrides
        train_records, class_names = self.records("train")
        self.log(f"{key}: training {arch} for {schedule.epochs} epochs at {cfg.data.image_size} px, "
                 f"{len(train_records)} images, seed {schedule.seed}")
        # Same seed -> same initial student weights and the same batch order for 2 and 3.
        T.set_seed(schedule.seed)
        dataset = T.make_train_dataset(train_records, cfg.data, seed=schedule.seed)
        steps = T.steps_in(dataset) or max(1, len(train_records) // cfg.data.batch_size)
        model = T.build_detector(arch, len(class_names), cfg.data.image_size, **overrides)
        optimizer = T.make_optimizer(schedule, steps)
        backup = os.path.join(self.out, "checkpoints", "backup", os.path.basename(folder))
        resume = not self.force
        if key == "student_dked":
            teacher, _ = T.load_detector(self.checkpoint("teacher"))
            _, outcome = T.distill(teacher, model, dataset, distill_cfg=cfg.distill, optimizer=optimizer,
                                   epochs=schedule.epochs, stage=key, checkpoint_dir=backup, resume=resume,
                                   verbose=self.verbose, image_size=cfg.data.image_size,
                                   checkpoint_every=schedule.checkpoint_every)
        else:
            outcome = T.train_detector(model, dataset, epochs=schedule.epochs, optimizer=optimizer, stage=key,
                                       checkpoint_dir=backup, resume=resume, verbose=self.verbose,
                                       checkpoint_every=schedule.checkpoint_every)
        T.save_detector(model, folder, architecture=arch, class_names=class_names, image_size=cfg.data.image_size,
                        overrides=overrides, tile_size=T.tile_size_for(cfg), train_seconds=outcome.train_seconds,
                        seed=schedule.seed, epochs=schedule.epochs)
        with open(os.path.join(folder, "history.json"), "w", encoding="utf-8") as handle:
            json.dump(outcome.history, handle, indent=2)
        self.log(f"{key}: done in {outcome.train_seconds:.0f} s -> {folder}")
        return folder

    def train_seeds_side_by_side(self, keys, jobs):
        """Training stages `keys` (student, student_dked) of every seed, `jobs` seeds at a time,
        each seed in its own process (`dked_tf.jobs`) that runs them in order. The processes
        write logs/seed<N>.log; their epoch lines are echoed here with the seed in front."""
        from dked_tf import training as T
        from dked_tf.jobs import Job, run_jobs

        if "student_dked" in keys:
            self.require_teacher()
        todo = [seed for seed in self.seeds
                if self.force or not all(T.is_saved_detector(self.checkpoint(key, seed)) for key in keys)]
        for seed in self.seeds:
            if seed not in todo:
                self.log(f"seed {seed}: found {', '.join(keys)} checkpoints, skipping (use --force to retrain)")
        if not todo:
            return
        self.records("train")  # a synthetic set is generated here once, not by every process
        origin = time.time() - (time.perf_counter() - self.start)
        log_dir = os.path.join(self.out, "logs")
        self.log(f"training seeds {', '.join(map(str, todo))}: {jobs} at a time, one process each "
                 f"(progress below; full logs in {log_dir})")
        run_jobs([Job(f"seed {seed}", _train_seed_stages,
                      (type(self), self.cfg, self.out, self.seeds, seed, tuple(keys), self.force, origin),
                      os.path.join(log_dir, f"seed{seed}.log")) for seed in todo],
                 parallel=jobs, echo=lambda line: print(line, flush=True) if self.verbose else None)

    # ------------------------------------------------------------------ evaluation

    def evaluate_model(self, model):
        """(metrics dict, {"voc07": EvalResult, ...}, detections) on the test split."""
        from dked_tf import training as T

        return T.evaluate_map(model, self.eval_records(), self.class_names, self.cfg, verbose=self.verbose,
                              return_results=True)

    def evaluate_stage(self, keys_and_folders):
        from dked_tf import training as T

        results = self.load_results()
        results["dataset"] = self.dataset_description()
        results["metric"] = {
            "name": "rotated-box VOC AP (DOTA devkit semantics: polygon IoU > 0.5, difficult ignored)",
            "map07": "VOC2007 11-point AP", "map12": "VOC2012 all-point AP",
            "image_size": self.cfg.data.image_size, "score_threshold": self.cfg.model.score_threshold,
            "nms_iou_threshold": self.cfg.model.iou_threshold, "classes": list(self.class_names),
        }
        results["preset"] = self.cfg.preset
        models = results.setdefault("models", {})
        seeds = results.setdefault("seeds", {})
        size = self.cfg.data.image_size
        for key, seed, folder in keys_and_folders:
            if not T.is_saved_detector(folder):
                self.log(f"evaluate: {key} has no checkpoint in {folder}, skipped")
                continue
            model, meta = T.load_detector(folder)
            self.log(f"evaluate: {key}{'' if seed is None else f' (seed {seed})'}")
            metrics, evals, detections = self.evaluate_model(model)
            localisation = self.localisation(model)
            entry = {
                "map07": metrics["map07"], "map12": metrics["map12"],
                "params": T.count_params(model),
                "gflops": T.estimate_gflops(model, size),
                "latency_ms_cpu": T.measure_latency_ms(model, size, runs=10 if self.cfg.preset == "smoke" else 30),
                "train_seconds": float(meta.get("train_seconds", 0.0)),
                "architecture": meta["architecture"], "checkpoint": folder,
                "per_class07": metrics["per_class07"], "num_gt": metrics["num_gt"], "num_det": metrics["num_det"],
                "localisation": localisation,
            }
            if seed is not None:
                seeds.setdefault(str(seed), {})[key] = {
                    **{k: entry[k] for k in ("map07", "map12", "train_seconds")},
                    "quality_median": localisation["quality_median"]}
            if seed is None or seed == self.seeds[0]:
                models[key] = entry
                self.pictures(key, evals, detections)
            self.log(f"evaluate: {key} mAP(07) {100 * entry['map07']:.2f}  mAP(12) {100 * entry['map12']:.2f}  "
                     f"{entry['params'] / 1e6:.2f} M params  {entry['gflops']:.2f} GFLOPs  "
                     f"{entry['latency_ms_cpu']:.1f} ms  localisation q {localisation['quality_median']:.3f}")
        if len(self.seeds) > 1:
            results["seed_summary"] = seed_summary(seeds)
        results.update(self.extra_results)
        self.save_results(results)
        return results

    def localisation(self, model):
        """`dked_tf.evaluation.diagnostics` on the test images (patches for DOTA) at the model's size."""
        from dked_tf.evaluation.diagnostics import localisation_diagnostics

        cfg = self.cfg
        return localisation_diagnostics(model, self.records("test")[0], cfg.data.image_size,
                                        batch_size=cfg.eval_batch_size, max_objects=cfg.data.max_objects)

    def pictures(self, key, evals, detections):
        """PR curves and a few test images with ground truth and detections drawn."""
        try:
            from dked_tf import visualize
        except ImportError:
            return
        curves_dir = os.path.join(self.out, "pr_curves")
        os.makedirs(curves_dir, exist_ok=True)
        for metric, result in evals.items():
            if result.pr_curves:
                visualize.plot_pr_curves(result.pr_curves, os.path.join(curves_dir, f"{key}_{metric}.png"),
                                         ap=result.per_class, title=f"{key} ({metric})")
        self.draw(key, detections)

    def draw(self, key, detections):
        import cv2
        import numpy as np

        from dked_tf import visualize

        records = self.eval_records()[: self.cfg.num_drawn_images]
        folder = os.path.join(self.out, "detections", key)
        os.makedirs(folder, exist_ok=True)
        for record in records:
            image = cv2.imread(record.image_path, cv2.IMREAD_COLOR)
            if image is None:
                continue
            image = cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
            polys, scores, labels = [], [], []
            for name, entries in detections.items():
                for image_id, score, poly in entries:
                    if image_id == record.image_id and score >= 0.3:
                        polys.append(np.asarray(poly, np.float32).reshape(8))
                        scores.append(score)
                        labels.append(name)
            polys = np.stack(polys) if polys else np.zeros((0, 8), np.float32)
            drawn = visualize.draw_detections_vs_gt(image, record.polygons, polys, np.asarray(scores, np.float32),
                                                    labels=labels)
            visualize.save_image(os.path.join(folder, f"{record.image_id}.png"), drawn)

    # ------------------------------------------------------------------ export

    def export_stage(self):
        from dked_tf import training as T

        folder = self.checkpoint("student_dked", self.seeds[0])
        if not T.is_saved_detector(folder):
            self.log(f"export: no distilled student in {folder}, skipped")
            return
        model, meta = T.load_detector(folder)
        export_dir = os.path.join(self.out, "export")
        os.makedirs(export_dir, exist_ok=True)
        results = self.load_results()
        exported = results.setdefault("export", {})
        cfg = self.cfg
        if cfg.export.saved_model:
            try:
                from dked_tf.export.saved_model import export_saved_model

                path = os.path.join(export_dir, "saved_model")
                self.log(f"export: SavedModel -> {path}")
                export_saved_model(model, path, **_accepted(export_saved_model, dict(
                    image_size=cfg.data.image_size, score_threshold=cfg.model.score_threshold,
                    iou_threshold=cfg.model.iou_threshold, max_detections=cfg.model.max_detections,
                    class_names=list(meta["class_names"]))))
                exported["saved_model"] = {"path": path, "megabytes": _folder_mb(path)}
            except ImportError as error:
                self.log(f"export: SavedModel export not available in this build ({error})")
        if cfg.export.tflite:
            try:
                from dked_tf.export import tflite as tfl

                path = os.path.join(export_dir, f"student_dked_{cfg.export.quantize}.tflite")
                self.log(f"export: TFLite ({cfg.export.quantize}) -> {path}")
                kwargs = dict(image_size=cfg.data.image_size, quantize=cfg.export.quantize,
                              score_threshold=cfg.model.score_threshold, iou_threshold=cfg.model.iou_threshold,
                              max_detections=cfg.model.max_detections, class_names=list(meta["class_names"]),
                              verbose=self.verbose)
                if cfg.export.quantize == "int8":
                    kwargs["representative_images"] = tfl.representative_from_records(
                        self.records("train")[0], cfg.data.image_size, limit=cfg.export.representative_images)
                tfl.export_tflite(model, path, **_accepted(tfl.export_tflite, kwargs))
                entry = {"path": path, "megabytes": os.path.getsize(path) / 2**20, "quantize": cfg.export.quantize}
                if getattr(tfl, "predict_tflite", None) is not None:
                    entry.update(self.tflite_map(tfl.predict_tflite, path))
                exported["tflite"] = entry
            except ImportError as error:
                self.log(f"export: TFLite export not available in this build ({error})")
        self.save_results(results)

    def tflite_map(self, predict_tflite, path):
        """mAP(07)/mAP(12) of the exported .tflite on the test split (LiteRT interpreter, host NMS)."""
        from dked_tf import training as T

        kwargs = dict(records=self.eval_records(), class_names=list(self.class_names),
                      score_threshold=self.cfg.model.score_threshold, iou_threshold=self.cfg.model.iou_threshold,
                      max_detections=self.cfg.model.max_detections, verbose=self.verbose)
        try:
            detections = predict_tflite(path, **_accepted(predict_tflite, kwargs))
            metrics = T.score_detections(detections, self.eval_records(), self.class_names)
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
        text = render_report(results, self.cfg, title=self.title, paper=self.paper,
                             labels={"teacher": self.teacher_label, "student": self.student_label,
                                     "student_dked": self.dked_label})
        path = os.path.join(self.out, "report.md")
        with open(path, "w", encoding="utf-8") as handle:
            handle.write(text)
        self.log(f"report: {path}")
        if self.verbose:
            print(text)

    # ------------------------------------------------------------------ all

    def run(self, stages):
        from dked_tf import config as C

        C.save_run_config(self.cfg, self.out)
        key_folders = []
        if "teacher" in stages:
            self.train_stage("teacher", self.cfg.teacher_train.seed)
        key_folders.append(("teacher", None, self.checkpoint("teacher")))
        seed_keys = [key for key, stage in (("student", "student"), ("student_dked", "dked")) if stage in stages]
        jobs = min(int(self.cfg.seed_jobs), len(self.seeds))
        if seed_keys and jobs > 1:
            self.train_seeds_side_by_side(seed_keys, jobs)
        for seed in self.seeds:
            if jobs <= 1:
                for key in seed_keys:
                    self.train_stage(key, seed)
            tag = None if len(self.seeds) == 1 else seed
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


def _train_seed_stages(recipe_class, cfg, out, seeds, seed, keys, force, origin):
    """One seed's training stages in a `dked_tf.jobs` child process. origin: the parent's start
    time (time.time()), so the [mm:ss] stamps of both processes agree."""
    recipe = recipe_class(cfg, out, seeds, verbose=2, force=force)
    recipe.start = time.perf_counter() - (time.time() - origin)
    for key in keys:
        recipe.train_stage(key, seed)


def _accepted(function, kwargs):
    import inspect

    params = inspect.signature(function).parameters
    if any(p.kind == p.VAR_KEYWORD for p in params.values()):
        return kwargs
    return {k: v for k, v in kwargs.items() if k in params}


def _folder_mb(path):
    total = 0
    for base, _, files in os.walk(path):
        total += sum(os.path.getsize(os.path.join(base, f)) for f in files)
    return total / 2**20


def seed_summary(seeds):
    """Per model: mean and spread (max - min) of mAP(07) and mAP(12) over seeds, and the DKED gain
    per seed (metrics missing from older results are left out)."""
    import numpy as np

    summary = {}
    for metric in ("map07", "map12"):
        for key in ("student", "student_dked"):
            values = [v[key][metric] for v in seeds.values() if metric in v.get(key, {})]
            if values:
                summary.setdefault(key, {}).update({
                    f"{metric}_mean": float(np.mean(values)), f"{metric}_spread": float(np.ptp(values)),
                    metric: [float(v) for v in values]})
        gains = [v["student_dked"][metric] - v["student"][metric] for v in seeds.values()
                 if metric in v.get("student", {}) and metric in v.get("student_dked", {})]
        if gains:
            summary[f"dked_gain_{metric}"] = [float(g) for g in gains]
            summary[f"dked_gain_{metric}_mean"] = float(np.mean(gains))
    pairs = [(v["student"]["quality_median"], v["student_dked"]["quality_median"]) for v in seeds.values()
             if "quality_median" in v.get("student", {}) and "quality_median" in v.get("student_dked", {})]
    if pairs:
        student_q, dked_q = (np.array(x, np.float64) for x in zip(*pairs))
        summary["quality"] = {"student": student_q.tolist(), "student_dked": dked_q.tolist(),
                              "student_spread": float(np.ptp(student_q)), "student_dked_spread": float(np.ptp(dked_q)),
                              "dked_gain": (dked_q - student_q).tolist(),
                              "dked_gain_mean": float(np.mean(dked_q - student_q))}
    return summary


def _quality(entry):
    """The median localisation quality of a results entry as text ('-' for older results)."""
    value = entry.get("quality_median", entry.get("localisation", {}).get("quality_median"))
    return "-" if value is None else f"{value:.3f}"


def render_report(results, cfg, title, paper, labels):
    """report.md: the paper-style table (Methods | mAP(07) | mAP(12) | Params | GFLOPs |
    latency), the DKED gain, the paper's figures next to ours, seeds, export."""
    models = results.get("models", {})
    lines = [f"# DKED on {title}: teacher, student, distilled student", ""]
    lines.append(f"Dataset: {results.get('dataset', '?')}. Preset: `{cfg.preset}`. Input {cfg.data.image_size} px.")
    lines.append(f"Metric: {results.get('metric', {}).get('name', 'rotated VOC AP')}; mAP(07) = 11-point, "
                 f"mAP(12) = all-point. Latency: batch 1, forward pass only, this machine's CPU.")
    lines.append("")
    lines.append("| Methods | mAP(07) | mAP(12) | Params (M) | GFLOPs | Latency CPU (ms) | Train (s) | Loc. q | Paper mAP |")
    lines.append("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for key in ("teacher", "student", "student_dked"):
        if key not in models:
            continue
        m = models[key]
        paper_label, paper_map = paper[key]
        lines.append(f"| {labels[key]} | {100 * m['map07']:.2f} | {100 * m['map12']:.2f} | {m['params'] / 1e6:.2f} | "
                     f"{m['gflops']:.2f} | {m['latency_ms_cpu']:.1f} | {m['train_seconds']:.0f} | "
                     f"{_quality(m)} | {paper_map:.2f} ({paper_label}) |")
    lines.append("")
    lines.append("Loc. q: median localisation quality of the box regression at the positive cells of the test "
                 "images (`dked_tf.evaluation.diagnostics`; 1 = exact box). mAP(07) cannot fall below 9.09 once the "
                 "top-ranked detection is a true positive (11-point AP at recall 0), so near that floor q is the "
                 "more telling figure.")
    seed_count = len(results.get("seeds", {}))
    if seed_count > 1 and int(getattr(cfg, "seed_jobs", 1)) > 1:
        lines.append(f"Train (s) of the students: wall time while {min(int(cfg.seed_jobs), seed_count)} seeds "
                     "trained side by side (one process each, `--jobs`), sharing the CPU cores.")
    lines.append("")
    if "student" in models and "student_dked" in models:
        gain07 = 100 * (models["student_dked"]["map07"] - models["student"]["map07"])
        gain12 = 100 * (models["student_dked"]["map12"] - models["student"]["map12"])
        paper_gain = paper["student_dked"][1] - paper["student"][1]
        lines.append(f"**DKED gain over the student:** {gain07:+.2f} mAP(07), {gain12:+.2f} mAP(12) "
                     f"(paper: {paper['student'][1]:.2f} → {paper['student_dked'][1]:.2f}, {paper_gain:+.2f}).")
        if "teacher" in models:
            gap = 100 * (models["teacher"]["map07"] - models["student"]["map07"])
            if gap > 0:
                lines.append(f"Teacher − student gap: {gap:+.2f} mAP(07); the DKED student closes "
                             f"{gain07 / gap * 100:.0f}% of it.")
            else:
                lines.append(f"Teacher − student gap: {gap:+.2f} mAP(07): the teacher is NOT better than "
                             "the student in this run, so distillation has nothing to transfer; train the "
                             "teacher longer (`--set teacher_train.epochs=...`) before reading the DKED gain.")
        if not summary_has_spread(results):
            lines.append("A single seed: run `--seeds 0 1` to compare the gain with the seed-to-seed spread.")
        lines.append("")
    summary = results.get("seed_summary")
    if summary:
        lines.append("## Seeds")
        lines.append("")
        lines.append("| seed | student mAP(07) | DKED mAP(07) | gain | student mAP(12) | DKED mAP(12) | gain | "
                     "student q | DKED q |")
        lines.append("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
        for seed, entry in sorted(results.get("seeds", {}).items()):
            if "student" in entry and "student_dked" in entry:
                cells = []
                for metric in ("map07", "map12"):
                    s, d = entry["student"].get(metric), entry["student_dked"].get(metric)
                    cells += (["-"] * 3 if s is None or d is None
                              else [f"{100 * s:.2f}", f"{100 * d:.2f}", f"{100 * (d - s):+.2f}"])
                lines.append(f"| {seed} | " + " | ".join(cells)
                             + f" | {_quality(entry['student'])} | {_quality(entry['student_dked'])} |")
        for metric, label in (("map07", "mAP(07)"), ("map12", "mAP(12)")):
            spread = summary.get("student", {}).get(f"{metric}_spread")
            if spread is None:
                continue
            gains = summary.get(f"dked_gain_{metric}", [])
            beaten = sum(g > spread for g in gains)
            lines.append("")
            lines.append(f"{label}: seed-to-seed spread (max − min) of the student {100 * spread:.2f}, of the DKED "
                         f"student {100 * summary.get('student_dked', {}).get(f'{metric}_spread', 0):.2f}; "
                         f"mean gain {100 * summary.get(f'dked_gain_{metric}_mean', 0):+.2f}; the gain exceeds "
                         f"the student's spread on {beaten} of {len(gains)} seeds.")
        quality = summary.get("quality")
        if quality:
            lines.append("")
            lines.append(f"Localisation quality q: spread of the student {quality['student_spread']:.3f}, of the DKED "
                         f"student {quality['student_dked_spread']:.3f}; DKED gain per seed "
                         + ", ".join(f"{g:+.3f}" for g in quality["dked_gain"])
                         + f" (mean {quality['dked_gain_mean']:+.3f}).")
        lines.append("")
    exported = results.get("export")
    if exported:
        lines.append("## Export of the distilled student")
        lines.append("")
        for name, entry in exported.items():
            extra = ", ".join(f"{k} {v:.4f}" if isinstance(v, float) else f"{k} {v}"
                              for k, v in entry.items() if k not in ("path", "megabytes"))
            lines.append(f"- {name}: `{entry['path']}` ({entry['megabytes']:.2f} MB){'; ' + extra if extra else ''}")
        lines.append("")
    lines.append("Pictures: `pr_curves/` (precision-recall per model and metric), `detections/` (test images: ground "
                 "truth and detections with score ≥ 0.3).")
    lines.append("")
    lines.append(f"The paper's figures are for the real {title} with paper-scale models; on the synthetic "
                 "set and the small CPU presets compare the ordering and the gain, not the absolute values.")
    lines.append("")
    return "\n".join(lines)


def main(argv=None, recipe_class=Recipe, task="hrsc", name="hrsc_lodet", student=None, default_out="runs/hrsc_lodet",
         description=__doc__):
    args = build_parser(description, default_out).parse_args(argv)
    stages = parse_stages(args.stages)
    cfg = resolve_config(args, task=task, student=student, name=name)
    seeds = args.seeds or ([args.seed] if args.seed is not None else None) or list(cfg.seeds) or [cfg.train.seed]
    recipe = recipe_class(cfg, args.out, seeds, verbose=args.verbose, force=args.force)
    return recipe.run(stages)


if __name__ == "__main__":
    sys.exit(main())
