import math

import keras
import numpy as np
import pytest
import tensorflow as tf

from dked_tf.models.detector import OrientedDetector

NC = 3


@pytest.fixture(scope="module")
def student(tiny_detector):
    return tiny_detector("lodet_mobilenetv2_t", NC)


@pytest.fixture(scope="module")
def teacher(tiny_detector):
    return tiny_detector("gghl_darknet53_t", NC)


def _logit(p):
    return math.log(p / (1.0 - p))


def _empty_heads(size=64, batch=1):
    heads = []
    for stride in (8, 16, 32):
        h = np.zeros((batch, size // stride, size // stride, 10 + NC), np.float32)
        h[..., 9] = -20.0  # objectness ~ 0 everywhere
        h[..., 10:] = -20.0
        heads.append(h)
    return heads


def _glide_logit(s):
    # decode: (clip(sigmoid, 0.01, 1) - 0.01) / 0.99 = s
    return _logit(s * 0.99 + 0.01)


# Hand-made rotated rectangle inside the HBB [16, 64] x [8, 40] (w 48, h 32):
# gliding a = 6 px on the top/bottom edges, b = 14 px on the right/left edges
# -> v1 (22, 8), v2 (64, 22), v3 (58, 40), v4 (16, 26); sides (42, 14) and (-6, 18) are
# perpendicular; long side sqrt(1960), short side sqrt(360), angle atan2(14, 42).
EXPECTED_POLY = np.array([22, 8, 64, 22, 58, 40, 16, 26], np.float32)
EXPECTED_RBOX = np.array([40.0, 24.0, math.sqrt(1960.0), math.sqrt(360.0), math.atan2(14, 42)])


def _set_rectangle_cell(heads, row=1, col=2, cls=1, obj=0.9, prob=0.8):
    """Level s16, cell (row 1, col 2): centre (40, 24)."""
    cell = heads[1][0, row, col]
    cell[0:4] = [math.log(16 / 16), math.log(24 / 16), math.log(16 / 16), math.log(24 / 16)]
    cell[4:8] = [_glide_logit(6 / 48), _glide_logit(14 / 32), _glide_logit(6 / 48), _glide_logit(14 / 32)]
    area_ratio = math.sqrt(1960.0) * math.sqrt(360.0) / (48 * 32)
    cell[8] = area_ratio * 6.0 - 3.0  # relu6(x + 3) / 6 = area_ratio
    cell[9] = _logit(obj)
    cell[10 + cls] = _logit(prob)


def test_call_returns_backbone_neck_head_at_strides(teacher, student, tiny_images):
    x = tiny_images(2, seed=0)
    for model in (teacher, student):
        out = model(x, training=False)
        assert set(out) == {"backbone", "neck", "head"}
        assert model.strides == (8, 16, 32) and model.num_classes == NC
        for key in ("backbone", "neck", "head"):
            assert len(out[key]) == 3
            for tensor, stride in zip(out[key], model.strides):
                assert tensor.shape[:3] == (2, 64 // stride, 64 // stride)
        for h in out["head"]:
            assert h.shape[-1] == 10 + NC and h.dtype == tf.float32


def test_decode_cells_hand_made_rectangle(student):
    heads = _empty_heads()
    _set_rectangle_cell(heads)
    cells = student.decode_cells([tf.constant(h) for h in heads])
    index = 64 + 1 * 4 + 2  # 8x8 cells of s8 first, then row-major on s16
    assert cells["polygons"].shape == (1, 64 + 16 + 4, 8)
    np.testing.assert_allclose(cells["polygons"][0, index].numpy(), EXPECTED_POLY, atol=1e-3)
    assert cells["scores"][0, index].numpy() == pytest.approx(math.sqrt(0.9 * 0.8), rel=1e-5)
    assert cells["classes"][0, index].numpy() == 1
    np.testing.assert_allclose(cells["class_probs"][0, index].numpy(), [0, 0.8, 0], atol=1e-6)
    assert cells["objectness"][0, index].numpy() == pytest.approx(0.9, rel=1e-5)


def test_decode_zeroes_gliding_when_area_ratio_is_high(student):
    heads = _empty_heads()
    _set_rectangle_cell(heads)
    heads[1][0, 1, 2, 8] = 3.0  # r = 1 > 0.9: horizontal box
    cells = student.decode_cells([tf.constant(h) for h in heads])
    np.testing.assert_allclose(cells["polygons"][0, 70].numpy(), [16, 8, 64, 8, 64, 40, 16, 40], atol=1e-3)


def test_decode_after_nms_gives_the_known_rotated_box(student):
    heads = _empty_heads(batch=2)
    _set_rectangle_cell(heads)
    # image 1: a confident but degenerate cell (distances exp(-20) * 8 px) is not a detection
    heads[0][1, 2, 2, 0:4] = -20.0
    heads[0][1, 2, 2, 9] = 5.0
    heads[0][1, 2, 2, 10] = 5.0
    out = student.decode([tf.constant(h) for h in heads], score_threshold=0.05, iou_threshold=0.3, max_detections=10)
    assert out["polygons"].shape == (2, 10, 8) and out["rboxes"].shape == (2, 10, 5)
    assert out["classes"].dtype == tf.int32 and out["num_detections"].dtype == tf.int32
    np.testing.assert_array_equal(out["num_detections"].numpy(), [1, 0])
    np.testing.assert_allclose(out["polygons"][0, 0].numpy(), EXPECTED_POLY, atol=1e-3)
    np.testing.assert_allclose(out["rboxes"][0, 0].numpy(), EXPECTED_RBOX, atol=1e-3)
    assert out["scores"][0, 0].numpy() == pytest.approx(math.sqrt(0.72), rel=1e-5)
    assert out["classes"][0, 0].numpy() == 1
    np.testing.assert_array_equal(out["scores"][1].numpy(), 0.0)


@pytest.mark.parametrize("second_class, expected", [(0, 1), (2, 2)])
def test_decode_nms_is_class_aware(student, second_class, expected):
    heads = _empty_heads()
    # two neighbouring s8 cells (centres (28, 28), (36, 28)) predicting the same HBB
    # [12, 52] x [12, 44] as a horizontal box
    for col, left, right, cls, obj in ((3, 16, 24, 0, 0.9), (4, 24, 16, second_class, 0.8)):
        cell = heads[0][0, 3, col]
        cell[0:4] = [math.log(16 / 8), math.log(right / 8), math.log(16 / 8), math.log(left / 8)]
        cell[8] = 3.0
        cell[9] = _logit(obj)
        cell[10 + cls] = _logit(0.9)
    out = student.decode([tf.constant(h) for h in heads], iou_threshold=0.3, max_detections=5)
    assert int(out["num_detections"][0]) == expected
    np.testing.assert_allclose(out["polygons"][0, 0].numpy(), [12, 12, 52, 12, 52, 44, 12, 44], atol=1e-3)
    assert out["scores"][0, 0].numpy() == pytest.approx(math.sqrt(0.81), rel=1e-5)


def test_predict_step_returns_padded_detections(student, tiny_images):
    x = tiny_images(2, seed=1)
    out = student.predict_step(tf.constant(x))
    assert set(out) == {"polygons", "rboxes", "scores", "classes", "num_detections"}
    k = student.max_detections
    assert out["polygons"].shape == (2, k, 8) and out["num_detections"].shape == (2,)


def _targets(batch=2):
    polygons = np.zeros((batch, 3, 8), np.float32)
    polygons[:, 0] = [10, 12, 42, 12, 42, 30, 10, 30]
    polygons[:, 1] = [30, 34, 54, 44, 50, 54, 26, 44]
    classes = np.zeros((batch, 3), np.int32)
    classes[:, 1] = 2
    weights = np.zeros((batch, 3), np.float32)
    weights[:, :2] = 1.0
    return {"polygons": polygons, "classes": classes, "weights": weights}


def test_compute_loss_is_finite_tracks_terms_and_has_gradients(student, tiny_images):
    x = tiny_images(2, seed=2)
    y = _targets()
    with tf.GradientTape() as tape:
        y_pred = student(x, training=True)
        loss = student.compute_loss(x, y, y_pred)
    assert loss.shape == () and np.isfinite(loss.numpy()) and loss.numpy() > 0
    grads = tape.gradient(loss, student.trainable_variables)
    assert all(g is not None for g in grads[-4:])
    assert all(np.all(np.isfinite(g.numpy())) for g in grads if g is not None)
    names = {m.name for m in student.metrics}
    assert {"obj_pos", "cls_pos", "iou", "s", "r", "l"} <= names
    assert student.loss_trackers["iou"].result().numpy() > 0


def test_fit_one_step_logs_the_loss_terms(tiny_detector, tiny_images, tiny_dataset):
    model = tiny_detector("gghl_darknet53_t", NC)
    model.compile(optimizer=keras.optimizers.SGD(1e-3), run_eagerly=True)
    ds = tiny_dataset((tiny_images(2, seed=3), _targets()))
    history = model.fit(ds, epochs=1, verbose=0)
    for name in ("loss", "obj_pos", "obj_neg", "cls_pos", "iou", "l"):
        assert name in history.history and np.isfinite(history.history[name][0])


def test_config_round_trip_and_keras_file(student, tiny_images, tmp_path):
    config = student.get_config()
    clone = OrientedDetector.from_config(config)
    assert clone.get_config() == config
    clone.set_weights(student.get_weights())
    x = tiny_images(1, seed=4)
    for a, b in zip(clone(x, training=False)["head"], student(x, training=False)["head"]):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-5, atol=1e-6)
    path = tmp_path / "student.keras"
    student.save(path)
    loaded = keras.saving.load_model(path)
    assert isinstance(loaded, OrientedDetector) and loaded.num_classes == NC
    for a, b in zip(loaded(x, training=False)["head"], student(x, training=False)["head"]):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-5, atol=1e-6)


def test_summary_names_the_parts(student):
    lines = []
    student.summary(print_fn=lines.append)
    text = "\n".join(lines)
    assert "mobilenetv2" in text and "csa_drf_fpn" in text and "total params" in text


def test_mixed_precision_heads_are_float32_and_loss_is_finite(tiny_detector, tiny_images):
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy("mixed_float16")
    try:
        model = tiny_detector("gghl_darknet53_t", NC)
        x = tiny_images(2, seed=5)
        out = model(x, training=True)
        assert keras.backend.standardize_dtype(out["neck"][0].dtype) == "float16"
        assert all(h.dtype == tf.float32 for h in out["head"])
        loss = model.compute_loss(x, _targets(), out)
        assert np.isfinite(loss.numpy())
    finally:
        keras.config.set_dtype_policy(previous)


@pytest.mark.parametrize("preset", ["lodet_mobilenetv2_t", "gghl_darknet53_t"])
def test_min_stride_4_gives_levels_4_8_16_and_a_trainable_loss(tiny_detector, tiny_images, preset):
    model = tiny_detector(preset, NC, min_stride=4)
    assert model.strides == (4, 8, 16) and [h.name for h in model.heads] == ["head_p2", "head_p3", "head_p4"]
    x = tiny_images(2, seed=5)
    with tf.GradientTape() as tape:
        out = model(x, training=True)
        loss = model.compute_loss(x, _targets(), out)
    for key in ("backbone", "neck", "head"):
        assert [tuple(t.shape[1:3]) for t in out[key]] == [(16, 16), (8, 8), (4, 4)]
    encoded = model.encode_targets(_targets(), 64)
    assert [tuple(t.shape[1:3]) for t in encoded] == [(16, 16), (8, 8), (4, 4)]
    # both hand-made boxes (32 x 18 px and a 26 x 11 px rotated one) get positive cells
    assert sum(float(tf.reduce_sum(t[..., 13])) for t in encoded) >= 2 * 2
    grads = tape.gradient(loss, model.trainable_variables)
    assert np.isfinite(loss.numpy()) and all(g is not None for g in grads[-4:])
    cells = model.decode_cells(out["head"])
    assert cells["polygons"].shape == (2, 16 * 16 + 8 * 8 + 4 * 4, 8)
    clone = OrientedDetector.from_config(model.get_config())
    assert clone.strides == (4, 8, 16) and clone.get_config() == model.get_config()


def test_min_stride_must_be_4_or_8(tiny_detector):
    with pytest.raises(ValueError, match="min_stride"):
        tiny_detector("lodet_mobilenetv2_t", NC, min_stride=2)
