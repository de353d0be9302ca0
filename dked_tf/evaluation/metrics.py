"""Rotated-box average precision with the DOTA devkit's Task1 semantics (VOC07 / VOC12).

Semantics (defaults = the devkit's `voc_eval`, see shared/reference/evaluation.md §1.2):
- per class, detections are ranked by descending score with the devkit's own ordering call
  (`np.argsort(-scores)` on the scores in input order), so tied scores are ranked exactly as the
  devkit ranks them on the same machine;
- each detection takes the ground truth of its image and class with the largest polygon IoU
  (the first one in ground-truth order on equal IoU), whatever that ground truth's state;
- it matches when IoU > 0.5 (strict; `comparison=">="` and `iou_threshold` are options);
- IoU is polyiou's: for simple quadrilaterals (convex or not) that is the exact IoU, computed by
  the package's one polygon IoU (`dked_tf.ops.iou.poly_iou_pairwise`); pairs with a
  self-intersecting (bow-tie) quadrilateral use `general_quad_iou`, the devkit's
  signed-triangle-fan definition (a symmetric bow-tie has signed area 0: IoU 0); zero-area
  quadrilaterals have IoU 0 (polyiou: 0 or NaN, which never matches either);
- degenerate ground truth (zero area, self-intersecting) is kept, as the devkit keeps it: a
  positive that no detection can match (a bow-tie only by its signed area); `EvalResult.degenerate_gt`
  counts it per kind;
- a match on a difficult ground truth is neither TP nor FP, a match on a free ground truth is a TP
  (the ground truth is then taken), a match on a taken one or no match is a FP;
- positives = ground truths that are not difficult (`difficult="count"` counts all and treats
  none as difficult, like the devkit's DOTA-v1.5 script and mmrotate);
- AP: "voc07" = 11-point interpolation at recall 0, 0.1, ..., 1.0 (the devkit's `np.arange`
  thresholds); "voc12" = area under the precision envelope; mAP = mean over all classes.

Where the devkit fails, this module gives a number: a class with no detections has AP 0 (the
devkit raises), a class with no positives has AP 0 (the devkit gives 0 for voc07 and NaN for
voc12). Unlike the devkit's per-pair Python loop, the IoUs of all candidate pairs of a class are
computed in one vectorised call (`dked_tf.ops.iou.poly_iou_pairwise`) and the greedy matching is
resolved with array operations: the greedy choice of each detection depends only on IoUs, and a
ground truth goes to the first ranked detection that chooses it.
"""

import dataclasses

import numpy as np

from dked_tf.data.records import polygon_problem_counts
from dked_tf.ops.iou import SELF_INTERSECTING, poly_iou_pairwise, quad_intersection_area, quad_validity

METRICS = ("voc07", "voc12")
COMPARISONS = (">", ">=")
DIFFICULT_MODES = ("ignore", "count")
MEAN_MODES = ("all", "with_gt")

DEFAULTS = {"metric": "voc07", "iou_threshold": 0.5, "comparison": ">", "difficult": "ignore"}
PRESETS = {
    # The DOTA devkit's dota_evaluation_task1.py main(): VOC07, IoU > 0.5, difficult ignored.
    "dota": dict(DEFAULTS),
    # dota-v1.5_evaluation_task1.py sets difficult = 0 for every object.
    "dota1.5": dict(DEFAULTS, difficult="count"),
    # HRSC2016 "L1" single class ship, mAP(07) and mAP(12), devkit-style (difficult ignored, as
    # ReDet / s2anet's hrsc2016_evaluation.py; mmrotate counts them: pass difficult="count").
    "hrsc07": dict(DEFAULTS, metric="voc07"),
    "hrsc12": dict(DEFAULTS, metric="voc12"),
}

# Detections of a class are expanded into (detection, ground truth) candidate pairs of the
# same image in chunks of at most this many pairs (bounds memory on crowded images).
_MAX_PAIRS_PER_CHUNK = 4_000_000


