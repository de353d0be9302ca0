"""Callbacks of a training run: one progress line per epoch with the ETA, periodic backups."""

import time

import keras
import numpy as np

from dked_tf.files import write_json

# Loss keys shown on the per-epoch line (the Distiller logs `total` and `jol_total`).
SHOWN_LOGS = ("loss", "total", "jol_total", "val_map07")


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


class EpochBackup(keras.callbacks.BackupAndRestore):
    """`keras.callbacks.BackupAndRestore` that writes its backup every `every` epochs (Keras'
    own writes after every epoch or every N batches); restoring is unchanged."""

    def __init__(self, backup_dir, every=1):
        super().__init__(backup_dir, save_freq="epoch", delete_checkpoint=True)
        self.every = max(1, int(every))

    def on_epoch_end(self, epoch, logs=None):
        if (epoch + 1) % self.every == 0:
            super().on_epoch_end(epoch, logs)
