"""MeanAPCallback and the runner (predict_records / evaluate_model).

An "oracle" detector (a tiny keras.Model whose decode returns the letterboxed ground truth of
the image it sees, identified by the image's grey level) checks the whole chain — pipeline,
letterbox inverse, image ids, class names, evaluator — for mAP 1.0; the real tiny preset checks
that `fit` logs val_map07 / val_map12 for ModelCheckpoint."""

import os

import cv2
import keras
import numpy as np
import pytest
import tensorflow as tf

from dked_tf.data.records import ImageRecord
from dked_tf.evaluation.callback import MeanAPCallback
from dked_tf.evaluation.runner import evaluate_model, predict_records

SIZE = 64
CLASSES = ["ship", "plane"]


def rect(cx, cy, w, h, a):
    u = np.array([np.cos(a), np.sin(a)]) * w / 2
    v = np.array([-np.sin(a), np.cos(a)]) * h / 2
    c = np.array([cx, cy])
    return np.concatenate([c - u - v, c + u - v, c + u + v, c - u + v])


@pytest.fixture
def records(tmp_path):
    """Images of different sizes (so letterbox scale and offsets differ), grey level = 40 *
    (index + 1) identifies the image."""
    shapes = [(96, 128), (128, 80), (64, 64)]  # (height, width)
    objects = [
        [(rect(40, 30, 40, 12, 0.3), 0), (rect(90, 60, 30, 10, -1.0), 1)],
        [(rect(40, 64, 50, 14, 1.2), 1)],
        [(rect(20, 20, 16, 8, 0.0), 0), (rect(44, 40, 20, 9, 0.7), 0)],
    ]
    out = []
    for index, ((height, width), objs) in enumerate(zip(shapes, objects)):
        path = os.path.join(tmp_path, f"img{index}.png")
        cv2.imwrite(path, np.full((height, width, 3), 40 * (index + 1), np.uint8))
        out.append(
            ImageRecord(
                path, f"img{index}", width, height, [o[0] for o in objs], [o[1] for o in objs], [False] * len(objs)
            )
        )
    return out


