"""Named model configurations: paper scale, small CPU presets, tiny test presets.

    build_model("lodet_mobilenetv2", num_classes=15)
    build_model("gghl_darknet53_s", num_classes=1, image_size=256)

| preset               | backbone                     | neck                   | input |
|----------------------|------------------------------|------------------------|-------|
| gghl_darknet53       | Darknet53 x1.0, 1/2/8/8/4    | GGHL FPN x1.0          | 800   |
| lodet_mobilenetv2    | MobileNetV2 a=1.0            | CSA-DRF-FPN x1.0       | 800   |
| gghl_darknet53_s     | Darknet53 x0.25, 1/1/2/2/1   | GGHL FPN x0.25         | 256   |
| lodet_mobilenetv2_s  | MobileNetV2 a=0.35           | CSA-DRF-FPN x0.125     | 256   |
| gghl_darknet53_t     | Darknet53 x0.125, 1/1/1/1/1  | GGHL FPN x0.125        | 64    |
| lodet_mobilenetv2_t  | MobileNetV2 a=0.35           | CSA-DRF-FPN x0.0625    | 64    |
"""

import copy

import tensorflow as tf
from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2

from dked_tf.models.detector import OrientedDetector

PRESETS = {
    "gghl_darknet53": dict(
        backbone="darknet53",
        backbone_kwargs=dict(width=1.0),
        neck="gghl_fpn",
        neck_kwargs=dict(width=1.0),
        head="gghl",
        image_size=800,
    ),
    "lodet_mobilenetv2": dict(
        backbone="mobilenetv2",
        backbone_kwargs=dict(alpha=1.0),
        neck="csa_drf_fpn",
        neck_kwargs=dict(width=1.0),
        head="lodet",
        image_size=800,
    ),
    "gghl_darknet53_s": dict(
        backbone="darknet53",
        backbone_kwargs=dict(width=0.25, depths=(1, 1, 2, 2, 1)),
        neck="gghl_fpn",
        neck_kwargs=dict(width=0.25),
        head="gghl",
        image_size=256,
    ),
    "lodet_mobilenetv2_s": dict(
        backbone="mobilenetv2",
        backbone_kwargs=dict(alpha=0.35),
        neck="csa_drf_fpn",
        neck_kwargs=dict(width=0.125),
        head="lodet",
        image_size=256,
    ),
    "gghl_darknet53_t": dict(
        backbone="darknet53",
        backbone_kwargs=dict(width=0.125, depths=(1, 1, 1, 1, 1)),
        neck="gghl_fpn",
        neck_kwargs=dict(width=0.125),
        head="gghl",
        image_size=64,
    ),
    "lodet_mobilenetv2_t": dict(
        backbone="mobilenetv2",
        backbone_kwargs=dict(alpha=0.35),
        neck="csa_drf_fpn",
        neck_kwargs=dict(width=0.0625),
        head="lodet",
        image_size=64,
    ),
}

# Reference figures (shared/reference/gghl_lodet_dked.md, nC = 15): parameters in millions.
REFERENCE_PARAMS_M = {"gghl_darknet53": 68.8, "lodet_mobilenetv2": 6.8}


def preset_config(name):
    """A deep copy of the preset's keyword arguments (raises on unknown names)."""
    if name not in PRESETS:
        raise ValueError(f"presets.py: unknown preset {name!r}; available: {sorted(PRESETS)}")
    return copy.deepcopy(PRESETS[name])


def build_model(name, num_classes, /, **overrides):
    """Builds `OrientedDetector` from a preset. `overrides` replace top-level keys; dict
    keys `backbone_kwargs`/`neck_kwargs`/`head_kwargs` are merged into the preset's;
    `name=` names the Keras model (default: the preset name)."""
    config = preset_config(name)
    for key, value in overrides.items():
        if key.endswith("_kwargs") and isinstance(value, dict):
            config[key] = {**config.get(key, {}), **value}
        else:
            config[key] = value
    config.setdefault("name", name)
    return OrientedDetector(num_classes=num_classes, preset=name, **config)


def build_detector(name, num_classes, image_size, **overrides):
    """`build_model(name, num_classes, **overrides)` with its weights created by one forward
    pass on a zero image [1, image_size, image_size, 3]."""
    model = build_model(name, num_classes, **overrides)
    model(tf.zeros([1, image_size, image_size, 3], tf.float32), training=False)
    return model


def count_params(model, trainable_only=False):
    """Number of parameters (all weights, or trainable weights only)."""
    weights = model.trainable_weights if trainable_only else model.weights
    return int(sum(int(tf.size(w)) for w in weights))


def gflops(model, image_size=None, batch_size=1):
    """Forward GFLOPs (1 multiply-add = 2 FLOPs) of `model(images)["head"]` at
    `image_size` x `image_size`, from TensorFlow's profiler on the frozen concrete function
    (convolutions, matmuls and element-wise ops as TensorFlow registers them)."""
    size = int(image_size or model.image_size)
    fn = tf.function(lambda x: model(x, training=False)["head"])
    concrete = fn.get_concrete_function(tf.TensorSpec([batch_size, size, size, 3], tf.float32))
    frozen = convert_variables_to_constants_v2(concrete)
    options = tf.compat.v1.profiler.ProfileOptionBuilder.float_operation()
    options["output"] = "none"
    info = tf.compat.v1.profiler.profile(
        graph=frozen.graph, run_meta=tf.compat.v1.RunMetadata(), cmd="op", options=options
    )
    return info.total_float_ops / 1e9
