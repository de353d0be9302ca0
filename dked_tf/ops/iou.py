"""Exact IoU of quadrilaterals (oriented boxes and any simple quadrilateral), numpy (float64)
and TensorFlow.

numpy (`poly_iou`, `poly_iou_pairwise`, `quad_intersection_area`): exact for every simple
quadrilateral, convex or not, in any vertex order (clockwise, counter-clockwise, any start).
Zero-area quadrilaterals (all points equal, collinear) and self-intersecting ones (bow-ties) are
not regions: their IoU with anything is 0. `quad_validity` says which is which; it is the one
definition the readers, the training pipeline, the evaluation and the NMS use.

Method (vectorized over all pairs, no Python loop over pairs, no variable-length polygons): a
non-convex simple quadrilateral has exactly one reflex vertex; the diagonal from it cuts the
quadrilateral into two triangles, so every valid quadrilateral is one or two convex pieces
(a triangle is stored as a quadrilateral with its last vertex repeated) and the intersection of
two quadrilaterals is the sum of the intersections of their pieces. For two convex pieces P and
Q with the same orientation, by Green's theorem twice the area of P ∩ Q is the sum over its
boundary of ``x dy - y dx``; that boundary is made of the parts of P's edges inside Q plus the
parts of Q's edges inside P, each one sub-segment found by clipping the edge's parameter
t ∈ [0, 1] against the half-planes of the other piece (Cyrus–Beck; a zero-length edge clips
nothing). Edges lying on a common line are counted once when they run in the same direction
(P's copy) and not at all when they run in opposite directions (pieces touching from outside),
so identical and touching boxes come out exact. Each pair is translated to its own origin first,
so 1e6-pixel coordinates keep precision.

TensorFlow (`poly_iou_tf`, `poly_iou_pairwise_tf`): the same clipping for convex quadrilaterals
only (one piece), builtin TFLite ops; it serves the in-graph NMS of model outputs, which are
convex by construction (GGHL's ORC quadrilaterals have one vertex on each side of a box).

`tflite/detect.py` loads this file by path on devices without TensorFlow or the package: keep
the module's top-level imports to numpy.
"""

import collections

import numpy as np

__all__ = [
    "poly_iou",
    "poly_iou_pairwise",
    "poly_iou_tf",
    "poly_iou_pairwise_tf",
    "quad_intersection_area",
    "quad_validity",
    "VALID",
    "ZERO_AREA",
    "SELF_INTERSECTING",
    "VALIDITY_NAMES",
]

# quad_validity codes
VALID, ZERO_AREA, SELF_INTERSECTING = 0, 1, 2
VALIDITY_NAMES = {VALID: "valid", ZERO_AREA: "zero area", SELF_INTERSECTING: "self-intersecting"}

# A quadrilateral whose area is below this fraction of its bounding-box-diagonal² is degenerate.
_DEGENERATE_RTOL = 1e-12
# Edges closer to a common line than this fraction of the pair's size count as collinear.
_COLLINEAR_RTOL = 1e-10
_DEGENERATE_RTOL_TF = 1e-6
_COLLINEAR_RTOL_TF = 1e-5
# Pairs per chunk in the numpy path (small chunks stay in cache).
_CHUNK_PAIRS = 1 << 12
_NEXT = [1, 2, 3, 0]
_PREVIOUS = [3, 0, 1, 2]


def _check_polys(values, name):
    """float64 [N, 8] with clear errors for wrong shapes, dtypes and non-finite rows."""
    array = np.asarray(values)
    if array.dtype == object or not (np.issubdtype(array.dtype, np.floating) or np.issubdtype(array.dtype, np.integer)):
        raise ValueError(f"{name}: expected a float array of shape [N, 8], got dtype {array.dtype}")
    if array.ndim != 2 or array.shape[1] != 8:
        raise ValueError(f"{name}: expected shape [N, 8], got {list(array.shape)}")
    array = array.astype(np.float64, copy=False)
    finite = np.isfinite(array).all(axis=1)
    if not finite.all():
        row = int(np.argmin(finite))
        raise ValueError(f"{name}: row {row} is not finite: {array[row].tolist()}")
    return array


def _cross(ax, ay, bx, by):
    return ax * by - ay * bx


