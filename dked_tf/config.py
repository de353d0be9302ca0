"""Experiment configuration: dataclasses, presets, files and `--set key.sub=value` overrides.

One `ExperimentConfig` describes a whole run (data, models, the two training schedules,
distillation, export). It starts from a preset (`smoke`, `quick`, `default`, `paper`), may be
updated from a YAML/JSON file (a nested mapping with the same keys) and then from
`--set section.field=value` strings; values are parsed with YAML syntax and checked against the
field's type, so `--set train.epochs=12`, `--set train.learning_rate=2e-4`,
`--set data.augment=false`, `--set data.multiscale=[224,256,288]` all do what they say.
`validate_config` checks the values once, where a config is resolved (counts >= 1, input sizes
multiples of the largest stride, thresholds in [0, 1]); errors are ConfigError.
The config actually used is written next to every run (`config.yaml` and `config.json`).
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import difflib
import json
import os
import typing

import yaml

from dked_tf.files import write_text_atomic

PRESETS = ("smoke", "quick", "default", "easy", "paper")
# Network inputs are multiples of the largest stride of the models (OrientedDetector's strides
# 8/16/32; tested equal to the models' largest stride).
LARGEST_STRIDE = 32
# data.val_split, train.strategy and train.mixed_precision values
VAL_SPLITS = ("auto", "val", "holdout", "test")
STRATEGIES = ("none", "mirrored", "multi_worker")
MIXED_PRECISION = ("none", "mixed_float16", "mixed_bfloat16")


@dataclasses.dataclass
class DataConfig:
    """Where the images come from and how they are fed.

    root: a real HRSC2016 / DOTA tree; empty means "use the built-in synthetic set".
    cache_dir: where the synthetic set is generated once and reused.
    image_size: network input S (pixels, square) of training.
    input_scale: how images meet the network. "fit": every image is letterboxed whole into
        S x S (training and test). A number s: input pixels per image pixel; training sees
        random S/s windows of the images (native-resolution crops at s = 1) and test whole images
        at that scale (the models are fully convolutional). "auto": s is chosen from the training
        objects' sizes (`dked_tf.experiment.data.resolve_input`), and written into the run's config.
    test_image_size: input of evaluation, prediction and export (0: S for "fit", else the largest
        image side times s, rounded up to a multiple of 32).
    synthetic_*: size of the synthetic set when no root is given.
    multiscale: list of input sizes for multi-scale training (empty: fixed image_size).
    patch_size, patch_gap: DOTA scene tiling (pixels).
    """

    format: str = "hrsc"  # "hrsc" or "dota"
    root: str = ""
    cache_dir: str = "~/.cache/dked_tf"
    image_size: int = 256
    input_scale: str = "fit"
    test_image_size: int = 0
    batch_size: int = 8
    augment: bool = True
    mixup: bool = False
    augment_kwargs: dict = dataclasses.field(default_factory=dict)  # AugmentConfig fields, e.g. {rotate_prob: 0.3}
    multiscale: list = dataclasses.field(default_factory=list)
    multiscale_every: int = 10
    max_objects: int = 64
    synthetic_train_images: int = 320
    synthetic_test_images: int = 80
    synthetic_image_size: int = 256
    synthetic_seed: int = 2016
    # HRSC set: "easy" (dked_tf.data.synthetic) or "realistic" (dked_tf.data.realistic: harbours,
    # coasts, open sea, ten hull types, 15 px to 45 % of the side; min length / aspect do not apply)
    synthetic_kind: str = "easy"
    synthetic_min_ship_length: float = 0.05  # HRSC set: shortest ship, fraction of the image side
    synthetic_max_ship_aspect: float = 10.0  # HRSC set: most slender ship, length / width
    patch_size: int = 256
    patch_gap: int = 64
    classes: str = ""  # DOTA class list: dota1.0 | dota1.5 | dota2.0 | a,b,c (empty: dataset's own)
    # The images scored while training (only when a schedule's val_every > 0;
    # `dked_tf.experiment.data.validation_split`): "auto" (the dataset's own val split when it has
    # one apart from the training and test images, e.g. HRSC2016's ImageSets/val.txt; else
    # "holdout"), "val", "holdout" (val_fraction of the training images, picked by a fixed hash of
    # their ids, DOTA: of the scenes, and not trained on) or "test" (the test split: the best
    # checkpoint is then chosen on the images it is scored on).
    val_split: str = "auto"
    val_fraction: float = 0.1

    @property
    def inference_size(self):
        """Input side (pixels) of evaluation, prediction and export."""
        return int(self.test_image_size or self.image_size)


@dataclasses.dataclass
class ModelConfig:
    """Which architectures to build (`dked_tf.models.presets.build_model` names) and decoding.

    teacher_backbone_weights / student_backbone_weights: where each role's backbone starts
    (one per role: the teacher's Darknet53 and the student's MobileNetV2 take different files).
    "" trains from scratch; "imagenet" takes ImageNet weights from the Keras cache
    (`$KERAS_HOME/models`, default `~/.keras/models`; downloaded there on first use): Keras'
    MobileNetV2 file, or GGHL's `darknet53_448.weights`; or a file: a Darknet `.weights` /
    `.conv.74` (Darknet53) or a Keras `.weights.h5` / `.h5` (`dked_tf.models.backbones`). Loaded
    when a model of that role is built to be trained (not when a trained one is loaded).
    """

    teacher: str = "gghl_darknet53_s"
    student: str = "lodet_mobilenetv2_s"
    teacher_overrides: dict = dataclasses.field(default_factory=dict)
    student_overrides: dict = dataclasses.field(default_factory=dict)
    teacher_backbone_weights: str = ""
    student_backbone_weights: str = ""
    score_threshold: float = 0.05
    iou_threshold: float = 0.3
    max_detections: int = 100

    def min_stride(self, role):
        """Stride (pixels) of the finest output level of the role's models ("teacher" or
        "student"): the `min_stride` of its overrides, else the detectors' default 8."""
        overrides = self.teacher_overrides if role == "teacher" else self.student_overrides
        return int(overrides.get("min_stride", 8))


