"""Rotated (polygon) non-maximum suppression: exact numpy, exact TF graph, fast TF matrix NMS.

Rule of the exact variants (greedy NMS): boxes are visited in descending score order (equal
scores: lower index first); a box is kept unless its IoU with an already kept box is
> iou_threshold. IoU is the exact polygon IoU of :mod:`dked_tf.ops.iou`.

The numpy version never builds the N×N IoU matrix: it finds candidate pairs whose horizontal
boxes overlap (R-tree broad phase), drops pairs whose IoU provably cannot exceed the
threshold (area bound), and then decides boxes in vectorized rounds, clipping polygons only
for pairs whose higher-scored box has been kept (see ``_greedy_nms_sorted``).
"""

import numpy as np

from dked_tf.ops.iou import _check_polys, _prepare, iou_of_index_pairs, poly_iou_pairwise_tf

__all__ = ["rotated_nms", "batched_rotated_nms", "rotated_nms_tf", "fast_rotated_nms_tf"]


def _check_scores(scores, count, name="scores"):
    array = np.asarray(scores)
    if array.dtype == object or not (np.issubdtype(array.dtype, np.floating) or np.issubdtype(array.dtype, np.integer)):
        raise ValueError(f"{name}: expected a float array of shape [N], got dtype {array.dtype}")
    if array.shape != (count,):
        raise ValueError(f"{name}: expected shape [N] = [{count}], got {list(array.shape)}")
    array = array.astype(np.float64, copy=False)
    if not np.isfinite(array).all():
        row = int(np.argmin(np.isfinite(array)))
        raise ValueError(f"{name}: row {row} is not finite: {array[row]}")
    return array


def _check_threshold(iou_threshold):
    threshold = float(iou_threshold)
    if not np.isfinite(threshold):
        raise ValueError(f"iou_threshold must be finite, got {iou_threshold}")
    return threshold


def _candidate_pairs(prepared, threshold, classes_sorted=None):
    """Pairs (u, v), u < v in score order, whose IoU may exceed the threshold.

    prepared: ``iou._prepare(polys_sorted)``. Broad phase: shapely's STRtree (a C R-tree;
    shapely is a dependency anyway) over the horizontal boxes. Then an exact bound that needs
    no polygon clipping: the intersection is at most min(HBB-intersection area, area_u,
    area_v) and IoU grows with the intersection, so pairs whose bound is <= threshold (or
    whose HBBs only touch) are dropped. Returns int64 rows (u), cols (v).
    """
    import shapely

    _, area, hbb, degenerate = prepared
    x0, y0, x1, y1 = (np.ascontiguousarray(hbb[:, k]) for k in range(4))
    boxes = shapely.box(x0, y0, x1, y1)
    first, second = shapely.STRtree(boxes).query(boxes)
    upper = first < second
    u, v = first[upper].astype(np.int64), second[upper].astype(np.int64)
    overlap_w = np.minimum(x1[u], x1[v]) - np.maximum(x0[u], x0[v])
    overlap_h = np.minimum(y1[u], y1[v]) - np.maximum(y0[u], y0[v])
    area_u, area_v = area[u], area[v]
    bound = np.minimum(np.minimum(overlap_w * overlap_h, area_u), area_v)
    possible = (overlap_w > 0) & (overlap_h > 0) & (bound > threshold * (area_u + area_v - bound))
    possible &= ~(degenerate[u] | degenerate[v])
    if classes_sorted is not None:
        possible &= classes_sorted[u] == classes_sorted[v]
    return u[possible], v[possible]


_MAX_ROUNDS = 12


def _finish_sequentially(polys_sorted, prepared, threshold, rows, cols, status):
    """Greedy over the remaining pairs: one IoU call for all of them, then a loop in leader
    order (a leader's status is final when its first pair is reached). Updates status."""
    live = status[rows] != 2
    rows, cols = rows[live], cols[live]
    hit = iou_of_index_pairs(polys_sorted, rows, cols, prepared) > threshold
    rows, cols = rows[hit], cols[hit]
    order = np.argsort(rows, kind="stable")
    for leader, victim in zip(rows[order].tolist(), cols[order].tolist()):
        if status[leader] != 2:
            status[victim] = 2


