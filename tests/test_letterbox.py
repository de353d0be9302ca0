"""One letterbox: the graph version (the pipeline's own, used by evaluation batches, the
SavedModel signatures and TFLite calibration), its numpy twin (for `dked-tf predict`) and the
TensorFlow-free copy in tflite/detect.py agree."""

import importlib.util
import os

import cv2
import numpy as np
import pytest
import tensorflow as tf

from dked_tf.data.augment import (
    LETTERBOX_PAD_VALUE,
    AugmentConfig,
    letterbox_image_np,
    letterbox_image_tf,
    letterbox_params,
    letterbox_params_tf,
)
from dked_tf.data.pipeline import build_dataset
from dked_tf.data.records import ImageRecord

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DETECT_PY = os.path.join(REPO, "tflite", "detect.py")
# (height, width, S): down- and up-scaling, wide, tall, square, tiny
SHAPES = [
    (37, 53, 64),
    (120, 80, 64),
    (64, 64, 64),
    (300, 200, 96),
    (20, 500, 128),
    (50, 51, 200),
    (800, 600, 192),
    (1, 1, 32),
    (33, 17, 96),
]


@pytest.fixture(scope="module")
def detect():
    spec = importlib.util.spec_from_file_location("tflite_detect_letterbox", DETECT_PY)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _image(rng, height, width):
    return rng.integers(0, 256, (height, width, 3), dtype=np.uint8)


@pytest.mark.parametrize("height, width, size", SHAPES)
def test_numpy_letterbox_matches_the_graph_letterbox(rng, height, width, size):
    image = _image(rng, height, width)
    got, scale, offset = letterbox_image_np(image, size)
    want, want_scale, want_offset = letterbox_image_tf(tf.constant(image), size)
    assert got.shape == (size, size, 3) and got.dtype == np.float32
    assert scale == pytest.approx(float(want_scale), rel=1e-6)
    np.testing.assert_allclose(offset, want_offset.numpy(), atol=1e-5)
    # the graph resampler computes sample positions in float32: ~1e-4 at 800 px, noise images
    np.testing.assert_allclose(got, want.numpy(), atol=2e-4)


@pytest.mark.parametrize("height, width, size", SHAPES)
def test_device_runner_letterbox_equals_the_package_one(rng, detect, height, width, size):
    image = _image(rng, height, width)
    got, scale, offset = detect.letterbox(image, size)
    want, want_scale, want_offset = letterbox_image_np(image, size)
    np.testing.assert_allclose(got, want, atol=1e-6)
    assert scale == pytest.approx(want_scale, rel=1e-12)
    np.testing.assert_allclose(offset, want_offset, atol=1e-9)
    assert detect.LETTERBOX_PAD_VALUE == LETTERBOX_PAD_VALUE


def test_letterbox_geometry_and_padding():
    white = np.full((60, 96, 3), 255, np.uint8)
    boxed, scale, offset = letterbox_image_np(white, 64)
    assert scale == pytest.approx(64 / 96)
    np.testing.assert_allclose(offset, [0.0, 12.0], atol=1e-9)
    assert np.all(boxed[:12] == LETTERBOX_PAD_VALUE) and np.all(boxed[52:] == LETTERBOX_PAD_VALUE)
    np.testing.assert_allclose(boxed[12:52], 1.0, atol=1e-6)  # edge pixels repeat at the border
    for width, height, size in ((96, 60, 64), (17, 33, 96), (500, 20, 128)):
        np_scale, np_offset = letterbox_params(width, height, size)
        tf_scale, tf_offset = letterbox_params_tf(width, height, size)
        assert np_scale == pytest.approx(float(tf_scale), rel=1e-6)
        np.testing.assert_allclose(np_offset, tf_offset.numpy(), atol=1e-4)
    assert AugmentConfig().fill_value == LETTERBOX_PAD_VALUE


def test_graph_letterbox_is_what_evaluation_batches_hold(rng, tmp_path):
    records = []
    for index, (height, width) in enumerate(((50, 90), (77, 40))):
        path = str(tmp_path / f"image{index}.png")
        image = _image(rng, height, width)
        cv2.imwrite(path, image[..., ::-1])
        records.append(
            ImageRecord(
                path,
                f"image{index}",
                width,
                height,
                np.zeros((0, 8), np.float32),
                np.zeros(0, np.int32),
                np.zeros(0, bool),
            )
        )
    images, targets = next(iter(build_dataset(records, 64, 2, training=False)))
    for index, record in enumerate(records):
        image = tf.io.decode_image(tf.io.read_file(record.image_path), channels=3, expand_animations=False)
        boxed, scale, offset = letterbox_image_tf(image, 64)
        np.testing.assert_array_equal(boxed.numpy(), images[index].numpy())
        assert float(scale) == float(targets["scale"][index])
        np.testing.assert_array_equal(offset.numpy(), targets["offset"][index].numpy())
        boxed_np, _, _ = letterbox_image_np(cv2.imread(record.image_path)[..., ::-1], 64)
        np.testing.assert_allclose(boxed_np, images[index].numpy(), atol=2e-4)
