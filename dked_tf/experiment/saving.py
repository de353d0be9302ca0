"""Saved detectors: a run folder with `model.json` (architecture preset, classes, input size,
overrides, training facts) and `model.weights.h5`, the format `dked-tf predict`, `export`,
`distill --teacher` and the recipes read back.

Both files are written atomically (a temporary file, then a rename), the weights first: a
folder with model.json holds a finished model, whatever happened while it was written."""

import os

from dked_tf.files import CorruptFileError, read_json, replacing, write_json
from dked_tf.models.presets import build_detector

MODEL_FILE = "model.json"
WEIGHTS_FILE = "model.weights.h5"
HISTORY_FILE = "history.json"
METRICS_FILE = "metrics.json"
# model.json key of the run record (`experiment.train_lib.run_record`): what the model was trained with
RECORD_KEY = "trained_with"


def save_detector(model, run_dir, *, architecture, class_names, image_size, overrides=None, **extra):
    """Write `model.weights.h5` and `model.json` (architecture preset, classes, input size,
    overrides, anything in `extra`) into run_dir. Returns run_dir."""
    os.makedirs(run_dir, exist_ok=True)
    # weights first (a temporary file ending in .weights.h5 for Keras, then renamed), then
    # model.json: a crash leaves no model.json beside half-written weights
    with replacing(os.path.join(run_dir, WEIGHTS_FILE)) as temporary:
        model.save_weights(temporary)
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
    if not isinstance(meta, dict) or not {"architecture", "num_classes", "image_size"} <= set(meta):
        raise CorruptFileError(f"{meta_path} is not the model.json of a saved detector")
    model = build_detector(meta["architecture"], meta["num_classes"], meta["image_size"], **meta.get("overrides", {}))
    weights = os.path.join(run_dir, meta.get("weights", WEIGHTS_FILE))
    if not os.path.isfile(weights):
        raise FileNotFoundError(f"{weights} is missing (the weights of {meta_path}): retrain into {run_dir}")
    try:
        model.load_weights(weights)
    except Exception as error:  # noqa: BLE001 - h5py and Keras raise several kinds; one clear message
        reason = " ".join(str(error).split()) or type(error).__name__
        raise CorruptFileError(
            f"{weights} cannot be read ({os.path.getsize(weights)} bytes: {reason}); retrain into {run_dir} "
            "(with --force) or restore the file"
        ) from None
    return model, meta


def discard_saved_detector(run_dir):
    """Removes a finished run's model.json (first: the folder then no longer counts as finished),
    weights, history and metrics from run_dir, before it is trained again (`--force`)."""
    for name in (MODEL_FILE, WEIGHTS_FILE, HISTORY_FILE, METRICS_FILE):
        path = os.path.join(run_dir, name)
        if os.path.exists(path):
            os.remove(path)
