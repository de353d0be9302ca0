"""Oriented-box representations and exact conversions between them.

Conventions (see docs/interfaces.md):

- ``poly [..., 8]``: x1 y1 x2 y2 x3 y3 x4 y4, pixels, image coordinates (x right, y down).
- ``rbox [..., 5]``: cx, cy, w, h, theta; ``w >= h`` (long side), theta in radians in
  [-pi/2, pi/2), the angle of the long side from +x towards +y (mmrotate ``le90``).
  Squares are ambiguous under ``le90``; this module picks theta in [-pi/4, pi/4) for them.
- ``mbox [..., 5]``: HRSC2016 ``mbox_cx, mbox_cy, mbox_w, mbox_h, mbox_ang``; the ``w`` side
  points along (cos ang, sin ang) in image coordinates, no normalisation.
- ``xywhr [..., 5]``: Ultralytics (cx, cy, w, h, r); the ``w`` side points along (cos r, sin r).
- ORC (GGHL): ``hbb [..., 4]`` = xmin, ymin, xmax, ymax; ``gliding [..., 4]`` = s1..s4;
  ``area_ratio [...]`` = polygon area / HBB area.

Our reading of GGHL's ORC (reference §1.2 and §1.6). The quadrilateral's vertices are put in
clockwise order on screen (positive shoelace sum with y pointing down) and then rotated so
that v1 lies on the top HBB edge (y = ymin), v2 on the right (x = xmax), v3 on the bottom
(y = ymax) and v4 on the left (x = xmin). The gliding ratios are

    s1 = (x1 - xmin) / w,   s2 = (y2 - ymin) / h,   s3 = (xmax - x3) / w,   s4 = (ymax - y4) / h

with w, h the HBB width and height, so decoding walks clockwise from the top-left corner:
v1 = (xmin + s1 w, ymin), v2 = (xmax, ymin + s2 h), v3 = (xmax - s3 w, ymax),
v4 = (xmin, ymax - s4 h). For a rectangle (any angle) the four vertices are exactly the four
extreme points, so the encoding is exact. A general convex quadrilateral can have a vertex
that is on no HBB edge (or one vertex that is extreme in two directions); GGHL's "refined
approximation" then snaps the offending coordinate onto the edge. We do the same without a
case table: of the four cyclic rotations of the clockwise vertex list, we take the one that
needs the smallest total snap distance (ties, e.g. axis-aligned boxes, go to the smallest sum
of gliding ratios, i.e. s = 0 for a horizontal box), then set y1 = ymin, x2 = xmax, y3 = ymax,
x4 = xmin. Snapping never moves a vertex outside the HBB, so the HBB is unchanged. Gliding
ratios are in [0, 1]; 1 only occurs for degenerate quadrilaterals.

numpy functions compute in float64; ``*_tf`` twins take/return ``tf.Tensor`` (float32 by
default), accept any leading shape ``[..., 8]``, work inside ``tf.function`` with dynamic
shapes, and use only ops that TFLite converts as builtins (ATAN2, ARG_MIN, ONE_HOT, GATHER,
...), so they can be exported inside a detector graph.
"""

import math

import numpy as np

__all__ = [
    "normalize_rbox",
    "poly_to_rbox",
    "rbox_to_poly",
    "mbox_to_rbox",
    "rbox_to_mbox",
    "mbox_to_poly",
    "xywhr_to_rbox",
    "rbox_to_xywhr",
    "poly_area",
    "poly_to_hbb",
    "order_poly_for_orc",
    "poly_to_orc",
    "orc_to_poly",
    "normalize_rbox_tf",
    "poly_to_rbox_tf",
    "rbox_to_poly_tf",
    "poly_area_tf",
    "poly_to_hbb_tf",
    "poly_to_orc_tf",
    "orc_to_poly_tf",
]

HALF_PI = math.pi / 2
QUARTER_PI = math.pi / 4

# float64 tolerances (numpy): angles within this of a range end are wrapped to the other end;
# boxes whose sides differ by less than this (relative) are squares.
_ANGLE_TOL = 1e-12
_SQUARE_RTOL = 1e-9
# float32 tolerances (TensorFlow twins).
_ANGLE_TOL_TF = 1e-6
_SQUARE_RTOL_TF = 1e-5

