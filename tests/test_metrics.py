"""dked_tf.evaluation.metrics against hand-computed AP values and a plain loop evaluator
written here (shapely IoU, one detection at a time, as the DOTA devkit's voc_eval)."""

import numpy as np
import pytest
from scoring_cases import gt_dict, rect, square
from shapely.geometry import Polygon

from dked_tf.data.records import ImageRecord
from dked_tf.evaluation.metrics import (
    EvalResult,
    average_precision,
    evaluate_all_metrics,
    evaluate_detections,
)

# ---------------------------------------------------------------------------- hand-computed


def both(dets, gts, classes=("a",), **kw):
    r07 = evaluate_detections(dets, gts, list(classes), metric="voc07", **kw)
    r12 = evaluate_detections(dets, gts, list(classes), metric="voc12", **kw)
    return r07, r12


def test_perfect_detections_give_one():
    gts = gt_dict(
        ("i1", [(square(0, 0, 10, 10), "a", 0), (square(20, 20, 40, 30), "a", 0)]),
        ("i2", [(square(5, 5, 15, 15), "a", 0)]),
    )
    dets = {
        "a": [("i1", 0.9, square(0, 0, 10, 10)), ("i1", 0.8, square(20, 20, 40, 30)), ("i2", 0.7, square(5, 5, 15, 15))]
    }
    r07, r12 = both(dets, gts)
    assert r07.map == pytest.approx(1.0) and r12.map == pytest.approx(1.0)
    assert r07.num_gt == {"a": 3} and r07.num_det == {"a": 3}
    assert isinstance(r07, EvalResult)


def test_all_false_detections_give_zero():
    gts = gt_dict(("i1", [(square(0, 0, 10, 10), "a", 0)]))
    dets = {"a": [("i1", 0.9, square(50, 50, 60, 60)), ("i1", 0.5, square(0, 0, 10, 3))]}
    r07, r12 = both(dets, gts)
    assert r07.map == 0.0 and r12.map == 0.0


def test_one_miss():
    gts = gt_dict(("i1", [(square(0, 0, 10, 10), "a", 0), (square(20, 20, 30, 30), "a", 0)]))
    dets = {"a": [("i1", 0.9, square(0, 0, 10, 10))]}
    r07, r12 = both(dets, gts)
    # recall 0.5 at precision 1: 6 of the 11 points (0, 0.1, ..., 0.5), area 0.5
    assert r07.map == pytest.approx(6 / 11)
    assert r12.map == pytest.approx(0.5)


def test_duplicates_count_as_false_positives():
    gts = gt_dict(("i1", [(square(0, 0, 10, 10), "a", 0), (square(20, 20, 30, 30), "a", 0)]))
    dets = {
        "a": [
            ("i1", 0.9, square(0, 0, 10, 10)),
            ("i1", 0.8, square(0, 0, 10, 9.5)),
            ("i1", 0.7, square(20, 20, 30, 30)),
        ]
    }
    r07, r12 = both(dets, gts)
    # TP, FP (duplicate), TP: recall .5 .5 1, precision 1 .5 2/3
    assert r12.map == pytest.approx(0.5 * 1 + 0.5 * 2 / 3)
    assert r07.map == pytest.approx((6 * 1 + 5 * 2 / 3) / 11)
    recall, precision = r12.pr_curves["a"]
    np.testing.assert_allclose(recall, [0.5, 0.5, 1.0])
    np.testing.assert_allclose(precision, [1.0, 0.5, 2 / 3])


def test_difficult_only_image_is_neither_tp_nor_fp():
    gts = gt_dict(("easy", [(square(0, 0, 10, 10), "a", 0)]), ("hard", [(square(0, 0, 10, 10), "a", 1)]))
    dets = {"a": [("hard", 0.95, square(0, 0, 10, 10)), ("easy", 0.9, square(0, 0, 10, 10))]}
    r07, r12 = both(dets, gts)
    assert r07.map == pytest.approx(1.0) and r12.map == pytest.approx(1.0)
    assert r07.num_gt == {"a": 1}
    # a missed difficult object: ignored by default, a miss when counted
    dets = {"a": [("easy", 0.9, square(0, 0, 10, 10))]}
    assert evaluate_detections(dets, gts, ["a"], metric="voc12").map == pytest.approx(1.0)
    counted = evaluate_detections(dets, gts, ["a"], metric="voc12", difficult="count")
    assert counted.map == pytest.approx(0.5) and counted.num_gt == {"a": 2}


