"""COCO-style rotated AP: AP50:95, AP50 and AP75 with pycocotools' `COCOeval` semantics
(iouType "segm"-like, area range "all", maxDets 100) and the package's exact polygon IoU.

What pycocotools does, and what this module does the same way:
- IoU thresholds `np.linspace(0.5, 0.95, 10)`; a detection matches a ground truth when
  IoU >= t (pycocotools compares `iou < min(t, 1 - 1e-10)`: an IoU exactly on a threshold
  matches);
- per image and class, detections are ranked by descending score with a stable sort and only
  the first `max_dets` (100) are kept (pycocotools applies maxDets per image AND category,
  which is what its `evaluateImg` / `accumulate` do, although its docs say "per image");
- ground truths are ordered with the regular ones first, the ignored (difficult) ones last;
  each detection, in rank order, takes the unmatched regular ground truth of highest IoU >= t
  (on equal IoU the LAST one in that order, as pycocotools' `<` comparison gives); only when
  no regular one qualifies does it take an ignored one, which may be taken again and again
  (pycocotools' iscrowd); a detection on an ignored ground truth is neither TP nor FP;
- difficult objects are pycocotools' crowd regions (`iscrowd=1`, hence `ignore=1`): their
  "IoU" with a detection is intersection / detection area, as pycocotools' `maskUtils.iou`
  computes it for crowd objects;
- per class, the kept detections of all images are ranked by descending score with a stable
  sort (pycocotools' mergesort); precision = tp / (tp + fp + eps(1)), recall = tp / positives,
  the precision made monotone from the right, read at recall points `np.linspace(0, 1, 101)`
  (`np.searchsorted(recall, points, "left")`, 0 past the last recall);
- AP(t, class) = mean of those 101 values; AP50:95 = mean over the ten thresholds and the
  classes with at least one positive (classes without are pycocotools' -1: reported as -1 and
  left out of the means; with no positives at all the mAP is -1 too); AP50 / AP75 = the same
  mean at t = 0.5 / 0.75.

Where it differs from pycocotools (it scores polygons in files, not COCO json):
- IoU is the exact polygon IoU of `dked_tf.ops.iou.poly_iou` instead of rasterised masks;
  zero-area and self-intersecting quadrilaterals have IoU 0 with everything;
- equal scores of different images keep the detection files' order (pycocotools concatenates
  the images in sorted image-id order before its stable sort, so its ties across images
  follow the image ids); inside one image both keep the file order;
- pycocotools also ignores unmatched detections whose area is outside the area range "all"
  ([0, 1e10] px²); no detection of a real image is that large, so this is left out;
- `difficult="count"` (not in pycocotools) makes difficult objects ordinary positives.
"""

import dataclasses

import numpy as np

from dked_tf.evaluation.metrics import _prepare_detections, prepare_scoring_inputs
from dked_tf.ops.iou import poly_iou

IOU_THRESHOLDS = np.linspace(0.5, 0.95, int(np.round((0.95 - 0.5) / 0.05)) + 1, endpoint=True)
RECALL_POINTS = np.linspace(0.0, 1.0, int(np.round(1.0 / 0.01)) + 1, endpoint=True)
MAX_DETS = 100
DIFFICULT_MODES = ("ignore", "count")
_AT_75 = int(np.flatnonzero(IOU_THRESHOLDS == 0.75)[0])  # pycocotools: np.where(iouThr == p.iouThrs)
NO_GT = -1.0  # pycocotools' value for a class without positives


