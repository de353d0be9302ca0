"""OLA label assignment (dked_tf.losses.assign) against hand-computed cases.

All cases use S = 128, strides 8/16/32, so the level thresholds are
tau_0 = 6*8/0.7 * 128/800 = 10.97 px and tau_1 = 6*32/0.7 * 128/800 = 43.89 px.
"""

import math

import numpy as np
import pytest
import tensorflow as tf

from dked_tf.losses.assign import encode_targets
from dked_tf.ops.obb import poly_to_orc, rbox_to_poly

S = 128
NC = 3


def box_poly(xmin, ymin, xmax, ymax):
    return [xmin, ymin, xmax, ymin, xmax, ymax, xmin, ymax]


def encode(polys, classes, weights=None, image_size=S, num_classes=NC):
    polys = np.asarray(polys, np.float32).reshape(1, -1, 8)
    classes = np.asarray(classes, np.int32).reshape(1, -1)
    if weights is None:
        weights = np.ones_like(classes, np.float32)
    weights = np.asarray(weights, np.float32).reshape(1, -1)
    out = encode_targets({"polygons": polys, "classes": classes, "weights": weights}, image_size, num_classes)
    return [o.numpy()[0] for o in out]


def positives(level):
    ys, xs = np.nonzero(level[..., 13])
    return sorted(zip(xs.tolist(), ys.tolist()))


# Axis-aligned box 40 x 24 px (class 2): xmin 36, ymin 40, xmax 76, ymax 64.
# Long side 40: tau_0 < 40 <= 1.2 tau_1 and 40 <= tau_1 -> level 1 (stride 16) only.
# Centroid (56, 52) -> centre cell (3, 3), cell centre (56, 56).
BOX = box_poly(36, 40, 76, 64)


def test_axis_aligned_box_level_cells_and_distances():
    levels = encode([BOX], [2])
    assert [lv.shape for lv in levels] == [(16, 16, 19), (8, 8, 19), (4, 4, 19)]
    assert levels[0][..., 13].sum() == 0 and levels[2][..., 13].sum() == 0
    level = levels[1]
    # Cells (x, y): (3,3) centre; (2,3) and (4,3) with G = 0.23 and centres 40/72 inside
    # (36, 76); (3,2) has G = 0.0502 > 0.05 but its centre y = 40 is on the top edge
    # (not strictly inside); (3,4) centre y = 72 is below the box.
    assert positives(level) == [(2, 3), (3, 3), (4, 3)]
    centre = level[3, 3]
    np.testing.assert_allclose(centre[0:4], [56, 52, 40, 24])
    # l1..l4 = distances from (56, 56) to the top, right, bottom, left edges.
    np.testing.assert_allclose(centre[4:8], [16, 20, 8, 20])
    np.testing.assert_allclose(level[3, 4, 4:8], [16, 4, 8, 36])
    np.testing.assert_allclose(centre[8:12], 0.0)  # horizontal box: s = 0
    assert centre[12] == pytest.approx(1.0)  # area ratio
    assert centre[14] == pytest.approx(1.0)  # mixup weight
    assert centre[15] == pytest.approx(1.0)  # omega with R_w = R_h = 1: ln2 / ln2
    # Heatmap: class 2 only, 1 at the centre cell.
    assert centre[16 + 2] == pytest.approx(1.0)
    assert centre[16] == 0 and centre[17] == 0
    # Neighbour along x: a = 40 / (2*16) = 1.25 cells, sigma-like spread a^0.7,
    # G = exp(-1/2 (2 * 1 / 1.25^0.7)^2) = 0.2315.
    expected = math.exp(-0.5 * (2.0 / 1.25**0.7) ** 2)
    assert expected == pytest.approx(0.2315, abs=1e-4)
    assert level[3, 4, 18] == pytest.approx(expected, rel=1e-5)
    assert level[3, 2, 18] == pytest.approx(expected, rel=1e-5)
    # Heatmap only at positive cells; negatives carry mixup weight 1 and nothing else.
    negative = level[..., 13] == 0
    assert np.all(level[negative][:, 16:] == 0)
    assert np.all(level[negative][:, 14] == 1)
    assert np.all(level[negative][:, [0, 1, 2, 3, 4, 5, 6, 7, 12, 15]] == 0)


def test_mixup_weight_carried_and_padding_ignored():
    base = encode([BOX], [2], [0.6])
    assert base[1][3, 3, 14] == pytest.approx(0.6)
    garbage = box_poly(0, 0, 100, 100)
    padded = encode([garbage, BOX, garbage, [0] * 8], [1, 2, 7, 0], [0.0, 0.6, 0.0, 0.0])
    for a, b in zip(base, padded):
        np.testing.assert_array_equal(a, b)


