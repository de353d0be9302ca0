"""The head contract (dked_tf.ops.head_contract): channel layouts used by head, targets, loss,
distillation and decode; the one decode of raw outputs; the loss-term names."""

import inspect

import numpy as np
import pytest
import tensorflow as tf

from dked_tf.layers.head import GGHLHead, LoDetHead
from dked_tf.losses import distill
from dked_tf.losses.assign import encode_targets
from dked_tf.losses.jol import TERM_WEIGHTS, jol_loss, per_cell_terms
from dked_tf.ops import head_contract as hc


def _sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def test_layouts():
    assert hc.HEAD_BOX_CHANNELS == 10 and hc.TARGET_BOX_CHANNELS == 16
    assert hc.FIRST_CLASS_CHANNEL == hc.HEAD_BOX_CHANNELS == hc.OBJECTNESS_CHANNEL + 1
    assert hc.TARGET_FIRST_CLASS_CHANNEL == hc.TARGET_BOX_CHANNELS == hc.TARGET_AREA_WEIGHT_CHANNEL + 1
    for head_cls in (GGHLHead, LoDetHead):
        head = head_cls(num_classes=3)
        assert head.compute_output_shape((None, 4, 4, 8))[-1] == hc.HEAD_BOX_CHANNELS + 3
        out = head(np.zeros((1, 4, 4, 8), np.float32)).numpy()
        # only objectness and classes carry the prior bias
        assert out[..., hc.OBJECTNESS_CHANNEL].min() < -4.0
        np.testing.assert_allclose(out[..., : hc.OBJECTNESS_CHANNEL], 0.0, atol=1e-6)
    targets = {
        "polygons": np.array([[[8, 12, 40, 6, 44, 20, 12, 26]]], np.float32),
        "classes": np.zeros((1, 1), np.int32),
    }
    encoded = encode_targets(targets, 64, 2)
    assert [int(e.shape[-1]) for e in encoded] == [hc.TARGET_BOX_CHANNELS + 2] * 3
    level = np.concatenate([e.numpy().reshape(-1, hc.TARGET_BOX_CHANNELS + 2) for e in encoded])
    positive = level[..., hc.TARGET_POSITIVE_CHANNEL] > 0
    assert positive.any()
    np.testing.assert_allclose(level[positive][:, hc.TARGET_WIDTH_CHANNEL], 44 - 8)
    np.testing.assert_allclose(level[positive][:, hc.TARGET_HEIGHT_CHANNEL], 26 - 6)
    assert np.all(level[positive][:, hc.TARGET_DISTANCE_CHANNELS] > 0)
    assert np.all(level[~positive][:, hc.TARGET_MIXUP_CHANNEL] == 1.0)


def test_decode_head_level_matches_the_formulas(rng):
    raw = rng.normal(0, 3, (2, 3, 4, hc.HEAD_BOX_CHANNELS + 2)).astype(np.float32)
    raw[0, 0, 0, 0:4] = [20.0, -20.0, 16.5, -40.0]  # beyond the clip on both sides
    got = {k: v.numpy() for k, v in hc.decode_head_level(tf.constant(raw), 16).items()}
    clip = hc.LOG_DISTANCE_CLIP
    np.testing.assert_allclose(got["pred_l"], np.exp(np.clip(raw[..., 0:4], -clip, clip)) * 16, rtol=1e-6)
    assert got["pred_l"][0, 0, 0, 0] == pytest.approx(np.exp(16.0) * 16, rel=1e-6)
    glide = (np.clip(_sigmoid(raw[..., 4:8]), 0.01, 1.0) - 0.01) / 0.99
    np.testing.assert_allclose(got["pred_s"], glide, atol=1e-6)
    np.testing.assert_allclose(got["pred_r"], np.clip(raw[..., 8] + 3.0, 0.0, 6.0) / 6.0, atol=1e-6)
    np.testing.assert_allclose(got["obj_prob"], _sigmoid(raw[..., 9]), atol=1e-6)
    np.testing.assert_allclose(got["class_prob"], _sigmoid(raw[..., 10:]), atol=1e-6)
    np.testing.assert_array_equal(got["obj_logit"], raw[..., 9])
    np.testing.assert_array_equal(got["class_logits"], raw[..., 10:])