def _greedy_nms_sorted(polys_sorted, threshold, classes_sorted=None):
    """Keep mask [N] over boxes already in descending score order (exact greedy NMS).

    Lazy, in vectorized rounds. A box is decided as soon as every higher-ranked box that
    could suppress it (candidate pair) is decided: it is suppressed if a KEPT one overlaps
    it with IoU > threshold, kept otherwise. Each round clips, in one vectorized call, only
    the pairs whose leader has just been kept and whose victim is still open, so pairs with a
    suppressed leader (most pairs in dense clusters) are never clipped. The result equals the
    sequential greedy loop; the number of rounds is the length of the longest chain of
    decisions, usually a handful; after ``_MAX_ROUNDS`` the rest is finished sequentially.
    """
    count = len(polys_sorted)
    prepared = _prepare(polys_sorted)
    rows, cols = _candidate_pairs(prepared, threshold, classes_sorted)
    open_, kept, suppressed = 0, 1, 2
    status = np.zeros(count, dtype=np.int8)
    status[np.bincount(cols, minlength=count) == 0] = kept  # nobody can suppress these
    rounds = 0
    while len(rows):
        rounds += 1
        if rounds > _MAX_ROUNDS:  # long chain of decisions: finish sequentially
            _finish_sequentially(polys_sorted, prepared, threshold, rows, cols, status)
            break
        leader, victim = status[rows], status[cols]
        evaluate = (leader == kept) & (victim == open_)
        if evaluate.any():
            hit = iou_of_index_pairs(polys_sorted, rows[evaluate], cols[evaluate], prepared) > threshold
            status[cols[evaluate][hit]] = suppressed
        pending = ~evaluate & (leader != suppressed) & (victim == open_)
        rows, cols = rows[pending], cols[pending]
        pending_victim = np.zeros(count, dtype=bool)
        pending_victim[cols] = True
        status[(status == open_) & ~pending_victim] = kept
    status[status == open_] = kept
    return status == kept


def rotated_nms(polys, scores, iou_threshold, max_output=None):
    """Exact greedy rotated NMS.

    polys: float [N, 8] (pixels, convex quadrilaterals, any vertex order); scores: float [N];
    iou_threshold: a box is suppressed when its IoU with a kept higher-scored box is greater.
    Returns int64 [K] kept indices in descending score order (ties: lower index first),
    K <= max_output when given.
    """
    polys = _check_polys(polys, "polys")
    scores = _check_scores(scores, len(polys))
    threshold = _check_threshold(iou_threshold)
    order = np.argsort(-scores, kind="stable")
    keep = _greedy_nms_sorted(polys[order], threshold)
    kept = order[keep].astype(np.int64)
    return kept if max_output is None else kept[: int(max_output)]


def batched_rotated_nms(polys, scores, classes, iou_threshold, max_output=None):
    """Class-aware exact rotated NMS: boxes only suppress boxes of the same class.

    polys: float [N, 8]; scores: float [N]; classes: int [N]. Returns int64 [K] kept indices
    over all classes, in descending score order, K <= max_output when given.
    """
    polys = _check_polys(polys, "polys")
    scores = _check_scores(scores, len(polys))
    classes = np.asarray(classes)
    if classes.shape != (len(polys),) or not np.issubdtype(classes.dtype, np.integer):
        raise ValueError(
            f"classes: expected an int array of shape [N] = [{len(polys)}], got {list(classes.shape)} {classes.dtype}"
        )
    threshold = _check_threshold(iou_threshold)
    order = np.argsort(-scores, kind="stable")
    keep = _greedy_nms_sorted(polys[order], threshold, classes[order])
    kept = order[keep].astype(np.int64)
    return kept if max_output is None else kept[: int(max_output)]


# ----------------------------------------------------------------------------------------
# TensorFlow


def _tf():
    import tensorflow as tf

    return tf


def _tf_inputs(polys, scores):
    tf = _tf()
    polys = tf.convert_to_tensor(polys)
    scores = tf.convert_to_tensor(scores)
    if not polys.dtype.is_floating:
        polys = tf.cast(polys, tf.float32)
    scores = tf.cast(scores, polys.dtype)
    if polys.shape.rank is not None and (polys.shape.rank != 2 or polys.shape[-1] not in (None, 8)):
        raise ValueError(f"polys: expected shape [N, 8], got {polys.shape}")
    if scores.shape.rank is not None and scores.shape.rank != 1:
        raise ValueError(f"scores: expected shape [N], got {scores.shape}")
    return polys, scores


def _suppression_pairs_tf(boxes, iou_threshold):
    """Pairs (u, v) of rank positions, u < v, with IoU(boxes[u], boxes[v]) > iou_threshold.

    boxes: float [K, 8] in descending score order. A cheap dense bound (HBB intersection and
    areas, a few ops on [K, K]) selects the pairs that can exceed the threshold; the exact
    polygon IoU is computed only for those (WHERE + GATHER, TFLite builtins).
    Returns int32 u [P], int32 v [P].
    """
    tf = _tf()
    x = tf.gather(boxes, [0, 2, 4, 6], axis=1)
    y = tf.gather(boxes, [1, 3, 5, 7], axis=1)
    x0, x1 = tf.reduce_min(x, axis=1), tf.reduce_max(x, axis=1)
    y0, y1 = tf.reduce_min(y, axis=1), tf.reduce_max(y, axis=1)
    rx, ry = x - x[:, :1], y - y[:, :1]
    area = 0.5 * tf.abs(
        tf.reduce_sum(rx * tf.gather(ry, [1, 2, 3, 0], axis=1) - tf.gather(rx, [1, 2, 3, 0], axis=1) * ry, axis=1)
    )

    def column(t):
        return tf.expand_dims(t, 1)

    def row(t):
        return tf.expand_dims(t, 0)

    overlap_w = tf.minimum(column(x1), row(x1)) - tf.maximum(column(x0), row(x0))
    overlap_h = tf.minimum(column(y1), row(y1)) - tf.maximum(column(y0), row(y0))
    bound = tf.minimum(tf.maximum(overlap_w, 0.0) * tf.maximum(overlap_h, 0.0), tf.minimum(column(area), row(area)))
    threshold = tf.cast(iou_threshold, boxes.dtype)
    k = tf.shape(boxes)[0]
    rank = tf.range(k)
    possible = tf.logical_and(
        bound > threshold * (column(area) + row(area) - bound),
        column(rank) < row(rank),
    )
    pairs = tf.cast(tf.where(possible), tf.int32)  # [P, 2]
    u, v = pairs[:, 0], pairs[:, 1]
    iou = poly_iou_pairwise_tf(tf.gather(boxes, u), tf.gather(boxes, v))
    hit = iou > threshold
    return tf.boolean_mask(u, hit), tf.boolean_mask(v, hit)


