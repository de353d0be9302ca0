"""OLA label assignment (GGHL): box targets -> dense per-level training targets.

``encode_targets`` turns the pipeline's padded box targets (polygons in pixels of the
letterboxed S x S input) into one dense target tensor per pyramid level, float32
``[B, H_l, W_l, 16 + nC]`` with H_l = W_l = ceil(S / stride_l) and the channel layout of
``dked_tf.ops.head_contract`` (``TARGET_*``): HBB cx, cy, w, h; distances l1..l4; gliding
ratios s1..s4 (0 when r > 0.9); area ratio r = polygon area / HBB area; positive mask; mixup
weight; area weight omega = ln 2 / ln(sqrt(R_w R_h) + 1) at positive cells; then one oriented
Gaussian heatmap per class (max over the objects of that class).

Everything is vectorized in TensorFlow: per object only a fixed candidate window of
(2(5-k)+1)^2 cells around its centre cell is evaluated on level k (the window GGHL visits),
and the results are scattered into the maps with ``tensor_scatter_nd_max``. The only Python
loop is the static one over the pyramid levels.

The algorithm follows GGHL HEAD (``datasets_obb.py``, 2022-09):

* level assignment by the HBB long side L with tau_0 = 6 s_0 / (1 - T_IoU) * S / 800 and
  tau_1 = 6 s_2 / (1 - T_IoU) * S / 800, T_IoU = 0.3: level 0 if L <= 1.2 tau_0, level 1 if
  tau_0 < L <= 1.2 tau_1, level 2 if L > tau_1 (objects in the overlap bands get two levels);
* Gaussian centred on the cell index floor(centroid / s) (centroid = mean of the vertices),
  long axis along the polygon's long side, G = exp(-1/2 [(2u / a^0.7)^2 + (2v / b^0.7)^2])
  with a, b = half side lengths in cells (sigma = half-axis^(1 - T_IoU) / 2 cells);
* candidate window |dx| <= R_w + 1, |dy| <= R_h + 1, R = floor(clip(HBB side / (2 s), 1, 4 - k));
* a cell is positive for an object when G > 0.05 and the cell centre lies strictly inside
  the HBB (all of l1..l4 > 0);
* cells claimed by several objects: GGHL processes objects in order and lets object n
  overwrite the cell when its Gaussian is >= the value already stored in its own class
  channel. The resulting owner is, exactly: for every class, the object with the largest
  Gaussian at that cell (the later one on ties); among those per-class winners, the one with
  the highest object index. The heatmap keeps the max per class, so a cell can carry
  heatmap values of several classes while its box targets belong to one object.

Deliberate deviations from GGHL HEAD:

* size filter: GGHL keeps an object if max(w, h) > 4 or w*w > 80 (w*h was probably meant).
  Both second clauses imply max(w, h) > 8.9 > 4, so the filter is exactly max(w, h) > 4
  either way; that is what is implemented.
* mixup weight: GGHL writes the last processed object's weight over the whole map. Here
  positive cells carry their owner's weight and negative cells carry 1 (background is a
  valid negative for both mixed images).
* padding rows (weight 0) and rows with a class outside [0, nC) are ignored (the latter
  raises an InvalidArgumentError when it has a nonzero weight).
* difficult objects are labelled like any other object (the flag matters for evaluation).
* theta comes from the polygon (direction of its long side) instead of a stored angle, so
  the Gaussian's long axis always follows the side used for L_w.
* the grid size is ceil(S / stride) (equal to S / stride when S is a multiple of 32).
* ORC targets come from ``dked_tf.ops.obb.poly_to_orc_tf`` (vertex ordering and GGHL's
  "refined approximation" for non-rectangular quadrilaterals as documented there); the
  r > 0.9 -> s = 0 rule is applied here.
"""

from __future__ import annotations

import math

import numpy as np
import tensorflow as tf

from dked_tf.ops.head_contract import TARGET_BOX_CHANNELS, TARGET_FIRST_CLASS_CHANNEL
from dked_tf.ops.obb import poly_to_orc_tf

