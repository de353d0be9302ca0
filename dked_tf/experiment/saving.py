"""Saved detectors, in two formats that `load_detector` reads alike:

- a run folder with `model.json` (architecture preset, classes, input size, overrides,
  training facts) and `model.weights.h5`: what training writes, and what `distill --teacher`
  and the recipes read back. Both files are written atomically (a temporary file, then a
  rename), the weights first: a folder with model.json holds a finished model, whatever
  happened while it was written.
- one `.keras` file (`save_keras_file`): Keras' own archive (config.json, metadata.json,
  model.weights.h5), so `keras.saving.load_model` reads it like any Keras model, plus one
  entry `dked_tf.json` holding the same facts as model.json (class names, input size, tile
  size, training facts). A `.keras` file without that entry (`student.save("s.keras")`) loads
  too, its classes named `class0`, `class1`, ... and its input size taken from the model.
"""

import json
import os
import zipfile

import keras

from dked_tf.distiller import Distiller
from dked_tf.files import CorruptFileError, read_json, replacing, write_json
from dked_tf.models.detector import OrientedDetector
from dked_tf.models.presets import build_detector

MODEL_FILE = "model.json"
WEIGHTS_FILE = "model.weights.h5"
HISTORY_FILE = "history.json"
METRICS_FILE = "metrics.json"
# a recipe's test-split figures of the checkpoint, with what they were computed from
# (`experiment.recipe.Recipe.checkpoint_evaluation`)
EVALUATION_FILE = "evaluation.json"
# model.json key of the run record (`experiment.train_lib.run_record`): what the model was trained with
RECORD_KEY = "trained_with"
KERAS_SUFFIX = ".keras"
# the entry of a one-file model that holds what model.json holds in a run folder
KERAS_META_ENTRY = "dked_tf.json"
# model.json keys that describe the run folder's files, not the model (left out of a .keras file)
FOLDER_KEYS = ("weights",)


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
    """(model, meta) from a folder written by `save_detector`, its model.json, or a one-file
    `.keras` model (`load_keras_file`). meta: the facts of model.json (`class_names`,
    `image_size`, `num_classes`, `architecture`, `tile_size`, training facts)."""
    if is_keras_file(run_dir) and not os.path.isdir(run_dir):
        return load_keras_file(run_dir)
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
    weights, history, metrics and evaluation from run_dir, before it is trained again (`--force`)."""
    for name in (MODEL_FILE, WEIGHTS_FILE, HISTORY_FILE, METRICS_FILE, EVALUATION_FILE):
        path = os.path.join(run_dir, name)
        if os.path.exists(path):
            os.remove(path)


def is_keras_file(path):
    """True when `path` names a one-file model (ends with `.keras`; it may not exist yet)."""
    return os.fspath(path).endswith(KERAS_SUFFIX)


def save_keras_file(model, path, *, class_names, image_size, **extra):
    """Writes `model` (an OrientedDetector) as one `.keras` file at `path`, atomically: Keras'
    archive plus the entry `dked_tf.json` = {"num_classes", "class_names", "image_size",
    "architecture" (the model's preset), anything in `extra` (e.g. `tile_size`, training facts)}.
    image_size: the input side S (px) images are letterboxed to. Returns path."""
    path = os.fspath(path)
    if not is_keras_file(path):
        raise ValueError(f"{path}: a one-file model needs the {KERAS_SUFFIX} extension (Keras requires it)")
    class_names = [str(name) for name in class_names]
    if len(class_names) != model.num_classes:
        raise ValueError(f"{len(class_names)} class names for a model of {model.num_classes} classes")
    meta = {"architecture": model.preset, **{k: v for k, v in extra.items() if k not in FOLDER_KEYS}}
    meta.update(num_classes=len(class_names), class_names=class_names, image_size=int(image_size))
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    with replacing(path) as temporary:
        model.save(temporary)
        with zipfile.ZipFile(temporary, "a") as archive:
            archive.writestr(KERAS_META_ENTRY, json.dumps(meta, indent=2))
    return path


def load_keras_file(path):
    """(model, meta) from a `.keras` file: an OrientedDetector, or a Distiller (its student is
    returned). meta: the file's `dked_tf.json` entry (`save_keras_file`), or, for a file Keras
    wrote alone, {"architecture", "num_classes", "class_names": class0.., "image_size"} from
    the model. Raises FileNotFoundError, or CorruptFileError naming the file when it is no
    Keras archive or holds no detector."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path}: no such .keras model file")
    if not zipfile.is_zipfile(path):
        raise CorruptFileError(
            f"{path} is not a .keras model file (not a zip archive, {os.path.getsize(path)} bytes): "
            "write one with `dked-tf export --format keras` or `Detector.save`"
        )
    try:
        model = keras.saving.load_model(path, compile=False)
    except Exception as error:  # noqa: BLE001 - zip, JSON, h5py and Keras raise several kinds; one clear message
        reason = " ".join(str(error).split()) or type(error).__name__
        raise CorruptFileError(f"{path} cannot be read as a Keras model ({reason[:300]})") from None
    if isinstance(model, Distiller):
        model = model.student
    if not isinstance(model, OrientedDetector):
        raise CorruptFileError(f"{path} holds a {type(model).__name__}, not a dked_tf OrientedDetector")
    meta = {
        "architecture": model.preset,
        "num_classes": model.num_classes,
        "class_names": [f"class{i}" for i in range(model.num_classes)],
        "image_size": model.image_size,
    }
    with zipfile.ZipFile(path) as archive:
        if KERAS_META_ENTRY in archive.namelist():
            try:
                saved = json.loads(archive.read(KERAS_META_ENTRY).decode("utf-8"))
            except ValueError as error:
                raise CorruptFileError(f"{path}: its {KERAS_META_ENTRY} entry is not valid JSON ({error})") from None
            if not isinstance(saved, dict):
                raise CorruptFileError(f"{path}: its {KERAS_META_ENTRY} entry is not a JSON object")
            meta.update(saved)
    if len(meta["class_names"]) != model.num_classes:
        raise CorruptFileError(
            f"{path}: {len(meta['class_names'])} class names in {KERAS_META_ENTRY} for a model of "
            f"{model.num_classes} classes"
        )
    return model, meta
