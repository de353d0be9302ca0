import keras
import numpy as np
import pytest
import tensorflow as tf

from dked_tf.layers.blocks import CSA, DRF, SPP, ConvBNAct, CSAPart, DropBlock, SeparableConvBlock, channel_shuffle


def _set_identity_bn(bn):
    channels = bn.gamma.shape[0]
    bn.set_weights([np.ones(channels), np.zeros(channels), np.zeros(channels), np.ones(channels) - bn.epsilon])


def test_conv_bn_act_strided_padding_is_symmetric_like_darknet():
    layer = ConvBNAct(1, 3, strides=2, activation="linear")
    layer.build((None, 8, 8, 1))
    layer.conv.kernel.assign(np.ones((3, 3, 1, 1), np.float32))
    _set_identity_bn(layer.bn)
    y = layer(np.ones((1, 8, 8, 1), np.float32), training=False).numpy()[0, :, :, 0]
    assert y.shape == (4, 4)
    # pad 1 on every side: the top-left window sees 2x2 ones, an inner window 3x3 ones
    assert y[0, 0] == pytest.approx(4.0, abs=1e-4)
    assert y[1, 1] == pytest.approx(9.0, abs=1e-4)
    assert y[3, 3] == pytest.approx(9.0, abs=1e-4)  # windows start at 0,2,4,6 of the padded 10


@pytest.mark.parametrize("activation, expected", [("leaky", -0.1), ("relu6", 0.0), ("linear", -1.0)])
def test_conv_bn_act_activations(activation, expected):
    layer = ConvBNAct(1, 1, activation=activation)
    layer.build((None, 2, 2, 1))
    layer.conv.kernel.assign(np.ones((1, 1, 1, 1), np.float32))
    _set_identity_bn(layer.bn)
    y = layer(np.full((1, 2, 2, 1), -1.0, np.float32), training=False).numpy()
    np.testing.assert_allclose(y, expected, atol=1e-5)
    y = layer(np.full((1, 2, 2, 1), 7.0, np.float32), training=False).numpy()
    np.testing.assert_allclose(y, 6.0 if activation == "relu6" else 7.0, atol=1e-4)


def test_spp_pass_through_and_pool_windows():
    x = np.zeros((1, 32, 32, 2), np.float32)
    x[0, 16, 16, :] = 1.0
    y = SPP()(x).numpy()
    assert y.shape == (1, 32, 32, 8)
    np.testing.assert_array_equal(y[..., :2], x)
    for group, size in enumerate((5, 9, 13), start=1):
        block = y[0, :, :, 2 * group]
        assert block.sum() == size * size
        rows, cols = np.nonzero(block)
        assert rows.min() == 16 - size // 2 and rows.max() == 16 + size // 2
        assert cols.min() == 16 - size // 2 and cols.max() == 16 + size // 2


def test_dropblock_identity_at_inference_and_blocks_in_training():
    x = np.random.default_rng(0).uniform(1.0, 2.0, (2, 32, 32, 4)).astype(np.float32)
    layer = DropBlock(block_size=3, drop_prob=0.3, seed=1)
    np.testing.assert_array_equal(layer(x, training=False).numpy(), x)
    np.testing.assert_array_equal(layer(x).numpy(), x)
    y = layer(x, training=True).numpy()
    dropped = y == 0.0
    # the same positions are dropped in every channel
    assert np.all(dropped == dropped[..., :1])
    frac = dropped[..., 0].mean()
    assert 0.05 < frac < 0.6
    kept = ~dropped
    scale = y[kept] / x[kept]
    np.testing.assert_allclose(scale, scale[0], rtol=1e-5)
    assert scale[0] == pytest.approx(1.0 / (1.0 - frac), rel=1e-4)
    # every dropped pixel lies in a fully dropped 3x3 block
    mask = dropped[0, :, :, 0]
    for r, c in zip(*np.nonzero(mask[2:30, 2:30])):  # away from the border
        r, c = r + 2, c + 2
        windows = [mask[i : i + 3, j : j + 3] for i in range(r - 2, r + 1) for j in range(c - 2, c + 1)]
        assert any(w.all() for w in windows)


def test_channel_shuffle_matches_hand_permutation():
    x = np.arange(8, dtype=np.float32).reshape(1, 1, 1, 8)
    y = channel_shuffle(tf.constant(x), 4).numpy().ravel()
    np.testing.assert_array_equal(y, [0, 2, 4, 6, 1, 3, 5, 7])
    y = channel_shuffle(tf.constant(x), 2).numpy().ravel()
    np.testing.assert_array_equal(y, [0, 4, 1, 5, 2, 6, 3, 7])
    with pytest.raises(ValueError):
        channel_shuffle(tf.constant(x), 3)


