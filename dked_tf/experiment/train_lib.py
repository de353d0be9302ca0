"""One training path for every face: `train(cfg, role, seed, out, teacher=None)`.

The `train` and `distill` commands, the recipes, the seed jobs and the benchmarks train models
through this module (TF Model Garden's `train_lib`):

    result = train(cfg, "teacher", out="runs/teacher")
    result = train(cfg, "student", seed=1, out="runs/dked", teacher="runs/teacher")   # DKED

A run folder receives `history.json` (every epoch, those before a resume too) and then
`model.json` + `model.weights.h5` (`experiment.saving`; model.json records what the model was
trained with, `run_record`) and, while training, `backup/` (resumable every
train.checkpoint_every epochs; `callbacks.EpochBackup` keeps two, so a kill while one is written
leaves the other) and `clock.json` (training seconds so far, summed over interrupted and resumed
runs). The backup is removed once the model is saved. Every file is written atomically
(`dked_tf.files`). An interrupted run resumes only with the config it was started with
(`check_resumable`).

Logs of every run with a folder: `history.csv` (one row per epoch: loss terms, learning rate,
val mAP; `callbacks.CsvLog`) and `tensorboard/` (`callbacks.TensorBoardLog`; train.tensorboard).
With train.val_every > 0 the detector is scored (mAP(07)/mAP(12)) on the images of
`data.validation_split` every val_every epochs and the weights of the best val_map07 are kept in
`best.weights.h5` + `best.json` (`callbacks.BestWeights`; train.early_stop_patience stops early);
model.weights.h5 stays the weights of the last epoch.

Scale: train.strategy builds the model, optimizer and distiller under a `tf.distribute` strategy
(`make_strategy`), train.mixed_precision sets the Keras dtype policy while the run builds and
trains (`training_scope`).
"""

import contextlib
import dataclasses
import json
import os
import shutil
import tempfile

import keras
import numpy as np
import tensorflow as tf

from dked_tf.config import ConfigError, to_dict
from dked_tf.distiller import Distiller
from dked_tf.evaluation.callback import MeanAPCallback
from dked_tf.experiment.callbacks import (
    BestWeights,
    CsvLog,
    EpochBackup,
    LearningRateLog,
    RunProgress,
    TensorBoardLog,
    backup_files,
    backup_record,
)
from dked_tf.experiment.data import (
    make_train_dataset,
    prepare_records,
    resolve_input,
    steps_in,
    tile_size_for,
    validation_split,
)
from dked_tf.experiment.optimizer import make_optimizer, prebuild_optimizer
from dked_tf.experiment.saving import (
    HISTORY_FILE,
    MODEL_FILE,
    RECORD_KEY,
    is_saved_detector,
    load_detector,
    save_detector,
)
from dked_tf.files import CorruptFileError, read_json, write_json
from dked_tf.losses import distill as distill_losses
from dked_tf.models.presets import build_detector
from dked_tf.terminal import keras_verbosity

ROLES = ("teacher", "student")
# A checkpoint folder (fit's checkpoint_dir) holds the backups in this subfolder and the clock.
BACKUP_SUBDIR = "backup"
CLOCK_FILE = "clock.json"
# Record sections compared key by key (`record_differences`).
RECORD_SECTIONS = ("data", "schedule", "distill", "teacher")
# Files of a run folder written while training (besides saving.MODEL_FILE, WEIGHTS_FILE, HISTORY_FILE).
BEST_WEIGHTS_FILE = "best.weights.h5"
BEST_JSON_FILE = "best.json"
CSV_FILE = "history.csv"
TENSORBOARD_DIR = "tensorboard"
# Schedule keys that say how a run executes, not what it trains: left out of the run record, so a
# run may resume with other values (another backup interval, logs on or off, more devices).
EXECUTION_KEYS = ("checkpoint_every", "tensorboard", "strategy")
# Strategies made so far in this process (one per name: a multi-worker strategy can be made once).
_STRATEGIES = {}


def set_seed(seed):
    """Seed Python's `random`, NumPy and TensorFlow (through keras.utils.set_random_seed)."""
    keras.utils.set_random_seed(int(seed))