# The 6 vertex pairs whose directions are candidate sides of the minimum-area rectangle
# (4 edges of a quadrilateral in any order + its 2 diagonals cover every convex-hull edge).
_PAIR_FIRST = (0, 1, 2, 3, 0, 1)
_PAIR_SECOND = (1, 2, 3, 0, 2, 3)
# Cyclic rotations of 4 vertices, and the reversal that flips orientation.
_ROTATIONS = ((0, 1, 2, 3), (1, 2, 3, 0), (2, 3, 0, 1), (3, 0, 1, 2))
_REVERSE = (0, 3, 2, 1)
# Weight of the "sum of gliding ratios" tie-break relative to the snap distance / (w + h).
_TIE_BREAK_WEIGHT = 1e-9


# ----------------------------------------------------------------------------------------
# input checks (numpy)


def _as_float_array(values, last_dim, name):
    """float64 array [..., last_dim]; ValueError naming the expected shape and bad rows."""
    array = np.asarray(values)
    if array.dtype == object or not (np.issubdtype(array.dtype, np.floating) or np.issubdtype(array.dtype, np.integer)):
        raise ValueError(f"{name}: expected a float array of shape [..., {last_dim}], got dtype {array.dtype}")
    if array.ndim == 0 or array.shape[-1] != last_dim:
        raise ValueError(f"{name}: expected shape [..., {last_dim}], got {list(array.shape)}")
    array = array.astype(np.float64, copy=False)
    finite = np.isfinite(array).all(axis=-1)
    if not finite.all():
        bad = np.argwhere(~finite)[0]
        row = tuple(int(i) for i in bad)
        raise ValueError(f"{name}: row {row[0] if len(row) == 1 else row} is not finite: {array[tuple(bad)].tolist()}")
    return array


# ----------------------------------------------------------------------------------------
# rbox


def normalize_rbox(rbox):
    """Brings any (cx, cy, w, h, theta) box to ``le90``.

    rbox: float [..., 5], pixels and radians (w, h may be in any order or negative).
    Returns float64 [..., 5] with w >= h, theta in [-pi/2, pi/2); squares get theta in
    [-pi/4, pi/4) (their w and h may then differ by < 1e-9 relative).
    """
    rbox = _as_float_array(rbox, 5, "rbox")
    cx, cy = rbox[..., 0], rbox[..., 1]
    w, h, theta = np.abs(rbox[..., 2]), np.abs(rbox[..., 3]), rbox[..., 4]
    swap = w < h
    w, h = np.where(swap, h, w), np.where(swap, w, h)
    theta = np.where(swap, theta + HALF_PI, theta)
    theta = np.mod(theta + HALF_PI, math.pi) - HALF_PI
    theta = np.where(theta >= HALF_PI - _ANGLE_TOL, theta - math.pi, theta)
    theta = np.maximum(theta, -HALF_PI)
    square = (w - h) <= _SQUARE_RTOL * w
    turn_down = square & (theta >= QUARTER_PI - _ANGLE_TOL)
    turn_up = square & (theta < -QUARTER_PI - _ANGLE_TOL)
    theta = np.where(turn_down, theta - HALF_PI, np.where(turn_up, theta + HALF_PI, theta))
    turned = turn_down | turn_up
    w, h = np.where(turned, h, w), np.where(turned, w, h)
    return np.stack([cx, cy, w, h, theta], axis=-1)


def rbox_to_poly(rbox):
    """rbox float [..., 5] (cx, cy, w, h, theta) -> poly float64 [..., 8].

    Vertices (-w/2, -h/2), (w/2, -h/2), (w/2, h/2), (-w/2, h/2) rotated by theta about the
    centre: top-left, top-right, bottom-right, bottom-left for theta = 0 (clockwise on screen).
    Any theta/w/h works (no normalisation needed).
    """
    rbox = _as_float_array(rbox, 5, "rbox")
    cx, cy, w, h, theta = np.moveaxis(rbox, -1, 0)
    cos, sin = np.cos(theta), np.sin(theta)
    ux, uy = 0.5 * w * cos, 0.5 * w * sin  # half of the w side
    vx, vy = -0.5 * h * sin, 0.5 * h * cos  # half of the h side
    return np.stack(
        [
            cx - ux - vx,
            cy - uy - vy,
            cx + ux - vx,
            cy + uy - vy,
            cx + ux + vx,
            cy + uy + vy,
            cx - ux + vx,
            cy - uy + vy,
        ],
        axis=-1,
    )


