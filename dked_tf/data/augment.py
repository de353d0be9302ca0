"""TensorFlow augmentations that move oriented boxes (polygons) together with the pixels.

Everything here runs inside `tf.data` graph mode and draws its randomness from stateless ops
keyed by a per-sample seed, so a pipeline is deterministic under its seed.

Geometry is one affine map per sample, from original-image pixels to the S x S network input:

    p_aug = R(angle) F(flips) s (p - c) + c + t        (c = image centre, t = translation)
    p_in  = (p_aug - crop_origin) * sigma + offset     (letterbox of the crop window)

and the image is resampled ONCE, bilinear, fill 0.5: with `tf.raw_ops.ScaleAndTranslate` when the
map has no rotation (letterbox, flips, scale, translate, crop), else with
`tf.raw_ops.ImageProjectiveTransformV3`; both are exact for the continuous coordinates used by
the polygons (pixel i covers [i, i+1)).
Without augmentation the map is the plain letterbox: sigma = min(S/w, S/h), centred (sub-pixel
offset), pad value 0.5. `letterbox_image_tf` is exactly that path (what evaluation batches, the
SavedModel signatures and the TFLite calibration images get); `letterbox_image_np` is its numpy
twin (same geometry and resampling, OpenCV) for callers without a graph such as
`dked-tf predict`.

Object rules (explicit, documented):

- Visibility: after the geometric transform, visible = area(polygon ∩ valid region) / area(polygon),
  the valid region being the crop window intersected with the transformed original image
  rectangle (exact convex clipping, Sutherland-Hodgman). Objects with visible < `min_visible`
  (default 0.5) are DROPPED; objects with visible >= `min_visible` are KEPT UNCLIPPED (their
  polygon may stick out of the image, like mmrotate's tiling keeps truncated objects).
- Random crop and random translation keep objects: the crop window always contains, and the
  translation never pushes out, the horizontal box (clamped to the image) of every object whose
  centre was inside the image.
- Tiny/degenerate objects, judged in the final S x S input: dropped when any coordinate is not
  finite, when the polygon area < `min_area` (default 4 px²) or when its short side
  (area / longest edge) < `min_size` (default 2 px). This rule applies with and without
  augmentation (it never triggers on sane annotations at sane input sizes).
- Mosaic (per batch, an addition to GGHL's recipe; off unless `mosaic_prob` > 0): image i and
  the next three of the batch (in order, wrapping) tile a 2S x 2S canvas (i top left, i+1 top
  right, i+2 bottom left, i+3 bottom right) and an S x S window at a uniform integer position
  (x0, y0) in [0, S]^2 replaces image i. Each object is moved by its tile's offset minus
  (x0, y0) and KEPT UNCLIPPED when area(polygon ∩ its tile ∩ window) / area(polygon) >=
  `min_visible`; the first M of the kept objects stay (tiles in order). Ultralytics' mosaic
  keeps the objects at their scale the same way.
- Mixup (per batch, after mosaic): image_i = lam * image_i + (1 - lam) * image_j with j the next image of the
  batch, lam ~ Beta(alpha, alpha); the boxes of both are kept, weighted lam and 1 - lam.
"""

import dataclasses
import math

import cv2
import numpy as np
import tensorflow as tf

from dked_tf.ops.obb import poly_to_rbox

LETTERBOX_PAD_VALUE = 0.5  # value of the input pixels outside the letterboxed image


