import keras
import numpy as np
import pytest

from dked_tf.files import CorruptFileError
from dked_tf.models.backbones import build_darknet53, build_mobilenetv2, darknet_conv_layers, load_darknet_weights

TINY = dict(width=0.125, depths=(1, 1, 1, 1, 1))


def _darknet_param_count(width_channels, depths, stem):
    """Hand count: conv k*k*cin*cout + BN 4*cout (gamma, beta, mean, var)."""
    total, cin = 0, 3

    def conv(k, cin, cout):
        return k * k * cin * cout + 4 * cout

    total += conv(3, cin, stem)
    cin = stem
    for c, d in zip(width_channels, depths):
        total += conv(3, cin, c)
        total += d * (conv(1, c, c // 2) + conv(3, c // 2, c))
        cin = c
    return total


def test_darknet53_taps_strides_and_parameter_count():
    model = build_darknet53(**TINY)
    c3, c4, c5 = model(np.zeros((2, 64, 96, 3), np.float32))
    assert c3.shape == (2, 8, 12, 32) and c4.shape == (2, 4, 6, 64) and c5.shape == (2, 2, 3, 128)
    assert model.count_params() == _darknet_param_count((8, 16, 32, 64, 128), TINY["depths"], 8)
    assert len(darknet_conv_layers(model)) == 1 + 5 + 2 * 5


def test_darknet53_full_size_has_52_convs_and_40_6m_params():
    model = build_darknet53()
    assert len(darknet_conv_layers(model)) == 52
    assert model.count_params() == _darknet_param_count((64, 128, 256, 512, 1024), (1, 2, 8, 8, 4), 32)
    assert 40.5e6 < model.count_params() < 40.7e6


def _write_darknet_file(path, convs, major=0, minor=2, seen_dtype=np.int64, extra=0):
    """Independent writer of the Darknet layout; convs: list of (cin, cout, k). Returns the
    arrays written per conv: (beta, gamma, mean, var, kernel[out,in,k,k])."""
    rng = np.random.default_rng(5)
    written = []
    with open(path, "wb") as f:
        np.array([major, minor, 5], np.int32).tofile(f)
        np.array([123456], seen_dtype).tofile(f)
        for cin, cout, k in convs:
            beta, gamma = rng.normal(size=cout), rng.uniform(0.5, 1.5, cout)
            mean, var = rng.normal(size=cout), rng.uniform(0.5, 2.0, cout)
            kernel = rng.normal(size=(cout, cin, k, k))
            for arr in (beta, gamma, mean, var, kernel):
                arr.astype(np.float32).tofile(f)
            written.append((beta, gamma, mean, var, kernel))
        np.zeros(extra, np.float32).tofile(f)
    return written


@pytest.mark.parametrize("major, minor, seen_dtype", [(0, 2, np.int64), (0, 1, np.int32)])
def test_darknet_weights_loader_places_every_array(tmp_path, major, minor, seen_dtype):
    model = build_darknet53(**TINY)
    convs = [
        (l.conv.kernel.shape[2], l.conv.kernel.shape[3], l.conv.kernel.shape[0]) for l in darknet_conv_layers(model)
    ]
    path = tmp_path / "darknet53.weights"
    written = _write_darknet_file(path, convs, major, minor, seen_dtype, extra=1000)
    assert load_darknet_weights(model, str(path), verbose=0) == len(convs)
    for layer, (beta, gamma, mean, var, kernel) in zip(darknet_conv_layers(model), written):
        g, b, m, v = layer.bn.get_weights()
        np.testing.assert_allclose(g, gamma, rtol=1e-6)
        np.testing.assert_allclose(b, beta, rtol=1e-6)
        np.testing.assert_allclose(m, mean, rtol=1e-6)
        np.testing.assert_allclose(v, var, rtol=1e-6)
        k = layer.conv.kernel.numpy()
        for o, i, r, c in [(0, 0, 0, 0), (kernel.shape[0] - 1, kernel.shape[1] - 1, -1, 0)]:
            assert k[r, c, i, o] == pytest.approx(kernel[o, i, r, c], rel=1e-6)
    # the stem conv computes the PyTorch-layout (cross-correlation) result
    x = np.random.default_rng(6).normal(size=(1, 8, 8, 3)).astype(np.float32)
    stem = darknet_conv_layers(model)[0]
    y = stem.conv(x).numpy()[0]
    kernel = written[0][4]
    xp = np.pad(x[0], ((1, 1), (1, 1), (0, 0)))
    window = xp[3:6, 2:5, :]  # output pixel (3, 2)
    expected = np.einsum("rci,oirc->o", window, kernel)
    np.testing.assert_allclose(y[3, 2], expected, rtol=1e-4, atol=1e-4)


def test_darknet_weights_loader_reports_short_file(tmp_path):
    model = build_darknet53(**TINY)
    path = tmp_path / "short.weights"
    _write_darknet_file(path, [(3, 8, 3)])
    with pytest.raises(CorruptFileError, match="ends early"):
        load_darknet_weights(model, str(path), verbose=0)
    assert load_darknet_weights(model, str(path), max_convs=1, verbose=0) == 1
    with pytest.raises(FileNotFoundError):
        load_darknet_weights(model, str(tmp_path / "missing.weights"))


@pytest.mark.parametrize("alpha, channels", [(0.35, (16, 32, 1280)), (1.0, (32, 96, 1280))])
def test_mobilenetv2_taps(alpha, channels):
    model = build_mobilenetv2(alpha=alpha)
    taps = model(np.zeros((1, 64, 64, 3), np.float32))
    assert [tuple(t.shape) for t in taps] == [(1, 8, 8, channels[0]), (1, 4, 4, channels[1]), (1, 2, 2, channels[2])]


def test_mobilenetv2_local_weights_file(tiny_images, tmp_path):
    source = keras.applications.MobileNetV2(input_shape=(None, None, 3), alpha=0.35, include_top=False, weights=None)
    path = str(tmp_path / "mbv2.weights.h5")
    source.save_weights(path)
    model = build_mobilenetv2(alpha=0.35, weights=path)
    x = tiny_images(1, seed=7)
    expected = source(x * 2.0 - 1.0, training=False).numpy()
    np.testing.assert_allclose(model(x, training=False)[2].numpy(), expected, rtol=1e-4, atol=1e-4)
    with pytest.raises(FileNotFoundError):
        build_mobilenetv2(weights=str(tmp_path / "nope.h5"))
    with pytest.raises(ValueError):
        build_mobilenetv2(alpha=0.6, weights="imagenet")


def test_mobilenetv2_batchnorm_momentum_is_pytorch_like():
    from keras import layers

    model = build_mobilenetv2(alpha=0.35)
    momenta = {
        l.momentum for l in model.get_layer("mobilenetv2_base").layers if isinstance(l, layers.BatchNormalization)
    }
    assert momenta == {0.9}


def test_darknet53_min_stride_4_taps_strides_4_8_16_and_builds_no_stride_32_stage():
    model = build_darknet53(**TINY, min_stride=4)
    c2, c3, c4 = model(np.zeros((1, 64, 96, 3), np.float32))
    assert c2.shape == (1, 16, 24, 16) and c3.shape == (1, 8, 12, 32) and c4.shape == (1, 4, 6, 64)
    # the hand count of the first four stages: stem + 4 stage convs + 2 convs per residual block
    assert model.count_params() == _darknet_param_count((8, 16, 32, 64), TINY["depths"][:4], 8)
    assert len(darknet_conv_layers(model)) == 1 + 4 + 2 * 4


def test_mobilenetv2_min_stride_4_taps():
    model = build_mobilenetv2(alpha=0.35, min_stride=4)
    taps = model(np.zeros((1, 64, 64, 3), np.float32))
    # keras.applications MobileNetV2 alpha 0.35: blocks 1-2 have 8 channels, 3-5 16, 6-12 24
    assert [tuple(t.shape) for t in taps] == [(1, 16, 16, 8), (1, 8, 8, 16), (1, 4, 4, 32)]


@pytest.mark.parametrize("builder", [build_darknet53, build_mobilenetv2])
def test_backbones_reject_other_min_strides(builder):
    with pytest.raises(ValueError, match="min_stride must be one of"):
        builder(min_stride=16)


def test_mobilenetv2_min_stride_4_takes_the_weights_of_its_blocks(tiny_images, tmp_path):
    source = keras.applications.MobileNetV2(input_shape=(None, None, 3), alpha=0.35, include_top=False, weights=None)
    path = str(tmp_path / "mbv2.weights.h5")
    source.save_weights(path)
    model = build_mobilenetv2(alpha=0.35, weights=path, min_stride=4)
    x = tiny_images(1, seed=8)
    block_12 = keras.Model(source.inputs, source.get_layer("block_12_add").output)
    expected = block_12(x * 2.0 - 1.0, training=False).numpy()
    np.testing.assert_allclose(model(x, training=False)[2].numpy(), expected, rtol=1e-4, atol=1e-4)
