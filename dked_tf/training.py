"""Training helpers shared by the CLI and the recipes.

- `set_seed(seed)`: Python, NumPy and TensorFlow seeds in one call.
- `WarmupCosine` / `make_optimizer(train_cfg, steps_per_epoch)`: linear warm-up from 0, then a
  per-iteration cosine to a floor (the GGHL §1.8 schedule), AdamW or SGD-Nesterov, decoupled
  weight decay that skips biases and normalisation parameters.
- `build_detector(name, num_classes, image_size)`: a preset model with its weights created.
- `train_detector(model, train_ds, ...)` and `distill(teacher, student, train_ds, ...)`: `fit`
  with a Keras progress bar, a whole-run ETA line per epoch, resumable backups
  (`keras.callbacks.BackupAndRestore`) and the wall time spent training (`train_seconds`,
  summed over interrupted and resumed runs).
- `count_params`, `estimate_gflops`, `measure_latency_ms`: the numbers of a results table.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import shutil
import time

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import keras  # noqa: E402
import tensorflow as tf  # noqa: E402


def set_seed(seed):
    """Seed Python's `random`, NumPy and TensorFlow (through keras.utils.set_random_seed)."""
    keras.utils.set_random_seed(int(seed))


# ----------------------------------------------------------------------------- optimizer


@keras.saving.register_keras_serializable(package="dked_tf")
class WarmupCosine(keras.optimizers.schedules.LearningRateSchedule):
    """Learning rate per iteration: linear from 0 to `peak` over `warmup_steps`, then a cosine
    from `peak` down to `floor` at `total_steps` (held at `floor` after that)."""

    def __init__(self, peak, total_steps, warmup_steps=0, floor=0.0):
        self.peak = float(peak)
        self.total_steps = int(max(1, total_steps))
        self.warmup_steps = int(max(0, min(warmup_steps, self.total_steps - 1)))
        self.floor = float(floor)

    def __call__(self, step):
        step = tf.cast(step, tf.float32)
        warmup = tf.cast(self.warmup_steps, tf.float32)
        total = tf.cast(self.total_steps, tf.float32)
        warm_lr = self.peak * (step + 1.0) / tf.maximum(warmup, 1.0)
        progress = tf.clip_by_value((step - warmup) / tf.maximum(total - warmup, 1.0), 0.0, 1.0)
        cosine_lr = self.floor + 0.5 * (self.peak - self.floor) * (1.0 + tf.cos(math.pi * progress))
        return tf.where(step < warmup, warm_lr, cosine_lr)

    def get_config(self):
        return {"peak": self.peak, "total_steps": self.total_steps,
                "warmup_steps": self.warmup_steps, "floor": self.floor}


# Variables whose names contain one of these are not weight-decayed (biases, BN/LN parameters).
NO_DECAY_NAMES = ("bias", "gamma", "beta", "moving_mean", "moving_variance")


def make_optimizer(train_cfg, steps_per_epoch):
    """A Keras optimizer for `train_cfg` (`dked_tf.config.TrainConfig`) with the warm-up +
    cosine schedule over train_cfg.epochs × steps_per_epoch iterations."""
    steps_per_epoch = max(1, int(steps_per_epoch))
    schedule = WarmupCosine(
        peak=train_cfg.learning_rate,
        total_steps=train_cfg.epochs * steps_per_epoch,
        warmup_steps=int(round(train_cfg.warmup_epochs * steps_per_epoch)),
        floor=train_cfg.min_learning_rate,
    )
    clip = {"clipnorm": train_cfg.clipnorm} if train_cfg.clipnorm and train_cfg.clipnorm > 0 else {}
    name = train_cfg.optimizer.lower()
    if name == "adamw":
        optimizer = keras.optimizers.AdamW(learning_rate=schedule, weight_decay=train_cfg.weight_decay, **clip)
    elif name == "sgd":
        optimizer = keras.optimizers.SGD(learning_rate=schedule, momentum=train_cfg.momentum, nesterov=True,
                                         weight_decay=train_cfg.weight_decay or None, **clip)
    else:
        raise ValueError(f"unknown optimizer {train_cfg.optimizer!r}; use 'adamw' or 'sgd'")
    if train_cfg.weight_decay:
        optimizer.exclude_from_weight_decay(var_names=list(NO_DECAY_NAMES))
    return optimizer


# ----------------------------------------------------------------------------- models