@dataclasses.dataclass
class AugmentConfig:
    """Probabilities and ranges of the training augmentations (defaults follow GGHL where it has
    one: flips 0.5, HSV 0.75 with gains (0.015, 0.7, 0.4), crop 0.3, translate 0.3, mixup 0.7
    with Beta(1.5, 1.5); rotation and scale are additions for oriented boxes)."""

    flip_horizontal: float = 0.5
    flip_vertical: float = 0.5
    rotate_prob: float = 0.5
    rotate_degrees: float = 180.0  # angle drawn uniformly in [-rotate_degrees, rotate_degrees]
    scale_prob: float = 0.5
    scale_range: tuple = (0.75, 1.25)
    crop_prob: float = 0.3
    translate_prob: float = 0.3
    hsv_prob: float = 0.75
    hsv_gains: tuple = (0.015, 0.7, 0.4)
    mixup_prob: float = 0.7
    mixup_alpha: float = 1.5
    mosaic_prob: float = 0.0
    min_visible: float = 0.5
    # > 0: train on windows of the image at this scale (input pixels per image pixel) instead of
    # the whole letterboxed image: a random S / window_scale square (clipped to the image) at a
    # uniform position replaces crop and translate. 1.0 = native-resolution crops.
    window_scale: float = 0.0
    min_size: float = 2.0
    min_area: float = 4.0
    fill_value: float = LETTERBOX_PAD_VALUE

    @classmethod
    def disabled(cls):
        """Only the letterbox (and the tiny/degenerate-object rule)."""
        return cls(
            flip_horizontal=0.0,
            flip_vertical=0.0,
            rotate_prob=0.0,
            scale_prob=0.0,
            crop_prob=0.0,
            translate_prob=0.0,
            hsv_prob=0.0,
            mixup_prob=0.0,
        )

    @classmethod
    def light(cls):
        """Flips, 90-degree-free small rotations, mild colour; no mixup."""
        return cls(
            rotate_degrees=15.0,
            rotate_prob=0.3,
            scale_prob=0.3,
            scale_range=(0.9, 1.1),
            hsv_gains=(0.01, 0.3, 0.2),
            mixup_prob=0.0,
        )


# --------------------------------------------------------------------------- polygon geometry


def polygon_area_tf(points, counts=None):
    """Absolute shoelace area. points float32 [N, K, 2]; counts int32 [N] valid vertices (all K
    when None; vertices past the count are ignored). Returns float32 [N]."""
    k = tf.shape(points)[1]
    if counts is None:
        nxt = tf.roll(points, shift=-1, axis=1)
        cross = points[..., 0] * nxt[..., 1] - points[..., 1] * nxt[..., 0]
        return tf.abs(tf.reduce_sum(cross, axis=1)) / 2.0
    idx = tf.range(k)[None, :]
    next_idx = tf.math.floormod(idx + 1, tf.maximum(counts[:, None], 1))
    nxt = tf.gather(points, next_idx, batch_dims=1)
    cross = points[..., 0] * nxt[..., 1] - points[..., 1] * nxt[..., 0]
    cross = tf.where(idx < counts[:, None], cross, 0.0)
    return tf.abs(tf.reduce_sum(cross, axis=1)) / 2.0


def clip_convex_area_tf(polygons, halfplanes, max_vertices=16):
    """Area of each polygon clipped by a convex region (Sutherland-Hodgman, fixed shapes).

    polygons: float32 [N, 8] (convex or at least simple quadrilaterals), pixels.
    halfplanes: float32 [P, 3] rows (a, b, c): the region is a*x + b*y + c >= 0 for every row
        (any P).
    Returns float32 [N], pixels².
    """
    polygons = tf.convert_to_tensor(polygons, tf.float32)
    n = tf.shape(polygons)[0]
    pts = tf.reshape(polygons, [-1, 4, 2])
    pts = tf.concat([pts, tf.zeros([n, max_vertices - 4, 2])], axis=1)
    counts = tf.fill([n], 4)
    k = max_vertices
    idx = tf.range(k)[None, :]
    halfplanes = tf.convert_to_tensor(halfplanes, tf.float32)

    def clip_once(p, pts, counts):
        a, b, c = halfplanes[p, 0], halfplanes[p, 1], halfplanes[p, 2]
        next_idx = tf.math.floormod(idx + 1, tf.maximum(counts[:, None], 1))
        nxt = tf.gather(pts, next_idx, batch_dims=1)
        s_cur = a * pts[..., 0] + b * pts[..., 1] + c
        s_nxt = a * nxt[..., 0] + b * nxt[..., 1] + c
        valid = idx < counts[:, None]
        in_cur, in_nxt = s_cur >= 0, s_nxt >= 0
        emit_cur = valid & in_cur
        emit_cross = valid & tf.not_equal(in_cur, in_nxt)
        frac = tf.math.divide_no_nan(s_cur, s_cur - s_nxt)[..., None]
        cross_pt = pts + (nxt - pts) * frac
        cand = tf.reshape(tf.stack([pts, cross_pt], axis=2), [n, 2 * k, 2])
        mask = tf.reshape(tf.stack([emit_cur, emit_cross], axis=2), [n, 2 * k])
        # keep emitted candidates in order: position of each among the emitted ones
        slot = tf.cumsum(tf.cast(mask, tf.int32), axis=1) - 1
        slot = tf.where(mask & (slot < k), slot, k)  # k = discard bin
        rows = tf.tile(tf.range(n)[:, None], [1, 2 * k])
        scatter_idx = tf.stack([rows, slot], axis=-1)
        new_pts = tf.scatter_nd(tf.reshape(scatter_idx, [-1, 2]), tf.reshape(cand, [-1, 2]), [n, k + 1, 2])[:, :k]
        new_counts = tf.minimum(tf.reduce_sum(tf.cast(mask, tf.int32), axis=1), k)
        return p + 1, new_pts, new_counts

    _, pts, counts = tf.while_loop(
        lambda p, pts, counts: p < tf.shape(halfplanes)[0],
        clip_once,
        (tf.constant(0), pts, counts),
        shape_invariants=(tf.TensorShape([]), tf.TensorShape([None, k, 2]), tf.TensorShape([None])),
    )
    area = polygon_area_tf(pts, counts)
    return tf.where(counts >= 3, area, 0.0)


