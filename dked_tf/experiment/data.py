"""The records and datasets of a run, from its `DataConfig`.

- `load_records(data_cfg, split)`: the real HRSC2016 / DOTA tree at data.root, or the built-in
  synthetic set (generated once under data.cache_dir).
- `prepare_records(cfg, split)`: what the models train on or are scored on (DOTA scenes cut into
  cached patches).
- `make_train_dataset(records, data_cfg, seed)`: the augmented, shuffled tf.data pipeline.
- `validation_split(cfg, train_records)`: the images scored while training (data.val_split) and
  the training images left.
"""

import dataclasses
import hashlib
import os

import numpy as np
import tensorflow as tf

from dked_tf.config import LARGEST_STRIDE, ConfigError
from dked_tf.data import realistic, synthetic
from dked_tf.data.augment import AugmentConfig, object_sizes
from dked_tf.data.dota import read_dota
from dked_tf.data.hrsc import read_hrsc
from dked_tf.data.pipeline import build_dataset
from dked_tf.data.split import split_dota

# Objects whose median length at the network input is below this (pixels) get too few positive
# cells to learn from (`dked-tf bench assign`; recipes/README.md, tuning notes).
SMALL_OBJECT_PX = 16.0
# data.input_scale = "auto" scales the images so that the median object is about this long at
# the input (never above native resolution, never below the whole image fitting the input).
AUTO_OBJECT_PX = 40.0
# Objects whose median width at the input is below one cell of a stride-8 level (pixels) are
# localised far better by levels at strides 4/8/16 (`model.*_overrides.min_stride=4`;
# recipes/README.md, sixth pass).
NARROW_OBJECT_PX = 8.0

# data.val_split = "holdout" picks the images whose hash of this salt and their id (DOTA: their
# scene's id) is smallest: the same images for every seed, role and run of a dataset.
HOLDOUT_SALT = "dked_tf-val"

# DOTA split folders, in the order they are looked for
DOTA_TRAIN_SPLITS = ("train", "trainval")
DOTA_TEST_SPLITS = ("val", "test")


def synthetic_root(data_cfg, verbose=1):
    """Folder of the built-in synthetic dataset for data_cfg (generated on first use, then
    reused): `<cache_dir>/synthetic_<format>_<train>x<test>_<size>px_seed<seed>[_minship…][_aspect…]`, or
    `realistic_hrsc_…` for data.synthetic_kind = "realistic"."""
    cache = os.path.expanduser(data_cfg.cache_dir)
    name = (
        f"synthetic_{data_cfg.format}_{data_cfg.synthetic_train_images}x{data_cfg.synthetic_test_images}"
        f"_{data_cfg.synthetic_image_size}px_seed{data_cfg.synthetic_seed}"
    )
    common = dict(
        num_train=data_cfg.synthetic_train_images,
        num_test=data_cfg.synthetic_test_images,
        image_size=data_cfg.synthetic_image_size,
        seed=data_cfg.synthetic_seed,
        verbose=verbose,
    )
    if data_cfg.format == "hrsc" and data_cfg.synthetic_kind == "realistic":
        root = os.path.join(cache, name.replace("synthetic_hrsc", "realistic_hrsc"))
        if verbose:
            print(f"realistic synthetic HRSC dataset: {root}", flush=True)
        return os.fspath(realistic.make_realistic_hrsc(root, **common))
    if data_cfg.format == "hrsc":
        if data_cfg.synthetic_kind != "easy":
            raise ValueError(f"data.synthetic_kind={data_cfg.synthetic_kind!r}: use 'easy' or 'realistic'")
        min_length = float(data_cfg.synthetic_min_ship_length)
        max_aspect = float(data_cfg.synthetic_max_ship_aspect)
        if min_length != synthetic.DEFAULT_MIN_SHIP_LENGTH:
            name += f"_minship{min_length:g}"
        if max_aspect != synthetic.DEFAULT_MAX_SHIP_ASPECT:
            name += f"_aspect{max_aspect:g}"
        root = os.path.join(cache, name)
        if verbose:
            print(f"synthetic HRSC dataset: {root}", flush=True)
        return os.fspath(
            synthetic.make_synthetic_hrsc(root, min_ship_length=min_length, max_ship_aspect=max_aspect, **common)
        )
    if data_cfg.format == "dota":
        root = os.path.join(cache, name)
        if verbose:
            print(f"synthetic DOTA dataset: {root}", flush=True)
        return os.fspath(synthetic.make_synthetic_dota(root, **common))
    raise ValueError(f"unknown data format {data_cfg.format!r}; use 'hrsc' or 'dota'")