@dataclasses.dataclass
class TrainConfig:
    """One training schedule: optimizer, warm-up + cosine learning rate, epochs, seed.

    learning_rate is the peak (after warm-up); the cosine decays it to min_learning_rate at the
    last step. weight_decay is decoupled and skips biases and normalisation parameters.
    """

    epochs: int = 30
    optimizer: str = "adamw"  # "adamw" or "sgd" (SGD uses Nesterov momentum)
    learning_rate: float = 2e-3
    min_learning_rate: float = 1e-5
    warmup_epochs: float = 1.0
    weight_decay: float = 5e-4
    momentum: float = 0.9
    clipnorm: float = 10.0
    # > 0: the model keeps an exponential moving average of its weights with this momentum per
    # step (Keras' optimizer EMA) and ends training with the averaged weights
    ema_momentum: float = 0.0
    seed: int = 0
    checkpoint_every: int = 1  # epochs between resumable backups (0: none)
    # Validation while training: mAP(07)/mAP(12) on data.val_split every val_every epochs (0: off),
    # logged as val_map07 / val_map12; the weights of the best val_map07 are kept in the run folder
    # (best.weights.h5 + best.json). early_stop_patience > 0 stops the training when val_map07 has
    # not improved for that many epochs (0: never).
    val_every: int = 0
    early_stop_patience: int = 0
    # Scale switches: "none" (the default device), "mirrored" (tf.distribute.MirroredStrategy over
    # the visible GPUs; data.batch_size is the global batch) or "multi_worker"
    # (MultiWorkerMirroredStrategy from TF_CONFIG); the Keras dtype policy while training: "none"
    # (float32), "mixed_float16" (GPUs; loss scaling) or "mixed_bfloat16" (TPUs, recent CPUs/GPUs).
    strategy: str = "none"
    mixed_precision: str = "none"
    # TensorBoard event files (losses, learning rate, val mAP, drawn val images) in the run folder
    tensorboard: bool = True


@dataclasses.dataclass
class DistillConfig:
    """DKED: each loss's weight as a multiple of its default weight in `dked_tf.losses.distill`
    (1 = the default, 0 switches the loss off), the student's own JOL loss weight, and the
    prediction-distillation margin δ and λ. `extra` holds keyword arguments per loss class
    (`correlation`, `response`, `prediction`) and for the Distiller itself (`distiller`)."""

    correlation_scale: float = 1.0
    response_scale: float = 1.0
    prediction_scale: float = 1.0
    student_loss_weight: float = 1.0
    delta: float = 0.05
    lam: float = 0.5
    extra: dict = dataclasses.field(default_factory=dict)


@dataclasses.dataclass
class ExportConfig:
    saved_model: bool = True
    tflite: bool = True
    quantize: str = "none"  # none | fp16 | int8
    representative_images: int = 64