def test_overlap_band_two_levels_and_size_filter():
    # Long side 48: tau_1 = 43.9 < 48 <= 1.2 tau_1 = 52.7 -> levels 1 and 2.
    levels = encode([box_poly(56, 68, 104, 92)], [0])
    assert levels[0][..., 13].sum() == 0
    assert levels[1][..., 13].sum() > 0 and levels[2][..., 13].sum() > 0
    # Long side 12: tau_0 = 11.0 < 12 <= 1.2 tau_0 = 13.2 -> levels 0 and 1.
    levels = encode([box_poly(50, 51, 62, 61)], [0])
    assert levels[0][..., 13].sum() > 0 and levels[1][..., 13].sum() > 0
    assert levels[2][..., 13].sum() == 0
    # max(w, h) = 4 px: no label anywhere.
    levels = encode([box_poly(40, 40, 44, 44)], [0])
    assert sum(lv[..., 13].sum() for lv in levels) == 0


def test_level_thresholds_follow_image_size():
    # A 24 x 16 px box: at S = 128, 24 > 1.2 tau_0 = 13.2 -> level 1 only; at S = 256 the
    # thresholds double (tau_0 = 21.9, 1.2 tau_0 = 26.3) -> levels 0 and 1.
    small = box_poly(60, 60, 84, 76)
    at_128 = encode([small], [0], image_size=128)
    at_256 = encode([small], [0], image_size=256)
    assert at_128[0][..., 13].sum() == 0 and at_128[1][..., 13].sum() > 0
    assert at_256[0][..., 13].sum() > 0 and at_256[1][..., 13].sum() > 0
    assert at_256[0].shape == (32, 32, 19)


def test_rotated_box_orc_and_oriented_gaussian():
    # Rectangle 48 x 16 px at 45 degrees centred at (72, 72): HBB side 64/sqrt2 = 45.3,
    # tau_1 = 43.9 < 45.3 <= 1.2 tau_1 -> labelled on levels 1 and 2; r = 768/2048 = 0.375.
    poly = rbox_to_poly(np.array([[72.0, 72.0, 48.0, 16.0, math.pi / 4]]))[0]
    hbb, gliding, area_ratio = poly_to_orc(poly[None])
    assert area_ratio[0] == pytest.approx(0.375)
    levels = encode([poly], [1])
    assert [lv[..., 13].sum() > 0 for lv in levels] == [False, True, True]
    for level in levels[1:]:
        cells = positives(level)
        for x, y in cells:
            np.testing.assert_allclose(level[y, x, 8:12], gliding[0], atol=1e-5)
            assert level[y, x, 12] == pytest.approx(area_ratio[0], abs=1e-5)
    # Level 1 Gaussian: centre cell (4, 4); half-axes a = 24/16 = 1.5 cells along (1, 1),
    # b = 8/16 = 0.5 cells. Diagonal neighbour (5, 5): u = sqrt2, v = 0 -> G = 0.103.
    level = levels[1]
    along = math.exp(-0.5 * (2 * math.sqrt(2) / 1.5**0.7) ** 2)
    assert along == pytest.approx(0.1033, abs=1e-3)
    assert level[4, 4, 17] == pytest.approx(1.0)
    assert level[5, 5, 17] == pytest.approx(along, rel=1e-4)
    assert level[3, 3, 17] == pytest.approx(along, rel=1e-4)
    # Across the long axis, (3, 5): u = 0, v = sqrt2 -> G = exp(-10.6) < 0.05: no label.
    assert level[5, 3, 13] == 0 and level[3, 5, 13] == 0
    # Area weight on level 1: R_w = R_h = floor(clip(45.3 / 32, 1, 3)) = 1 -> omega = 1;
    # level 2: R = floor(clip(45.3 / 64, 1, 2)) = 1 -> omega = 1 as well.
    assert level[4, 4, 15] == pytest.approx(1.0)


def test_owner_rule_for_shared_cells():
    # A = BOX (centre cell (3, 3)); B = 40 x 16 box with centroid (64, 52) -> cell (4, 3).
    # At cell (4, 3): G_A = 0.23, G_B = 1. A's l2 there = 76 - 72 = 4, B's = 84 - 72 = 12.
    box_b = box_poly(44, 44, 84, 60)
    # Different classes, order [B, A]: A comes later and its class channel is empty -> A.
    level = encode([box_b, BOX], [1, 2])[1]
    assert level[3, 4, 5] == pytest.approx(4.0)
    assert level[3, 4, 17] == pytest.approx(1.0) and level[3, 4, 18] > 0.2  # both heatmaps
    # Same class, order [B, A]: A's Gaussian 0.23 < stored 1 -> B keeps the cell.
    level = encode([box_b, BOX], [2, 2])[1]
    assert level[3, 4, 5] == pytest.approx(12.0)
    assert level[3, 4, 18] == pytest.approx(1.0)  # max over the class
    # ... and A keeps its own centre cell (3, 3) (G_A = 1 > G_B = 0.23).
    assert level[3, 3, 5] == pytest.approx(20.0)