@dataclasses.dataclass
class EvalResult:
    """What `evaluate_detections` returns.

    map: mean AP over the classes (float in [0, 1]).
    per_class: class name -> AP. num_gt: class name -> number of positives (ground truths that
    count). num_det: class name -> number of detections.
    pr_curves: class name -> (recall [K], precision [K]) along the ranked detections.
    """

    map: float
    per_class: dict
    num_gt: dict
    num_det: dict
    pr_curves: dict
    metric: str = "voc07"
    iou_threshold: float = 0.5
    comparison: str = ">"
    difficult: str = "ignore"
    # ground truth of the evaluated classes that is no region, by kind ("zero area",
    # "self-intersecting") -> count; kept as the devkit keeps it (see the module docstring)
    degenerate_gt: dict = dataclasses.field(default_factory=dict)

    def to_dict(self):
        """The JSON form of the CLI: mAP, metric, per_class, num_gt, num_det (+ settings)."""
        return {
            "mAP": float(self.map),
            "metric": self.metric,
            "per_class": {k: float(v) for k, v in self.per_class.items()},
            "num_gt": {k: int(v) for k, v in self.num_gt.items()},
            "num_det": {k: int(v) for k, v in self.num_det.items()},
            "iou_threshold": float(self.iou_threshold),
            "comparison": self.comparison,
            "difficult": self.difficult,
        }

    def format_table(self):
        """Plain-text per-class table (AP in %, #GT, #det) and the mAP."""
        width = max([len("class"), len("mAP")] + [len(n) for n in self.per_class])
        lines = [f"{'class':<{width}}  {'AP':>7}  {'#GT':>7}  {'#det':>8}", "-" * (width + 28)]
        for name, ap in self.per_class.items():
            lines.append(f"{name:<{width}}  {100 * ap:7.2f}  {self.num_gt[name]:7d}  {self.num_det[name]:8d}")
        lines.append("-" * (width + 28))
        lines.append(
            f"{'mAP':<{width}}  {100 * self.map:7.2f}  {sum(self.num_gt.values()):7d}  {sum(self.num_det.values()):8d}"
        )
        lines.append(f"({self.metric}, IoU {self.comparison} {self.iou_threshold:g}, difficult: {self.difficult})")
        return "\n".join(lines)


@dataclasses.dataclass
class RankedClass:
    """One class's detections in the devkit's rank order (highest score first) and their matching.

    image_ids: [D] image of each detection; scores [D]; polygons [D, 8] (image pixels).
    true_positive / false_positive: bool [D], the flags the AP is computed from (both False: a
    match on a difficult ground truth, which the devkit ignores).
    best_iou: [D] the largest IoU with a ground truth of the class in the same image (-inf when
    none overlaps); exact from the `exact_from` the ranking was asked with (default the match
    threshold) and possibly lower below it.
    positives: ground truths that count (not difficult).
    """

    image_ids: object
    scores: np.ndarray
    polygons: np.ndarray
    true_positive: np.ndarray
    false_positive: np.ndarray
    best_iou: np.ndarray
    positives: int


def resolve_settings(preset=None, metric=None, iou_threshold=None, comparison=None, difficult=None):
    """Settings from an optional preset, explicit arguments winning. Returns a dict."""
    if preset is not None and preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; choose from {sorted(PRESETS)}")
    settings = dict(PRESETS[preset] if preset else DEFAULTS)
    for key, value in (
        ("metric", metric),
        ("iou_threshold", iou_threshold),
        ("comparison", comparison),
        ("difficult", difficult),
    ):
        if value is not None:
            settings[key] = value
    if settings["metric"] not in METRICS:
        raise ValueError(f"metric must be one of {METRICS}, got {settings['metric']!r}")
    if settings["comparison"] not in COMPARISONS:
        raise ValueError(f"comparison must be one of {COMPARISONS}, got {settings['comparison']!r}")
    if settings["difficult"] not in DIFFICULT_MODES:
        raise ValueError(f"difficult must be one of {DIFFICULT_MODES}, got {settings['difficult']!r}")
    threshold = float(settings["iou_threshold"])
    if not np.isfinite(threshold):
        raise ValueError(f"iou_threshold must be finite, got {settings['iou_threshold']!r}")
    settings["iou_threshold"] = threshold
    return settings


# ----------------------------------------------------------------------------------------------
# Average precision from a ranked list