def _rect_halfplanes(corners):
    """Half-planes (a, b, c) [4, 3] of a convex quadrilateral given by corners [4, 2] in
    either orientation (inside = same side as the centroid)."""
    nxt = tf.roll(corners, shift=-1, axis=0)
    edge = nxt - corners
    a = -edge[:, 1]
    b = edge[:, 0]
    c = -(a * corners[:, 0] + b * corners[:, 1])
    centre = tf.reduce_mean(corners, axis=0)
    sign = tf.sign(a * centre[0] + b * centre[1] + c)
    sign = tf.where(sign == 0, 1.0, sign)
    return tf.stack([a * sign, b * sign, c * sign], axis=1)


def transform_polygons_tf(polygons, matrix, translation):
    """p' = matrix @ p + translation for every vertex. polygons [N, 8]; matrix [2, 2]."""
    pts = tf.reshape(polygons, [-1, 4, 2])
    out = tf.einsum("ij,nkj->nki", matrix, pts) + translation
    return tf.reshape(out, [-1, 8])


def object_filter_tf(polygons, min_size, min_area):
    """True for objects to keep by the tiny/degenerate rule (see module docstring). [N] bool."""
    pts = tf.reshape(polygons, [-1, 4, 2])
    finite = tf.reduce_all(tf.math.is_finite(polygons), axis=1)
    safe = tf.where(finite[:, None, None], pts, 0.0)
    area = polygon_area_tf(safe)
    edges = tf.norm(tf.roll(safe, -1, axis=1) - safe, axis=2)
    short = tf.math.divide_no_nan(area, tf.reduce_max(edges, axis=1))
    return finite & (area >= min_area) & (short >= min_size)


# --------------------------------------------------------------------------- sampling


def _uniform(seed, low=0.0, high=1.0):
    return tf.random.stateless_uniform([], seed=seed, minval=low, maxval=high)


def letterbox_params_tf(width, height, size):
    """scale = min(S/w, S/h), offset = ((S - w*scale)/2, (S - h*scale)/2). float32."""
    width, height = tf.cast(width, tf.float32), tf.cast(height, tf.float32)
    size = tf.cast(size, tf.float32)
    scale = tf.minimum(size / width, size / height)
    offset = tf.stack([(size - width * scale) / 2.0, (size - height * scale) / 2.0])
    return scale, offset


def letterbox_params(width, height, size):
    """numpy twin of `letterbox_params_tf`: (scale float, offset float64 [2] = (pad x, pad y))
    of the letterbox of a width x height image into size x size; input = original * scale + offset."""
    scale = min(size / width, size / height)
    return scale, np.array([(size - width * scale) / 2.0, (size - height * scale) / 2.0])


def object_sizes(records, size):
    """Sides of the annotated objects' minimum-area boxes (`ops.obb.poly_to_rbox`) before and
    after letterboxing each record's image to size x size: (length, width) float64 [N] in input
    pixels and the native length float64 [N] in image pixels, over all objects of `records`."""
    rboxes = [
        (poly_to_rbox(r.polygons), letterbox_params(r.width, r.height, size)[0]) for r in records if len(r.polygons)
    ]
    if not rboxes:
        return np.zeros(0), np.zeros(0), np.zeros(0)
    native = np.concatenate([rbox[:, 2] for rbox, _ in rboxes])
    length = np.concatenate([rbox[:, 2] * scale for rbox, scale in rboxes])
    width = np.concatenate([rbox[:, 3] * scale for rbox, scale in rboxes])
    return length, width, native