def rotated_nms_tf(polys, scores, iou_threshold, max_output=100):
    """Exact greedy rotated NMS as a TF graph (tf.function, SavedModel).

    polys: float [N, 8]; scores: float [N]; iou_threshold: float; max_output: python int.
    Returns (indices int32 [max_output], num_valid int32 []): the kept indices in descending
    score order (ties: lower index first), padded with -1. Same keep set as
    :func:`rotated_nms` up to float32 rounding of IoU values at the threshold. N = 0 is fine.
    The IoU of every pair that can matter is computed once (dense HBB bound over [N, N],
    exact IoU on the survivors); a while loop over kept boxes then only scatters flags.
    """
    tf = _tf()
    polys, scores = _tf_inputs(polys, scores)
    max_output = int(max_output)
    count = tf.shape(scores)[0]
    order = tf.argsort(scores, direction="DESCENDING", stable=True)
    u, v = _suppression_pairs_tf(tf.gather(polys, order), iou_threshold)
    v_slots = tf.expand_dims(v, 1)
    positions = tf.range(count)

    def condition(step, active, kept):
        return tf.logical_and(step < max_output, tf.reduce_any(active))

    def body(step, active, kept):
        best = tf.reduce_min(tf.where(active, positions, count))  # first open position: kept
        kept = tf.tensor_scatter_nd_update(kept, [[step]], [best])
        victims = tf.scatter_nd(v_slots, tf.cast(tf.equal(u, best), tf.int32), [count]) > 0
        active = tf.logical_and(active, tf.logical_not(victims))
        active = tf.logical_and(active, tf.not_equal(positions, best))
        return step + 1, active, kept

    num_valid, _, kept = tf.while_loop(
        condition,
        body,
        (tf.constant(0), tf.ones([count], dtype=tf.bool), tf.fill([max_output], -1)),
    )
    # map sorted positions back to input indices; the appended -1 serves the padding slots
    # (and keeps the gather valid when there are no boxes at all)
    order_or_padding = tf.concat([tf.cast(order, tf.int32), [-1]], axis=0)
    valid = tf.range(max_output) < num_valid
    indices = tf.gather(order_or_padding, tf.where(valid, kept, tf.fill([max_output], count)))
    return indices, num_valid


def fast_rotated_nms_tf(polys, scores, iou_threshold, max_output=100, max_candidates=1000, score_threshold=None):
    """Matrix ("fast") rotated NMS with TFLite builtin ops only (no while loop, no TF-Select).

    The top ``max_candidates`` boxes by score are compared all-against-all once; a box is
    dropped when ANY higher-scored candidate (kept or not) overlaps it with IoU >
    iou_threshold. This suppresses at least as much as exact greedy NMS (it is approximate:
    a box suppressed only by a box that was itself suppressed is dropped too).
    polys: float [N, 8]; scores: float [N]. Returns (indices int32 [max_output] padded with
    -1, in descending score order, num_valid int32 []). Only pairs whose HBB/area bound can
    exceed the threshold are clipped; the bound itself is a few ops on [K, K].
    """
    tf = _tf()
    polys, scores = _tf_inputs(polys, scores)
    count = tf.shape(scores)[0]
    k = tf.minimum(count, int(max_candidates))
    top_scores, top_index = tf.math.top_k(scores, k=k, sorted=True)
    _, v = _suppression_pairs_tf(tf.gather(polys, top_index), iou_threshold)
    hits = tf.scatter_nd(tf.expand_dims(v, 1), tf.ones_like(v), tf.expand_dims(k, 0))
    keep = tf.equal(hits, 0)
    if score_threshold is not None:
        keep = tf.logical_and(keep, top_scores > tf.cast(score_threshold, top_scores.dtype))
    rank = tf.range(k)
    # kept candidates first, in rank order: larger key for earlier rank, -1 for dropped
    key = tf.where(keep, tf.cast(k - rank, tf.float32), -tf.ones([k], tf.float32))
    m = tf.minimum(k, int(max_output))
    picked_key, picked = tf.math.top_k(key, k=m, sorted=True)
    valid = picked_key > 0
    indices = tf.where(valid, tf.gather(top_index, picked), -tf.ones_like(picked))
    indices = tf.pad(indices, [[0, int(max_output) - m]], constant_values=-1)
    num_valid = tf.reduce_sum(tf.cast(valid, tf.int32))
    return indices, num_valid
