"""Building blocks of the GGHL teacher and the LO-Det student, as serializable Keras layers.

Every layer here lowers to TFLite builtin ops (CONV_2D, DEPTHWISE_CONV_2D, MAX_POOL_2D,
CONCATENATION, RESHAPE, TRANSPOSE, MEAN, FULLY_CONNECTED, LOGISTIC, MUL, ADD, ...):
dynamic kernels are written as "convolution with the constant kernel, then a per-sample
scale", and DropBlock is an identity at inference.

Shapes: feature maps are NHWC, `[B, H, W, C]`.
"""

import keras
from keras import layers, ops

PACKAGE = "dked_tf"
BN_MOMENTUM = 0.9  # PyTorch momentum 0.1 (the reference) is Keras momentum 0.9
BN_EPSILON = 1e-5
ACTIVATIONS = ("leaky", "relu6", "linear")


def conv_initializer(stddev=0.01, seed=None):
    """N(0, stddev) as in the reference repositories."""
    return keras.initializers.RandomNormal(stddev=stddev, seed=seed)


def _activation(name):
    if name == "leaky":
        return layers.LeakyReLU(negative_slope=0.1)
    if name == "relu6":
        return layers.ReLU(max_value=6.0)
    if name == "linear":
        return layers.Activation("linear")
    raise ValueError(f"blocks.py: unknown activation {name!r}; expected one of {ACTIVATIONS}")