@dataclasses.dataclass
class ExperimentConfig:
    """A whole run. `teacher_train` schedules the teacher; `train` the student and the DKED
    student (the same schedule and seed for both, so the comparison is fair)."""

    name: str = "hrsc_lodet"
    preset: str = "default"
    data: DataConfig = dataclasses.field(default_factory=DataConfig)
    model: ModelConfig = dataclasses.field(default_factory=ModelConfig)
    teacher_train: TrainConfig = dataclasses.field(default_factory=TrainConfig)
    train: TrainConfig = dataclasses.field(default_factory=TrainConfig)
    distill: DistillConfig = dataclasses.field(default_factory=DistillConfig)
    export: ExportConfig = dataclasses.field(default_factory=ExportConfig)
    eval_batch_size: int = 8
    num_drawn_images: int = 4
    # seeds of the student and DKED student runs (each trained once per seed; empty: train.seed)
    seeds: list = dataclasses.field(default_factory=list)
    # how many seeds train at the same time, each in its own process with cores / seed_jobs
    # TensorFlow threads (dked_tf.jobs; 1: one after the other in this process)
    seed_jobs: int = 1


class ConfigError(ValueError):
    """A config file or override that does not match the dataclasses."""


# ----------------------------------------------------------------------------- presets


def preset_config(name="default", task="hrsc"):
    """The `ExperimentConfig` of a preset.

    name: smoke (tiny everything, for tests), quick (real but minimal run, minutes, on the easy
    synthetic set), default (small CPU models on the realistic synthetic HRSC set, about 27 min
    on 2 cores), easy (the previous default: the same models on the easy synthetic set, 15 min),
    paper (paper-scale models, 800 px, the GGHL / LO-Det reference hyper-parameters; for GPU
    machines).
    task: "hrsc" or "dota" (DOTA has more classes and scene tiling).
    """
    if name not in PRESETS:
        raise ConfigError(f"unknown preset {name!r}; choose from {', '.join(PRESETS)}")
    cfg = ExperimentConfig(name=f"{task}_lodet", preset=name)
    cfg.data.format = task
    if name == "smoke":
        cfg.data = dataclasses.replace(
            cfg.data,
            image_size=64,
            batch_size=4,
            augment=False,
            max_objects=16,
            synthetic_train_images=8,
            synthetic_test_images=4,
            synthetic_image_size=96,
            patch_size=64,
            patch_gap=16,
        )
        cfg.model = dataclasses.replace(
            cfg.model, teacher="gghl_darknet53_t", student="lodet_mobilenetv2_t", max_detections=50
        )
        for tc in (cfg.teacher_train, cfg.train):
            tc.epochs, tc.warmup_epochs = 1, 0.0
        cfg.export.tflite = False
        cfg.num_drawn_images = 1
    elif name == "quick":
        # No augmentation: in a few hundred steps the geometric/HSV augmentations keep the loss
        # high (measured: teacher mAP(07) 1.7 without, 0.0 with light augmentation at 360 steps).
        cfg.data = dataclasses.replace(
            cfg.data,
            image_size=128,
            batch_size=8,
            augment=False,
            synthetic_train_images=96,
            synthetic_test_images=32,
            synthetic_image_size=192,
            synthetic_min_ship_length=0.12,
            synthetic_max_ship_aspect=5.0,
            patch_size=128,
            patch_gap=32,
        )
        cfg.teacher_train.epochs = 10
        cfg.train.epochs = 8
        cfg.num_drawn_images = 2
    elif name in ("default", "easy"):
        # Measured (recipes/README.md, tuning notes): at 256 px light augmentation (flips, small
        # rotations, mild scale/colour, no mixup) + the plain class BCE + GGHL's level thresholds
        # at the set's native size gave the best short-schedule teacher; heavier augmentation
        # lowered mAP in runs of this length. The network sees the 256 px images at 192 px: the
        # teacher scored 20.9 mAP(07) there against 21.2-24.0 at 256 px, and every step costs
        # 25-35 % less (recipes/README.md).
        # Ships of 12-70 % of the image side (31-180 px): the pixel sizes the paper's 800 px models
        # see on HRSC2016, as far as they fit in 256 px. The full 5-70 % range puts half the ships
        # below 6 x 1 cells of the stride-8 grid, where no CPU-length training gets past the
        # mAP(07) floor. Length / width at most 5: at 24 teacher epochs the 3-10 range left the
        # teacher at 11.9 mAP(07) (24.0 with at most 5) and the student's seed spread (7.5) above
        # the DKED gain; rotated IoU 0.5 on a 10:1 hull needs gliding ratios CPU-length training
        # does not reach (recipes/README.md, tuning notes).
        cfg.data = dataclasses.replace(
            cfg.data,
            image_size=192,
            batch_size=8,
            synthetic_train_images=300,
            synthetic_test_images=100,
            synthetic_image_size=256,
            synthetic_min_ship_length=0.12,
            synthetic_max_ship_aspect=5.0,
            augment_kwargs={
                "rotate_degrees": 15.0,
                "rotate_prob": 0.3,
                "scale_prob": 0.3,
                "scale_range": [0.9, 1.1],
                "hsv_gains": [0.01, 0.3, 0.2],
                "mixup_prob": 0.0,
            },
        )
        cfg.model = dataclasses.replace(
            cfg.model, teacher_overrides={"level_reference_size": 256}, student_overrides={"level_reference_size": 256}
        )
        # Two seeds for the students, so the DKED gain can be read against the spread. Measured
        # (recipes/README.md): 24 teacher epochs put the teacher at 24.0 mAP(07) (20 epochs:
        # 13.5); in 12 epochs the DKED student gets past the mAP(07) floor while the student
        # alone stays below it. With 20 student epochs on the 3-10:1 set the gain had vanished.
        # The two seeds train side by side, one core each: they finish 1.35x sooner than one
        # after the other on both cores (`dked-tf bench jobs`: 1.6x on bare training steps);
        # the whole run took 14.9 min instead of 18.5.
        cfg.teacher_train.epochs = 24
        cfg.train.epochs = 12
        cfg.seeds = [0, 1]
        cfg.seed_jobs = 2
        if name == "default" and task == "hrsc":
            # The realistic scenes (dked_tf.data.realistic; recipes/README.md, "Realistic scenes"):
            # 512 px harbours, coasts and open sea, hulls of 15 px to 45 % of the side, 3:1 to 9:1.
            # The teacher's boxes were the bottleneck there (AP(07) 52 at IoU 0.1, 7.6 at 0.5):
            # the probabilistic-IoU term on the decoded quadrilateral (JOL `obb`, weight 4) doubled
            # its mAP(07) at IoU 0.5 (7.6 -> 15.6). Three seeds, so the DKED gain can be read
            # against the spread of every seed.
            cfg.data.synthetic_kind = "realistic"
            cfg.data.synthetic_image_size = 512
            for overrides in (cfg.model.teacher_overrides, cfg.model.student_overrides):
                overrides["loss_weights"] = {"obb": 4.0}
            # Against a baseline trained the same way (two seeds each, recipes/README.md, "third
            # pass"): keeping the hulls thinner than 2 px at 192 px in training (a fifth of them;
            # dropped, they were background) and switching the teacher's DropBlock off raised
            # the teacher from 11.0 / 7.2 to 13.0 / 9.9 mAP(07) / mAP(12) on the mean of seeds 0, 1.
            cfg.data.augment_kwargs.update(min_size=0.5, min_area=1.0)
            cfg.model.teacher_overrides["neck_kwargs"] = {"drop_prob": 0.0}
            # Fourth pass (recipes/README.md): batches of 4 instead of 8 (twice the updates for
            # about 5 % more time per epoch) raised the teacher to 15.4 / 9.9 (mean of seeds 0, 1)
            # and the 24-epoch student from 7.8 / 3.1 to 8.7 / 4.0 on both seeds; 16 student
            # epochs (instead of 12) keep the run under 30 minutes. The teacher's objectness on
            # the negative cells as a soft label (PredictionDistillationLoss dense_objectness)
            # raised the DKED students' AP(07) at IoU 0.1 by 7-8 over the student alone on both
            # seeds and their mAP(12) by 0.5 / 1.3.
            cfg.data.batch_size = 4
            # Fifth pass: 20 student epochs instead of 16 (the run stays under 30 minutes) raised
            # the DKED students from 7.14 / 4.48 to 9.18 / 5.27 (mean of seeds 0-2) and DKED's
            # mean gain over the student from +2.41 to +3.63 mAP(07).
            cfg.train.epochs = 20
            # Fifth pass: the teacher's decoded box on the negative cells, weighted by its
            # objectness (dense_box), raised the DKED students on all three seeds of the default
            # run's teacher (mAP(12) 2.19 / 3.59 / 3.62 -> 4.65 / 4.55 / 4.24).
            cfg.distill.extra = {"prediction": {"dense_objectness": 1.0, "dense_box": 1.0}}
            cfg.seeds = [0, 1, 2]
            # Sixth pass (recipes/README.md): the median hull is 3 px wide at the 192 px input, under
            # half a cell of the stride-8 level. Levels at strides 4/8/16 (min_stride 4) give 4.5
            # positive cells per hull instead of 1.9 and lifted the seed-0 teacher from 12.5 to
            # 28.8 mAP(07), the student from 3.1 to 9.6 and the DKED student from 8.1 to 15.5 (1.4x
            # the teacher's training time, 1.5x the DKED student's); NMS at IoU 0.5 instead of 0.3
            # added 0.1-1.0 to each. With 16 student epochs the default run took 33.5 minutes
            # (DKED gain +4.70 mAP(07), +4.98 mAP(12) on the mean of seeds 0-2); 12 keep it under 30.
            for overrides in (cfg.model.teacher_overrides, cfg.model.student_overrides):
                overrides["min_stride"] = 4
            cfg.model.iou_threshold = 0.5
            cfg.train.epochs = 12
            # Ninth pass: at stride 4 the OLA Gaussian of a 3 px wide hull covers about one cell;
            # the feature-response mask dilated by one cell (3 x 3 max) also passes the hull's
            # surroundings. Against the same students and teacher, five seeds: DKED students 12.57 /
            # 7.65 mAP(07) / mAP(12) on the mean instead of 10.65 / 7.05, DKED's gain +3.86 / +3.43
            # instead of +1.94 / +2.84, positive on every seed in both.
            cfg.distill.extra["response"] = {"mask_dilation": 1}
    elif name == "paper":
        cfg.data = dataclasses.replace(
            cfg.data,
            image_size=800,
            batch_size=18,
            mixup=True,
            multiscale=list(range(736, 865, 32)),
            max_objects=100,
            synthetic_train_images=617,
            synthetic_test_images=444,
            synthetic_image_size=1000,
            patch_size=800,
            patch_gap=200,
        )
        cfg.model = dataclasses.replace(
            cfg.model,
            teacher="gghl_darknet53",
            student="lodet_mobilenetv2",
            score_threshold=0.05,
            iou_threshold=0.45,
            max_detections=300,
            # GGHL starts from ImageNet Darknet53 (darknet53_448.weights), LO-Det from ImageNet
            # MobileNetV2 (shared/reference/gghl_lodet_dked.md)
            teacher_backbone_weights="imagenet",
            student_backbone_weights="imagenet",
        )
        # GGHL (HEAD, 2022-09) and LO-Det reference schedules: SGD Nesterov 0.9, wd 5e-4,
        # linear warm-up over 5 epochs, per-iteration cosine to 1e-6.
        cfg.teacher_train = TrainConfig(
            epochs=151,
            optimizer="sgd",
            learning_rate=2e-4,
            min_learning_rate=1e-6,
            warmup_epochs=5,
            weight_decay=5e-4,
            momentum=0.9,
            clipnorm=0.0,
        )
        cfg.train = TrainConfig(
            epochs=121,
            optimizer="sgd",
            learning_rate=1.5e-4,
            min_learning_rate=1e-6,
            warmup_epochs=5,
            weight_decay=5e-4,
            momentum=0.9,
            clipnorm=0.0,
        )
        cfg.eval_batch_size = 4
        cfg.num_drawn_images = 8
    if task == "dota" and name != "paper":
        cfg.data.synthetic_image_size = max(cfg.data.synthetic_image_size, 2 * cfg.data.patch_size)
    return cfg


