"""dked_tf: lightweight oriented object detection with DKED knowledge distillation.

    from dked_tf import Distiller, build_dataset, build_model
    from dked_tf import Detector                 # inference: Detector.load(run folder or .keras)

The package's environment settings for TensorFlow live here, the one place that sets them:
every import of a dked_tf module runs this file first.

The names below are loaded on first use (PEP 562): `dked-tf --help` and `dked-tf evaluate`
import this package and must start without loading TensorFlow (docs/architecture.md).
"""

import importlib
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

__version__ = "0.1.0"

# public name -> the module that defines it
PUBLIC_NAMES = {
    "Detections": "dked_tf.experiment.inference",
    "Detector": "dked_tf.experiment.inference",
    "Distiller": "dked_tf.distiller",
    "OrientedDetector": "dked_tf.models.detector",
    "build_model": "dked_tf.models.presets",
    "build_dataset": "dked_tf.data.pipeline",
    "evaluate_detections": "dked_tf.evaluation.metrics",
    "train": "dked_tf.experiment.train_lib",
}

__all__ = sorted(PUBLIC_NAMES)


def __getattr__(name):
    if name in PUBLIC_NAMES:
        return getattr(importlib.import_module(PUBLIC_NAMES[name]), name)
    raise AttributeError(f"module 'dked_tf' has no attribute {name!r}")


def __dir__():
    return sorted(list(globals()) + list(PUBLIC_NAMES))
