import cv2
import numpy as np
import pytest
import shapely.geometry
import tensorflow as tf

from dked_tf.data.augment import (
    AugmentConfig,
    _rect_halfplanes,
    augment_sample_tf,
    clip_convex_area_tf,
    hsv_jitter_tf,
    mixup_batch_tf,
    mosaic_batch_tf,
    object_filter_tf,
)


def rect(cx, cy, w, h, angle=0.0):
    c, s = np.cos(angle), np.sin(angle)
    corners = ((-w / 2, -h / 2), (w / 2, -h / 2), (w / 2, h / 2), (-w / 2, h / 2))
    pts = [(cx + c * x - s * y, cy + s * x + c * y) for x, y in corners]
    return np.ravel(pts).astype(np.float32)


def to_cv2(points):
    """Continuous coordinates (pixel i covers [i, i+1)) -> OpenCV's (integer = pixel centre),
    fixed point with 4 fractional bits."""
    return np.round((np.asarray(points, np.float64).reshape(-1, 2) - 0.5) * 16).astype(np.int32)


def fill_mask(polys, height, width):
    mask = np.zeros((height, width), np.uint8)
    for p in np.asarray(polys).reshape(-1, 4, 2):
        cv2.fillPoly(mask, [to_cv2(p)], 1, cv2.LINE_8, shift=4)
    return mask.astype(bool)


def test_convex_clip_area_matches_shapely(rng):
    polys = np.stack([rect(*rng.uniform(0, 100, 2), *rng.uniform(5, 60, 2), rng.uniform(0, np.pi)) for _ in range(50)])
    region_a = rect(50, 50, 70, 40, 0.5).reshape(4, 2)
    region_b = np.array([[20, 10], [90, 10], [90, 80], [20, 80]], np.float32)
    halfplanes = tf.concat(
        [_rect_halfplanes(tf.constant(region_a)), _rect_halfplanes(tf.constant(region_b[::-1].copy()))], 0
    )
    got = clip_convex_area_tf(tf.constant(polys), halfplanes).numpy()
    region = shapely.geometry.Polygon(region_a).intersection(shapely.geometry.Polygon(region_b))
    want = [shapely.geometry.Polygon(p.reshape(4, 2)).intersection(region).area for p in polys]
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-2)


def test_tiny_and_degenerate_objects_are_dropped():
    polys = np.stack(
        [
            rect(20, 20, 30, 10),  # kept
            rect(20, 20, 30, 1.5),  # short side 1.5 < 2 px
            rect(20, 20, 1.9, 1.9),  # area 3.6 < 4 px², short side < 2
            np.array([0, 0, 10, 0, 20, 0, 30, 0], np.float32),  # collinear: zero area
            np.array([0, 0, np.nan, 0, 10, 10, 0, 10], np.float32),  # not finite
        ]
    )
    keep = object_filter_tf(tf.constant(polys), min_size=2.0, min_area=4.0).numpy()
    np.testing.assert_array_equal(keep, [True, False, False, False, False])


def draw_scene(rng, height=80, width=96):
    polys = np.stack([rect(25, 25, 34, 12, 0.3), rect(65, 50, 40, 14, -1.0), rect(45, 62, 24, 10, 2.0)])
    image = np.zeros((height, width, 3), np.float32)
    for p in polys:
        cv2.fillPoly(image, [to_cv2(p)], (1.0, 1.0, 1.0), cv2.LINE_AA, shift=4)
    return image, polys


@pytest.mark.parametrize("seed, rotate", [(0, 1.0), (1, 1.0), (2, 1.0), (3, 0.0), (4, 0.0)])
def test_polygons_stay_on_the_drawn_objects(seed, rotate):
    # rotate 0: the axis-aligned resampler (flips, scale, translate, crop); 1: the projective one
    image, polys = draw_scene(np.random.default_rng(seed))
    config = AugmentConfig(
        flip_horizontal=0.5,
        flip_vertical=0.5,
        rotate_prob=rotate,
        scale_prob=1.0,
        crop_prob=1.0,
        translate_prob=1.0,
        hsv_prob=0.0,
    )
    size = 96
    out, out_polys, keep, scale, offset = augment_sample_tf(
        tf.constant(image), tf.constant(polys), tf.constant([seed, 7], tf.int64), size, config, training=True
    )
    out, out_polys, keep = out.numpy(), out_polys.numpy(), keep.numpy()
    assert out.shape == (size, size, 3)
    white = out[..., 0] > 0.75  # objects 1, background 0, fill 0.5 (outside the source image)
    assert white.sum() > 50
    valid = np.abs(out[..., 0] - 0.5) > 0.25
    everything = fill_mask(out_polys, size, size) & valid
    iou = (white & everything).sum() / (white | everything).sum()
    assert iou > 0.85, iou
    for p, k in zip(out_polys, keep):
        mask = fill_mask(p, size, size)
        if k and mask.sum() > 20:
            # a kept polygon covers its drawn object (>= min_visible of it is inside the image)
            assert (mask & white).sum() / mask.sum() > 0.45