# ----------------------------------------------------------------------------- dict round trip


def to_dict(cfg):
    """Nested plain dict (JSON/YAML-safe) of a config dataclass."""
    return json.loads(json.dumps(dataclasses.asdict(cfg)))


def from_dict(data, base=None, source="<dict>"):
    """A config built by applying the nested mapping `data` onto `base` (default: the
    `default` preset). Unknown keys raise ConfigError naming the key and the source."""
    cfg = copy.deepcopy(base if base is not None else preset_config("default"))
    _apply_mapping(cfg, data or {}, prefix="", source=source)
    return cfg


def _apply_mapping(obj, mapping, prefix, source):
    if not isinstance(mapping, dict):
        raise ConfigError(f"{source}: {prefix.rstrip('.') or 'config'} must be a mapping, got {mapping!r}")
    fields = {f.name: f for f in dataclasses.fields(obj)}
    hints = typing.get_type_hints(type(obj))
    for key, value in mapping.items():
        if key not in fields:
            raise ConfigError(_unknown_key_message(key, fields, prefix, source))
        current = getattr(obj, key)
        if dataclasses.is_dataclass(current):
            _apply_mapping(current, value, prefix + key + ".", source)
        else:
            setattr(obj, key, _coerce(value, hints[key], current, prefix + key, source))


