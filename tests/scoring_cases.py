"""Ground truth and detections built by hand for the scoring tests (test_metrics, test_coco_ap,
test_box_errors, test_top_ranked): axis-aligned squares, rotated rectangles, one-class image
records and the evaluators' ground-truth dict."""

import numpy as np

from dked_tf.data.records import ImageRecord


def square(x0, y0, x1, y1):
    """The axis-aligned box [x0, x1] x [y0, y1] as a float64 polygon [8], clockwise in image axes."""
    return np.array([x0, y0, x1, y0, x1, y1, x0, y1], np.float64)


def rect(cx, cy, w, h, theta):
    """A w x h rectangle centred at (cx, cy), turned by theta radians, as a polygon [8]."""
    u = np.array([np.cos(theta), np.sin(theta)])
    v = np.array([-np.sin(theta), np.cos(theta)])
    c = np.array([cx, cy])
    return np.concatenate(
        [c - u * w / 2 - v * h / 2, c + u * w / 2 - v * h / 2, c + u * w / 2 + v * h / 2, c - u * w / 2 + v * h / 2]
    )


def gt_dict(*images):
    """images: (image_id, [(poly, class, difficult), ...]) -> {image_id: (polygons [N, 8],
    class names [N], difficult bool [N])}, the evaluators' ground-truth input."""
    return {
        image_id: (
            np.array([o[0] for o in objects]).reshape(-1, 8),
            [o[1] for o in objects],
            np.array([o[2] for o in objects], bool),
        )
        for image_id, objects in images
    }


def ship_record(image_id, polygons, difficult=None, size=300):
    """An ImageRecord of class-0 objects (no image file) on a size x size image; difficult: [N]
    flags (default none)."""
    n = len(polygons)
    return ImageRecord(
        image_path="",
        image_id=image_id,
        width=size,
        height=size,
        polygons=np.array(polygons, np.float64).reshape(n, 8),
        classes=np.zeros(n, np.int32),
        difficult=np.zeros(n, bool) if difficult is None else np.array(difficult, bool),
    )