def average_precision(recall, precision, metric="voc07"):
    """AP of a PR curve as the devkit's `voc_ap` computes it.

    recall, precision: [K] along the ranked detections (recall non-decreasing).
    metric "voc07": mean of the best precision at recall >= t for the 11 thresholds
    `np.arange(0, 1.1, 0.1)`; "voc12": area under the right-to-left precision envelope.
    """
    recall = np.asarray(recall, np.float64)
    precision = np.asarray(precision, np.float64)
    if metric == "voc07":
        # best precision at recall >= t: a suffix maximum, located by binary search.
        suffix_max = np.maximum.accumulate(precision[::-1])[::-1]
        first = np.searchsorted(recall, np.arange(0.0, 1.1, 0.1), side="left")
        ap = 0.0
        for index in first:  # summed in the devkit's order, so the float result is identical
            ap = ap + (suffix_max[index] if index < len(recall) else 0.0) / 11.0
        return float(ap)
    if metric == "voc12":
        mrec = np.concatenate(([0.0], recall, [1.0]))
        mpre = np.concatenate(([0.0], precision, [0.0]))
        mpre = np.maximum.accumulate(mpre[::-1])[::-1]
        change = np.flatnonzero(mrec[1:] != mrec[:-1])
        return float(np.sum((mrec[change + 1] - mrec[change]) * mpre[change + 1]))
    raise ValueError(f"metric must be one of {METRICS}, got {metric!r}")


# ----------------------------------------------------------------------------------------------
# Inputs


@dataclasses.dataclass
class _GroundTruth:
    image_ids: list  # image id per image index
    image_index: dict  # image id -> index
    polygons: np.ndarray  # float64 [G, 8]
    image: np.ndarray  # int64 [G]
    classes: np.ndarray  # int64 [G], -1 for objects of classes not evaluated
    difficult: np.ndarray  # bool [G]


def _prepare_ground_truths(ground_truths, class_names):
    """ground_truths: list of ImageRecord, or dict image_id -> (polygons [N, 8], class names
    (or indices) [N], difficult [N]). Objects of classes not in `class_names` are ignored (the
    devkit only looks at the evaluated class)."""
    class_lookup = {name: index for index, name in enumerate(class_names)}
    if isinstance(ground_truths, dict):
        items = ground_truths.items()
    else:
        items = ((record.image_id, record) for record in ground_truths)
    image_ids, polygons, images, classes, difficult = [], [], [], [], []
    for image_id, entry in items:
        image_id = str(image_id)
        if hasattr(entry, "polygons"):
            polys, labels, flags = entry.polygons, entry.classes, entry.difficult
        else:
            try:
                polys, labels, flags = entry
            except (TypeError, ValueError):
                raise ValueError(
                    f"ground truth of image {image_id!r}: expected (polygons, classes, difficult)"
                ) from None
        polys = np.asarray(polys, np.float64).reshape(-1, 8) if np.size(polys) else np.zeros((0, 8))
        labels = list(np.asarray(labels).reshape(-1))
        flags = np.asarray(flags, bool).reshape(-1)
        if not (len(polys) == len(labels) == len(flags)):
            raise ValueError(
                f"ground truth of image {image_id!r}: {len(polys)} polygons, {len(labels)} "
                f"classes and {len(flags)} difficult flags"
            )
        bad = np.flatnonzero(~np.isfinite(polys).all(axis=1))
        if len(bad):
            raise ValueError(
                f"ground truth of image {image_id!r}, object {int(bad[0])}: non-finite polygon {polys[bad[0]].tolist()}"
            )
        ids = []
        for label in labels:
            if isinstance(label, (str, np.str_)):
                ids.append(class_lookup.get(str(label), -1))
            else:
                label = int(label)
                if not 0 <= label < len(class_names):
                    raise ValueError(
                        f"ground truth of image {image_id!r}: class index {label} is "
                        f"outside the {len(class_names)} class names"
                    )
                ids.append(label)
        index = len(image_ids)
        image_ids.append(image_id)
        polygons.append(polys)
        images.append(np.full(len(polys), index, np.int64))
        classes.append(np.asarray(ids, np.int64))
        difficult.append(flags)
    lookup = {}
    for index, image_id in enumerate(image_ids):
        if image_id in lookup:
            raise ValueError(f"ground truth: image id {image_id!r} appears twice")
        lookup[image_id] = index
    cat = np.concatenate
    return _GroundTruth(
        image_ids=image_ids,
        image_index=lookup,
        polygons=cat(polygons) if polygons else np.zeros((0, 8)),
        image=cat(images) if images else np.zeros(0, np.int64),
        classes=cat(classes) if classes else np.zeros(0, np.int64),
        difficult=cat(difficult) if difficult else np.zeros(0, bool),
    )