def test_csa_keeps_left_half_at_shuffled_positions():
    x = np.random.default_rng(1).normal(size=(2, 6, 6, 16)).astype(np.float32)
    layer = CSA(groups=4)
    y = layer(x, training=False).numpy()
    assert y.shape == x.shape
    # channel j of the output comes from channel (j % 4) * 4 + j // 4 of concat[left, right]
    source = [(j % 4) * 4 + j // 4 for j in range(16)]
    for j, s in enumerate(source):
        if s < 8:
            np.testing.assert_array_equal(y[..., j], x[..., s])


def test_csa_part_doubles_channels_and_keeps_input():
    x = np.random.default_rng(2).normal(size=(1, 4, 4, 8)).astype(np.float32)
    y = CSAPart(groups=8)(x, training=False).numpy()
    assert y.shape == (1, 4, 4, 16)
    source = [(j % 8) * 2 + j // 8 for j in range(16)]
    for j, s in enumerate(source):
        if s < 8:
            np.testing.assert_array_equal(y[..., j], x[..., s])


def _dilated_depthwise_reference(x, kernel, bias, dilation):
    """numpy depthwise 3x3 'same' conv with dilation. x [H,W,C], kernel [3,3,C]."""
    h, w, _ = x.shape
    pad = dilation
    xp = np.pad(x, ((pad, pad), (pad, pad), (0, 0)))
    out = np.zeros_like(x)
    for i in range(3):
        for j in range(3):
            out += xp[i * dilation : i * dilation + h, j * dilation : j * dilation + w] * kernel[i, j]
    return out + bias


def test_drf_per_sample_dynamic_scaling_matches_reference():
    rng = np.random.default_rng(3)
    x = rng.normal(size=(2, 10, 10, 8)).astype(np.float32)
    x[1] += 2.0  # a different global mean -> a different per-sample kernel scale
    layer = DRF(4, dilations=(2, 3))
    y = layer(x, training=False).numpy()
    assert y.shape == (2, 10, 10, 4)
    expected = np.zeros_like(y)
    for branch, part, dilation in ((layer.branch_a, x[..., :4], 2), (layer.branch_b, x[..., 4:], 3)):
        branch.routing.set_weights([rng.normal(size=(4, 1)).astype(np.float32), np.array([0.3], np.float32)])
        kernel, bias = [w for w in branch.dw.get_weights()]
        gamma, beta, mean, var = branch.bn.get_weights()
        pw_kernel = branch.pw.conv.get_weights()[0][0, 0]  # [C, out]
        pg, pb, pm, pv = branch.pw.bn.get_weights()
        routing_w, routing_b = branch.routing.get_weights()
        for n in range(2):
            alpha = 1.0 / (1.0 + np.exp(-(part[n].mean(axis=(0, 1)) @ routing_w + routing_b)))
            z = _dilated_depthwise_reference(part[n], kernel[..., 0], bias, dilation) * alpha
            z = (z - mean) / np.sqrt(var + branch.bn.epsilon) * gamma + beta
            z = z @ pw_kernel
            z = (z - pm) / np.sqrt(pv + branch.pw.bn.epsilon) * pg + pb
            expected[n] += np.where(z > 0, z, 0.1 * z)
    y = layer(x, training=False).numpy()
    np.testing.assert_allclose(y, expected, rtol=1e-4, atol=1e-5)


def test_separable_conv_block_stride():
    y = SeparableConvBlock(12, strides=2)(np.zeros((1, 16, 16, 6), np.float32))
    assert tuple(y.shape) == (1, 8, 8, 12)


def _model_of(layer, shape):
    inputs = keras.Input(shape)
    return keras.Model(inputs, layer(inputs))


@pytest.mark.parametrize(
    "make, shape",
    [
        (lambda: ConvBNAct(8, 3, strides=2, activation="relu6"), (16, 16, 4)),
        (lambda: ConvBNAct(4, 3, depthwise=True, activation="linear", dilation_rate=2), (16, 16, 4)),
        (lambda: SPP(), (8, 8, 4)),
        (lambda: DropBlock(3, 0.2, seed=3), (8, 8, 4)),
        (lambda: CSA(4), (8, 8, 16)),
        (lambda: CSAPart(8), (8, 8, 8)),
        (lambda: DRF(4, (4, 6)), (8, 8, 8)),
        (lambda: SeparableConvBlock(8, 2), (8, 8, 4)),
    ],
)
def test_layers_round_trip_through_keras_file(make, shape, tmp_path):
    layer = make()
    clone = layer.__class__.from_config(layer.get_config())
    assert clone.get_config() == layer.get_config()
    model = _model_of(layer, shape)
    x = np.random.default_rng(4).normal(size=(2,) + shape).astype(np.float32)
    path = tmp_path / "m.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)
    np.testing.assert_allclose(
        loaded(x, training=False).numpy(), model(x, training=False).numpy(), rtol=1e-5, atol=1e-6
    )