def sample_geometry_tf(seed, width, height, size, polygons, config, training):
    """Draws the per-sample affine map original pixels -> S x S input.

    polygons: float32 [N, 8] original pixels (used to keep objects inside crop/translate).
    Returns dict: `matrix` [2, 2], `translation` [2] (p_in = matrix p + translation), valid-region
    `halfplanes` [8, 3] in input pixels, `window` [4] (x0, y0, x1, y1: the letterboxed crop
    window in input pixels), letterbox `scale` (scalar) and `offset` [2] of the last step.
    """
    w = tf.cast(width, tf.float32)
    h = tf.cast(height, tf.float32)
    centre = tf.stack([w, h]) / 2.0
    seeds = tf.random.experimental.stateless_split(seed, num=16)
    if training:
        fx = tf.where(_uniform(seeds[0]) < config.flip_horizontal, -1.0, 1.0)
        fy = tf.where(_uniform(seeds[1]) < config.flip_vertical, -1.0, 1.0)
        angle = tf.where(
            _uniform(seeds[2]) < config.rotate_prob,
            _uniform(seeds[3], -config.rotate_degrees, config.rotate_degrees) * (math.pi / 180.0),
            0.0,
        )
        s = tf.where(
            _uniform(seeds[4]) < config.scale_prob,
            _uniform(seeds[5], config.scale_range[0], config.scale_range[1]),
            1.0,
        )
    else:
        fx = fy = s = tf.constant(1.0)
        angle = tf.constant(0.0)
    cos, sin = tf.cos(angle), tf.sin(angle)
    rot = tf.reshape(tf.stack([cos, -sin, sin, cos]), [2, 2])
    m0 = rot @ tf.linalg.diag(tf.stack([fx, fy])) * s
    t0 = centre - tf.linalg.matvec(m0, centre)

    # objects whose centre lies inside the image before and after the map: crop/translate keep them
    polys1 = transform_polygons_tf(polygons, m0, t0)
    centres0 = tf.reduce_mean(tf.reshape(polygons, [-1, 4, 2]), axis=1)
    centres1 = tf.reduce_mean(tf.reshape(polys1, [-1, 4, 2]), axis=1)
    lim = tf.stack([w, h])
    inside = tf.reduce_all((centres0 >= 0) & (centres0 <= lim) & (centres1 >= 0) & (centres1 <= lim), axis=1)
    xy = tf.reshape(polys1, [-1, 4, 2])
    big = tf.constant(1e9)
    lo = tf.reduce_min(tf.where(inside[:, None, None], xy, big), axis=[0, 1])
    hi = tf.reduce_max(tf.where(inside[:, None, None], xy, -big), axis=[0, 1])
    has_any = tf.reduce_any(inside)
    lo = tf.where(has_any, tf.clip_by_value(lo, 0.0, lim), centre)
    hi = tf.where(has_any, tf.clip_by_value(hi, 0.0, lim), centre)

    translation = tf.zeros([2])
    crop_lo, crop_hi = tf.zeros([2]), lim
    if training and config.window_scale > 0:
        side = tf.minimum(lim, tf.cast(size, tf.float32) / config.window_scale)
        crop_lo = tf.stack([_uniform(seeds[10]), _uniform(seeds[11])]) * (lim - side)
        crop_hi = crop_lo + side
    elif training:
        do_translate = _uniform(seeds[6]) < config.translate_prob
        tx = _uniform(seeds[7], -lo[0], lim[0] - hi[0] + 1e-6)
        ty = _uniform(seeds[8], -lo[1], lim[1] - hi[1] + 1e-6)
        translation = tf.where(do_translate, tf.stack([tx, ty]), translation)
        lo, hi = lo + translation, hi + translation
        do_crop = _uniform(seeds[9]) < config.crop_prob
        room_lo = tf.minimum(tf.maximum(lo, 0.0), 0.25 * lim)
        room_hi = tf.minimum(tf.maximum(lim - hi, 0.0), 0.25 * lim)
        c_lo = tf.stack([_uniform(seeds[10]), _uniform(seeds[11])]) * room_lo
        c_hi = lim - tf.stack([_uniform(seeds[12]), _uniform(seeds[13])]) * room_hi
        crop_lo = tf.where(do_crop, c_lo, crop_lo)
        crop_hi = tf.where(do_crop, c_hi, crop_hi)
    crop_size = tf.maximum(crop_hi - crop_lo, 1.0)
    scale, offset = letterbox_params_tf(crop_size[0], crop_size[1], size)
    matrix = m0 * scale
    trans = (t0 + translation - crop_lo) * scale + offset
    # valid region in input pixels: transformed original image rectangle ∩ letterboxed crop window
    corners = tf.constant([[0.0, 0.0], [1.0, 0.0], [1.0, 1.0], [0.0, 1.0]]) * lim
    img_corners = tf.einsum("ij,kj->ki", matrix, corners) + trans
    win_lo = offset
    win_hi = offset + crop_size * scale
    win_corners = tf.stack([win_lo, tf.stack([win_hi[0], win_lo[1]]), win_hi, tf.stack([win_lo[0], win_hi[1]])])
    halfplanes = tf.concat([_rect_halfplanes(img_corners), _rect_halfplanes(win_corners)], axis=0)
    return {
        "matrix": matrix,
        "translation": trans,
        "halfplanes": halfplanes,
        "window": tf.concat([win_lo, win_hi], axis=0),
        "scale": scale,
        "offset": offset,
    }


