"""Callbacks of a training run: one progress line per epoch with the ETA, periodic backups, the
learning rate in the logs, the best weights by validation mAP (and early stopping), a CSV log and
TensorBoard event files.

Order in `fit` (`experiment.train_lib.train`): LearningRateLog and the validation callback
(`MeanAPCallback`) first, so every later callback sees `learning_rate` and `val_map07` in the
epoch's logs; then BestWeights, CsvLog, TensorBoardLog; EpochBackup and RunProgress last.
"""

import contextlib
import csv
import io
import math
import os
import re
import shutil
import time

import cv2
import keras
import numpy as np
import tensorflow as tf
from tensorflow.core.framework import summary_pb2

from dked_tf import visualize
from dked_tf.evaluation.runner import inference_model
from dked_tf.files import CorruptFileError, is_temporary, read_json, replacing, write_json, write_text_atomic

# Loss keys shown on the per-epoch line (the Distiller logs `total` and `jol_total`).
SHOWN_LOGS = ("loss", "total", "jol_total", "val_map07", "val_map12")
# The key of the learning rate in the epoch's logs (`LearningRateLog`), as Keras' TensorBoard names it.
LEARNING_RATE_KEY = "learning_rate"
# Drawn detections (TensorBoard images, the recipe's detections/ pictures) need at least this score.
DRAWN_SCORE = 0.3
# Backups: epoch-NNNN.weights.h5 + epoch-NNNN.json; this many complete ones are kept.
BACKUP_NAME = re.compile(r"^epoch-(\d+)\.weights\.h5$")
BACKUP_JSON = re.compile(r"^epoch-(\d+)\.json$")
KEPT_BACKUPS = 2
# Keras' BackupAndRestore files (backups of earlier versions of the package)
KERAS_WEIGHTS = "latest.weights.h5"
KERAS_METADATA = "training_metadata.json"


def format_clock(seconds):
    """Seconds as H:MM:SS."""
    seconds = int(round(seconds))
    return f"{seconds // 3600:d}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


class RunProgress(keras.callbacks.Callback):
    """Prints one line per epoch: the stage, epoch k/N, the logged losses, the elapsed time of
    the whole stage and the estimated time left (from the mean epoch time so far).

    clock_path: a JSON file updated after every epoch with the training seconds so far
    (`previous_seconds` + this run's), so a resumed run reports the time of all its parts.
    after_progress_bar: Keras draws its progress bar in this fit, whose last line is not ended:
    the epoch line then starts on a new line.
    """

    def __init__(self, stage, epochs, verbose=1, clock_path=None, previous_seconds=0.0, after_progress_bar=False):
        super().__init__()
        self.stage = stage
        self.epochs = int(epochs)
        self.verbose = verbose
        self.after_progress_bar = bool(after_progress_bar)
        self.clock_path = clock_path
        self.previous_seconds = float(previous_seconds)
        self._start = None
        self._epoch_start = None
        self._durations = []
        self.seconds = float(previous_seconds)

    def on_train_begin(self, logs=None):
        self._start = time.perf_counter()

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch_start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        now = time.perf_counter()
        self.seconds = self.previous_seconds + now - self._start
        self._durations.append(now - self._epoch_start)
        if self.clock_path:
            write_json(self.clock_path, {"train_seconds": self.seconds, "epochs_done": epoch + 1})
        if not self.verbose:
            return
        # The first epoch of a run includes tracing the training step: estimate from the others.
        recent = self._durations[1:] if len(self._durations) > 1 else self._durations
        left = float(np.mean(recent)) * (self.epochs - epoch - 1)
        losses = " ".join(f"{k} {float(v):.4f}" for k, v in (logs or {}).items() if k in SHOWN_LOGS)
        if LEARNING_RATE_KEY in (logs or {}):
            losses += f" lr {float(logs[LEARNING_RATE_KEY]):.3g}"
        print(
            f"{chr(10) if self.after_progress_bar else ''}[{self.stage}] epoch {epoch + 1}/{self.epochs} {losses} | "
            f"elapsed {format_clock(self.seconds)}, ETA {format_clock(left)}",
            flush=True,
        )


class BackupError(CorruptFileError):
    """No backup of an interrupted run reads back: the message names the files and what to do."""


