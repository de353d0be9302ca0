"""Validation while training, the best weights, early stopping, the CSV and TensorBoard logs and
progress output only on a terminal (issue #17, items 2 and 3).

The callbacks are checked on a one-layer Keras model against Keras' own History and closed-form
learning rates; the event files are read back with TensorFlow's summary iterator; the held-out
images against a SHA-1 computed here.
"""

import csv
import glob
import hashlib
import io
import os
import sys
import types

import cv2
import numpy as np
import pytest

from dked_tf import terminal
from dked_tf.config import ConfigError, apply_overrides, preset_config, validate_config
from dked_tf.data.records import ImageRecord
from dked_tf.experiment import callbacks, data
from dked_tf.files import is_temporary


def _record(image_id, scene=None):
    extra = {"patch": (scene, 1.0, 0, 0)} if scene else {}
    return ImageRecord(image_path=f"{image_id}.png", image_id=image_id, width=8, height=8, extra=extra)


def _smoke(tmp_path, *overrides):
    cfg = preset_config("smoke")
    return validate_config(apply_overrides(cfg, [f"data.cache_dir={tmp_path / 'cache'}", *overrides]))


# ----------------------------------------------------------------------------- validation split


def test_holdout_is_the_smallest_salted_sha1_of_the_ids_whatever_their_order():
    records = [_record(f"{100000000 + k}") for k in range(40)]
    kept, held = data.holdout(records, 0.1)
    digest = {r.image_id: hashlib.sha1(f"dked_tf-val:{r.image_id}".encode()).hexdigest() for r in records}
    expected = sorted(digest, key=digest.get)[:4]
    assert sorted(r.image_id for r in held) == sorted(expected)
    assert len(kept) == 36 and not {r.image_id for r in kept} & set(expected)
    _, held_reversed = data.holdout(records[::-1], 0.1)
    assert {r.image_id for r in held_reversed} == set(expected)


def test_holdout_keeps_the_patches_of_a_scene_together_and_never_takes_everything():
    patches = [_record(f"P{s}__1__{k}___0", scene=f"P{s}") for s in range(5) for k in range(3)]
    kept, held = data.holdout(patches, 0.3)
    held_scenes = {r.extra["patch"][0] for r in held}
    assert len(held_scenes) == 2 and len(held) == 6  # round(0.3 * 5) scenes, all 3 patches of each
    assert not held_scenes & {r.extra["patch"][0] for r in kept}
    kept, held = data.holdout([_record("a"), _record("b")], 0.9)
    assert len(kept) == 1 and len(held) == 1
    with pytest.raises(ConfigError, match="at least 2"):
        data.holdout([_record("a")], 0.5)


def test_val_split_auto_val_holdout_and_test(tmp_path):
    cfg = _smoke(tmp_path)
    train_records, _ = data.prepare_records(cfg, "train", verbose=0)
    test_records, _ = data.prepare_records(cfg, "test", verbose=0)
    # the synthetic set has no val split: auto holds out, val refuses
    kept, val, line = data.validation_split(cfg, train_records, verbose=0)
    assert len(val) == 1 and len(kept) == len(train_records) - 1 and "held out" in line
    with pytest.raises(ConfigError, match="no val split"):
        data.validation_split(_smoke(tmp_path, "data.val_split=val"), train_records, verbose=0)
    kept, val, line = data.validation_split(_smoke(tmp_path, "data.val_split=test"), train_records, verbose=0)
    assert kept == train_records and [r.image_id for r in val] == [r.image_id for r in test_records]
    assert "WARNING" in line and "TEST" in line
    # a real HRSC2016 tree with ImageSets/val.txt: auto uses it and trains on the other images
    root = os.path.dirname(os.path.dirname(train_records[0].image_path))
    if os.path.basename(root) == "FullDataSet":
        root = os.path.dirname(root)
    val_ids = sorted(r.image_id for r in train_records)[:3]
    with open(os.path.join(root, "ImageSets", "val.txt"), "w") as handle:
        handle.write("\n".join(val_ids) + "\n")
    cfg = _smoke(tmp_path, f"data.root={root}")
    kept, val, line = data.validation_split(cfg, train_records, verbose=0)
    assert sorted(r.image_id for r in val) == val_ids and "val split" in line
    assert sorted(r.image_id for r in kept) == sorted(r.image_id for r in train_records)[3:]


def test_validation_settings_are_checked():
    cfg = preset_config("smoke")
    for override, message in (
        ("train.val_every=-1", "train.val_every"),
        ("train.early_stop_patience=3", "needs validation"),
        ("data.val_split=dev", "data.val_split"),
        ("data.val_fraction=1.0", "data.val_fraction"),
        ("teacher_train.strategy=tpu", "teacher_train.strategy"),
        ("train.mixed_precision=float16", "train.mixed_precision"),
    ):
        with pytest.raises(ConfigError, match=message):
            validate_config(apply_overrides(cfg, [override]))


