"""Shared test fixtures: tiny preset detectors, tiny image batches with oriented-box targets,
and a callback that interrupts a training run.

The factories are session-scoped fixtures that return plain functions, so that module-scoped
fixtures (an expensive model or export built once per test module) can use them too:

    @pytest.fixture(scope="module")
    def model(tiny_detector):
        return tiny_detector("lodet_mobilenetv2_t", 2, seed=5, randomize=True)

    def test_something(tiny_detector, tiny_batch):
        images, targets = tiny_batch(batch=2, seed=0)
        ...

TensorFlow, Keras and dked_tf are imported when a factory is called, not when this file is
loaded: the TF-free tests stay TF-free.
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")

import numpy as np  # noqa: E402
import pytest  # noqa: E402

TINY_SIZE = 64
"""Input size of the tiny presets (`gghl_darknet53_t`, `lodet_mobilenetv2_t`)."""

# The boxes of `tiny_batch` at TINY_SIZE px: (polygon x1 y1 .. x4 y4, class).
_TINY_BOXES = (
    ([8, 12, 40, 6, 44, 20, 12, 26], 0),  # oriented, mid-size
    ([34, 36, 58, 36, 58, 60, 34, 60], 1),  # axis aligned
    ([20, 40, 27, 41, 26, 45, 19, 44], 1),  # small
)


@pytest.fixture
def rng():
    return np.random.default_rng(0)


def _randomize_weights(model, seed):
    """He-normal kernels everywhere: a freshly built tiny model (BN at its initial statistics,
    small prior-biased heads) gives nearly the same output at every cell whatever the image;
    these weights make outputs depend on the image, and classes and scores distinct."""
    rng = np.random.default_rng(seed)
    for weight in model.weights:
        if not weight.path.endswith("kernel"):
            continue
        shape = tuple(weight.shape)
        if len(shape) == 4:
            fan_in = shape[0] * shape[1] * (1 if shape[-1] == 1 else shape[2])  # depthwise: k*k
        else:
            fan_in = shape[0]
        weight.assign(rng.normal(0.0, np.sqrt(2.0 / fan_in), shape).astype("float32"))


def _tiny_detector(
    name="lodet_mobilenetv2_t", num_classes=2, *, seed=None, randomize=False, forward_size=None, **overrides
):
    """A built `OrientedDetector` of the preset `name` (`presets.build_model`; its weights exist
    after construction).

    seed: if not None, `keras.utils.set_random_seed(seed)` first (Python, NumPy, TensorFlow and
        Keras seeds), so the initial weights are reproducible; None leaves the seeds alone.
    randomize: re-initialise every kernel He-normal from `np.random.default_rng(seed)` (needs
        `seed`): outputs then depend on the image, and classes and scores are distinct.
    forward_size: if not None, run one forward pass on a zero image [1, s, s, 3] (as
        `presets.build_detector(name, num_classes, s)` does).
    overrides: passed to `build_model` (e.g. `neck_kwargs={"drop_prob": 0.0}`,
        `image_size=96`, `plain_class_weight=0.0`).
    """
    import keras

    from dked_tf.models.presets import build_detector, build_model

    if randomize and seed is None:
        raise ValueError("tiny_detector: randomize=True needs a seed")
    if seed is not None:
        keras.utils.set_random_seed(seed)
    if forward_size is None:
        model = build_model(name, num_classes, **overrides)
    else:
        model = build_detector(name, num_classes, forward_size, **overrides)
    if randomize:
        _randomize_weights(model, seed)
    return model


def _tiny_images(batch=2, size=TINY_SIZE, seed=0):
    """float32 images [batch, size, size, 3], uniform in [0, 1), from `np.random.default_rng(seed)`."""
    return np.random.default_rng(seed).uniform(size=(batch, size, size, 3)).astype("float32")


def _tiny_batch(batch=2, size=TINY_SIZE, seed=0):
    """(images, targets): `tiny_images(batch, size, seed)` and three boxes per image —
    an oriented mid-size box (class 0), an axis-aligned box (class 1) and a small box (class 1),
    at the same place in every image (coordinates scaled by size / 64); the small box has weight 0
    (padding) in the odd images. targets: {"polygons" float32 [B, 3, 8], "classes" int32 [B, 3],
    "weights" float32 [B, 3]}."""
    images = _tiny_images(batch, size, seed)
    scale = size / TINY_SIZE
    polygons = np.zeros((batch, len(_TINY_BOXES), 8), np.float32)
    classes = np.zeros((batch, len(_TINY_BOXES)), np.int32)
    weights = np.zeros((batch, len(_TINY_BOXES)), np.float32)
    for i in range(batch):
        for j, (polygon, cls) in enumerate(_TINY_BOXES):
            polygons[i, j] = np.asarray(polygon, np.float32) * scale
            classes[i, j] = cls
        weights[i] = [1, 1, 1 if i % 2 == 0 else 0]
    targets = {"polygons": polygons, "classes": classes, "weights": weights}
    return images, targets


def _tiny_dataset(data=None, /, **batch_kwargs):
    """A one-element `tf.data.Dataset` (`from_tensors`) of the batch `data` = (images, targets),
    or of `tiny_batch(**batch_kwargs)` when `data` is None: one training step per epoch."""
    import tensorflow as tf

    if data is None:
        data = _tiny_batch(**batch_kwargs)
    elif batch_kwargs:
        raise TypeError("tiny_dataset: give either a batch or tiny_batch arguments")
    return tf.data.Dataset.from_tensors(data)


def _interrupt_before_epoch(epoch):
    """A Keras callback that raises RuntimeError("simulated interruption") as epoch `epoch`
    (0-based) begins: an interrupted training for resume tests."""
    import keras

    class _Interrupt(keras.callbacks.Callback):
        def on_epoch_begin(self, index, logs=None):
            if index == epoch:
                raise RuntimeError("simulated interruption")

    return _Interrupt()


@pytest.fixture(scope="session")
def tiny_detector():
    """Factory `tiny_detector(name="lodet_mobilenetv2_t", num_classes=2, *, seed=None,
    randomize=False, forward_size=None, **overrides)` -> a built OrientedDetector (see
    `_tiny_detector`). A new model on every call."""
    return _tiny_detector


@pytest.fixture(scope="session")
def tiny_images():
    """Factory `tiny_images(batch=2, size=64, seed=0)` -> float32 [batch, size, size, 3] uniform
    in [0, 1) from `np.random.default_rng(seed)`."""
    return _tiny_images


@pytest.fixture(scope="session")
def tiny_batch():
    """Factory `tiny_batch(batch=2, size=64, seed=0)` -> (images, targets) with three boxes per
    image (see `_tiny_batch`); the images are `tiny_images(batch, size, seed)`."""
    return _tiny_batch


@pytest.fixture(scope="session")
def tiny_dataset():
    """Factory `tiny_dataset(data=None, /, **tiny_batch_kwargs)` -> a one-element tf.data.Dataset
    of `data` = (images, targets), or of `tiny_batch(**tiny_batch_kwargs)`."""
    return _tiny_dataset


@pytest.fixture(scope="session")
def interrupt_before_epoch():
    """Factory `interrupt_before_epoch(epoch)` -> a Keras callback raising
    RuntimeError("simulated interruption") as 0-based epoch `epoch` begins."""
    return _interrupt_before_epoch