def backup_files(backup_dir):
    """The complete backups in backup_dir, newest first: [(epoch, weights_path, json_path)].
    A backup is complete when both of its files exist (the json is written last); backups of
    Keras' BackupAndRestore (`latest.weights.h5` + `training_metadata.json`, written by earlier
    versions) come after the package's own, with json_path None."""
    if not os.path.isdir(backup_dir):
        return []
    found = []
    for name in os.listdir(backup_dir):
        match = BACKUP_NAME.match(name)
        if match:
            weights = os.path.join(backup_dir, name)
            meta = os.path.join(backup_dir, f"epoch-{match.group(1)}.json")
            if os.path.isfile(meta):
                found.append((int(match.group(1)), weights, meta))
    found.sort(key=lambda entry: entry[0], reverse=True)
    legacy = os.path.join(backup_dir, KERAS_WEIGHTS)
    if os.path.isfile(legacy):
        found.append((None, legacy, None))
    return found


def read_backup_json(path):
    """The json of one backup ({"epoch", "weights_bytes", "history", "record"}); CorruptFileError
    when it is unreadable or lacks its keys."""
    meta = read_json(path)
    if not isinstance(meta, dict) or not isinstance(meta.get("epoch"), int):
        raise CorruptFileError(f"{path} is not a backup record (no epoch)")
    return meta


def backup_record(backup_dir):
    """The `record` (what the run was configured with) of the newest complete backup in
    backup_dir whose json reads back, or None (no backup, or backups that carry none)."""
    for _, _, meta_path in backup_files(backup_dir):
        if meta_path is None:
            return None
        try:
            return read_backup_json(meta_path).get("record")
        except CorruptFileError:
            continue
    return None


