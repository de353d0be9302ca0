"""Per-level detection heads with GGHL's per-cell output semantics.

Output of every head: float32 raw logits `[B, H, W, 10 + nC]`, channel layout and decode in
`dked_tf.ops.head_contract` (0-3 l1..l4, 4-7 s1..s4, 8 r, 9 objectness, 10.. classes). The
output is cast to float32 so mixed precision leaves the loss and the decode in float32.
"""

import math

import keras
from keras import layers, ops

from dked_tf.layers.blocks import CSA, PACKAGE, ConvBNAct, conv_initializer
from dked_tf.ops.head_contract import HEAD_BOX_CHANNELS, OBJECTNESS_CHANNEL


def _prior_bias(prior_prob):
    return -math.log((1.0 - prior_prob) / prior_prob)


def _final_conv(filters, name, bias):
    return layers.Conv2D(
        filters,
        1,
        use_bias=True,
        kernel_initializer=conv_initializer(),
        bias_initializer=keras.initializers.Constant(bias),
        name=name,
    )


class _DetectionHead(layers.Layer):
    """Shared output contract of the heads: float32 `[B, H, W, 10 + nC]` (`self.num_classes`)."""

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[:-1]) + (HEAD_BOX_CHANNELS + self.num_classes,)

    def compute_output_spec(self, x, training=None):
        return keras.KerasTensor(self.compute_output_shape(x.shape), dtype="float32")


@keras.saving.register_keras_serializable(package=PACKAGE)
class GGHLHead(_DetectionHead):
    """GGHL decoupled head for one level: `[B,H,W,C] -> float32 [B,H,W,10+nC]`.

    loc branch: Conv3x3(C -> 2C)+BN+Leaky, plain 1x1 conv (bias) -> 10 channels;
    cls branch: the same structure -> nC channels; output concat[loc, cls].
    `prior_prob`: the objectness and class biases start at logit(prior_prob) (set None for
    the reference's zero bias); a small prior keeps early training from flooding the
    focal objectness loss.
    """

    def __init__(self, num_classes, hidden_channels=None, prior_prob=0.01, **kwargs):
        super().__init__(**kwargs)
        self.num_classes = int(num_classes)
        self.hidden_channels = None if hidden_channels is None else int(hidden_channels)
        self.prior_prob = prior_prob

    def build(self, input_shape):
        hidden = self.hidden_channels or 2 * int(input_shape[-1])
        bias = 0.0 if self.prior_prob is None else _prior_bias(self.prior_prob)
        self.loc_conv = ConvBNAct(hidden, 3, name="loc_conv")
        self.cls_conv = ConvBNAct(hidden, 3, name="cls_conv")
        self.loc_out = _final_conv(HEAD_BOX_CHANNELS, "loc_out", 0.0)
        self.cls_out = _final_conv(self.num_classes, "cls_out", bias)
        self.loc_conv.build(input_shape)
        self.cls_conv.build(input_shape)
        hidden_shape = tuple(input_shape[:-1]) + (hidden,)
        self.loc_out.build(hidden_shape)
        self.cls_out.build(hidden_shape)
        if self.prior_prob is not None:  # objectness bias only (OBJECTNESS_CHANNEL)
            self.loc_out.bias.assign(_objectness_bias_vector(bias))

    def call(self, x, training=None):
        loc = self.loc_out(self.loc_conv(x, training=training))
        cls = self.cls_out(self.cls_conv(x, training=training))
        return ops.cast(ops.concatenate([loc, cls], axis=-1), "float32")

    def get_config(self):
        config = super().get_config()
        config.update(num_classes=self.num_classes, hidden_channels=self.hidden_channels, prior_prob=self.prior_prob)
        return config


def _objectness_bias_vector(bias):
    vec = [0.0] * HEAD_BOX_CHANNELS
    vec[OBJECTNESS_CHANNEL] = bias
    return vec


@keras.saving.register_keras_serializable(package=PACKAGE)
class LoDetHead(_DetectionHead):
    """LO-Det / LODet_GGHL output head for one level: CSA(P) then a plain 1x1 conv (bias)
    to 10 + nC channels (not decoupled). `[B,H,W,C] -> float32 [B,H,W,10+nC]`."""

    def __init__(self, num_classes, groups=4, prior_prob=0.01, **kwargs):
        super().__init__(**kwargs)
        self.num_classes = int(num_classes)
        self.groups = int(groups)
        self.prior_prob = prior_prob

    def build(self, input_shape):
        bias = 0.0 if self.prior_prob is None else _prior_bias(self.prior_prob)
        self.csa = CSA(self.groups, name="csa")
        self.csa.build(input_shape)
        self.out = _final_conv(HEAD_BOX_CHANNELS + self.num_classes, "out", 0.0)
        self.out.build(input_shape)
        if self.prior_prob is not None:
            self.out.bias.assign(_objectness_bias_vector(bias) + [bias] * self.num_classes)

    def call(self, x, training=None):
        return ops.cast(self.out(self.csa(x, training=training)), "float32")

    def get_config(self):
        config = super().get_config()
        config.update(num_classes=self.num_classes, groups=self.groups, prior_prob=self.prior_prob)
        return config


HEADS = {"gghl": GGHLHead, "lodet": LoDetHead}