def warp_image_tf(image, matrix, translation, size, window, fill_value=0.5):
    """Resamples `image` float32 [H, W, 3] into [S, S, 3] with p_out = matrix p_in + translation
    (continuous pixel coordinates); pixels outside `window` (x0, y0, x1, y1) get `fill_value`."""
    inv = tf.linalg.inv(matrix)
    inv_t = -tf.linalg.matvec(inv, translation)
    # index coordinates q = p - 0.5 on both sides
    half = tf.constant([0.5, 0.5])
    t_idx = tf.linalg.matvec(inv, half) + inv_t - half
    transform = tf.stack([inv[0, 0], inv[0, 1], t_idx[0], inv[1, 0], inv[1, 1], t_idx[1], 0.0, 0.0])
    size = tf.cast(size, tf.int32)
    out = tf.raw_ops.ImageProjectiveTransformV3(
        images=image[None],
        transforms=transform[None],
        output_shape=tf.stack([size, size]),
        fill_value=tf.constant(fill_value, tf.float32),
        interpolation="BILINEAR",
        fill_mode="CONSTANT",
    )[0]
    centres = tf.cast(tf.range(size), tf.float32) + 0.5
    in_x = (centres >= window[0]) & (centres <= window[2])
    in_y = (centres >= window[1]) & (centres <= window[3])
    inside = in_y[:, None] & in_x[None, :]
    return tf.where(inside[..., None], out, fill_value)


def warp_axis_aligned_tf(image, matrix, translation, size, window, fill_value=0.5):
    """Fast path of `warp_image_tf` for maps without rotation (matrix diagonal, any signs):
    flips with `tf.reverse`, then one separable bilinear resample (ScaleAndTranslate) — several
    times cheaper than the general projective resampler at 512-800 px."""
    height = tf.cast(tf.shape(image)[0], tf.float32)
    width = tf.cast(tf.shape(image)[1], tf.float32)
    flip_x, flip_y = matrix[0, 0] < 0, matrix[1, 1] < 0
    image = tf.cond(flip_x, lambda: tf.reverse(image, [1]), lambda: image)
    image = tf.cond(flip_y, lambda: tf.reverse(image, [0]), lambda: image)
    # m*x + t with m < 0 equals |m| * (w - x) + (t + m*w): the flipped image, positive scale
    tx = translation[0] + tf.where(flip_x, matrix[0, 0] * width, 0.0)
    ty = translation[1] + tf.where(flip_y, matrix[1, 1] * height, 0.0)
    size = tf.cast(size, tf.int32)
    out = (
        tf.raw_ops.ScaleAndTranslate(
            images=image[None] - fill_value,
            size=tf.stack([size, size]),
            scale=tf.stack([tf.abs(matrix[1, 1]), tf.abs(matrix[0, 0])]),
            translation=tf.stack([ty, tx]),
            kernel_type="triangle",
            antialias=False,
        )[0]
        + fill_value
    )
    centres = tf.cast(tf.range(size), tf.float32) + 0.5
    in_x = (centres >= window[0]) & (centres <= window[2])
    in_y = (centres >= window[1]) & (centres <= window[3])
    inside = in_y[:, None] & in_x[None, :]
    return tf.where(inside[..., None], out, fill_value)