class EpochBackup(keras.callbacks.Callback):
    """Resumable backups of a training every `every` epochs, that a kill, a full disk or a
    corrupt file cannot take away.

    Each backup is `epoch-NNNN.weights.h5` (`model.save_weights`: the model's and the
    optimizer's state) and `epoch-NNNN.json` (the epoch, the size of the weights file, the
    per-epoch logs so far and `record`, what the run was configured with), each written to a
    temporary file and renamed (`dked_tf.files.replacing`), the json last. The two newest
    complete backups are kept: while one is written the previous one is untouched.

    At the start of `fit` the newest backup that reads back (its json parses, the weights file
    has the recorded size and loads) is restored: the model, the optimizer, the epoch to go on
    from and the logs of the epochs before (`history`, all epochs of the run). A corrupt backup
    is reported in one line and the one before is used; when none reads back, BackupError names
    the files and how to start over. Keras' own backups (`latest.weights.h5`) of earlier versions
    are restored too.

    delete_at_end: remove backup_dir when `fit` ends (False: the caller removes it once the
    trained model is saved, so no moment exists without a copy of the training).
    """

    def __init__(self, backup_dir, every=1, record=None, delete_at_end=True, stage=None, verbose=0):
        super().__init__()
        self.backup_dir = os.fspath(backup_dir)
        self.every = max(1, int(every))
        self.record = record
        self.delete_at_end = delete_at_end
        self.stage = stage
        self.verbose = verbose
        self.history = {}
        self.restored_epoch = 0
        self.restored_from = None

    # ------------------------------------------------------------------ paths

    def weights_path(self, epoch):
        return os.path.join(self.backup_dir, f"epoch-{epoch:04d}.weights.h5")

    def json_path(self, epoch):
        return os.path.join(self.backup_dir, f"epoch-{epoch:04d}.json")

    def _say(self, text):
        if self.verbose:
            print(f"[{self.stage}] {text}" if self.stage else text, flush=True)

    # ------------------------------------------------------------------ restore

    def on_train_begin(self, logs=None):
        self.history = {}
        self.restored_epoch, self.restored_from = 0, None
        candidates = backup_files(self.backup_dir)
        if not candidates:
            return
        if not self.model.built:
            raise ValueError(f"EpochBackup: build the model before fit() to restore {self.backup_dir}")
        failures = []
        for position, (epoch, weights, meta_path) in enumerate(candidates):
            try:
                epoch, history = self._restore(epoch, weights, meta_path)
            except Exception as error:  # noqa: BLE001 - any failure to read a backup means: try the one before
                reason = " ".join(str(error).split()) or type(error).__name__
                failures.append(f"{weights} ({reason})")
                if position + 1 < len(candidates):
                    self._say(f"backup {weights} is unreadable ({reason}); trying the one before")
                continue
            for _, _, unreadable in candidates[:position]:  # newer backups that failed: no longer complete,
                if unreadable is not None:  # so they are neither tried again nor kept in their place
                    with contextlib.suppress(OSError):
                        os.remove(unreadable)
            self.model._initial_epoch = epoch
            self.history = history
            self.restored_epoch, self.restored_from = epoch, weights
            self._say(f"resuming after epoch {epoch} from the backup {weights}")
            return
        raise BackupError(
            f"no backup in {self.backup_dir} reads back: {'; '.join(failures)}. Delete {self.backup_dir} "
            "(or rerun with --no-resume; a recipe: --force) to start this training over"
        )

    def _restore(self, epoch, weights, meta_path):
        """Loads one backup into the model: (epoch to go on from, logs of the epochs before)."""
        size = os.path.getsize(weights)
        if size == 0:
            raise CorruptFileError(f"{weights} is empty")
        if meta_path is None:  # Keras' BackupAndRestore
            legacy = read_json(os.path.join(self.backup_dir, KERAS_METADATA), default={})
            epoch, meta = int(legacy.get("epoch", 0)), {"history": {}}
        else:
            meta = read_backup_json(meta_path)
            if meta.get("weights_bytes") not in (None, size):
                raise CorruptFileError(f"{weights} has {size} bytes, its backup json says {meta['weights_bytes']}")
            epoch = meta["epoch"]
        optimizer = getattr(self.model, "optimizer", None)
        if optimizer is not None and not optimizer.built:
            optimizer.build(self.model.trainable_variables)  # its slots must exist to be loaded
        self.model.load_weights(weights)
        history = {key: list(values)[:epoch] for key, values in (meta.get("history") or {}).items()}
        return epoch, history

    # ------------------------------------------------------------------ save

    def on_epoch_end(self, epoch, logs=None):
        for key, value in (logs or {}).items():
            try:
                self.history.setdefault(key, []).append(float(value))
            except (TypeError, ValueError):
                continue
        if (epoch + 1) % self.every == 0:
            self.save(epoch + 1)

    def save(self, epoch):
        """Writes the backup after `epoch` (1-based count of finished epochs), then removes all
        but the two newest complete backups."""
        os.makedirs(self.backup_dir, exist_ok=True)
        weights, meta_path = self.weights_path(epoch), self.json_path(epoch)
        if os.path.exists(meta_path):  # a rewritten epoch (after a fallback): its old json must not
            os.remove(meta_path)  # pair with the new weights
        with replacing(weights) as temporary:
            self.model.save_weights(temporary)
        meta = {
            "epoch": int(epoch),
            "weights": os.path.basename(weights),
            "weights_bytes": os.path.getsize(weights),
            "history": self.history,
            "record": self.record,
        }
        write_json(meta_path, meta)
        self._prune()

    def _prune(self):
        kept = [entry for entry in backup_files(self.backup_dir) if entry[2] is not None][:KEPT_BACKUPS]
        kept_names = {os.path.basename(path) for entry in kept for path in entry[1:]}
        # json files first: a kill in between leaves weights without a json, which are ignored
        for name in sorted(os.listdir(self.backup_dir), key=lambda name: not name.endswith(".json")):
            obsolete = (BACKUP_NAME.match(name) or BACKUP_JSON.match(name)) and name not in kept_names
            if obsolete or is_temporary(name) or name in (KERAS_WEIGHTS, KERAS_METADATA, KERAS_WEIGHTS + ".bkp"):
                with contextlib.suppress(OSError):
                    os.remove(os.path.join(self.backup_dir, name))

    def on_train_end(self, logs=None):
        self.model._initial_epoch = None
        if self.delete_at_end:
            shutil.rmtree(self.backup_dir, ignore_errors=True)


# ----------------------------------------------------------------------------- logs


class LearningRateLog(keras.callbacks.Callback):
    """Puts the optimizer's current learning rate (the schedule's value at its iteration count,
    i.e. of the next step) into the epoch's logs as `learning_rate`: History, the CSV log, the
    backups and TensorBoard then have it."""

    def on_epoch_end(self, epoch, logs=None):
        optimizer = getattr(self.model, "optimizer", None)
        if logs is None or optimizer is None:
            return
        optimizer = getattr(optimizer, "inner_optimizer", optimizer)  # under a LossScaleOptimizer
        logs[LEARNING_RATE_KEY] = float(keras.ops.convert_to_numpy(optimizer.learning_rate))


def _numeric(logs):
    """The finite-or-not float values of an epoch's logs (other entries dropped)."""
    values = {}
    for key, value in (logs or {}).items():
        try:
            values[key] = float(value)
        except (TypeError, ValueError):
            continue
    return values


