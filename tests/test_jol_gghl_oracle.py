"""GGHL's own training loss, transcribed to numpy, as an oracle for ``dked_tf.losses.jol``.

Source: github.com/Shank2358/GGHL at a82e8a2f8761ed52543acb484daeab7b1a984853 (2023-02-23):
``modelR/loss/loss.py`` (HEAD JOL, last changed 9d6daa2, 2022-09-19), ``modelR/head/head_GGHL.py``
(decode of the raw head output into ``p_d``), ``utils/utils_basic.py`` (``GIOU_xywh_torch``) and
``config/config.py`` (SCALE_FACTOR = 2, IOU_TYPE = 'GIOU', STRIDES = [8, 16, 32]). The plain
class BCE that the 2021-11 .. 2022-03 versions added to the total is in ``modelR/loss/loss_jol.py``
at 69f3c19 (2022-03-02); apart from that addition its ``__cal_loss`` equals HEAD's.

The oracle below is written from the formulas (float64, no TensorFlow), not copied. It returns
the values GGHL's ``__cal_loss`` returns, summed over the levels as ``Loss.forward`` does: these
already carry GGHL's weights (2 on fg/bg, 16 on r, 0.2 on l), so ours are compared as
``TERM_WEIGHTS[name] * term``. Inputs: raw head logits from a fixed numpy RNG and the targets of
our ``encode_targets`` (whose channel layout is GGHL's label layout).
"""

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")

from dked_tf.losses.assign import encode_targets
from dked_tf.losses.jol import TERM_WEIGHTS, jol_loss, quality_bce
from dked_tf.ops.obb import rbox_to_poly

SIZE = 96
NUM_CLASSES = 3
STRIDES = (8, 16, 32)
# Our term name -> the name of GGHL's returned value.
GGHL_NAME = {
    "obj_pos": "fg",
    "obj_neg": "bg",
    "cls_pos": "pos",
    "cls_neg": "neg",
    "iou": "iou",
    "s": "s",
    "r": "r",
    "l": "l",
}
RTOL = 1e-4
ATOL = 1e-6


# ------------------------------------------------------------------------------ GGHL oracle


def _sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def _bce_with_logits(x, t):
    """torch.nn.BCEWithLogitsLoss(reduction='none'): -(t log sig(x) + (1 - t) log(1 - sig(x)))."""
    return np.maximum(x, 0.0) - x * t + np.log1p(np.exp(-np.abs(x)))


def _focal(x, t):
    """GGHL FocalLoss(gamma=2, alpha=1): BCE-with-logits times |t - sigmoid(x)|^2."""
    return _bce_with_logits(x, t) * np.abs(t - _sigmoid(x)) ** 2


def _smooth_l1(a, b):
    """torch.nn.SmoothL1Loss(reduction='none'), beta = 1."""
    d = np.abs(a - b)
    return np.where(d < 1.0, 0.5 * d * d, d - 0.5)


def _giou_xywh(b1, b2):
    """GIoU of [..., (cx, cy, w, h)] boxes as utils_basic.GIOU_xywh_torch computes it."""

    def corners(b):
        lo = b[..., :2] - 0.5 * b[..., 2:]
        hi = b[..., :2] + 0.5 * b[..., 2:]
        return np.minimum(lo, hi), np.maximum(lo, hi)

    lo1, hi1 = corners(b1)
    lo2, hi2 = corners(b2)
    area1 = np.prod(hi1 - lo1, axis=-1)
    area2 = np.prod(hi2 - lo2, axis=-1)
    inter = np.prod(np.maximum(np.minimum(hi1, hi2) - np.maximum(lo1, lo2), 0.0), axis=-1)
    union = area1 + area2 - inter
    iou = inter / (union + 1e-16)
    enclose = np.prod(np.maximum(np.maximum(hi1, hi2) - np.minimum(lo1, lo2), 0.0), axis=-1)
    return iou - (enclose - union) / (enclose + 1e-16)