IOU_THRESHOLD = 0.3  # GGHL HEAD `IOU_thresh` (T_IoU)
HEATMAP_FLOOR = 0.05  # Gaussian value a positive cell must exceed
HORIZONTAL_AREA_RATIO = 0.9  # r above this -> gliding ratios set to 0
MIN_OBJECT_SIDE = 4.0  # objects with max(w, h) <= this get no label (pixels)
LEVEL_OVERLAP = 1.2  # upper threshold margin giving two levels near a boundary
REFERENCE_SIZE = 800.0  # input size the level thresholds are defined at

# Column order of the per-object attribute table gathered into the maps.
_OBJ_CX, _OBJ_CY, _OBJ_W, _OBJ_H = 0, 1, 2, 3
_OBJ_XMIN, _OBJ_YMIN, _OBJ_XMAX, _OBJ_YMAX = 4, 5, 6, 7
_OBJ_S = slice(8, 12)
_OBJ_R, _OBJ_MIX, _OBJ_OMEGA = 12, 13, 14


def level_thresholds(image_size, strides=(8, 16, 32), iou_threshold=IOU_THRESHOLD, reference_size=None):
    """(tau_0, tau_1) in pixels for input size S (Python number or scalar tensor).

    reference_size: input size (pixels) at which the unscaled thresholds apply; they are
    multiplied by S / reference_size (None: ``REFERENCE_SIZE`` = 800, GGHL HEAD). Pass S
    itself (no scaling, GGHL's 2021-11 release) when the images are used at their native
    resolution, e.g. the 256 px synthetic set.
    """
    reference = REFERENCE_SIZE if reference_size is None else reference_size
    scale = tf.cast(image_size, tf.float32) / tf.cast(reference, tf.float32)
    tau0 = 3.0 * (2.0 * strides[0]) / (1.0 - iou_threshold) * scale
    tau1 = 3.0 * (2.0 * strides[-1]) / (1.0 - iou_threshold) * scale
    return tau0, tau1


def _object_geometry(polygons):
    """Per-object geometry from polygons float32 [B, M, 8] (pixels).

    Returns a dict of float32 [B, M] tensors: xmin, ymin, xmax, ymax, w, h, cx, cy (HBB),
    centre_x, centre_y (vertex mean), long_side, short_side (mean opposite side lengths),
    cos, sin (direction of the long side), area_ratio, and gliding [B, M, 4] (s1..s4, zeroed
    where area_ratio > 0.9).
    """
    xs = polygons[..., 0::2]
    ys = polygons[..., 1::2]
    xmin = tf.reduce_min(xs, axis=-1)
    xmax = tf.reduce_max(xs, axis=-1)
    ymin = tf.reduce_min(ys, axis=-1)
    ymax = tf.reduce_max(ys, axis=-1)
    w = xmax - xmin
    h = ymax - ymin

    vx = tf.unstack(xs, num=4, axis=-1)
    vy = tf.unstack(ys, num=4, axis=-1)

    def edge(i, j):
        return vx[j] - vx[i], vy[j] - vy[i]

    e12, e23, e34, e41 = edge(0, 1), edge(1, 2), edge(2, 3), edge(3, 0)

    def length(e):
        return tf.sqrt(e[0] * e[0] + e[1] * e[1])

    side_a = 0.5 * (length(e23) + length(e41))  # v2v3 and v4v1
    side_b = 0.5 * (length(e12) + length(e34))  # v1v2 and v3v4
    # Opposite sides run in opposite directions: their difference is the mean direction.
    dir_a = (e23[0] - e41[0], e23[1] - e41[1])
    dir_b = (e12[0] - e34[0], e12[1] - e34[1])
    a_is_long = side_a >= side_b
    long_side = tf.where(a_is_long, side_a, side_b)
    short_side = tf.where(a_is_long, side_b, side_a)
    dx = tf.where(a_is_long, dir_a[0], dir_b[0])
    dy = tf.where(a_is_long, dir_a[1], dir_b[1])
    norm = tf.sqrt(dx * dx + dy * dy)
    safe = norm > 1e-6
    cos = tf.where(safe, dx / tf.maximum(norm, 1e-6), tf.ones_like(dx))
    sin = tf.where(safe, dy / tf.maximum(norm, 1e-6), tf.zeros_like(dy))

    # ORC targets (hbb, gliding s1..s4, area ratio) from dked_tf.ops.obb; GGHL treats boxes
    # with r > 0.9 as horizontal (s = 0).
    _, gliding, area_ratio = poly_to_orc_tf(polygons)
    area_ratio = tf.clip_by_value(area_ratio, 0.0, 1.0)
    horizontal = (w <= 0.0) | (h <= 0.0) | (area_ratio > HORIZONTAL_AREA_RATIO)
    gliding = tf.where(horizontal[..., None], tf.zeros_like(gliding), gliding)

    return {
        "xmin": xmin,
        "ymin": ymin,
        "xmax": xmax,
        "ymax": ymax,
        "w": w,
        "h": h,
        "cx": 0.5 * (xmin + xmax),
        "cy": 0.5 * (ymin + ymax),
        "centre_x": tf.reduce_mean(xs, axis=-1),
        "centre_y": tf.reduce_mean(ys, axis=-1),
        "long_side": long_side,
        "short_side": short_side,
        "cos": cos,
        "sin": sin,
        "area_ratio": area_ratio,
        "gliding": gliding,
    }