def poly_to_rbox(poly):
    """poly float [..., 8] -> rbox float64 [..., 5] (``le90``), the minimum-area rectangle.

    Exact (to rounding) for rectangles in any vertex order; for other quadrilaterals the
    minimum-area enclosing rectangle (same as ``cv2.minAreaRect``, up to the angle convention).
    """
    poly = _as_float_array(poly, 8, "poly")
    points = poly.reshape(poly.shape[:-1] + (4, 2))
    origin = points.mean(axis=-2, keepdims=True)
    points = points - origin  # keeps precision for large coordinates
    direction = points[..., _PAIR_SECOND, :] - points[..., _PAIR_FIRST, :]  # [..., 6, 2]
    length = np.hypot(direction[..., 0], direction[..., 1])
    valid = length > 0
    unit = direction / np.where(valid, length, 1.0)[..., None]
    ux, uy = unit[..., 0:1], unit[..., 1:2]  # [..., 6, 1]
    px, py = points[..., None, :, 0], points[..., None, :, 1]  # [..., 1, 4]
    along = px * ux + py * uy  # [..., 6, 4]
    across = py * ux - px * uy
    a_min, a_max = along.min(-1), along.max(-1)
    b_min, b_max = across.min(-1), across.max(-1)
    area = np.where(valid, (a_max - a_min) * (b_max - b_min), np.inf)
    best = np.argmin(area, axis=-1)[..., None]

    def pick(values):
        return np.take_along_axis(values, best, axis=-1)[..., 0]

    ux, uy = pick(unit[..., 0]), pick(unit[..., 1])
    a_mid = 0.5 * (pick(a_min) + pick(a_max))
    b_mid = 0.5 * (pick(b_min) + pick(b_max))
    cx = origin[..., 0, 0] + a_mid * ux - b_mid * uy
    cy = origin[..., 0, 1] + a_mid * uy + b_mid * ux
    w = pick(a_max) - pick(a_min)
    h = pick(b_max) - pick(b_min)
    all_same = ~valid.any(axis=-1)  # every vertex identical: a point
    w, h = np.where(all_same, 0.0, w), np.where(all_same, 0.0, h)
    theta = np.where(all_same, 0.0, np.arctan2(uy, ux))
    return normalize_rbox(np.stack([cx, cy, w, h, theta], axis=-1))


# ----------------------------------------------------------------------------------------
# HRSC2016 mbox and Ultralytics xywhr


def mbox_to_rbox(mbox):
    """HRSC2016 mbox float [..., 5] (cx, cy, w, h, ang radians) -> rbox float64 [..., 5]."""
    return normalize_rbox(_as_float_array(mbox, 5, "mbox"))


def rbox_to_mbox(rbox):
    """rbox float [..., 5] -> HRSC2016 mbox float64 [..., 5]: w >= h, ang in (-pi/2, pi/2]."""
    rbox = normalize_rbox(rbox)
    ang = rbox[..., 4]
    ang = np.where(ang <= -HALF_PI + _ANGLE_TOL, ang + math.pi, ang)
    return np.concatenate([rbox[..., :4], ang[..., None]], axis=-1)


def mbox_to_poly(mbox):
    """HRSC2016 mbox float [..., 5] -> poly float64 [..., 8]."""
    return rbox_to_poly(_as_float_array(mbox, 5, "mbox"))


def xywhr_to_rbox(xywhr):
    """Ultralytics xywhr float [..., 5] (cx, cy, w, h, r radians) -> rbox float64 [..., 5]."""
    return normalize_rbox(_as_float_array(xywhr, 5, "xywhr"))


def rbox_to_xywhr(rbox):
    """rbox float [..., 5] -> Ultralytics xywhr float64 [..., 5] in its regularised form:
    w >= h, r in [0, pi) (``ultralytics.utils.ops.regularize_rboxes``)."""
    rbox = normalize_rbox(rbox)
    r = np.mod(rbox[..., 4], math.pi)
    r = np.where(r >= math.pi - _ANGLE_TOL, 0.0, r)
    return np.concatenate([rbox[..., :4], r[..., None]], axis=-1)


# ----------------------------------------------------------------------------------------
# polygons, HBB, ORC


