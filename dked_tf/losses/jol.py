"""GGHL's Joint-Optimization Loss (JOL), HEAD version (``modelR/loss/loss.py``, 2022-09).

Per level, at every cell (M = positive mask, m = mixup weight, omega = area weight (1 at
negatives), g = max over classes of the heatmap target, beta = 2 - w h / S^2):

    L_iou0 = beta (1 - GIoU(HBB_pred, HBB_gt))        HBBs from l1..l4 around the cell centre
    L_s0   = sum_k (s_hat_k - s_k)^2
    L_r0   = (r_hat - r)^2
    q      = exp(-(L_iou0 + L_s0 + L_r0))             localisation quality
    obj_pos = M     Focal(z_o, 0.995) m (g + stop_gradient(q)) / 2
    obj_neg = (1-M) Focal(z_o, 0.005) m               Focal = BCE-with-logits |t - sigmoid|^2
    cls_pos = M sum_{c in GT} [BCE(sigmoid(z_c) q, 0.99 + 0.01/nC)
                               + w_plain BCE-with-logits(z_c, 0.99 + 0.01/nC)] m omega
    cls_neg = M sum_{c not in GT} BCE-with-logits(z_c, 0.01/nC) m omega
    w_reg   = M m omega (P + g) / 2,  P = sum_{c in GT} sigmoid(z_c)  (not detached)
    iou = L_iou0 w_reg,  s = L_s0 w_reg,  r = L_r0 w_reg,
    l   = beta sum_k SmoothL1(l_hat_k / stride, l_k / stride) w_reg

GT classes of a cell are the channels whose heatmap target is nonzero. Each term is summed
over the cells of an image, divided by max(1, positives of that image on that level),
averaged over the batch and summed over levels (GGHL normalises per level). The total is
2 obj_pos + 2 obj_neg + cls_pos + cls_neg + iou + s + 16 r + 0.2 l (``TERM_WEIGHTS``; a run
may change any weight with ``term_weights``).

obb (an addition to GGHL, weight 0 by default: GGHL's total) is the Hellinger distance
between the Gaussians of the decoded gliding-vertex quadrilateral and of the target one
(``dked_tf.ops.gaussian``; 1 - it is the probabilistic IoU), weighted by w_reg like iou. GGHL's
terms score the HBB (iou, l) and the gliding ratios (s) apart; on slender hulls lying diagonally a
small gliding error turns and widens the box far past IoU 0.5 while s stays small.

quality (an option, default "gghl" = the q above): "probiou" uses q = 1 - H, the probabilistic
IoU of the decoded and target quadrilaterals (the ``obb`` distance H), in obj_pos and cls_pos
instead of exp(-(L_iou0 + L_s0 + L_r0)), so the score a box learns follows its rotated overlap.

objectness_target (an option, default "fixed" = GGHL's 0.995 at every positive cell): "quality"
replaces it by stop_gradient(q) (clipped to [0.005, 0.995]), so each positive cell's objectness
learns how well its own box fits, as the IoU targets of IoU-aware and task-aligned detectors do;
the detection score sqrt(objectness x class) then ranks the cells of one object by their boxes.

w_plain (``plain_class_weight``, default ``DEFAULT_PLAIN_CLASS_WEIGHT`` = 1) is GGHL's plain
class BCE as added to the total in its 2021-11 .. 2022-03 versions; 0 gives HEAD exactly.

Deviations from GGHL's code (checked against a numpy transcription of GGHL's loss,
tests/test_jol_gghl_oracle.py):

* the plain class BCE (w_plain) covers the GT channels only; GGHL 2021-11..2022-03 sum it over
  every class channel, which adds a second copy of cls_neg (no difference with one class);
* GGHL's head zeroes the predicted gliding ratios where the predicted r > 0.9 before the loss
  (no gradient to them there); we keep them (the r > 0.9 rule applies at decoding only).

Numerical safety (deviations that only act at extremes): l logits are clipped to
[-16, 16] before exp (``head_contract.decode_head_level``); BCE on the product probability
sigmoid(z) q is evaluated in log space (log p = log_sigmoid(z) - E, 1 - p floored at 1e-7);
everything is computed in float32 whatever the input dtype.
"""

