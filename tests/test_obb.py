"""Box conversions of dked_tf.ops.obb against hand-computed cases, shapely and OpenCV."""

import math

import cv2
import numpy as np
import pytest
import shapely

from dked_tf.ops import obb

AMBIGUOUS_ANGLES = [
    -math.pi,
    -math.pi / 2,
    -math.pi / 4,
    0.0,
    math.pi / 4,
    math.pi / 2,
    3 * math.pi / 4,
    math.pi,
    1e-17,
    -1e-17,
    math.pi / 2 - 1e-16,
]


def random_rboxes(rng, count, size=(4.0, 60.0), centre=(0.0, 128.0)):
    return np.stack(
        [
            rng.uniform(*centre, count),
            rng.uniform(*centre, count),
            rng.uniform(*size, count),
            rng.uniform(*size, count),
            rng.uniform(-2 * math.pi, 2 * math.pi, count),
        ],
        axis=-1,
    )


def ambiguous_rboxes():
    """Squares, horizontal/vertical boxes, w < h, angles on the range ends."""
    boxes = []
    for theta in AMBIGUOUS_ANGLES:
        for w, h in [(10.0, 10.0), (12.0, 5.0), (5.0, 12.0), (7.0, 7.0 + 1e-13)]:
            boxes.append([64.0, 32.0, w, h, theta])
    return np.array(boxes)


def same_quadrilateral(p, q, atol):
    """True when p and q [8] list the same 4 vertices (any start, either direction)."""
    a = np.asarray(p, dtype=np.float64).reshape(4, 2)
    b = np.asarray(q, dtype=np.float64).reshape(4, 2)
    for candidate in (b, b[::-1]):
        for shift in range(4):
            if np.allclose(a, np.roll(candidate, shift, axis=0), atol=atol, rtol=0):
                return True
    return False


def shuffle_vertex_order(polys, rng):
    """Random start vertex and random direction per polygon (same quadrilateral)."""
    points = polys.reshape(-1, 4, 2).copy()
    for i in range(len(points)):
        points[i] = np.roll(points[i], rng.integers(4), axis=0)
        if rng.random() < 0.5:
            points[i] = points[i][::-1]
    return points.reshape(-1, 8)


def test_rbox_to_poly_hand_cases():
    np.testing.assert_allclose(
        obb.rbox_to_poly([10.0, 20.0, 4.0, 2.0, 0.0]), [8, 19, 12, 19, 12, 21, 8, 21], atol=1e-12
    )
    # theta = pi/2: the long side points down (+y)
    got = obb.rbox_to_poly([0.0, 0.0, 4.0, 2.0, math.pi / 2])
    assert same_quadrilateral(got, [-1, -2, 1, -2, 1, 2, -1, 2], atol=1e-12)


def test_normalize_rbox_ranges_and_ambiguous_cases():
    boxes = np.concatenate([ambiguous_rboxes(), random_rboxes(np.random.default_rng(1), 200)])
    norm = obb.normalize_rbox(boxes)
    assert np.all(norm[:, 2] >= norm[:, 3] - 1e-9 * norm[:, 2])
    assert np.all(norm[:, 4] >= -math.pi / 2) and np.all(norm[:, 4] < math.pi / 2)
    square = np.isclose(norm[:, 2], norm[:, 3], rtol=1e-9)
    assert np.all(norm[square, 4] >= -math.pi / 4 - 1e-12) and np.all(norm[square, 4] < math.pi / 4)
    # the same rectangle as before
    for before, after in zip(obb.rbox_to_poly(boxes), obb.rbox_to_poly(norm)):
        assert same_quadrilateral(before, after, atol=1e-9)
    # hand cases: vertical 12x5 box, theta = pi/2 -> -pi/2; w < h swaps
    np.testing.assert_allclose(obb.normalize_rbox([0, 0, 12, 5, math.pi / 2]), [0, 0, 12, 5, -math.pi / 2])
    np.testing.assert_allclose(obb.normalize_rbox([0, 0, 5, 12, 0.0]), [0, 0, 12, 5, -math.pi / 2])
    np.testing.assert_allclose(obb.normalize_rbox([0, 0, 9, 9, math.pi / 3]), [0, 0, 9, 9, math.pi / 3 - math.pi / 2])


