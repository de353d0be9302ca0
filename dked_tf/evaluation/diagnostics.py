"""Localisation diagnostics: how well a detector's head regresses the ORC box at the positive
OLA cells of annotated images, independent of scores and NMS.

Short CPU trainings leave mAP(07) near its floor: one true positive ranked first already gives
1/11 = 9.09 (the 11-point AP at recall 0), so two weak models can tie there while one of them
localises much better. These figures tell them apart:

- ``quality_median``: median JOL localisation quality q = exp(-(β(1-GIoU) + Σ(ŝ-s)² + (r̂-r)²))
  over positive cells (1 = perfect box);
- ``gliding_error``: mean |ŝ_k − s_k| over the four gliding ratios (0 = exact; predicting the
  mean target gives ``gliding_error_baseline``);
- ``orientation_accuracy``: fraction of positive cells of oriented objects (s ≠ 0) where the
  prediction puts the box on the right diagonal (s1 > s2 as in the target, i.e. the long side
  runs down-right or up-right on screen as in the ground truth);
- ``distance_error_median``: median relative error |l̂ − l| / l of the four HBB distances.

    diagnostics = localisation_diagnostics(model, records, image_size=256)
"""

import numpy as np
import tensorflow as tf

from dked_tf.data.augment import object_sizes
from dked_tf.data.pipeline import build_dataset
from dked_tf.evaluation.runner import inference_model
from dked_tf.losses.assign import encode_targets
from dked_tf.losses.jol import per_cell_terms
from dked_tf.ops.head_contract import TARGET_DISTANCE_CHANNELS, TARGET_GLIDING_CHANNELS, TARGET_POSITIVE_CHANNEL
from dked_tf.ops.obb import poly_to_rbox

KEYS = (
    "quality_median",
    "gliding_error",
    "gliding_error_baseline",
    "orientation_accuracy",
    "distance_error_median",
    "positive_cells",
)


def head_cell_arrays(head_outputs, encoded, strides, image_size):
    """Predicted vs target ORC values at the positive cells of one batch.

    head_outputs: list of logits [B, H, W, 10 + nC]; encoded: `assign.encode_targets` levels.
    Returns dict of numpy arrays over the positive cells of all levels: ``quality`` [P],
    ``pred_s``/``target_s`` [P, 4], ``pred_l``/``target_l`` [P, 4] pixels.
    """
    parts = {name: [] for name in ("quality", "pred_s", "target_s", "pred_l", "target_l")}
    for head, level, stride in zip(head_outputs, encoded, strides):
        cells = per_cell_terms(head, level, stride, image_size)
        positive = cells["positive"] > 0.0
        level = tf.cast(level, tf.float32)
        parts["quality"].append(tf.boolean_mask(cells["quality"], positive))
        parts["pred_s"].append(tf.boolean_mask(cells["pred_s"], positive))
        parts["target_s"].append(tf.boolean_mask(level[..., TARGET_GLIDING_CHANNELS], positive))
        parts["pred_l"].append(tf.boolean_mask(cells["pred_l"], positive))
        parts["target_l"].append(tf.boolean_mask(level[..., TARGET_DISTANCE_CHANNELS], positive))
    return {name: np.concatenate([np.asarray(v) for v in values]) for name, values in parts.items()}


def summarise(cells):
    """The diagnostics dict (see the module docstring) of `head_cell_arrays` output (or the
    concatenation of several)."""
    count = int(cells["quality"].shape[0])
    if count == 0:
        return {key: float("nan") for key in KEYS[:-1]} | {"positive_cells": 0}
    pred_s, target_s = cells["pred_s"], cells["target_s"]
    oriented = target_s.sum(axis=1) > 0.0
    right_diagonal = (pred_s[:, 0] > pred_s[:, 1]) == (target_s[:, 0] > target_s[:, 1])
    relative = np.abs(cells["pred_l"] - cells["target_l"]) / np.maximum(cells["target_l"], 1.0)
    return {
        "quality_median": float(np.median(cells["quality"])),
        "gliding_error": float(np.mean(np.abs(pred_s - target_s))),
        "gliding_error_baseline": float(np.mean(np.abs(target_s - target_s.mean(axis=0)))),
        "orientation_accuracy": float(np.mean(right_diagonal[oriented])) if oriented.any() else float("nan"),
        "distance_error_median": float(np.median(relative)),
        "positive_cells": count,
    }


