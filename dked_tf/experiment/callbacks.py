"""Callbacks of a training run: one progress line per epoch with the ETA, periodic backups."""

import contextlib
import os
import re
import shutil
import time

import keras
import numpy as np

from dked_tf.files import CorruptFileError, is_temporary, read_json, replacing, write_json

# Loss keys shown on the per-epoch line (the Distiller logs `total` and `jol_total`).
SHOWN_LOGS = ("loss", "total", "jol_total", "val_map07")
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
    """

    def __init__(self, stage, epochs, verbose=1, clock_path=None, previous_seconds=0.0):
        super().__init__()
        self.stage = stage
        self.epochs = int(epochs)
        self.verbose = verbose
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
        # leading newline: Keras' progress bar of this epoch has not ended its line yet
        print(
            f"\n[{self.stage}] epoch {epoch + 1}/{self.epochs} {losses} | elapsed {format_clock(self.seconds)}, "
            f"ETA {format_clock(left)}",
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