def test_empty_targets_dynamic_batch_and_tensor_size():
    @tf.function(
        input_signature=[
            tf.TensorSpec([None, None, 8], tf.float32),
            tf.TensorSpec([None, None], tf.int32),
            tf.TensorSpec([None, None], tf.float32),
            tf.TensorSpec([], tf.int32),
        ]
    )
    def run(polys, classes, weights, size):
        return encode_targets({"polygons": polys, "classes": classes, "weights": weights}, size, NC)

    empty = run(tf.zeros([2, 0, 8]), tf.zeros([2, 0], tf.int32), tf.zeros([2, 0]), tf.constant(64))
    assert [tuple(e.shape) for e in empty] == [(2, 8, 8, 19), (2, 4, 4, 19), (2, 2, 2, 19)]
    for e in empty:
        e = e.numpy()
        assert np.all(e[..., 14] == 1) and np.all(np.delete(e, 14, axis=-1) == 0)
    # The traced function with a tensor size equals the eager call with a Python int.
    polys = np.array([[BOX], [box_poly(10, 10, 30, 40)]], np.float32)
    classes = np.array([[2], [0]], np.int32)
    weights = np.array([[1.0], [0.5]], np.float32)
    traced = run(polys, classes, weights, tf.constant(S))
    eager = encode_targets({"polygons": polys, "classes": classes, "weights": weights}, S, NC)
    for a, b in zip(traced, eager):
        np.testing.assert_allclose(a.numpy(), b.numpy())
    assert eager[1].numpy()[1, ..., 13].sum() > 0  # second image labelled too


def test_bad_class_id_raises():
    with pytest.raises(tf.errors.InvalidArgumentError, match="class id"):
        encode([BOX], [NC], [1.0])


def test_area_weight_uses_clipped_window_radii():
    # S = 256, level 2 (stride 32, tau_1 = 87.8 < 140): R_w = floor(clip(140/64, 1, 2)) = 2,
    # R_h = floor(clip(72/64, 1, 2)) = 1 -> omega = ln 2 / ln(sqrt(2) + 1) = 0.7864.
    levels = encode([box_poly(58, 92, 198, 164)], [0], image_size=256)
    assert levels[0][..., 13].sum() == 0 and levels[1][..., 13].sum() == 0
    level = levels[2]
    assert level[4, 4, 13] == 1  # centroid (128, 128) -> cell (4, 4)
    expected = math.log(2) / math.log(math.sqrt(2) + 1)
    assert expected == pytest.approx(0.7864, abs=1e-4)
    cells = positives(level)
    assert len(cells) > 1
    for x, y in cells:
        assert level[y, x, 15] == pytest.approx(expected, rel=1e-6)


def test_min_gaussian_sigma_widens_the_heatmap_and_adds_cells_inside_the_hbb():
    polys = np.asarray(BOX, np.float32).reshape(1, 1, 8)
    targets = {"polygons": polys, "classes": np.array([[2]], np.int32)}
    level = encode_targets(targets, S, NC, min_gaussian_sigma=1.0)[1].numpy()[0]
    # Spread floored at 2 sigma = 2 cells: G = exp(-1/2 (2 * 1 / 2)^2) = exp(-1/2) one cell away;
    # the cells are GGHL's (the others' centres lie outside the HBB).
    assert positives(level) == [(2, 3), (3, 3), (4, 3)]
    assert level[3, 4, 18] == pytest.approx(math.exp(-0.5), rel=1e-5)
    assert level[3, 3, 18] == pytest.approx(1.0)
    # A slender hull at 45 degrees (40 x 4 px, HBB 31.1 px: level 1, stride 16): GGHL's Gaussian
    # is 0.23 cells wide across the hull, so only cells on its axis are positive. With a wide
    # Gaussian every cell whose centre lies inside the HBB (x, y in 48.4 .. 79.6) is.
    hull = rbox_to_poly(np.array([[64.0, 64.0, 40.0, 4.0, math.pi / 4]]))[0]
    thin = {"polygons": hull.reshape(1, 1, 8).astype(np.float32), "classes": np.array([[0]], np.int32)}
    gghl = positives(encode_targets(thin, S, NC)[1].numpy()[0])
    wide = positives(encode_targets(thin, S, NC, min_gaussian_sigma=10.0)[1].numpy()[0])
    assert (4, 4) in gghl and len(gghl) <= 2
    assert wide == [(3, 3), (3, 4), (4, 3), (4, 4)]