def _unknown_key_message(key, fields, prefix, source):
    close = difflib.get_close_matches(key, list(fields), n=1)
    hint = f" (did you mean {prefix}{close[0]}?)" if close else ""
    return f"{source}: unknown config key {prefix}{key!r}{hint}; valid keys here: {', '.join(fields)}"


def _coerce(value, annotation, current, key, source):
    """value converted to the field's type; bools and numbers are checked, not guessed."""
    origin = typing.get_origin(annotation) or annotation
    if value is None:
        return None
    try:
        if origin is bool:
            if isinstance(value, bool):
                return value
            if isinstance(value, str) and value.lower() in ("true", "yes", "on", "1", "false", "no", "off", "0"):
                return value.lower() in ("true", "yes", "on", "1")
            if isinstance(value, int) and value in (0, 1):
                return bool(value)
            raise ValueError("expected true/false")
        if origin is int:
            if isinstance(value, bool):
                raise ValueError("expected an integer")
            if isinstance(value, float) and not value.is_integer():
                raise ValueError("expected an integer")
            return int(value)
        if origin is float:
            if isinstance(value, bool):
                raise ValueError("expected a number")
            return float(value)
        if origin is str:
            return str(value)
        if origin in (list, tuple):
            if isinstance(value, str):
                value = [v for v in value.split(",") if v.strip()]
            if not isinstance(value, (list, tuple)):
                value = [value]
            items = list(value)
            if current:
                item_type = type(current[0])
                items = [_coerce(v, item_type, None, key, source) for v in items]
            else:
                items = [yaml.safe_load(v) if isinstance(v, str) else v for v in items]
            return items
        if origin is dict:
            if not isinstance(value, dict):
                raise ValueError("expected a mapping, e.g. {width: 0.5}")
            return dict(value)
    except (TypeError, ValueError) as error:
        raise ConfigError(f"{source}: {key}={value!r}: {error}") from None
    return value