def test_best_match_on_difficult_ground_truth_is_ignored():
    # the detection overlaps the easy box at IoU 9/11 > 0.5, but the difficult one best (1.0):
    # the devkit ignores it, so the easy box stays unmatched
    gts = gt_dict(("i1", [(square(0, 0, 10, 10), "a", 0), (square(1, 0, 11, 10), "a", 1)]))
    dets = {"a": [("i1", 0.9, square(1, 0, 11, 10))]}
    assert evaluate_detections(dets, gts, ["a"], metric="voc12").map == 0.0
    assert evaluate_detections(dets, gts, ["a"], metric="voc12", difficult="count").map == pytest.approx(0.5)


def test_tied_scores_keep_the_devkit_order():
    gts = gt_dict(("i1", [(square(0, 0, 10, 10), "a", 0)]))
    false, true = ("i1", 0.5, square(30, 30, 40, 40)), ("i1", 0.5, square(0, 0, 10, 10))
    # np.argsort(-scores) keeps input order for two tied scores: FP then TP vs TP then FP
    assert evaluate_detections({"a": [false, true]}, gts, ["a"], metric="voc12").map == pytest.approx(0.5)
    assert evaluate_detections({"a": [true, false]}, gts, ["a"], metric="voc12").map == pytest.approx(1.0)


def test_iou_exactly_at_threshold_depends_on_comparison():
    gts = gt_dict(("i1", [(square(0, 0, 10, 10), "a", 0)]))
    dets = {"a": [("i1", 0.9, square(0, 0, 10, 5))]}  # IoU = 50 / 100 = 0.5 exactly
    assert evaluate_detections(dets, gts, ["a"]).map == 0.0
    assert evaluate_detections(dets, gts, ["a"], comparison=">=").map == pytest.approx(1.0)
    assert evaluate_detections(dets, gts, ["a"], iou_threshold=0.4).map == pytest.approx(1.0)


def test_classes_without_detections_or_ground_truth_score_zero_and_count_in_the_mean():
    gts = gt_dict(("i1", [(square(0, 0, 10, 10), "a", 0), (square(20, 0, 30, 10), "b", 0)]))
    dets = {"a": [("i1", 0.9, square(0, 0, 10, 10))], "c": [("i1", 0.9, square(50, 0, 60, 9))]}
    result = evaluate_detections(dets, gts, ["a", "b", "c"], metric="voc12")
    assert result.per_class == {"a": 1.0, "b": 0.0, "c": 0.0}
    assert result.map == pytest.approx(1 / 3)
    with_gt = evaluate_detections(dets, gts, ["a", "b", "c"], metric="voc12", mean_over="with_gt")
    assert with_gt.map == pytest.approx(0.5)
    assert np.isfinite(result.map)


def test_image_records_and_class_indices_are_accepted():
    records = [
        ImageRecord("x.png", "i1", 64, 64, [square(0, 0, 10, 10), square(20, 0, 30, 10)], [0, 1], [False, False])
    ]
    dets = {0: [("i1", 0.9, square(0, 0, 10, 10))], "b": [("i1", 0.8, square(20, 0, 30, 10))]}
    assert evaluate_detections(dets, records, ["a", "b"]).map == pytest.approx(1.0)


def test_presets():
    gts = gt_dict(("i1", [(square(0, 0, 10, 10), "ship", 0), (square(20, 0, 30, 10), "ship", 0)]))
    dets = {"ship": [("i1", 0.9, square(0, 0, 10, 10))]}
    assert evaluate_detections(dets, gts, ["ship"], preset="hrsc07").map == pytest.approx(6 / 11)
    assert evaluate_detections(dets, gts, ["ship"], preset="hrsc12").map == pytest.approx(0.5)
    # explicit arguments win over the preset
    assert evaluate_detections(dets, gts, ["ship"], preset="hrsc12", metric="voc07").metric == "voc07"


