"""GGHL JOL loss (dked_tf.losses.jol): an independent float64 numpy transcription of the
reference formulas (§1.7), hand cases, NaN safety and a small optimisation run."""

import numpy as np
import pytest
import tensorflow as tf

from dked_tf.losses.assign import encode_targets
from dked_tf.losses.jol import giou_from_distances, jol_loss, per_cell_terms
from dked_tf.ops.obb import rbox_to_poly

S = 128
NC = 3
STRIDES = (8, 16, 32)
TERMS = ("obj_pos", "obj_neg", "cls_pos", "cls_neg", "iou", "s", "r", "l")


def targets_batch():
    """Two images: image 0 has an axis-aligned box (mixup 0.7) and a rotated box,
    image 1 has only padding."""
    rotated = rbox_to_poly(np.array([[72.0, 72.0, 48.0, 16.0, 0.6]]))[0]
    polys = np.zeros((2, 3, 8), np.float32)
    polys[0, 0] = [36, 40, 76, 40, 76, 64, 36, 64]
    polys[0, 1] = rotated
    polys[1, 0] = [10, 10, 50, 10, 50, 40, 10, 40]  # padding (weight 0)
    classes = np.array([[2, 0, 0], [1, 0, 0]], np.int32)
    weights = np.array([[0.7, 1.0, 0.0], [0.0, 0.0, 0.0]], np.float32)
    return {"polygons": polys, "classes": classes, "weights": weights}


def encoded_batch(targets=None):
    return encode_targets(targets or targets_batch(), S, NC, STRIDES)


def random_heads(encoded, seed=0, scale=1.0):
    rng = np.random.default_rng(seed)
    return [tf.constant(scale * rng.standard_normal(e.shape[:3] + (10 + NC,)), tf.float32) for e in encoded]


def perfect_heads(encoded):
    heads = []
    for e, stride in zip(encoded, STRIDES):
        e = e.numpy().astype(np.float64)
        pos = e[..., 13:14] > 0
        dist = np.log(np.maximum(e[..., 4:8], 1e-3) / stride)
        prob = 0.99 * e[..., 8:12] + 0.01
        glide = np.log(prob / (1 - prob))
        ratio = 6 * e[..., 12:13] - 3
        smoothed = np.log(0.995 / 0.005)  # sigmoid = the label-smoothed target
        obj = np.where(pos, smoothed, -smoothed)
        cls = np.where(e[..., 16:] > 0, 12.0, -12.0)
        heads.append(tf.constant(np.concatenate([dist, glide, ratio, obj, cls], -1), tf.float32))
    return heads


# ---------------------------------------------------------------- numpy reference (float64)


def _sig(x):
    return 1.0 / (1.0 + np.exp(-x))


def _bce_logits(z, t):
    return np.maximum(z, 0) - z * t + np.log1p(np.exp(-np.abs(z)))