from __future__ import annotations

import tensorflow as tf

from dked_tf.ops.gaussian import hellinger_distance_tf, polygon_gaussian_tf
from dked_tf.ops.head_contract import (
    HEAD_BOX_CHANNELS,
    JOL_TERM_NAMES,
    TARGET_AREA_RATIO_CHANNEL,
    TARGET_AREA_WEIGHT_CHANNEL,
    TARGET_BOX_CHANNELS,
    TARGET_DISTANCE_CHANNELS,
    TARGET_FIRST_CLASS_CHANNEL,
    TARGET_GLIDING_CHANNELS,
    TARGET_HEIGHT_CHANNEL,
    TARGET_MIXUP_CHANNEL,
    TARGET_POSITIVE_CHANNEL,
    TARGET_WIDTH_CHANNEL,
    TOTAL,
    decode_head_level,
)

LABEL_SMOOTHING = 0.01
OBJ_POSITIVE_TARGET = 1.0 - LABEL_SMOOTHING / 2.0  # 0.995
OBJ_NEGATIVE_TARGET = LABEL_SMOOTHING / 2.0  # 0.005
FOCAL_GAMMA = 2.0
# Weight of each term in the total, in the order of head_contract.JOL_TERM_NAMES
# (obj_pos, obj_neg, cls_pos, cls_neg, iou, s, r, l, obb).
TERM_WEIGHTS = dict(zip(JOL_TERM_NAMES, (2.0, 2.0, 1.0, 1.0, 1.0, 1.0, 16.0, 0.2, 0.0)))
# Weight of the plain BCE-with-logits class loss on the GT channels at positive cells, added
# into ``cls_pos``. GGHL HEAD computes it but does not add it (weight 0.0); its 2021-11 ..
# 2022-03 versions added it with weight 1 and the author notes it speeds up early training;
# measured on the synthetic HRSC set (6 epochs, CPU) it roughly doubles the teacher mAP.
DEFAULT_PLAIN_CLASS_WEIGHT = 1.0
_EPS = 1e-9
QUALITY_MODES = ("gghl", "probiou")
OBJECTNESS_TARGETS = ("fixed", "quality")
_MIN_PROBIOU = 1e-6  # floor of 1 - H before its log (q = 1 - H in (0, 1])


def giou_from_distances(pred_l, target_l):
    """GIoU of two HBBs given as distances (top, right, bottom, left) from one point.

    pred_l, target_l: float32 [..., 4] pixels (>= 0). Returns [...] in [-1, 1].
    """
    p1, p2, p3, p4 = tf.unstack(pred_l, 4, axis=-1)
    t1, t2, t3, t4 = tf.unstack(target_l, 4, axis=-1)
    area_p = (p2 + p4) * (p1 + p3)
    area_t = (t2 + t4) * (t1 + t3)
    inter_w = tf.maximum(tf.minimum(p2, t2) + tf.minimum(p4, t4), 0.0)
    inter_h = tf.maximum(tf.minimum(p1, t1) + tf.minimum(p3, t3), 0.0)
    inter = inter_w * inter_h
    union = area_p + area_t - inter
    iou = inter / tf.maximum(union, _EPS)
    enclose = (tf.maximum(p2, t2) + tf.maximum(p4, t4)) * (tf.maximum(p1, t1) + tf.maximum(p3, t3))
    return iou - (enclose - union) / tf.maximum(enclose, _EPS)


def smooth_l1(x, y, beta=1.0):
    diff = tf.abs(x - y)
    return tf.where(diff < beta, 0.5 * diff * diff / beta, diff - 0.5 * beta)


