"""The head contract: channel layouts of the raw head output and of the OLA targets, the decode
of raw outputs into boxes, and the names of the loss terms.

Raw head output of one level (``layers.head``): float32 logits ``[B, H, W, HEAD_BOX_CHANNELS + nC]``
with H = ceil(S / stride), channels per cell

    0-3   l1..l4   log distances from the cell centre to the top, right, bottom, left HBB edges;
                   decode exp(clip(x, ±LOG_DISTANCE_CLIP)) · stride (pixels)
    4-7   s1..s4   gliding ratios; decode (clip(sigmoid(x), 0.01, 1) − 0.01) / 0.99, in [0, 1]
    8     r        area ratio polygon / HBB; decode hard sigmoid relu6(x + 3) / 6, in [0, 1]
    9     objectness logit
    10..  class logits (nC)

Encoded OLA targets of one level (``losses.assign.encode_targets``): float32
``[B, H, W, TARGET_BOX_CHANNELS + nC]``, channels per cell

    0-3   HBB cx, cy, w, h of the cell's object (pixels)
    4-7   l1..l4: distances from the cell centre to the HBB top, right, bottom, left edges (pixels)
    8-11  s1..s4: ORC gliding ratios (0 when the area ratio r > 0.9)
    12    area ratio r
    13    positive mask (1 / 0)
    14    mixup weight (owner's weight at positive cells, 1 at negative cells)
    15    area weight omega at positive cells, 0 elsewhere
    16+c  oriented Gaussian heatmap of class c

The two layouts differ on purpose: the head predicts 10 box channels, the targets carry 16
(the HBB, the masks and the weights the loss needs besides the regression targets).

``decode_head_level`` is the one decode of raw outputs, used by the JOL loss, the prediction
distillation loss, the diagnostics and (through ``decode_cell_polygons``) the detector's
``decode_cells``, which every exported graph contains. It uses TFLite builtin ops only.
"""

import tensorflow as tf

# ----------------------------------------------------------------------------- raw head output
DISTANCE_CHANNELS = slice(0, 4)
GLIDING_CHANNELS = slice(4, 8)
AREA_RATIO_CHANNEL = 8
OBJECTNESS_CHANNEL = 9
HEAD_BOX_CHANNELS = 10
FIRST_CLASS_CHANNEL = HEAD_BOX_CHANNELS

# ----------------------------------------------------------------------------- encoded targets
TARGET_HBB_CHANNELS = slice(0, 4)
TARGET_WIDTH_CHANNEL = 2
TARGET_HEIGHT_CHANNEL = 3
TARGET_DISTANCE_CHANNELS = slice(4, 8)
TARGET_GLIDING_CHANNELS = slice(8, 12)
TARGET_AREA_RATIO_CHANNEL = 12
TARGET_POSITIVE_CHANNEL = 13
TARGET_MIXUP_CHANNEL = 14
TARGET_AREA_WEIGHT_CHANNEL = 15
TARGET_BOX_CHANNELS = 16
TARGET_FIRST_CLASS_CHANNEL = TARGET_BOX_CHANNELS

# ----------------------------------------------------------------------------- decode constants
# Distance logits are clipped to [-16, 16] before exp: exp(16) · 32 px ~ 2.8e8 px is far beyond
# any input, so a decoded box that large is clipped to the image anyway, and the loss keeps a
# finite value and gradient for any logit up to it.
LOG_DISTANCE_CLIP = 16.0
GLIDING_FLOOR = 0.01  # sigmoid outputs below this decode to gliding ratio 0
MIN_BOX_SIDE = 0.1  # pixels; decoded boxes whose HBB side is not larger are no detections

# ----------------------------------------------------------------------------- loss term names
# JOL terms (losses.jol), in the order of its total; logged as such by OrientedDetector.fit and
# as "jol_<name>" by the Distiller.
JOL_TERM_NAMES = ("obj_pos", "obj_neg", "cls_pos", "cls_neg", "iou", "s", "r", "l", "obb")
TOTAL = "total"
JOL_METRIC_PREFIX = "jol_"
# Distillation terms (losses.distill), one tuple per loss.
CORRELATION_TERMS = ("corr",)
RESPONSE_TERMS = ("resp",)
PREDICTION_TERMS = ("pred_loc", "pred_cls")
DISTILL_TERM_NAMES = CORRELATION_TERMS + RESPONSE_TERMS + PREDICTION_TERMS