def _window_offsets(radius):
    """Static integer offsets of a (2 radius + 1)^2 window: two float32 [P] tensors."""
    span = np.arange(-radius, radius + 1, dtype=np.float32)
    dy, dx = np.meshgrid(span, span, indexing="ij")
    return tf.constant(dx.reshape(-1)), tf.constant(dy.reshape(-1))


def _grid_size(image_size, stride):
    if isinstance(image_size, (int, np.integer)):
        return int(math.ceil(int(image_size) / stride))
    size = tf.cast(image_size, tf.float32)
    return tf.cast(tf.math.ceil(size / float(stride)), tf.int32)


def _encode_level(geo, classes, weights, valid, level, stride, grid, num_classes, batch, min_sigma=0.0):
    """Dense targets of one level: float32 [B, grid, grid, 16 + nC]; min_sigma: floor of the
    Gaussian's sigma (cells) along both axes."""
    s = float(stride)
    max_radius = float(max(1, 4 - level))
    grid_f = tf.cast(grid, tf.float32)
    num_objects = tf.shape(classes)[1]

    gx = tf.clip_by_value(tf.floor(geo["centre_x"] / s), 0.0, grid_f - 1.0)  # [B, M]
    gy = tf.clip_by_value(tf.floor(geo["centre_y"] / s), 0.0, grid_f - 1.0)
    radius_w = tf.floor(tf.clip_by_value(geo["w"] / (2.0 * s), 1.0, max_radius))
    radius_h = tf.floor(tf.clip_by_value(geo["h"] / (2.0 * s), 1.0, max_radius))
    omega = math.log(2.0) / tf.math.log(tf.sqrt(radius_w * radius_h) + 1.0)

    exponent = 1.0 - IOU_THRESHOLD
    spread_long = tf.pow(tf.maximum(geo["long_side"] / (2.0 * s), 1e-6), exponent)
    spread_short = tf.pow(tf.maximum(geo["short_side"] / (2.0 * s), 1e-6), exponent)
    if min_sigma > 0:  # sigma = spread / 2 cells
        spread_long = tf.maximum(spread_long, 2.0 * min_sigma)
        spread_short = tf.maximum(spread_short, 2.0 * min_sigma)

    off_x, off_y = _window_offsets(int(max_radius) + 1)  # [P]

    def e(t):  # [B, M] -> [B, M, 1]
        return t[..., None]

    dx = off_x[None, None, :] + tf.zeros_like(e(gx))  # [B, M, P]
    dy = off_y[None, None, :] + tf.zeros_like(e(gy))
    cell_x = e(gx) + dx
    cell_y = e(gy) + dy
    in_window = (
        (tf.abs(dx) <= e(radius_w) + 1.0)
        & (tf.abs(dy) <= e(radius_h) + 1.0)
        & (cell_x >= 0.0)
        & (cell_x < grid_f)
        & (cell_y >= 0.0)
        & (cell_y < grid_f)
    )

    u = e(geo["cos"]) * dx + e(geo["sin"]) * dy
    v = -e(geo["sin"]) * dx + e(geo["cos"]) * dy
    gauss = tf.exp(-0.5 * (tf.square(2.0 * u / e(spread_long)) + tf.square(2.0 * v / e(spread_short))))

    px = (cell_x + 0.5) * s
    py = (cell_y + 0.5) * s
    inside = (py > e(geo["ymin"])) & (px < e(geo["xmax"])) & (py < e(geo["ymax"])) & (px > e(geo["xmin"]))
    positive = e(valid) & in_window & inside & (gauss > HEATMAP_FLOOR)  # [B, M, P]

    # Scatter indices (clamped; masked entries scatter neutral values).
    last = tf.cast(grid, tf.int32) - 1
    ix = tf.clip_by_value(tf.cast(cell_x, tf.int32), 0, last)
    iy = tf.clip_by_value(tf.cast(cell_y, tf.int32), 0, last)
    b_idx = tf.broadcast_to(tf.range(batch)[:, None, None], tf.shape(ix))
    c_idx = tf.broadcast_to(tf.clip_by_value(classes, 0, num_classes - 1)[..., None], tf.shape(ix))
    cell_index = tf.stack([b_idx, iy, ix], axis=-1)  # [B, M, P, 3]
    class_index = tf.stack([b_idx, iy, ix, c_idx], axis=-1)  # [B, M, P, 4]

    gauss_pos = tf.where(positive, gauss, tf.zeros_like(gauss))
    heatmap = tf.tensor_scatter_nd_max(
        tf.zeros(tf.stack([batch, grid, grid, num_classes]), tf.float32),
        tf.reshape(class_index, [-1, 4]),
        tf.reshape(gauss_pos, [-1]),
    )

    # Owner: among per-class winners (max Gaussian of their class at the cell, later
    # object on ties), the one with the highest object index -- GGHL's sequential rule.
    stored = tf.gather_nd(heatmap, class_index)
    is_winner = positive & tf.equal(gauss, stored)
    object_id = tf.broadcast_to(tf.range(num_objects)[None, :, None], tf.shape(ix))
    owner = tf.tensor_scatter_nd_max(
        tf.fill(tf.stack([batch, grid, grid]), tf.constant(-1, tf.int32)),
        tf.reshape(cell_index, [-1, 3]),
        tf.reshape(tf.where(is_winner, object_id, -tf.ones_like(object_id)), [-1]),
    )

    # Gather the owner's attributes; row M of the table is an all-zero dummy (no owner).
    table = tf.concat(
        [
            tf.stack(
                [geo["cx"], geo["cy"], geo["w"], geo["h"], geo["xmin"], geo["ymin"], geo["xmax"], geo["ymax"]], axis=-1
            ),
            geo["gliding"],
            tf.stack([geo["area_ratio"], weights, omega], axis=-1),
        ],
        axis=-1,
    )  # [B, M, 15]
    table = tf.pad(table, [[0, 0], [0, 1], [0, 0]])
    is_positive = owner >= 0  # [B, G, G]
    owner_row = tf.where(is_positive, owner, tf.fill(tf.shape(owner), num_objects))
    attrs = tf.gather(table, tf.reshape(owner_row, [batch, -1]), batch_dims=1)
    attrs = tf.reshape(attrs, tf.stack([batch, grid, grid, 15]))

    centres = (tf.range(grid_f, dtype=tf.float32) + 0.5) * s
    pcx = centres[None, None, :]
    pcy = centres[None, :, None]
    pos_f = tf.cast(is_positive, tf.float32)
    distances = tf.stack(
        [
            pcy - attrs[..., _OBJ_YMIN],
            attrs[..., _OBJ_XMAX] - pcx,
            attrs[..., _OBJ_YMAX] - pcy,
            pcx - attrs[..., _OBJ_XMIN],
        ],
        axis=-1,
    )
    distances = distances * pos_f[..., None]
    mix = tf.where(is_positive, attrs[..., _OBJ_MIX], tf.ones_like(pos_f))
    return tf.concat(
        [
            attrs[..., _OBJ_CX : _OBJ_H + 1],
            distances,
            attrs[..., _OBJ_S],
            attrs[..., _OBJ_R : _OBJ_R + 1],
            pos_f[..., None],
            mix[..., None],
            attrs[..., _OBJ_OMEGA : _OBJ_OMEGA + 1],
            heatmap,
        ],
        axis=-1,
    )