class CsvLog(keras.callbacks.Callback):
    """One CSV row per epoch: `epoch` (1-based: finished epochs), then every logged value (loss
    terms, `learning_rate`, `val_map07` / `val_map12` on validation epochs, empty elsewhere).

    The whole file is rewritten atomically after every epoch (`dked_tf.files.write_text_atomic`;
    a few hundred rows at most), so a kill leaves the previous complete file, never half a row.
    A resumed run keeps the rows of the epochs before it (those up to where it goes on from, read
    back from the file) and rewrites the rest; a run started over drops them all.
    """

    def __init__(self, path):
        super().__init__()
        self.path = os.fspath(path)
        self.rows = []
        self._started = False

    def on_train_begin(self, logs=None):
        self.rows, self._started = [], False

    def _earlier_rows(self, done):
        """Rows of epochs 1..done from the existing file (none when it is unreadable)."""
        try:
            with open(self.path, encoding="utf-8", newline="") as handle:
                rows = list(csv.DictReader(handle))
        except (OSError, UnicodeDecodeError, csv.Error):
            return []
        kept = []
        for row in rows:
            try:
                number = int(row.get("epoch", ""))
            except ValueError:
                continue
            if number <= done:
                kept.append({key: value for key, value in row.items() if key and value not in (None, "")})
        return kept

    def on_epoch_end(self, epoch, logs=None):
        if not self._started:  # epoch: the 0-based index of this epoch = epochs done before this part
            self.rows = self._earlier_rows(epoch)
            self._started = True
        self.rows.append({"epoch": epoch + 1, **_numeric(logs)})
        columns = []
        for row in self.rows:
            columns += [key for key in row if key not in columns]
        text = io.StringIO()
        writer = csv.DictWriter(text, fieldnames=columns, restval="", lineterminator="\n")
        writer.writeheader()
        writer.writerows(self.rows)
        os.makedirs(os.path.dirname(os.path.abspath(self.path)), exist_ok=True)
        write_text_atomic(self.path, text.getvalue())


def _plugin_metadata(plugin_name):
    """SummaryMetadata of a TensorBoard plugin ("scalars", "images"; version-0 plugin data is empty)."""
    metadata = summary_pb2.SummaryMetadata()
    metadata.plugin_data.plugin_name = plugin_name
    return metadata