def gghl_decode(raw, stride, clip_log_distance=None, mask_s_by_r=True):
    """head_GGHL.Head.__decode of one level: raw [B, H, W, 10 + nC] -> decoded arrays.

    clip_log_distance: our deviation (clip the l logits before exp); None = GGHL.
    mask_s_by_r: GGHL zeroes the decoded gliding ratios where the decoded r > 0.9.
    """
    raw = np.asarray(raw, np.float64)
    _, rows, cols, _ = raw.shape
    log_l = raw[..., 0:4]
    if clip_log_distance is not None:
        log_l = np.clip(log_l, -clip_log_distance, clip_log_distance)
    l1234 = np.exp(log_l) * stride  # top, right, bottom, left
    gx = np.arange(cols, dtype=np.float64)[None, None, :]
    gy = np.arange(rows, dtype=np.float64)[None, :, None]
    xmin = gx * stride + stride / 2 - l1234[..., 3]
    ymin = gy * stride + stride / 2 - l1234[..., 0]
    xmax = gx * stride + stride / 2 + l1234[..., 1]
    ymax = gy * stride + stride / 2 + l1234[..., 2]
    xywh = np.stack(
        [(xmin + xmax) / 2, (ymin + ymax) / 2, l1234[..., 1] + l1234[..., 3], l1234[..., 0] + l1234[..., 2]], -1
    )
    s = (np.clip(_sigmoid(raw[..., 4:8]), 0.01, 1.0) - 0.01) / (1.0 - 0.01)
    r = np.clip(raw[..., 8] + 3.0, 0.0, 6.0) / 6.0  # relu6(x + 3) / 6
    if mask_s_by_r:
        s = s * np.where(r > 0.9, 0.0, 1.0)[..., None]
    return {"xywh": xywh, "s": s, "r": r, "l": l1234, "conf": raw[..., 9], "cls": raw[..., 10:]}


def gghl_quality_bce(z, q, t, one_minus_p_floor=None):
    """GGHL's loss_pos channel term: BCE-with-logits of logit(sigmoid(z) q), the logit taken as
    -log((1 - p) / (p + 1e-16) + 1e-16). one_minus_p_floor: our deviation (BCE evaluated on p
    directly with 1 - p floored); None = GGHL."""
    p = _sigmoid(z) * q
    if one_minus_p_floor is None:
        logit = -np.log((1.0 - p) / (p + 1e-16) + 1e-16)
        return _bce_with_logits(logit, t)
    return -(t * np.log(p) + (1.0 - t) * np.log(np.maximum(1.0 - p, one_minus_p_floor)))


