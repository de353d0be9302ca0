"""Localisation diagnostics against head outputs built by hand from a hand-computed box."""

import numpy as np
import pytest
import tensorflow as tf

from dked_tf.evaluation.diagnostics import head_cell_arrays, summarise
from dked_tf.losses.assign import encode_targets

SIZE = 128
STRIDES = (8, 16, 32)
# A 44.7 x 17.9 px rectangle whose long side runs down-right; HBB x 12..60, y 10..46, so the
# gliding ratios are s1 = (20-12)/48, s2 = (30-10)/36, s3 = (60-52)/48, s4 = (46-26)/36.
RECTANGLE = [20, 10, 60, 30, 52, 46, 12, 26]
EXPECTED_S = [1 / 6, 5 / 9, 1 / 6, 5 / 9]


def _encoded():
    targets = {"polygons": tf.constant([[RECTANGLE]], tf.float32),
               "classes": tf.constant([[0]], tf.int32),
               "weights": tf.constant([[1.0]], tf.float32)}
    return encode_targets(targets, SIZE, 1, strides=STRIDES)


def _logits_from_targets(encoded, swap_diagonal=False):
    """Head logits [1, H, W, 11] that decode exactly to the targets of each cell."""
    heads = []
    for level, stride in zip(encoded, STRIDES):
        level = np.asarray(level)
        distances = np.log(np.maximum(level[..., 4:8], 1e-3) / stride)
        gliding = np.clip(level[..., 8:12], 0.0, 0.999)
        if swap_diagonal:
            gliding = gliding[..., [1, 0, 3, 2]]
        p = 0.01 + 0.99 * gliding
        gliding_logits = np.log(p / (1.0 - p))
        ratio_logit = 6.0 * level[..., 12:13] - 3.0
        objectness = np.full(level.shape[:-1] + (1,), 4.0)
        class_logit = np.full(level.shape[:-1] + (1,), 4.0)
        heads.append(tf.constant(np.concatenate(
            [distances, gliding_logits, ratio_logit, objectness, class_logit], axis=-1), tf.float32))
    return heads


def test_exact_predictions_give_perfect_diagnostics():
    encoded = _encoded()
    cells = head_cell_arrays(_logits_from_targets(encoded), encoded, STRIDES, SIZE)
    assert cells["quality"].shape[0] > 0
    np.testing.assert_allclose(cells["target_s"], np.tile(EXPECTED_S, (len(cells["target_s"]), 1)), atol=1e-5)
    result = summarise(cells)
    assert result["quality_median"] == pytest.approx(1.0, abs=1e-3)
    assert result["gliding_error"] == pytest.approx(0.0, abs=1e-3)
    assert result["orientation_accuracy"] == 1.0
    assert result["distance_error_median"] == pytest.approx(0.0, abs=1e-3)
    assert result["positive_cells"] == cells["quality"].shape[0]


def test_mirrored_diagonal_is_counted_wrong():
    encoded = _encoded()
    result = summarise(head_cell_arrays(_logits_from_targets(encoded, swap_diagonal=True), encoded, STRIDES, SIZE))
    assert result["orientation_accuracy"] == 0.0
    # |1/6 - 5/9| on every ratio
    assert result["gliding_error"] == pytest.approx(7 / 18, abs=1e-3)
    assert result["quality_median"] == pytest.approx(np.exp(-4 * (7 / 18) ** 2), abs=1e-3)


def test_no_positive_cells_gives_nan_not_an_error():
    empty = {"quality": np.zeros(0), "pred_s": np.zeros((0, 4)), "target_s": np.zeros((0, 4)),
             "pred_l": np.zeros((0, 4)), "target_l": np.zeros((0, 4))}
    result = summarise(empty)
    assert result["positive_cells"] == 0 and np.isnan(result["quality_median"])
