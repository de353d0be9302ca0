"""Readers and writers of HRSC2016 and DOTA, the synthetic dataset, tiling, the tf.data pipeline.

Light imports: the TensorFlow parts (`build_dataset`, `AugmentConfig`) load on first use.
"""

from dked_tf.data.records import AnnotationError, DatasetInfo, ImageRecord

_LAZY = {
    "read_hrsc": "dked_tf.data.hrsc",
    "write_hrsc_xml": "dked_tf.data.hrsc",
    "read_dota": "dked_tf.data.dota",
    "write_dota_label": "dked_tf.data.dota",
    "read_task1": "dked_tf.data.dota",
    "write_task1": "dked_tf.data.dota",
    "DOTA_CLASSES": "dked_tf.data.dota",
    "make_synthetic_hrsc": "dked_tf.data.synthetic",
    "make_synthetic_dota": "dked_tf.data.synthetic",
    "ensure_synthetic_hrsc": "dked_tf.data.synthetic",
    "ensure_synthetic_dota": "dked_tf.data.synthetic",
    "split_dota": "dked_tf.data.split",
    "merge_detections": "dked_tf.data.split",
    "parse_patch_name": "dked_tf.data.split",
    "build_dataset": "dked_tf.data.pipeline",
    "unletterbox_polygons": "dked_tf.data.pipeline",
    "AugmentConfig": "dked_tf.data.augment",
}

__all__ = ["AnnotationError", "DatasetInfo", "ImageRecord", *_LAZY]


def __getattr__(name):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'dked_tf.data' has no attribute {name!r}")