def build_detector(name, num_classes, image_size, **overrides):
    """`dked_tf.models.presets.build_model(name, num_classes, **overrides)` with its weights
    created by one forward pass on a zero image [1, S, S, 3]."""
    from dked_tf.models.presets import build_model

    model = build_model(name, num_classes, **overrides)
    model(tf.zeros([1, image_size, image_size, 3], tf.float32), training=False)
    return model


def count_params(model):
    """Number of parameters (trainable + non-trainable) of a built model."""
    try:
        from dked_tf.models import presets

        helper = getattr(presets, "count_params", None)
        if helper is not None:
            return int(helper(model))
    except ImportError:
        pass
    return int(sum(int(np.prod(v.shape)) for v in model.weights))


def estimate_gflops(model, image_size):
    """GFLOPs of one forward pass of a [1, S, S, 3] image (multiply and add counted as two
    operations, TensorFlow profiler convention). Uses the models package helper if present."""
    try:
        from dked_tf.models import presets

        for name in ("gflops", "count_gflops", "estimate_gflops"):
            helper = getattr(presets, name, None)
            if helper is not None:
                return float(helper(model, image_size))
    except ImportError:
        pass
    return _profiler_gflops(model, image_size)


def _profiler_gflops(model, image_size):
    from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2

    forward = tf.function(lambda x: model(x, training=False)["head"])
    concrete = forward.get_concrete_function(tf.TensorSpec([1, image_size, image_size, 3], tf.float32))
    frozen = convert_variables_to_constants_v2(concrete)
    options = tf.compat.v1.profiler.ProfileOptionBuilder.float_operation()
    options["output"] = "none"
    profile = tf.compat.v1.profiler.profile(graph=frozen.graph, run_meta=tf.compat.v1.RunMetadata(),
                                            cmd="op", options=options)
    return float(profile.total_float_ops) / 1e9


def measure_latency_ms(model, image_size, runs=20, warmup=3, include_decode=False, **decode_kwargs):
    """Median wall time (ms) of one forward pass of a batch-1 [1, S, S, 3] image on this
    machine's CPU, compiled with tf.function; `include_decode=True` adds `model.decode`
    (scores, polygons, rotated NMS)."""
    images = tf.random.stateless_uniform([1, image_size, image_size, 3], seed=(1, 2))

    @tf.function(reduce_retracing=True)
    def forward(x):
        head = model(x, training=False)["head"]
        if include_decode:
            return model.decode(head, **decode_kwargs)
        return head

    with tf.device("/CPU:0"):
        for _ in range(max(1, warmup)):
            tf.nest.map_structure(lambda t: t.numpy(), forward(images))
        times = []
        for _ in range(max(1, runs)):
            start = time.perf_counter()
            tf.nest.map_structure(lambda t: t.numpy(), forward(images))
            times.append(time.perf_counter() - start)
    return float(np.median(times) * 1000.0)


# ----------------------------------------------------------------------------- training


class RunProgress(keras.callbacks.Callback):
    """Prints one line per epoch: the stage, epoch k/N, the logged losses, the elapsed time of
    the whole stage and the estimated time left (from the mean epoch time so far)."""

    def __init__(self, stage, epochs, verbose=1, clock_path=None, previous_seconds=0.0):
        super().__init__()
        self.stage = stage
        self.epochs = int(epochs)
        self.verbose = verbose
        self.clock_path = clock_path
        self.previous_seconds = float(previous_seconds)
        self._start = None
        self._first_epoch = None
        self._epoch_start = None
        self._durations = []
        self.seconds = float(previous_seconds)

    def on_train_begin(self, logs=None):
        self._start = time.perf_counter()

    def on_epoch_begin(self, epoch, logs=None):
        if self._first_epoch is None:
            self._first_epoch = epoch
        self._epoch_start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        now = time.perf_counter()
        self.seconds = self.previous_seconds + now - self._start
        self._durations.append(now - self._epoch_start)
        if self.clock_path:
            with open(self.clock_path, "w", encoding="utf-8") as handle:
                json.dump({"train_seconds": self.seconds, "epochs_done": epoch + 1}, handle)
        if not self.verbose:
            return
        # The first epoch of a run includes tracing the training step: estimate from the others.
        recent = self._durations[1:] if len(self._durations) > 1 else self._durations
        left = float(np.mean(recent)) * (self.epochs - epoch - 1)
        shown = {k: v for k, v in (logs or {}).items() if k in ("loss", "total", "jol_total", "val_map07")}
        losses = " ".join(f"{k} {float(v):.4f}" for k, v in shown.items())
        # leading newline: Keras' progress bar of this epoch has not ended its line yet
        print(f"\n[{self.stage}] epoch {epoch + 1}/{self.epochs} {losses} | elapsed {_clock(self.seconds)}, "
              f"ETA {_clock(left)}", flush=True)


