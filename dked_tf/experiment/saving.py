"""Saved detectors: a run folder with `model.json` (architecture preset, classes, input size,
overrides, training facts) and `model.weights.h5`, the format `dked-tf predict`, `export`,
`distill --teacher` and the recipes read back."""

import os

from dked_tf.files import read_json, write_json
from dked_tf.models.presets import build_detector

MODEL_FILE = "model.json"
WEIGHTS_FILE = "model.weights.h5"
HISTORY_FILE = "history.json"


def save_detector(model, run_dir, *, architecture, class_names, image_size, overrides=None, **extra):
    """Write `model.weights.h5` and `model.json` (architecture preset, classes, input size,
    overrides, anything in `extra`) into run_dir. Returns run_dir."""
    os.makedirs(run_dir, exist_ok=True)
    # weights first under a temporary name (Keras wants the .weights.h5 ending), then model.json:
    # a crash leaves no model.json beside half-written weights
    partial = os.path.join(run_dir, "model.partial.weights.h5")
    model.save_weights(partial)
    os.replace(partial, os.path.join(run_dir, WEIGHTS_FILE))
    meta = {
        "architecture": architecture,
        "num_classes": len(class_names),
        "class_names": list(class_names),
        "image_size": int(image_size),
        "overrides": dict(overrides or {}),
        "weights": WEIGHTS_FILE,
    }
    meta.update(extra)
    write_json(os.path.join(run_dir, MODEL_FILE), meta)
    return run_dir


def is_saved_detector(run_dir):
    """True when run_dir holds both files of a saved detector."""
    return (
        bool(run_dir)
        and os.path.isfile(os.path.join(run_dir, MODEL_FILE))
        and os.path.isfile(os.path.join(run_dir, WEIGHTS_FILE))
    )


def load_detector(run_dir):
    """(model, meta) from a folder written by `save_detector` (or a path to its model.json)."""
    if os.path.isfile(run_dir):
        run_dir = os.path.dirname(run_dir)
    meta_path = os.path.join(run_dir, MODEL_FILE)
    if not os.path.isfile(meta_path):
        raise FileNotFoundError(
            f"{run_dir} is not a saved detector: {MODEL_FILE} is missing (write one with `dked-tf train --out DIR`)"
        )
    meta = read_json(meta_path)
    model = build_detector(meta["architecture"], meta["num_classes"], meta["image_size"], **meta.get("overrides", {}))
    model.load_weights(os.path.join(run_dir, meta.get("weights", WEIGHTS_FILE)))
    return model, meta
