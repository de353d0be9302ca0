"""The detection confusion matrix of Ultralytics (`ultralytics.utils.metrics.ConfusionMatrix`),
with rotated polygon IoU.

    cm = confusion_matrix(detections, truths, class_names, iou_threshold=0.5)
    cm.matrix          # int64 [nC + 1, nC + 1]: rows predicted class, columns true class
    cm.labels          # class_names + ["background"]

Per image, the detections scoring above `score_threshold` (strictly, as Ultralytics' conf=0.25)
are matched to the ground truth class-agnostically and one-to-one, as Ultralytics does: the
candidate pairs are those with IoU > iou_threshold (or >=); each detection keeps its
highest-IoU ground truth, then each ground truth keeps its highest-IoU detection among those
(ties: the lower ground-truth index, then the lower detection index). Then:

- a matched ground truth of class t with a detection of class p counts at [p, t] (p = t: a
  correct detection; p != t: a confusion);
- an unmatched ground truth of class t counts at [background, t] (missed);
- an unmatched detection of class p counts at [p, background] (a false positive);
- [background, background] stays 0.

Difficult objects (difficult="ignore", the devkit's default) take part in the matching but are
not counted, nor is the detection matched to one (the devkit ignores such detections too);
with difficult="count" they count as any object. Ground-truth objects of classes outside
class_names are left out. IoU: `dked_tf.ops.iou.poly_iou` (exact for simple quadrilaterals;
Ultralytics' OBB matrix uses probiou instead). Imports no TensorFlow.
"""

import dataclasses

import numpy as np

from dked_tf.ops.iou import poly_iou

BACKGROUND = "background"
ULTRALYTICS_SCORE_THRESHOLD = 0.25  # Ultralytics' ConfusionMatrix(conf=0.25)


@dataclasses.dataclass
class ConfusionMatrix:
    """matrix: int64 [nC + 1, nC + 1], rows predicted, columns true, last row/column background.
    The thresholds it was counted with are kept for titles and reports."""

    matrix: np.ndarray
    class_names: list
    iou_threshold: float
    comparison: str
    score_threshold: float
    difficult: str

    @property
    def labels(self):
        """Row and column names: the classes, then "background"."""
        return list(self.class_names) + [BACKGROUND]

    def normalized(self):
        """float64 [nC + 1, nC + 1], each column divided by its sum (the share of a true class
        that went to each prediction, as Ultralytics' normalized plot); empty columns stay 0."""
        totals = self.matrix.sum(axis=0, keepdims=True).astype(np.float64)
        return np.divide(self.matrix, totals, out=np.zeros(self.matrix.shape), where=totals > 0)

    def to_dict(self):
        return {
            "labels": self.labels,
            "matrix": self.matrix.tolist(),
            "rows": "predicted",
            "columns": "true",
            "iou_threshold": float(self.iou_threshold),
            "comparison": self.comparison,
            "score_threshold": float(self.score_threshold),
            "difficult": self.difficult,
        }


def match_one_to_one(iou, iou_threshold, comparison=">"):
    """Ultralytics' matching of one image: iou float [G, D] (ground truth x detections) ->
    int [K, 2] pairs (gt index, detection index), each index at most once, every pair above the
    threshold (`comparison` ">" or ">="). Each detection keeps its highest-IoU ground truth,
    then each ground truth its highest-IoU detection among those; ties go to lower indices."""
    iou = np.asarray(iou, np.float64)
    above = iou > iou_threshold if comparison == ">" else iou >= iou_threshold
    gt, det = np.nonzero(above)
    if len(gt) == 0:
        return np.zeros((0, 2), np.int64)
    value = iou[gt, det]
    # per detection: sorted by detection, then IoU descending, then gt index; keep the first
    order = np.lexsort((gt, -value, det))
    first = np.r_[True, det[order][1:] != det[order][:-1]]
    gt, det, value = gt[order][first], det[order][first], value[order][first]
    # per ground truth: sorted by gt, then IoU descending, then detection index; keep the first
    order = np.lexsort((det, -value, gt))
    first = np.r_[True, gt[order][1:] != gt[order][:-1]]
    return np.stack([gt[order][first], det[order][first]], axis=1).astype(np.int64)