# ----------------------------------------------------------------------------- overrides


def parse_override(text):
    """`section.field=value` -> (["section", "field"], parsed value); the value uses YAML
    syntax (numbers, true/false, [lists], {mappings}); a bare word stays a string."""
    if "=" not in text:
        raise ConfigError(f"--set {text!r}: expected KEY=VALUE, e.g. train.epochs=10")
    key, raw = text.split("=", 1)
    key = key.strip()
    if not key:
        raise ConfigError(f"--set {text!r}: empty key")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    return key.split("."), value


def flag_overrides(flags):
    """`key=value` override strings for the command-line flags that were given: flags maps a
    config key to a flag's value; None and "" (flag not given) are left out."""
    return [f"{key}={value}" for key, value in flags.items() if value is not None and value != ""]


def apply_overrides(cfg, overrides):
    """A copy of cfg with each `key.sub=value` string applied (see `parse_override`)."""
    cfg = copy.deepcopy(cfg)
    for text in overrides or ():
        path, value = parse_override(text)
        path, value = _into_dict_field(cfg, path, value)
        nested = value
        for part in reversed(path):
            nested = {part: nested}
        _apply_mapping(cfg, nested, prefix="", source=f"--set {text}")
    return cfg


def _into_dict_field(cfg, path, value):
    """A key path that runs into a dict field (`data.augment_kwargs.window_scale=1`) sets that
    one entry: returns the path of the field and the field's dict with the entry set."""
    obj = cfg
    for depth, part in enumerate(path[:-1]):
        current = getattr(obj, part, None) if dataclasses.is_dataclass(obj) else None
        if isinstance(current, dict):
            merged = copy.deepcopy(current)
            target = merged
            for key in path[depth + 1 : -1]:
                target = target.setdefault(key, {})
                if not isinstance(target, dict):
                    raise ConfigError(f"--set {'.'.join(path)}: {key!r} is not a mapping")
            target[path[-1]] = value
            return path[: depth + 1], merged
        if not dataclasses.is_dataclass(current):
            break
        obj = current
    return path, value


# ----------------------------------------------------------------------------- files