def load_records(data_cfg, split, verbose=1):
    """(records, class_names) of split "train" or "test" for data_cfg: the real dataset at
    data_cfg.root, or the synthetic set (generated once under data_cfg.cache_dir)."""
    root = os.path.expanduser(data_cfg.root) if data_cfg.root else synthetic_root(data_cfg, verbose=verbose)
    if data_cfg.format == "hrsc":
        records, info = read_hrsc(root, imageset="trainval" if split == "train" else "test", verbose=verbose)
        return records, tuple(info.class_names)
    if data_cfg.format == "dota":
        records, info = read_dota(dota_split_folder(root, split), classes=data_cfg.classes or None, verbose=verbose)
        return records, tuple(info.class_names)
    raise ValueError(f"unknown data format {data_cfg.format!r}; use 'hrsc' or 'dota'")


def dota_split_folder(root, split):
    """The folder of a DOTA split under root: train/ or trainval/ for "train", val/ or test/
    for "test"."""
    names = DOTA_TRAIN_SPLITS if split == "train" else DOTA_TEST_SPLITS
    for name in names:
        if os.path.isdir(os.path.join(root, name)):
            return os.path.join(root, name)
    raise FileNotFoundError(f"DOTA root {root} has no {' or '.join(names)} folder")


def prepare_records(cfg, split, verbose=1):
    """(records, class_names) the model trains on (split="train") or is scored on
    (split="test"). HRSC: whole images. DOTA: scenes cut into patches (cached under
    data.cache_dir); `load_records` gives the test scenes themselves."""
    records, class_names = load_records(cfg.data, split, verbose=verbose)
    if cfg.data.format == "dota":
        records = split_into_patches(records, cfg.data, split, class_names, verbose=verbose)
    return records, class_names


def split_into_patches(records, data_cfg, split, class_names, verbose=1):
    """DOTA scenes -> patch records (`dked_tf.data.split.split_dota`), written once to
    `<cache_dir>/patches/<hash of the scene list and settings>/<split>`."""
    key = hashlib.sha1(
        repr((sorted(r.image_path for r in records), data_cfg.patch_size, data_cfg.patch_gap)).encode()
    ).hexdigest()[:12]
    out_dir = os.path.join(os.path.expanduser(data_cfg.cache_dir), "patches", key, split)
    return split_dota(
        records,
        out_dir,
        patch_size=data_cfg.patch_size,
        gap=data_cfg.patch_gap,
        class_names=class_names,
        verbose=verbose,
    )


def tile_size_for(cfg):
    """Tile side used by `dked-tf predict` for models of this config: DOTA models see patches
    of data.patch_size; HRSC models see whole images (0 = no tiling)."""
    return int(cfg.data.patch_size) if cfg.data.format == "dota" else 0


def _round_up(value, multiple=LARGEST_STRIDE):
    return int(np.ceil(value / multiple)) * multiple


def input_scale_value(input_scale):
    """data.input_scale (text or number) as a number (> 0), or None for "fit"; "auto" must be
    resolved first (`resolve_input`)."""
    text = str(input_scale).strip().lower()
    if text == "fit":
        return None
    if text == "auto":
        raise ValueError('data.input_scale="auto" is not resolved yet: call resolve_input(cfg, records) first')
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f'data.input_scale={input_scale!r}: use "fit", "auto" or a number > 0') from None
    if not value > 0:
        raise ValueError(f"data.input_scale={input_scale!r} must be > 0")
    return value


