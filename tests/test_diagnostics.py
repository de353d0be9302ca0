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
    targets = {
        "polygons": tf.constant([[RECTANGLE]], tf.float32),
        "classes": tf.constant([[0]], tf.int32),
        "weights": tf.constant([[1.0]], tf.float32),
    }
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
        heads.append(
            tf.constant(
                np.concatenate([distances, gliding_logits, ratio_logit, objectness, class_logit], axis=-1), tf.float32
            )
        )
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
    empty = {
        "quality": np.zeros(0),
        "pred_s": np.zeros((0, 4)),
        "target_s": np.zeros((0, 4)),
        "pred_l": np.zeros((0, 4)),
        "target_l": np.zeros((0, 4)),
    }
    result = summarise(empty)
    assert result["positive_cells"] == 0 and np.isnan(result["quality_median"])


def test_assignment_statistics_counts_kept_objects_and_their_positive_cells(tmp_path):
    import cv2

    from dked_tf.data.records import ImageRecord
    from dked_tf.evaluation.diagnostics import assignment_statistics

    path = str(tmp_path / "scene.png")
    cv2.imwrite(path, np.full((SIZE, SIZE, 3), 90, np.uint8))
    sliver = [10, 100, 60, 100, 60, 101, 10, 101]  # 50 x 1 px: thinner than the pipeline's 2 px minimum
    record = ImageRecord(path, "scene", SIZE, SIZE, np.array([RECTANGLE, sliver], np.float32), [0, 0], [False, False])
    stats = assignment_statistics([record], SIZE, strides=STRIDES)
    assert (stats["objects"], stats["kept"], stats["kept_fraction"]) == (2, 1, 0.5)
    # the rectangle's sides: |(40, 20)| = 44.72 px and |(8, 16)| = 17.89 px at scale 1
    assert stats["median_length_px"] == pytest.approx(np.hypot(40, 20), abs=1e-3)
    assert stats["median_width_px"] == pytest.approx(np.hypot(8, 16), abs=1e-3)
    per_level = [int((np.asarray(level)[..., 13] > 0).sum()) for level in _encoded()]
    assert sum(per_level) > 0 and stats["positives_mean"] == sum(per_level)
    assert stats["level_share"] == pytest.approx([n / sum(per_level) for n in per_level])
    assert stats["no_positive_fraction"] == 0.0
    bins = {row["length_px"]: row for row in stats["by_length"]}
    assert bins["32-64"]["objects"] == 2 and bins["32-64"]["kept_fraction"] == 0.5
    assert bins["0-16"]["objects"] == 0
