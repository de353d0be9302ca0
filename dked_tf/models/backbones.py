"""Backbones: Darknet53 (GGHL teacher) and MobileNetV2 (LO-Det student).

Each builder returns a functional `keras.Model` mapping images `[B, H, W, 3]` to the list
`[C3, C4, C5]` at strides 8, 16, 32. Input size is left dynamic (`(None, None, 3)`).
"""

import os

import keras
import numpy as np
from keras import layers

from dked_tf.files import replacing
from dked_tf.layers.blocks import BN_MOMENTUM, ConvBNAct

DARKNET_STAGE_CHANNELS = (64, 128, 256, 512, 1024)
DARKNET_STAGE_DEPTHS = (1, 2, 8, 8, 4)


def scaled_channels(channels, width, divisor=8, minimum=8):
    """Width-multiplied channel count rounded to a multiple of `divisor` (>= minimum)."""
    value = max(minimum, int(channels * width + divisor / 2) // divisor * divisor)
    if value < 0.9 * channels * width:
        value += divisor
    return int(value)


def darknet_conv_layers(model):
    """The ConvBNAct layers of a Darknet53 model in Darknet file order (= creation order)."""
    convs = [layer for layer in model.layers if isinstance(layer, ConvBNAct)]
    return sorted(convs, key=lambda layer: int(layer.name.rsplit("_", 1)[-1]))


def build_darknet53(
    width=1.0,
    depths=DARKNET_STAGE_DEPTHS,
    stem_channels=32,
    activation="leaky",
    input_shape=(None, None, 3),
    name="darknet53",
):
    """Darknet53 (YOLOv3): stem conv3x3(32), then five stride-2 stages of
    64/128/256/512/1024 channels (x `width`) with `depths` residual blocks each
    (1x1 to C/2, 3x3 back to C, identity add). Outputs `[C3, C4, C5]` (256/512/1024 x width
    channels at strides 8/16/32). Convs are named `conv_000`, `conv_001`, ... in Darknet
    order, which `load_darknet_weights` relies on."""
    if len(depths) != 5:
        raise ValueError(f"backbones.py: Darknet53 needs 5 stage depths, got {depths}")
    counter = [0]

    def conv(x, filters, kernel, strides=1):
        layer = ConvBNAct(filters, kernel, strides=strides, activation=activation, name=f"conv_{counter[0]:03d}")
        counter[0] += 1
        return layer(x)

    images = keras.Input(input_shape, name="images")
    x = conv(images, scaled_channels(stem_channels, width), 3)
    taps = []
    for stage, (channels, depth) in enumerate(zip(DARKNET_STAGE_CHANNELS, depths)):
        channels = scaled_channels(channels, width)
        x = conv(x, channels, 3, strides=2)
        for block in range(depth):
            shortcut = x
            y = conv(x, channels // 2, 1)
            y = conv(y, channels, 3)
            x = layers.Add(name=f"stage{stage + 1}_res{block}")([shortcut, y])
        if stage >= 2:
            taps.append(x)
    return keras.Model(images, taps, name=name)


def load_darknet_weights(model, path, max_convs=None, verbose=1):
    """Loads a Darknet `.weights` file (e.g. `darknet53_448.weights`) into a Darknet53 model.

    File layout: int32 major, minor, revision; `seen` as int64 when major*10+minor >= 2 (else
    int32); then, per conv layer in network order, float32 BN beta, gamma, running mean,
    running var [out] each, then the kernel [out, in, kh, kw] (a conv without BN stores its
    bias [out] instead of the four BN vectors). Loads the first `max_convs` convs (all of the
    model's convs by default, 52 for the full Darknet53); extra data in the file (e.g. the
    classifier) is ignored. Returns the number of convs loaded.
    """
    if not os.path.exists(path):
        raise FileNotFoundError(f"backbones.py: Darknet weights file not found: {path}")
    with open(path, "rb") as f:
        major, minor, revision = np.fromfile(f, dtype=np.int32, count=3)
        seen_dtype = np.int64 if major * 10 + minor >= 2 else np.int32
        np.fromfile(f, dtype=seen_dtype, count=1)
        data = np.fromfile(f, dtype=np.float32)
    convs = darknet_conv_layers(model)
    if max_convs is not None:
        convs = convs[:max_convs]
    offset = 0

    def take(count, what, layer):
        nonlocal offset
        if offset + count > data.size:
            raise ValueError(
                f"backbones.py: {path} ends early while reading {what} of "
                f"{layer.name} (needs {count} floats at {offset}, file has "
                f"{data.size})"
            )
        out = data[offset : offset + count]
        offset += count
        return out

    for layer in convs:
        kernel_var = layer.conv.kernel
        kh, kw, cin, cout = kernel_var.shape
        if layer.bn is not None:
            beta = take(cout, "BN beta", layer)
            gamma = take(cout, "BN gamma", layer)
            mean = take(cout, "BN mean", layer)
            var = take(cout, "BN variance", layer)
            layer.bn.set_weights([gamma, beta, mean, var])
            kernel = take(cout * cin * kh * kw, "kernel", layer)
            layer.conv.kernel.assign(kernel.reshape(cout, cin, kh, kw).transpose(2, 3, 1, 0))
        else:
            bias = take(cout, "bias", layer)
            kernel = take(cout * cin * kh * kw, "kernel", layer)
            layer.conv.set_weights([kernel.reshape(cout, cin, kh, kw).transpose(2, 3, 1, 0), bias])
    if verbose:
        print(
            f"loaded {len(convs)} Darknet convs from {path} (version {major}.{minor}."
            f"{revision}; {data.size - offset} floats left unused)"
        )
    return len(convs)


def save_darknet_weights(model, path, major=0, minor=2, revision=0, seen=0):
    """Writes the model's Darknet convs in Darknet `.weights` layout (inverse of the loader)."""
    with replacing(path) as temporary, open(temporary, "wb") as f:
        np.array([major, minor, revision], np.int32).tofile(f)
        np.array([seen], np.int64 if major * 10 + minor >= 2 else np.int32).tofile(f)
        for layer in darknet_conv_layers(model):
            kernel = keras.ops.convert_to_numpy(layer.conv.kernel)
            if layer.bn is not None:
                gamma, beta, mean, var = layer.bn.get_weights()
                for vec in (beta, gamma, mean, var):
                    vec.astype(np.float32).tofile(f)
            else:
                keras.ops.convert_to_numpy(layer.conv.bias).astype(np.float32).tofile(f)
            kernel.transpose(3, 2, 0, 1).astype(np.float32).tofile(f)


MOBILENETV2_TAPS = ("block_5_add", "block_12_add", "out_relu")
IMAGENET_ALPHAS = (0.35, 0.5, 0.75, 1.0, 1.3, 1.4)


def build_mobilenetv2(
    alpha=1.0, weights=None, input_shape=(None, None, 3), name="mobilenetv2", bn_momentum=BN_MOMENTUM
):
    """MobileNetV2 (keras.applications) with taps after block 6 (32*alpha ch, stride 8),
    block 13 (96*alpha ch, stride 16) and the final 1x1 conv (1280 ch, stride 32), i.e. the
    PyTorch `features[6]`, `features[13]`, `conv` of LO-Det (Keras `block_5_add`,
    `block_12_add`, `out_relu`).

    `weights`: None (random), "imagenet" (Keras download; needs alpha in
    {0.35, 0.5, 0.75, 1.0, 1.3, 1.4} and network access) or a path to a Keras weights file of
    the same MobileNetV2 without top.
    Input: images in [0, 1]; rescaled to [-1, 1] inside (what the ImageNet weights expect).
    `bn_momentum`: momentum of every BatchNormalization (Keras' default there is 0.999).
    """
    if weights not in (None, "imagenet") and not os.path.exists(str(weights)):
        raise FileNotFoundError(f"backbones.py: MobileNetV2 weights file not found: {weights}")
    if weights == "imagenet" and alpha not in IMAGENET_ALPHAS:
        raise ValueError(
            f"backbones.py: ImageNet MobileNetV2 weights exist only for alpha in {IMAGENET_ALPHAS}, got {alpha}"
        )
    images = keras.Input(input_shape, name="images")
    scaled = layers.Rescaling(2.0, offset=-1.0, name="to_minus1_1")(images)
    base = keras.applications.MobileNetV2(
        input_shape=tuple(input_shape),
        alpha=alpha,
        include_top=False,
        weights="imagenet" if weights == "imagenet" else None,
    )
    if weights not in (None, "imagenet"):
        base.load_weights(weights)
    for layer in base.layers:
        # Keras' MobileNetV2 uses BN momentum 0.999: its moving statistics then lag far
        # behind a short training run and inference outputs collapse. PyTorch's 0.1 = 0.9 here.
        if isinstance(layer, layers.BatchNormalization):
            layer.momentum = bn_momentum
    tapped = keras.Model(base.inputs, [base.get_layer(n).output for n in MOBILENETV2_TAPS], name=f"{name}_base")
    return keras.Model(images, tapped(scaled), name=name)