def poly_area(poly, signed=False):
    """poly float [..., 8] -> area float64 [...], pixels².

    signed=True keeps the sign of the shoelace sum: positive for vertices listed clockwise
    on screen (image coordinates, y down), negative for counter-clockwise.
    """
    poly = _as_float_array(poly, 8, "poly")
    x, y = poly[..., 0::2], poly[..., 1::2]
    x = x - x[..., :1]
    y = y - y[..., :1]
    area = 0.5 * np.sum(x * np.roll(y, -1, axis=-1) - np.roll(x, -1, axis=-1) * y, axis=-1)
    return area if signed else np.abs(area)


def poly_to_hbb(poly):
    """poly float [..., 8] -> hbb float64 [..., 4] = xmin, ymin, xmax, ymax."""
    poly = _as_float_array(poly, 8, "poly")
    x, y = poly[..., 0::2], poly[..., 1::2]
    return np.stack([x.min(-1), y.min(-1), x.max(-1), y.max(-1)], axis=-1)


def _safe_divide(numerator, denominator):
    positive = denominator > 0
    return np.where(positive, numerator / np.where(positive, denominator, 1.0), 0.0)


def order_poly_for_orc(poly):
    """Orders (and, where needed, snaps) a quadrilateral for ORC.

    poly: float [..., 8], any vertex order. Returns float64 [..., 8] with v1 on the top HBB
    edge, v2 on the right, v3 on the bottom, v4 on the left (clockwise on screen), after
    GGHL's refined approximation (see the module docstring). Rectangles are unchanged as
    vertex sets.
    """
    poly = _as_float_array(poly, 8, "poly")
    points = poly.reshape(poly.shape[:-1] + (4, 2))
    clockwise = poly_area(poly, signed=True) >= 0
    points = np.where(clockwise[..., None, None], points, points[..., _REVERSE, :])
    xmin, ymin = points[..., 0].min(-1), points[..., 1].min(-1)
    xmax, ymax = points[..., 0].max(-1), points[..., 1].max(-1)
    width, height = xmax - xmin, ymax - ymin
    keys = []
    for rotation in _ROTATIONS:
        q = points[..., rotation, :]
        snap = (q[..., 0, 1] - ymin) + (xmax - q[..., 1, 0]) + (ymax - q[..., 2, 1]) + (q[..., 3, 0] - xmin)
        gliding_sum = (
            _safe_divide(q[..., 0, 0] - xmin, width)
            + _safe_divide(q[..., 1, 1] - ymin, height)
            + _safe_divide(xmax - q[..., 2, 0], width)
            + _safe_divide(ymax - q[..., 3, 1], height)
        )
        keys.append(_safe_divide(snap, width + height) + _TIE_BREAK_WEIGHT * gliding_sum)
    best = np.argmin(np.stack(keys, axis=-1), axis=-1)
    index = np.asarray(_ROTATIONS)[best]  # [..., 4]
    ordered = np.take_along_axis(points, index[..., None], axis=-2).copy()
    ordered[..., 0, 1] = ymin
    ordered[..., 1, 0] = xmax
    ordered[..., 2, 1] = ymax
    ordered[..., 3, 0] = xmin
    return ordered.reshape(poly.shape)


def poly_to_orc(poly):
    """poly float [..., 8] -> (hbb [..., 4], gliding [..., 4], area_ratio [...]), float64.

    hbb = xmin, ymin, xmax, ymax (pixels); gliding = s1..s4 in [0, 1]; area_ratio = area of
    the ordered (snapped) quadrilateral / HBB area, 1.0 for a degenerate HBB.
    """
    ordered = order_poly_for_orc(poly)
    hbb = poly_to_hbb(ordered)
    xmin, ymin, xmax, ymax = np.moveaxis(hbb, -1, 0)
    width, height = xmax - xmin, ymax - ymin
    gliding = np.stack(
        [
            _safe_divide(ordered[..., 0] - xmin, width),
            _safe_divide(ordered[..., 3] - ymin, height),
            _safe_divide(xmax - ordered[..., 4], width),
            _safe_divide(ymax - ordered[..., 7], height),
        ],
        axis=-1,
    )
    gliding = np.clip(gliding, 0.0, 1.0)
    hbb_area = width * height
    area_ratio = np.where(hbb_area > 0, _safe_divide(poly_area(ordered), hbb_area), 1.0)
    return hbb, gliding, area_ratio


