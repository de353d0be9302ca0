"""Box Gaussians and probabilistic IoU (dked_tf.ops.gaussian) against independent references:
rectangle closed forms, shapely-rasterised moments and the Bhattacharyya distance in numpy."""

import numpy as np
import pytest
import shapely
import tensorflow as tf

from dked_tf.losses.assign import encode_targets
from dked_tf.losses.jol import box_terms, gliding_quadrilateral, jol_loss, per_cell_terms
from dked_tf.ops.gaussian import hellinger_distance_tf, polygon_gaussian_tf, probiou_tf


def rectangle(cx, cy, length, width, theta):
    u = np.array([np.cos(theta), np.sin(theta)]) * length / 2
    v = np.array([-np.sin(theta), np.cos(theta)]) * width / 2
    centre = np.array([cx, cy])
    return np.concatenate([centre - u - v, centre + u - v, centre + u + v, centre - u + v])


def rectangle_covariance(length, width, theta):
    rot = np.array([[np.cos(theta), -np.sin(theta)], [np.sin(theta), np.cos(theta)]])
    return rot @ np.diag([length**2 / 12.0, width**2 / 12.0]) @ rot.T


def bhattacharyya_hellinger(mean1, cov1, mean2, cov2):
    cov = 0.5 * (cov1 + cov2)
    diff = mean1 - mean2
    distance = 0.125 * diff @ np.linalg.inv(cov) @ diff + 0.5 * np.log(
        np.linalg.det(cov) / np.sqrt(np.linalg.det(cov1) * np.linalg.det(cov2))
    )
    return np.sqrt(1.0 - np.exp(-distance))


@pytest.mark.parametrize("theta", [0.0, 0.3, 1.2, -2.0])
def test_rectangle_moments_match_the_closed_form(theta):
    poly = rectangle(512.0, 300.0, 60.0, 7.0, theta)
    mean, cov = polygon_gaussian_tf(poly[None].astype(np.float32))
    expected = rectangle_covariance(60.0, 7.0, theta)
    np.testing.assert_allclose(mean.numpy()[0], [512.0, 300.0], atol=1e-3)
    np.testing.assert_allclose(cov.numpy()[0], [expected[0, 0], expected[1, 1], expected[0, 1]], rtol=2e-4, atol=2e-3)
    # the other orientation gives the same moments
    reversed_poly = poly.reshape(4, 2)[::-1].reshape(-1)
    mean_r, cov_r = polygon_gaussian_tf(reversed_poly[None].astype(np.float32))
    np.testing.assert_allclose(cov_r.numpy(), cov.numpy(), rtol=1e-4, atol=1e-3)
    np.testing.assert_allclose(mean_r.numpy(), mean.numpy(), atol=1e-3)


def test_general_quadrilateral_moments_match_rasterised_shapely():
    poly = np.array([10.0, 12.0, 41.0, 5.0, 47.0, 30.0, 8.0, 36.0])
    polygon = shapely.Polygon(poly.reshape(4, 2))
    step = 0.05
    xs, ys = np.meshgrid(np.arange(0, 50, step) + step / 2, np.arange(0, 40, step) + step / 2)
    inside = shapely.contains_xy(polygon, xs, ys)
    px, py = xs[inside], ys[inside]
    expected_mean = [px.mean(), py.mean()]
    expected_cov = [px.var(), py.var(), np.mean((px - px.mean()) * (py - py.mean()))]
    mean, cov = polygon_gaussian_tf(poly[None].astype(np.float32))
    np.testing.assert_allclose(mean.numpy()[0], expected_mean, atol=0.01)
    np.testing.assert_allclose(cov.numpy()[0], expected_cov, rtol=0.01)
    np.testing.assert_allclose([polygon.centroid.x, polygon.centroid.y], mean.numpy()[0], atol=1e-3)


def test_hellinger_matches_numpy_bhattacharyya():
    rng = np.random.default_rng(0)
    for _ in range(20):
        a = (rng.uniform(0, 100), rng.uniform(0, 100), rng.uniform(4, 80), rng.uniform(2, 20), rng.uniform(-3, 3))
        b = (a[0] + rng.normal(0, 5), a[1] + rng.normal(0, 5), a[2] * rng.uniform(0.7, 1.3), a[3], a[4] + rng.normal())
        expected = bhattacharyya_hellinger(
            np.array(a[:2]), rectangle_covariance(*a[2:]), np.array(b[:2]), rectangle_covariance(*b[2:])
        )
        got = 1.0 - probiou_tf(rectangle(*a)[None].astype(np.float32), rectangle(*b)[None].astype(np.float32))
        assert got.numpy()[0] == pytest.approx(expected, abs=2e-3)


def test_probiou_is_one_for_the_same_box_and_falls_with_a_turn_of_a_slender_box():
    box = rectangle(50, 50, 60, 7, 0.4)
    same = probiou_tf(box[None].astype(np.float32), box[None].astype(np.float32)).numpy()[0]
    assert same > 0.999
    turned_slender = probiou_tf(box[None], rectangle(50, 50, 60, 7, 0.6)[None].astype(np.float32)).numpy()[0]
    square = rectangle(50, 50, 20, 20, 0.4)
    turned_square = probiou_tf(square[None], rectangle(50, 50, 20, 20, 0.6)[None].astype(np.float32)).numpy()[0]
    assert turned_slender < 0.75 < 0.99 < turned_square


def test_degenerate_polygon_gives_finite_distance():
    point = np.full((1, 8), 5.0, np.float32)
    mean, cov = polygon_gaussian_tf(point)
    assert np.all(cov.numpy() == 0.0)
    box = rectangle(5, 5, 4, 2, 0.0)[None].astype(np.float32)
    distance = hellinger_distance_tf(mean, cov, *polygon_gaussian_tf(box)).numpy()
    assert np.all(np.isfinite(distance)) and distance[0] > 0.9