@dataclasses.dataclass
class TrainOutcome:
    """history: Keras' per-epoch logs; train_seconds: wall time of the training (all parts of a
    resumed run); epochs: the schedule's length; best: the best validation epoch ({"epoch",
    "val_map07", "weights"}; None without validation); stopped_early_at: the epoch early stopping
    ended the run after (None: it ran its schedule)."""

    history: dict
    train_seconds: float
    epochs: int
    best: dict = None
    stopped_early_at: int = None


@dataclasses.dataclass
class TrainResult:
    """What `train` returns: the trained model, its outcome, the folder it was saved to (or
    None), and the architecture, schedule and class names it was trained with."""

    model: keras.Model
    outcome: TrainOutcome
    folder: str
    architecture: str
    schedule: object
    class_names: tuple


# ----------------------------------------------------------------------------- fitting


def fit(
    model,
    train_ds,
    *,
    epochs,
    stage,
    callbacks=(),
    checkpoint_dir=None,
    resume=True,
    verbose=1,
    steps_per_epoch=None,
    validation_data=None,
    checkpoint_every=1,
    record=None,
    keep_backup=False,
):
    """`model.fit` (model compiled) with one progress line per epoch, resumable backups in
    `checkpoint_dir/backup` every `checkpoint_every` epochs (0: none; `EpochBackup`: two kept,
    a corrupt one falls back to the one before) and the wall time spent training in
    `checkpoint_dir/clock.json`. verbose: 0 silent, 1 Keras progress bar, 2 one Keras line per
    epoch (for log files; the Keras bar is drawn only when stdout is a terminal, `keras_verbosity`,
    else RunProgress's line is the only one per epoch). record: what the run is configured with, saved in every backup
    (`run_record`). keep_backup: leave the backups when fit ends (the caller removes them with
    `remove_backup` once the model is saved). The outcome's history holds every epoch of the
    run, those before a resume too. Raises FloatingPointError when a loss ends non-finite.
    """
    callbacks = list(callbacks)
    previous_seconds = 0.0
    clock_path = None
    backup = None
    if checkpoint_dir:
        backup_dir = os.path.join(checkpoint_dir, BACKUP_SUBDIR)
        clock_path = os.path.join(checkpoint_dir, CLOCK_FILE)
        if not resume:
            remove_backup(checkpoint_dir)
        elif os.path.exists(clock_path) and os.path.isdir(backup_dir):
            try:
                previous_seconds = float(read_json(clock_path).get("train_seconds", 0.0))
            except (CorruptFileError, AttributeError, TypeError, ValueError):
                # an unreadable clock loses the time of earlier parts, not the run
                print(f"[{stage}] {clock_path} is unreadable: training time counted from this resume", flush=True)
        os.makedirs(checkpoint_dir, exist_ok=True)
        if checkpoint_every > 0:
            backup = EpochBackup(
                backup_dir,
                every=checkpoint_every,
                record=record,
                delete_at_end=not keep_backup,
                stage=stage,
                verbose=verbose,
            )
            callbacks.append(backup)
    fit_verbose = keras_verbosity(verbose)
    progress = RunProgress(
        stage,
        epochs,
        verbose=verbose,
        clock_path=clock_path,
        previous_seconds=previous_seconds,
        after_progress_bar=fit_verbose == 1,
    )
    callbacks.append(progress)
    prebuild_optimizer(model)
    history = model.fit(
        train_ds,
        epochs=epochs,
        callbacks=callbacks,
        verbose=fit_verbose,
        shuffle=False,
        steps_per_epoch=steps_per_epoch,
        validation_data=validation_data,
    )
    if backup is not None:
        logs = {key: list(values) for key, values in backup.history.items()}
    else:
        logs = {k: [float(x) for x in v] for k, v in history.history.items()}
    for key, values in logs.items():
        if values and not np.isfinite(values[-1]):
            raise FloatingPointError(f"[{stage}] training diverged: {key} = {values[-1]} at the last epoch")
    return TrainOutcome(history=logs, train_seconds=float(progress.seconds), epochs=int(epochs))


def remove_backup(checkpoint_dir):
    """Removes the backups and the clock `fit` keeps in checkpoint_dir (and the folder when
    nothing else is in it)."""
    shutil.rmtree(os.path.join(checkpoint_dir, BACKUP_SUBDIR), ignore_errors=True)
    clock_path = os.path.join(checkpoint_dir, CLOCK_FILE)
    if os.path.exists(clock_path):
        os.remove(clock_path)
    with contextlib.suppress(OSError):
        os.rmdir(checkpoint_dir)