def test_bad_inputs_raise_clear_errors():
    gts = gt_dict(("i1", [(square(0, 0, 10, 10), "a", 0)]))
    with pytest.raises(ValueError, match="'nowhere'"):
        evaluate_detections({"a": [("nowhere", 0.9, square(0, 0, 10, 10))]}, gts, ["a"])
    with pytest.raises(ValueError, match="non-finite"):
        evaluate_detections({"a": [("i1", float("nan"), square(0, 0, 10, 10))]}, gts, ["a"])
    with pytest.raises(ValueError, match="non-finite"):
        evaluate_detections({"a": [("i1", 0.5, square(0, 0, np.inf, 10))]}, gts, ["a"])
    with pytest.raises(ValueError, match="'zebra' is not in the class list"):
        evaluate_detections({"zebra": []}, gts, ["a"])
    with pytest.raises(ValueError, match="8 numbers"):
        evaluate_detections({"a": [("i1", 0.5, [1, 2, 3])]}, gts, ["a"])
    with pytest.raises(ValueError, match="metric"):
        evaluate_detections({}, gts, ["a"], metric="coco")
    with pytest.raises(ValueError, match="preset"):
        evaluate_detections({}, gts, ["a"], preset="nope")


# ---------------------------------------------------------------------------- vs a loop evaluator


def loop_iou(p, q):
    a, b = Polygon(p.reshape(4, 2)), Polygon(q.reshape(4, 2))
    inter = a.intersection(b).area
    union = a.area + b.area - inter
    return inter / union if union > 0 else 0.0


def loop_ap(rec, prec, use_07):
    if use_07:
        total = 0.0
        for t in np.arange(0.0, 1.1, 0.1):
            total += (np.max(prec[rec >= t]) if np.sum(rec >= t) else 0.0) / 11.0
        return total
    mrec = np.concatenate(([0.0], rec, [1.0]))
    mpre = np.concatenate(([0.0], prec, [0.0]))
    for i in range(len(mpre) - 1, 0, -1):
        mpre[i - 1] = max(mpre[i - 1], mpre[i])
    idx = np.where(mrec[1:] != mrec[:-1])[0]
    return float(np.sum((mrec[idx + 1] - mrec[idx]) * mpre[idx + 1]))


def loop_evaluate(dets, gts, classes, use_07):
    aps = {}
    for name in classes:
        per_image, npos = {}, 0
        for image_id, (polys, names, diff) in gts.items():
            keep = [k for k, n in enumerate(names) if n == name]
            per_image[image_id] = {"polys": polys[keep], "difficult": diff[keep], "taken": [False] * len(keep)}
            npos += int(np.sum(~diff[keep]))
        entries = dets.get(name, [])
        if not entries or npos == 0:
            aps[name] = 0.0
            continue
        scores = np.array([e[1] for e in entries])
        order = np.argsort(-scores)
        tp, fp = np.zeros(len(order)), np.zeros(len(order))
        for d, k in enumerate(order):
            image_id, _, poly = entries[k]
            g = per_image[image_id]
            best, best_j = -np.inf, -1
            for j, gpoly in enumerate(g["polys"]):
                iou = loop_iou(np.asarray(poly), gpoly)
                if iou > best:
                    best, best_j = iou, j
            if best > 0.5:
                if not g["difficult"][best_j]:
                    if not g["taken"][best_j]:
                        tp[d], g["taken"][best_j] = 1, True
                    else:
                        fp[d] = 1
            else:
                fp[d] = 1
        tp, fp = np.cumsum(tp), np.cumsum(fp)
        rec = tp / npos
        prec = tp / np.maximum(tp + fp, np.finfo(np.float64).eps)
        aps[name] = loop_ap(rec, prec, use_07)
    return aps