@keras.saving.register_keras_serializable(package=PACKAGE)
class ConvBNAct(layers.Layer):
    """Conv (no bias) -> BatchNorm -> activation ("Convolutional" of Darknet).

    `[B, H, W, Cin] -> [B, H/strides, W/strides, filters]`. `activation`: "leaky"
    (LeakyReLU 0.1, default), "relu6" or "linear". `depthwise=True` makes a depthwise conv
    (then `filters` must equal the input channels). Strided convs pad like Darknet
    (symmetric pad k//2, then "valid"), so the output size is ceil(H / stride).
    """

    def __init__(
        self,
        filters,
        kernel_size=3,
        strides=1,
        dilation_rate=1,
        activation="leaky",
        depthwise=False,
        use_bn=True,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if activation not in ACTIVATIONS:
            raise ValueError(f"blocks.py: ConvBNAct activation {activation!r} not in {ACTIVATIONS}")
        self.filters = int(filters)
        self.kernel_size = int(kernel_size)
        self.strides = int(strides)
        self.dilation_rate = int(dilation_rate)
        self.activation = activation
        self.depthwise = bool(depthwise)
        self.use_bn = bool(use_bn)
        pad = (self.kernel_size // 2) * self.dilation_rate
        self.pad = layers.ZeroPadding2D(pad) if (self.strides > 1 and pad > 0) else None
        padding = "valid" if self.pad is not None else "same"
        if self.depthwise:
            self.conv = layers.DepthwiseConv2D(
                self.kernel_size,
                strides=self.strides,
                padding=padding,
                dilation_rate=self.dilation_rate,
                use_bias=not self.use_bn,
                depthwise_initializer=conv_initializer(),
                name="dwconv",
            )
        else:
            self.conv = layers.Conv2D(
                self.filters,
                self.kernel_size,
                strides=self.strides,
                padding=padding,
                dilation_rate=self.dilation_rate,
                use_bias=not self.use_bn,
                kernel_initializer=conv_initializer(),
                name="conv",
            )
        self.bn = (
            layers.BatchNormalization(momentum=BN_MOMENTUM, epsilon=BN_EPSILON, name="bn") if self.use_bn else None
        )
        self.act = _activation(self.activation)

    def build(self, input_shape):
        shape = tuple(input_shape)
        if self.depthwise and shape[-1] is not None and shape[-1] != self.filters:
            raise ValueError(
                f"blocks.py: depthwise ConvBNAct needs filters == input channels, "
                f"got filters={self.filters}, input {shape}"
            )
        if self.pad is not None:
            self.pad.build(shape)
            shape = self.pad.compute_output_shape(shape)
        self.conv.build(shape)
        shape = self.conv.compute_output_shape(shape)
        if self.bn is not None:
            self.bn.build(shape)

    def call(self, x, training=None):
        if self.pad is not None:
            x = self.pad(x)
        x = self.conv(x)
        if self.bn is not None:
            x = self.bn(x, training=training)
        return self.act(x)

    def compute_output_shape(self, input_shape):
        b, h, w, _ = input_shape
        s = self.strides

        def size(n):
            return None if n is None else -(-n // s)

        return (b, size(h), size(w), self.filters)

    def get_config(self):
        config = super().get_config()
        config.update(
            filters=self.filters,
            kernel_size=self.kernel_size,
            strides=self.strides,
            dilation_rate=self.dilation_rate,
            activation=self.activation,
            depthwise=self.depthwise,
            use_bn=self.use_bn,
        )
        return config


@keras.saving.register_keras_serializable(package=PACKAGE)
class SPP(layers.Layer):
    """Spatial pyramid pooling: concat[x, maxpool5(x), maxpool9(x), maxpool13(x)].

    Stride-1 "same" max-pools. `[B, H, W, C] -> [B, H, W, 4C]` (pass-through first, then the
    pool sizes in order). The 1x1 fusion conv that follows is not part of this layer.
    """

    def __init__(self, pool_sizes=(5, 9, 13), **kwargs):
        super().__init__(**kwargs)
        self.pool_sizes = tuple(int(p) for p in pool_sizes)
        self.pools = [layers.MaxPooling2D(p, strides=1, padding="same") for p in self.pool_sizes]

    def call(self, x):
        return ops.concatenate([x] + [pool(x) for pool in self.pools], axis=-1)

    def compute_output_shape(self, input_shape):
        c = input_shape[-1]
        return tuple(input_shape[:-1]) + (None if c is None else c * (1 + len(self.pool_sizes)),)

    def get_config(self):
        config = super().get_config()
        config.update(pool_sizes=list(self.pool_sizes))
        return config


@keras.saving.register_keras_serializable(package=PACKAGE)
class DropBlock(layers.Layer):
    """DropBlock (Ghiasi et al. 2018): drops `block_size`-square regions shared across channels.

    Training: seeds are Bernoulli(gamma) with gamma = p / block^2 (the reference's rate),
    grown to blocks by a stride-1 max-pool, and the kept activations are rescaled by
    numel / kept. Inference (`training` false/None): identity, so exported graphs contain
    no random op. `[B, H, W, C] -> [B, H, W, C]`.
    """

    def __init__(self, block_size=3, drop_prob=0.1, seed=None, **kwargs):
        super().__init__(**kwargs)
        self.block_size = int(block_size)
        self.drop_prob = float(drop_prob)
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)
        self.grow = layers.MaxPooling2D(self.block_size, strides=1, padding="same")

    def call(self, x, training=None):
        if not training or self.drop_prob <= 0.0:
            return x
        gamma = self.drop_prob / float(self.block_size**2)
        shape = ops.shape(x)
        noise = keras.random.uniform((shape[0], shape[1], shape[2], 1), seed=self.seed_generator)
        seeds = ops.cast(noise < gamma, x.dtype)
        keep = 1.0 - self.grow(seeds)
        total = ops.cast(ops.size(keep), x.dtype)
        kept = ops.maximum(ops.sum(keep), 1.0)
        return x * keep * (total / kept)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config.update(block_size=self.block_size, drop_prob=self.drop_prob, seed=self.seed)
        return config


def channel_shuffle(x, groups):
    """ShuffleNet channel shuffle: `[B,H,W,C]` viewed as `[B,H,W,g,C/g]`, swap the last two
    axes, flatten back. Lowers to RESHAPE + TRANSPOSE + RESHAPE."""
    channels = x.shape[-1]
    if channels is None or channels % groups:
        raise ValueError(f"blocks.py: channel_shuffle needs channels ({channels}) divisible by groups ({groups})")
    shape = ops.shape(x)
    x = ops.reshape(x, (-1, shape[1], shape[2], groups, channels // groups))
    x = ops.transpose(x, (0, 1, 2, 4, 3))
    return ops.reshape(x, (-1, shape[1], shape[2], channels))


class _SeparableBranch(layers.Layer):
    """depthwise 3x3 + BN (no activation) -> pointwise 1x1 + BN + LeakyReLU(0.1)."""

    def __init__(self, filters, strides=1, **kwargs):
        super().__init__(**kwargs)
        self.filters = int(filters)
        self.strides = int(strides)

    def build(self, input_shape):
        channels = input_shape[-1]
        self.dw = ConvBNAct(channels, 3, strides=self.strides, depthwise=True, activation="linear", name="dw")
        self.pw = ConvBNAct(self.filters, 1, activation="leaky", name="pw")
        self.dw.build(input_shape)
        self.pw.build(self.dw.compute_output_shape(input_shape))

    def call(self, x, training=None):
        return self.pw(self.dw(x, training=training), training=training)

    def compute_output_shape(self, input_shape):
        return self.pw.compute_output_shape(self.dw.compute_output_shape(input_shape))


@keras.saving.register_keras_serializable(package=PACKAGE)
class SeparableConvBlock(layers.Layer):
    """Depthwise-separable conv (dw kxk + BN, then pw 1x1 + BN + LeakyReLU).

    Replaces LO-Det's stride-2 modulated deformable conv (not TFLite-exportable): a documented
    deviation. `[B, H, W, Cin] -> [B, ceil(H/s), ceil(W/s), filters]`.
    """

    def __init__(self, filters, strides=2, **kwargs):
        super().__init__(**kwargs)
        self.filters = int(filters)
        self.strides = int(strides)
        self.branch = _SeparableBranch(self.filters, self.strides, name="branch")

    def build(self, input_shape):
        self.branch.build(input_shape)

    def call(self, x, training=None):
        return self.branch(x, training=training)

    def compute_output_shape(self, input_shape):
        return self.branch.compute_output_shape(input_shape)

    def get_config(self):
        config = super().get_config()
        config.update(filters=self.filters, strides=self.strides)
        return config


@keras.saving.register_keras_serializable(package=PACKAGE)
class CSA(layers.Layer):
    """Channel separation-aggregation unit (ShuffleNetV2-like), channels preserved.

    Split channels in halves (left, right); right -> dw3x3+BN -> pw1x1+BN+Leaky;
    output = channel_shuffle(concat[left, right], groups). `[B,H,W,C] -> [B,H,W,C]`.
    """

    def __init__(self, groups=4, **kwargs):
        super().__init__(**kwargs)
        self.groups = int(groups)

    def build(self, input_shape):
        channels = input_shape[-1]
        if channels % 2 or channels % self.groups:
            raise ValueError(f"blocks.py: CSA needs even channels divisible by groups={self.groups}, got {channels}")
        self.half = channels // 2
        half_shape = tuple(input_shape[:-1]) + (self.half,)
        self.branch = _SeparableBranch(self.half, name="branch")
        self.branch.build(half_shape)

    def call(self, x, training=None):
        left = x[..., : self.half]
        right = self.branch(x[..., self.half :], training=training)
        return channel_shuffle(ops.concatenate([left, right], axis=-1), self.groups)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config.update(groups=self.groups)
        return config


@keras.saving.register_keras_serializable(package=PACKAGE)
class CSAPart(layers.Layer):
    """CSA_part: aggregation that doubles the channels.

    branch = dw3x3+BN -> pw1x1(C)+BN+Leaky on the whole input;
    output = channel_shuffle(concat[x, branch], groups). `[B,H,W,C] -> [B,H,W,2C]`.
    """

    def __init__(self, groups=4, **kwargs):
        super().__init__(**kwargs)
        self.groups = int(groups)

    def build(self, input_shape):
        channels = input_shape[-1]
        if (2 * channels) % self.groups:
            raise ValueError(f"blocks.py: CSA_part needs 2*channels divisible by groups={self.groups}, got {channels}")
        self.branch = _SeparableBranch(channels, name="branch")
        self.branch.build(input_shape)

    def call(self, x, training=None):
        branch = self.branch(x, training=training)
        return channel_shuffle(ops.concatenate([x, branch], axis=-1), self.groups)

    def compute_output_shape(self, input_shape):
        c = input_shape[-1]
        return tuple(input_shape[:-1]) + (None if c is None else 2 * c,)

    def get_config(self):
        config = super().get_config()
        config.update(groups=self.groups)
        return config


CSA_part = CSAPart


class _DynamicDilatedBranch(layers.Layer):
    """CondConv (one expert) depthwise 3x3 with dilation, BN, then pw1x1+BN+Leaky.

    The per-sample kernel alpha(x)*W (and bias alpha(x)*b), alpha = sigmoid(FC(GAP(x))), is
    computed as alpha(x) * (dwconv(x, W) + b): conv with the constant kernel, then the
    per-sample scale (linear in the kernel, so identical, and TFLite-builtin).
    """

    def __init__(self, filters, dilation_rate, **kwargs):
        super().__init__(**kwargs)
        self.filters = int(filters)
        self.dilation_rate = int(dilation_rate)

    def build(self, input_shape):
        channels = input_shape[-1]
        self.routing = layers.Dense(1, kernel_initializer=conv_initializer(), name="routing")
        self.routing.build((None, channels))
        self.dw = layers.DepthwiseConv2D(
            3, padding="same", dilation_rate=self.dilation_rate, depthwise_initializer=conv_initializer(), name="dw"
        )
        self.dw.build(input_shape)
        self.bn = layers.BatchNormalization(momentum=BN_MOMENTUM, epsilon=BN_EPSILON, name="bn")
        self.bn.build(input_shape)
        self.pw = ConvBNAct(self.filters, 1, activation="leaky", name="pw")
        self.pw.build(input_shape)

    def call(self, x, training=None):
        pooled = ops.mean(x, axis=(1, 2))  # [B, C]
        alpha = ops.sigmoid(self.routing(pooled))  # [B, 1]
        y = self.dw(x) * alpha[:, None, None, :]  # [B, H, W, C]
        y = self.bn(y, training=training)
        return self.pw(y, training=training)


@keras.saving.register_keras_serializable(package=PACKAGE)
class DRF(layers.Layer):
    """Dynamic receptive field block, `[B,H,W,C] -> [B,H,W,filters]` (filters = C/2 in LO-Det).

    Split x into halves A, B; each through a dynamic dilated depthwise 3x3 (dilations
    `dilations[0]` and `dilations[1]`), BN, pw1x1+BN+Leaky; output = branch(A) + branch(B).
    """

    def __init__(self, filters=None, dilations=(2, 3), **kwargs):
        super().__init__(**kwargs)
        self.filters = None if filters is None else int(filters)
        self.dilations = tuple(int(d) for d in dilations)

    def build(self, input_shape):
        channels = input_shape[-1]
        if channels % 2:
            raise ValueError(f"blocks.py: DRF needs an even number of channels, got {channels}")
        self.half = channels // 2
        out = self.filters or self.half
        half_shape = tuple(input_shape[:-1]) + (self.half,)
        self.branch_a = _DynamicDilatedBranch(out, self.dilations[0], name="branch_a")
        self.branch_b = _DynamicDilatedBranch(out, self.dilations[1], name="branch_b")
        self.branch_a.build(half_shape)
        self.branch_b.build(half_shape)

    def call(self, x, training=None):
        a = self.branch_a(x[..., : self.half], training=training)
        b = self.branch_b(x[..., self.half :], training=training)
        return a + b

    def compute_output_shape(self, input_shape):
        c = input_shape[-1]
        out = self.filters or (None if c is None else c // 2)
        return tuple(input_shape[:-1]) + (out,)

    def get_config(self):
        config = super().get_config()
        config.update(filters=self.filters, dilations=list(self.dilations))
        return config