def focal_bce(logits, targets, gamma=FOCAL_GAMMA):
    """BCE-with-logits times |t - sigmoid(z)|^gamma (GGHL's objectness focal term)."""
    bce = tf.nn.sigmoid_cross_entropy_with_logits(labels=targets, logits=logits)
    return bce * tf.pow(tf.abs(targets - tf.sigmoid(logits)), gamma)


def quality_bce(logits, log_quality, targets):
    """BCE of the probability sigmoid(z) * q against targets, q = exp(log_quality) <= 1.

    Equals BCE-with-logits(logit(sigmoid(z) q), t), computed in log space. Shapes broadcast.
    """
    log_p = tf.math.log_sigmoid(logits) + log_quality
    one_minus_q = -tf.math.expm1(log_quality)
    one_minus_p = tf.sigmoid(-logits) + tf.sigmoid(logits) * one_minus_q
    log_one_minus_p = tf.math.log(tf.maximum(one_minus_p, 1e-7))
    return -(targets * log_p + (1.0 - targets) * log_one_minus_p)


def class_bce(logits, targets):
    """Plain BCE-with-logits (the negative-channel class term); shapes broadcast."""
    targets = tf.broadcast_to(tf.cast(targets, tf.float32), tf.shape(logits))
    return tf.nn.sigmoid_cross_entropy_with_logits(labels=targets, logits=logits)


def gliding_quadrilateral(distances, gliding):
    """Vertices of the gliding-vertex box relative to the cell centre.

    distances: [..., 4] to the top, right, bottom and left HBB edges (pixels); gliding: [..., 4]
    ratios s1..s4. Returns [..., 8] (x1 y1 .. x4 y4): v1 on the top edge, v2 right, v3 bottom,
    v4 left, as ``head_contract.decode_cell_polygons`` places them (without the clip).
    """
    top, right, bottom, left = tf.unstack(distances, 4, axis=-1)
    s1, s2, s3, s4 = tf.unstack(gliding, 4, axis=-1)
    width, height = right + left, top + bottom
    return tf.stack(
        [-left + s1 * width, -top, right, -top + s2 * height, right - s3 * width, bottom, -left, bottom - s4 * height],
        axis=-1,
    )


def gliding_gaussian(distances, gliding, stride):
    """Gaussian (``ops.gaussian.polygon_gaussian_tf``: mean [..., 2], cov [..., 3]) of the
    gliding-vertex box given by distances [..., 4] (pixels) and ratios [..., 4], in cells of
    `stride` pixels relative to the cell centre."""
    return polygon_gaussian_tf(gliding_quadrilateral(distances / float(stride), gliding))


def box_terms(decoded, encoded_level, stride, image_size, with_obb=False):
    """Unweighted localisation losses of every cell.

    decoded: ``head_contract.decode_head_level`` output of one level; encoded_level: the
    matching ``assign.encode_targets`` level [B, H, W, 16 + nC]; stride: int; image_size: S.
    Returns dict of float32 [B, H, W]: ``iou`` = beta (1 - GIoU), ``s`` = sum_k (s_hat_k - s_k)^2,
    ``r`` = (r_hat - r)^2, ``l`` = beta sum_k SmoothL1(l_hat_k / stride, l_k / stride) and
    ``box`` = iou + s + r + 0.2 l (JOL_obb); beta = 2 - w h / S^2; with_obb: also ``obb``, the
    Hellinger distance of the decoded and target quadrilaterals' Gaussians (cell units).
    """
    enc = tf.cast(encoded_level, tf.float32)
    size = tf.cast(image_size, tf.float32)
    gt_l = enc[..., TARGET_DISTANCE_CHANNELS]
    beta = 2.0 - enc[..., TARGET_WIDTH_CHANNEL] * enc[..., TARGET_HEIGHT_CHANNEL] / (size * size)
    loss_iou0 = beta * (1.0 - giou_from_distances(decoded["pred_l"], gt_l))
    loss_s0 = tf.reduce_sum(tf.square(decoded["pred_s"] - enc[..., TARGET_GLIDING_CHANNELS]), axis=-1)
    loss_r0 = tf.square(decoded["pred_r"] - enc[..., TARGET_AREA_RATIO_CHANNEL])
    loss_l0 = beta * tf.reduce_sum(smooth_l1(decoded["pred_l"] / float(stride), gt_l / float(stride)), axis=-1)
    out = {
        "iou": loss_iou0,
        "s": loss_s0,
        "r": loss_r0,
        "l": loss_l0,
        "box": loss_iou0 + loss_s0 + loss_r0 + 0.2 * loss_l0,
    }
    if with_obb:
        predicted = gliding_gaussian(decoded["pred_l"], decoded["pred_s"], stride)
        target = gliding_gaussian(gt_l, enc[..., TARGET_GLIDING_CHANNELS], stride)
        out["obb"] = hellinger_distance_tf(*predicted, *target)
    return out


