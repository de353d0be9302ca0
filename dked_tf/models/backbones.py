"""Backbones: Darknet53 (GGHL teacher) and MobileNetV2 (LO-Det student), and their pretrained
weights.

Each builder returns a functional `keras.Model` mapping images `[B, H, W, 3]` (float32 in
[0, 1], RGB) to the list `[C3, C4, C5]` at strides 8, 16, 32. Input size is left dynamic
(`(None, None, 3)`).

Pretrained weights (`load_backbone_weights`, what `model.teacher_backbone_weights` /
`model.student_backbone_weights` of the config select):

- "imagenet": darknet53 takes `darknet53_448.weights` (GGHL's start), mobilenetv2 Keras' ImageNet
  file (keras.applications);
- a Darknet file (`*.weights`, `*.conv.N`): darknet53 only (`load_darknet_weights`);
- a Keras file (`*.weights.h5`, `*.h5`): for darknet53 what `backbone.save_weights(...)` wrote, for
  mobilenetv2 weights of a keras.applications MobileNetV2 without top (same alpha).

"imagenet" files live in the Keras cache (`$KERAS_HOME/models`, default `~/.keras/models`) and
are downloaded there on first use; without network the error names the file and the folder.
"""

import os

import keras
import numpy as np
from keras import layers

from dked_tf.config import ConfigError
from dked_tf.files import CorruptFileError, replacing
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
    weights=None,
    min_stride=8,
):
    """Darknet53 (YOLOv3): stem conv3x3(32), then five stride-2 stages of
    64/128/256/512/1024 channels (x `width`) with `depths` residual blocks each
    (1x1 to C/2, 3x3 back to C, identity add). Outputs `[C3, C4, C5]` (256/512/1024 x width
    channels at strides 8/16/32). Convs are named `conv_000`, `conv_001`, ... in Darknet
    order, which `load_darknet_weights` relies on.
    `weights`: None (random) or what `load_backbone_weights` accepts for darknet53.
    `min_stride`: 8 (the above) or 4: outputs the stages at strides 4/8/16 (128/256/512 x width
    channels) and builds no stride-32 stage."""
    if len(depths) != 5:
        raise ValueError(f"backbones.py: Darknet53 needs 5 stage depths, got {depths}")
    first_tap = check_min_stride(min_stride).bit_length() - 2  # the stage whose output has stride min_stride
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
        if stage >= first_tap:
            taps.append(x)
        if len(taps) == 3:
            break
    model = keras.Model(images, taps, name=name)
    if weights:
        load_darknet53_weights(model, weights, verbose=0)
    return model


