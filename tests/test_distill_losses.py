"""DKED distillation losses: correlation, direction-adaptive response, prediction."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from dked_tf.losses.assign import encode_targets
from dked_tf.losses.distill import (
    DirectionalResponseLoss,
    FeatureCorrelationLoss,
    PredictionDistillationLoss,
    default_distillation_losses,
    distillation_losses,
)
from dked_tf.losses.jol import per_cell_terms

STRIDES = (8, 16, 32)


def _np_cosine_matrix(features):
    """numpy reference: [B, H, W, C] -> [B, HW, HW] cosine similarities."""
    b, h, w, c = features.shape
    flat = features.reshape(b, h * w, c).astype(np.float64)
    norm = np.sqrt((flat**2).sum(-1, keepdims=True))
    flat = flat / np.maximum(norm, 1e-6)
    return np.einsum("bic,bjc->bij", flat, flat)


def _outputs(backbone=None, neck=None, head=None):
    return {"backbone": backbone or [], "neck": neck or [], "head": head or []}


# ------------------------------------------------------------------ correlation
def test_correlation_matches_numpy_reference(rng):
    teacher = rng.normal(size=(2, 4, 4, 12)).astype("float32")
    student = rng.normal(size=(2, 4, 4, 5)).astype("float32")
    loss = FeatureCorrelationLoss(weight=3.0, max_grid=16)
    got = loss.compute(_outputs([teacher]), _outputs([student]), None, STRIDES, 64)["corr"]
    expected = 3.0 * np.mean((_np_cosine_matrix(teacher) - _np_cosine_matrix(student)) ** 2)
    assert float(got) == pytest.approx(expected, rel=1e-4)


def test_correlation_is_channel_agnostic(rng):
    # the student holds the teacher's features in another basis and width: same geometry
    teacher = rng.normal(size=(2, 4, 4, 6)).astype("float32")
    basis, _ = np.linalg.qr(rng.normal(size=(9, 9)))
    student = (teacher @ basis[:6, :]).astype("float32")  # [.., 9], orthonormal rows
    loss = FeatureCorrelationLoss(weight=1.0)
    got = loss.compute(_outputs([teacher]), _outputs([student]), None, STRIDES, 64)["corr"]
    assert float(got) < 1e-10
    shuffled = student[:, ::-1]  # a spatially different map does not match
    got = loss.compute(_outputs([teacher]), _outputs([shuffled]), None, STRIDES, 64)["corr"]
    assert float(got) > 1e-3


def test_correlation_resizes_to_common_bounded_grid(rng):
    teacher = rng.uniform(size=(1, 8, 8, 3)).astype("float32")
    student = rng.uniform(size=(1, 16, 16, 4)).astype("float32")
    loss = FeatureCorrelationLoss(max_grid=4)
    # area resize to 4x4 == mean over 2x2 (teacher) and 4x4 (student) blocks
    t_small = teacher.reshape(1, 4, 2, 4, 2, 3).mean(axis=(2, 4))
    s_small = student.reshape(1, 4, 4, 4, 4, 4).mean(axis=(2, 4))
    expected = np.mean((_np_cosine_matrix(t_small) - _np_cosine_matrix(s_small)) ** 2)
    got = loss.compute(_outputs([teacher]), _outputs([student]), None, STRIDES, 64)["corr"]
    assert float(got) == pytest.approx(5.0 * expected, rel=1e-4)
    # memory bound: a 64x64 map gives a max_grid^2 x max_grid^2 matrix
    assert FeatureCorrelationLoss.correlation(tf.zeros((1, 64, 64, 2)), 4).shape == (1, 16, 16)


def test_correlation_gradient_reaches_student_only(rng):
    teacher = tf.constant(rng.normal(size=(1, 2, 2, 4)).astype("float32"))
    student = tf.Variable(rng.normal(size=(1, 2, 2, 3)).astype("float32"))
    loss = FeatureCorrelationLoss()
    with tf.GradientTape(persistent=True) as tape:
        tape.watch(teacher)
        value = loss.compute(_outputs([teacher]), _outputs([student]), None, STRIDES, 64)["corr"]
    assert tape.gradient(value, teacher) is None
    assert float(tf.reduce_sum(tf.abs(tape.gradient(value, student)))) > 0


# ------------------------------------------------------------------ response
def _encoded_one_object(image_size=64, num_classes=2):
    polygons = np.zeros((1, 2, 8), np.float32)
    polygons[0, 0] = [12, 20, 44, 12, 48, 28, 16, 36]  # rotated rectangle-ish
    targets = {
        "polygons": tf.constant(polygons),
        "classes": tf.constant([[1, 0]], tf.int32),
        "weights": tf.constant([[1.0, 0.0]]),
    }
    return encode_targets(targets, image_size, num_classes, strides=STRIDES)


def _shapes(channels, image_size=64):
    return {
        "backbone": [(None, image_size // s, image_size // s, c) for s, c in zip(STRIDES, channels)],
        "neck": [(None, image_size // s, image_size // s, c) for s, c in zip(STRIDES, channels)],
    }


def test_response_loss_matches_masked_formula(rng):
    encoded = _encoded_one_object()
    teacher_ch, student_ch = (8, 8, 8), (4, 4, 4)
    loss = DirectionalResponseLoss(weight=2.0, levels=(0, 1, 2))
    loss.build_modules(_shapes(teacher_ch), _shapes(student_ch))
    teacher = [rng.normal(size=(1, 64 // s, 64 // s, 8)).astype("float32") for s in STRIDES]
    student = [rng.normal(size=(1, 64 // s, 64 // s, 4)).astype("float32") for s in STRIDES]
    got = float(loss.compute(_outputs(neck=teacher), _outputs(neck=student), encoded, STRIDES, 64)["resp"])
    expected = 0.0
    for level, (ddc, project) in enumerate(loss.extractors):
        mapped = np.asarray(project(ddc(student[level])), np.float64)
        t = teacher[level].astype(np.float64)
        t = (t - t.mean(axis=(1, 2), keepdims=True)) / np.sqrt(t.var(axis=(1, 2), keepdims=True) + 1e-5)
        g = np.asarray(encoded[level])[..., 16:].max(-1)
        if g.sum() > 0:
            expected += (g * ((t - mapped) ** 2).mean(-1)).sum() / g.sum()
    assert expected > 0
    assert got == pytest.approx(2.0 * expected, rel=1e-4)


def test_response_mask_dilation_takes_the_neighbourhood_maximum(rng):
    encoded = _encoded_one_object()
    level = next(i for i, e in enumerate(encoded) if np.asarray(e)[..., 16:].max() > 0)
    size = 64 // STRIDES[level]
    loss = DirectionalResponseLoss(levels=(level,), mask_dilation=1)
    loss.build_modules(_shapes((8, 8, 8)), _shapes((4, 4, 4)))
    teacher = [rng.normal(size=(1, 64 // s, 64 // s, 8)).astype("float32") for s in STRIDES]
    student = [rng.normal(size=(1, 64 // s, 64 // s, 4)).astype("float32") for s in STRIDES]
    got = float(loss.compute(_outputs(neck=teacher), _outputs(neck=student), encoded, STRIDES, 64)["resp"])
    ddc, project = loss.extractors[0]
    mapped = np.asarray(project(ddc(student[level])), np.float64)[0]
    t = teacher[level][0].astype(np.float64)
    t = (t - t.mean(axis=(0, 1))) / np.sqrt(t.var(axis=(0, 1)) + 1e-5)
    g = np.asarray(encoded[level])[0, ..., 16:].max(-1)
    dilated = np.zeros_like(g)
    for y in range(size):
        for x in range(size):
            dilated[y, x] = g[max(0, y - 1) : y + 2, max(0, x - 1) : x + 2].max()
    assert (dilated > 0).sum() > (g > 0).sum() > 0
    expected = (dilated * ((t - mapped) ** 2).mean(-1)).sum() / dilated.sum()
    assert got == pytest.approx(expected, rel=1e-4)
    with pytest.raises(ValueError, match="mask_dilation"):
        DirectionalResponseLoss(mask_dilation=-1)


def test_response_loss_ignores_features_outside_the_gaussian(rng):
    polygons = np.zeros((1, 1, 8), np.float32)
    polygons[0, 0] = [40, 40, 50, 43, 49, 46, 39, 43]  # small object: stride-8 level at 128 px
    encoded = encode_targets({"polygons": polygons, "classes": np.zeros((1, 1), np.int32)}, 128, 2, strides=STRIDES)
    g0 = np.asarray(encoded[0])[0, ..., 16:].max(-1)
    assert g0.sum() > 0
    loss = DirectionalResponseLoss(levels=(0,))
    loss.build_modules(_shapes((8, 8, 8), 128), _shapes((4, 4, 4), 128))
    teacher = [rng.normal(size=(1, 16, 16, 8)).astype("float32")]
    student = [rng.normal(size=(1, 16, 16, 4)).astype("float32")]
    base = float(loss.compute(_outputs(neck=teacher), _outputs(neck=student), encoded, STRIDES, 128)["resp"])
    assert base > 0
    # the DDC attention uses global pooling, so change features only where G == 0 and keep
    # the per-channel mean: swap two background cells far (>= 2 cells) from the object
    near = np.argwhere(g0 > 0)
    far = [p for p in np.argwhere(g0 == 0) if np.abs(near - p).max(1).min() >= 2]
    (y1, x1), (y2, x2) = far[0], far[-1]
    changed = [student[0].copy()]
    changed[0][0, y1, x1], changed[0][0, y2, x2] = student[0][0, y2, x2], student[0][0, y1, x1]
    assert not np.allclose(changed[0], student[0])
    again = float(loss.compute(_outputs(neck=teacher), _outputs(neck=changed), encoded, STRIDES, 128)["resp"])
    assert again == pytest.approx(base, rel=1e-5)
    # inside the Gaussian it matters
    inside = [student[0].copy()]
    inside[0][0, near[0][0], near[0][1]] += 3.0
    moved = float(loss.compute(_outputs(neck=teacher), _outputs(neck=inside), encoded, STRIDES, 128)["resp"])
    assert abs(moved - base) > 1e-4
    # no objects: zero
    empty = [tf.zeros_like(e) for e in encoded]
    assert float(loss.compute(_outputs(neck=teacher), _outputs(neck=student), empty, STRIDES, 128)["resp"]) == 0.0


def test_response_teacher_side_is_fixed_and_student_module_learns(rng):
    encoded = _encoded_one_object()
    level = [int(np.asarray(e)[..., 16:].max() > 0) for e in encoded].index(1)
    loss = DirectionalResponseLoss(levels=(level,))
    loss.build_modules(_shapes((6, 6, 6)), _shapes((4, 4, 4)))
    grid = 64 // STRIDES[level]
    teacher = tf.constant(rng.normal(size=(1, grid, grid, 6)).astype("float32"))
    student = tf.constant(rng.normal(size=(1, grid, grid, 4)).astype("float32"))
    teachers, students = [teacher] * 3, [student] * 3
    variables = loss.trainable_variables
    names = {v.path.split("/")[-2] if "/" in v.path else v.name for v in variables}
    assert variables and all("resp_" in v.path for v in variables), names
    optimizer = keras.optimizers.Adam(0.05)
    values = []
    for _ in range(30):
        with tf.GradientTape(persistent=True) as tape:
            tape.watch(teacher)
            value = loss.compute(_outputs(neck=teachers), _outputs(neck=students), encoded, STRIDES, 64)["resp"]
        assert tape.gradient(value, teacher) is None  # teacher target is constant
        optimizer.apply(tape.gradient(value, variables), variables)
        values.append(float(value))
    assert values[0] > 0 and values[-1] < 0.5 * values[0]
    # the target is standardised teacher features: it cannot shrink towards zero
    target = DirectionalResponseLoss.standardise(teacher)
    np.testing.assert_allclose(np.asarray(tf.math.reduce_std(target, axis=(1, 2))), 1.0, atol=1e-2)


# ------------------------------------------------------------------ prediction
def _heads(rng, num_classes=2, scale=1.0):
    return [(scale * rng.normal(size=(1, 64 // s, 64 // s, 10 + num_classes))).astype("float32") for s in STRIDES]


def _np_soft_bce(teacher_logits, student_logits):
    t = 1.0 / (1.0 + np.exp(-teacher_logits.astype(np.float64)))
    s = 1.0 / (1.0 + np.exp(-student_logits.astype(np.float64)))
    cross = -(t * np.log(s) + (1 - t) * np.log(1 - s))
    entropy = -(t * np.log(t) + (1 - t) * np.log(1 - t))
    return cross - entropy


def test_prediction_loss_matches_reference(rng):
    encoded = _encoded_one_object()
    student, teacher = _heads(rng), _heads(rng)
    loss = PredictionDistillationLoss(weight=1.0, lam=0.3, margin=0.1)
    got = loss.compute(_outputs(head=teacher), _outputs(head=student), encoded, STRIDES, 64)
    loc = cls = positives = 0.0
    for level, stride in enumerate(STRIDES):
        enc = np.asarray(encoded[level])[0]
        w = enc[..., 13] * enc[..., 14] * enc[..., 15]
        positives += enc[..., 13].sum()
        box_s = np.asarray(per_cell_terms(student[level], encoded[level], stride, 64)["box"])[0]
        box_t = np.asarray(per_cell_terms(teacher[level], encoded[level], stride, 64)["box"])[0]
        loc += (w * box_s * (box_s + 0.1 > box_t)).sum()
        cell = _np_soft_bce(teacher[level][0, ..., 10:], student[level][0, ..., 10:]).sum(-1)
        cell += _np_soft_bce(teacher[level][0, ..., 9], student[level][0, ..., 9])
        cls += (w * cell).sum()
    assert positives > 0
    assert float(got["pred_loc"]) == pytest.approx(0.3 * loc / positives, rel=1e-4, abs=1e-7)
    assert float(got["pred_cls"]) == pytest.approx(0.7 * cls / positives, rel=1e-4)
    assert loss.student_cls_scale == 0.3


def test_prediction_loss_is_teacher_bounded(rng):
    encoded = _encoded_one_object()
    student = _heads(rng)
    loss = PredictionDistillationLoss(lam=0.5, margin=0.05)
    # teacher == student: soft-label term is exactly 0, the bounded box term is active
    same = loss.compute(_outputs(head=student), _outputs(head=student), encoded, STRIDES, 64)
    assert abs(float(same["pred_cls"])) < 1e-5
    assert float(same["pred_loc"]) > 0
    # a much worse teacher (huge box loss everywhere): the student is never pushed
    bad = [h.copy() for h in student]
    for h in bad:
        h[..., 0:4] = 12.0  # exp(12) * stride pixel distances: terrible boxes
    bounded = loss.compute(_outputs(head=bad), _outputs(head=student), encoded, STRIDES, 64)
    assert float(bounded["pred_loc"]) == 0.0


def _np_quad_gaussian(distances, gliding, stride):
    """numpy reference: the gliding-vertex quadrilateral (cell units) -> mean, covariance, by
    splitting it into two triangles from vertex 1 (a triangle's second moment about the origin
    is A/12 (sum_i v_i v_i^T + 9 g g^T), g its centroid)."""
    t, r, b, l = distances / stride
    s1, s2, s3, s4 = gliding
    w, h = r + l, t + b
    v = np.array([[-l + s1 * w, -t], [r, -t + s2 * h], [r - s3 * w, b], [-l, b - s4 * h]], np.float64)
    area, first, second = 0.0, np.zeros(2), np.zeros((2, 2))
    for i in (1, 2):
        tri = np.stack([v[0], v[i], v[i + 1]])
        a = 0.5 * abs(np.cross(tri[1] - tri[0], tri[2] - tri[0]))
        g = tri.mean(0)
        # second moment of a triangle about the origin: A/12 (sum_i v_i v_i^T + 9 g g^T)
        second += a / 12.0 * (tri.T @ tri + 9.0 * np.outer(g, g))
        first += a * g
        area += a
    mean = first / area
    return mean, second / area - np.outer(mean, mean)


def _np_hellinger(m1, c1, m2, c2, eps=1e-7):
    c1, c2 = c1 + eps * np.eye(2), c2 + eps * np.eye(2)
    c = 0.5 * (c1 + c2)
    d = m1 - m2
    bd = 0.125 * d @ np.linalg.inv(c) @ d + 0.5 * np.log(
        np.linalg.det(c) / np.sqrt(np.linalg.det(c1) * np.linalg.det(c2))
    )
    return np.sqrt(1.0 - np.exp(-max(bd, eps)) + eps)


def _np_decoded(raw, stride):
    """numpy reference of the head decode: distances (pixels) and gliding ratios of one cell."""
    gliding = np.clip(1.0 / (1.0 + np.exp(-raw[4:8])), 0.01, 1.0)
    return np.exp(np.clip(raw[0:4], -16, 16)) * stride, (gliding - 0.01) / 0.99


def test_prediction_box_imitation_matches_reference(rng):
    encoded = _encoded_one_object()
    student, teacher = _heads(rng), _heads(rng)
    plain = PredictionDistillationLoss(lam=0.5, margin=0.05)
    loss = PredictionDistillationLoss(lam=0.5, margin=0.05, box_imitation=2.0)
    base = plain.compute(_outputs(head=teacher), _outputs(head=student), encoded, STRIDES, 64)
    got = loss.compute(_outputs(head=teacher), _outputs(head=student), encoded, STRIDES, 64)
    imitation = positives = 0.0
    for level, stride in enumerate(STRIDES):
        enc = np.asarray(encoded[level])[0]
        weight = enc[..., 13] * enc[..., 14] * enc[..., 15]
        positives += enc[..., 13].sum()
        for y, x in zip(*np.nonzero(enc[..., 13])):
            gs = _np_quad_gaussian(*_np_decoded(student[level][0, y, x], stride), stride)
            gt = _np_quad_gaussian(*_np_decoded(teacher[level][0, y, x], stride), stride)
            target = _np_quad_gaussian(enc[y, x, 4:8], enc[y, x, 8:12], stride)
            trust = 1.0 - _np_hellinger(*gt, *target)
            imitation += weight[y, x] * trust * _np_hellinger(*gs, *gt)
    assert positives > 0 and imitation > 0
    assert float(got["pred_cls"]) == pytest.approx(float(base["pred_cls"]), rel=1e-6)
    expected = float(base["pred_loc"]) + 2.0 * imitation / positives
    assert float(got["pred_loc"]) == pytest.approx(expected, rel=2e-3)


def test_prediction_dense_objectness_matches_reference(rng):
    encoded = _encoded_one_object()
    student, teacher = _heads(rng), _heads(rng)
    plain = PredictionDistillationLoss(lam=0.4, margin=0.05)
    loss = PredictionDistillationLoss(lam=0.4, margin=0.05, dense_objectness=3.0)
    base = plain.compute(_outputs(head=teacher), _outputs(head=student), encoded, STRIDES, 64)
    got = loss.compute(_outputs(head=teacher), _outputs(head=student), encoded, STRIDES, 64)
    background = positives = 0.0
    for level in range(len(STRIDES)):
        enc = np.asarray(encoded[level])[0]
        positives += enc[..., 13].sum()
        negative = (1.0 - enc[..., 13]) * enc[..., 14]
        background += (negative * _np_soft_bce(teacher[level][0, ..., 9], student[level][0, ..., 9])).sum()
    assert positives > 0 and background > 0
    assert float(got["pred_loc"]) == pytest.approx(float(base["pred_loc"]), rel=1e-6)
    assert float(got["pred_cls"]) == pytest.approx(float(base["pred_cls"]) + 3.0 * background / positives, rel=1e-4)
    # the teacher's own objectness map costs nothing: the KL is 0 where the student matches it
    matched = [t.copy() for t in teacher]
    same = loss.compute(_outputs(head=teacher), _outputs(head=matched), encoded, STRIDES, 64)
    assert abs(float(same["pred_cls"])) < 1e-5
    with pytest.raises(ValueError, match="dense_objectness"):
        PredictionDistillationLoss(dense_objectness=-1.0)


def test_prediction_dense_box_matches_reference(rng):
    encoded = _encoded_one_object()
    student, teacher = _heads(rng), _heads(rng, scale=0.5)
    plain = PredictionDistillationLoss(lam=0.5, margin=0.05)
    loss = PredictionDistillationLoss(lam=0.5, margin=0.05, dense_box=1.5)
    base = plain.compute(_outputs(head=teacher), _outputs(head=student), encoded, STRIDES, 64)
    got = loss.compute(_outputs(head=teacher), _outputs(head=student), encoded, STRIDES, 64)
    dense = positives = 0.0
    for level, stride in enumerate(STRIDES):
        enc = np.asarray(encoded[level])[0]
        positives += enc[..., 13].sum()
        confidence = (1.0 - enc[..., 13]) * enc[..., 14] / (1.0 + np.exp(-teacher[level][0, ..., 9].astype(np.float64)))
        for y, x in zip(*np.nonzero(confidence)):
            gs = _np_quad_gaussian(*_np_decoded(student[level][0, y, x], stride), stride)
            gt = _np_quad_gaussian(*_np_decoded(teacher[level][0, y, x], stride), stride)
            dense += confidence[y, x] * _np_hellinger(*gs, *gt)
    assert positives > 0 and dense > 0
    assert float(got["pred_cls"]) == pytest.approx(float(base["pred_cls"]), rel=1e-6)
    assert float(got["pred_loc"]) == pytest.approx(float(base["pred_loc"]) + 1.5 * dense / positives, rel=2e-3)
    # a student with the teacher's boxes everywhere pays (up to the distance's eps floor) nothing
    same = loss.compute(_outputs(head=teacher), _outputs(head=[t.copy() for t in teacher]), encoded, STRIDES, 64)
    alone = plain.compute(_outputs(head=teacher), _outputs(head=[t.copy() for t in teacher]), encoded, STRIDES, 64)
    extra_same = float(same["pred_loc"]) - float(alone["pred_loc"])
    assert 0.0 <= extra_same < 0.05 * (float(got["pred_loc"]) - float(base["pred_loc"]))
    with pytest.raises(ValueError, match="dense_box"):
        PredictionDistillationLoss(dense_box=-1.0)


def test_enabled_is_the_only_switch_and_weights_are_positive():
    classes = (FeatureCorrelationLoss, DirectionalResponseLoss, PredictionDistillationLoss)
    for cls in classes:
        assert cls().enabled and not cls(enabled=False).enabled
        with pytest.raises(ValueError, match="enabled=False"):
            cls(weight=0.0)
        loss = cls()
        with pytest.raises(ValueError, match="weight must be > 0"):
            loss.weight = -1.0
    # the JOL class factor λ of the prediction loss, applied by the Distiller while it is on
    assert PredictionDistillationLoss(lam=0.3, enabled=False).student_cls_scale == 0.3
    assert FeatureCorrelationLoss().student_cls_scale == 1.0
    assert DirectionalResponseLoss().student_cls_scale == 1.0
    with pytest.raises(ValueError, match="distill.py"):
        PredictionDistillationLoss(lam=1.5)


def test_distillation_losses_scale_the_default_weights_and_switch_off_at_zero():
    corr, resp, pred = distillation_losses(
        (2.0, 0.0, 0.5), response={"num_directions": 8}, prediction={"lam": 0.3, "weight": 4.0}
    )
    assert (corr.weight, corr.enabled) == (10.0, True)
    assert (resp.weight, resp.enabled, resp.num_directions) == (1.0, False, 8)
    assert (pred.weight, pred.enabled, pred.lam) == (2.0, True, 0.3)
    defaults = default_distillation_losses()
    assert [(l.weight, l.enabled) for l in defaults] == [(5.0, True), (1.0, True), (1.0, True)]


def test_config_round_trip():
    for loss in default_distillation_losses():
        config = keras.saving.serialize_keras_object(loss)
        clone = keras.saving.deserialize_keras_object(config)
        assert type(clone) is type(loss)
        assert clone.get_config() == loss.get_config()
    custom = PredictionDistillationLoss(weight=2.0, lam=0.25, margin=0.2, objectness=False, dense_objectness=0.5)
    clone = PredictionDistillationLoss.from_config(custom.get_config())
    assert (clone.weight, clone.lam, clone.margin, clone.objectness) == (2.0, 0.25, 0.2, False)
    assert clone.dense_objectness == 0.5