def gghl_level(raw, label, stride, num_classes, **options):
    """Loss.__cal_loss of one level. Returns GGHL's weighted values fg, bg, pos, neg, iou, cls,
    s, r, l (scalars) and ``cls_gt`` (the part of ``cls`` on the GT class channels)."""
    floor = options.pop("one_minus_p_floor", None)
    d = gghl_decode(raw, stride, **options)
    label = np.asarray(label, np.float64)
    batch, grid = label.shape[:2]
    img_size = stride * grid
    delta = 0.01

    xywh_t, l_t, s_t, r_t = label[..., 0:4], label[..., 4:8], label[..., 8:12], label[..., 12]
    mask, mix, area_w, heat = label[..., 13], label[..., 14], label[..., 15], label[..., 16:]
    gh = heat.max(-1)
    noobj = 1.0 - mask
    conf_t = mask * (1.0 - delta) + delta / 2.0
    gt = (heat != 0).astype(np.float64)
    cls_t = gt * (1.0 - delta) + delta / num_classes
    omega = area_w + noobj

    scale = 2.0 - (2.0 - 1.0) * xywh_t[..., 2] * xywh_t[..., 3] / (img_size * img_size)
    e_iou = scale * (1.0 - _giou_xywh(d["xywh"], xywh_t))
    e_s = ((d["s"] - s_t) ** 2).sum(-1)
    e_r = (d["r"] - r_t) ** 2
    q = np.exp(-(e_iou + e_s + e_r))

    focal = _focal(d["conf"], conf_t)
    maps = {
        "fg": mask * focal * mix * (gh + q) / 2.0,
        "bg": noobj * focal * mix,
    }
    w_cls = (mask * mix * omega)[..., None]
    maps["pos"] = (gt * gghl_quality_bce(d["cls"], q[..., None], cls_t, floor) * w_cls).sum(-1)
    plain = _bce_with_logits(d["cls"], cls_t) * w_cls
    maps["neg"] = ((1.0 - gt) * plain).sum(-1)
    maps["cls"] = plain.sum(-1)
    maps["cls_gt"] = (gt * plain).sum(-1)
    w_reg = mask * mix * omega * ((gt * _sigmoid(d["cls"])).sum(-1) + gh) / 2.0
    maps["iou"] = e_iou * w_reg
    maps["s"] = e_s * w_reg
    maps["r"] = e_r * w_reg
    maps["l"] = scale * _smooth_l1(d["l"] / stride, l_t / stride).sum(-1) * w_reg

    n = np.maximum(mask.reshape(batch, -1).sum(-1) + 1e-16, 1.0)[:, None, None]
    weights = {"fg": 2.0, "bg": 2.0, "r": 16.0, "l": 0.2}
    return {k: weights.get(k, 1.0) * (v / n).sum() / batch for k, v in maps.items()}


def gghl_loss(heads, labels, strides, num_classes, add_loss_cls=False, **options):
    """Loss.forward: per-level values summed; ``loss`` = fg + bg + pos + neg + iou + s + r + l
    (HEAD), plus ``cls`` with add_loss_cls (the 2021-11 .. 2022-03 versions)."""
    out = {}
    for raw, label, stride in zip(heads, labels, strides):
        level = gghl_level(raw, label, stride, num_classes, **dict(options))
        for k, v in level.items():
            out[k] = out.get(k, 0.0) + v
    out["loss"] = sum(out[k] for k in ("fg", "bg", "pos", "neg", "iou", "s", "r", "l"))
    if add_loss_cls:
        out["loss"] += out["cls"]
    return out


# ------------------------------------------------------------------------------ inputs


def make_targets():
    """Two images at 96 px, three boxes each for all three levels (HBB long sides ~64, ~36,
    ~9 px), two overlapping boxes of different classes (a positive cell with two GT channels),
    a mixup weight and one padding row (weight 0) per image."""
    rb = rbox_to_poly(
        np.array(
            [
                [50.0, 46.0, 60.0, 24.0, 0.5],  # image 0: large, rotated -> level 2
                [24.0, 70.0, 36.0, 14.0, 0.0],  # image 0: medium, axis aligned -> level 1
                [76.0, 76.0, 8.0, 5.0, 0.3],  # image 0: small, rotated -> level 0
                [40.0, 40.0, 36.0, 14.0, -0.8],  # image 1: medium, rotated -> levels 1 and 2
                [44.0, 42.0, 30.0, 12.0, -0.5],  # image 1: overlaps the previous, other class
                [76.0, 20.0, 8.0, 6.0, 0.2],  # image 1: small -> level 0
                [60.0, 60.0, 40.0, 30.0, 0.0],  # padding
            ]
        )
    )
    polygons = np.zeros((2, 4, 8), np.float32)
    polygons[0, :3] = rb[0:3]
    polygons[1, :3] = rb[3:6]
    polygons[:, 3] = rb[6]
    classes = np.array([[0, 1, 2, 1], [2, 0, 1, 2]], np.int32)
    weights = np.array([[1.0, 1.0, 1.0, 0.0], [0.6, 1.0, 1.0, 0.0]], np.float32)
    return {"polygons": polygons, "classes": classes, "weights": weights}


