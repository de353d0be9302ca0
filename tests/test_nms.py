"""Rotated NMS of dked_tf.ops.nms against a plain greedy NMS written here (shapely IoU)."""

import math

import numpy as np
import pytest
import shapely

from dked_tf.ops import obb
from dked_tf.ops.nms import batched_rotated_nms, fast_rotated_nms_tf, rotated_nms, rotated_nms_tf


def shapely_iou_matrix(polys):
    shapes = shapely.polygons(np.asarray(polys, dtype=float).reshape(-1, 4, 2))
    inter = shapely.area(shapely.intersection(shapes[:, None], shapes[None, :]))
    union = shapely.area(shapes)[:, None] + shapely.area(shapes)[None, :] - inter
    return inter / union


def reference_greedy_nms(polys, scores, threshold, classes=None):
    """The textbook loop: visit by descending score (ties: lower index), keep unless a kept
    box of the same class overlaps with IoU > threshold."""
    iou = shapely_iou_matrix(polys)
    order = sorted(range(len(scores)), key=lambda i: (-scores[i], i))
    kept = []
    for i in order:
        same = [k for k in kept if classes is None or classes[k] == classes[i]]
        if all(iou[i, k] <= threshold for k in same):
            kept.append(i)
    return np.array(kept, dtype=np.int64)


def reference_matrix_nms(polys, scores, threshold):
    """Fast NMS: drop a box if ANY higher-ranked box overlaps it with IoU > threshold."""
    iou = shapely_iou_matrix(polys)
    order = sorted(range(len(scores)), key=lambda i: (-scores[i], i))
    return np.array([i for r, i in enumerate(order) if all(iou[i, j] <= threshold for j in order[:r])], dtype=np.int64)