def _clock(seconds):
    seconds = int(round(seconds))
    return f"{seconds // 3600:d}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


@dataclasses.dataclass
class TrainOutcome:
    history: dict
    train_seconds: float
    epochs: int


class EpochBackup(keras.callbacks.BackupAndRestore):
    """`keras.callbacks.BackupAndRestore` that writes its backup every `every` epochs (Keras'
    own writes after every epoch or every N batches); restoring is unchanged."""

    def __init__(self, backup_dir, every=1):
        super().__init__(backup_dir, save_freq="epoch", delete_checkpoint=True)
        self.every = max(1, int(every))

    def on_epoch_end(self, epoch, logs=None):
        if (epoch + 1) % self.every == 0:
            super().on_epoch_end(epoch, logs)


def prebuild_optimizer(model):
    """Creates the optimizer's slot variables before the first training step is traced.

    Without a distribution strategy Keras defers this into the traced train step; variables
    created there make `tf.function` trace the whole step a second time (measured on the small
    student at 128 px: first step 39.6 s -> 22.6 s). Same variables, same updates: Keras builds
    them exactly so under a strategy and before restoring a backup.
    """
    optimizer = getattr(model, "optimizer", None)
    if model.built and optimizer is not None and not optimizer.built:
        with model.distribute_strategy.scope():
            optimizer.build(model.trainable_variables)


def _fit(model, train_ds, *, epochs, stage, callbacks, checkpoint_dir, resume, verbose, steps_per_epoch,
         validation_data=None, checkpoint_every=1):
    callbacks = list(callbacks or [])
    previous_seconds = 0.0
    clock_path = None
    if checkpoint_dir:
        backup_dir = os.path.join(checkpoint_dir, "backup")
        clock_path = os.path.join(checkpoint_dir, "clock.json")
        if not resume:
            shutil.rmtree(backup_dir, ignore_errors=True)
            if os.path.exists(clock_path):
                os.remove(clock_path)
        elif os.path.exists(clock_path) and os.path.isdir(backup_dir):
            with open(clock_path, encoding="utf-8") as handle:
                previous_seconds = float(json.load(handle).get("train_seconds", 0.0))
            if verbose:
                print(f"[{stage}] resuming from the backup in {backup_dir}", flush=True)
        os.makedirs(checkpoint_dir, exist_ok=True)
        if checkpoint_every > 0:
            callbacks.append(EpochBackup(backup_dir, every=checkpoint_every))
    progress = RunProgress(stage, epochs, verbose=verbose, clock_path=clock_path, previous_seconds=previous_seconds)
    callbacks.append(progress)
    prebuild_optimizer(model)
    # verbose 2: Keras' one line per epoch instead of its progress bar (for log files)
    fit_verbose = 2 if verbose == 2 else 1 if verbose else 0
    history = model.fit(train_ds, epochs=epochs, callbacks=callbacks, verbose=fit_verbose, shuffle=False,
                        steps_per_epoch=steps_per_epoch, validation_data=validation_data)
    seconds = progress.seconds
    logs = {k: [float(x) for x in v] for k, v in (history.history if history else {}).items()}
    for key, values in logs.items():
        if values and not np.isfinite(values[-1]):
            raise FloatingPointError(f"[{stage}] training diverged: {key} = {values[-1]} at the last epoch")
    return TrainOutcome(history=logs, train_seconds=float(seconds), epochs=int(epochs))


def train_detector(model, train_ds, *, epochs, optimizer, stage="train", callbacks=None, checkpoint_dir=None,
                   resume=True, verbose=1, steps_per_epoch=None, validation_data=None, jit_compile=False,
                   checkpoint_every=1):
    """Compile `model` (an OrientedDetector: its compute_loss is the JOL loss) with
    `optimizer` and fit it on `train_ds` for `epochs` epochs.

    checkpoint_dir: a folder for the resumable backup and the time spent; with resume=True an
    interrupted run continues from its last backup. checkpoint_every: epochs between backups
    (0: none; each backup of a small model costs ~0.5 s on 2 CPU cores).
    Returns a TrainOutcome(history, train_seconds, epochs).
    """
    model.compile(optimizer=optimizer, jit_compile=jit_compile)
    return _fit(model, train_ds, epochs=epochs, stage=stage, callbacks=callbacks, checkpoint_dir=checkpoint_dir,
                resume=resume, verbose=verbose, steps_per_epoch=steps_per_epoch, validation_data=validation_data,
                checkpoint_every=checkpoint_every)


