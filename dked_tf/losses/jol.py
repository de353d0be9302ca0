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
2 obj_pos + 2 obj_neg + cls_pos + cls_neg + iou + s + 16 r + 0.2 l.

w_plain (``plain_class_weight``, default ``DEFAULT_PLAIN_CLASS_WEIGHT`` = 1) is GGHL's plain
class BCE as added to the total in its 2021-11 .. 2022-03 versions; 0 gives HEAD exactly.

Numerical safety (deviations that only act at extremes): l logits are clipped to
[-16, 16] before exp; BCE on the product probability sigmoid(z) q is evaluated in log
space (log p = log_sigmoid(z) - E, 1 - p floored at 1e-7); everything is computed in
float32 whatever the input dtype.
"""

from __future__ import annotations

import tensorflow as tf

from dked_tf.losses.assign import NUM_BOX_CHANNELS

LABEL_SMOOTHING = 0.01
OBJ_POSITIVE_TARGET = 1.0 - LABEL_SMOOTHING / 2.0  # 0.995
OBJ_NEGATIVE_TARGET = LABEL_SMOOTHING / 2.0  # 0.005
FOCAL_GAMMA = 2.0
LOG_DISTANCE_CLIP = 16.0
TERM_WEIGHTS = {"obj_pos": 2.0, "obj_neg": 2.0, "cls_pos": 1.0, "cls_neg": 1.0,
                "iou": 1.0, "s": 1.0, "r": 16.0, "l": 0.2}
TERM_NAMES = tuple(TERM_WEIGHTS)
# Weight of the plain BCE-with-logits class loss on the GT channels at positive cells, added
# into ``cls_pos``. GGHL HEAD computes it but does not add it (weight 0.0); its 2021-11 ..
# 2022-03 versions added it with weight 1 and the author notes it speeds up early training;
# measured on the synthetic HRSC set (6 epochs, CPU) it roughly doubles the teacher mAP.
DEFAULT_PLAIN_CLASS_WEIGHT = 1.0
_EPS = 1e-9


def decode_head_level(head_level, stride):
    """Activations of one head level (logits float [B, H, W, 10 + nC]).

    Returns dict (float32): ``pred_l`` [B,H,W,4] distances to top/right/bottom/left (pixels),
    ``pred_s`` [B,H,W,4] gliding ratios, ``pred_r`` [B,H,W] area ratio, ``obj_logit``,
    ``obj_prob`` [B,H,W], ``class_logits``, ``class_prob`` [B,H,W,nC].
    """
    raw = tf.cast(head_level, tf.float32)
    distance_logits = tf.clip_by_value(raw[..., 0:4], -LOG_DISTANCE_CLIP, LOG_DISTANCE_CLIP)
    pred_s = (tf.clip_by_value(tf.sigmoid(raw[..., 4:8]), 0.01, 1.0) - 0.01) / 0.99
    obj_logit = raw[..., 9]
    class_logits = raw[..., 10:]
    return {
        "pred_l": tf.exp(distance_logits) * float(stride),
        "pred_s": pred_s,
        "pred_r": tf.nn.relu6(raw[..., 8] + 3.0) / 6.0,
        "obj_logit": obj_logit,
        "obj_prob": tf.sigmoid(obj_logit),
        "class_logits": class_logits,
        "class_prob": tf.sigmoid(class_logits),
    }


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


def per_cell_terms(head_level, encoded_level, stride, image_size, plain_class_weight=None):
    """JOL terms of one level as per-cell maps.

    head_level: logits [B, H, W, 10 + nC] (any float dtype); encoded_level: the matching
    ``assign.encode_targets`` level [B, H, W, 16 + nC]; stride: int; image_size: S (int or
    scalar tensor); plain_class_weight: weight of the plain BCE-with-logits(z_c, t_c) on the
    GT channels at positives, added into ``cls_pos`` (None: ``DEFAULT_PLAIN_CLASS_WEIGHT``;
    0 = GGHL HEAD).

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
    size = tf.cast(image_size, tf.float32)

    gt_w, gt_h = enc[..., 2], enc[..., 3]
    gt_l = enc[..., 4:8]
    gt_s = enc[..., 8:12]
    gt_r = enc[..., 12]
    positive = enc[..., 13]
    mix = enc[..., 14]
    omega = tf.where(positive > 0.0, enc[..., 15], tf.ones_like(positive))
    heat = enc[..., NUM_BOX_CHANNELS:]
    g = tf.reduce_max(heat, axis=-1)
    gt_class = tf.cast(heat > 0.0, tf.float32)
    n_cls = tf.cast(tf.shape(heat)[-1], tf.float32)

    beta = 2.0 - gt_w * gt_h / (size * size)
    giou = giou_from_distances(dec["pred_l"], gt_l)
    loss_iou0 = beta * (1.0 - giou)
    loss_s0 = tf.reduce_sum(tf.square(dec["pred_s"] - gt_s), axis=-1)
    loss_r0 = tf.square(dec["pred_r"] - gt_r)
    quality_energy = loss_iou0 + loss_s0 + loss_r0
    quality = tf.exp(-quality_energy)
    loss_l0 = beta * tf.reduce_sum(
        smooth_l1(dec["pred_l"] / float(stride), gt_l / float(stride)), axis=-1)

    obj_target = tf.where(positive > 0.0, OBJ_POSITIVE_TARGET, OBJ_NEGATIVE_TARGET)
    obj = focal_bce(dec["obj_logit"], obj_target)
    obj_pos = positive * obj * mix * (g + tf.stop_gradient(quality)) / 2.0
    obj_neg = (1.0 - positive) * obj * mix

    t_pos = (1.0 - LABEL_SMOOTHING) + LABEL_SMOOTHING / n_cls
    t_neg = LABEL_SMOOTHING / n_cls
    cls_pos_channels = gt_class * quality_bce(
        dec["class_logits"], -quality_energy[..., None], t_pos)
    if plain_class_weight is None:
        plain_class_weight = DEFAULT_PLAIN_CLASS_WEIGHT
    if plain_class_weight:
        cls_pos_channels += float(plain_class_weight) * gt_class * class_bce(
            dec["class_logits"], t_pos)
    cls_neg_channels = (1.0 - gt_class) * class_bce(dec["class_logits"], t_neg)
    cls_pos_cell = tf.reduce_sum(cls_pos_channels, axis=-1)
    cls_neg_cell = tf.reduce_sum(cls_neg_channels, axis=-1)
    weight = positive * mix * omega
    cls_pos = cls_pos_cell * weight
    cls_neg = cls_neg_cell * weight

    gt_prob = tf.reduce_sum(gt_class * dec["class_prob"], axis=-1)
    w_reg = weight * (gt_prob + g) / 2.0

    return {
        "obj_pos": obj_pos, "obj_neg": obj_neg, "cls_pos": cls_pos, "cls_neg": cls_neg,
        "iou": loss_iou0 * w_reg, "s": loss_s0 * w_reg, "r": loss_r0 * w_reg,
        "l": loss_l0 * w_reg,
        "box": loss_iou0 + loss_s0 + loss_r0 + 0.2 * loss_l0,
        "quality": quality,
        "cls": cls_pos_cell + cls_neg_cell,
        "obj": obj,
        "positive": positive,
        "weight": weight,
        "num_positives": tf.reduce_sum(positive, axis=[1, 2]),
        "pred_l": dec["pred_l"], "pred_s": dec["pred_s"], "pred_r": dec["pred_r"],
        "obj_prob": dec["obj_prob"], "class_prob": dec["class_prob"],
    }