@dataclasses.dataclass
class CocoResult:
    """What `evaluate_coco` returns.

    map: AP50:95; ap50, ap75: AP at IoU 0.5 / 0.75 (means over the classes with positives;
    -1 when no class has any). per_class / per_class_ap50 / per_class_ap75: class name -> AP
    (-1 for a class without positives). ap_table: float [T, K] AP per threshold and class (-1
    rows for classes without positives). num_gt: class -> positives; num_det: class -> detections
    given; capped: class -> detections dropped by the per-image cap.
    pr_curves: class -> (recall, precision) along the ranked kept detections at IoU 0.5.
    """

    map: float
    ap50: float
    ap75: float
    per_class: dict
    per_class_ap50: dict
    per_class_ap75: dict
    ap_table: np.ndarray
    num_gt: dict
    num_det: dict
    capped: dict
    pr_curves: dict
    metric: str = "coco"
    difficult: str = "ignore"
    max_dets: int = MAX_DETS
    degenerate_gt: dict = dataclasses.field(default_factory=dict)

    def to_dict(self):
        """The JSON of `dked-tf evaluate --metric coco --json`."""
        return {
            "metric": "coco",
            "mAP": float(self.map),
            "AP50": float(self.ap50),
            "AP75": float(self.ap75),
            "per_class": {k: float(v) for k, v in self.per_class.items()},
            "num_gt": {k: int(v) for k, v in self.num_gt.items()},
            "num_det": {k: int(v) for k, v in self.num_det.items()},
        }

    def format_table(self):
        """Plain-text per-class table (AP50:95, AP50, AP75 in %, #GT, #det) and the means."""

        def pct(value):
            return f"{100 * value:7.2f}" if value >= 0 else f"{'-':>7}"

        width = max([len("class"), len("mean")] + [len(n) for n in self.per_class])
        head = f"{'class':<{width}}  {'AP50:95':>7}  {'AP50':>7}  {'AP75':>7}  {'#GT':>7}  {'#det':>8}"
        rule = "-" * len(head)
        lines = [head, rule]
        for name in self.per_class:
            lines.append(
                f"{name:<{width}}  {pct(self.per_class[name])}  {pct(self.per_class_ap50[name])}  "
                f"{pct(self.per_class_ap75[name])}  {self.num_gt[name]:7d}  {self.num_det[name]:8d}"
            )
        lines.append(rule)
        lines.append(
            f"{'mean':<{width}}  {pct(self.map)}  {pct(self.ap50)}  {pct(self.ap75)}  "
            f"{sum(self.num_gt.values()):7d}  {sum(self.num_det.values()):8d}"
        )
        lines.append(
            f"(coco: IoU 0.50:0.05:0.95, 101-point AP, at most {self.max_dets} detections per image and class, "
            f"difficult: {'crowd regions (ignored)' if self.difficult == 'ignore' else 'counted'})"
        )
        return "\n".join(lines)


def _areas(polygons):
    points = polygons.reshape(-1, 4, 2)
    points = points - points[:, :1]
    x, y = points[..., 0], points[..., 1]
    return 0.5 * np.abs(np.sum(x * np.roll(y, -1, axis=1) - np.roll(x, -1, axis=1) * y, axis=1))


def _overlaps(det_polys, gt_polys, crowd):
    """pycocotools' overlap matrix [D, G]: IoU for regular ground truths, intersection /
    detection area for crowd ones (the intersection recovered from the exact IoU)."""
    iou = poly_iou(det_polys, gt_polys)
    if crowd.any() and len(det_polys):
        det_area = _areas(det_polys)[:, None]
        gt_area = _areas(gt_polys[crowd])[None, :]
        part = iou[:, crowd]
        inter = part * (det_area + gt_area) / (1.0 + part)
        iou[:, crowd] = np.where(det_area > 0, inter / np.where(det_area > 0, det_area, 1.0), 0.0)
    return iou


def _last_best(values, allowed):
    """Per row of values [T, G] restricted to allowed [T, G]: (any allowed [T], index of the
    LAST maximum among the allowed [T])."""
    masked = np.where(allowed, values, -np.inf)
    found = allowed.any(axis=1)
    last = values.shape[1] - 1 - np.argmax(masked[:, ::-1], axis=1)
    return found, last


def _match_image(overlaps, gt_ignore, thresholds):
    """pycocotools' `evaluateImg` matching of one image and class.

    overlaps: [D, G] with detections in rank order and ground truths regular-first;
    gt_ignore: bool [G]. Returns (matched [T, D], ignored [T, D]) booleans."""
    num_t, (num_d, num_g) = len(thresholds), overlaps.shape
    matched = np.zeros((num_t, num_d), bool)
    ignored = np.zeros((num_t, num_d), bool)
    if num_d == 0 or num_g == 0:
        return matched, ignored
    limit = np.minimum(thresholds, 1 - 1e-10)[:, None]
    taken = np.zeros((num_t, num_g), bool)
    rows = np.arange(num_t)
    for d in range(num_d):
        row = overlaps[d][None, :]
        fits = row >= limit
        regular_found, regular = _last_best(np.broadcast_to(row, fits.shape), fits & ~taken & ~gt_ignore)
        crowd_found, crowd = _last_best(np.broadcast_to(row, fits.shape), fits & gt_ignore)
        choice = np.where(regular_found, regular, crowd)
        found = regular_found | crowd_found
        matched[found, d] = True
        ignored[found, d] = gt_ignore[choice[found]]
        hit = found & regular_found
        taken[rows[hit], choice[hit]] = True
    return matched, ignored