def decode_head_level(head_level, stride):
    """Decode of one level's raw head output.

    head_level: logits [B, H, W, 10 + nC] (any float dtype); stride: int (pixels per cell).
    Returns dict of float32 tensors: ``pred_l`` [B,H,W,4] distances to the top, right, bottom,
    left HBB edges (pixels), ``pred_s`` [B,H,W,4] gliding ratios in [0, 1], ``pred_r`` [B,H,W]
    area ratio in [0, 1], ``obj_logit``, ``obj_prob`` [B,H,W], ``class_logits``,
    ``class_prob`` [B,H,W,nC].
    """
    raw = tf.cast(head_level, tf.float32)
    distance_logits = tf.clip_by_value(raw[..., DISTANCE_CHANNELS], -LOG_DISTANCE_CLIP, LOG_DISTANCE_CLIP)
    gliding = tf.clip_by_value(tf.sigmoid(raw[..., GLIDING_CHANNELS]), GLIDING_FLOOR, 1.0)
    obj_logit = raw[..., OBJECTNESS_CHANNEL]
    class_logits = raw[..., FIRST_CLASS_CHANNEL:]
    return {
        "pred_l": tf.exp(distance_logits) * float(stride),
        "pred_s": (gliding - GLIDING_FLOOR) / (1.0 - GLIDING_FLOOR),
        "pred_r": tf.nn.relu6(raw[..., AREA_RATIO_CHANNEL] + 3.0) / 6.0,
        "obj_logit": obj_logit,
        "obj_prob": tf.sigmoid(obj_logit),
        "class_logits": class_logits,
        "class_prob": tf.sigmoid(class_logits),
    }


def decode_cell_polygons(decoded, stride, horizontal_threshold):
    """Oriented box of every cell from ``decode_head_level`` output.

    The HBB is the cell centre ((col + 0.5) · stride, (row + 0.5) · stride) moved by the four
    distances, clipped to the input [0, W · stride] x [0, H · stride]; the gliding ratios place
    the vertices on its top, right, bottom and left edges and are zeroed where the area ratio
    exceeds ``horizontal_threshold`` (the box is then the HBB).
    Returns float32 [B, H, W, 8] (x1 y1 .. x4 y4, input pixels). TFLite builtin ops only.
    """
    dist = decoded["pred_l"]
    shape = tf.shape(dist)
    rows, cols = shape[1], shape[2]
    stride_f = float(stride)
    cx = tf.reshape((tf.cast(tf.range(cols), tf.float32) + 0.5) * stride_f, [1, 1, -1])
    cy = tf.reshape((tf.cast(tf.range(rows), tf.float32) + 0.5) * stride_f, [1, -1, 1])
    width_px = tf.cast(cols, tf.float32) * stride_f
    height_px = tf.cast(rows, tf.float32) * stride_f
    xmin = tf.clip_by_value(cx - dist[..., 3], 0.0, width_px)
    ymin = tf.clip_by_value(cy - dist[..., 0], 0.0, height_px)
    xmax = tf.clip_by_value(cx + dist[..., 1], 0.0, width_px)
    ymax = tf.clip_by_value(cy + dist[..., 2], 0.0, height_px)
    ratio = tf.expand_dims(decoded["pred_r"], -1)
    glide = decoded["pred_s"] * tf.cast(ratio <= horizontal_threshold, tf.float32)
    w = xmax - xmin
    h = ymax - ymin
    return tf.stack(
        [
            xmin + glide[..., 0] * w,
            ymin,
            xmax,
            ymin + glide[..., 1] * h,
            xmax - glide[..., 2] * w,
            ymax,
            xmin,
            ymax - glide[..., 3] * h,
        ],
        axis=-1,
    )