def make_distillation_losses(distill_cfg):
    """The three DKED losses of `dked_tf.losses.distill` configured from a DistillConfig:
    weight = scale × the loss's default weight; a scale of 0 disables the loss."""
    from dked_tf.losses import distill as losses

    extra = distill_cfg.extra or {}
    made = []
    for cls, scale, key, kwargs in (
        (losses.FeatureCorrelationLoss, distill_cfg.correlation_scale, "correlation", {}),
        (losses.DirectionalResponseLoss, distill_cfg.response_scale, "response", {}),
        (losses.PredictionDistillationLoss, distill_cfg.prediction_scale, "prediction",
         {"lam": distill_cfg.lam, "margin": distill_cfg.delta}),
    ):
        kwargs = {**kwargs, **dict(extra.get(key, {}))}
        loss = cls(**kwargs)
        if scale <= 0:
            loss = cls(**{**kwargs, "enabled": False})
        else:
            loss.weight = float(loss.weight) * float(scale)
        made.append(loss)
    return made


def distiller_kwargs(distill_cfg, image_size=None):
    """Keyword arguments for `dked_tf.distiller.Distiller` from a DistillConfig."""
    kwargs = {"distillation_losses": make_distillation_losses(distill_cfg),
              "student_loss_weight": distill_cfg.student_loss_weight}
    if image_size is not None:
        kwargs["image_size"] = int(image_size)
    kwargs.update(dict((distill_cfg.extra or {}).get("distiller", {})))
    return kwargs


def distill(teacher, student, train_ds, *, distill_cfg, optimizer, epochs, stage="distill", callbacks=None,
            checkpoint_dir=None, resume=True, verbose=1, steps_per_epoch=None, image_size=None, checkpoint_every=1):
    """Train `student` from the frozen `teacher` with DKED (`dked_tf.distiller.Distiller`).
    checkpoint_dir, resume, checkpoint_every: as in `train_detector`.

    Returns (distiller, TrainOutcome); `distiller.student` is the trained student, the same
    object as `student`.
    """
    from dked_tf.distiller import Distiller

    teacher.trainable = False
    distiller = Distiller(teacher, student, **distiller_kwargs(distill_cfg, image_size=image_size))
    distiller.compile(optimizer=optimizer)
    outcome = _fit(distiller, train_ds, epochs=epochs, stage=stage, callbacks=callbacks,
                   checkpoint_dir=checkpoint_dir, resume=resume, verbose=verbose, steps_per_epoch=steps_per_epoch,
                   checkpoint_every=checkpoint_every)
    return distiller, outcome


def steps_in(dataset):
    """Number of batches of a finite tf.data.Dataset (None when unknown or infinite)."""
    cardinality = int(tf.data.experimental.cardinality(dataset).numpy())
    return cardinality if cardinality > 0 else None


# ----------------------------------------------------------------------------- data


def synthetic_root(data_cfg, verbose=1):
    """Folder of the built-in synthetic dataset for data_cfg (generated on first use, then
    reused): `<cache_dir>/synthetic_<format>_<train>x<test>_<size>px_seed<seed>`."""
    from dked_tf.data import synthetic

    cache = os.path.expanduser(data_cfg.cache_dir)
    name = (f"synthetic_{data_cfg.format}_{data_cfg.synthetic_train_images}x{data_cfg.synthetic_test_images}"
            f"_{data_cfg.synthetic_image_size}px_seed{data_cfg.synthetic_seed}")
    min_length = float(data_cfg.synthetic_min_ship_length)
    if data_cfg.format == "hrsc" and min_length != synthetic.DEFAULT_MIN_SHIP_LENGTH:
        name += f"_minship{min_length:g}"
    max_aspect = float(data_cfg.synthetic_max_ship_aspect)
    if data_cfg.format == "hrsc" and max_aspect != synthetic.DEFAULT_MAX_SHIP_ASPECT:
        name += f"_aspect{max_aspect:g}"
    root = os.path.join(cache, name)
    make = synthetic.make_synthetic_hrsc if data_cfg.format == "hrsc" else synthetic.make_synthetic_dota
    kwargs = dict(num_train=data_cfg.synthetic_train_images, num_test=data_cfg.synthetic_test_images,
                  image_size=data_cfg.synthetic_image_size, seed=data_cfg.synthetic_seed,
                  min_ship_length=min_length, max_ship_aspect=max_aspect)
    import inspect

    params = inspect.signature(make).parameters
    kwargs = {k: v for k, v in kwargs.items() if k in params}
    if verbose:
        print(f"synthetic {data_cfg.format.upper()} dataset: {root}", flush=True)
    result = make(root, **kwargs) if "verbose" not in params else make(root, verbose=verbose, **kwargs)
    if isinstance(result, (str, os.PathLike)):
        root = os.fspath(result)
    return root