def _detections_per_image(detections, class_names, score_threshold):
    """image_id -> (polygons float64 [D, 8], class indices int [D]) of detections scoring above
    score_threshold. detections: class -> {"image_ids", "scores" [D], "polygons" [D, 8]}."""
    per_image = {}
    for index, name in enumerate(class_names):
        columns = detections.get(name)
        if not columns:
            continue
        scores = np.asarray(columns["scores"], np.float64).reshape(-1)
        polygons = np.asarray(columns["polygons"], np.float64).reshape(-1, 8)
        for k in np.flatnonzero(scores > score_threshold):
            entry = per_image.setdefault(columns["image_ids"][k], ([], []))
            entry[0].append(polygons[k])
            entry[1].append(index)
    return {
        image_id: (np.asarray(polys, np.float64).reshape(-1, 8), np.asarray(classes, np.int64))
        for image_id, (polys, classes) in per_image.items()
    }


def confusion_matrix(
    detections,
    truths,
    class_names,
    iou_threshold=0.5,
    comparison=">",
    score_threshold=ULTRALYTICS_SCORE_THRESHOLD,
    difficult="ignore",
):
    """The confusion matrix of a whole evaluation (module docstring).

    detections: class name -> {"image_ids" [D], "scores" float [D], "polygons" float [D, 8]}
    (pixels; what `evaluation.folders.load_detections` reads from Task1 files).
    truths: image_id -> (polygons float [N, 8] pixels, class names [N], difficult bool [N]).
    Detections of images without ground truth entries count as false positives.
    Returns a ConfusionMatrix.
    """
    if comparison not in (">", ">="):
        raise ValueError(f"comparison must be '>' or '>=', got {comparison!r}")
    if difficult not in ("ignore", "count"):
        raise ValueError(f"difficult must be 'ignore' or 'count', got {difficult!r}")
    class_names = list(class_names)
    num_classes = len(class_names)
    lookup = {name: index for index, name in enumerate(class_names)}
    matrix = np.zeros((num_classes + 1, num_classes + 1), np.int64)
    per_image = _detections_per_image(detections, class_names, score_threshold)
    for image_id in list(truths) + [i for i in per_image if i not in truths]:
        gt_polys, gt_names, gt_difficult = truths.get(image_id, (np.zeros((0, 8)), [], np.zeros(0, bool)))
        keep = np.asarray([name in lookup for name in gt_names], bool).reshape(-1)
        gt_polys = np.asarray(gt_polys, np.float64).reshape(-1, 8)[keep]
        gt_classes = np.asarray([lookup[name] for name in np.asarray(gt_names, object)[keep]], np.int64)
        ignored = np.asarray(gt_difficult, bool).reshape(-1)[keep] & (difficult == "ignore")
        det_polys, det_classes = per_image.get(image_id, (np.zeros((0, 8)), np.zeros(0, np.int64)))
        pairs = match_one_to_one(poly_iou(gt_polys, det_polys), iou_threshold, comparison)
        gt_match = np.full(len(gt_classes), -1)
        det_matched = np.zeros(len(det_classes), bool)
        gt_match[pairs[:, 0]] = pairs[:, 1]
        det_matched[pairs[:, 1]] = True
        for g, true_class in enumerate(gt_classes):
            if ignored[g]:
                continue
            predicted = det_classes[gt_match[g]] if gt_match[g] >= 0 else num_classes
            matrix[predicted, true_class] += 1
        np.add.at(matrix, (det_classes[~det_matched], num_classes), 1)
    return ConfusionMatrix(
        matrix=matrix,
        class_names=class_names,
        iou_threshold=float(iou_threshold),
        comparison=comparison,
        score_threshold=float(score_threshold),
        difficult=difficult,
    )