def _prepare_columns(columns, class_name, image_lookup):
    """Columnar detections {"image_ids": [D], "scores": [D], "polygons": [D, 8]}."""
    try:
        ids = list(columns["image_ids"])
        scores = np.asarray(columns["scores"], np.float64).reshape(-1)
        polygons = np.asarray(columns["polygons"], np.float64)
    except KeyError as error:
        raise ValueError(
            f"detections of class {class_name!r}: the columnar form needs keys "
            f"image_ids, scores, polygons (missing {error})"
        ) from None
    polygons = polygons.reshape(-1, 8) if polygons.size or len(ids) == 0 else polygons
    if not (len(ids) == len(scores) == len(polygons)) or polygons.shape[1:] != (8,):
        raise ValueError(
            f"detections of class {class_name!r}: image_ids [{len(ids)}], scores "
            f"{list(scores.shape)} and polygons {list(polygons.shape)} (want [D, 8]) "
            f"do not agree"
        )
    images = np.fromiter((image_lookup.get(str(i), -1) for i in ids), np.int64, len(ids))
    unknown = np.flatnonzero(images < 0)
    if len(unknown):
        k = int(unknown[0])
        raise ValueError(
            f"detection {k} of class {class_name!r} names image {ids[k]!r}, which is not among the ground-truth images"
        )
    bad = np.flatnonzero(~(np.isfinite(scores) & np.isfinite(polygons).all(axis=1)))
    if len(bad):
        k = int(bad[0])
        raise ValueError(
            f"detection {k} of class {class_name!r} (image {ids[k]!r}) has a non-finite score or coordinate"
        )
    return images, scores, polygons


def _prepare_detections(entries, class_name, image_lookup):
    """entries: list of (image_id, score, poly[8]), or the columnar dict -> (image int64 [D],
    scores float64 [D], polygons float64 [D, 8]) in input order."""
    if isinstance(entries, dict):
        return _prepare_columns(entries, class_name, image_lookup)
    count = len(entries)
    if count == 0:
        return np.zeros(0, np.int64), np.zeros(0), np.zeros((0, 8))
    images = np.empty(count, np.int64)
    scores = np.empty(count, np.float64)
    polygons = np.empty((count, 8), np.float64)
    for k, entry in enumerate(entries):
        try:
            image_id, score, poly = entry
        except (TypeError, ValueError):
            raise ValueError(
                f"detection {k} of class {class_name!r}: expected (image_id, score, poly[8]), got {entry!r}"
            ) from None
        index = image_lookup.get(str(image_id))
        if index is None:
            raise ValueError(
                f"detection {k} of class {class_name!r} names image {image_id!r}, "
                f"which is not among the ground-truth images"
            )
        images[k] = index
        scores[k] = score
        poly = np.asarray(poly, np.float64).reshape(-1)
        if poly.shape != (8,):
            raise ValueError(f"detection {k} of class {class_name!r}: poly must have 8 numbers, got {poly.size}")
        polygons[k] = poly
    bad = np.flatnonzero(~(np.isfinite(scores) & np.isfinite(polygons).all(axis=1)))
    if len(bad):
        k = int(bad[0])
        raise ValueError(
            f"detection {k} of class {class_name!r} (image {entries[k][0]!r}) has a non-finite score or coordinate"
        )
    return images, scores, polygons


# ----------------------------------------------------------------------------------------------
# Matching


def _hbb(polygons):
    points = polygons.reshape(-1, 4, 2)
    lo, hi = points.min(axis=1), points.max(axis=1)
    return lo[:, 0], lo[:, 1], hi[:, 0], hi[:, 1]


def _area_and_fan(polygons):
    """Shoelace area float64 [K] and whether each quadrilateral needs polyiou's signed-fan IoU
    (self-intersecting), bool [K]."""
    points = polygons.reshape(-1, 4, 2)
    points = points - points[:, :1]
    x, y = points[..., 0], points[..., 1]
    area = 0.5 * np.abs(np.sum(x * np.roll(y, -1, axis=1) - np.roll(x, -1, axis=1) * y, axis=1))
    return area, quad_validity(polygons) == SELF_INTERSECTING


