import math

import keras
import numpy as np
import pytest

from dked_tf.layers.head import GGHLHead, LoDetHead


@pytest.mark.parametrize("head_cls", [GGHLHead, LoDetHead])
def test_head_shape_dtype_and_initial_logits(head_cls):
    head = head_cls(num_classes=3)
    x = np.zeros((2, 5, 7, 16), np.float32)
    y = head(x, training=False).numpy()
    assert y.shape == (2, 5, 7, 13) and y.dtype == np.float32
    prior = math.log(0.01 / 0.99)
    # zero features: only the 1x1 biases remain; box channels 0-8 start at 0,
    # objectness and classes at logit(0.01)
    np.testing.assert_allclose(y[..., :9], 0.0, atol=1e-6)
    np.testing.assert_allclose(y[..., 9:], prior, atol=1e-5)


def test_gghl_head_is_decoupled():
    head = GGHLHead(num_classes=2)
    head.build((None, None, None, 8))
    assert head.loc_conv.filters == 16 and head.cls_conv.filters == 16
    x = np.random.default_rng(0).normal(size=(1, 4, 4, 8)).astype(np.float32)
    before = head(x, training=False).numpy()
    head.cls_out.kernel.assign(np.zeros_like(head.cls_out.kernel.numpy()))
    after = head(x, training=False).numpy()
    np.testing.assert_array_equal(after[..., :10], before[..., :10])  # loc branch untouched
    assert not np.allclose(after[..., 10:], before[..., 10:])


@pytest.mark.parametrize("head_cls", [GGHLHead, LoDetHead])
def test_head_output_is_float32_under_mixed_precision(head_cls):
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy("mixed_float16")
    try:
        head = head_cls(num_classes=2)
        y = head(np.ones((1, 4, 4, 8), np.float32))
        assert keras.backend.standardize_dtype(y.dtype) == "float32"
        assert head.compute_dtype == "float16"
    finally:
        keras.config.set_dtype_policy(previous)


@pytest.mark.parametrize("head_cls", [GGHLHead, LoDetHead])
def test_head_round_trip(head_cls, tmp_path):
    inputs = keras.Input((None, None, 8))
    model = keras.Model(inputs, head_cls(num_classes=4, prior_prob=None)(inputs))
    path = tmp_path / "head.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)
    x = np.random.default_rng(1).normal(size=(1, 4, 4, 8)).astype(np.float32)
    np.testing.assert_allclose(loaded(x).numpy(), model(x).numpy(), rtol=1e-5, atol=1e-6)