def orc_to_poly(hbb, gliding, area_ratio=None, horizontal_threshold=0.9):
    """ORC -> poly float64 [..., 8] (v1 top, v2 right, v3 bottom, v4 left).

    hbb: float [..., 4] xmin, ymin, xmax, ymax; gliding: float [..., 4] s1..s4;
    area_ratio: float [...] or None. Where area_ratio > horizontal_threshold the box is
    taken as horizontal (s = 0), as in GGHL's decoding.
    """
    hbb = _as_float_array(hbb, 4, "hbb")
    gliding = _as_float_array(gliding, 4, "gliding")
    if area_ratio is not None:
        area_ratio = np.asarray(area_ratio, dtype=np.float64)
        gliding = np.where((area_ratio > horizontal_threshold)[..., None], 0.0, gliding)
    xmin, ymin, xmax, ymax = np.moveaxis(hbb, -1, 0)
    s1, s2, s3, s4 = np.moveaxis(gliding, -1, 0)
    width, height = xmax - xmin, ymax - ymin
    return np.stack(
        [
            xmin + s1 * width,
            ymin,
            xmax,
            ymin + s2 * height,
            xmax - s3 * width,
            ymax,
            xmin,
            ymax - s4 * height,
        ],
        axis=-1,
    )


# ----------------------------------------------------------------------------------------
# TensorFlow twins (float32 by default, builtin TFLite ops only)


def _tf():
    import tensorflow as tf

    return tf


def _tf_float(values, last_dim, name, dtype=None):
    tf = _tf()
    tensor = tf.convert_to_tensor(values)
    if not (tensor.dtype.is_floating or tensor.dtype.is_integer):
        raise ValueError(f"{name}: expected a float tensor of shape [..., {last_dim}], got {tensor.dtype}")
    if dtype is None:
        dtype = tensor.dtype if tensor.dtype.is_floating else tf.float32
    tensor = tf.cast(tensor, dtype)
    static = tensor.shape
    if static.rank == 0 or (static.rank is not None and static[-1] is not None and static[-1] != last_dim):
        raise ValueError(f"{name}: expected shape [..., {last_dim}], got {static}")
    return tensor


def _tf_safe_divide(numerator, denominator):
    tf = _tf()
    positive = denominator > 0
    return tf.where(
        positive, numerator / tf.where(positive, denominator, tf.ones_like(denominator)), tf.zeros_like(numerator)
    )


def normalize_rbox_tf(rbox):
    """TF twin of :func:`normalize_rbox` (float32 tolerances). rbox [..., 5] -> [..., 5]."""
    tf = _tf()
    rbox = _tf_float(rbox, 5, "rbox")
    cx, cy = rbox[..., 0], rbox[..., 1]
    w, h, theta = tf.abs(rbox[..., 2]), tf.abs(rbox[..., 3]), rbox[..., 4]
    swap = w < h
    w, h = tf.where(swap, h, w), tf.where(swap, w, h)
    theta = tf.where(swap, theta + HALF_PI, theta)
    # floor-mod written with floor so that it lowers to FLOOR (builtin) in TFLite
    shifted = theta + HALF_PI
    theta = shifted - math.pi * tf.floor(shifted / math.pi) - HALF_PI
    theta = tf.where(theta >= HALF_PI - _ANGLE_TOL_TF, theta - math.pi, theta)
    theta = tf.maximum(theta, -HALF_PI)
    square = (w - h) <= _SQUARE_RTOL_TF * w
    turn_down = tf.logical_and(square, theta >= QUARTER_PI - _ANGLE_TOL_TF)
    turn_up = tf.logical_and(square, theta < -QUARTER_PI - _ANGLE_TOL_TF)
    theta = tf.where(turn_down, theta - HALF_PI, tf.where(turn_up, theta + HALF_PI, theta))
    turned = tf.logical_or(turn_down, turn_up)
    w, h = tf.where(turned, h, w), tf.where(turned, w, h)
    return tf.stack([cx, cy, w, h, theta], axis=-1)