# ----------------------------------------------------------------------------- callbacks


def _tiny_model(learning_rate=0.01):
    import keras

    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    model.compile(optimizer=keras.optimizers.SGD(learning_rate), loss="mse")
    return model


def _xy():
    rng = np.random.default_rng(0)
    return rng.normal(size=(8, 3)).astype("float32"), rng.normal(size=(8, 2)).astype("float32")


class _Scripted:
    """Puts val_map07 = values[epoch] into the logs (None: not a validation epoch) and keeps a
    copy of the weights after every epoch."""

    def __new__(cls, values):
        import keras

        class Scripted(keras.callbacks.Callback):
            def __init__(self):
                super().__init__()
                self.weights_after = {}

            def on_epoch_end(self, epoch, logs=None):
                if values[epoch] is not None:
                    logs["val_map07"] = values[epoch]
                self.weights_after[epoch + 1] = [np.array(w) for w in self.model.get_weights()]

        return Scripted()


def test_csv_log_matches_keras_history_and_keeps_the_rows_before_a_resume(tmp_path):
    import keras

    path = tmp_path / "history.csv"
    model, (x, y) = _tiny_model(), _xy()
    schedule = keras.optimizers.schedules.ExponentialDecay(0.1, decay_steps=1, decay_rate=0.5)
    model.compile(optimizer=keras.optimizers.SGD(schedule), loss="mse")
    history = model.fit(
        x, y, batch_size=4, epochs=3, verbose=0, callbacks=[callbacks.LearningRateLog(), callbacks.CsvLog(path)]
    )
    with open(path, newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [int(r["epoch"]) for r in rows] == [1, 2, 3]
    np.testing.assert_allclose([float(r["loss"]) for r in rows], history.history["loss"], rtol=1e-6)
    # 2 steps per epoch: after epoch k the schedule is at step 2k
    np.testing.assert_allclose([float(r["learning_rate"]) for r in rows], [0.1 * 0.5 ** (2 * k) for k in (1, 2, 3)])
    # a resume after epoch 2 keeps rows 1-2 as they were and rewrites 3 on
    model.fit(x, y, batch_size=4, epochs=4, initial_epoch=2, verbose=0, callbacks=[callbacks.CsvLog(path)])
    with open(path, newline="") as handle:
        resumed = list(csv.DictReader(handle))
    assert [int(r["epoch"]) for r in resumed] == [1, 2, 3, 4]
    assert [r["loss"] for r in resumed[:2]] == [r["loss"] for r in rows[:2]]
    assert not [name for name in os.listdir(tmp_path) if is_temporary(name)]
    # a run that starts over drops the old rows
    model.fit(x, y, batch_size=4, epochs=1, verbose=0, callbacks=[callbacks.CsvLog(path)])
    with open(path, newline="") as handle:
        assert [int(r["epoch"]) for r in csv.DictReader(handle)] == [1]


def test_best_weights_are_those_of_the_best_epoch_and_training_stops_after_patience(tmp_path):
    import keras

    weights_path = tmp_path / "best.weights.h5"
    model, (x, y) = _tiny_model(), _xy()
    scripted = _Scripted([None, 0.1, None, 0.3, None, 0.2, None, 0.25, None, 0.5, None, 0.6])
    best = callbacks.BestWeights(weights_path, patience=4, record={"run": 1})
    history = model.fit(x, y, epochs=12, verbose=0, callbacks=[scripted, best])
    # best 0.3 after epoch 4; epoch 8 is 4 epochs later without improvement: stop there
    assert len(history.history["loss"]) == 8 and best.stopped_epoch == 8
    assert (best.best, best.best_epoch) == (0.3, 4)
    fresh = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    fresh.load_weights(weights_path)
    for got, want in zip(fresh.get_weights(), scripted.weights_after[4]):
        np.testing.assert_array_equal(got, want)
    meta = callbacks.read_json(tmp_path / "best.json")
    assert (meta["epoch"], meta["value"], meta["record"]) == (4, 0.3, {"run": 1})
    assert meta["weights_bytes"] == os.path.getsize(weights_path)
    # a resume after epoch 6 of the same run goes on from the best of epochs 1-6 (0.3 at 4)
    again = callbacks.BestWeights(weights_path, record={"run": 1})
    model.fit(x, y, epochs=8, initial_epoch=6, verbose=0, callbacks=[_Scripted([None] * 7 + [0.2]), again])
    assert (again.best, again.best_epoch) == (0.3, 4)
    assert callbacks.read_json(tmp_path / "best.json")["epoch"] == 4
    # another run's files (another record) are replaced by the first validation
    other = callbacks.BestWeights(weights_path, record={"run": 2})
    model.fit(x, y, epochs=8, initial_epoch=6, verbose=0, callbacks=[_Scripted([None] * 7 + [0.2]), other])
    assert callbacks.read_json(tmp_path / "best.json")["epoch"] == 8


def _events(log_dir):
    import tensorflow as tf

    found = []
    for path in sorted(glob.glob(os.path.join(log_dir, "events.out.tfevents.*"))):
        for event in tf.compat.v1.train.summary_iterator(path):
            for value in event.summary.value:
                plugin = value.metadata.plugin_data.plugin_name
                found.append((event.step, value.tag, plugin, tf.make_ndarray(value.tensor)))
    return found


def test_tensorboard_events_hold_every_logged_value_and_the_drawn_validation_images(tmp_path):
    image = np.full((48, 64, 3), 90, np.uint8)
    image_path = tmp_path / "val_0.png"
    cv2.imwrite(str(image_path), image)
    polygon = np.array([[10, 10, 40, 10, 40, 30, 10, 30]], np.float32)
    record = ImageRecord(str(image_path), "val_0", 64, 48, polygon, [0], [False])
    # the validation's outcome as MeanAPCallback leaves it (a data holder, not a stand-in of our code)
    validation = types.SimpleNamespace(val_data=[record], last_detections={"ship": [("val_0", 0.9, polygon[0] + 2)]})
    model, (x, y) = _tiny_model(learning_rate=0.05), _xy()
    log_dir = tmp_path / "tb"
    history = model.fit(
        x,
        y,
        epochs=2,
        verbose=0,
        callbacks=[
            callbacks.LearningRateLog(),
            _Scripted([None, 0.42]),
            callbacks.TensorBoardLog(log_dir, validation=validation, max_images=2),
        ],
    )
    events = _events(log_dir)
    scalars = {(step, tag): float(value) for step, tag, plugin, value in events if plugin == "scalars"}
    assert scalars[(1, "loss")] == pytest.approx(history.history["loss"][0], rel=1e-6)
    assert scalars[(2, "loss")] == pytest.approx(history.history["loss"][1], rel=1e-6)
    assert scalars[(1, "learning_rate")] == pytest.approx(0.05) and scalars[(2, "val_map07")] == pytest.approx(0.42)
    assert (1, "val_map07") not in scalars
    images = [(step, tag, value) for step, tag, plugin, value in events if plugin == "images"]
    assert [(step, tag) for step, tag, _ in images] == [(2, "val_detections/val_0")]
    width, height, png = images[0][2]
    drawn = cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_COLOR)
    assert (int(width), int(height)) == (64, 48) and drawn.shape == (48, 64, 3)
    assert np.abs(drawn.astype(int) - image).max() > 50  # the boxes are drawn on it