def resolve_input(cfg, records):
    """(cfg with data.input_scale and data.test_image_size made concrete, one line saying so).

    "auto": the scale s that brings the training objects' median length (native pixels) to
    AUTO_OBJECT_PX, at most 1 (native resolution) and at least the scale at which the largest
    image fits the training input (then the images are letterboxed whole: "fit"). The test
    input is the largest image side times s, rounded up to a multiple of 32.
    """
    data = cfg.data
    sides = [max(r.width, r.height) for r in records] or [data.image_size]
    largest = float(max(sides))
    mode = str(data.input_scale).strip().lower()
    reason = ""
    if mode == "auto":
        native = object_scale(records, data.image_size).get("native_median_length_px")
        fit_scale = data.image_size / largest
        wanted = AUTO_OBJECT_PX / native if native else fit_scale
        scale = min(1.0, max(fit_scale, wanted))
        if scale <= fit_scale * 1.001:
            mode, reason = "fit", f"median object {native:.0f} px: whole images fit the {data.image_size} px input"
        else:
            mode = f"{scale:.4g}"
            reason = (
                f"median object {native:.0f} px in the images -> {native * scale:.0f} px at scale {scale:.3g} "
                f"(aim {AUTO_OBJECT_PX:g} px, at most native)"
            )
    value = input_scale_value(mode)
    test_size = data.test_image_size or (data.image_size if value is None else _round_up(largest * value))
    resolved = dataclasses.replace(cfg, data=dataclasses.replace(data, input_scale=mode, test_image_size=test_size))
    if value is None:
        line = f"input: whole images letterboxed to {data.image_size} px for training, {test_size} px for test"
    else:
        line = (
            f"input: scale {value:.3g}; training on {data.image_size} px windows "
            f"({data.image_size / value:.0f} image px), test on whole images at {test_size} px"
        )
    return resolved, line + (f" ({reason})" if reason else "")


def make_train_dataset(records, data_cfg, seed=0):
    """`build_dataset(..., training=True)` configured from data_cfg: augmentation on/off,
    mixup on/off, AugmentConfig overrides (data.augment_kwargs), multi-scale sizes; shuffled
    and augmented deterministically under `seed`. Yields (images [B, S, S, 3], targets)."""
    if data_cfg.augment:
        fields = {"mixup_prob": AugmentConfig().mixup_prob if data_cfg.mixup else 0.0}
        fields.update(data_cfg.augment_kwargs or {})
    else:
        fields = dataclasses.asdict(AugmentConfig.disabled())
    window_scale = input_scale_value(data_cfg.input_scale)
    if window_scale is not None:
        fields["window_scale"] = window_scale
    augment = AugmentConfig(**fields) if (data_cfg.augment or window_scale is not None) else False
    kwargs = dict(training=True, max_objects=data_cfg.max_objects, augment=augment, seed=seed)
    if data_cfg.multiscale:
        kwargs.update(multiscale_sizes=list(data_cfg.multiscale), multiscale_every=data_cfg.multiscale_every)
    return build_dataset(records, data_cfg.image_size, data_cfg.batch_size, **kwargs)


def steps_in(dataset):
    """Number of batches of a finite tf.data.Dataset (None when unknown or infinite)."""
    cardinality = int(tf.data.experimental.cardinality(dataset).numpy())
    return cardinality if cardinality > 0 else None


def object_scale(records, image_size):
    """Sizes of the annotated objects as the network sees them after letterboxing to
    `image_size`: {"median_length_px", "median_width_px" (long / short side of the minimum-area
    box, input pixels), "native_median_length_px" (image pixels), "small_fraction" (objects
    shorter than SMALL_OBJECT_PX at the input), "objects"}."""
    lengths, widths, native = object_sizes(records, image_size)
    if not len(lengths):
        return {"objects": 0}
    return {
        "objects": int(len(lengths)),
        "median_length_px": float(np.median(lengths)),
        "median_width_px": float(np.median(widths)),
        "native_median_length_px": float(np.median(native)),
        "small_fraction": float(np.mean(lengths < SMALL_OBJECT_PX)),
    }


def describe_object_scale(records, image_size, min_stride=None):
    """One line on the objects' size at the network input, with a warning when the median
    object is shorter than SMALL_OBJECT_PX there, and a note when `min_stride` (the finest level
    of the models, pixels) is 8 and the median object is narrower than NARROW_OBJECT_PX."""
    scale = object_scale(records, image_size)
    if not scale["objects"]:
        return f"no annotated objects to size at the {image_size} px input"
    line = (
        f"objects at the {image_size} px input: median {scale['median_length_px']:.1f} x "
        f"{scale['median_width_px']:.1f} px (native median length {scale['native_median_length_px']:.1f} px), "
        f"{100 * scale['small_fraction']:.0f} % shorter than {SMALL_OBJECT_PX:g} px"
    )
    if scale["median_length_px"] < SMALL_OBJECT_PX:
        needed = int(np.ceil(image_size * SMALL_OBJECT_PX / scale["median_length_px"] / 32.0)) * 32
        line += (
            f"; WARNING: the median object is under {SMALL_OBJECT_PX:g} px at the input and gets few or no "
            f"positive cells (dked-tf bench assign): use an input of at least {needed} px "
            f"(--set data.image_size={needed}) or train on native-resolution windows (--set data.input_scale=auto)"
        )
    if min_stride is not None and min_stride >= 8 and scale["median_width_px"] < NARROW_OBJECT_PX:
        line += (
            f"; NOTE: the median object is {scale['median_width_px']:.1f} px wide, under one cell of the "
            f"stride-{min_stride} level: levels at strides 4/8/16 localise it better "
            "(--set model.teacher_overrides.min_stride=4 --set model.student_overrides.min_stride=4)"
        )
    return line