# ----------------------------------------------------------------------------- what a run is


def _record_teacher(teacher):
    """The teacher's part of a run record: its own record (from its model.json) for a saved
    teacher, the architecture and size facts for one saved without a record."""
    if not isinstance(teacher, (str, os.PathLike)):
        return {"model": getattr(teacher, "name", type(teacher).__name__)}
    meta = read_json(os.path.join(teacher, MODEL_FILE), default={})
    return meta.get(RECORD_KEY) or legacy_record(meta)


def run_record(cfg, role, seed=None, teacher=None, architecture=None, init_from=None):
    """What determines the model a run of `train(cfg, role, seed, teacher=..., ...)` trains: the
    architecture and its overrides, the data (without the cache folder and the test input
    size), the schedule (without the backup interval) and, with a teacher, the distillation
    settings and the teacher's own record. Saved in every backup and in model.json
    (`trained_with`); a backup or a finished model is reused only when its record matches
    (`record_differences`)."""
    default_arch, overrides, schedule = role_settings(cfg, role)
    if seed is not None:
        schedule = dataclasses.replace(schedule, seed=int(seed))
    data = to_dict(cfg.data)
    for key in ("cache_dir", "test_image_size"):
        data.pop(key, None)
    if not schedule.val_every:  # which images validate matters only when some do
        for key in ("val_split", "val_fraction"):
            data.pop(key, None)
    if data.get("root"):
        data["root"] = os.path.abspath(os.path.expanduser(data["root"]))
        data = {key: value for key, value in data.items() if not key.startswith("synthetic_")}
    schedule = to_dict(schedule)
    for key in EXECUTION_KEYS:
        schedule.pop(key, None)
    record = {
        "architecture": architecture or default_arch,
        "overrides": json.loads(json.dumps(overrides or {})),
        "data": data,
        "schedule": schedule,
    }
    # where the backbone started ("" from scratch; not loaded when starting from init_from)
    record["backbone_weights"] = "" if init_from else getattr(cfg.model, f"{role}_backbone_weights")
    if teacher is not None:
        record["distill"] = to_dict(cfg.distill)
        record["teacher"] = _record_teacher(teacher)
    if init_from:
        record["init_from"] = os.path.abspath(init_from)
    return record


def legacy_record(meta):
    """The record of a model.json written without one (earlier versions): the architecture, its
    overrides and the training input size are all it says."""
    if not meta:
        return {}
    return {
        "architecture": meta.get("architecture"),
        "overrides": meta.get("overrides", {}),
        "data": {"image_size": meta.get("train_image_size", meta.get("image_size"))},
    }


def saved_record(run_dir):
    """The record of the saved detector in run_dir (`legacy_record` for one written without)."""
    meta = read_json(os.path.join(run_dir, MODEL_FILE), default={})
    return meta.get(RECORD_KEY) or legacy_record(meta)


def record_differences(recorded, current, prefix=""):
    """The differences between two run records, as `key: recorded -> current` strings. Only
    keys both records have are compared (a record of an earlier version lacks the newer
    settings); the sections (data, schedule, distill, teacher) are compared key by key, other
    values (architecture, overrides) as a whole."""
    differences = []
    for key in recorded:
        if key not in current:
            continue
        old, new = recorded[key], current[key]
        if key in RECORD_SECTIONS and isinstance(old, dict) and isinstance(new, dict):
            differences += record_differences(old, new, prefix=f"{prefix}{key}.")
        elif old != new:
            differences.append(f"{prefix}{key}: {_short(old)} -> {_short(new)}")
    return differences


