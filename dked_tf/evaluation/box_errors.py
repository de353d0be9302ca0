"""Why found objects miss the IoU threshold: the box errors of each object's own detection.

For every non-difficult ground truth, its detection is the highest-scoring detection of the
same class and image whose rotated IoU with it exceeds `found_iou` (0.1: the object was
found). Both are reduced to rectangles (`ops.obb.poly_to_rbox`, the minimum-area rectangle)
with length ≥ width, and compared:

- ``found``: fraction of ground truths with a detection; ``passed``: fraction of those whose
  detection reaches `pass_iou` (0.5: what the VOC metrics count), ``iou_median``;
- ``length_ratio_median`` / ``width_ratio_median``: detection / ground truth (1 = exact;
  above 1 too long / too wide);
- ``angle_error_median``: degrees between the long axes, in [0, 90];
- ``centre_across_median`` / ``centre_along_median``: |centre offset| across the ground
  truth's long axis in ground-truth widths, and along it in ground-truth lengths;
- ``passed_if_exact``: for each of ``centre_across``, ``centre_along``, ``length``, ``width``,
  ``angle``, the fraction that would pass had only that parameter been the ground truth's (the
  others as detected); the gain over ``passed`` says which error costs most.

Pure numpy; `detections` and `records` as the VOC evaluation takes them.
"""

import numpy as np

from dked_tf.ops.iou import poly_iou, poly_iou_pairwise
from dked_tf.ops.obb import poly_to_rbox, rbox_to_poly

PARAMETERS = ("centre_across", "centre_along", "length", "width", "angle")


def _long_side_first(rboxes):
    """rbox [N, 5] -> (cx, cy, length, width, theta of the long side) as float64 [N] each."""
    cx, cy, w, h, theta = np.moveaxis(np.asarray(rboxes, np.float64), -1, 0)
    swap = h > w
    return cx, cy, np.where(swap, h, w), np.where(swap, w, h), np.where(swap, theta + 0.5 * np.pi, theta)


def _own_detections(detections, records, class_names, found_iou):
    """Pairs (ground-truth polygon, its detection's polygon or None, IoU) of every non-difficult
    ground truth, as in the module docstring."""
    per_image = {}
    for class_name, entries in detections.items():
        for image_id, score, polygon in entries:
            per_image.setdefault((class_name, image_id), []).append((float(score), polygon))
    pairs = []
    for record in records:
        kept = np.nonzero(~np.asarray(record.difficult, bool))[0]
        truths = np.asarray(record.polygons, np.float64)[kept]
        arrays = {}  # class name -> scores [D], polygons [D, 8], IoU with every kept truth [G, D]
        for row, index in enumerate(kept):
            class_name = class_names[int(record.classes[index])]
            entries = per_image.get((class_name, record.image_id), [])
            if entries and class_name not in arrays:
                polygons = np.asarray([polygon for _, polygon in entries], np.float64).reshape(-1, 8)
                arrays[class_name] = (np.array([s for s, _ in entries]), polygons, poly_iou(truths, polygons))
            candidates = np.nonzero(arrays[class_name][2][row] > found_iou)[0] if entries else []
            if not len(candidates):
                pairs.append((truths[row], None, 0.0))
                continue
            scores, polygons, ious = arrays[class_name]
            best = candidates[np.argmax(scores[candidates])]
            pairs.append((truths[row], polygons[best], float(ious[row, best])))
    return pairs


def box_errors(detections, records, class_names, found_iou=0.1, pass_iou=0.5):
    """The figures of the module docstring as a dict of floats (None where nothing was found).

    detections: class name -> [(image_id, score, polygon [8])] in image pixels;
    records: `data.records.ImageRecord`s (polygons [N, 8], classes [N], difficult [N]);
    class_names: sequence indexed by the records' class ids.
    """
    pairs = _own_detections(detections, records, list(class_names), found_iou)
    found = [(truth, detection, iou) for truth, detection, iou in pairs if detection is not None]
    result = {"ground_truths": len(pairs), "found": (len(found) / len(pairs)) if pairs else None}
    if not found:
        return {**result, "passed": None, "passed_if_exact": None}
    truths = np.stack([truth for truth, _, _ in found])
    detected = np.stack([detection for _, detection, _ in found])
    ious = np.array([iou for _, _, iou in found])
    gx, gy, glen, gwid, gtheta = _long_side_first(poly_to_rbox(truths))
    dx, dy, dlen, dwid, dtheta = _long_side_first(poly_to_rbox(detected))
    axis = np.stack([np.cos(gtheta), np.sin(gtheta)], -1)
    normal = np.stack([-np.sin(gtheta), np.cos(gtheta)], -1)
    offset = np.stack([dx - gx, dy - gy], -1)
    along = np.sum(offset * axis, -1)
    across = np.sum(offset * normal, -1)
    angle = np.abs((dtheta - gtheta + 0.5 * np.pi) % np.pi - 0.5 * np.pi)
    exact = {
        "centre_across": (gx + along * axis[:, 0], gy + along * axis[:, 1], dlen, dwid, dtheta),
        "centre_along": (gx + across * normal[:, 0], gy + across * normal[:, 1], dlen, dwid, dtheta),
        "length": (dx, dy, glen, dwid, dtheta),
        "width": (dx, dy, dlen, gwid, dtheta),
        "angle": (dx, dy, dlen, dwid, gtheta),
    }
    passed_if_exact = {}
    for name in PARAMETERS:
        fixed = poly_iou_pairwise(truths, rbox_to_poly(np.stack(exact[name], -1)))
        passed_if_exact[name] = float(np.mean(fixed >= pass_iou))
    return {
        **result,
        "passed": float(np.mean(ious >= pass_iou)),
        "iou_median": float(np.median(ious)),
        "length_ratio_median": float(np.median(dlen / glen)),
        "width_ratio_median": float(np.median(dwid / np.maximum(gwid, 1e-9))),
        "angle_error_median": float(np.degrees(np.median(angle))),
        "centre_across_median": float(np.median(np.abs(across) / np.maximum(gwid, 1e-9))),
        "centre_along_median": float(np.median(np.abs(along) / glen)),
        "passed_if_exact": passed_if_exact,
    }