def localisation_diagnostics(model, records, image_size, batch_size=8, max_objects=100):
    """Diagnostics of `model` (an OrientedDetector, or a Distiller: its student) on `records`
    (list of ImageRecord), letterboxed to `image_size` without augmentation."""
    model = inference_model(model)
    dataset = build_dataset(records, image_size, batch_size, training=False, max_objects=max_objects)
    batches = []
    for images, targets in dataset:
        encoded = model.encode_targets(targets, image_size)
        head = model(images, training=False)["head"]
        batches.append(head_cell_arrays(head, encoded, model.strides, image_size))
    if not batches:
        return summarise({"quality": np.zeros(0)})
    return summarise({name: np.concatenate([b[name] for b in batches]) for name in batches[0]})


# ----------------------------------------------------------------------------- label assignment

# Object lengths (long side, pixels of the network input) of the rows of `assignment_statistics`.
LENGTH_BINS = (0.0, 16.0, 32.0, 64.0, float("inf"))


def assignment_statistics(
    records,
    image_size,
    strides=(8, 16, 32),
    level_reference_size=None,
    max_objects=100,
    batch_size=8,
    chunk=256,
    min_gaussian_sigma=0.0,
):
    """How the OLA label assignment sees `records` at network input `image_size` (letterboxed,
    no augmentation): for every annotated object, whether the pipeline keeps it (its object
    filter drops slivers thinner than `AugmentConfig.min_size` pixels at the input) and how many
    positive cells it gets on each level when it is encoded alone (`assign.encode_targets`;
    with neighbours, crowded objects can lose cells to them; `min_gaussian_sigma` as there).

    Returns {"objects": annotated objects, "kept": objects the pipeline keeps, "kept_fraction",
    "median_length_px" / "median_width_px" (long / short side of the kept objects' minimum-area
    box, input pixels), "positives_mean", "positives_median", "no_positive_fraction" (kept
    objects without any positive cell), "level_share" [3] (share of positive cells per level),
    "by_length": [{"length_px": "lo-hi", "objects", "kept_fraction", "positives_mean",
    "no_positive_fraction"}] over LENGTH_BINS of the annotated length at the input}.
    """
    annotated, _, _ = object_sizes(records, image_size)  # long side at the input, per annotated object
    kept = []
    dataset = build_dataset(records, image_size, batch_size, training=False, max_objects=max_objects)
    for _, targets in dataset:
        valid = targets["weights"].numpy() > 0
        kept.append(targets["polygons"].numpy()[valid])
    kept = np.concatenate(kept) if kept else np.zeros((0, 8), np.float32)
    positives = np.zeros((len(kept), 3), np.int64)
    for start in range(0, len(kept), chunk):
        polygons = kept[start : start + chunk]
        alone = {
            "polygons": tf.constant(polygons[:, None, :]),
            "classes": tf.zeros([len(polygons), 1], tf.int32),
            "weights": tf.ones([len(polygons), 1], tf.float32),
        }
        levels = encode_targets(
            alone,
            image_size,
            1,
            strides=strides,
            level_reference_size=level_reference_size,
            min_gaussian_sigma=min_gaussian_sigma,
        )
        for index, level in enumerate(levels):
            positives[start : start + len(polygons), index] = tf.reduce_sum(
                tf.cast(level[..., TARGET_POSITIVE_CHANNEL] > 0, tf.int32), axis=[1, 2]
            ).numpy()
    rboxes = poly_to_rbox(kept) if len(kept) else np.zeros((0, 5))
    total = positives.sum(axis=1)
    kept_lengths = rboxes[:, 2]
    rows = []
    for low, high in zip(LENGTH_BINS[:-1], LENGTH_BINS[1:]):
        in_bin = (kept_lengths >= low) & (kept_lengths < high)
        annotated_in_bin = int(((annotated >= low) & (annotated < high)).sum())
        rows.append(
            {
                "length_px": f"{low:g}-{high:g}",
                "objects": annotated_in_bin,
                "kept_fraction": float(in_bin.sum() / annotated_in_bin) if annotated_in_bin else float("nan"),
                "positives_mean": float(total[in_bin].mean()) if in_bin.any() else float("nan"),
                "no_positive_fraction": float((total[in_bin] == 0).mean()) if in_bin.any() else float("nan"),
            }
        )
    cells = positives.sum(axis=0)
    return {
        "image_size": int(image_size),
        "objects": int(len(annotated)),
        "kept": int(len(kept)),
        "kept_fraction": float(len(kept) / len(annotated)) if len(annotated) else float("nan"),
        "median_length_px": float(np.median(rboxes[:, 2])) if len(kept) else float("nan"),
        "median_width_px": float(np.median(rboxes[:, 3])) if len(kept) else float("nan"),
        "positives_mean": float(total.mean()) if len(kept) else float("nan"),
        "positives_median": float(np.median(total)) if len(kept) else float("nan"),
        "no_positive_fraction": float((total == 0).mean()) if len(kept) else float("nan"),
        "level_share": (cells / max(1, cells.sum())).tolist(),
        "by_length": rows,
    }