def load_records(data_cfg, split, verbose=1):
    """(records, class_names) of split "train" or "test" for data_cfg: the real dataset at
    data_cfg.root, or the synthetic set (generated once under data_cfg.cache_dir)."""
    root = os.path.expanduser(data_cfg.root) if data_cfg.root else synthetic_root(data_cfg, verbose=verbose)
    if data_cfg.format == "hrsc":
        from dked_tf.data.hrsc import read_hrsc

        records, info = read_hrsc(root, imageset="trainval" if split == "train" else "test", verbose=verbose)
        return records, tuple(info.class_names)
    if data_cfg.format == "dota":
        from dked_tf.data import dota

        folder = _dota_split_folder(root, split)
        kwargs = {"verbose": verbose}
        if data_cfg.classes:
            kwargs["classes"] = data_cfg.classes
        records, info = dota.read_dota(folder, **_accepted(dota.read_dota, kwargs))
        return records, tuple(info.class_names)
    raise ValueError(f"unknown data format {data_cfg.format!r}; use 'hrsc' or 'dota'")


def _dota_split_folder(root, split):
    names = ("train", "trainval") if split == "train" else ("val", "test")
    for name in names:
        if os.path.isdir(os.path.join(root, name)):
            return os.path.join(root, name)
    raise FileNotFoundError(f"DOTA root {root} has no {' or '.join(names)} folder")


def _accepted(function, kwargs):
    import inspect

    params = inspect.signature(function).parameters
    if any(p.kind == p.VAR_KEYWORD for p in params.values()):
        return kwargs
    return {k: v for k, v in kwargs.items() if k in params}


def make_train_dataset(records, data_cfg, seed=0):
    """`build_dataset(..., training=True)` configured from data_cfg: augmentation on/off,
    mixup on/off, AugmentConfig overrides (data.augment_kwargs), multi-scale sizes; shuffled
    and augmented deterministically under `seed`."""
    from dked_tf.data.augment import AugmentConfig
    from dked_tf.data.pipeline import build_dataset

    if data_cfg.augment:
        fields = {"mixup_prob": AugmentConfig().mixup_prob if data_cfg.mixup else 0.0}
        fields.update(data_cfg.augment_kwargs or {})
        augment = AugmentConfig(**fields)
    else:
        augment = False
    kwargs = dict(training=True, max_objects=data_cfg.max_objects, augment=augment, seed=seed)
    if data_cfg.multiscale:
        kwargs.update(multiscale_sizes=list(data_cfg.multiscale), multiscale_every=data_cfg.multiscale_every)
    return build_dataset(records, data_cfg.image_size, data_cfg.batch_size, **kwargs)


# ----------------------------------------------------------------------------- saved detectors

MODEL_FILE = "model.json"
WEIGHTS_FILE = "model.weights.h5"


def save_detector(model, run_dir, *, architecture, class_names, image_size, overrides=None, **extra):
    """Write `model.weights.h5` and `model.json` (architecture preset, classes, input size,
    overrides, anything in `extra`) into run_dir: what `load_detector` and `dked-tf predict`
    need to rebuild the model."""
    os.makedirs(run_dir, exist_ok=True)
    model.save_weights(os.path.join(run_dir, WEIGHTS_FILE))
    meta = {"architecture": architecture, "num_classes": len(class_names), "class_names": list(class_names),
            "image_size": int(image_size), "overrides": dict(overrides or {}), "weights": WEIGHTS_FILE}
    meta.update(extra)
    with open(os.path.join(run_dir, MODEL_FILE), "w", encoding="utf-8") as handle:
        json.dump(meta, handle, indent=2)
    return run_dir