def detector_like(rng, count, clusters=None, extent=128.0):
    """Boxes clustered around a few objects (what a detector emits before NMS)."""
    clusters = clusters or max(1, count // 12)
    objects = np.stack(
        [
            rng.uniform(10, extent - 10, clusters),
            rng.uniform(10, extent - 10, clusters),
            rng.uniform(10, 40, clusters),
            rng.uniform(5, 20, clusters),
            rng.uniform(-math.pi / 2, math.pi / 2, clusters),
        ],
        axis=-1,
    )
    boxes = objects[rng.integers(0, clusters, count)]
    boxes = boxes + rng.normal(0, 1, (count, 5)) * np.array([2, 2, 2, 1, 0.1])
    boxes[:, 2:4] = np.abs(boxes[:, 2:4]) + 1
    return obb.rbox_to_poly(boxes), rng.uniform(0, 1, count)


@pytest.mark.parametrize("threshold", [0.1, 0.3, 0.5, 0.7])
def test_matches_reference_greedy(rng, threshold):
    polys, scores = detector_like(rng, 150)
    expected = reference_greedy_nms(polys, scores, threshold)
    kept = rotated_nms(polys, scores, threshold)
    assert kept.dtype == np.int64
    np.testing.assert_array_equal(kept, expected)
    assert len(kept) < len(polys)  # something was suppressed


def test_uniform_boxes_and_max_output(rng):
    polys = obb.rbox_to_poly(
        np.stack(
            [
                rng.uniform(0, 128, 200),
                rng.uniform(0, 128, 200),
                rng.uniform(5, 30, 200),
                rng.uniform(5, 30, 200),
                rng.uniform(-3, 3, 200),
            ],
            axis=-1,
        )
    )
    scores = rng.uniform(0, 1, 200)
    expected = reference_greedy_nms(polys, scores, 0.2)
    np.testing.assert_array_equal(rotated_nms(polys, scores, 0.2), expected)
    np.testing.assert_array_equal(rotated_nms(polys, scores, 0.2, max_output=5), expected[:5])


def test_ties_contained_and_identical_boxes():
    square = np.array([0, 0, 10, 0, 10, 10, 0, 10], dtype=float)
    inner = np.array([4, 4, 6, 4, 6, 6, 4, 6], dtype=float)  # IoU 0.04 with square
    polys = np.array([square, square, inner, square + 20])
    scores = np.array([0.5, 0.5, 0.9, 0.5])
    # inner first (best score); equal scores: index 0 before 1; 1 duplicates 0
    np.testing.assert_array_equal(rotated_nms(polys, scores, 0.5), [2, 0, 3])
    np.testing.assert_array_equal(rotated_nms(polys, scores, 0.01), [2, 3])
    assert rotated_nms(np.zeros((0, 8)), np.zeros(0), 0.5).shape == (0,)


def test_long_chain_of_decisions():
    # boxes overlapping only their neighbours (IoU 0.25), scores falling along the line:
    # 0 keeps, 1 goes, 2 keeps (its only suppressor 1 is gone), ... -> every other box
    count = 60
    rboxes = np.stack(
        [np.arange(count) * 6.0, np.zeros(count), np.full(count, 10.0), np.full(count, 10.0), np.zeros(count)], axis=-1
    )
    polys, scores = obb.rbox_to_poly(rboxes), np.linspace(1, 0, count)
    np.testing.assert_array_equal(rotated_nms(polys, scores, 0.2), np.arange(0, count, 2))
    np.testing.assert_array_equal(rotated_nms(polys, scores, 0.3), np.arange(count))


def test_batched_is_class_aware(rng):
    polys, scores = detector_like(rng, 120)
    classes = rng.integers(0, 3, len(polys))
    expected = reference_greedy_nms(polys, scores, 0.3, classes)
    np.testing.assert_array_equal(batched_rotated_nms(polys, scores, classes, 0.3), expected)
    with pytest.raises(ValueError, match=r"\[N\]"):
        batched_rotated_nms(polys, scores, classes[:-1], 0.3)


def test_bad_inputs_raise_clear_errors():
    with pytest.raises(ValueError, match=r"\[N, 8\]"):
        rotated_nms(np.zeros((3, 5)), np.zeros(3), 0.5)
    with pytest.raises(ValueError, match=r"\[N\]"):
        rotated_nms(np.zeros((3, 8)), np.zeros(4), 0.5)
    with pytest.raises(ValueError, match="row 1"):
        rotated_nms(np.zeros((3, 8)), np.array([0.1, np.nan, 0.2]), 0.5)


def test_tf_exact_and_fast_nms(rng, tmp_path):
    import tensorflow as tf

    polys, scores = detector_like(rng, 100)
    threshold = 0.4
    iou = shapely_iou_matrix(polys)
    assert np.abs(iou - threshold).min() > 1e-4  # no float32 ambiguity at the threshold
    spec = [tf.TensorSpec([None, 8], tf.float32), tf.TensorSpec([None], tf.float32)]

    class Suppressors(tf.Module):
        @tf.function(input_signature=spec)
        def exact(self, p, s):
            return rotated_nms_tf(p, s, threshold, max_output=64)

        @tf.function(input_signature=spec)
        def fast(self, p, s):
            return fast_rotated_nms_tf(p, s, threshold, max_output=64)

    module = Suppressors()
    exporter = tf.Module()
    exporter.exact = module.exact  # the exact graph NMS goes through a SavedModel round trip
    tf.saved_model.save(exporter, str(tmp_path / "nms"))
    loaded = tf.saved_model.load(str(tmp_path / "nms"))
    p32, s32 = tf.constant(polys, tf.float32), tf.constant(scores, tf.float32)

    indices, count = loaded.exact(p32, s32)
    expected = reference_greedy_nms(polys, scores, threshold)
    assert indices.shape == (64,) and int(count) == len(expected)
    np.testing.assert_array_equal(indices.numpy()[: int(count)], expected)
    assert np.all(indices.numpy()[int(count) :] == -1)

    fast_indices, fast_count = module.fast(p32, s32)
    expected_fast = reference_matrix_nms(polys, scores, threshold)
    np.testing.assert_array_equal(fast_indices.numpy()[: int(fast_count)], expected_fast)

    # equal scores: lower index first, in both graph versions
    square = np.array([0, 0, 10, 0, 10, 10, 0, 10], dtype=np.float32)
    tied = tf.constant([square + 30, square, square, square + 60]), tf.constant([0.5] * 4)
    for run in (loaded.exact, module.fast):
        indices, count = run(*tied)
        np.testing.assert_array_equal(indices.numpy()[: int(count)], [0, 1, 3])

    empty = tf.zeros([0, 8]), tf.zeros([0])
    for run in (loaded.exact, module.fast):
        indices, count = run(*empty)
        assert int(count) == 0 and np.all(indices.numpy() == -1) and indices.shape == (64,)

    with pytest.raises(ValueError, match=r"\[N, 8\]"):
        rotated_nms_tf(tf.zeros([5, 4]), tf.zeros([5]), 0.5)

    # TFLite with builtin ops only (the converter raises if an op would need TF-Select)
    converter = tf.lite.TFLiteConverter.from_concrete_functions([module.fast.get_concrete_function()], module)
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    model = converter.convert()
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_content=model)
    inputs = interpreter.get_input_details()
    for detail in inputs:
        interpreter.resize_tensor_input(detail["index"], [100, 8] if len(detail["shape"]) == 2 else [100])
    interpreter.allocate_tensors()
    for detail in inputs:
        interpreter.set_tensor(
            detail["index"], polys.astype(np.float32) if len(detail["shape"]) == 2 else scores.astype(np.float32)
        )
    interpreter.invoke()
    outputs = [interpreter.get_tensor(d["index"]) for d in interpreter.get_output_details()]
    lite_indices = next(o for o in outputs if o.ndim == 1)
    np.testing.assert_array_equal(lite_indices, fast_indices.numpy())
