"""One exact IoU for every simple quadrilateral (dked_tf.ops.iou), convex or not, against shapely
(GEOS) and hand-computed areas; zero-area and self-intersecting quadrilaterals give 0; the
evaluator, the NMS and the device runner use the same function."""

import importlib.util
import os

import numpy as np
import pytest
import shapely

from dked_tf.evaluation.metrics import evaluate_detections, general_quad_iou
from dked_tf.ops.iou import (
    SELF_INTERSECTING,
    VALID,
    ZERO_AREA,
    poly_iou,
    poly_iou_pairwise,
    quad_intersection_area,
    quad_validity,
)
from dked_tf.ops.nms import rotated_nms

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def shapely_classes(polys):
    """(valid, convex) per quadrilateral, by shapely."""
    shapes = shapely.polygons(np.asarray(polys, np.float64).reshape(-1, 4, 2))
    valid = shapely.is_valid(shapes) & (shapely.area(shapes) > 1e-9)
    convex = valid & np.isclose(shapely.area(shapely.convex_hull(shapes)), shapely.area(shapes), rtol=1e-12)
    return valid, convex


def shapely_pair_iou(a, b):
    pa = shapely.polygons(np.asarray(a, np.float64).reshape(-1, 4, 2))
    pb = shapely.polygons(np.asarray(b, np.float64).reshape(-1, 4, 2))
    inter = shapely.area(shapely.intersection(pa, pb))
    union = shapely.area(pa) + shapely.area(pb) - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1.0), 0.0)


def simple_non_convex(rng, count, spread=40.0):
    """Random quadrilaterals with one reflex vertex (darts and arrowheads), random placement."""
    out = []
    while len(out) < count:
        quads = rng.uniform(0, spread, (4 * count, 8)) + rng.uniform(0, 20, (4 * count, 1))
        valid, convex = shapely_classes(quads)
        out.extend(quads[valid & ~convex])
    return np.asarray(out[:count])


def convex_quads(rng, count, spread=40.0):
    out = []
    while len(out) < count:
        quads = rng.uniform(0, spread, (4 * count, 8))
        _, convex = shapely_classes(quads)
        out.extend(quads[convex])
    return np.asarray(out[:count])


def test_hand_computed_non_convex_overlaps():
    # an arrowhead (area 35 by the shoelace formula) inside the square 0..10: IoU 35 / 100;
    # the convex-only clipping returned the IoU of the hull-ish shape here
    arrow = np.array([[0, 0, 10, 0, 10, 10, 5, 2]], np.float64)
    square = np.array([[0, 0, 10, 0, 10, 10, 0, 10]], np.float64)
    assert poly_iou(arrow, square)[0, 0] == pytest.approx(0.35, abs=1e-12)
    assert quad_intersection_area(arrow, square)[0] == pytest.approx(35.0, abs=1e-12)
    # the arrow and its mirror image (x -> 10 - x): each is the square minus a cut-out of area 65
    # ((0,0),(5,2),(10,10),(0,10) and its mirror); the cut-outs overlap in the triangle
    # (5,2),(10,10),(0,10) of area 40, so arrow ∩ mirror = 100 - (65 + 65 - 40) = 10, union 60
    mirror = np.array([[10, 0, 0, 0, 0, 10, 5, 2]], np.float64)
    assert quad_intersection_area(arrow, mirror)[0] == pytest.approx(10.0, abs=1e-12)
    assert poly_iou_pairwise(arrow, mirror)[0] == pytest.approx(10.0 / 60.0, abs=1e-12)


def test_random_simple_quads_match_shapely(rng):
    concave = simple_non_convex(rng, 300)
    convex = convex_quads(rng, 300)
    a = np.concatenate([concave, convex, concave[:150]])
    b = np.concatenate([concave[::-1], convex[::-1], convex[:150]])
    b[:20] = a[:20]  # identical non-convex
    b[20:40] = a[20:40].reshape(-1, 4, 2)[:, ::-1].reshape(-1, 8)  # identical, other orientation
    expected = shapely_pair_iou(a, b)
    assert (expected > 0).sum() > 300
    np.testing.assert_allclose(poly_iou_pairwise(a, b), expected, atol=1e-10, rtol=0)
    np.testing.assert_allclose(poly_iou(a[250:350], b[250:330]), _matrix(a[250:350], b[250:330]), atol=1e-10, rtol=0)
    np.testing.assert_allclose(poly_iou_pairwise(a[:40], b[:40])[:20], 1.0, atol=1e-12)


def _matrix(a, b):
    rows, cols = np.meshgrid(np.arange(len(a)), np.arange(len(b)), indexing="ij")
    return shapely_pair_iou(a[rows.ravel()], b[cols.ravel()]).reshape(len(a), len(b))


def test_any_vertex_order_and_huge_coordinates(rng):
    a, b = simple_non_convex(rng, 200), simple_non_convex(rng, 200)
    expected = shapely_pair_iou(a, b)
    points = b.reshape(-1, 4, 2)
    shifted = np.stack([np.roll(p, k, axis=0) for p, k in zip(points, rng.integers(0, 4, len(points)))])
    reversed_ = shifted[:, ::-1]
    np.testing.assert_allclose(poly_iou_pairwise(a, shifted.reshape(-1, 8)), expected, atol=1e-10)
    np.testing.assert_allclose(poly_iou_pairwise(a, reversed_.reshape(-1, 8)), expected, atol=1e-10)
    offset = np.tile([1.0e6, 2.0e6], 4)
    np.testing.assert_allclose(poly_iou_pairwise(a + offset, b + offset), expected, atol=1e-7)