def reference_level(head, enc, stride, size, plain=0.0):
    """Per-image terms of one level, straight from the reference formulas."""
    head = head.astype(np.float64)
    enc = enc.astype(np.float64)
    _, h, w, _ = head.shape
    py, px = np.meshgrid((np.arange(h) + 0.5) * stride, (np.arange(w) + 0.5) * stride, indexing="ij")
    dist = np.exp(head[..., 0:4]) * stride
    pb = np.stack([px - dist[..., 3], py - dist[..., 0], px + dist[..., 1], py + dist[..., 2]], -1)
    cx, cy, bw, bh = (enc[..., k] for k in range(4))
    gb = np.stack([cx - bw / 2, cy - bh / 2, cx + bw / 2, cy + bh / 2], -1)
    area = lambda b: (b[..., 2] - b[..., 0]) * (b[..., 3] - b[..., 1])  # noqa: E731
    iw = np.clip(np.minimum(pb[..., 2], gb[..., 2]) - np.maximum(pb[..., 0], gb[..., 0]), 0, None)
    ih = np.clip(np.minimum(pb[..., 3], gb[..., 3]) - np.maximum(pb[..., 1], gb[..., 1]), 0, None)
    inter = iw * ih
    union = area(pb) + area(gb) - inter
    ew = np.maximum(pb[..., 2], gb[..., 2]) - np.minimum(pb[..., 0], gb[..., 0])
    eh = np.maximum(pb[..., 3], gb[..., 3]) - np.minimum(pb[..., 1], gb[..., 1])
    giou = inter / union - (ew * eh - union) / (ew * eh)
    beta = 2 - bw * bh / size**2
    l_iou = beta * (1 - giou)
    s_hat = (np.clip(_sig(head[..., 4:8]), 0.01, 1) - 0.01) / 0.99
    l_s = ((s_hat - enc[..., 8:12]) ** 2).sum(-1)
    r_hat = np.clip(head[..., 8] + 3, 0, 6) / 6
    l_r = (r_hat - enc[..., 12]) ** 2
    q = np.exp(-(l_iou + l_s + l_r))
    d = np.abs(dist / stride - enc[..., 4:8] / stride)
    l_l = beta * np.where(d < 1, 0.5 * d**2, d - 0.5).sum(-1)

    pos = enc[..., 13]
    mix = enc[..., 14]
    omega = np.where(pos > 0, enc[..., 15], 1.0)
    heat = enc[..., 16:]
    g = heat.max(-1)
    gt = heat > 0
    z_o = head[..., 9]
    t_o = np.where(pos > 0, 0.995, 0.005)
    focal = _bce_logits(z_o, t_o) * (t_o - _sig(z_o)) ** 2
    z_c = head[..., 10:]
    t_c = np.where(gt, 0.99 + 0.01 / NC, 0.01 / NC)
    p_q = _sig(z_c) * q[..., None]
    cls_pos_ch = _bce_logits(np.log(p_q / (1 - p_q)), t_c)
    cls_neg_ch = _bce_logits(z_c, t_c)
    w_cls = pos * mix * omega
    prob_gt = (_sig(z_c) * gt).sum(-1)
    w_reg = pos * mix * omega * (prob_gt + g) / 2
    maps = {
        "obj_pos": pos * focal * mix * (g + q) / 2,
        "obj_neg": (1 - pos) * focal * mix,
        "cls_pos": ((cls_pos_ch + plain * cls_neg_ch) * gt).sum(-1) * w_cls,
        "cls_neg": (cls_neg_ch * ~gt).sum(-1) * w_cls,
        "iou": l_iou * w_reg,
        "s": l_s * w_reg,
        "r": l_r * w_reg,
        "l": l_l * w_reg,
    }
    n = np.maximum(pos.sum((1, 2)), 1)
    terms = {k: v.sum((1, 2)) / n for k, v in maps.items()}
    box = l_iou + l_s + l_r + 0.2 * l_l
    return terms, box, q


def reference_jol(heads, encoded, size=S, plain=0.0):
    totals = {k: 0.0 for k in TERMS}
    for head, enc, stride in zip(heads, encoded, STRIDES):
        terms, _, _ = reference_level(np.asarray(head), np.asarray(enc), stride, size, plain)
        for k in TERMS:
            totals[k] += terms[k].mean()
    weights = {"obj_pos": 2, "obj_neg": 2, "cls_pos": 1, "cls_neg": 1, "iou": 1, "s": 1, "r": 16, "l": 0.2}
    totals["total"] = sum(weights[k] * totals[k] for k in TERMS)
    return totals


# ---------------------------------------------------------------------------------- tests


def test_matches_numpy_reference_on_random_heads():
    encoded = encoded_batch()
    assert float(tf.reduce_sum(encoded[1][0, ..., 13])) > 0
    heads = random_heads(encoded)
    got = {k: float(v) for k, v in jol_loss(heads, encoded, STRIDES, S, plain_class_weight=0.0).items()}
    want = reference_jol(heads, encoded)
    for k in list(TERMS) + ["total"]:
        assert got[k] == pytest.approx(want[k], rel=2e-4, abs=1e-6), k


@pytest.mark.parametrize("plain", [1.0, 0.5])
def test_plain_class_weight_adds_plain_bce_on_gt_channels(plain):
    """GGHL 2021-11..2022-03: plain BCE-with-logits on the GT class channels at positives,
    added (weighted by mixup and omega) to cls_pos; every other term is unchanged."""
    encoded = encoded_batch()
    heads = random_heads(encoded, seed=3)
    got = {k: float(v) for k, v in jol_loss(heads, encoded, STRIDES, S, plain_class_weight=plain).items()}
    base = {k: float(v) for k, v in jol_loss(heads, encoded, STRIDES, S, plain_class_weight=0.0).items()}
    want = reference_jol(heads, encoded, plain=plain)
    for k in list(TERMS) + ["total"]:
        assert got[k] == pytest.approx(want[k], rel=2e-4, abs=1e-6), k
    assert got["cls_pos"] > base["cls_pos"] + 1e-3
    for k in ("obj_pos", "obj_neg", "cls_neg", "iou", "s", "r", "l"):
        assert got[k] == pytest.approx(base[k], rel=1e-6), k


