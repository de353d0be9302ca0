"""dked_tf.models: backbones, necks, OrientedDetector and presets (imported lazily)."""

import importlib

_LAZY = {
    "OrientedDetector": ("dked_tf.models.detector", "OrientedDetector"),
    "build_model": ("dked_tf.models.presets", "build_model"),
    "count_params": ("dked_tf.models.presets", "count_params"),
    "gflops": ("dked_tf.models.presets", "gflops"),
    "PRESETS": ("dked_tf.models.presets", "PRESETS"),
}


def __getattr__(name):
    if name in _LAZY:
        module, attr = _LAZY[name]
        return getattr(importlib.import_module(module), attr)
    raise AttributeError(f"module 'dked_tf.models' has no attribute {name!r}")