def test_letterbox_without_augmentation_is_exact():
    image, polys = draw_scene(None, 60, 96)
    out, out_polys, keep, scale, offset = augment_sample_tf(
        tf.constant(image), tf.constant(polys), tf.constant([0, 0], tf.int64), 64, AugmentConfig(), training=False
    )
    assert float(scale) == pytest.approx(64 / 96)
    np.testing.assert_allclose(offset.numpy(), [0.0, (64 - 60 * 64 / 96) / 2], atol=1e-5)
    np.testing.assert_allclose(out_polys.numpy(), polys * (64 / 96) + np.tile(offset.numpy(), 4), atol=1e-4)
    assert keep.numpy().all()
    out = out.numpy()
    np.testing.assert_allclose(out[:8], 0.5)  # padding rows (offset y = 12)
    np.testing.assert_allclose(out[-8:], 0.5)
    # same content as OpenCV's bilinear resize of the image
    ref = cv2.resize(image, (64, 40), interpolation=cv2.INTER_LINEAR)
    np.testing.assert_allclose(out[13:51, 1:63], ref[1:39, 1:63], atol=0.02)


def test_objects_mostly_outside_are_dropped():
    image, polys = draw_scene(None)
    polys = np.concatenate([polys, rect(92, 10, 20, 8, 0.2)[None]])  # near a corner
    config = AugmentConfig(
        flip_horizontal=0,
        flip_vertical=0,
        rotate_prob=0,
        scale_prob=1.0,
        scale_range=(1.6, 1.6),
        crop_prob=0,
        translate_prob=0,
        hsv_prob=0,
    )
    _, out_polys, keep, _, _ = augment_sample_tf(
        tf.constant(image), tf.constant(polys), tf.constant([1, 2], tf.int64), 96, config, training=True
    )
    canvas = shapely.geometry.box(0, 8, 96, 88)  # the letterboxed 96 x 80 image
    for p, k in zip(out_polys.numpy(), keep.numpy()):
        shape = shapely.geometry.Polygon(p.reshape(4, 2))
        visible = shape.intersection(canvas).area / shape.area
        assert k == (visible >= 0.5), (visible, k)
    assert not keep.numpy().all() and keep.numpy().any()


def test_hsv_jitter_stays_in_range():
    image = tf.random.stateless_uniform([16, 16, 3], seed=[1, 2])
    out = hsv_jitter_tf(image, tf.constant([3, 4], tf.int64), (0.015, 0.7, 0.4), prob=1.0).numpy()
    assert out.min() >= 0 and out.max() <= 1 and np.abs(out - image.numpy()).max() > 1e-3


