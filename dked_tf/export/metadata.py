"""The metadata every exported detector carries (a JSON sidecar or a SavedModel asset): what a
runtime needs to feed the model and read its outputs."""

from dked_tf.data.augment import LETTERBOX_PAD_VALUE


def detector_metadata(
    detector,
    export_format,
    image_size,
    class_names=None,
    score_threshold=0.05,
    iou_threshold=0.3,
    max_detections=300,
    **extra,
):
    """dict: format, input size S (pixels, square letterboxed input), letterbox pad value, classes,
    strides and decode thresholds of `detector` (an OrientedDetector), then `extra` keys (such as
    `model`, the exported file's name)."""
    return {
        "format": export_format,
        "image_size": int(image_size),
        "letterbox_pad_value": LETTERBOX_PAD_VALUE,
        "num_classes": int(detector.num_classes),
        "class_names": list(class_names) if class_names else None,
        "strides": [int(s) for s in detector.strides],
        "score_threshold": float(score_threshold),
        "iou_threshold": float(iou_threshold),
        "max_detections": int(max_detections),
        **extra,
    }