def random_set(rng, classes, num_images=15):
    gts, dets = {}, {c: [] for c in classes}
    for i in range(num_images):
        image_id = f"img{i}"
        objects = []
        for _ in range(rng.integers(0, 7)):
            params = np.r_[rng.uniform(20, 120, 2), rng.uniform(6, 40, 2), rng.uniform(-3, 3)]
            name = classes[rng.integers(len(classes))]
            objects.append((rect(*params), name, rng.random() < 0.15))
            for _ in range(rng.integers(0, 4)):  # detections near the object
                noisy = params + rng.normal(0, rng.choice([0.5, 3.0, 8.0]), 5) * [1, 1, 1, 1, 0.05]
                dets[name].append((image_id, float(np.round(rng.random(), 1)), rect(*noisy)))
        for _ in range(rng.integers(0, 3)):  # background false positives
            params = np.r_[rng.uniform(20, 120, 2), rng.uniform(6, 40, 2), rng.uniform(-3, 3)]
            dets[classes[rng.integers(len(classes))]].append((image_id, float(rng.random()), rect(*params)))
        gts[image_id] = gt_dict((image_id, objects))[image_id] if objects else (np.zeros((0, 8)), [], np.zeros(0, bool))
    return gts, dets


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_equal_to_a_loop_evaluator_on_random_sets(seed):
    rng = np.random.default_rng(seed)
    classes = ["a", "b", "c"]
    gts, dets = random_set(rng, classes)
    results = evaluate_all_metrics(dets, gts, classes, ("voc07", "voc12"))
    for metric, use_07 in (("voc07", True), ("voc12", False)):
        expected = loop_evaluate(dets, gts, classes, use_07)
        for name in classes:
            assert results[metric].per_class[name] == pytest.approx(expected[name], abs=1e-9)
        assert results[metric].map == pytest.approx(np.mean(list(expected.values())), abs=1e-9)


def test_average_precision_thresholds_are_the_devkits():
    # np.arange(0, 1.1, 0.1)[3] is 0.30000000000000004: recall exactly 0.3 does not reach it
    recall, precision = np.array([0.3]), np.array([1.0])
    assert average_precision(recall, precision, "voc07") == pytest.approx(3 / 11)
    assert average_precision(recall, precision, "voc12") == pytest.approx(0.3)


# ---------------------------------------------------------------------------- non-convex input


def test_general_quad_iou_equals_shapely_on_simple_non_convex_quads(rng):
    from dked_tf.evaluation.metrics import general_quad_iou

    # darts: a triangle with its 4th vertex pushed inside (simple, concave), random placement
    count = 200
    centre = rng.uniform(0, 100, (count, 1, 2))
    angle = rng.uniform(0, 2 * np.pi, (count, 1))
    radius = rng.uniform(5, 30, (count, 1))
    corners = (
        np.stack([np.cos(angle + [0, 2.1, 3.1, 4.2]), np.sin(angle + [0, 2.1, 3.1, 4.2])], axis=-1) * radius[..., None]
    )
    corners[:, 2] *= 0.2  # pull the 3rd vertex towards the centre: concave
    a = (centre + corners).reshape(count, 8)
    b = a + rng.normal(0, 4, a.shape)
    expected = np.array([loop_iou(p, q) if Polygon(q.reshape(4, 2)).is_valid else np.nan for p, q in zip(a, b)])
    ours = general_quad_iou(a, b)
    valid = np.isfinite(expected)
    assert valid.sum() > 100
    np.testing.assert_allclose(ours[valid], expected[valid], atol=1e-9)
    # order-invariant, and a symmetric bow-tie has zero signed area: IoU 0 with anything
    np.testing.assert_allclose(general_quad_iou(a[:, [6, 7, 4, 5, 2, 3, 0, 1]], b), ours, atol=1e-9)
    bow_tie = np.array([[0, 0, 10, 10, 10, 0, 0, 10]], np.float64)
    assert general_quad_iou(bow_tie, square(0, 0, 10, 10)[None])[0] == pytest.approx(0.0)


def test_non_convex_ground_truth_uses_the_true_overlap():
    # concave ground truth (area 35) inside the square (0,0)-(10,10): their IoU is 0.35, while
    # the IoU of the convex hulls (a triangle of area 50 and the square) would be 0.5
    arrow = np.array([0, 0, 10, 0, 10, 10, 5, 2], np.float64)
    hull = square(0, 0, 10, 10)
    area = Polygon(arrow.reshape(4, 2)).area
    gts = gt_dict(("i1", [(arrow, "a", 0)]))
    # the same arrow is a perfect match; the square has IoU area/100 < 0.5 with it
    assert evaluate_detections({"a": [("i1", 0.9, arrow[[4, 5, 6, 7, 0, 1, 2, 3]])]}, gts, ["a"]).map == pytest.approx(
        1.0
    )
    assert area / 100 < 0.5
    assert evaluate_detections({"a": [("i1", 0.9, hull)]}, gts, ["a"]).map == 0.0