def test_mixup_weights_and_pixels():
    images = tf.stack([tf.fill([8, 8, 3], 0.2), tf.fill([8, 8, 3], 0.8)])
    targets = {
        "polygons": tf.constant([[rect(2, 2, 3, 2), np.zeros(8)], [rect(5, 5, 3, 2), rect(4, 4, 2, 2)]], tf.float32),
        "classes": tf.constant([[1, 0], [2, 3]], tf.int32),
        "weights": tf.constant([[1.0, 0.0], [1.0, 1.0]]),
        "difficult": tf.constant([[False, False], [True, False]]),
    }
    targets_m = dict(
        targets,
        polygons=tf.pad(targets["polygons"], [[0, 0], [0, 2], [0, 0]]),
        classes=tf.pad(targets["classes"], [[0, 0], [0, 2]]),
        weights=tf.pad(targets["weights"], [[0, 0], [0, 2]]),
        difficult=tf.pad(targets["difficult"], [[0, 0], [0, 2]]),
    )
    mixed, out = mixup_batch_tf(images, targets_m, tf.constant([5, 6], tf.int64), prob=1.0, alpha=1.5)
    w = out["weights"].numpy()
    lam = w[0, 0]
    assert 0 < lam < 1
    # image 0: its own object (weight lam) then the two of image 1 (weight 1 - lam)
    np.testing.assert_allclose(w[0], [lam, 1 - lam, 1 - lam, 0], rtol=1e-6)
    np.testing.assert_array_equal(out["classes"].numpy()[0, :3], [1, 2, 3])
    np.testing.assert_array_equal(out["difficult"].numpy()[0], [False, True, False, False])
    np.testing.assert_allclose(mixed.numpy()[0], lam * 0.2 + (1 - lam) * 0.8, rtol=1e-5)
    np.testing.assert_allclose(out["polygons"].numpy()[0, 1], rect(5, 5, 3, 2), rtol=1e-6)


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_mosaic_window_pixels_and_objects_match_a_shapely_reference(seed):
    size, count, per_image = 32, 5, 3
    rng = np.random.default_rng(seed)
    # pixel (x, y) of image k holds (k / 8, x / 64, y / 64): the window's corner names its origin
    ys, xs = np.meshgrid(np.arange(size), np.arange(size), indexing="ij")
    images = np.stack([np.stack([np.full_like(xs, k) / 8, xs / 64, ys / 64], -1) for k in range(count)])
    polygons = np.zeros((count, per_image + 1, 8), np.float32)  # one padding row
    for k in range(count):
        for j in range(per_image):
            polygons[k, j] = rect(*rng.uniform(2, 30, 2), *rng.uniform(3, 12, 2), rng.uniform(-1.5, 1.5))
    weights = np.zeros((count, per_image + 1), np.float32)
    weights[:, :per_image] = 1.0
    targets = {
        "polygons": tf.constant(polygons),
        "classes": tf.constant(np.arange(count * (per_image + 1)).reshape(count, -1) % 7, tf.int32),
        "weights": tf.constant(weights),
        "difficult": tf.zeros([count, per_image + 1], tf.bool),
    }
    out_images, out = mosaic_batch_tf(
        tf.constant(images, tf.float32), targets, tf.constant([seed, 9], tf.int64), prob=1.0, min_visible=0.5
    )
    out_images = out_images.numpy()
    for i in range(count):
        corner = out_images[i, 0, 0]
        tile = round(corner[0] * 8)
        x0 = round(corner[1] * 64) + size * ((tile - i) % count in (1, 3))
        y0 = round(corner[2] * 64) + size * ((tile - i) % count in (2, 3))
        canvas = np.zeros((2 * size, 2 * size, 3))
        for k, (tx, ty) in enumerate(((0, 0), (1, 0), (0, 1), (1, 1))):
            canvas[ty * size : (ty + 1) * size, tx * size : (tx + 1) * size] = images[(i + k) % count]
        np.testing.assert_allclose(out_images[i], canvas[y0 : y0 + size, x0 : x0 + size], atol=1e-6)
        expected = []
        for k, (tx, ty) in enumerate(((0, 0), (1, 0), (0, 1), (1, 1))):
            window = shapely.geometry.box(
                max(tx * size - x0, 0),
                max(ty * size - y0, 0),
                min((tx + 1) * size - x0, size),
                min((ty + 1) * size - y0, size),
            )
            for j in range(per_image):
                moved = polygons[(i + k) % count, j].reshape(4, 2) - [x0 - tx * size, y0 - ty * size]
                shape = shapely.geometry.Polygon(moved)
                if shape.intersection(window).area / shape.area >= 0.5:
                    expected.append((moved.ravel(), int(targets["classes"][(i + k) % count, j])))
        kept = out["weights"].numpy()[i] > 0
        assert kept.sum() == min(len(expected), per_image + 1)
        for (poly, cls), got_poly, got_cls in zip(
            expected, out["polygons"].numpy()[i][kept], out["classes"].numpy()[i][kept]
        ):
            np.testing.assert_allclose(got_poly, poly, atol=1e-4)
            assert got_cls == cls
        assert np.all(out["polygons"].numpy()[i][~kept] == 0)


def test_mosaic_with_probability_zero_changes_nothing():
    images = tf.random.stateless_uniform([4, 16, 16, 3], seed=[1, 2])
    targets = {
        "polygons": tf.constant(np.stack([np.stack([rect(8, 8, 6, 3, 0.4), np.zeros(8, np.float32)])] * 4)),
        "classes": tf.constant([[1, 0]] * 4, tf.int32),
        "weights": tf.constant([[1.0, 0.0]] * 4),
        "difficult": tf.zeros([4, 2], tf.bool),
    }
    out_images, out = mosaic_batch_tf(images, targets, tf.constant([3, 4], tf.int64), prob=0.0, min_visible=0.5)
    np.testing.assert_array_equal(out_images.numpy(), images.numpy())
    for key in targets:
        np.testing.assert_array_equal(out[key].numpy(), targets[key].numpy())
