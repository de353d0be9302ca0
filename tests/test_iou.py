"""Polygon IoU of dked_tf.ops.iou against shapely and hand-computed cases."""

import math

import numpy as np
import pytest
import shapely

from dked_tf.ops import obb
from dked_tf.ops.iou import poly_iou, poly_iou_pairwise, poly_iou_pairwise_tf, poly_iou_tf


def shapely_iou(a, b):
    """Reference IoU matrix [N, M] with shapely (GEOS)."""
    pa = shapely.polygons(np.asarray(a, dtype=float).reshape(-1, 4, 2))
    pb = shapely.polygons(np.asarray(b, dtype=float).reshape(-1, 4, 2))
    inter = shapely.area(shapely.intersection(pa[:, None], pb[None, :]))
    union = shapely.area(pa)[:, None] + shapely.area(pb)[None, :] - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1), 0)


def random_rects(rng, count, extent=128.0, size=(4.0, 48.0)):
    rboxes = np.stack(
        [
            rng.uniform(0, extent, count),
            rng.uniform(0, extent, count),
            rng.uniform(*size, count),
            rng.uniform(*size, count),
            rng.uniform(-math.pi, math.pi, count),
        ],
        axis=-1,
    )
    return obb.rbox_to_poly(rboxes)


def convex_perturbed(rng, count):
    """Rectangles with jittered corners, kept only where the result is still convex."""
    polys = random_rects(rng, 3 * count, size=(12.0, 48.0)) + rng.normal(0, 1.5, (3 * count, 8))
    shapes = shapely.polygons(polys.reshape(-1, 4, 2))
    convex = shapely.is_valid(shapes) & np.isclose(
        shapely.area(shapely.convex_hull(shapes)), shapely.area(shapes), rtol=1e-12
    )
    return polys[convex][:count]


def reorder(polys, rng):
    points = polys.reshape(-1, 4, 2).copy()
    for i in range(len(points)):
        points[i] = np.roll(points[i], rng.integers(4), axis=0)
        if rng.random() < 0.5:
            points[i] = points[i][::-1]
    return points.reshape(-1, 8)


SQUARE = np.array([0, 0, 4, 0, 4, 4, 0, 4], dtype=float)


def test_random_rotated_rectangles_match_shapely(rng):
    a, b = random_rects(rng, 120), random_rects(rng, 90)
    expected = shapely_iou(a, b)
    assert (expected > 0).sum() > 200  # the test exercises real overlaps
    np.testing.assert_allclose(poly_iou(a, b), expected, atol=1e-10, rtol=0)


def test_perturbed_convex_quads_match_shapely(rng):
    a, b = convex_perturbed(rng, 100), convex_perturbed(rng, 100)
    np.testing.assert_allclose(poly_iou(a, b), shapely_iou(a, b), atol=1e-10, rtol=0)


def test_vertex_order_does_not_matter(rng):
    a, b = random_rects(rng, 60), convex_perturbed(rng, 60)
    expected = shapely_iou(a, b)
    np.testing.assert_allclose(poly_iou(reorder(a, rng), reorder(b, rng)), expected, atol=1e-10, rtol=0)


def test_hand_cases():
    inner = np.array([1, 1, 3, 1, 3, 3, 1, 3], dtype=float)  # concentric, contained: 4/16
    assert poly_iou_pairwise([SQUARE], [inner])[0] == pytest.approx(0.25, abs=1e-12)
    right = SQUARE + np.array([4, 0] * 4)  # shares an edge: 0
    corner = SQUARE + np.array([4, 4] * 4)  # shares a corner: 0
    half = SQUARE + np.array([2, 0] * 4)  # collinear edges overlapping: 8 / 24
    identical_cw = SQUARE.reshape(4, 2)[::-1].ravel()
    got = poly_iou([SQUARE], [right, corner, half, SQUARE, identical_cw])[0]
    np.testing.assert_allclose(got, [0, 0, 1 / 3, 1, 1], atol=1e-12)
    # diamond inside the square: area 8 / 16
    diamond = np.array([2, 0, 4, 2, 2, 4, 0, 2], dtype=float)
    assert poly_iou([SQUARE], [diamond])[0, 0] == pytest.approx(0.5, abs=1e-12)