def test_per_cell_box_and_quality_match_reference():
    encoded = encoded_batch()
    heads = random_heads(encoded, seed=3)
    for head, enc, stride in zip(heads, encoded, STRIDES):
        cells = per_cell_terms(head, enc, stride, S)
        _, box, q = reference_level(head.numpy(), enc.numpy(), stride, S)
        pos = enc.numpy()[..., 13] > 0
        np.testing.assert_allclose(cells["box"].numpy()[pos], box[pos], rtol=2e-4)
        np.testing.assert_allclose(cells["quality"].numpy()[pos], q[pos], rtol=2e-4)
        assert cells["pred_l"].shape == head.shape[:3] + (4,)
        assert cells["class_prob"].shape == head.shape[:3] + (NC,)


def test_quality_objectness_target_is_the_cells_own_quality_at_positives():
    encoded = encoded_batch()
    heads = random_heads(encoded, seed=5)
    for head, enc, stride in zip(heads, encoded, STRIDES):
        fixed = per_cell_terms(head, enc, stride, S)
        aware = per_cell_terms(head, enc, stride, S, objectness_target="quality")
        _, _, q = reference_level(head.numpy(), enc.numpy(), stride, S)
        pos = enc.numpy()[..., 13] > 0
        z_o = head.numpy()[..., 9].astype(np.float64)
        t_o = np.clip(q, 0.005, 0.995)
        want = _bce_logits(z_o, t_o) * (t_o - _sig(z_o)) ** 2
        np.testing.assert_allclose(aware["obj"].numpy()[pos], want[pos], rtol=2e-4, atol=1e-7)
        # negatives keep GGHL's target; every other map is unchanged
        np.testing.assert_allclose(aware["obj"].numpy()[~pos], fixed["obj"].numpy()[~pos], rtol=1e-6)
        for name in ("obj_neg", "cls_pos", "cls_neg", "iou", "s", "r", "l"):
            np.testing.assert_allclose(aware[name].numpy(), fixed[name].numpy(), rtol=1e-6, err_msg=name)
    assert pos.any()
    with pytest.raises(ValueError, match="objectness_target"):
        per_cell_terms(heads[0], encoded[0], STRIDES[0], S, objectness_target="iou")


def test_quality_objectness_target_gives_no_gradient_to_the_box():
    encoded = encoded_batch()
    heads = [tf.Variable(h) for h in random_heads(encoded, seed=6)]
    with tf.GradientTape() as tape:
        terms = jol_loss(heads, encoded, STRIDES, S, objectness_target="quality")
        objectness = terms["obj_pos"] + terms["obj_neg"]
    grads = tape.gradient(objectness, heads)
    for grad in grads:
        grad = grad.numpy()
        assert np.all(grad[..., :9] == 0.0)  # distances, gliding ratios, area ratio
        assert np.all(grad[..., 10:] == 0.0)  # classes
    assert any(np.abs(g.numpy()[..., 9]).max() > 0 for g in grads)


def test_giou_hand_cases():
    # pred x in [-1, 3], y in [-1, 1]; target x in [-1, 1], y in [-2, 2]:
    # inter 4, union 12, enclosing 16 -> GIoU = 1/3 - 4/16 = 1/12.
    pred = tf.constant([[1.0, 3.0, 1.0, 1.0], [1.0, 1.0, 1.0, 1.0]])
    target = tf.constant([[2.0, 1.0, 2.0, 1.0], [2.0, 2.0, 2.0, 2.0]])
    np.testing.assert_allclose(giou_from_distances(pred, target).numpy(), [1 / 12, 0.25], rtol=1e-6)


def test_perfect_predictions_have_zero_box_terms():
    encoded = encoded_batch()
    terms = jol_loss(perfect_heads(encoded), encoded, STRIDES, S)
    for k in ("iou", "s", "r", "l"):
        assert abs(float(terms[k])) < 1e-5, (k, float(terms[k]))
    assert float(terms["obj_pos"]) < 1e-6 and float(terms["obj_neg"]) < 1e-6
    random = jol_loss(random_heads(encoded), encoded, STRIDES, S)
    assert float(random["iou"]) > 0.1 and float(random["total"]) > 10 * float(terms["total"])


def test_per_image_normalisation():
    targets = targets_batch()
    encoded = encoded_batch(targets)
    heads = random_heads(encoded, seed=1)
    both = jol_loss(heads, encoded, STRIDES, S)["total"]
    singles = [
        jol_loss([h[i : i + 1] for h in heads], [e[i : i + 1] for e in encoded], STRIDES, S)["total"] for i in range(2)
    ]
    assert float(both) == pytest.approx(0.5 * float(singles[0] + singles[1]), rel=1e-5)