def _signed_area(points):
    x, y = points[..., 0], points[..., 1]
    return 0.5 * np.sum(x * np.roll(y, -1, axis=-1) - np.roll(x, -1, axis=-1) * y, axis=-1)


def general_quad_iou(a, b):
    """IoU of matching rows of ANY quadrilaterals, as the devkit's polyiou defines it.

    a, b: float64 [K, 8]. For simple quadrilaterals (convex or not) this is the exact IoU, the
    same number as `dked_tf.ops.iou.poly_iou_pairwise` (use that: faster). For self-intersecting
    ones it follows polyiou: each polygon is a fan of signed triangles (apex, v_i, v_i+1),
    polygons with negative shoelace area are reversed, the intersection is the signed sum of the
    pairwise triangle intersections (the integral of the product of winding numbers), and the
    union is |area a| + |area b| - intersection with shoelace areas. A zero union gives 0
    (polyiou: NaN). Triangle intersections: `dked_tf.ops.iou.quad_intersection_area` (a triangle
    is a quadrilateral with a repeated vertex).
    Returns: float64 [K] (may fall outside [0, 1] for self-intersecting input, as in polyiou).
    """
    a = np.asarray(a, np.float64).reshape(-1, 4, 2)
    b = np.asarray(b, np.float64).reshape(-1, 4, 2)
    count = len(a)
    if count == 0:
        return np.zeros(0)
    apex = a[:, :1, :]  # any apex gives the same sums; a vertex of `a` keeps numbers small
    a, b = a - apex, b - apex
    area_a, area_b = _signed_area(a), _signed_area(b)
    orient_a = np.where(area_a < 0, -1.0, 1.0)[:, None]
    orient_b = np.where(area_b < 0, -1.0, 1.0)[:, None]
    next_a, next_b = np.roll(a, -1, axis=1), np.roll(b, -1, axis=1)
    cross_a = a[..., 0] * next_a[..., 1] - a[..., 1] * next_a[..., 0]  # [K, 4]
    cross_b = b[..., 0] * next_b[..., 1] - b[..., 1] * next_b[..., 0]
    eps = 1e-8  # polyiou's tolerance for a degenerate (zero-area) triangle
    sign_a = np.where(cross_a > eps, 1.0, np.where(cross_a < -eps, -1.0, 0.0)) * orient_a
    sign_b = np.where(cross_b > eps, 1.0, np.where(cross_b < -eps, -1.0, 0.0)) * orient_b
    weight = sign_a[:, :, None] * sign_b[:, None, :]  # [K, 4, 4]
    pair, i, j = np.nonzero(weight)
    inter = np.zeros(count)
    if len(pair):
        origin = np.zeros((len(pair), 2))
        # triangles (apex, v_i, v_i+1) as quadrilaterals with the last vertex repeated
        tri_a = np.concatenate([origin, a[pair, i], next_a[pair, i], next_a[pair, i]], axis=1)
        tri_b = np.concatenate([origin, b[pair, j], next_b[pair, j], next_b[pair, j]], axis=1)
        overlap = quad_intersection_area(tri_a, tri_b)
        np.add.at(inter, pair, weight[pair, i, j] * overlap)
    union = np.abs(area_a) + np.abs(area_b) - inter
    # (self-intersecting input can make the union <= 0; polyiou divides all the same)
    return np.where(union != 0, inter / np.where(union != 0, union, 1.0), 0.0)


