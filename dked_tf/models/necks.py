"""Necks: GGHL's YOLOv3-style top-down FPN and LO-Det's CSA-DRF-FPN.

Each builder returns a functional `keras.Model` mapping `[C3, C4, C5]` (strides 8/16/32) to
`[P3, P4, P5]` at the same strides. Spatial sizes are dynamic; inputs whose sides are
multiples of 32 keep the levels aligned.
"""

import keras
from keras import layers

from dked_tf.layers.blocks import CSA, DRF, SPP, ConvBNAct, CSAPart, DropBlock, SeparableConvBlock, conv_initializer
from dked_tf.models.backbones import scaled_channels


def _inputs(in_channels):
    return [keras.Input((None, None, int(c)), name=f"c{level}") for level, c in zip((3, 4, 5), in_channels)]


def build_gghl_fpn(in_channels, width=1.0, drop_prob=0.1, block_size=3, name="gghl_fpn"):
    """GGHL neck: top-down FPN with SPP and DropBlock (no bottom-up path).

    With f = (1024, 512, 256, 128) x width:
    s32: 1x1 f1 -> SPP -> plain 1x1 (bias) f1 -> 3x3 f0 -> 1x1 f1 -> DropBlock -> 3x3 f0 ->
         1x1 f1 = P5 (512 x width channels);
    s16: 1x1 f2 on P5, x2 nearest upsample, concat C4, then 1x1 f2, 3x3 f1, 1x1 f2, DropBlock,
         3x3 f1, 1x1 f2 = P4 (256 x width);
    s8:  the same with f3 on P4 and C3 = P3 (128 x width).
    """
    f0, f1, f2, f3 = (scaled_channels(c, width) for c in (1024, 512, 256, 128))
    c3, c4, c5 = _inputs(in_channels)

    def conv(x, filters, kernel, tag):
        return ConvBNAct(filters, kernel, name=tag)(x)

    def five_convs(x, narrow, wide, tag):
        x = conv(x, narrow, 1, f"{tag}_conv1")
        x = conv(x, wide, 3, f"{tag}_conv2")
        x = conv(x, narrow, 1, f"{tag}_conv3")
        x = DropBlock(block_size, drop_prob, name=f"{tag}_dropblock")(x)
        x = conv(x, wide, 3, f"{tag}_conv4")
        return conv(x, narrow, 1, f"{tag}_conv5")

    # s32
    x = conv(c5, f1, 1, "p5_in")
    x = SPP(name="p5_spp")(x)
    x = layers.Conv2D(f1, 1, kernel_initializer=conv_initializer(), name="p5_spp_fuse")(x)
    x = conv(x, f0, 3, "p5_conv2")
    x = conv(x, f1, 1, "p5_conv3")
    x = DropBlock(block_size, drop_prob, name="p5_dropblock")(x)
    x = conv(x, f0, 3, "p5_conv4")
    p5 = conv(x, f1, 1, "p5_conv5")
    # s16
    up = layers.UpSampling2D(2, interpolation="nearest", name="p4_up")(conv(p5, f2, 1, "p4_lateral"))
    x = layers.Concatenate(name="p4_concat")([up, c4])
    p4 = five_convs(x, f2, f1, "p4")
    # s8
    up = layers.UpSampling2D(2, interpolation="nearest", name="p3_up")(conv(p4, f3, 1, "p3_lateral"))
    x = layers.Concatenate(name="p3_concat")([up, c3])
    p3 = five_convs(x, f3, f2, "p3")
    return keras.Model([c3, c4, c5], [p3, p4, p5], name=name)


def build_lodet_fpn(in_channels, width=1.0, drop_prob=0.1, block_size=3, name="csa_drf_fpn"):
    """LO-Det CSA-DRF-FPN. With m = (1024, 512, 256) x width:

    bottom-up: D4 = concat[SepConv s2 (C3 -> c3 ch), C4]; D5 = concat[SepConv s2 (D4 -> c4 ch), C5]
      (LO-Det uses modulated deformable convs here; they do not lower to TFLite builtins,
      so a strided depthwise-separable conv replaces them: a documented deviation);
    s32: P5 = CSA_part(g=8)(DRF(dil 4, 6)(1x1 m0 (D5)))                      -> m0 ch;
    s16: U = up(1x1 m1 (P5)), L = CSA(1x1 m1 (D4));
         P4 = CSA_part(g=4)(DropBlock(DRF(dil 2, 3)(1x1 m1 (concat[U, L])))) -> m1 ch;
    s8:  U' = up(1x1 m2 (P4)), L' = CSA(1x1 m2 (C3));
         P3 = CSA(DropBlock(CSA(1x1 m2 (concat[U', L']))))                -> m2 ch.
    The lateral 1x1 convs are Conv+BN+LeakyReLU.
    """
    m0, m1, m2 = (scaled_channels(c, width, divisor=16, minimum=16) for c in (1024, 512, 256))
    ch3, ch4, _ = (int(c) for c in in_channels)
    c3, c4, c5 = _inputs(in_channels)

    def conv(x, filters, tag):
        return ConvBNAct(filters, 1, name=tag)(x)

    d4 = layers.Concatenate(name="d4")([SeparableConvBlock(ch3, 2, name="down3")(c3), c4])
    d5 = layers.Concatenate(name="d5")([SeparableConvBlock(ch4, 2, name="down4")(d4), c5])
    # s32
    x = conv(d5, m0, "p5_in")
    x = DRF(m0 // 2, dilations=(4, 6), name="p5_drf")(x)
    p5 = CSAPart(groups=8, name="p5_csa_part")(x)
    # s16
    up = layers.UpSampling2D(2, interpolation="nearest", name="p4_up")(conv(p5, m1, "p4_lateral"))
    left = CSA(4, name="p4_csa_skip")(conv(d4, m1, "p4_skip"))
    x = conv(layers.Concatenate(name="p4_concat")([up, left]), m1, "p4_in")
    x = DRF(m1 // 2, dilations=(2, 3), name="p4_drf")(x)
    x = DropBlock(block_size, drop_prob, name="p4_dropblock")(x)
    p4 = CSAPart(groups=4, name="p4_csa_part")(x)
    # s8
    up = layers.UpSampling2D(2, interpolation="nearest", name="p3_up")(conv(p4, m2, "p3_lateral"))
    left = CSA(4, name="p3_csa_skip")(conv(c3, m2, "p3_skip"))
    x = conv(layers.Concatenate(name="p3_concat")([up, left]), m2, "p3_in")
    x = CSA(4, name="p3_csa1")(x)
    x = DropBlock(block_size, drop_prob, name="p3_dropblock")(x)
    p3 = CSA(4, name="p3_csa2")(x)
    return keras.Model([c3, c4, c5], [p3, p4, p5], name=name)


NECKS = {"gghl_fpn": build_gghl_fpn, "csa_drf_fpn": build_lodet_fpn}