class TensorBoardLog(keras.callbacks.Callback):
    """TensorBoard event files in `log_dir`: every logged value of an epoch as a scalar under its
    log name (`loss`, `total`, the loss terms, `learning_rate`, `val_map07`, `val_map12`), at step
    = epoch (1-based); on validation epochs also up to `max_images` validation images with the
    ground truth (green) and the detections of score >= DRAWN_SCORE (orange) drawn, under
    `val_detections/<image id>`.

    Written with TensorFlow's own `tf.summary.write` and the scalar / image plugin metadata, so
    the `tensorboard` package is needed only to view them (`tensorboard --logdir DIR`). Event
    files are append-only record streams, each record with its own checksum: TensorBoard reads a
    file cut short by a kill up to its last whole record, so they are not written atomically (a
    resumed run opens a new file next to the old one).

    validation: the `MeanAPCallback` of this fit (its `last_detections`, `val_data` records and
    `class_names`), or None.
    """

    def __init__(self, log_dir, validation=None, max_images=4):
        super().__init__()
        self.log_dir = os.fspath(log_dir)
        self.validation = validation
        self.max_images = int(max_images)
        self._writer = None
        self._drawn_for = None

    def _get_writer(self):
        if self._writer is None:
            os.makedirs(self.log_dir, exist_ok=True)
            self._writer = tf.summary.create_file_writer(self.log_dir)
        return self._writer

    def on_epoch_end(self, epoch, logs=None):
        step = epoch + 1
        scalars = _numeric(logs)
        writer = self._get_writer()
        with writer.as_default(), tf.device("/CPU:0"):
            for name, value in scalars.items():
                tf.summary.write(name, tf.constant(value, tf.float32), step=step, metadata=_plugin_metadata("scalars"))
            if self.validation is not None and any(key.startswith("val_map") for key in scalars):
                for tag, image in self._drawn_images():
                    ok, png = cv2.imencode(".png", cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
                    if not ok:
                        continue
                    height, width = image.shape[:2]
                    tensor = tf.constant([str(width).encode(), str(height).encode(), png.tobytes()])
                    tf.summary.write(tag, tensor, step=step, metadata=_plugin_metadata("images"))
        writer.flush()

    def _drawn_images(self):
        """(tag, RGB uint8 image) of the first validation records with their detections drawn."""
        detections = getattr(self.validation, "last_detections", None)
        records = self.validation.val_data
        if not detections or not isinstance(records, (list, tuple)) or self.max_images <= 0:
            return []
        drawn = []
        for record in list(records)[: self.max_images]:
            picture = visualize.draw_record(record, detections, DRAWN_SCORE)
            if picture is not None:
                drawn.append((f"val_detections/{record.image_id}", picture))
        return drawn

    def on_train_end(self, logs=None):
        if self._writer is not None:
            self._writer.close()
            self._writer = None


# ----------------------------------------------------------------------------- best weights


class BestWeights(keras.callbacks.Callback):
    """Keeps the weights of the best `monitor` value so far (higher is better, e.g. `val_map07`
    of `MeanAPCallback`, which must come before this callback) in `weights_path`, and stops the
    training when it has not improved for `patience` epochs (0: never).

    The weights are those of the detector (a Distiller's student: `inference_model`), saved with
    `save_weights` (a `.weights.h5` that loads into the detector of the run's model.json), atomically;
    then `<weights_path without .weights.h5>.json` is written (atomically, last) with the epoch
    (1-based), the value, every logged value of that epoch, the size of the weights file and the
    run `record` (weights_path None: nothing is saved, the best is only tracked, e.g. for early
    stopping). A resumed run goes on from the best of the epochs before it when that json
    carries the same record and an epoch it has done; otherwise (a run started over, another
    config) the first validation replaces the files.
    """

    def __init__(self, weights_path, monitor="val_map07", patience=0, record=None, stage=None, verbose=0):
        super().__init__()
        if weights_path is not None and not os.fspath(weights_path).endswith(".weights.h5"):
            raise ValueError(f"BestWeights: weights_path must end in .weights.h5, got {weights_path}")
        self.weights_path = None if weights_path is None else os.fspath(weights_path)
        self.json_path = None if weights_path is None else self.weights_path[: -len(".weights.h5")] + ".json"
        self.monitor = monitor
        self.patience = int(patience)
        self.record = record
        self.stage = stage
        self.verbose = verbose
        self.best = None
        self.best_epoch = None
        self.stopped_epoch = None
        self._started = False

    def on_train_begin(self, logs=None):
        self.best, self.best_epoch, self.stopped_epoch, self._started = None, None, None, False

    def _say(self, text):
        if self.verbose:
            print(f"[{self.stage}] {text}" if self.stage else text, flush=True)

    def _adopt_earlier_best(self, done):
        """The best of the epochs before this part of the run (1..done), from the json."""
        if self.json_path is None:
            return
        try:
            meta = read_json(self.json_path)
        except CorruptFileError:
            return
        if not isinstance(meta, dict) or meta.get("record") != self.record or meta.get("monitor") != self.monitor:
            return
        epoch, value = meta.get("epoch"), meta.get("value")
        if not isinstance(epoch, int) or not 1 <= epoch <= done or not isinstance(value, (int, float)):
            return
        if not os.path.isfile(self.weights_path) or os.path.getsize(self.weights_path) != meta.get("weights_bytes"):
            return
        self.best, self.best_epoch = float(value), epoch

    def on_epoch_end(self, epoch, logs=None):
        if not self._started:  # epoch: the 0-based index of this epoch = epochs done before this part
            self._adopt_earlier_best(epoch)
            self._started = True
        value = (logs or {}).get(self.monitor)
        if value is None:
            return
        value = float(value)
        if math.isfinite(value) and (self.best is None or value > self.best):
            self.best, self.best_epoch = value, epoch + 1
            if self.weights_path is not None:
                self.save(epoch + 1, value, logs)
                self._say(f"best {self.monitor} {value:.4f} at epoch {epoch + 1}: {self.weights_path}")
        elif self.patience and self.best_epoch is not None and epoch + 1 - self.best_epoch >= self.patience:
            self.model.stop_training = True
            self.stopped_epoch = epoch + 1
            self._say(
                f"early stop after epoch {epoch + 1}: {self.monitor} has not improved on {self.best:.4f} "
                f"(epoch {self.best_epoch}) for {epoch + 1 - self.best_epoch} epochs"
            )

    def save(self, epoch, value, logs=None):
        """Writes the weights, then the json (epoch 1-based)."""
        os.makedirs(os.path.dirname(os.path.abspath(self.weights_path)), exist_ok=True)
        if os.path.exists(self.json_path):  # the old json must not pair with the new weights
            os.remove(self.json_path)
        with replacing(self.weights_path) as temporary:
            inference_model(self.model).save_weights(temporary)
        meta = {
            "monitor": self.monitor,
            "value": value,
            "epoch": int(epoch),
            "logs": _numeric(logs),
            "weights": os.path.basename(self.weights_path),
            "weights_bytes": os.path.getsize(self.weights_path),
            "record": self.record,
        }
        write_json(self.json_path, meta)