def _best_ground_truth(det_image, det_polys, gt_image, gt_polys, num_images, threshold=None):
    """For each detection, the largest IoU with a ground truth of its image and the index of
    the first ground truth (in input order) reaching it; -inf / -1 when the image has none
    whose box overlaps.

    The candidates are the ground truths whose axis-aligned boxes overlap in the devkit's "+1"
    pixel convention, a superset of those with polygon IoU > 0. With `threshold` (> 0), pairs of
    convex quadrilaterals whose IoU cannot reach it (bounded by the boxes' overlap and the
    areas) are skipped too: the best IoU is then exact whenever it is >= threshold, which is all
    the matching needs, and may read lower (or -inf) otherwise."""
    num_det = len(det_image)
    best_iou = np.full(num_det, -np.inf)
    best_gt = np.full(num_det, -1, np.int64)
    if num_det == 0 or len(gt_image) == 0:
        return best_iou, best_gt
    gt_order = np.argsort(gt_image, kind="stable")  # grouped by image, input order inside
    gt_count = np.bincount(gt_image, minlength=num_images)
    gt_start = np.concatenate(([0], np.cumsum(gt_count)[:-1]))
    det_box = _hbb(det_polys)
    gt_box = _hbb(gt_polys)
    bound = threshold is not None and threshold > 0
    det_area, det_fan = _area_and_fan(det_polys)
    gt_area, gt_fan = _area_and_fan(gt_polys)
    if bound:
        # a relative margin keeps rounding in the bound from ever dropping a needed pair
        floor = threshold * (1.0 - 1e-9) - 1e-12
    per_det = gt_count[det_image]
    ends = np.cumsum(per_det)
    start = 0
    while start < num_det:
        # Chunk of detections whose candidate pairs stay below the memory bound.
        limit = (ends[start - 1] if start else 0) + _MAX_PAIRS_PER_CHUNK
        stop = max(start + 1, int(np.searchsorted(ends, limit, side="right")))
        counts = per_det[start:stop]
        total = int(counts.sum())
        if total:
            pair_det = np.repeat(np.arange(start, stop), counts)
            within = np.arange(total) - np.repeat(np.cumsum(counts) - counts, counts)
            pair_gt = gt_order[np.repeat(gt_start[det_image[start:stop]], counts) + within]
            width = np.minimum(det_box[2][pair_det], gt_box[2][pair_gt]) - np.maximum(
                det_box[0][pair_det], gt_box[0][pair_gt]
            )
            height = np.minimum(det_box[3][pair_det], gt_box[3][pair_gt]) - np.maximum(
                det_box[1][pair_det], gt_box[1][pair_gt]
            )
            keep = (width + 1.0 > 0) & (height + 1.0 > 0)
            if bound:
                a = det_area[pair_det]
                b = gt_area[pair_gt]
                overlap = np.minimum(np.maximum(width, 0.0) * np.maximum(height, 0.0), np.minimum(a, b))
                union = a + b - overlap
                upper = np.where(union > 0, overlap / np.where(union > 0, union, 1.0), 0.0)
                # (the bound holds for regions; polyiou's fan IoU of a bow-tie may exceed it)
                keep &= (upper >= floor) | det_fan[pair_det] | gt_fan[pair_gt]
            pair_det, pair_gt = pair_det[keep], pair_gt[keep]
            if len(pair_det):
                # simple pairs: the exact IoU; a bow-tie in the pair: polyiou's signed fan
                fan = det_fan[pair_det] | gt_fan[pair_gt]
                iou = np.empty(len(pair_det))
                if not fan.all():
                    iou[~fan] = poly_iou_pairwise(det_polys[pair_det[~fan]], gt_polys[pair_gt[~fan]])
                if fan.any():
                    iou[fan] = general_quad_iou(det_polys[pair_det[fan]], gt_polys[pair_gt[fan]])
                # pairs are grouped by detection, ground truths in input order inside a group
                group_start = np.flatnonzero(np.r_[True, pair_det[1:] != pair_det[:-1]])
                group_det = pair_det[group_start]
                group_max = np.maximum.reduceat(iou, group_start)
                sizes = np.diff(np.r_[group_start, len(pair_det)])
                at_max = np.flatnonzero(iou == np.repeat(group_max, sizes))
                _, first = np.unique(pair_det[at_max], return_index=True)
                best_iou[group_det] = group_max
                best_gt[group_det] = pair_gt[at_max[first]]
        start = stop
    return best_iou, best_gt