def test_validity_codes_agree_with_shapely(rng):
    quads = rng.uniform(0, 50, (3000, 8))  # about a third are bow-ties
    codes = quad_validity(quads)
    valid, _ = shapely_classes(quads)
    np.testing.assert_array_equal(codes == VALID, valid)
    assert (codes == SELF_INTERSECTING).sum() > 500
    hand = np.array(
        [
            [3, 3, 3, 3, 3, 3, 3, 3],  # one point
            [0, 0, 10, 10, 20, 20, 5, 5],  # collinear
            [0, 0, 10, 10, 10, 0, 0, 10],  # bow-tie
            [0, 0, 10, 0, 10, 0, 0, 10],  # a triangle with a repeated vertex: a region
            [0, 0, 10, 0, 10, 10, 5, 2],  # arrowhead
        ],
        np.float64,
    )
    assert quad_validity(hand).tolist() == [ZERO_AREA, ZERO_AREA, SELF_INTERSECTING, VALID, VALID]


def test_degenerate_quads_have_iou_zero(rng):
    square = np.array([0, 0, 10, 0, 10, 10, 0, 10], np.float64)
    bad = np.array(
        [
            [5, 5, 5, 5, 5, 5, 5, 5],
            [0, 0, 5, 5, 10, 10, 2, 2],
            [0, 0, 10, 10, 10, 0, 0, 10],  # symmetric bow-tie across the square
            [0, 0, 10, 10, 10, 0, 0, 10],
        ],
        np.float64,
    )
    other = np.stack([square, square, square, bad[3]])
    assert poly_iou_pairwise(bad, other).tolist() == [0.0, 0.0, 0.0, 0.0]
    assert quad_intersection_area(bad, other).tolist() == [0.0, 0.0, 0.0, 0.0]
    assert poly_iou(bad, np.stack([square])).ravel().tolist() == [0.0] * 4
    # a triangle given with a repeated vertex is a region: half the square
    triangle = np.array([[0, 0, 10, 0, 10, 0, 0, 10]], np.float64)
    assert poly_iou(triangle, square[None])[0, 0] == pytest.approx(0.5, abs=1e-12)


def test_evaluation_shares_the_iou_and_keeps_the_devkit_fan_for_bow_ties(rng):
    a, b = simple_non_convex(rng, 200), convex_quads(rng, 200)
    # simple quadrilaterals: polyiou's signed fan is the exact IoU, the same number
    np.testing.assert_allclose(general_quad_iou(a, b), poly_iou_pairwise(a, b), atol=1e-10)
    np.testing.assert_allclose(general_quad_iou(a, b), shapely_pair_iou(a, b), atol=1e-10)
    # a bow-tie keeps polyiou's signed fan (the devkit's number), by hand: (0,0),(10,10),(10,0),
    # (0,10) has signed area 0, its left lobe (0,0),(5,5),(0,10) winds +1 (area 25) and its right
    # lobe -1; the box 0..5 x 0..10 holds the left lobe: intersection +25, union 0 + 50 - 25
    bow_tie = np.array([[0, 0, 10, 10, 10, 0, 0, 10]], np.float64)
    left = np.array([[0, 0, 5, 0, 5, 10, 0, 10]], np.float64)
    assert general_quad_iou(bow_tie, left)[0] == pytest.approx(1.0, abs=1e-12)
    assert poly_iou_pairwise(bow_tie, left)[0] == 0.0  # not a region for the package
    # the evaluator goes the same way: the bow-tie ground truth is matched by its fan IoU
    gts = {"i": (bow_tie, ["a"], [False])}
    assert evaluate_detections({"a": [("i", 0.9, left[0])]}, gts, ["a"]).map == pytest.approx(1.0)


def shapely_greedy_nms(polys, scores, threshold):
    shapes = shapely.polygons(polys.reshape(-1, 4, 2))
    areas = shapely.area(shapes)
    order = np.argsort(-scores, kind="stable")
    keep = []
    for i in order:
        if all(
            shapely.area(shapely.intersection(shapes[i], shapes[k]))
            <= threshold * (areas[i] + areas[k] - shapely.area(shapely.intersection(shapes[i], shapes[k])))
            for k in keep
        ):
            keep.append(i)
    return np.asarray(keep)


def test_nms_suppresses_by_the_exact_non_convex_iou(rng):
    polys = simple_non_convex(rng, 120, spread=25.0)
    scores = rng.permutation(len(polys)) / len(polys) + 0.01
    for threshold in (0.1, 0.3, 0.5):
        np.testing.assert_array_equal(
            rotated_nms(polys, scores, threshold), shapely_greedy_nms(polys, scores, threshold)
        )


def test_device_runner_iou_is_the_package_function(rng):
    spec = importlib.util.spec_from_file_location("detect_for_iou_test", os.path.join(REPO, "tflite", "detect.py"))
    detect = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(detect)
    a = simple_non_convex(rng, 60)
    got = detect.polygon_iou_one_to_many(a[0], a)
    np.testing.assert_allclose(got, shapely_pair_iou(np.broadcast_to(a[0], a.shape), a), atol=1e-10)
    scores = rng.permutation(len(a)) / len(a) + 0.01
    np.testing.assert_array_equal(detect.rotated_nms(a, scores, 0.2), rotated_nms(a, scores, 0.2))