def rbox_to_poly_tf(rbox):
    """TF twin of :func:`rbox_to_poly`. rbox [..., 5] -> poly [..., 8] (same dtype)."""
    tf = _tf()
    rbox = _tf_float(rbox, 5, "rbox")
    cx, cy, w, h, theta = tf.unstack(rbox, num=5, axis=-1)
    cos, sin = tf.cos(theta), tf.sin(theta)
    ux, uy = 0.5 * w * cos, 0.5 * w * sin
    vx, vy = -0.5 * h * sin, 0.5 * h * cos
    return tf.stack(
        [
            cx - ux - vx,
            cy - uy - vy,
            cx + ux - vx,
            cy + uy - vy,
            cx + ux + vx,
            cy + uy + vy,
            cx - ux + vx,
            cy - uy + vy,
        ],
        axis=-1,
    )


def _tf_points(poly):
    """[..., 8] -> x [..., 4], y [..., 4] without strided slices."""
    tf = _tf()
    x = tf.gather(poly, [0, 2, 4, 6], axis=-1)
    y = tf.gather(poly, [1, 3, 5, 7], axis=-1)
    return x, y


def poly_to_rbox_tf(poly):
    """TF twin of :func:`poly_to_rbox` (minimum-area rectangle). poly [..., 8] -> rbox [..., 5]."""
    tf = _tf()
    poly = _tf_float(poly, 8, "poly")
    x, y = _tf_points(poly)
    ox = tf.reduce_mean(x, axis=-1, keepdims=True)
    oy = tf.reduce_mean(y, axis=-1, keepdims=True)
    x, y = x - ox, y - oy
    dx = tf.gather(x, _PAIR_SECOND, axis=-1) - tf.gather(x, _PAIR_FIRST, axis=-1)  # [..., 6]
    dy = tf.gather(y, _PAIR_SECOND, axis=-1) - tf.gather(y, _PAIR_FIRST, axis=-1)
    squared = dx * dx + dy * dy
    valid = squared > 0
    # zero-length directions become (1, 0): no NaN in values or gradients
    length = tf.sqrt(tf.where(valid, squared, tf.ones_like(squared)))
    ux = tf.where(valid, dx / length, tf.ones_like(dx))
    uy = tf.where(valid, dy / length, tf.zeros_like(dy))
    # (tf.expand_dims rather than [..., None]: new-axis strided slices need TF-Select)
    px, py = tf.expand_dims(x, -2), tf.expand_dims(y, -2)  # [..., 1, 4]
    ux_, uy_ = tf.expand_dims(ux, -1), tf.expand_dims(uy, -1)  # [..., 6, 1]
    along = px * ux_ + py * uy_  # [..., 6, 4]
    across = py * ux_ - px * uy_
    a_min, a_max = tf.reduce_min(along, -1), tf.reduce_max(along, -1)
    b_min, b_max = tf.reduce_min(across, -1), tf.reduce_max(across, -1)
    big = tf.fill(tf.shape(a_min), tf.constant(3.0e38, a_min.dtype))
    area = tf.where(valid, (a_max - a_min) * (b_max - b_min), big)
    best = tf.one_hot(tf.math.argmin(area, axis=-1, output_type=tf.int32), 6, dtype=poly.dtype)

    def pick(values):
        return tf.reduce_sum(values * best, axis=-1)

    ux, uy = pick(ux), pick(uy)
    a_lo, a_hi, b_lo, b_hi = pick(a_min), pick(a_max), pick(b_min), pick(b_max)
    a_mid, b_mid = 0.5 * (a_lo + a_hi), 0.5 * (b_lo + b_hi)
    cx = ox[..., 0] + a_mid * ux - b_mid * uy
    cy = oy[..., 0] + a_mid * uy + b_mid * ux
    w, h = a_hi - a_lo, b_hi - b_lo
    theta = tf.math.atan2(uy, ux)
    return normalize_rbox_tf(tf.stack([cx, cy, w, h, theta], axis=-1))


def poly_area_tf(poly, signed=False):
    """TF twin of :func:`poly_area`. poly [..., 8] -> area [...]."""
    tf = _tf()
    poly = _tf_float(poly, 8, "poly")
    x, y = _tf_points(poly)
    x = x - x[..., :1]
    y = y - y[..., :1]
    x_next = tf.gather(x, [1, 2, 3, 0], axis=-1)
    y_next = tf.gather(y, [1, 2, 3, 0], axis=-1)
    area = 0.5 * tf.reduce_sum(x * y_next - x_next * y, axis=-1)
    return area if signed else tf.abs(area)