def _rank_and_match(det_image, det_scores, det_polys, gt, class_index, settings, exact_from=None):
    """Devkit-order matching of one class: a `RankedClass` (without image ids), its detections
    in rank order. exact_from: the IoU from which `best_iou` must be exact (default: the match
    threshold; the matching itself only needs IoUs at or above it)."""
    order = np.argsort(-det_scores)  # the devkit's call: its tie order, not a stable sort
    det_image, det_polys, det_scores = det_image[order], det_polys[order], det_scores[order]
    in_class = np.flatnonzero(gt.classes == class_index)
    gt_image = gt.image[in_class]
    gt_polys = gt.polygons[in_class]
    if settings["difficult"] == "ignore":
        gt_difficult = gt.difficult[in_class]
    else:
        gt_difficult = np.zeros(len(in_class), bool)
    num_positives = int(np.count_nonzero(~gt_difficult))

    threshold = settings["iou_threshold"]
    exact = threshold if exact_from is None else min(float(exact_from), threshold)
    best_iou, best_gt = _best_ground_truth(det_image, det_polys, gt_image, gt_polys, len(gt.image_ids), exact)
    matched = best_iou > threshold if settings["comparison"] == ">" else best_iou >= threshold
    hits_difficult = np.zeros(len(det_image), bool)
    hits_difficult[matched] = gt_difficult[best_gt[matched]]
    claims = np.flatnonzero(matched & ~hits_difficult)
    tp = np.zeros(len(det_image))
    # a free ground truth goes to the first ranked detection that claims it
    _, first_claim = np.unique(best_gt[claims], return_index=True)
    tp[claims[first_claim]] = 1.0
    fp = np.where(hits_difficult, 0.0, 1.0 - tp)
    return RankedClass(
        image_ids=det_image,
        scores=det_scores,
        polygons=det_polys,
        true_positive=tp.astype(bool),
        false_positive=fp.astype(bool),
        best_iou=best_iou,
        positives=num_positives,
    )


def ranked_matches(
    detections,
    ground_truths,
    class_names,
    *,
    exact_from=None,
    iou_threshold=None,
    comparison=None,
    difficult=None,
    preset=None,
):
    """Each class's detections in the devkit's rank order with their matching: dict class name
    -> `RankedClass` (image_ids as the ground truth's ids). Arguments as in
    `evaluate_detections`; exact_from: see `RankedClass.best_iou`. The TP / FP flags are the
    ones every AP here is computed from."""
    base = resolve_settings(preset, None, iou_threshold, comparison, difficult)
    class_names, gt, _, detections, keys = prepare_scoring_inputs(ground_truths, detections, class_names)
    image_ids = np.asarray(gt.image_ids, dtype=object)
    ranked = {}
    for class_index, name in enumerate(class_names):
        entries = detections[keys[name]] if name in keys else []
        det_image, det_scores, det_polys = _prepare_detections(entries, name, gt.image_index)
        matches = _rank_and_match(det_image, det_scores, det_polys, gt, class_index, base, exact_from)
        ranked[name] = dataclasses.replace(matches, image_ids=list(image_ids[matches.image_ids]))
    return ranked


def _pr_curve(tp, fp, num_positives):
    tp = np.cumsum(tp)
    fp = np.cumsum(fp)
    precision = tp / np.maximum(tp + fp, np.finfo(np.float64).eps)
    recall = tp / float(num_positives) if num_positives > 0 else np.zeros_like(tp)
    return recall, precision


def prepare_scoring_inputs(ground_truths, detections, class_names):
    """The inputs every AP metric starts from: (class names as str, prepared ground truths,
    counts of degenerate ground-truth polygons, detections or {}, the detections' key per class).
    Degenerate ground truth (no region) is kept as the devkit keeps it (a positive no detection
    can match), and counted. Raises ValueError on duplicate class names."""
    class_names = [str(name) for name in class_names]
    if len(set(class_names)) != len(class_names):
        raise ValueError(f"class_names has duplicates: {class_names}")
    gt = _prepare_ground_truths(ground_truths, class_names)
    degenerate = polygon_problem_counts(gt.polygons[gt.classes >= 0])
    detections = detections or {}
    return class_names, gt, degenerate, detections, _class_key_lookup(detections, class_names)


def _class_key_lookup(detections, class_names):
    """Detection dict keys (names, or indices into class_names) -> class name."""
    mapping = {}
    for key in detections:
        if isinstance(key, (int, np.integer)):
            if not 0 <= int(key) < len(class_names):
                raise ValueError(f"detections: class index {key} is outside the {len(class_names)} class names")
            name = class_names[int(key)]
        else:
            name = str(key)
            if name not in class_names:
                raise ValueError(f"detections: class {name!r} is not in the class list {list(class_names)}")
        if name in mapping.values():
            raise ValueError(f"detections: class {name!r} is given twice")
        mapping[key] = name
    return {name: key for key, name in mapping.items()}