def _properly_cross(p, q, r, s):
    """Whether segments p-q and r-s ([K, 2] each) cross at one point inside both (not at an end)."""
    d1 = _cross(*(q - p).T, *(r - p).T)
    d2 = _cross(*(q - p).T, *(s - p).T)
    d3 = _cross(*(s - r).T, *(p - r).T)
    d4 = _cross(*(s - r).T, *(q - r).T)
    return (d1 * d2 < 0) & (d3 * d4 < 0)


def _classify(points, area_rtol):
    """points [K, 4, 2] -> (positively oriented points, area [K], diagonal² [K], codes int8 [K])."""
    rel = points - points[:, :1]
    x, y = rel[..., 0], rel[..., 1]
    twice_area = np.sum(x * np.roll(y, -1, axis=1) - np.roll(x, -1, axis=1) * y, axis=1)
    oriented = np.where((twice_area < 0)[:, None, None], points[:, ::-1], points)
    area = 0.5 * np.abs(twice_area)
    extent = points.max(axis=1) - points.min(axis=1)
    diagonal2 = np.sum(extent**2, axis=1)
    codes = np.full(len(points), VALID, np.int8)
    crossing = _properly_cross(rel[:, 0], rel[:, 1], rel[:, 2], rel[:, 3]) | _properly_cross(
        rel[:, 1], rel[:, 2], rel[:, 3], rel[:, 0]
    )
    codes[area <= area_rtol * diagonal2] = ZERO_AREA
    codes[crossing] = SELF_INTERSECTING  # (a symmetric bow-tie has zero net area too)
    return oriented, area, diagonal2, codes


def quad_validity(polys, area_rtol=_DEGENERATE_RTOL):
    """Which quadrilaterals are regions: int8 [N] codes VALID (0), ZERO_AREA (1: all points equal,
    collinear, or an area <= area_rtol · diagonal² of the bounding box) or SELF_INTERSECTING (2:
    two opposite edges cross, a bow-tie). polys: float [N, 8]. Names: `VALIDITY_NAMES`."""
    polys = _check_polys(polys, "polys")
    return _classify(polys.reshape(-1, 4, 2), area_rtol)[3]


_Prepared = collections.namedtuple("_Prepared", ["pieces", "area", "hbb", "degenerate"])


def _prepare(polys):
    """[K, 8] -> _Prepared(pieces, area [K], hbb [K, 4], degenerate [K]).

    pieces: (vertices float64 [K, 2, 4, 2], positively oriented convex pieces (the quadrilateral
    itself, or the two triangles of a non-convex one), split bool [K] (two pieces)).
    degenerate: zero area or self-intersecting (IoU 0 with everything).
    """
    points, area, diagonal2, codes = _classify(polys.reshape(-1, 4, 2), _DEGENERATE_RTOL)
    lo, hi = points.min(axis=1), points.max(axis=1)
    x, y = points[..., 0] - points[:, :1, 0], points[..., 1] - points[:, :1, 1]
    ex, ey = x[:, _NEXT] - x, y[:, _NEXT] - y
    turn = _cross(ex[:, _PREVIOUS], ey[:, _PREVIOUS], ex, ey)  # at each vertex, > 0 convex
    reflex = np.argmin(turn, axis=1)
    split = (turn[np.arange(len(points)), reflex] < -_DEGENERATE_RTOL * diagonal2) & (codes == VALID)
    pieces = np.repeat(points[:, None], 2, axis=1)
    if split.any():
        r = reflex[split][:, None]
        corners = np.take_along_axis(points[split], ((r + np.arange(4)) % 4)[..., None], axis=1)
        pieces[split, 0] = corners[:, [0, 1, 2, 2]]
        pieces[split, 1] = corners[:, [0, 2, 3, 3]]
    return _Prepared((pieces, split), area, np.concatenate([lo, hi], axis=1), codes != VALID)


