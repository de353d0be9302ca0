"""Ground truth and detections built by hand for the AP tests (test_metrics, test_coco_ap):
axis-aligned squares, rotated rectangles and the evaluators' ground-truth dict."""

import numpy as np


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