class OracleDetector(keras.Model):
    """Detector stand-in: its decode returns the ground truth of each image, letterboxed the way
    interfaces.md states (input = original * scale + offset, scale = min(S/w, S/h), centred)."""

    def __init__(self, records, size):
        super().__init__()
        self.records, self.size, self.num_classes = records, size, len(CLASSES)

    def call(self, images, training=None):
        return {"head": images}

    def decode(self, head_outputs, score_threshold=None, iou_threshold=None, max_detections=None):
        images = np.asarray(head_outputs)
        k = 4
        polygons = np.zeros((len(images), k, 8), np.float32)
        scores = np.zeros((len(images), k), np.float32)
        classes = np.zeros((len(images), k), np.int32)
        counts = np.zeros(len(images), np.int32)
        for b, image in enumerate(images):
            grey = image[self.size // 2, self.size // 2, 0] * 255
            record = self.records[int(round(grey / 40)) - 1]
            scale = min(self.size / record.width, self.size / record.height)
            offset = np.array([(self.size - record.width * scale) / 2, (self.size - record.height * scale) / 2])
            n = record.num_objects
            polygons[b, :n] = record.polygons * scale + np.tile(offset, 4)
            scores[b, :n] = np.linspace(0.9, 0.5, n)
            classes[b, :n] = record.classes
            counts[b] = n
        return {"polygons": polygons, "scores": scores, "classes": classes, "num_detections": counts}


def test_predict_records_returns_original_pixels(records):
    oracle = OracleDetector(records, SIZE)
    detections = predict_records(oracle, records, SIZE, batch_size=2, class_names=CLASSES, verbose=0)
    assert set(detections) == set(CLASSES)
    assert sum(len(v) for v in detections.values()) == 5
    for image_id, _score, poly in detections["plane"]:
        record = next(r for r in records if r.image_id == image_id)
        expected = record.polygons[record.classes == 1]
        # float32 letterbox round trip: well below a pixel
        assert np.abs(expected - poly).max(axis=1).min() < 1e-3
    result = evaluate_model(oracle, records, CLASSES, SIZE, metric=("voc07", "voc12"), batch_size=2, verbose=0)
    assert result["voc07"].map == pytest.approx(1.0)
    assert result["voc12"].map == pytest.approx(1.0)


def test_callback_logs_map_for_a_distiller_like_wrapper(records):
    wrapper = keras.Model()
    wrapper.student = OracleDetector(records, SIZE)
    callback = MeanAPCallback(records, CLASSES, SIZE, every_n_epochs=2, verbose=0, batch_size=2)
    callback.set_model(wrapper)
    logs = {}
    callback.on_epoch_end(0, logs)  # not an evaluation epoch
    assert logs == {}
    callback.on_epoch_end(1, logs)
    assert logs["val_map07"] == pytest.approx(1.0) and logs["val_map12"] == pytest.approx(1.0)


def test_callback_on_a_dataset(records):
    from dked_tf.data.pipeline import build_dataset

    dataset = build_dataset(records, SIZE, 2, training=False)
    callback = MeanAPCallback(dataset, CLASSES, metric="voc12", verbose=0)
    callback.set_model(OracleDetector(records, SIZE))
    logs = {}
    callback.on_epoch_end(0, logs)
    assert set(logs) == {"val_map12"} and logs["val_map12"] == pytest.approx(1.0)


class TrainableOracle(OracleDetector):
    """The oracle with one trainable weight and a loss of its own, so `fit` runs quickly."""

    def __init__(self, records, size):
        super().__init__(records, size)
        self.w = self.add_weight(shape=(), initializer="ones", name="w")

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        return tf.square(self.w) + 0.0 * tf.reduce_sum(y_pred["head"])


def test_fit_logs_val_map_into_history_and_model_checkpoint(records, tmp_path):
    from dked_tf.data.pipeline import build_dataset

    model = TrainableOracle(records, SIZE)
    model.compile(optimizer=keras.optimizers.SGD(0.1))
    train = build_dataset(records, SIZE, 3, training=True, augment=False, seed=0)
    best = str(tmp_path / "best.weights.h5")
    history = model.fit(
        train,
        epochs=2,
        verbose=0,
        callbacks=[
            MeanAPCallback(records, CLASSES, SIZE, verbose=0, batch_size=3),
            keras.callbacks.ModelCheckpoint(
                best, monitor="val_map07", mode="max", save_best_only=True, save_weights_only=True
            ),
        ],
    )
    assert history.history["val_map07"] == pytest.approx([1.0, 1.0])
    assert history.history["val_map12"] == pytest.approx([1.0, 1.0])
    assert os.path.isfile(best)


def test_callback_with_the_real_tiny_preset(records, tiny_detector):
    pytest.importorskip("dked_tf.models.presets")
    model = tiny_detector("lodet_mobilenetv2_t", len(CLASSES), seed=0, image_size=SIZE)
    callback = MeanAPCallback(records, None, SIZE, verbose=0, batch_size=3, graph=False)
    callback.set_model(model)
    logs = {}
    callback.on_epoch_end(0, logs)
    for key in ("val_map07", "val_map12"):
        assert np.isfinite(logs[key]) and 0.0 <= logs[key] <= 1.0
    result = callback.last_results["voc07"]
    assert set(result.per_class) == {"0", "1"}  # names from model.num_classes
    assert result.num_gt == {"0": 3, "1": 2}


def test_callback_rejects_bad_arguments(records):
    with pytest.raises(ValueError, match="metric"):
        MeanAPCallback(records, CLASSES, SIZE, metric="coco")
    with pytest.raises(ValueError, match="image_size"):
        MeanAPCallback(records, CLASSES)
    with pytest.raises(ValueError, match="every_n_epochs"):
        MeanAPCallback(records, CLASSES, SIZE, every_n_epochs=0)