def _clipped_boundary_sum(px, py, qx, qy, scale, is_first):
    """Σ over P's edges of cross(start, end) of the part of the edge inside Q.

    px, py, qx, qy: float64 [K, 4] convex pieces (pair origin at 0, positive orientation;
    zero-length edges allowed); scale [K]. is_first: P's copy of a same-direction collinear edge
    counts (Q's never does).
    """
    ex = qx[:, _NEXT] - qx  # clip-edge directions [K, 4]
    ey = qy[:, _NEXT] - qy
    length = np.hypot(ex, ey)
    offset = ex * qy - ey * qx
    # f[k, i, j]: side of P's vertex i w.r.t. Q's edge j (>= 0 inside); edge i ends at i+1
    fa = ex[:, None, :] * py[:, :, None] - ey[:, None, :] * px[:, :, None] - offset[:, None, :]
    fb = fa[:, _NEXT, :]
    tolerance = ((_COLLINEAR_RTOL * scale)[:, None] * length)[:, None, :]
    collinear = (np.abs(fa) <= tolerance) & (np.abs(fb) <= tolerance) & (length > 0)[:, None, :]
    inside_a, inside_b = fa >= 0, fb >= 0
    denominator = fa - fb
    denominator[denominator == 0] = 1.0
    t = fa / denominator
    crossing = (inside_a != inside_b) & ~collinear
    lower = np.where(crossing & inside_b, t, 0.0)
    upper = np.where(crossing & inside_a, t, 1.0)
    empty = ~(inside_a | inside_b | collinear)
    dx, dy = px[:, _NEXT] - px, py[:, _NEXT] - py
    if is_first:
        same_direction = (dx[:, :, None] * ex[:, None, :] + dy[:, :, None] * ey[:, None, :]) > 0
        empty |= collinear & ~same_direction
    else:
        empty |= collinear
    t0 = lower.max(axis=2)  # [K, 4]
    t1 = upper.min(axis=2)
    keep = ~empty.any(axis=2) & (t1 > t0)
    sx, sy = px + t0 * dx, py + t0 * dy
    ux, uy = px + t1 * dx, py + t1 * dy
    cross = sx * uy - ux * sy
    return np.sum(np.where(keep, cross, 0.0), axis=1)


def _convex_intersection(p, q):
    """Intersection areas of matching convex pieces p, q: float64 [K, 4, 2] (positively
    oriented) -> [K]."""
    px, py = p[..., 0], p[..., 1]
    qx, qy = q[..., 0], q[..., 1]
    ox = px.mean(axis=1, keepdims=True)
    oy = py.mean(axis=1, keepdims=True)
    px, py, qx, qy = px - ox, py - oy, qx - ox, qy - oy
    scale = np.maximum(
        np.maximum(np.abs(px).max(axis=1), np.abs(py).max(axis=1)),
        np.maximum(np.abs(qx).max(axis=1), np.abs(qy).max(axis=1)),
    )
    twice = _clipped_boundary_sum(px, py, qx, qy, scale, True)
    twice += _clipped_boundary_sum(qx, qy, px, py, scale, False)

    def piece_area(x, y):
        return 0.5 * np.abs(np.sum(x * y[:, _NEXT] - x[:, _NEXT] * y, axis=1))

    return np.clip(0.5 * twice, 0.0, np.minimum(piece_area(px, py), piece_area(qx, qy)))


def _intersection_of_pairs(pieces_a, pieces_b, rows, cols):
    """Intersection areas of a[rows[k]] and b[cols[k]] (valid quadrilaterals): the sum over their
    convex pieces. Returns float64 [len(rows)]."""
    vertices_a, split_a = pieces_a
    vertices_b, split_b = pieces_b
    out = np.zeros(len(rows), np.float64)
    two_a, two_b = split_a[rows], split_b[cols]
    for index_a, index_b in ((0, 0), (1, 0), (0, 1), (1, 1)):
        chosen = np.ones(len(rows), bool)
        if index_a:
            chosen &= two_a
        if index_b:
            chosen &= two_b
        chosen = np.flatnonzero(chosen) if (index_a or index_b) else np.arange(len(rows))
        for start in range(0, len(chosen), _CHUNK_PAIRS):
            k = chosen[start : start + _CHUNK_PAIRS]
            out[k] += _convex_intersection(vertices_a[rows[k], index_a], vertices_b[cols[k], index_b])
    return out