def test_rbox_poly_round_trips_exact(rng):
    boxes = np.concatenate([ambiguous_rboxes(), random_rboxes(rng, 300)])
    polys = obb.rbox_to_poly(boxes)
    back = obb.poly_to_rbox(shuffle_vertex_order(polys, rng))
    np.testing.assert_allclose(back, obb.normalize_rbox(boxes), atol=1e-9, rtol=0)
    for poly, again in zip(polys, obb.rbox_to_poly(back)):
        assert same_quadrilateral(poly, again, atol=1e-9)


def test_poly_to_rbox_is_min_area_rect_like_opencv(rng):
    polys = obb.rbox_to_poly(random_rboxes(rng, 100)) + rng.normal(0, 1.0, (100, 8))
    rboxes = obb.poly_to_rbox(polys)
    for poly, rbox in zip(polys, rboxes):
        (cx, cy), (w, h), _ = cv2.minAreaRect(poly.reshape(4, 2).astype(np.float32))
        assert rbox[2] * rbox[3] == pytest.approx(w * h, rel=1e-3, abs=1e-2)
        # encloses every vertex
        rect = shapely.Polygon(obb.rbox_to_poly(rbox).reshape(4, 2)).buffer(1e-6)
        assert rect.contains(shapely.MultiPoint(poly.reshape(4, 2)))


def test_mbox_and_xywhr_conventions():
    # HRSC mbox: w side along (cos ang, sin ang); ang = pi/2 means w points down
    mbox = np.array([0.0, 0.0, 4.0, 2.0, math.pi / 2])
    assert same_quadrilateral(obb.mbox_to_poly(mbox), [-1, -2, 1, -2, 1, 2, -1, 2], atol=1e-12)
    rbox = obb.mbox_to_rbox(mbox)
    np.testing.assert_allclose(rbox, [0, 0, 4, 2, -math.pi / 2], atol=1e-12)
    np.testing.assert_allclose(obb.rbox_to_mbox(rbox), [0, 0, 4, 2, math.pi / 2], atol=1e-12)
    # HRSC short-side-first box: w=2, h=4, ang=0 is the same vertical ship
    np.testing.assert_allclose(obb.mbox_to_rbox([0, 0, 2, 4, 0.0]), [0, 0, 4, 2, -math.pi / 2], atol=1e-12)
    # Ultralytics xywhr regularised: w >= h, r in [0, pi)
    np.testing.assert_allclose(obb.rbox_to_xywhr([0, 0, 4, 2, -math.pi / 2]), [0, 0, 4, 2, math.pi / 2], atol=1e-12)
    np.testing.assert_allclose(obb.rbox_to_xywhr([0, 0, 4, 2, -0.5]), [0, 0, 4, 2, math.pi - 0.5], atol=1e-12)
    np.testing.assert_allclose(obb.xywhr_to_rbox([0, 0, 4, 2, math.pi - 0.5]), [0, 0, 4, 2, -0.5], atol=1e-12)


def test_mbox_xywhr_round_trips(rng):
    boxes = np.concatenate([ambiguous_rboxes(), random_rboxes(rng, 100)])
    norm = obb.normalize_rbox(boxes)
    np.testing.assert_allclose(obb.mbox_to_rbox(obb.rbox_to_mbox(boxes)), norm, atol=1e-9, rtol=0)
    np.testing.assert_allclose(obb.xywhr_to_rbox(obb.rbox_to_xywhr(boxes)), norm, atol=1e-9, rtol=0)
    for a, b in zip(obb.mbox_to_poly(boxes), obb.rbox_to_poly(boxes)):
        assert same_quadrilateral(a, b, atol=1e-9)


def test_poly_area_and_hbb_against_shapely(rng):
    polys = obb.rbox_to_poly(random_rboxes(rng, 50))
    expected = shapely.area(shapely.polygons(polys.reshape(-1, 4, 2)))
    np.testing.assert_allclose(obb.poly_area(polys), expected, rtol=1e-12)
    # clockwise on screen (TL, TR, BR, BL with y down) is positive
    assert obb.poly_area([0, 0, 4, 0, 4, 3, 0, 3], signed=True) == pytest.approx(12.0)
    assert obb.poly_area([0, 0, 0, 3, 4, 3, 4, 0], signed=True) == pytest.approx(-12.0)
    np.testing.assert_allclose(obb.poly_to_hbb([[3, 1, 9, 4, 7, 8, 1, 5]]), [[1, 1, 9, 8]])