def evaluate_all_metrics(
    detections,
    ground_truths,
    class_names,
    metrics=METRICS,
    *,
    iou_threshold=None,
    comparison=None,
    difficult=None,
    preset=None,
    mean_over="all",
):
    """Matches once and scores several AP metrics. Returns dict metric -> EvalResult.

    Arguments as in `evaluate_detections`; `metrics`: iterable of "voc07" / "voc12".
    """
    metrics = tuple(metrics)
    base = resolve_settings(preset, None, iou_threshold, comparison, difficult)
    for metric in metrics:
        resolve_settings(None, metric)
    if mean_over not in MEAN_MODES:
        raise ValueError(f"mean_over must be one of {MEAN_MODES}, got {mean_over!r}")
    class_names, gt, degenerate, detections, keys = prepare_scoring_inputs(ground_truths, detections, class_names)

    per_class = {metric: {} for metric in metrics}
    num_gt, num_det, curves = {}, {}, {}
    for class_index, name in enumerate(class_names):
        entries = detections[keys[name]] if name in keys else []
        det_image, det_scores, det_polys = _prepare_detections(entries, name, gt.image_index)
        matches = _rank_and_match(det_image, det_scores, det_polys, gt, class_index, base)
        tp, fp, positives = matches.true_positive, matches.false_positive, matches.positives
        recall, precision = _pr_curve(tp.astype(np.float64), fp.astype(np.float64), positives)
        num_gt[name] = positives
        num_det[name] = len(det_image)
        curves[name] = (recall, precision)
        for metric in metrics:
            ap = average_precision(recall, precision, metric) if len(tp) and positives else 0.0
            per_class[metric][name] = ap

    results = {}
    for metric in metrics:
        names = class_names if mean_over == "all" else [n for n in class_names if num_gt[n] > 0]
        values = [per_class[metric][n] for n in names]
        results[metric] = EvalResult(
            map=float(np.mean(values)) if values else 0.0,
            per_class=dict(per_class[metric]),
            num_gt=dict(num_gt),
            num_det=dict(num_det),
            pr_curves=dict(curves),
            metric=metric,
            iou_threshold=base["iou_threshold"],
            comparison=base["comparison"],
            difficult=base["difficult"],
            degenerate_gt=dict(degenerate),
        )
    return results


def evaluate_detections(
    detections,
    ground_truths,
    class_names,
    metric=None,
    iou_threshold=None,
    comparison=None,
    difficult=None,
    preset=None,
    mean_over="all",
):
    """Rotated-box AP per class and mAP, the DOTA devkit's Task1 evaluator by default.

    detections: dict class name (or index into class_names) -> list of
        (image_id, score, poly[8]) with poly in original image pixels, or the columnar form
        {"image_ids": [D], "scores": [D], "polygons": [D, 8]} (faster for large sets); classes
        missing from the dict have no detections (AP 0).
    ground_truths: list of ImageRecord (classes index class_names), or dict
        image_id -> (polygons [N, 8], class names or indices [N], difficult [N]). These images are
        the image set: a detection naming another image raises ValueError.
    class_names: the evaluated classes, in the order of the per-class table.
    metric: "voc07" (default) or "voc12"; iou_threshold: 0.5; comparison: ">" (default, the
        devkit's) or ">="; difficult: "ignore" (default) or "count".
    preset: None, "dota", "dota1.5", "hrsc07", "hrsc12" (explicit arguments win).
    mean_over: "all" classes (the devkit) or only those "with_gt".
    Returns: EvalResult.
    """
    settings = resolve_settings(preset, metric, iou_threshold, comparison, difficult)
    results = evaluate_all_metrics(
        detections,
        ground_truths,
        class_names,
        (settings["metric"],),
        iou_threshold=settings["iou_threshold"],
        comparison=settings["comparison"],
        difficult=settings["difficult"],
        mean_over=mean_over,
    )
    return results[settings["metric"]]