def _loss_and_grads(heads, encoded):
    variables = [tf.Variable(h) for h in heads]
    with tf.GradientTape() as tape:
        terms = jol_loss(variables, encoded, STRIDES, S)
    grads = tape.gradient(terms["total"], variables)
    return terms, grads


@pytest.mark.parametrize("case", ["empty", "extreme", "float16"])
def test_numerically_safe(case):
    targets = targets_batch()
    if case == "empty":
        targets["weights"] = np.zeros_like(targets["weights"])
    encoded = encoded_batch(targets)
    if case == "extreme":
        rng = np.random.default_rng(2)
        heads = [tf.constant(1e4 * rng.choice([-1.0, 1.0], e.shape[:3] + (10 + NC,)), tf.float32) for e in encoded]
    else:
        heads = random_heads(encoded, seed=4, scale=3.0)
    if case == "float16":
        heads = [tf.cast(h, tf.float16) for h in heads]
        encoded = [tf.cast(e, tf.float16) for e in encoded]
    terms, grads = _loss_and_grads(heads, encoded)
    for k, v in terms.items():
        assert v.dtype == tf.float32 and np.isfinite(float(v)), (case, k)
    for g in grads:
        assert np.all(np.isfinite(tf.cast(g, tf.float32).numpy())), case
    if case == "empty":
        for k in ("obj_pos", "cls_pos", "cls_neg", "iou", "s", "r", "l"):
            assert float(terms[k]) == 0.0
        assert float(terms["obj_neg"]) > 0  # background still trains objectness


def test_gradient_routes():
    encoded = encoded_batch()
    heads = [tf.Variable(h) for h in random_heads(encoded, seed=5)]
    with tf.GradientTape(persistent=True) as tape:
        terms = jol_loss(heads, encoded, STRIDES, S)
    # The class term multiplies the class probability by q: it trains the box channels too.
    g_cls = tape.gradient(terms["cls_pos"], heads[1])
    assert float(tf.reduce_sum(tf.abs(g_cls[..., 0:9]))) > 0
    # The objectness weight uses stop_gradient(q): no gradient into the box channels.
    g_obj = tape.gradient(terms["obj_pos"], heads[1])
    assert float(tf.reduce_sum(tf.abs(g_obj[..., 0:9]))) == 0
    # The regression weight uses the non-detached class probability.
    g_iou = tape.gradient(terms["iou"], heads[1])
    assert float(tf.reduce_sum(tf.abs(g_iou[..., 10:]))) > 0


def test_sgd_on_free_head_lowers_loss():
    encoded = encoded_batch()
    heads = [tf.Variable(h) for h in random_heads(encoded, seed=6, scale=0.5)]
    optimizer = tf.keras.optimizers.SGD(learning_rate=0.5)
    history = []
    for _ in range(15):
        with tf.GradientTape() as tape:
            total = jol_loss(heads, encoded, STRIDES, S)["total"]
        optimizer.apply_gradients(zip(tape.gradient(total, heads), heads))
        history.append(float(total))
    assert history[-1] < 0.5 * history[0], history


def test_mismatched_levels_raise():
    encoded = encoded_batch()
    heads = random_heads(encoded)
    with pytest.raises(ValueError, match="grid"):
        jol_loss(heads[::-1], encoded, STRIDES, S)
    with pytest.raises(ValueError, match="classes"):
        jol_loss([h[..., :-1] for h in heads], encoded, STRIDES, S)


def test_level_reference_size_moves_objects_to_finer_levels():
    """tau_0 = 6 * 8 / 0.7 * S / ref: at S = 256 a 40 px box is above 1.2 tau_0 = 26.3 px with
    ref = 800 (stride 16 only) and below tau_0 = 68.6 px with ref = 256 (stride 8 only)."""
    polys = np.zeros((1, 1, 8), np.float32)
    polys[0, 0] = [100, 116, 140, 116, 140, 132, 100, 132]  # 40 x 16 px, axis-aligned
    targets = {"polygons": polys, "classes": np.zeros((1, 1), np.int32), "weights": np.ones((1, 1), np.float32)}
    scaled = encode_targets(targets, 256, 1, STRIDES)
    native = encode_targets(targets, 256, 1, STRIDES, level_reference_size=256)
    count = lambda enc: [float(tf.reduce_sum(e[..., 13])) for e in enc]  # noqa: E731
    assert count(scaled)[0] == 0 and count(scaled)[1] > 0
    assert count(native)[0] > 0 and count(native)[1] == 0 and count(native)[2] == 0
