"""dked_tf: lightweight oriented object detection with DKED knowledge distillation.

Heavy submodules (TensorFlow, Keras) are imported lazily so that `dked-tf --help` and the
pure-numpy parts (`dked_tf.ops`, the readers) stay fast to import.
"""

import importlib
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

__version__ = "0.1.0"

_LAZY = {
    "Distiller": ("dked_tf.distiller", "Distiller"),
    "OrientedDetector": ("dked_tf.models.detector", "OrientedDetector"),
    "build_model": ("dked_tf.models.presets", "build_model"),
    "build_dataset": ("dked_tf.data.pipeline", "build_dataset"),
    "evaluate_detections": ("dked_tf.evaluation.metrics", "evaluate_detections"),
}


def __getattr__(name):
    if name in _LAZY:
        module, attr = _LAZY[name]
        return getattr(importlib.import_module(module), attr)
    raise AttributeError(f"module 'dked_tf' has no attribute {name!r}")


def __dir__():
    return sorted(list(globals()) + list(_LAZY))