def poly_to_hbb_tf(poly):
    """TF twin of :func:`poly_to_hbb`. poly [..., 8] -> hbb [..., 4]."""
    tf = _tf()
    poly = _tf_float(poly, 8, "poly")
    x, y = _tf_points(poly)
    return tf.stack(
        [tf.reduce_min(x, -1), tf.reduce_min(y, -1), tf.reduce_max(x, -1), tf.reduce_max(y, -1)],
        axis=-1,
    )


def poly_to_orc_tf(poly):
    """TF twin of :func:`poly_to_orc`. poly [..., 8] -> (hbb [..., 4], gliding [..., 4],
    area_ratio [...])."""
    tf = _tf()
    poly = _tf_float(poly, 8, "poly")
    x, y = _tf_points(poly)
    clockwise = poly_area_tf(poly, signed=True) >= 0
    clockwise = tf.expand_dims(clockwise, -1)
    x = tf.where(clockwise, x, tf.gather(x, _REVERSE, axis=-1))
    y = tf.where(clockwise, y, tf.gather(y, _REVERSE, axis=-1))
    xmin, ymin = tf.reduce_min(x, -1), tf.reduce_min(y, -1)
    xmax, ymax = tf.reduce_max(x, -1), tf.reduce_max(y, -1)
    width, height = xmax - xmin, ymax - ymin
    keys, glidings = [], []
    for rotation in _ROTATIONS:
        qx, qy = tf.gather(x, rotation, axis=-1), tf.gather(y, rotation, axis=-1)
        snap = (qy[..., 0] - ymin) + (xmax - qx[..., 1]) + (ymax - qy[..., 2]) + (qx[..., 3] - xmin)
        gliding = tf.stack(
            [
                _tf_safe_divide(qx[..., 0] - xmin, width),
                _tf_safe_divide(qy[..., 1] - ymin, height),
                _tf_safe_divide(xmax - qx[..., 2], width),
                _tf_safe_divide(ymax - qy[..., 3], height),
            ],
            axis=-1,
        )
        glidings.append(gliding)
        keys.append(_tf_safe_divide(snap, width + height) + 1e-6 * tf.reduce_sum(gliding, -1))
    best = tf.one_hot(
        tf.math.argmin(tf.stack(keys, -1), axis=-1, output_type=tf.int32), 4, dtype=poly.dtype
    )  # [..., 4]
    gliding = tf.reduce_sum(tf.stack(glidings, axis=-2) * tf.expand_dims(best, -1), axis=-2)
    gliding = tf.clip_by_value(gliding, 0.0, 1.0)
    hbb = tf.stack([xmin, ymin, xmax, ymax], axis=-1)
    ordered = orc_to_poly_tf(hbb, gliding)  # the snapped quadrilateral
    hbb_area = width * height
    area_ratio = tf.where(hbb_area > 0, _tf_safe_divide(poly_area_tf(ordered), hbb_area), tf.ones_like(hbb_area))
    return hbb, gliding, area_ratio


def orc_to_poly_tf(hbb, gliding, area_ratio=None, horizontal_threshold=0.9):
    """TF twin of :func:`orc_to_poly`. hbb [..., 4], gliding [..., 4], area_ratio [...] or
    None -> poly [..., 8] (dtype of hbb)."""
    tf = _tf()
    hbb = _tf_float(hbb, 4, "hbb")
    gliding = _tf_float(gliding, 4, "gliding", dtype=hbb.dtype)
    if area_ratio is not None:
        area_ratio = tf.cast(area_ratio, hbb.dtype)
        horizontal = tf.expand_dims(area_ratio > horizontal_threshold, -1)
        gliding = tf.where(horizontal, tf.zeros_like(gliding), gliding)
    xmin, ymin, xmax, ymax = tf.unstack(hbb, num=4, axis=-1)
    s1, s2, s3, s4 = tf.unstack(gliding, num=4, axis=-1)
    width, height = xmax - xmin, ymax - ymin
    return tf.stack(
        [
            xmin + s1 * width,
            ymin,
            xmax,
            ymin + s2 * height,
            xmax - s3 * width,
            ymax,
            xmin,
            ymax - s4 * height,
        ],
        axis=-1,
    )
