"""dked_tf.evaluation: devkit-faithful rotated mAP (DOTA Task1, HRSC2016), scoring folders of
result files, running a model (or a .tflite) over records, and a Keras callback.

Names are imported lazily: `metrics` and `folders` need only numpy, OpenCV (and `dked_tf.ops`,
`dked_tf.data`); the callback, the runner and `tflite` need Keras / TensorFlow.
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
    "evaluate_folders": "dked_tf.evaluation.folders",
    "evaluate_tflite": "dked_tf.evaluation.tflite",
}

__all__ = sorted(_LAZY)


def __getattr__(name):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'dked_tf.evaluation' has no attribute {name!r}")


def __dir__():
    return sorted(list(globals()) + list(_LAZY))