def reduce_level_terms(cell_terms):
    """Scalar terms of one level from ``per_cell_terms`` output (per-image positive norm)."""
    normaliser = tf.maximum(cell_terms["num_positives"], 1.0)  # [B]
    out = {}
    for name in TERM_NAMES:
        per_image = tf.reduce_sum(cell_terms[name], axis=[1, 2]) / normaliser
        out[name] = tf.reduce_mean(per_image)
    return out


def total_from_terms(terms):
    return tf.add_n([TERM_WEIGHTS[name] * terms[name] for name in TERM_NAMES])


def jol_loss(head_outputs, encoded, strides, image_size, plain_class_weight=None):
    """GGHL JOL over all levels.

    head_outputs: list of logits [B, H_l, W_l, 10 + nC]; encoded: list from
    ``assign.encode_targets``; strides: one int per level; image_size: S (int or tensor);
    plain_class_weight: see ``per_cell_terms`` (None: ``DEFAULT_PLAIN_CLASS_WEIGHT``).
    Returns dict of float32 scalars ``obj_pos, obj_neg, cls_pos, cls_neg, iou, s, r, l,
    total``.
    """
    head_outputs, encoded, strides = list(head_outputs), list(encoded), list(strides)
    if not (len(head_outputs) == len(encoded) == len(strides)):
        raise ValueError(
            f"jol.jol_loss: got {len(head_outputs)} head levels, {len(encoded)} target levels "
            f"and {len(strides)} strides; they must match")
    terms = {name: tf.constant(0.0) for name in TERM_NAMES}
    for head_level, encoded_level, stride in zip(head_outputs, encoded, strides):
        head_grid, target_grid = head_level.shape[1:3], encoded_level.shape[1:3]
        if None not in head_grid and None not in target_grid and head_grid != target_grid:
            raise ValueError(
                f"jol.jol_loss: stride {stride}: head grid {tuple(head_grid)} != target grid "
                f"{tuple(target_grid)} (image_size {image_size} must match the model input)")
        head_ch, target_ch = head_level.shape[-1], encoded_level.shape[-1]
        if head_ch is not None and target_ch is not None and head_ch - 10 != target_ch - NUM_BOX_CHANNELS:
            raise ValueError(
                f"jol.jol_loss: stride {stride}: head has {head_ch - 10} classes, targets "
                f"{target_ch - NUM_BOX_CHANNELS}")
        level = reduce_level_terms(per_cell_terms(head_level, encoded_level, stride, image_size,
                                                  plain_class_weight=plain_class_weight))
        terms = {name: terms[name] + level[name] for name in TERM_NAMES}
    terms["total"] = total_from_terms(terms)
    return terms