def load_darknet_weights(model, path, max_convs=None, verbose=1):
    """Loads a Darknet `.weights` file (e.g. `darknet53_448.weights`) into a Darknet53 model.

    File layout (Darknet's `load_weights_upto`): int32 major, minor, revision; `seen` as int64
    when major*10+minor >= 2 and both are below 1000 (else int32); then, per conv layer in
    network order, float32 BN beta, gamma, running mean, running var [out] each, then the
    kernel [out, in, kh, kw] (a conv without BN stores its bias [out] instead of the four BN
    vectors). Loads the first `max_convs` convs (all of the
    model's convs by default, 52 for the full Darknet53); extra data in the file (e.g. the
    classifier) is ignored. Returns the number of convs loaded.
    """
    if not os.path.isfile(path):
        raise FileNotFoundError(f"Darknet weights file not found: {path}")
    with open(path, "rb") as f:
        header = np.fromfile(f, dtype=np.int32, count=3)
        if header.size < 3:
            raise CorruptFileError(f"{path} is not a Darknet weights file ({os.path.getsize(path)} bytes, no header)")
        major, minor, revision = (int(v) for v in header)
        seen_dtype = np.int64 if major * 10 + minor >= 2 and major < 1000 and minor < 1000 else np.int32
        np.fromfile(f, dtype=seen_dtype, count=1)
        data = np.fromfile(f, dtype=np.float32)
    convs = darknet_conv_layers(model)
    if max_convs is not None:
        convs = convs[:max_convs]
    offset = 0

    def take(count, what, layer):
        nonlocal offset
        if offset + count > data.size:
            raise CorruptFileError(
                f"{path} ends early while reading {what} of "
                f"{layer.name} (needs {count} floats at {offset}, file has "
                f"{data.size}): a Darknet file of a smaller network, or truncated"
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
# Taps at strides 4 / 8 / 16 (min_stride 4): after blocks 3, 6 and 13 (24, 32, 96 x alpha ch).
MOBILENETV2_TAPS_STRIDE4 = ("block_2_add", "block_5_add", "block_12_add")
MIN_STRIDES = (4, 8)


def check_min_stride(min_stride):
    """The stride of the finest of the three output levels: 8 (strides 8/16/32) or 4 (4/8/16)."""
    if int(min_stride) not in MIN_STRIDES:
        raise ValueError(f"backbones.py: min_stride must be one of {MIN_STRIDES}, got {min_stride}")
    return int(min_stride)


def level_strides(min_stride):
    """The strides (pixels) of the three output levels: (min_stride, 2 min_stride, 4 min_stride)."""
    stride = check_min_stride(min_stride)
    return (stride, 2 * stride, 4 * stride)


IMAGENET_ALPHAS = (0.35, 0.5, 0.75, 1.0, 1.3, 1.4)
# What keras.applications.MobileNetV2(include_top=False, weights="imagenet") fetches (Keras 3.15:
# keras/src/applications/mobilenet_v2.py; rows = 224 for a dynamic input size).
MOBILENETV2_IMAGENET_URL = "https://storage.googleapis.com/tensorflow/keras-applications/mobilenet_v2/"
# GGHL's ImageNet Darknet53 (darknet53_448.cfg: the 52 backbone convs, then the classifier).
DARKNET53_IMAGENET_FILE = "darknet53_448.weights"
DARKNET53_IMAGENET_URL = "https://pjreddie.com/media/files/darknet53_448.weights"
DARKNET53_CONVS = 52


def mobilenetv2_imagenet_file(alpha):
    """File name of Keras' ImageNet MobileNetV2 weights without top, e.g.
    `mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_224_no_top.h5`."""
    return f"mobilenet_v2_weights_tf_dim_ordering_tf_kernels_{float(alpha)}_224_no_top.h5"


def keras_cache_dir():
    """The folder where `keras.utils.get_file(..., cache_subdir="models")` keeps downloads:
    `$KERAS_HOME/models`, else `~/.keras/models` (Keras reads KERAS_HOME when it is imported)."""
    home = os.environ.get("KERAS_HOME") or os.path.join(os.path.expanduser("~"), ".keras")
    return os.path.join(home, "models")


def _not_available(what, file_name, url, key, reason):
    """FileNotFoundError (one line) naming the file to put into the Keras cache, and where."""
    reason = " ".join(str(reason).split()).rsplit(" -- ", 1)[-1][:200]  # Keras: "URL fetch failure on ... -- why"
    return FileNotFoundError(
        f"{key}=imagenet: {what} are neither in the Keras cache nor downloadable ({reason}): "
        f"put {file_name} (from {url}) at {os.path.join(keras_cache_dir(), file_name)}, "
        f"or set {key} to a local weights file, or to '' to train from scratch"
    )


def _require_file(path, what):
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{what} not found: {path}")


def _inner_model(backbone):
    """The keras.applications MobileNetV2 graph inside a `build_mobilenetv2` backbone."""
    for layer in backbone.layers:
        if isinstance(layer, keras.Model):
            return layer
    raise ValueError(f"backbones.py: {backbone.name} holds no MobileNetV2 model (not built by build_mobilenetv2)")


def _reference_args(alpha):
    """keras.applications.MobileNetV2 arguments of a copy to load weights into (224 px: the size
    of Keras' files, so no warning; weights do not depend on the input size)."""
    return dict(input_shape=(224, 224, 3), alpha=alpha, include_top=False)


def load_mobilenetv2_weights(backbone, alpha, weights, key="weights", verbose=1):
    """Copies pretrained weights into a `build_mobilenetv2(alpha)` backbone, layer by layer (by
    keras.applications' layer names; the BN momentum set by the builder is kept).

    weights: "imagenet" (Keras' file, from the Keras cache or downloaded into it; alpha in
    IMAGENET_ALPHAS) or a path to weights of a keras.applications MobileNetV2 without top of
    the same alpha (`.weights.h5` or the legacy `.h5`, e.g. a copy of Keras' ImageNet file).
    key: the config key named in error messages. Returns the number of layers set.
    Raises ConfigError (alpha without ImageNet weights), FileNotFoundError (missing file or no
    download; the message says which file to put where), CorruptFileError (unreadable or of
    another network).
    """
    alpha = float(alpha)
    if weights == "imagenet":
        if alpha not in IMAGENET_ALPHAS:
            raise ConfigError(
                f"{key}=imagenet: ImageNet MobileNetV2 weights exist only for alpha in {IMAGENET_ALPHAS}, "
                f"this backbone has alpha {alpha}"
            )
        file_name = mobilenetv2_imagenet_file(alpha)
        cached = os.path.join(keras_cache_dir(), file_name)
        try:
            reference = keras.applications.MobileNetV2(**_reference_args(alpha), weights="imagenet")
        except Exception as error:  # noqa: BLE001 - get_file raises a bare Exception when offline
            if os.path.isfile(cached):
                raise CorruptFileError(
                    f"{cached} cannot be read as MobileNetV2 weights ({' '.join(str(error).split())[:200]}): "
                    "delete it (Keras downloads it again) or replace it"
                ) from None
            url = MOBILENETV2_IMAGENET_URL + file_name
            raise _not_available(f"MobileNetV2 ImageNet weights (alpha {alpha})", file_name, url, key, error) from None
        source = cached if os.path.isfile(cached) else f"Keras' ImageNet file {file_name}"
    else:
        path = os.path.expanduser(str(weights))
        _require_file(path, f"{key}: MobileNetV2 weights file")
        reference = keras.applications.MobileNetV2(**_reference_args(alpha), weights=None)
        try:
            reference.load_weights(path)
        except Exception as error:  # noqa: BLE001 - h5py and Keras raise several kinds
            raise CorruptFileError(
                f"{path} cannot be read as weights of a keras.applications MobileNetV2 (alpha {alpha}, no top): "
                f"{' '.join(str(error).split())[:200]}"
            ) from None
        source = path
    target = _inner_model(backbone)
    present = {layer.name for layer in target.layers}
    count = 0
    for layer in reference.layers:
        values = layer.get_weights()
        if not values or layer.name not in present:  # absent: past the last tap (min_stride 4)
            continue
        try:
            target.get_layer(layer.name).set_weights(values)
        except ValueError as error:
            raise CorruptFileError(
                f"{source} does not fit this MobileNetV2 (layer {layer.name}: {' '.join(str(error).split())[:160]})"
            ) from None
        count += 1
    if verbose:
        print(f"loaded MobileNetV2 (alpha {alpha}) weights into {count} layers from {source}", flush=True)
    return count


def load_darknet53_weights(backbone, weights, key="weights", verbose=1):
    """Puts pretrained weights into a `build_darknet53` backbone.

    weights: "imagenet" (`darknet53_448.weights` from the Keras cache, downloaded into it on first
    use; needs the full Darknet53: width 1, depths 1/2/8/8/4), a Darknet file (`.weights`,
    `.conv.74`; `load_darknet_weights`) or a `.weights.h5` written by `backbone.save_weights`.
    Returns the number of convs (Darknet files) or layers (.weights.h5) set.
    """
    convs = darknet_conv_layers(backbone)
    if weights == "imagenet":
        last = tuple(convs[-1].conv.kernel.shape) if convs else None
        # The full Darknet53, or its first four stages (min_stride 4): a prefix of the file's convs
        # (the stride-32 stage has 1 + 2 x 4 convs).
        four_stages = DARKNET53_CONVS - (1 + 2 * DARKNET_STAGE_DEPTHS[4])
        if (len(convs), last) not in ((DARKNET53_CONVS, (3, 3, 512, 1024)), (four_stages, (3, 3, 256, 512))):
            raise ConfigError(
                f"{key}=imagenet: {DARKNET53_IMAGENET_FILE} fits only the full Darknet53 (width 1.0, depths "
                f"1/2/8/8/4, e.g. preset gghl_darknet53); this one has {len(convs)} convs"
            )
        try:
            path = keras.utils.get_file(DARKNET53_IMAGENET_FILE, DARKNET53_IMAGENET_URL, cache_subdir="models")
        except Exception as error:  # noqa: BLE001 - get_file raises a bare Exception when offline
            raise _not_available(
                "the ImageNet Darknet53 weights", DARKNET53_IMAGENET_FILE, DARKNET53_IMAGENET_URL, key, error
            ) from None
        return load_darknet_weights(backbone, path, max_convs=len(convs), verbose=verbose)
    path = os.path.expanduser(str(weights))
    _require_file(path, f"{key}: Darknet53 weights file")
    if path.endswith(".h5"):
        try:
            backbone.load_weights(path)
        except Exception as error:  # noqa: BLE001 - h5py and Keras raise several kinds
            raise CorruptFileError(
                f"{path} cannot be read as weights of this Darknet53 backbone: {' '.join(str(error).split())[:200]}"
            ) from None
        if verbose:
            print(f"loaded Darknet53 weights from {path}", flush=True)
        return len(backbone.layers)
    return load_darknet_weights(backbone, path, verbose=verbose)


def load_backbone_weights(backbone, kind, weights, *, alpha=1.0, key="weights", verbose=1):
    """Pretrained weights into a built backbone of `kind` ("darknet53" or "mobilenetv2"; alpha:
    the MobileNetV2 width). weights: "" or None (nothing is loaded; returns 0), "imagenet" or a
    file path (the module docstring's list). key names the setting in error messages (e.g.
    "model.student_backbone_weights"). Returns the number of layers set."""
    if not weights:
        return 0
    if kind == "mobilenetv2":
        darknet_file = weights != "imagenet" and not str(weights).endswith(".h5")
        if darknet_file:
            raise ConfigError(f"{key}={weights}: a MobileNetV2 backbone takes 'imagenet' or a Keras .h5 weights file")
        return load_mobilenetv2_weights(backbone, alpha, weights, key=key, verbose=verbose)
    if kind == "darknet53":
        return load_darknet53_weights(backbone, weights, key=key, verbose=verbose)
    raise ValueError(f"backbones.py: no pretrained weights for backbone {kind!r}")


def build_mobilenetv2(
    alpha=1.0, weights=None, input_shape=(None, None, 3), name="mobilenetv2", bn_momentum=BN_MOMENTUM, min_stride=8
):
    """MobileNetV2 (keras.applications) with taps after block 6 (32*alpha ch, stride 8),
    block 13 (96*alpha ch, stride 16) and the final 1x1 conv (1280 ch, stride 32), i.e. the
    PyTorch `features[6]`, `features[13]`, `conv` of LO-Det (Keras `block_5_add`,
    `block_12_add`, `out_relu`). The layers are keras.applications' own, so Keras' ImageNet
    weights fit them layer by layer.

    `weights`: None (random), "imagenet" or a path (`load_mobilenetv2_weights`).
    Input: images in [0, 1]; rescaled to [-1, 1] inside (what the ImageNet weights expect).
    `bn_momentum`: momentum of every BatchNormalization (Keras' default there is 0.999).
    `min_stride`: 8 (the above) or 4: taps after blocks 3, 6 and 13 (strides 4/8/16,
    `MOBILENETV2_TAPS_STRIDE4`); the blocks after block 13 are then not in the graph.
    """
    taps = MOBILENETV2_TAPS if check_min_stride(min_stride) == 8 else MOBILENETV2_TAPS_STRIDE4
    images = keras.Input(input_shape, name="images")
    scaled = layers.Rescaling(2.0, offset=-1.0, name="to_minus1_1")(images)
    base = keras.applications.MobileNetV2(input_shape=tuple(input_shape), alpha=alpha, include_top=False, weights=None)
    for layer in base.layers:
        # Keras' MobileNetV2 uses BN momentum 0.999: its moving statistics then lag far
        # behind a short training run and inference outputs collapse. PyTorch's 0.1 = 0.9 here.
        if isinstance(layer, layers.BatchNormalization):
            layer.momentum = bn_momentum
    tapped = keras.Model(base.inputs, [base.get_layer(n).output for n in taps], name=f"{name}_base")
    model = keras.Model(images, tapped(scaled), name=name)
    if weights:
        load_mobilenetv2_weights(model, alpha, weights, verbose=0)
    return model