def is_saved_detector(run_dir):
    return bool(run_dir) and os.path.isfile(os.path.join(run_dir, MODEL_FILE)) and \
        os.path.isfile(os.path.join(run_dir, WEIGHTS_FILE))


def load_detector(run_dir):
    """(model, meta) from a folder written by `save_detector` (or a path to its model.json)."""
    if os.path.isfile(run_dir):
        run_dir = os.path.dirname(run_dir)
    meta_path = os.path.join(run_dir, MODEL_FILE)
    if not os.path.isfile(meta_path):
        raise FileNotFoundError(f"{run_dir} is not a saved detector: {MODEL_FILE} is missing "
                                f"(write one with `dked-tf train --out DIR`)")
    with open(meta_path, encoding="utf-8") as handle:
        meta = json.load(handle)
    model = build_detector(meta["architecture"], meta["num_classes"], meta["image_size"], **meta.get("overrides", {}))
    model.load_weights(os.path.join(run_dir, meta.get("weights", WEIGHTS_FILE)))
    return model, meta


def tile_size_for(cfg):
    """Tile side used by `dked-tf predict` for models of this config: DOTA models see patches
    of data.patch_size; HRSC models see whole images (0 = no tiling)."""
    return int(cfg.data.patch_size) if cfg.data.format == "dota" else 0


def prepare_records(cfg, split, verbose=1):
    """(records, class_names) the model trains on (split="train") or is scored on
    (split="test"). HRSC: whole images. DOTA: train scenes are cut into patches (cached under
    data.cache_dir); test returns the patches too (see `dota_scene_records` for the scenes)."""
    records, class_names = load_records(cfg.data, split, verbose=verbose)
    if cfg.data.format == "dota":
        records = split_into_patches(records, cfg, split, class_names, verbose=verbose)
    return records, class_names


def split_into_patches(records, cfg, split, class_names, verbose=1):
    """DOTA scenes -> patch records (`dked_tf.data.split.split_dota`), written once to
    `<cache_dir>/patches/<hash of the scene list and settings>/<split>`."""
    import hashlib

    from dked_tf.data.split import split_dota

    key = hashlib.sha1(repr((sorted(r.image_path for r in records), cfg.data.patch_size, cfg.data.patch_gap))
                       .encode()).hexdigest()[:12]
    out_dir = os.path.join(os.path.expanduser(cfg.data.cache_dir), "patches", key, split)
    kwargs = dict(patch_size=cfg.data.patch_size, gap=cfg.data.patch_gap, class_names=class_names, verbose=verbose)
    result = split_dota(records, out_dir, **_accepted(split_dota, kwargs))
    return result[0] if isinstance(result, tuple) else result


def evaluate_map(model, records, class_names, cfg, verbose=1, return_results=False):
    """mAP(07) and mAP(12) (DOTA devkit semantics, IoU > 0.5) of `model` on `records`.

    Returns {"map07", "map12", "per_class07", "per_class12", "num_gt", "num_det"}; with
    return_results=True also ({"voc07": EvalResult, "voc12": EvalResult}, detections)."""
    from dked_tf.evaluation.runner import predict_records

    detections = predict_records(model, records, cfg.data.image_size, batch_size=cfg.eval_batch_size,
                                 score_threshold=cfg.model.score_threshold, iou_threshold=cfg.model.iou_threshold,
                                 max_detections=cfg.model.max_detections, class_names=list(class_names),
                                 verbose=verbose)
    return score_detections(detections, records, class_names, return_results=return_results)


def score_detections(detections, records, class_names, return_results=False):
    """The metrics dict of `evaluate_map` for ready detections (class -> [(id, score, poly)])."""
    from dked_tf.evaluation.metrics import evaluate_detections

    results = {m: evaluate_detections(detections, records, list(class_names), metric=m) for m in ("voc07", "voc12")}
    metrics = {
        "map07": float(results["voc07"].map), "map12": float(results["voc12"].map),
        "per_class07": {k: float(v) for k, v in results["voc07"].per_class.items()},
        "per_class12": {k: float(v) for k, v in results["voc12"].per_class.items()},
        "num_gt": {k: int(v) for k, v in dict(results["voc07"].num_gt).items()},
        "num_det": {k: int(v) for k, v in dict(results["voc07"].num_det).items()},
    }
    if return_results:
        return metrics, results, detections
    return metrics