def test_gliding_quadrilateral_places_vertices_on_the_hbb_edges():
    # HBB from the cell centre: 3 up, 5 right, 7 down, 1 left; s = (0.25, 0.5, 0.75, 0.1)
    quad = gliding_quadrilateral(tf.constant([[3.0, 5.0, 7.0, 1.0]]), tf.constant([[0.25, 0.5, 0.75, 0.1]]))
    np.testing.assert_allclose(quad.numpy()[0], [0.5, -3.0, 5.0, 2.0, 0.5, 7.0, -1.0, 6.0], atol=1e-6)


def test_box_terms_obb_is_zero_for_an_exact_prediction_and_grows_with_a_gliding_error():
    targets = np.zeros((1, 1, 1, 17), np.float32)
    targets[..., 4:8] = [10.0, 12.0, 10.0, 12.0]  # distances
    targets[..., 8:12] = [0.2, 0.3, 0.2, 0.3]  # gliding ratios
    exact = {"pred_l": tf.constant(targets[..., 4:8]), "pred_s": tf.constant(targets[..., 8:12])}
    exact["pred_r"] = tf.zeros((1, 1, 1))
    off = dict(exact, pred_s=tf.constant([[[[0.3, 0.3, 0.3, 0.3]]]]))
    obb_exact = box_terms(exact, targets, 8, 64, with_obb=True)["obb"].numpy()
    obb_off = box_terms(off, targets, 8, 64, with_obb=True)["obb"].numpy()
    assert obb_exact.item() < 0.02 < 0.05 < obb_off.item()
    assert "obb" not in box_terms(exact, targets, 8, 64)


def test_jol_term_weights_add_the_obb_term_and_reject_unknown_names(tiny_batch):
    images, targets = tiny_batch()
    size = int(images.shape[1])
    rng = np.random.default_rng(1)
    classes = int(np.max(targets["classes"])) + 1
    shape = [(images.shape[0], size // s, size // s, 10 + classes) for s in (8, 16, 32)]
    heads = [tf.constant(rng.normal(0, 1, level), tf.float32) for level in shape]
    encoded = encode_targets(targets, size, classes)
    plain = jol_loss(heads, encoded, (8, 16, 32), size)
    weighted = jol_loss(heads, encoded, (8, 16, 32), size, term_weights={"obb": 2.0})
    assert float(plain["obb"]) == 0.0 and float(weighted["obb"]) > 0.0
    assert float(weighted["total"]) == pytest.approx(float(plain["total"]) + 2.0 * float(weighted["obb"]), rel=1e-5)
    with pytest.raises(ValueError, match="unknown loss term"):
        jol_loss(heads, encoded, (8, 16, 32), size, term_weights={"gliding": 1.0})


def test_probiou_quality_is_one_minus_the_numpy_hellinger_of_the_decoded_quadrilaterals(tiny_batch):
    images, targets = tiny_batch()
    size = int(images.shape[1])
    rng = np.random.default_rng(2)
    classes = int(np.max(targets["classes"])) + 1
    encoded = encode_targets(targets, size, classes)
    checked = 0
    for stride, level in zip((8, 16, 32), encoded):
        head = tf.constant(rng.normal(0, 0.5, level.shape[:3] + (10 + classes,)), tf.float32)
        cells = per_cell_terms(head, level, stride, size, quality="probiou")
        gghl = per_cell_terms(head, level, stride, size)
        enc = level.numpy()
        for b, y, x in zip(*np.nonzero(enc[..., 13] > 0)):
            quads = [
                gliding_quadrilateral(tf.constant(d[None]), tf.constant(s[None])).numpy()[0]
                for d, s in (
                    (cells["pred_l"].numpy()[b, y, x], cells["pred_s"].numpy()[b, y, x]),
                    (enc[b, y, x, 4:8], enc[b, y, x, 8:12]),
                )
            ]
            moments = [shapely_moments(q) for q in quads]
            expected = 1.0 - bhattacharyya_hellinger(*moments[0], *moments[1])
            assert cells["quality"].numpy()[b, y, x] == pytest.approx(expected, abs=5e-3)
            checked += 1
        assert np.allclose(cells["obb"].numpy(), 0.0)  # weight 0: not added to the loss
        assert not np.allclose(cells["quality"].numpy(), gghl["quality"].numpy())
    assert checked > 3
    with pytest.raises(ValueError, match="unknown quality"):
        per_cell_terms(head, level, 32, size, quality="iou")


def shapely_moments(quad):
    """Mean [2] and covariance [2, 2] of a quadrilateral's area from shapely (triangle fan)."""
    polygon = shapely.Polygon(np.asarray(quad, np.float64).reshape(4, 2)).buffer(0)
    coords = np.asarray(polygon.exterior.coords)[:-1]
    origin = coords[0]
    area, first, second = 0.0, np.zeros(2), np.zeros((2, 2))
    for p, q in zip(coords[1:-1], coords[2:]):
        a = 0.5 * ((p - origin)[0] * (q - origin)[1] - (p - origin)[1] * (q - origin)[0])
        vertices = np.stack([origin, p, q])
        centroid = vertices.mean(axis=0)
        # second moment of a triangle about the origin: A/12 (sum v v^T + 9 c c^T)
        second += a / 12.0 * (vertices.T @ vertices + 9.0 * np.outer(centroid, centroid))
        first += a * centroid
        area += a
    mean = first / area
    return mean, second / area - np.outer(mean, mean)