# ----------------------------------------------------------------------------- terminal


class _Terminal(io.StringIO):
    def isatty(self):
        return True


def test_progress_bars_only_on_a_terminal(monkeypatch):
    from tqdm import tqdm

    items = [1, 2, 3]
    monkeypatch.setattr(sys, "stderr", io.StringIO())
    monkeypatch.setattr(sys, "stdout", io.StringIO())
    assert terminal.progress(items, desc="detect") is items
    assert terminal.keras_verbosity(1) == 0 and terminal.keras_verbosity(2) == 0
    monkeypatch.setattr(sys, "stderr", _Terminal())
    monkeypatch.setattr(sys, "stdout", _Terminal())
    bar = terminal.progress(items, desc="detect")
    assert isinstance(bar, tqdm) and list(bar) == items
    assert terminal.progress(items, verbose=0) is items
    assert terminal.keras_verbosity(1) == 1 and terminal.keras_verbosity(0) == 0


def test_epoch_line_starts_a_new_line_only_after_a_keras_bar(capsys):
    for after_bar, start in ((False, "[teacher] epoch 1/2"), (True, "\n[teacher] epoch 1/2")):
        progress = callbacks.RunProgress("teacher", 2, verbose=1, after_progress_bar=after_bar)
        progress.on_train_begin()
        progress.on_epoch_begin(0)
        progress.on_epoch_end(0, {"loss": 1.5, "val_map07": 0.25, "learning_rate": 0.001, "obj_pos": 3.0})
        out = capsys.readouterr().out
        assert out.startswith(start) and out.count("\n") == 1 + after_bar
        assert "loss 1.5000 val_map07 0.2500 lr 0.001 |" in out and "obj_pos" not in out