# ----------------------------------------------------------------------------- validation split


def scene_id(record):
    """The image a record comes from: a DOTA patch's scene id (`split_dota`), else its own id."""
    patch = (record.extra or {}).get("patch")
    return str(patch[0]) if patch else str(record.image_id)


def holdout(records, fraction):
    """(kept, held_out): `fraction` of the records' scenes (`scene_id`; at least one, never all),
    picked by the smallest SHA-1 of HOLDOUT_SALT + scene id, so the choice depends on the ids
    only (not on their order, the seed or the role); patches of one scene stay together."""
    scenes = sorted({scene_id(r) for r in records})
    if len(scenes) < 2:
        raise ConfigError(f"data.val_split=holdout needs at least 2 training images, got {len(scenes)}")
    count = min(len(scenes) - 1, max(1, int(round(fraction * len(scenes)))))
    ranked = sorted(scenes, key=lambda s: hashlib.sha1(f"{HOLDOUT_SALT}:{s}".encode()).hexdigest())
    chosen = set(ranked[:count])
    kept = [r for r in records if scene_id(r) not in chosen]
    held_out = [r for r in records if scene_id(r) in chosen]
    return kept, held_out


def dataset_val_records(data_cfg, verbose=0):
    """The dataset's own val split when it has one apart from the training and test images, else
    None: HRSC2016 with ImageSets/val.txt (its images are part of trainval and are then not
    trained on). The synthetic sets have none, and DOTA's val/ is this package's test split
    (DOTA's test labels are not public)."""
    if data_cfg.format != "hrsc" or not data_cfg.root:
        return None
    try:
        records, _ = read_hrsc(os.path.expanduser(data_cfg.root), imageset="val", verbose=verbose)
    except FileNotFoundError:
        return None
    return records


def validation_split(cfg, train_records, verbose=1):
    """(train_records, val_records, line) for validation while training (data.val_split):

    - "val": the dataset's own val split (`dataset_val_records`); its images are removed from the
      training records. ConfigError when the dataset has none.
    - "holdout": data.val_fraction of the training scenes (`holdout`), not trained on.
    - "auto": "val" when the dataset has one, else "holdout".
    - "test": the test split, all training images kept; the line warns that a checkpoint chosen
      there is scored on the images it was chosen on.
    line: one sentence saying which images are used, for the log.
    """
    mode = cfg.data.val_split
    if mode in ("auto", "val"):
        val = dataset_val_records(cfg.data, verbose=verbose)
        if val is None and mode == "val":
            raise ConfigError(
                "data.val_split=val: the dataset has no val split of its own (HRSC2016: ImageSets/val.txt; "
                "the synthetic sets and DOTA have none here); use holdout or test"
            )
        if val is not None:
            ids = {r.image_id for r in val}
            kept = [r for r in train_records if r.image_id not in ids]
            line = (
                f"validation: the dataset's val split ({len(val)} images); training on the other "
                f"{len(kept)} of {len(train_records)} training images"
            )
            return kept, val, line
        mode = "holdout"
    if mode == "test":
        val, _ = prepare_records(cfg, "test", verbose=verbose)
        line = (
            f"validation: WARNING: on the TEST split ({len(val)} images; data.val_split=test): the best "
            "checkpoint is chosen on the images it is scored on, so its test mAP is optimistic"
        )
        return list(train_records), val, line
    kept, val = holdout(train_records, cfg.data.val_fraction)
    unit = "patches" if cfg.data.format == "dota" else "images"
    line = (
        f"validation: {len(val)} of the {len(train_records)} training {unit} held out (data.val_fraction="
        f"{cfg.data.val_fraction:g}, picked by a fixed hash of the {'scene' if unit == 'patches' else 'image'} ids) "
        f"and not trained on; training on {len(kept)}"
    )
    return kept, val, line