def make_heads(labels, seed=0, max_r_logit=2.0):
    """Raw head logits [B, H, W, 10 + nC] per level from a fixed RNG; the r logit is capped at
    max_r_logit (2.0 < 2.4 keeps GGHL's decoded r below its 0.9 gliding-ratio mask)."""
    rng = np.random.default_rng(seed)
    heads = []
    for label in labels:
        raw = rng.standard_normal(label.shape[:3] + (10 + NUM_CLASSES,))
        raw[..., 8] = np.minimum(raw[..., 8], max_r_logit)
        heads.append(raw.astype(np.float32))
    return heads


@pytest.fixture(scope="module")
def labels():
    encoded = encode_targets(make_targets(), SIZE, NUM_CLASSES, STRIDES)
    labels = [e.numpy() for e in encoded]
    for k, label in enumerate(labels):  # the batch must exercise every level
        assert label[..., 13].sum() > 0, f"no positives on level {k}"
    # some positive cell carries heatmap values of two classes (GT channels beyond the owner's)
    assert any(((x[..., 16:] > 0).sum(-1) * x[..., 13]).max() >= 2 for x in labels)
    return labels


def ours(heads, labels, **kwargs):
    tensors = [tf.constant(h) for h in heads]
    terms = jol_loss(tensors, [tf.constant(x) for x in labels], STRIDES, SIZE, **kwargs)
    return {k: float(v) for k, v in terms.items()}


def assert_close(got, want, what):
    assert got == pytest.approx(want, rel=RTOL, abs=ATOL), f"{what}: ours {got!r} != GGHL {want!r}"


# ------------------------------------------------------------------------------ tests


@pytest.fixture(scope="module")
def head_case(labels):
    heads = make_heads(labels, seed=0)
    return ours(heads, labels, plain_class_weight=0.0), gghl_loss(heads, labels, STRIDES, NUM_CLASSES)


@pytest.mark.parametrize("name", list(GGHL_NAME))
def test_term_matches_gghl_head(head_case, name):
    """plain_class_weight = 0 is GGHL HEAD: every weighted term equals GGHL's returned value."""
    got, want = head_case
    assert want[GGHL_NAME[name]] > 1e-3, "degenerate case: the term must be nonzero to be tested"
    assert_close(TERM_WEIGHTS[name] * got[name], want[GGHL_NAME[name]], name)


def test_total_matches_gghl_head(head_case):
    got, want = head_case
    assert_close(got["total"], want["loss"], "total")


def test_oracle_is_sensitive(labels):
    """The oracle is not trivially equal to ours: other logits change every term."""
    base = gghl_loss(make_heads(labels, seed=0), labels, STRIDES, NUM_CLASSES)
    other = gghl_loss(make_heads(labels, seed=1), labels, STRIDES, NUM_CLASSES)
    for name in GGHL_NAME.values():
        assert abs(base[name] - other[name]) > RTOL * abs(base[name]), name


def test_plain_class_weight_adds_gt_channel_part_of_gghl_loss_cls(labels):
    """Documented deviation: the default plain_class_weight = 1 adds GGHL's plain class BCE
    (``loss_cls``) restricted to the GT class channels into cls_pos; nothing else changes."""
    heads = make_heads(labels, seed=2)
    want = gghl_loss(heads, labels, STRIDES, NUM_CLASSES)
    for kwargs in ({}, {"plain_class_weight": 1.0}):
        got = ours(heads, labels, **kwargs)
        assert_close(got["cls_pos"], want["pos"] + want["cls_gt"], "cls_pos")
        for name in ("obj_pos", "obj_neg", "cls_neg", "iou", "s", "r", "l"):
            assert_close(TERM_WEIGHTS[name] * got[name], want[GGHL_NAME[name]], name)
        assert_close(got["total"], want["loss"] + want["cls_gt"], "total")