def test_decode_cell_polygons_by_hand():
    # one 2 x 2 grid, stride 8: cell (row 1, col 0) centre (4, 12)
    raw = np.full((1, 2, 2, hc.HEAD_BOX_CHANNELS + 1), -30.0, np.float32)
    raw[0, 1, 0, 0:4] = np.log(np.array([2.0, 3.0, 1.0, 100.0]) / 8.0)  # top, right, bottom, left
    raw[0, 1, 0, 4:8] = np.log(0.5 / 0.5)  # sigmoid 0.5 -> s = (0.5 - 0.01) / 0.99
    raw[0, 1, 0, 8] = -3.0  # r = 0: oriented
    decoded = hc.decode_head_level(tf.constant(raw), 8)
    polygons = hc.decode_cell_polygons(decoded, 8, 0.9).numpy()
    assert polygons.shape == (1, 2, 2, 8)
    xmin, ymin, xmax, ymax = 0.0, 10.0, 7.0, 13.0  # left edge clipped to the input at 0
    s = (0.5 - 0.01) / 0.99
    w, h = xmax - xmin, ymax - ymin
    expected = [xmin + s * w, ymin, xmax, ymin + s * h, xmax - s * w, ymax, xmin, ymax - s * h]
    np.testing.assert_allclose(polygons[0, 1, 0], expected, atol=1e-4)
    raw[0, 1, 0, 8] = 3.0  # r = 1 > 0.9: the HBB
    decoded = hc.decode_head_level(tf.constant(raw), 8)
    polygons = hc.decode_cell_polygons(decoded, 8, 0.9).numpy()
    np.testing.assert_allclose(polygons[0, 1, 0], [xmin, ymin, xmax, ymin, xmax, ymax, xmin, ymax], atol=1e-4)


def test_loss_and_distillation_use_the_contract_decode(rng):
    head = [rng.normal(0, 2, (1, g, g, hc.HEAD_BOX_CHANNELS + 2)).astype(np.float32) for g in (8, 4, 2)]
    targets = {
        "polygons": np.array([[[8, 12, 40, 6, 44, 20, 12, 26]]], np.float32),
        "classes": np.zeros((1, 1), np.int32),
    }
    encoded = encode_targets(targets, 64, 2)
    for level, stride in zip(range(3), (8, 16, 32)):
        cells = per_cell_terms(head[level], encoded[level], stride, 64)
        decoded = hc.decode_head_level(head[level], stride)
        for key in ("pred_l", "pred_s", "pred_r", "obj_prob", "class_prob"):
            np.testing.assert_array_equal(cells[key].numpy(), decoded[key].numpy())
        box = distill._per_cell_box(head[level], encoded[level], stride, 64)
        np.testing.assert_array_equal(box.numpy(), cells["box"].numpy())


def test_term_names():
    assert tuple(TERM_WEIGHTS) == hc.JOL_TERM_NAMES
    assert hc.DISTILL_TERM_NAMES == ("corr", "resp", "pred_loc", "pred_cls")
    assert (
        sum(
            (
                cls.term_names
                for cls in (
                    distill.FeatureCorrelationLoss,
                    distill.DirectionalResponseLoss,
                    distill.PredictionDistillationLoss,
                )
            ),
            (),
        )
        == hc.DISTILL_TERM_NAMES
    )
    head = [np.zeros((1, g, g, hc.HEAD_BOX_CHANNELS + 1), np.float32) for g in (8, 4, 2)]
    encoded = encode_targets(
        {
            "polygons": np.zeros((1, 1, 8), np.float32),
            "classes": np.zeros((1, 1), np.int32),
            "weights": np.zeros((1, 1), np.float32),
        },
        64,
        1,
    )
    assert tuple(jol_loss(head, encoded, (8, 16, 32), 64)) == hc.JOL_TERM_NAMES + (hc.TOTAL,)


def test_distillation_losses_share_one_call_signature():
    signatures = {
        str(inspect.signature(cls.compute))
        for cls in (
            distill.DistillationLoss,
            distill.FeatureCorrelationLoss,
            distill.DirectionalResponseLoss,
            distill.PredictionDistillationLoss,
        )
    }
    assert len(signatures) == 1, signatures