def hsv_jitter_tf(image, seed, gains, prob):
    """Random hue shift and saturation/value gains (YOLO style). image float32 [H, W, 3] in [0, 1]."""
    seeds = tf.random.experimental.stateless_split(seed, num=4)
    dh = _uniform(seeds[0], -gains[0], gains[0])
    gs = 1.0 + _uniform(seeds[1], -gains[1], gains[1])
    gv = 1.0 + _uniform(seeds[2], -gains[2], gains[2])

    def jitter():
        # fused HSV kernels: hue shift (fraction of the circle), saturation gain; scaling RGB by
        # gv scales V = max(R, G, B) and keeps H and S
        out = tf.image.adjust_hue(tf.clip_by_value(image, 0.0, 1.0), dh)
        out = tf.image.adjust_saturation(out, gs)
        return tf.clip_by_value(out * gv, 0.0, 1.0)

    return tf.cond(_uniform(seeds[3]) < prob, jitter, lambda: image)


def augment_sample_tf(image, polygons, seed, size, config, training):
    """Geometric + colour augmentation and letterbox of one sample.

    image: float32 [H, W, 3] in [0, 1]; polygons float32 [N, 8] original pixels; seed int [2].
    Returns (image [S, S, 3], polygons [N, 8] input pixels, keep bool [N], scale, offset [2]).
    """
    height, width = tf.shape(image)[0], tf.shape(image)[1]
    geo_seed, colour_seed = tf.unstack(tf.random.experimental.stateless_split(seed, num=2))
    geo = sample_geometry_tf(geo_seed, width, height, size, polygons, config, training)
    m = geo["matrix"]
    axis_aligned = tf.logical_and(tf.abs(m[0, 1]) < 1e-7 * tf.abs(m[0, 0]), tf.abs(m[1, 0]) < 1e-7 * tf.abs(m[1, 1]))
    out = tf.cond(
        axis_aligned,
        lambda: warp_axis_aligned_tf(image, m, geo["translation"], size, geo["window"], config.fill_value),
        lambda: warp_image_tf(image, m, geo["translation"], size, geo["window"], config.fill_value),
    )
    if training and config.hsv_prob > 0:
        out = hsv_jitter_tf(out, colour_seed, config.hsv_gains, config.hsv_prob)
    polys = transform_polygons_tf(polygons, geo["matrix"], geo["translation"])
    keep = object_filter_tf(polys, config.min_size, config.min_area)
    if training:
        area = polygon_area_tf(tf.reshape(polys, [-1, 4, 2]))
        visible = tf.math.divide_no_nan(clip_convex_area_tf(polys, geo["halfplanes"]), area)
        keep &= visible >= config.min_visible
    return out, polys, keep, geo["scale"], geo["offset"]


def letterbox_image_tf(image, image_size):
    """The pipeline's letterbox of one image, in the graph (`augment_sample_tf` without
    augmentation: exactly what `build_dataset(..., training=False)` feeds the model).

    image: uint8 or float [H, W, 3] (uint8 is converted to [0, 1]); image_size: S (int).
    Returns (float32 [S, S, 3] in [0, 1], scale float32 [], offset float32 [2] = (pad x, pad y));
    original = (letterboxed - offset) / scale. Geometry as `letterbox_params_tf`, one bilinear
    resampling, LETTERBOX_PAD_VALUE outside the image.
    """
    size = int(image_size)
    image = tf.image.convert_image_dtype(image, tf.float32)
    no_objects = tf.zeros([0, 8], tf.float32)
    seed = tf.zeros([2], tf.int64)
    letterboxed, _, _, scale, offset = augment_sample_tf(
        image, no_objects, seed, size, AugmentConfig.disabled(), training=False
    )
    letterboxed = tf.ensure_shape(letterboxed, [size, size, 3])
    return letterboxed, tf.cast(scale, tf.float32), tf.cast(offset, tf.float32)