def test_orc_hand_cases():
    # a diamond: every vertex at the middle of an HBB edge
    hbb, gliding, ratio = obb.poly_to_orc([0, 5, 5, 0, 10, 5, 5, 10])
    np.testing.assert_allclose(hbb, [0, 0, 10, 10])
    np.testing.assert_allclose(gliding, [0.5, 0.5, 0.5, 0.5])
    assert ratio == pytest.approx(0.5)
    # a rectangle tilted so that v1 = (2, 0): s1 = 2/10, s2 = (8-0)/10 ... by hand
    poly = [2, 0, 10, 8, 8, 10, 0, 2]
    hbb, gliding, ratio = obb.poly_to_orc(poly)
    np.testing.assert_allclose(hbb, [0, 0, 10, 10])
    np.testing.assert_allclose(gliding, [0.2, 0.8, 0.2, 0.8])
    assert ratio == pytest.approx(shapely.Polygon(np.reshape(poly, (4, 2))).area / 100)
    # horizontal box: s = 0, ratio 1, decodes to TL, TR, BR, BL
    hbb, gliding, ratio = obb.poly_to_orc([4, 3, 4, 9, 1, 9, 1, 3])
    np.testing.assert_allclose(gliding, 0)
    np.testing.assert_allclose(obb.orc_to_poly(hbb, gliding, ratio), [1, 3, 4, 3, 4, 9, 1, 9])


def test_orc_refined_approximation_snaps_inner_vertex():
    # (3, 6) lies on no HBB edge (xmin = 2 is reached by (2, 0)): its x is snapped to 2
    poly = np.array([2, 0, 10, 3, 6, 10, 3, 6], dtype=float)
    assert shapely.Polygon(poly.reshape(4, 2)).convex_hull.area == pytest.approx(
        shapely.Polygon(poly.reshape(4, 2)).area
    )
    ordered = obb.order_poly_for_orc(poly[[6, 7, 4, 5, 2, 3, 0, 1]])  # given counter-clockwise
    np.testing.assert_allclose(ordered, [2, 0, 10, 3, 6, 10, 2, 6])
    hbb, gliding, ratio = obb.poly_to_orc(poly)
    np.testing.assert_allclose(hbb, [2, 0, 10, 10])
    np.testing.assert_allclose(gliding, [0.0, 0.3, 0.5, 0.4])
    assert ratio == pytest.approx(shapely.Polygon(ordered.reshape(4, 2)).area / 80)


def test_orc_round_trip_exact_for_rectangles(rng):
    boxes = np.concatenate([ambiguous_rboxes(), random_rboxes(rng, 300)])
    polys = shuffle_vertex_order(obb.rbox_to_poly(boxes), rng)
    hbb, gliding, ratio = obb.poly_to_orc(polys)
    assert np.all(gliding >= 0) and np.all(gliding < 1)
    np.testing.assert_allclose(hbb, obb.poly_to_hbb(polys))
    decoded = obb.orc_to_poly(hbb, gliding, ratio, horizontal_threshold=1.01)
    for poly, again in zip(polys, decoded):
        assert same_quadrilateral(poly, again, atol=1e-9)
    # v1 on the top edge, v2 right, v3 bottom, v4 left
    np.testing.assert_allclose(decoded[:, 1], hbb[:, 1])
    np.testing.assert_allclose(decoded[:, 2], hbb[:, 2])
    np.testing.assert_allclose(decoded[:, 5], hbb[:, 3])
    np.testing.assert_allclose(decoded[:, 6], hbb[:, 0])


def test_orc_horizontal_threshold_zeroes_gliding():
    hbb = np.array([[0, 0, 10, 20], [0, 0, 10, 20]], dtype=float)
    gliding = np.array([[0.1, 0.1, 0.1, 0.1], [0.1, 0.1, 0.1, 0.1]])
    out = obb.orc_to_poly(hbb, gliding, np.array([0.95, 0.5]))
    np.testing.assert_allclose(out[0], [0, 0, 10, 0, 10, 20, 0, 20])
    np.testing.assert_allclose(out[1], [1, 0, 10, 2, 9, 20, 0, 18])