def _short(value, limit=60):
    text = json.dumps(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def default_backup_dir(out):
    """Where a run saved to `out` keeps its resumable backup."""
    return os.path.join(out, "backup")


def check_resumable(backup_dir, record):
    """Raises ConfigError when backup_dir holds the backup of an interrupted run configured
    otherwise than `record` (resuming it would mix two runs)."""
    recorded = backup_record(os.path.join(backup_dir, BACKUP_SUBDIR))
    if recorded is None or record is None:
        return
    differences = record_differences(recorded, record)
    if differences:
        raise ConfigError(
            f"{backup_dir} holds an interrupted run of another config ({'; '.join(differences[:3])}"
            f"{'; ...' if len(differences) > 3 else ''}): rerun with its settings to resume it, or with "
            "--no-resume to start over"
        )


def make_distillation_losses(distill_cfg):
    """The three DKED losses [correlation, response, prediction] of a DistillConfig: each loss's
    weight = scale × its default weight (a scale of 0 switches the loss off); `distill.extra`
    holds constructor keyword arguments per loss (`correlation`, `response`, `prediction`)."""
    extra = distill_cfg.extra or {}
    return distill_losses.distillation_losses(
        scales=(distill_cfg.correlation_scale, distill_cfg.response_scale, distill_cfg.prediction_scale),
        correlation=extra.get("correlation"),
        response=extra.get("response"),
        prediction={"lam": distill_cfg.lam, "margin": distill_cfg.delta, **extra.get("prediction", {})},
    )


def make_distiller(teacher, student, distill_cfg, image_size):
    """A `Distiller` of the frozen `teacher` and `student` configured from a DistillConfig
    (`distill.extra["distiller"]` holds further Distiller keyword arguments)."""
    teacher.trainable = False
    return Distiller(
        teacher,
        student,
        distillation_losses=make_distillation_losses(distill_cfg),
        student_loss_weight=distill_cfg.student_loss_weight,
        image_size=int(image_size),
        **dict((distill_cfg.extra or {}).get("distiller", {})),
    )


# ----------------------------------------------------------------------------- one run


def role_settings(cfg, role):
    """(architecture, overrides, schedule) of `role` ("teacher" or "student") in cfg."""
    if role == "teacher":
        return cfg.model.teacher, cfg.model.teacher_overrides, cfg.teacher_train
    if role == "student":
        return cfg.model.student, cfg.model.student_overrides, cfg.train
    raise ValueError(f"unknown role {role!r}; use one of {', '.join(ROLES)}")


def require_saved_teacher(folder):
    """Raises FileNotFoundError unless `folder` holds a saved detector to distil from."""
    if not is_saved_detector(folder):
        raise FileNotFoundError(
            f"{folder} is not a saved detector (model.json + model.weights.h5): train a teacher "
            "with `dked-tf train --role teacher --out DIR`"
        )


def make_strategy(name):
    """The `tf.distribute` strategy of train.strategy: "none" (the default strategy: one device),
    "mirrored" (`MirroredStrategy` over every visible GPU, or the CPU when there is none) or
    "multi_worker" (`MultiWorkerMirroredStrategy`, cluster from the TF_CONFIG environment
    variable; without one, a single worker). One strategy per name and process (a multi-worker
    strategy must exist before TensorFlow runs its first op, so make it early)."""
    if name == "none":
        return tf.distribute.get_strategy()
    if name not in _STRATEGIES:
        if name == "mirrored":
            _STRATEGIES[name] = tf.distribute.MirroredStrategy()
        elif name == "multi_worker":
            _STRATEGIES[name] = tf.distribute.MultiWorkerMirroredStrategy()
        else:
            raise ConfigError(f"train.strategy={name!r}: choose from none, mirrored, multi_worker")
    return _STRATEGIES[name]


def is_chief(strategy):
    """True unless `strategy` is a multi-worker strategy and this process is not its chief (the
    "chief" task, or worker 0 of a cluster without one): only the chief writes the run folder."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None:
        return True
    jobs = resolver.cluster_spec().as_dict()
    if not jobs or resolver.task_type in (None, "chief"):
        return True
    return resolver.task_type == "worker" and not resolver.task_id and "chief" not in jobs


@contextlib.contextmanager
def training_scope(schedule):
    """The scale switches of a schedule while a run builds and trains: the Keras dtype policy
    (train.mixed_precision; the previous one is restored after) and the scope of the
    distribution strategy (train.strategy). Yields the strategy."""
    previous = keras.config.dtype_policy()
    strategy = make_strategy(schedule.strategy)
    if schedule.mixed_precision != "none":
        keras.config.set_dtype_policy(schedule.mixed_precision)
    try:
        with strategy.scope():
            yield strategy
    finally:
        keras.config.set_dtype_policy(previous)


def remove_run_logs(out, tensorboard=True):
    """Removes the best-weights files (and with tensorboard=True the default TensorBoard folder) of
    an earlier run from the run folder `out`, before a run that starts over."""
    for name in (BEST_JSON_FILE, BEST_WEIGHTS_FILE):
        path = os.path.join(out, name)
        if os.path.exists(path):
            os.remove(path)
    if tensorboard:
        shutil.rmtree(os.path.join(out, TENSORBOARD_DIR), ignore_errors=True)


def run_callbacks(cfg, schedule, stage, out, record, val_records, class_names, tensorboard_dir=None, verbose=1):
    """The callbacks `train` puts before the caller's: the learning rate into the logs, with
    val_records the validation (`MeanAPCallback`, every schedule.val_every epochs) and the best
    weights (`BestWeights`, out/best.weights.h5; early stopping), the CSV log (out/history.csv) and
    TensorBoard (tensorboard_dir, default out/tensorboard when schedule.tensorboard). Returns
    (callbacks, best callback or None)."""
    own = [LearningRateLog()]
    validation = best = None
    if val_records is not None:
        validation = MeanAPCallback(
            list(val_records),
            list(class_names),
            cfg.data.inference_size,
            every_n_epochs=schedule.val_every,
            verbose=0,
            batch_size=cfg.eval_batch_size,
            score_threshold=cfg.model.score_threshold,
            nms_iou_threshold=cfg.model.iou_threshold,
            max_detections=cfg.model.max_detections,
        )
        best = BestWeights(
            os.path.join(out, BEST_WEIGHTS_FILE) if out else None,
            monitor="val_map07",
            patience=schedule.early_stop_patience,
            record=record,
            stage=stage,
            verbose=verbose,
        )
        own += [validation, best]
    if out:
        own.append(CsvLog(os.path.join(out, CSV_FILE)))
    if tensorboard_dir is None and out and schedule.tensorboard:
        tensorboard_dir = os.path.join(out, TENSORBOARD_DIR)
    if tensorboard_dir:
        own.append(TensorBoardLog(tensorboard_dir, validation=validation, max_images=cfg.num_drawn_images))
    return own, best


def train(
    cfg,
    role,
    seed=None,
    out=None,
    teacher=None,
    *,
    records=None,
    val_records=None,
    stage=None,
    architecture=None,
    init_from=None,
    backup_dir=None,
    resume=True,
    verbose=1,
    callbacks=(),
    tensorboard_dir=None,
):
    """Train one detector of `cfg` (an ExperimentConfig) and save it to `out`.

    role: "teacher" (model.teacher, teacher_train schedule) or "student" (model.student, train
    schedule). seed: the schedule's seed (default: the config's); the same seed gives the same
    initial weights, batch order and augmentation, so a student and a DKED student of one seed
    differ only by distillation. teacher: a trained teacher (model or saved-detector folder):
    the student then trains with DKED (`Distiller`, distill section of cfg).
    records: (train_records, class_names), loaded from cfg.data when None. val_records: the
    images scored when the schedule's val_every > 0 (default: `validation_split` of cfg, which
    may hold some training images out). architecture: a preset name instead of the role's.
    init_from: a saved-detector folder to start from.
    out: the run folder (model.json, weights, history.json, history.csv, tensorboard/, with
    validation best.weights.h5 + best.json; None: nothing saved). tensorboard_dir: TensorBoard
    event files there instead of out/tensorboard.
    backup_dir: where the resumable backup lives (default out/backup); resume=False starts over.
    The schedule's strategy and mixed_precision apply (`training_scope`).
    Returns a TrainResult.
    """
    if isinstance(teacher, (str, os.PathLike)):
        require_saved_teacher(teacher)
    default_arch, overrides, schedule = role_settings(cfg, role)
    architecture = architecture or default_arch
    if seed is not None:
        schedule = dataclasses.replace(schedule, seed=int(seed))
    stage = stage or ("dked" if teacher is not None else role)
    train_records, class_names = records or prepare_records(cfg, "train", verbose=verbose)
    if str(cfg.data.input_scale).strip().lower() == "auto":
        cfg, line = resolve_input(cfg, train_records)
        if verbose:
            print(line, flush=True)
    if schedule.val_every and val_records is None:
        train_records, val_records, line = validation_split(cfg, train_records, verbose=verbose)
        if verbose:
            print(f"[{stage}] {line}", flush=True)
    if not schedule.val_every:
        val_records = None
    if backup_dir is None and out:
        backup_dir = default_backup_dir(out)
    record = run_record(cfg, role, seed=seed, teacher=teacher, architecture=architecture, init_from=init_from)
    if backup_dir and resume:
        check_resumable(backup_dir, record)
    with training_scope(schedule) as strategy:
        # a multi-worker run: every worker trains, only the chief writes the run folder
        scratch = None if is_chief(strategy) else tempfile.mkdtemp(prefix="dked_tf-worker-")
        if scratch:
            out, backup_dir, tensorboard_dir = os.path.join(scratch, "run"), os.path.join(scratch, "backup"), None
        # a run that starts over (no backup to go on from) keeps no logs of an earlier one
        fresh = not resume or not (backup_dir and backup_files(os.path.join(backup_dir, BACKUP_SUBDIR)))
        if out and (fresh or not schedule.val_every):
            remove_run_logs(out, tensorboard=fresh)
        set_seed(schedule.seed)
        dataset = make_train_dataset(train_records, cfg.data, seed=schedule.seed)
        steps = steps_in(dataset) or max(1, len(train_records) // cfg.data.batch_size)
        if init_from:
            model, _ = load_detector(init_from)
        else:
            model = build_detector(architecture, len(class_names), cfg.data.image_size, **overrides)
            key = f"model.{role}_backbone_weights"
            model.load_backbone_weights(getattr(cfg.model, f"{role}_backbone_weights"), key=key, verbose=verbose)
        optimizer = make_optimizer(schedule, steps)
        meta = {"role": role, "seed": schedule.seed, "epochs": schedule.epochs, RECORD_KEY: record}
        if teacher is not None:
            if isinstance(teacher, (str, os.PathLike)):
                meta["teacher"] = os.path.abspath(teacher)
                teacher, teacher_meta = load_detector(teacher)
                if list(teacher_meta["class_names"]) != list(class_names):
                    raise ValueError(
                        f"the teacher in {meta['teacher']} was trained on classes "
                        f"{teacher_meta['class_names']}, the data has {list(class_names)}"
                    )
                taught_at = teacher_meta.get("train_image_size", teacher_meta["image_size"])
                if taught_at != cfg.data.image_size and verbose:
                    print(f"note: teacher trained at {taught_at} px, distilling at {cfg.data.image_size} px")
            trained = make_distiller(teacher, model, cfg.distill, cfg.data.image_size)
            trained.compile(optimizer=optimizer)
        else:
            trained = model
            trained.compile(optimizer=optimizer, jit_compile=False)
        own, best = run_callbacks(
            cfg, schedule, stage, out, record, val_records, class_names, tensorboard_dir, verbose=verbose
        )
        outcome = fit(
            trained,
            dataset,
            epochs=schedule.epochs,
            stage=stage,
            callbacks=own + list(callbacks),
            checkpoint_dir=backup_dir,
            resume=resume,
            verbose=verbose,
            checkpoint_every=schedule.checkpoint_every,
            record=record,
            keep_backup=bool(out),
        )
    if best is not None and best.best_epoch is not None:
        outcome.best = {
            "epoch": best.best_epoch,
            "val_map07": best.best,
            "weights": BEST_WEIGHTS_FILE if best.weights_path else None,
        }
        outcome.stopped_early_at = best.stopped_epoch
    if out:
        # history first, model.json (what marks a finished run) last, the backup removed after
        os.makedirs(out, exist_ok=True)
        history = {"history": outcome.history, "train_seconds": outcome.train_seconds, "epochs": outcome.epochs}
        if outcome.best is not None:
            history.update(best=outcome.best, stopped_early_at=outcome.stopped_early_at)
            meta.update(best=outcome.best, stopped_early_at=outcome.stopped_early_at)
        write_json(os.path.join(out, HISTORY_FILE), history)
        save_detector(
            model,
            out,
            architecture=architecture,
            class_names=class_names,
            image_size=cfg.data.inference_size,
            train_image_size=cfg.data.image_size,
            input_scale=cfg.data.input_scale,
            overrides=overrides,
            tile_size=tile_size_for(cfg),
            train_seconds=outcome.train_seconds,
            **meta,
        )
        if backup_dir:
            remove_backup(backup_dir)
    if scratch:
        shutil.rmtree(scratch, ignore_errors=True)
        out = None
    return TrainResult(
        model=model,
        outcome=outcome,
        folder=out,
        architecture=architecture,
        schedule=schedule,
        class_names=tuple(class_names),
    )