def letterbox_image_np(image, image_size):
    """numpy/OpenCV twin of `letterbox_image_tf` (no TensorFlow): the same geometry (sub-pixel
    offset, pixel i covers [i, i+1)), one bilinear resampling whose taps past the last pixel
    repeat the edge pixel (the graph resampler renormalises its weights there: same value),
    LETTERBOX_PAD_VALUE outside the image. It agrees with the graph version to ~1e-4 at 1024 px
    (the graph resampler computes sample positions in float32) and equals the copy in
    `tflite/detect.py` (tests/test_letterbox.py).

    image: uint8 [H, W, 3] RGB (converted to [0, 1]) or float32 [H, W, 3] in [0, 1]; image_size: S.
    Returns (float32 [S, S, 3] in [0, 1], scale float, offset float64 [2] = (pad x, pad y));
    original = (letterboxed - offset) / scale.
    """
    image = np.asarray(image)
    size = int(image_size)
    height, width = image.shape[:2]
    scale, offset = letterbox_params(width, height, size)
    # p_in = scale * p + offset in continuous coordinates; OpenCV works in index coordinates
    # q = p - 0.5
    shift = 0.5 * scale + offset - 0.5
    matrix = np.array([[scale, 0.0, shift[0]], [0.0, scale, shift[1]]], np.float64)
    if image.dtype == np.uint8:
        pixels = image.astype(np.float32) * np.float32(1.0 / 255.0)
    else:
        pixels = image.astype(np.float32)
    canvas = cv2.warpAffine(pixels, matrix, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    centres = np.arange(size) + 0.5
    inside_x = (centres >= offset[0]) & (centres <= offset[0] + width * scale)
    inside_y = (centres >= offset[1]) & (centres <= offset[1] + height * scale)
    canvas[~(inside_y[:, None] & inside_x[None, :])] = LETTERBOX_PAD_VALUE
    return canvas, scale, offset


def sample_beta_tf(seed, alpha, shape):
    """Beta(alpha, alpha) samples from two stateless gammas."""
    s1, s2 = tf.unstack(tf.random.experimental.stateless_split(seed, num=2))
    g1 = tf.random.stateless_gamma(shape, seed=s1, alpha=alpha)
    g2 = tf.random.stateless_gamma(shape, seed=s2, alpha=alpha)
    return g1 / tf.maximum(g1 + g2, 1e-12)


def mosaic_batch_tf(images, targets, seed, prob, min_visible):
    """Replaces each image of the batch, with probability `prob`, by an S x S window of the
    2 x 2 mosaic of it and the next three images (see module docstring).

    images [B, S, S, 3]; targets dict of padded [B, M, ...] tensors (`weights` 0 = padding);
    seed int [2]. Returns (images [B, S, S, 3], targets with the same shapes).
    """
    b = tf.shape(images)[0]
    size = tf.shape(images)[1]
    size_f = tf.cast(size, tf.float32)
    s1, s2 = tf.unstack(tf.random.experimental.stateless_split(seed, num=2))
    do_mosaic = tf.random.stateless_uniform([b], seed=s1) < prob
    origin = tf.random.stateless_uniform([b, 2], seed=s2, minval=0, maxval=size + 1, dtype=tf.int32)
    origin = tf.where(do_mosaic[:, None], origin, 0)  # (x0, y0); 0 = image i unchanged
    tiles = [tf.roll(images, -k, axis=0) for k in range(4)]
    canvas = tf.concat([tf.concat(tiles[0:2], axis=2), tf.concat(tiles[2:4], axis=2)], axis=1)
    span = tf.cast(2 * size - 1, tf.float32)
    x0, y0 = tf.cast(origin[:, 0], tf.float32), tf.cast(origin[:, 1], tf.float32)
    boxes = tf.stack([y0, x0, y0 + size_f - 1.0, x0 + size_f - 1.0], axis=1) / span
    window = tf.image.crop_and_resize(canvas, boxes, tf.range(b), tf.stack([size, size]), method="nearest")

    m = tf.shape(targets["weights"])[1]
    tile_offsets = ((0.0, 0.0), (1.0, 0.0), (0.0, 1.0), (1.0, 1.0))
    polygons, weights, parts = [], [], {key: [] for key in ("classes", "difficult")}
    for k, (tx, ty) in enumerate(tile_offsets):
        shift_x = tx * size_f - x0  # [B]
        shift_y = ty * size_f - y0
        shift = tf.tile(tf.stack([shift_x, shift_y], axis=1), [1, 4])[:, None, :]  # [B, 1, 8]
        polys = tf.roll(targets["polygons"], -k, axis=0) + shift
        w = tf.roll(targets["weights"], -k, axis=0)
        # visible part: inside the tile and the window (both axis-aligned): one rectangle
        left = tf.maximum(shift_x, 0.0)
        top = tf.maximum(shift_y, 0.0)
        right = tf.minimum(shift_x + size_f, size_f)
        bottom = tf.minimum(shift_y + size_f, size_f)
        flat = tf.reshape(polys, [-1, 8])
        area = polygon_area_tf(tf.reshape(flat, [-1, 4, 2]))
        visible = tf.reshape(_clip_to_boxes_area_tf(flat, left, top, right, bottom, m), [b, m])
        keep = tf.math.divide_no_nan(visible, tf.reshape(area, [b, m])) >= min_visible
        if k > 0:
            keep &= do_mosaic[:, None]
        else:
            keep |= ~do_mosaic[:, None]
        polygons.append(polys)
        weights.append(tf.where(keep, w, 0.0))
        for key in parts:
            parts[key].append(tf.roll(targets[key], -k, axis=0))
    weights = tf.concat(weights, axis=1)
    order = tf.argsort(tf.cast(weights <= 0, tf.int32), axis=1, stable=True)[:, :m]
    out = dict(targets)
    out["weights"] = tf.gather(weights, order, batch_dims=1)
    valid = out["weights"] > 0
    out["polygons"] = tf.where(valid[..., None], tf.gather(tf.concat(polygons, axis=1), order, batch_dims=1), 0.0)
    out["classes"] = tf.where(valid, tf.gather(tf.concat(parts["classes"], axis=1), order, batch_dims=1), 0)
    out["difficult"] = valid & tf.gather(tf.concat(parts["difficult"], axis=1), order, batch_dims=1)
    return tf.ensure_shape(window, images.shape), out


def _clip_to_boxes_area_tf(polygons, left, top, right, bottom, per_box):
    """Area of polygons [B * per_box, 8] inside the axis-aligned box of their batch row
    (left .. bottom: [B]); pixels², [B * per_box]. An empty box gives 0."""

    def row(args):
        polys, x_min, y_min, x_max, y_max = args
        halfplanes = tf.stack(
            [
                tf.stack([1.0, 0.0, -x_min]),
                tf.stack([-1.0, 0.0, x_max]),
                tf.stack([0.0, 1.0, -y_min]),
                tf.stack([0.0, -1.0, y_max]),
            ]
        )
        area = clip_convex_area_tf(polys, halfplanes)
        return tf.where((x_max > x_min) & (y_max > y_min), area, 0.0)

    rows = tf.reshape(polygons, [-1, per_box, 8])
    areas = tf.map_fn(row, (rows, left, top, right, bottom), fn_output_signature=tf.TensorSpec([None], tf.float32))
    return tf.reshape(areas, [-1])


def mixup_batch_tf(images, targets, seed, prob, alpha):
    """Mixes each image of the batch with the next one (see module docstring).

    images [B, S, S, 3]; targets dict of padded [B, M, ...] tensors (`weights` 0 = padding).
    Objects of both images are kept (the ones of image i first), M stays the same: objects past
    M are cut (M = max_objects must leave room; the pipeline warns when records exceed M/2).
    """
    b = tf.shape(images)[0]
    s1, s2 = tf.unstack(tf.random.experimental.stateless_split(seed, num=2))
    lam = sample_beta_tf(s1, alpha, [b])
    do_mix = tf.random.stateless_uniform([b], seed=s2) < prob
    lam = tf.where(do_mix, lam, 1.0)
    mixed = lam[:, None, None, None] * images + (1.0 - lam[:, None, None, None]) * tf.roll(images, -1, axis=0)
    m = tf.shape(targets["weights"])[1]
    out = dict(targets)
    w_self = targets["weights"] * lam[:, None]
    w_other = tf.roll(targets["weights"], -1, axis=0) * (1.0 - lam[:, None])
    w_other = tf.where(do_mix[:, None], w_other, 0.0)
    weights = tf.concat([w_self, w_other], axis=1)
    order = tf.argsort(tf.cast(weights <= 0, tf.int32), axis=1, stable=True)[:, :m]
    for key in ("polygons", "classes", "difficult"):
        both = tf.concat([targets[key], tf.roll(targets[key], -1, axis=0)], axis=1)
        out[key] = tf.gather(both, order, batch_dims=1)
    out["weights"] = tf.gather(weights, order, batch_dims=1)
    valid = out["weights"] > 0
    out["polygons"] = tf.where(valid[..., None], out["polygons"], 0.0)
    out["classes"] = tf.where(valid, out["classes"], 0)
    out["difficult"] = valid & out["difficult"]
    return mixed, out