def load_config(path, base=None):
    """A config read from a YAML (.yaml/.yml) or JSON (.json) file. A top-level `preset` key
    selects the starting preset when `base` is not given."""
    path = os.path.expanduser(str(path))
    try:
        with open(path, encoding="utf-8") as handle:
            text = handle.read()
    except OSError as error:
        raise ConfigError(f"cannot read config file {path}: {error}") from None
    try:
        data = json.loads(text) if path.endswith(".json") else yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError) as error:
        raise ConfigError(f"{path}: not valid {'JSON' if path.endswith('.json') else 'YAML'}: {error}") from None
    data = data or {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping")
    if base is None:
        task = (data.get("data") or {}).get("format", "hrsc")
        base = preset_config(data.get("preset", "default"), task=task)
    return from_dict(data, base=base, source=path)


def save_config(cfg, path):
    """Write cfg to `path` as YAML or JSON (by extension), atomically. Returns the path."""
    path = os.fspath(path)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    data = to_dict(cfg)
    if path.endswith(".json"):
        text = json.dumps(data, indent=2) + "\n"
    else:
        text = yaml.safe_dump(data, sort_keys=False)
    return write_text_atomic(path, text)


def save_run_config(cfg, out_dir):
    """Write `config.yaml` and `config.json` into a run folder."""
    save_config(cfg, os.path.join(out_dir, "config.yaml"))
    save_config(cfg, os.path.join(out_dir, "config.json"))


def resolve_config(preset="default", task="hrsc", config_file=None, overrides=()):
    """preset -> file -> overrides (`key=value` strings, applied in order: a face puts `--set`
    and its flags' `flag_overrides` in the order its precedence needs), then `validate_config`."""
    cfg = preset_config(preset, task=task)
    if config_file:
        cfg = load_config(config_file, base=cfg)
    return validate_config(apply_overrides(cfg, overrides))


# ----------------------------------------------------------------------------- validation


def _invalid(key, value, rule):
    return ConfigError(f"{key}={value!r}: {rule}")


def check_input_size(key, value, allow_zero=False):
    """Raises ConfigError unless value is a positive multiple of LARGEST_STRIDE (or 0 with
    allow_zero); the message names the key and the nearest valid sizes."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 0 or (value == 0 and not allow_zero):
        raise _invalid(key, value, f"needs a positive multiple of {LARGEST_STRIDE} (the models' largest stride)")
    if value % LARGEST_STRIDE:
        below = value // LARGEST_STRIDE * LARGEST_STRIDE
        nearest = " or ".join(str(v) for v in (below, below + LARGEST_STRIDE) if v > 0)
        raise _invalid(key, value, f"needs a multiple of {LARGEST_STRIDE} (the models' largest stride), e.g. {nearest}")
    return value


def check_fraction(key, value):
    """Raises ConfigError unless 0 <= value <= 1 (score and IoU thresholds, probabilities)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value <= 1.0:
        raise _invalid(key, value, "needs a number in [0, 1]")
    return value


def check_at_least(key, value, minimum):
    """Raises ConfigError unless value >= minimum (counts: epochs, batch size, ...)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= minimum:
        raise _invalid(key, value, f"needs at least {minimum}")
    return value


def check_positive(key, value):
    """Raises ConfigError unless value > 0 (learning rates, scales)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise _invalid(key, value, "needs a number > 0")
    return value


def check_choice(key, value, choices):
    if value not in choices:
        raise _invalid(key, value, f"choose from {', '.join(map(str, choices))}")
    return value


# File endings of pretrained backbone weights: Darknet (`.weights`, `.conv.<layers>`) and Keras.
BACKBONE_WEIGHTS_ENDINGS = (".weights", ".weights.h5", ".h5")


def check_backbone_weights(key, value):
    """Raises ConfigError unless value is "" (from scratch), "imagenet" or a path of a weights
    file (`.weights`, `.conv.N`, `.weights.h5`, `.h5`). Whether the file exists is checked when
    the model is built (a run's config.yaml may travel to a machine without the file)."""
    if not isinstance(value, str):
        raise _invalid(key, value, 'use "", "imagenet" or a weights file path')
    if value in ("", "imagenet"):
        return value
    name = os.path.basename(value)
    darknet_cut = ".conv." in name and name.rsplit(".conv.", 1)[1].isdigit()
    if not (name.endswith(BACKBONE_WEIGHTS_ENDINGS) or darknet_cut):
        raise _invalid(
            key,
            value,
            'use "" (from scratch), "imagenet" or a weights file (Darknet .weights / .conv.74, Keras .h5)',
        )
    return value


def _validate_schedule(name, tc):
    check_at_least(f"{name}.epochs", tc.epochs, 1)
    check_choice(f"{name}.optimizer", tc.optimizer, ("adamw", "sgd"))
    check_positive(f"{name}.learning_rate", tc.learning_rate)
    check_at_least(f"{name}.min_learning_rate", tc.min_learning_rate, 0)
    if tc.min_learning_rate > tc.learning_rate:
        raise _invalid(f"{name}.min_learning_rate", tc.min_learning_rate, f"exceeds {name}.learning_rate")
    check_at_least(f"{name}.warmup_epochs", tc.warmup_epochs, 0)
    check_at_least(f"{name}.weight_decay", tc.weight_decay, 0)
    check_fraction(f"{name}.momentum", tc.momentum)
    check_at_least(f"{name}.clipnorm", tc.clipnorm, 0)
    check_fraction(f"{name}.ema_momentum", tc.ema_momentum)
    check_at_least(f"{name}.checkpoint_every", tc.checkpoint_every, 0)
    check_at_least(f"{name}.val_every", tc.val_every, 0)
    check_at_least(f"{name}.early_stop_patience", tc.early_stop_patience, 0)
    if tc.early_stop_patience and not tc.val_every:
        raise _invalid(f"{name}.early_stop_patience", tc.early_stop_patience, f"needs validation: set {name}.val_every")
    check_choice(f"{name}.strategy", tc.strategy, STRATEGIES)
    check_choice(f"{name}.mixed_precision", tc.mixed_precision, MIXED_PRECISION)


def validate_config(cfg):
    """Checks the values of an ExperimentConfig once, where it is resolved: counts at least 1,
    input sizes positive multiples of LARGEST_STRIDE, thresholds in [0, 1], learning rates > 0.
    Raises ConfigError naming the key, the value and the rule; returns cfg."""
    data = cfg.data
    check_choice("data.format", data.format, ("hrsc", "dota"))
    check_input_size("data.image_size", data.image_size)
    check_input_size("data.test_image_size", data.test_image_size, allow_zero=True)
    for size in data.multiscale:
        check_input_size("data.multiscale", size)
    scale = str(data.input_scale).strip().lower()
    if scale not in ("fit", "auto"):
        try:
            number = float(scale)
        except ValueError:
            number = 0.0
        if not number > 0:
            raise _invalid("data.input_scale", data.input_scale, 'use "fit", "auto" or a number > 0')
    check_at_least("data.batch_size", data.batch_size, 1)
    check_at_least("data.multiscale_every", data.multiscale_every, 1)
    check_at_least("data.max_objects", data.max_objects, 1)
    check_at_least("data.synthetic_train_images", data.synthetic_train_images, 1)
    check_at_least("data.synthetic_test_images", data.synthetic_test_images, 1)
    check_at_least("data.synthetic_image_size", data.synthetic_image_size, 1)
    check_at_least("data.patch_size", data.patch_size, 1)
    check_at_least("data.patch_gap", data.patch_gap, 0)
    if data.patch_gap >= data.patch_size:
        raise _invalid("data.patch_gap", data.patch_gap, f"must be below data.patch_size ({data.patch_size})")
    check_choice("data.val_split", data.val_split, VAL_SPLITS)
    if not 0.0 < data.val_fraction < 1.0:
        raise _invalid("data.val_fraction", data.val_fraction, "needs a number between 0 and 1 (exclusive)")
    model = cfg.model
    check_fraction("model.score_threshold", model.score_threshold)
    check_fraction("model.iou_threshold", model.iou_threshold)
    check_at_least("model.max_detections", model.max_detections, 1)
    check_backbone_weights("model.teacher_backbone_weights", model.teacher_backbone_weights)
    check_backbone_weights("model.student_backbone_weights", model.student_backbone_weights)
    _validate_schedule("teacher_train", cfg.teacher_train)
    _validate_schedule("train", cfg.train)
    distill = cfg.distill
    for key in ("correlation_scale", "response_scale", "prediction_scale", "student_loss_weight"):
        check_at_least(f"distill.{key}", getattr(distill, key), 0)
    check_fraction("distill.lam", distill.lam)
    check_choice("export.quantize", cfg.export.quantize, ("none", "fp16", "int8"))
    check_at_least("export.representative_images", cfg.export.representative_images, 1)
    check_at_least("eval_batch_size", cfg.eval_batch_size, 1)
    check_at_least("num_drawn_images", cfg.num_drawn_images, 0)
    check_at_least("seed_jobs", cfg.seed_jobs, 1)
    return cfg


def _preset_name(text):
    if text not in PRESETS:
        raise argparse.ArgumentTypeError(f"unknown preset {text!r}; choose from {', '.join(PRESETS[1:])}")
    return text


def add_set_argument(parser):
    """The repeatable `--set KEY=VALUE` option (into `args.overrides`) of the CLI, the recipes and
    the benchmarks; `apply_overrides` applies the strings."""
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override one config value, e.g. --set train.epochs=10 --set distill.delta=0.1 "
        "(repeatable; YAML syntax for values)",
    )


def add_config_arguments(parser, default_preset="default"):
    """The config options shared by the CLI and the recipes: --preset, --config, --set."""
    parser.add_argument(
        "--preset",
        type=_preset_name,
        default=default_preset,
        metavar="{quick,default,easy,paper}",
        help="starting configuration: quick (minutes, smoke check), default (small CPU models, realistic "
        "synthetic scenes), easy (the same models on the easy synthetic set), paper (paper-scale models, 800 px, GPU)",
    )
    parser.add_argument(
        "--config",
        metavar="FILE",
        default=None,
        help="YAML or JSON file with config values (nested like config.yaml of a run), applied on top of the preset",
    )
    add_set_argument(parser)