def test_plain_class_weight_covers_gt_channels_only_deviation(labels):
    """Documented deviation (losses/jol.py): GGHL 2021-11..2022-03 add loss_cls over every class
    channel; ours adds the plain BCE on the GT channels only (the non-GT part would be a second
    copy of cls_neg). With two classes the totals differ by exactly that non-GT part."""
    heads = make_heads(labels, seed=2)
    want = gghl_loss(heads, labels, STRIDES, NUM_CLASSES, add_loss_cls=True)
    got = ours(heads, labels, plain_class_weight=1.0)
    assert float(got["total"]) < float(want["loss"]) - 1e-3


def _r_saturated_heads(labels):
    """r logits of 3.0 (decoded r = 1 > 0.9) at every positive cell."""
    heads = make_heads(labels, seed=4)
    for raw, label in zip(heads, labels):
        raw[..., 8] = np.where(label[..., 13] > 0, 3.0, raw[..., 8])
    return heads


def test_ours_is_gghl_without_the_r_mask_on_gliding_ratios(labels):
    """Pins the difference above down: with GGHL's r > 0.9 mask on s_hat switched off, every
    term matches again."""
    heads = _r_saturated_heads(labels)
    got = ours(heads, labels, plain_class_weight=0.0)
    want = gghl_loss(heads, labels, STRIDES, NUM_CLASSES, mask_s_by_r=False)
    for name in GGHL_NAME:
        assert_close(TERM_WEIGHTS[name] * got[name], want[GGHL_NAME[name]], name)
    # with GGHL's mask the gliding term differs (documented deviation in losses/jol.py)
    masked = gghl_loss(heads, labels, STRIDES, NUM_CLASSES, mask_s_by_r=True)
    assert abs(float(TERM_WEIGHTS["s"] * got["s"]) - float(masked["s"])) > 1e-3


def test_distance_logit_clip_deviation(labels):
    """Documented deviation: l logits are clipped to [-16, 16] before exp. With logits of 20 at
    one positive cell ours equals the oracle with that clip and differs from GGHL's plain exp
    (SmoothL1 of exp(20) vs exp(16) strides)."""
    heads = make_heads(labels, seed=5)
    level = 2
    b, y, x = np.argwhere(labels[level][..., 13] > 0)[0]
    heads[level][b, y, x, 0:4] = 20.0
    got = ours(heads, labels, plain_class_weight=0.0)
    clipped = gghl_loss(heads, labels, STRIDES, NUM_CLASSES, clip_log_distance=16.0)
    plain = gghl_loss(heads, labels, STRIDES, NUM_CLASSES)
    for name in GGHL_NAME:
        assert_close(TERM_WEIGHTS[name] * got[name], clipped[GGHL_NAME[name]], name)
    assert TERM_WEIGHTS["l"] * got["l"] < 0.1 * plain["l"]


def test_quality_bce_floor_deviation():
    """Documented deviation: BCE(sigmoid(z) q, t) is evaluated in log space with 1 - p floored
    at 1e-7. It equals GGHL's logit form for moderate p; at p -> 1 GGHL's logit saturates at
    -log(1e-16) = 36.8 while ours uses -log(1e-7) = 16.1."""
    t = 0.99 + 0.01 / NUM_CLASSES
    z = np.array([-3.0, 0.5, 2.0, 40.0])
    log_q = np.array([-2.0, -0.3, -0.05, 0.0])
    got = quality_bce(tf.constant(z, tf.float32), tf.constant(log_q, tf.float32), t).numpy()
    floored = gghl_quality_bce(z, np.exp(log_q), t, one_minus_p_floor=1e-7)
    gghl = gghl_quality_bce(z, np.exp(log_q), t)
    np.testing.assert_allclose(got, floored, rtol=RTOL)
    np.testing.assert_allclose(got[:3], gghl[:3], rtol=RTOL)
    assert gghl[3] == pytest.approx((1 - t) * -np.log(1e-16), rel=1e-3)
    assert got[3] == pytest.approx((1 - t) * -np.log(1e-7), rel=1e-3)