def test_bad_inputs_raise_clear_errors():
    with pytest.raises(ValueError, match=r"\[\.\.\., 8\]"):
        obb.poly_to_rbox(np.zeros((3, 7)))
    with pytest.raises(ValueError, match=r"\[\.\.\., 5\]"):
        obb.rbox_to_poly(np.zeros((2, 4)))
    with pytest.raises(ValueError, match="dtype"):
        obb.poly_area(np.array([["a"] * 8]))
    bad = np.zeros((4, 8))
    bad[2, 3] = np.nan
    with pytest.raises(ValueError, match="row 2"):
        obb.poly_to_orc(bad)


def test_degenerate_inputs_never_nan():
    polys = np.array([[5, 5, 5, 5, 5, 5, 5, 5], [0, 0, 10, 0, 10, 0, 0, 0]], dtype=float)
    for values in (obb.poly_to_rbox(polys), *obb.poly_to_orc(polys)):
        assert np.all(np.isfinite(values))


# ----------------------------------------------------------------------------------------
# TensorFlow twins


def test_tf_twins_match_numpy_with_leading_dims_and_convert_to_tflite(rng):
    import tensorflow as tf

    boxes = np.concatenate([ambiguous_rboxes()[:40], random_rboxes(rng, 40)])  # 80 boxes
    polys = shuffle_vertex_order(obb.rbox_to_poly(boxes), rng).reshape(2, 40, 8)

    @tf.function(input_signature=[tf.TensorSpec([None, None, 8], tf.float32)])
    def run(p):
        hbb, gliding, ratio = obb.poly_to_orc_tf(p)
        return {
            "rbox": obb.poly_to_rbox_tf(p),
            "poly": obb.rbox_to_poly_tf(obb.poly_to_rbox_tf(p)),
            "area": obb.poly_area_tf(p),
            "hbb": obb.poly_to_hbb_tf(p),
            "orc_hbb": hbb,
            "gliding": gliding,
            "ratio": ratio,
            "decoded": obb.orc_to_poly_tf(hbb, gliding, ratio, horizontal_threshold=1.01),
        }

    out = {k: v.numpy() for k, v in run(tf.constant(polys, tf.float32)).items()}
    assert out["rbox"].shape == (2, 40, 5)
    flat = polys.reshape(-1, 8)
    np.testing.assert_allclose(out["area"].ravel(), obb.poly_area(flat), rtol=1e-4)
    np.testing.assert_allclose(out["hbb"].reshape(-1, 4), obb.poly_to_hbb(flat), atol=1e-4)
    hbb, gliding, ratio = obb.poly_to_orc(flat)
    np.testing.assert_allclose(out["gliding"].reshape(-1, 4), gliding, atol=1e-4)
    np.testing.assert_allclose(out["ratio"].ravel(), ratio, atol=1e-4)
    for poly, via_rbox, via_orc in zip(flat, out["poly"].reshape(-1, 8), out["decoded"].reshape(-1, 8)):
        assert same_quadrilateral(poly, via_rbox, atol=1e-3)
        assert same_quadrilateral(poly, via_orc, atol=1e-3)
    # rbox parameters agree except for the angle of (numerically) square boxes
    expected = obb.poly_to_rbox(flat)
    got = out["rbox"].reshape(-1, 5)
    np.testing.assert_allclose(got[:, :2], expected[:, :2], atol=1e-3)
    not_square = (expected[:, 2] - expected[:, 3]) > 1e-3
    np.testing.assert_allclose(got[not_square, 2:4], expected[not_square, 2:4], atol=1e-3)
    angle_gap = np.abs(np.angle(np.exp(2j * (got[not_square, 4] - expected[not_square, 4]))))
    assert angle_gap.max() < 1e-4

    with pytest.raises(ValueError, match=r"\[\.\.\., 8\]"):
        obb.poly_to_rbox_tf(tf.zeros([3, 7]))
    with pytest.raises(ValueError, match=r"\[\.\.\., 4\]"):
        obb.orc_to_poly_tf(tf.zeros([3, 5]), tf.zeros([3, 4]))

    # the same graph converts with TFLite builtin ops only (raises if TF-Select were needed)
    converter = tf.lite.TFLiteConverter.from_concrete_functions([run.get_concrete_function()], run)
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    assert len(converter.convert()) > 0