def check_quality(quality):
    """The quality mode, validated (None: "gghl")."""
    quality = "gghl" if quality is None else str(quality)
    if quality not in QUALITY_MODES:
        raise ValueError(f"jol: unknown quality {quality!r}; one of {', '.join(QUALITY_MODES)}")
    return quality


def check_objectness_target(objectness_target):
    """The objectness-target mode, validated (None: "fixed")."""
    mode = "fixed" if objectness_target is None else str(objectness_target)
    if mode not in OBJECTNESS_TARGETS:
        raise ValueError(
            f"jol: unknown objectness_target {objectness_target!r}; one of {', '.join(OBJECTNESS_TARGETS)}"
        )
    return mode


def per_cell_terms(
    head_level,
    encoded_level,
    stride,
    image_size,
    plain_class_weight=None,
    with_obb=False,
    quality="gghl",
    objectness_target="fixed",
):
    """JOL terms of one level as per-cell maps.

    head_level: logits [B, H, W, 10 + nC] (any float dtype); encoded_level: the matching
    ``assign.encode_targets`` level [B, H, W, 16 + nC]; stride: int; image_size: S (int or
    scalar tensor); plain_class_weight: weight of the plain BCE-with-logits(z_c, t_c) on the
    GT channels at positives, added into ``cls_pos`` (None: ``DEFAULT_PLAIN_CLASS_WEIGHT``;
    0 = GGHL HEAD); with_obb: compute the ``obb`` map (else it is 0); quality and
    objectness_target: the modes of the module docstring.

    Returns a dict of float32 tensors:
      weighted loss maps [B,H,W] ``obj_pos, obj_neg, cls_pos, cls_neg, iou, s, r, l``
        (summing one over an image and dividing by max(1, num_positives) gives its term);
      ``box`` [B,H,W] = L_iou0 + L_s0 + L_r0 + 0.2 beta sum SmoothL1 (unweighted, every cell);
      ``quality`` [B,H,W] q; ``cls`` [B,H,W] unweighted class loss (sum over channels of the
        quality BCE on GT channels and plain BCE elsewhere, every cell); ``obj`` [B,H,W]
        unweighted focal objectness against the cell's target;
      ``positive`` [B,H,W] mask, ``weight`` [B,H,W] = m omega at positives (0 elsewhere),
      ``num_positives`` [B];
      decoded ``pred_l`` [B,H,W,4] px, ``pred_s`` [B,H,W,4], ``pred_r``, ``obj_prob`` [B,H,W],
      ``class_prob`` [B,H,W,nC].
    """
    dec = decode_head_level(head_level, stride)
    enc = tf.cast(encoded_level, tf.float32)

    positive = enc[..., TARGET_POSITIVE_CHANNEL]
    mix = enc[..., TARGET_MIXUP_CHANNEL]
    omega = tf.where(positive > 0.0, enc[..., TARGET_AREA_WEIGHT_CHANNEL], tf.ones_like(positive))
    heat = enc[..., TARGET_FIRST_CLASS_CHANNEL:]
    g = tf.reduce_max(heat, axis=-1)
    gt_class = tf.cast(heat > 0.0, tf.float32)
    n_cls = tf.cast(tf.shape(heat)[-1], tf.float32)

    probiou_quality = check_quality(quality) == "probiou"
    box = box_terms(dec, enc, stride, image_size, with_obb=with_obb or probiou_quality)
    loss_iou0, loss_s0, loss_r0, loss_l0 = box["iou"], box["s"], box["r"], box["l"]
    if probiou_quality:
        quality_energy = -tf.math.log(tf.clip_by_value(1.0 - box["obb"], _MIN_PROBIOU, 1.0))
    else:
        quality_energy = loss_iou0 + loss_s0 + loss_r0
    quality = tf.exp(-quality_energy)

    if check_objectness_target(objectness_target) == "quality":
        positive_target = tf.clip_by_value(tf.stop_gradient(quality), OBJ_NEGATIVE_TARGET, OBJ_POSITIVE_TARGET)
    else:
        positive_target = OBJ_POSITIVE_TARGET
    obj_target = tf.where(positive > 0.0, positive_target, OBJ_NEGATIVE_TARGET)
    obj = focal_bce(dec["obj_logit"], obj_target)
    obj_pos = positive * obj * mix * (g + tf.stop_gradient(quality)) / 2.0
    obj_neg = (1.0 - positive) * obj * mix

    t_pos = (1.0 - LABEL_SMOOTHING) + LABEL_SMOOTHING / n_cls
    t_neg = LABEL_SMOOTHING / n_cls
    cls_pos_channels = gt_class * quality_bce(dec["class_logits"], -quality_energy[..., None], t_pos)
    if plain_class_weight is None:
        plain_class_weight = DEFAULT_PLAIN_CLASS_WEIGHT
    if plain_class_weight:
        cls_pos_channels += float(plain_class_weight) * gt_class * class_bce(dec["class_logits"], t_pos)
    cls_neg_channels = (1.0 - gt_class) * class_bce(dec["class_logits"], t_neg)
    cls_pos_cell = tf.reduce_sum(cls_pos_channels, axis=-1)
    cls_neg_cell = tf.reduce_sum(cls_neg_channels, axis=-1)
    weight = positive * mix * omega
    cls_pos = cls_pos_cell * weight
    cls_neg = cls_neg_cell * weight

    gt_prob = tf.reduce_sum(gt_class * dec["class_prob"], axis=-1)
    w_reg = weight * (gt_prob + g) / 2.0

    return {
        "obj_pos": obj_pos,
        "obj_neg": obj_neg,
        "cls_pos": cls_pos,
        "cls_neg": cls_neg,
        "iou": loss_iou0 * w_reg,
        "s": loss_s0 * w_reg,
        "r": loss_r0 * w_reg,
        "l": loss_l0 * w_reg,
        "obb": box["obb"] * w_reg if with_obb else tf.zeros_like(loss_l0),
        "box": box["box"],
        "quality": quality,
        "cls": cls_pos_cell + cls_neg_cell,
        "obj": obj,
        "positive": positive,
        "weight": weight,
        "num_positives": tf.reduce_sum(positive, axis=[1, 2]),
        "pred_l": dec["pred_l"],
        "pred_s": dec["pred_s"],
        "pred_r": dec["pred_r"],
        "obj_prob": dec["obj_prob"],
        "class_prob": dec["class_prob"],
    }