def _iou_of_pairs(prepared_a, prepared_b, rows, cols):
    """IoU for index pairs (rows into a, cols into b) of valid quadrilaterals: float64 [len(rows)]."""
    inter = _intersection_of_pairs(prepared_a.pieces, prepared_b.pieces, rows, cols)
    area_a, area_b = prepared_a.area[rows], prepared_b.area[cols]
    inter = np.minimum(inter, np.minimum(area_a, area_b))
    union = area_a + area_b - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1.0), 0.0)


def _overlapping(hbb_a, hbb_b, valid_a, valid_b):
    """Pairs (broadcast) whose open horizontal boxes overlap and that are both valid."""
    return (
        (hbb_a[..., 0] < hbb_b[..., 2])
        & (hbb_b[..., 0] < hbb_a[..., 2])
        & (hbb_a[..., 1] < hbb_b[..., 3])
        & (hbb_b[..., 1] < hbb_a[..., 3])
        & valid_a
        & valid_b
    )


def poly_iou(a, b):
    """IoU matrix of two sets of quadrilaterals (exact for any simple one, convex or not).

    a: float [N, 8], b: float [M, 8], pixels, any vertex order. Returns float64 [N, M].
    Zero-area and self-intersecting quadrilaterals (`quad_validity`) have IoU 0 with everything.
    Pairs whose horizontal boxes do not overlap (open interiors) cost nothing and get 0.
    Raises ValueError for wrong shapes/dtypes or non-finite rows.
    """
    a = _check_polys(a, "a")
    b = _check_polys(b, "b")
    prepared_a, prepared_b = _prepare(a), _prepare(b)
    result = np.zeros((len(a), len(b)), dtype=np.float64)
    if len(a) == 0 or len(b) == 0:
        return result
    rows_per_block = max(1, (1 << 22) // len(b))
    for start in range(0, len(a), rows_per_block):
        block = slice(start, start + rows_per_block)
        overlap = _overlapping(
            prepared_a.hbb[block, None],
            prepared_b.hbb[None, :],
            ~prepared_a.degenerate[block, None],
            ~prepared_b.degenerate[None, :],
        )
        rows, cols = np.nonzero(overlap)
        if len(rows):
            rows = rows + start
            result[rows, cols] = _iou_of_pairs(prepared_a, prepared_b, rows, cols)
    return result


def poly_iou_pairwise(a, b):
    """IoU of matching rows: a, b float [N, 8] -> float64 [N]. Same rules as :func:`poly_iou`."""
    a = _check_polys(a, "a")
    b = _check_polys(b, "b")
    if len(a) != len(b):
        raise ValueError(f"poly_iou_pairwise: a and b must both be [N, 8], got {list(a.shape)} and {list(b.shape)}")
    prepared_a, prepared_b = _prepare(a), _prepare(b)
    overlap = _overlapping(prepared_a.hbb, prepared_b.hbb, ~prepared_a.degenerate, ~prepared_b.degenerate)
    result = np.zeros(len(a), dtype=np.float64)
    index = np.nonzero(overlap)[0]
    if len(index):
        result[index] = _iou_of_pairs(prepared_a, prepared_b, index, index)
    return result


def quad_intersection_area(a, b):
    """Intersection areas of matching rows: a, b float [N, 8] -> float64 [N] (pixels²).

    Exact for simple quadrilaterals, convex or not (a triangle may repeat a vertex); zero-area
    and self-intersecting quadrilaterals give 0.
    """
    a = _check_polys(a, "a")
    b = _check_polys(b, "b")
    if len(a) != len(b):
        raise ValueError(
            f"quad_intersection_area: a and b must both be [N, 8], got {list(a.shape)} and {list(b.shape)}"
        )
    prepared_a, prepared_b = _prepare(a), _prepare(b)
    overlap = _overlapping(prepared_a.hbb, prepared_b.hbb, ~prepared_a.degenerate, ~prepared_b.degenerate)
    result = np.zeros(len(a), dtype=np.float64)
    index = np.nonzero(overlap)[0]
    if len(index):
        inter = _intersection_of_pairs(prepared_a.pieces, prepared_b.pieces, index, index)
        result[index] = np.minimum(inter, np.minimum(prepared_a.area[index], prepared_b.area[index]))
    return result


def iou_of_index_pairs(polys, rows, cols, prepared=None):
    """IoU between polys[rows[k]] and polys[cols[k]] (used by NMS).

    polys: checked float64 [N, 8]; rows, cols: int [K]; prepared: ``_prepare(polys)`` if the
    caller already has it. Returns float64 [K].
    """
    prepared = prepared if prepared is not None else _prepare(polys)
    result = np.zeros(len(rows), dtype=np.float64)
    fine = ~prepared.degenerate[rows] & ~prepared.degenerate[cols]
    index = np.nonzero(fine)[0]
    if len(index):
        result[index] = _iou_of_pairs(prepared, prepared, rows[index], cols[index])
    return result


# ----------------------------------------------------------------------------------------
# TensorFlow


def _tf():
    import tensorflow as tf

    return tf


def _tf_polys(values, name):
    tf = _tf()
    tensor = tf.convert_to_tensor(values)
    if not (tensor.dtype.is_floating or tensor.dtype.is_integer):
        raise ValueError(f"{name}: expected a float tensor of shape [..., 8], got {tensor.dtype}")
    if not tensor.dtype.is_floating:
        tensor = tf.cast(tensor, tf.float32)
    shape = tensor.shape
    if shape.rank == 0 or (shape.rank is not None and shape[-1] is not None and shape[-1] != 8):
        raise ValueError(f"{name}: expected shape [..., 8], got {shape}")
    return tensor


def _tf_points(poly):
    """[..., 8] -> [..., 4, 2] positively oriented, and area [...]."""
    tf = _tf()
    x = tf.gather(poly, [0, 2, 4, 6], axis=-1)
    y = tf.gather(poly, [1, 3, 5, 7], axis=-1)
    rx, ry = x - x[..., :1], y - y[..., :1]
    twice = tf.reduce_sum(rx * tf.gather(ry, _NEXT, axis=-1) - tf.gather(rx, _NEXT, axis=-1) * ry, -1)
    flip = tf.expand_dims(twice < 0, -1)
    x = tf.where(flip, tf.gather(x, [3, 2, 1, 0], axis=-1), x)
    y = tf.where(flip, tf.gather(y, [3, 2, 1, 0], axis=-1), y)
    return x, y, 0.5 * tf.abs(twice)


def _tf_clipped_boundary_sum(px, py, qx, qy, scale, is_first):
    """TF version of :func:`_clipped_boundary_sum` on [..., 4] coordinate tensors."""
    tf = _tf()
    # (tf.expand_dims rather than [..., None]: new-axis strided slices need TF-Select)
    ax, ay = tf.expand_dims(px, -1), tf.expand_dims(py, -1)  # [..., 4, 1]
    bx = tf.expand_dims(tf.gather(px, _NEXT, axis=-1), -1)
    by = tf.expand_dims(tf.gather(py, _NEXT, axis=-1), -1)
    cx, cy = tf.expand_dims(qx, -2), tf.expand_dims(qy, -2)  # [..., 1, 4]
    ex = tf.expand_dims(tf.gather(qx, _NEXT, axis=-1) - qx, -2)
    ey = tf.expand_dims(tf.gather(qy, _NEXT, axis=-1) - qy, -2)
    fa = ex * (ay - cy) - ey * (ax - cx)  # [..., 4, 4]
    fb = ex * (by - cy) - ey * (bx - cx)
    tolerance = _COLLINEAR_RTOL_TF * tf.expand_dims(tf.expand_dims(scale, -1), -1) * tf.sqrt(ex * ex + ey * ey)
    collinear = tf.logical_and(tf.abs(fa) <= tolerance, tf.abs(fb) <= tolerance)
    not_collinear = tf.logical_not(collinear)
    inside_a, inside_b = fa >= 0, fb >= 0
    denominator = fa - fb
    t = fa / tf.where(tf.equal(denominator, 0), tf.ones_like(denominator), denominator)
    zeros, ones = tf.zeros_like(t), tf.ones_like(t)
    entering = tf.logical_and(tf.logical_and(tf.logical_not(inside_a), inside_b), not_collinear)
    leaving = tf.logical_and(tf.logical_and(inside_a, tf.logical_not(inside_b)), not_collinear)
    lower = tf.where(entering, t, zeros)
    upper = tf.where(leaving, t, ones)
    outside = tf.logical_and(tf.logical_not(inside_a), tf.logical_not(inside_b))
    empty = tf.logical_and(outside, not_collinear)
    if is_first:
        same_direction = ((bx - ax) * ex + (by - ay) * ey) > 0
        empty = tf.logical_or(empty, tf.logical_and(collinear, tf.logical_not(same_direction)))
    else:
        empty = tf.logical_or(empty, collinear)
    t0 = tf.reduce_max(lower, axis=-1)  # [..., 4]
    t1 = tf.reduce_min(upper, axis=-1)
    any_empty = tf.reduce_max(tf.cast(empty, t.dtype), axis=-1) > 0
    keep = tf.logical_and(tf.logical_not(any_empty), t1 > t0)
    ax, ay, bx, by = px, py, tf.gather(px, _NEXT, axis=-1), tf.gather(py, _NEXT, axis=-1)
    dx, dy = bx - ax, by - ay
    sx, sy = ax + t0 * dx, ay + t0 * dy
    ux, uy = ax + t1 * dx, ay + t1 * dy
    cross = sx * uy - ux * sy
    return tf.reduce_sum(tf.where(keep, cross, tf.zeros_like(cross)), axis=-1)


def poly_iou_pairwise_tf(a, b):
    """IoU of convex quadrilaterals, broadcasting: a [..., 8], b [..., 8] -> [...].

    Works in tf.function / SavedModel with dynamic shapes; uses only TFLite builtin ops.
    Zero-area quadrilaterals give 0; never NaN for finite input.
    """
    tf = _tf()
    a = _tf_polys(a, "a")
    b = tf.cast(_tf_polys(b, "b"), a.dtype)
    ax, ay, area_a = _tf_points(a)
    bx, by, area_b = _tf_points(b)
    ox = tf.reduce_mean(ax, axis=-1, keepdims=True)
    oy = tf.reduce_mean(ay, axis=-1, keepdims=True)
    ax, ay, bx, by = ax - ox, ay - oy, bx - ox, by - oy
    ax, bx = tf.broadcast_to(ax, tf.shape(ax + bx)), tf.broadcast_to(bx, tf.shape(ax + bx))
    ay, by = tf.broadcast_to(ay, tf.shape(ay + by)), tf.broadcast_to(by, tf.shape(ay + by))
    scale = tf.maximum(
        tf.maximum(tf.reduce_max(tf.abs(ax), -1), tf.reduce_max(tf.abs(ay), -1)),
        tf.maximum(tf.reduce_max(tf.abs(bx), -1), tf.reduce_max(tf.abs(by), -1)),
    )
    twice = _tf_clipped_boundary_sum(ax, ay, bx, by, scale, True) + _tf_clipped_boundary_sum(
        bx, by, ax, ay, scale, False
    )

    def extent2(x, y):
        return tf.square(tf.reduce_max(x, -1) - tf.reduce_min(x, -1)) + tf.square(
            tf.reduce_max(y, -1) - tf.reduce_min(y, -1)
        )

    degenerate = tf.logical_or(
        area_a <= _DEGENERATE_RTOL_TF * extent2(ax, ay), area_b <= _DEGENERATE_RTOL_TF * extent2(bx, by)
    )
    area_a = area_a + tf.zeros_like(twice)
    area_b = area_b + tf.zeros_like(twice)
    intersection = tf.clip_by_value(0.5 * twice, 0.0, tf.minimum(area_a, area_b))
    union = area_a + area_b - intersection
    good = tf.logical_and(union > 0, tf.logical_not(degenerate))
    iou = intersection / tf.where(good, union, tf.ones_like(union))
    return tf.where(good, iou, tf.zeros_like(iou))


def poly_iou_tf(a, b):
    """IoU matrix: a [N, 8], b [M, 8] -> [N, M] (TF; memory ~ N·M·16 floats)."""
    tf = _tf()
    a = _tf_polys(a, "a")
    b = tf.cast(_tf_polys(b, "b"), a.dtype)
    return poly_iou_pairwise_tf(tf.expand_dims(a, 1), tf.expand_dims(b, 0))