def encode_targets(
    targets, image_size, num_classes, strides=(8, 16, 32), level_reference_size=None, min_gaussian_sigma=0.0
):
    """GGHL OLA targets for every pyramid level.

    targets: dict with ``polygons`` float [B, M, 8] (pixels of the letterboxed S x S input),
      ``classes`` int [B, M], optional ``weights`` float [B, M] (mixup weight, 0 = padding;
      default 1 for every row). Other keys are ignored.
    image_size: S, a Python int or a scalar tensor (multi-scale training).
    num_classes: nC (Python int).
    strides: three increasing strides.
    level_reference_size: see ``level_thresholds`` (``reference_size``); None = 800.
    min_gaussian_sigma: an option beyond GGHL (0 = GGHL): the Gaussian's sigma along each axis
      is at least this many cells, so slender objects get more positive cells (those whose
      centre lies inside the HBB) and a wider heatmap across their width.

    Returns a list (one per stride) of float32 [B, ceil(S/s), ceil(S/s), 16 + nC] tensors,
    layout ``head_contract.TARGET_*``.
    """
    strides = tuple(int(s) for s in strides)
    if len(strides) != 3:
        raise ValueError(f"assign.encode_targets: GGHL level assignment needs 3 strides, got {strides}")
    num_classes = int(num_classes)
    if num_classes < 1:
        raise ValueError(f"assign.encode_targets: num_classes must be >= 1, got {num_classes}")

    polygons = tf.cast(targets["polygons"], tf.float32)
    classes = tf.cast(targets["classes"], tf.int32)
    if "weights" in targets and targets["weights"] is not None:
        weights = tf.cast(targets["weights"], tf.float32)
    else:
        weights = tf.ones(tf.shape(classes), tf.float32)
    batch = tf.shape(polygons)[0]

    used = weights > 0.0
    class_ok = (classes >= 0) & (classes < num_classes)
    check = tf.debugging.assert_equal(
        tf.reduce_all(class_ok | ~used),
        True,
        message=f"assign.encode_targets: a non-padding target row has a class id outside [0, {num_classes})",
    )
    with tf.control_dependencies([check]):
        polygons = tf.identity(polygons)

    geo = _object_geometry(polygons)
    long_hbb = tf.maximum(geo["w"], geo["h"])
    valid = used & class_ok & (long_hbb > MIN_OBJECT_SIDE)
    tau0, tau1 = level_thresholds(image_size, strides, reference_size=level_reference_size)
    level_masks = [
        long_hbb <= LEVEL_OVERLAP * tau0,
        (long_hbb > tau0) & (long_hbb <= LEVEL_OVERLAP * tau1),
        long_hbb > tau1,
    ]

    outputs = []
    for level, stride in enumerate(strides):
        grid = _grid_size(image_size, stride)
        encoded = _encode_level(
            geo,
            classes,
            weights,
            valid & level_masks[level],
            level,
            stride,
            grid,
            num_classes,
            batch,
            min_sigma=float(min_gaussian_sigma),
        )
        static_grid = grid if isinstance(grid, int) else None
        encoded = tf.ensure_shape(encoded, [None, static_grid, static_grid, TARGET_BOX_CHANNELS + num_classes])
        outputs.append(encoded)
    return outputs


def heatmap_max(encoded_level):
    """Class-agnostic Gaussian map G of one level: [B, H, W] (max over class channels)."""
    return tf.reduce_max(encoded_level[..., TARGET_FIRST_CLASS_CHANNEL:], axis=-1)
