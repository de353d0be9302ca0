import numpy as np
import pytest

from dked_tf.models.necks import build_gghl_fpn, build_lodet_fpn


def _inputs(channels, size=64, batch=2):
    rng = np.random.default_rng(0)
    return [rng.normal(size=(batch, size // s, size // s, c)).astype(np.float32) for s, c in zip((8, 16, 32), channels)]


def test_gghl_fpn_levels_and_channels():
    neck = build_gghl_fpn((32, 64, 128), width=0.125)
    p3, p4, p5 = neck(_inputs((32, 64, 128)), training=False)
    assert p3.shape == (2, 8, 8, 16) and p4.shape == (2, 4, 4, 32) and p5.shape == (2, 2, 2, 64)


def test_gghl_fpn_full_width_matches_hand_parameter_count():
    """Hand count from the reference layer list (conv k*k*cin*cout + 4*cout BN; SPP fuse
    conv has a bias instead of BN)."""

    def cbl(k, cin, cout):
        return k * k * cin * cout + 4 * cout

    s32 = (
        cbl(1, 1024, 512)
        + (2048 * 512 + 512)
        + cbl(3, 512, 1024)
        + cbl(1, 1024, 512)
        + cbl(3, 512, 1024)
        + cbl(1, 1024, 512)
    )
    s16 = (
        cbl(1, 512, 256) + cbl(1, 768, 256) + cbl(3, 256, 512) + cbl(1, 512, 256) + cbl(3, 256, 512) + cbl(1, 512, 256)
    )
    s8 = cbl(1, 256, 128) + cbl(1, 384, 128) + cbl(3, 128, 256) + cbl(1, 256, 128) + cbl(3, 128, 256) + cbl(1, 256, 128)
    neck = build_gghl_fpn((256, 512, 1024))
    assert neck.count_params() == s32 + s16 + s8
    assert neck.count_params() == pytest.approx(15.8e6, rel=0.01)


def test_gghl_fpn_dropblock_only_in_training():
    neck = build_gghl_fpn((32, 64, 128), width=0.125, drop_prob=0.5)
    x = _inputs((32, 64, 128))
    a = [t.numpy() for t in neck(x, training=False)]
    b = [t.numpy() for t in neck(x, training=False)]
    for u, v in zip(a, b):
        np.testing.assert_array_equal(u, v)
    c = [t.numpy() for t in neck(x, training=True)]
    d = [t.numpy() for t in neck(x, training=True)]
    assert any(not np.array_equal(u, v) for u, v in zip(c, d))


@pytest.mark.parametrize("width, channels", [(0.0625, (16, 32, 64)), (0.25, (64, 128, 256))])
def test_lodet_fpn_levels_and_channels(width, channels):
    neck = build_lodet_fpn((16, 32, 1280), width=width)
    p3, p4, p5 = neck(_inputs((16, 32, 1280)), training=False)
    assert p3.shape[1:] == (8, 8, channels[0])
    assert p4.shape[1:] == (4, 4, channels[1])
    assert p5.shape[1:] == (2, 2, channels[2])
    names = [layer.name for layer in neck.layers]
    assert "p5_drf" in names and "p4_drf" in names and "down3" in names