def interpolated_precision(tp, fp, num_positives):
    """pycocotools' `accumulate` for one threshold and class: tp, fp bool [N] along the ranked
    detections (an ignored detection is neither) -> (precision at the 101 recall points [101], recall [N],
    precision [N])."""
    tp_sum = np.cumsum(tp, dtype=np.float64)
    fp_sum = np.cumsum(fp, dtype=np.float64)
    recall = tp_sum / num_positives
    precision = tp_sum / (fp_sum + tp_sum + np.spacing(1))
    envelope = np.maximum.accumulate(precision[::-1])[::-1] if len(precision) else precision
    index = np.searchsorted(recall, RECALL_POINTS, side="left")
    points = np.zeros(len(RECALL_POINTS))
    inside = index < len(envelope)
    points[inside] = envelope[index[inside]]
    return points, recall, precision


def evaluate_coco(detections, ground_truths, class_names, difficult="ignore", max_dets=MAX_DETS):
    """COCO-style rotated AP (see the module docstring).

    detections, ground_truths, class_names: as `dked_tf.evaluation.metrics.evaluate_detections`
    (detections in the files' order: equal scores keep it). difficult: "ignore" (pycocotools'
    crowd regions) or "count" (ordinary positives). max_dets: detections kept per image and
    class. Returns CocoResult.
    """
    if difficult not in DIFFICULT_MODES:
        raise ValueError(f"difficult must be one of {DIFFICULT_MODES}, got {difficult!r}")
    max_dets = int(max_dets)
    if max_dets < 1:
        raise ValueError(f"max_dets must be at least 1, got {max_dets}")
    class_names, gt, degenerate, detections, keys = prepare_scoring_inputs(ground_truths, detections, class_names)
    thresholds = IOU_THRESHOLDS
    table = np.full((len(thresholds), len(class_names)), NO_GT)
    num_gt, num_det, capped, curves = {}, {}, {}, {}
    for class_index, name in enumerate(class_names):
        entries = detections[keys[name]] if name in keys else []
        det_image, det_scores, det_polys = _prepare_detections(entries, name, gt.image_index)
        in_class = np.flatnonzero(gt.classes == class_index)
        gt_ignore_all = gt.difficult[in_class] if difficult == "ignore" else np.zeros(len(in_class), bool)
        positives = int(np.count_nonzero(~gt_ignore_all))
        num_gt[name], num_det[name] = positives, len(det_image)
        # rank order inside each image (stable), the first max_dets of each image kept
        order = np.argsort(-det_scores, kind="stable")
        order = order[np.argsort(det_image[order], kind="stable")]
        rank_in_image = np.arange(len(order)) - np.searchsorted(det_image[order], det_image[order], side="left")
        kept = order[rank_in_image < max_dets]
        capped[name] = len(det_image) - len(kept)
        matched = np.zeros((len(thresholds), len(det_image)), bool)
        ignored = np.zeros((len(thresholds), len(det_image)), bool)
        kept_images = det_image[kept]
        for image in np.unique(np.concatenate([kept_images, gt.image[in_class]])):
            dets = kept[kept_images == image]  # rank order
            objects = in_class[gt.image[in_class] == image]
            flags = gt_ignore_all[gt.image[in_class] == image]
            objects = np.concatenate([objects[~flags], objects[flags]])  # regular first, stable
            flags = np.concatenate([flags[~flags], flags[flags]])
            overlaps = _overlaps(det_polys[dets], gt.polygons[objects], flags)
            matched[:, dets], ignored[:, dets] = _match_image(overlaps, flags, thresholds)
        if positives == 0:
            curves[name] = (np.zeros(0), np.zeros(0))
            continue
        # all kept detections of the class, by descending score; ties keep the files' order
        in_files = np.sort(kept)
        ranked = in_files[np.argsort(-det_scores[in_files], kind="stable")]
        for t in range(len(thresholds)):
            counted = ~ignored[t, ranked]
            tp = matched[t, ranked] & counted
            fp = ~matched[t, ranked] & counted
            points, recall, precision = interpolated_precision(tp, fp, positives)
            table[t, class_index] = float(np.mean(points))
            if t == 0:
                curves[name] = (recall[counted], precision[counted])

    with_gt = table[0] > NO_GT

    def mean(values):
        return float(np.mean(values)) if values.size else NO_GT

    per_class = {n: (mean(table[:, k]) if with_gt[k] else NO_GT) for k, n in enumerate(class_names)}
    return CocoResult(
        map=mean(table[:, with_gt]),
        ap50=mean(table[0, with_gt]),
        ap75=mean(table[_AT_75, with_gt]),
        per_class=per_class,
        per_class_ap50={n: float(table[0, k]) for k, n in enumerate(class_names)},
        per_class_ap75={n: float(table[_AT_75, k]) for k, n in enumerate(class_names)},
        ap_table=table,
        num_gt=num_gt,
        num_det=num_det,
        capped=capped,
        pr_curves=curves,
        difficult=difficult,
        max_dets=max_dets,
        degenerate_gt=dict(degenerate),
    )
