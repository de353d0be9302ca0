"""dked_tf.evaluation: devkit-faithful rotated mAP (DOTA Task1, HRSC2016), running a model over
records, and a Keras callback.

Names are imported lazily: `metrics` needs only numpy (and `dked_tf.ops.iou`); the callback and
the runner need Keras / TensorFlow.
"""

import importlib

_LAZY = {
    "EvalResult": "dked_tf.evaluation.metrics",
    "evaluate_detections": "dked_tf.evaluation.metrics",
    "evaluate_all_metrics": "dked_tf.evaluation.metrics",
    "average_precision": "dked_tf.evaluation.metrics",
    "PRESETS": "dked_tf.evaluation.metrics",
    "predict_records": "dked_tf.evaluation.runner",
    "evaluate_model": "dked_tf.evaluation.runner",
    "MeanAPCallback": "dked_tf.evaluation.callback",
}

__all__ = sorted(_LAZY)


def __getattr__(name):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'dked_tf.evaluation' has no attribute {name!r}")


def __dir__():
    return sorted(list(globals()) + list(_LAZY))