def reduce_level_terms(cell_terms):
    """Scalar terms of one level from ``per_cell_terms`` output (per-image positive norm)."""
    normaliser = tf.maximum(cell_terms["num_positives"], 1.0)  # [B]
    out = {}
    for name in JOL_TERM_NAMES:
        per_image = tf.reduce_sum(cell_terms[name], axis=[1, 2]) / normaliser
        out[name] = tf.reduce_mean(per_image)
    return out


def term_weights_of(overrides=None):
    """``TERM_WEIGHTS`` with `overrides` (term name -> weight) applied; unknown names raise."""
    weights = dict(TERM_WEIGHTS)
    for name, value in (overrides or {}).items():
        if name not in weights:
            raise ValueError(f"jol: unknown loss term {name!r} in term_weights; terms: {', '.join(JOL_TERM_NAMES)}")
        weights[name] = float(value)
    return weights


def total_from_terms(terms, term_weights=None):
    """The weighted sum of the terms (``term_weights_of(term_weights)``)."""
    weights = term_weights_of(term_weights)
    return tf.add_n([weights[name] * terms[name] for name in JOL_TERM_NAMES if weights[name]])


def jol_terms_and_cells(
    head_outputs,
    encoded,
    strides,
    image_size,
    plain_class_weight=None,
    term_weights=None,
    quality="gghl",
    objectness_target="fixed",
):
    """GGHL JOL over all levels, with the per-cell maps it was summed from.

    Arguments as ``jol_loss``. Returns (terms, cells): terms as ``jol_loss``; cells the list
    (one per level) of ``per_cell_terms`` dicts (reused by prediction distillation).
    """
    head_outputs, encoded, strides = list(head_outputs), list(encoded), list(strides)
    with_obb = term_weights_of(term_weights)["obb"] != 0.0
    if not (len(head_outputs) == len(encoded) == len(strides)):
        raise ValueError(
            f"jol.jol_loss: got {len(head_outputs)} head levels, {len(encoded)} target levels "
            f"and {len(strides)} strides; they must match"
        )
    terms = {name: tf.constant(0.0) for name in JOL_TERM_NAMES}
    cells = []
    for head_level, encoded_level, stride in zip(head_outputs, encoded, strides):
        head_grid, target_grid = head_level.shape[1:3], encoded_level.shape[1:3]
        if None not in head_grid and None not in target_grid and head_grid != target_grid:
            raise ValueError(
                f"jol.jol_loss: stride {stride}: head grid {tuple(head_grid)} != target grid "
                f"{tuple(target_grid)} (image_size {image_size} must match the model input)"
            )
        head_classes = _classes(head_level, HEAD_BOX_CHANNELS)
        target_classes = _classes(encoded_level, TARGET_BOX_CHANNELS)
        if head_classes is not None and target_classes is not None and head_classes != target_classes:
            raise ValueError(
                f"jol.jol_loss: stride {stride}: head has {head_classes} classes, targets {target_classes}"
            )
        level_cells = per_cell_terms(
            head_level,
            encoded_level,
            stride,
            image_size,
            plain_class_weight=plain_class_weight,
            with_obb=with_obb,
            quality=quality,
            objectness_target=objectness_target,
        )
        cells.append(level_cells)
        level = reduce_level_terms(level_cells)
        terms = {name: terms[name] + level[name] for name in JOL_TERM_NAMES}
    terms[TOTAL] = total_from_terms(terms, term_weights)
    return terms, cells


def _classes(tensor, box_channels):
    channels = tensor.shape[-1]
    return None if channels is None else channels - box_channels


def jol_loss(
    head_outputs,
    encoded,
    strides,
    image_size,
    plain_class_weight=None,
    term_weights=None,
    quality="gghl",
    objectness_target="fixed",
):
    """GGHL JOL over all levels.

    head_outputs: list of logits [B, H_l, W_l, 10 + nC]; encoded: list from
    ``assign.encode_targets``; strides: one int per level; image_size: S (int or tensor);
    plain_class_weight: see ``per_cell_terms`` (None: ``DEFAULT_PLAIN_CLASS_WEIGHT``);
    term_weights: {term: weight} replacing entries of ``TERM_WEIGHTS`` (e.g. {"obb": 4});
    the ``obb`` term is computed only when its weight is nonzero (else it is 0); quality:
    "gghl" or "probiou"; objectness_target: "fixed" or "quality" (see the module docstring).
    Returns dict of float32 scalars ``obj_pos, obj_neg, cls_pos, cls_neg, iou, s, r, l, obb,
    total``.
    """
    return jol_terms_and_cells(
        head_outputs, encoded, strides, image_size, plain_class_weight, term_weights, quality, objectness_target
    )[0]