def test_rotated_touching_and_identical(rng):
    rboxes = np.array([[50, 50, 30, 10, 0.5]])
    shift = 10 * np.array([-math.sin(0.5), math.cos(0.5)])  # one box height across the long side
    neighbour = rboxes.copy()
    neighbour[0, :2] += shift
    a, b = obb.rbox_to_poly(rboxes), obb.rbox_to_poly(neighbour)
    assert poly_iou(a, b)[0, 0] == pytest.approx(0.0, abs=1e-9)
    rects = random_rects(rng, 50)
    np.testing.assert_allclose(poly_iou_pairwise(rects, reorder(rects, rng)), 1.0, atol=1e-12)


def test_large_coordinates_keep_precision(rng):
    a, b = random_rects(rng, 60), random_rects(rng, 60)
    offset = np.array([1e6, 1e6] * 4)
    np.testing.assert_allclose(poly_iou(a + offset, b + offset), shapely_iou(a, b), atol=1e-8, rtol=0)


def test_pairwise_is_the_diagonal(rng):
    a, b = random_rects(rng, 80), random_rects(rng, 80)
    np.testing.assert_allclose(poly_iou_pairwise(a, b), np.diag(shapely_iou(a, b)), atol=1e-10, rtol=0)


def test_degenerate_and_empty_inputs():
    line = np.array([0, 0, 4, 0, 4, 0, 0, 0], dtype=float)
    point = np.full(8, 2.0)
    got = poly_iou([line, point, SQUARE], [SQUARE, line])
    assert np.all(np.isfinite(got))
    np.testing.assert_allclose(got, [[0, 0], [0, 0], [1, 0]])
    assert poly_iou(np.zeros((0, 8)), [SQUARE]).shape == (0, 1)


def test_bad_inputs_raise_clear_errors():
    with pytest.raises(ValueError, match=r"\[N, 8\]"):
        poly_iou(np.zeros((3, 7)), np.zeros((2, 8)))
    with pytest.raises(ValueError, match=r"\[N, 8\]"):
        poly_iou(np.zeros(8), np.zeros((2, 8)))
    with pytest.raises(ValueError, match="dtype"):
        poly_iou([["x"] * 8], [SQUARE])
    bad = np.tile(SQUARE, (4, 1))
    bad[3, 0] = np.inf
    with pytest.raises(ValueError, match="b: row 3"):
        poly_iou([SQUARE], bad)
    with pytest.raises(ValueError, match="both be"):
        poly_iou_pairwise(np.zeros((2, 8)), np.zeros((3, 8)))


def test_tf_matches_numpy_in_tf_function(rng):
    import tensorflow as tf

    a = np.concatenate([random_rects(rng, 40), [SQUARE, SQUARE + np.array([4, 0] * 4)]])
    b = np.concatenate([random_rects(rng, 30), [SQUARE, np.array([0, 0, 4, 0, 4, 0, 0, 0.0])]])

    @tf.function(input_signature=[tf.TensorSpec([None, 8], tf.float32)] * 2)
    def matrix(x, y):
        return poly_iou_tf(x, y)

    got = matrix(tf.constant(a, tf.float32), tf.constant(b, tf.float32)).numpy()
    assert got.shape == (42, 32) and np.all(np.isfinite(got))
    np.testing.assert_allclose(got, poly_iou(a, b), atol=2e-4)
    assert got[40, 30] == pytest.approx(1.0, abs=1e-5)  # identical
    assert got[41, 30] == pytest.approx(0.0, abs=1e-5)  # touching
    assert got[40, 31] == 0.0  # degenerate
    with pytest.raises(ValueError, match=r"\[\.\.\., 8\]"):
        poly_iou_tf(tf.zeros([3, 7]), tf.zeros([2, 8]))
    pairwise = poly_iou_pairwise_tf(tf.constant(a[:30], tf.float32), tf.constant(b[:30], tf.float32))
    np.testing.assert_allclose(pairwise.numpy(), poly_iou_pairwise(a[:30], b[:30]), atol=2e-4)
