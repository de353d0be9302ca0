"""Nothing lost on a crash, a kill or a full disk (issue #15, part A): atomic writes, the epoch
backups (two kept, a corrupt one detected and skipped), history across resumes, saved detectors.

The faults are injected: a writer that raises half-way (a kill or ENOSPC during a write), a real
SIGKILL of a training process while its backup is written, 0-byte and truncated files."""

import errno
import json
import os
import signal
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest
import tensorflow as tf

from dked_tf import files
from dked_tf.experiment import callbacks, train_lib
from dked_tf.experiment.saving import WEIGHTS_FILE, load_detector, save_detector

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# ----------------------------------------------------------------------------- atomic writes


def _names(folder):
    return sorted(os.listdir(folder))


def test_a_writer_that_dies_half_way_leaves_the_old_file_and_no_temporary(tmp_path):
    target = tmp_path / "results.json"
    files.write_json(str(target), {"map07": 0.5})
    with pytest.raises(RuntimeError, match="killed"):
        with files.replacing(str(target)) as temporary:
            with open(temporary, "w") as handle:
                handle.write('{"map07": 0.')  # half of the new content
            raise RuntimeError("killed")
    assert json.loads(target.read_text()) == {"map07": 0.5}
    assert _names(tmp_path) == ["results.json"]


def test_a_full_disk_during_write_json_keeps_the_old_file(tmp_path, monkeypatch):
    """ENOSPC after half of the bytes (as a full disk gives it): the old file stays whole."""
    target = tmp_path / "history.json"
    target.write_text('{"old": true}')
    real_open = open

    class FullDisk:
        def __init__(self, handle):
            self.handle = handle

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.handle.close()

        def write(self, data):
            self.handle.write(data[: len(data) // 2])
            self.handle.flush()
            raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(files, "open", lambda *a, **k: FullDisk(real_open(*a, **k)), raising=False)
    with pytest.raises(OSError, match="No space left"):
        files.write_json(str(target), {"new": list(range(100))})
    assert target.read_text() == '{"old": true}'
    assert _names(tmp_path) == ["history.json"]


def test_replacing_keeps_the_ending_keras_needs_and_the_folder(tmp_path):
    path = tmp_path / "model.weights.h5"
    with files.replacing(str(path)) as temporary:
        assert os.path.dirname(temporary) == str(tmp_path)
        assert temporary.endswith(".weights.h5") and files.is_temporary(temporary)
        with open(temporary, "wb") as handle:
            handle.write(b"x")
    assert path.read_bytes() == b"x" and _names(tmp_path) == ["model.weights.h5"]


@pytest.mark.parametrize("content", [b"", b'{"history": {"loss": [1.0, 0.', b"\xff\xfe\x00"])
def test_an_empty_truncated_or_binary_json_names_its_file(tmp_path, content):
    path = tmp_path / "model.json"
    path.write_bytes(content)
    with pytest.raises(files.CorruptFileError, match="model.json is not a valid JSON file"):
        files.read_json(str(path))


# ----------------------------------------------------------------------------- epoch backups

X = np.linspace(-1, 1, 16, dtype=np.float32)[:, None]
Y = 3 * X + 1


def _model():
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((1,)), keras.layers.Dense(1)])
    model.compile(optimizer=keras.optimizers.SGD(0.05, momentum=0.9), loss="mse")
    return model


def _fit(model, backup_dir, epochs=5, extra=(), **kwargs):
    backup = callbacks.EpochBackup(str(backup_dir), **kwargs)
    history = model.fit(X, Y, epochs=epochs, batch_size=4, shuffle=False, verbose=0, callbacks=[backup, *extra])
    return backup, history


def _interrupted(backup_dir, interrupt_before_epoch, epoch=3):
    """A run of 5 epochs stopped before epoch index `epoch`, backups kept."""
    with pytest.raises(RuntimeError, match="simulated interruption"):
        _fit(_model(), backup_dir, extra=[interrupt_before_epoch(epoch)])


@pytest.fixture(scope="module")
def uninterrupted():
    """Losses and final weights of the same 5 epochs without an interruption."""
    model = _model()
    history = model.fit(X, Y, epochs=5, batch_size=4, shuffle=False, verbose=0)
    return history.history["loss"], [w.numpy() for w in model.weights]


def test_two_complete_backups_are_kept(tmp_path):
    _fit(_model(), tmp_path / "b", delete_at_end=False)
    names = _names(tmp_path / "b")
    assert names == ["epoch-0004.json", "epoch-0004.weights.h5", "epoch-0005.json", "epoch-0005.weights.h5"]
    meta = json.loads((tmp_path / "b" / "epoch-0005.json").read_text())
    assert meta["epoch"] == 5 and len(meta["history"]["loss"]) == 5
    assert meta["weights_bytes"] == os.path.getsize(tmp_path / "b" / "epoch-0005.weights.h5")


def test_a_resumed_run_equals_the_uninterrupted_one_and_keeps_every_epoch(
    tmp_path, interrupt_before_epoch, uninterrupted
):
    losses, weights = uninterrupted
    _interrupted(tmp_path / "b", interrupt_before_epoch)
    model = _model()
    backup, history = _fit(model, tmp_path / "b")
    assert backup.restored_epoch == 3 and len(history.history["loss"]) == 2  # Keras' own: this part only
    np.testing.assert_allclose(backup.history["loss"], losses, rtol=1e-5)  # all five epochs
    for got, want in zip(model.weights, weights):
        np.testing.assert_allclose(got.numpy(), want, rtol=1e-5, atol=1e-6)
    assert not (tmp_path / "b").exists()  # delete_at_end


@pytest.mark.parametrize("damage", ["empty", "truncated", "garbage", "json"])
def test_a_corrupt_newest_backup_falls_back_to_the_previous_one(
    tmp_path, interrupt_before_epoch, uninterrupted, capsys, damage
):
    losses, weights = uninterrupted
    _interrupted(tmp_path / "b", interrupt_before_epoch)
    newest = tmp_path / "b" / "epoch-0003.weights.h5"
    if damage == "empty":
        newest.write_bytes(b"")
    elif damage == "truncated":
        newest.write_bytes(newest.read_bytes()[: os.path.getsize(newest) // 2])
    elif damage == "garbage":  # the same size, not an HDF5 file
        newest.write_bytes(b"\0" * os.path.getsize(newest))
    else:
        (tmp_path / "b" / "epoch-0003.json").write_text('{"epoch": 3, "hist')
    model = _model()
    backup, history = _fit(model, tmp_path / "b", verbose=1, stage="teacher")
    printed = capsys.readouterr().out
    if damage != "json":
        assert f"[teacher] backup {newest} is unreadable" in printed and "trying the one before" in printed
    assert backup.restored_epoch == 2 and len(history.history["loss"]) == 3
    np.testing.assert_allclose(backup.history["loss"], losses, rtol=1e-5)
    for got, want in zip(model.weights, weights):
        np.testing.assert_allclose(got.numpy(), want, rtol=1e-5, atol=1e-6)


def test_no_readable_backup_is_one_error_naming_the_files_and_what_to_do(tmp_path, interrupt_before_epoch):
    _interrupted(tmp_path / "b", interrupt_before_epoch)
    for name in ("epoch-0003.weights.h5", "epoch-0002.weights.h5"):
        (tmp_path / "b" / name).write_bytes(b"")
    with pytest.raises(callbacks.BackupError) as caught:
        _fit(_model(), tmp_path / "b")
    message = str(caught.value)
    assert "\n" not in message and "epoch-0003.weights.h5 (" in message and "epoch-0002.weights.h5 (" in message
    assert f"Delete {tmp_path / 'b'}" in message and "--no-resume" in message
    assert isinstance(caught.value, OSError)


def test_a_kill_inside_the_backup_writer_keeps_the_previous_backup(tmp_path, interrupt_before_epoch, uninterrupted):
    """The writer of epoch 3's backup dies after writing half of the file: the backup of epoch 2
    is whole, and the rerun goes on from it."""
    losses, _ = uninterrupted
    model = _model()
    real_save = model.save_weights

    def dying_save(path, *args, **kwargs):
        if os.path.basename(path).endswith("epoch-0003.weights.h5"):
            real_save(path, *args, **kwargs)
            with open(path, "r+b") as handle:
                handle.truncate(os.path.getsize(path) // 2)
            raise KeyboardInterrupt("killed while writing")
        return real_save(path, *args, **kwargs)

    model.save_weights = dying_save
    with pytest.raises(KeyboardInterrupt):
        _fit(model, tmp_path / "b")
    assert _names(tmp_path / "b") == [
        "epoch-0001.json",
        "epoch-0001.weights.h5",
        "epoch-0002.json",
        "epoch-0002.weights.h5",
    ]
    backup, _ = _fit(_model(), tmp_path / "b")
    assert backup.restored_epoch == 2
    np.testing.assert_allclose(backup.history["loss"], losses, rtol=1e-5)


def test_weights_without_their_json_are_ignored(tmp_path, interrupt_before_epoch):
    """A kill between the weights and the json of a backup: the weights alone do not count."""
    _interrupted(tmp_path / "b", interrupt_before_epoch)
    (tmp_path / "b" / "epoch-0003.json").unlink()
    backup, _ = _fit(_model(), tmp_path / "b")
    assert backup.restored_epoch == 2


def test_a_backup_written_by_keras_backup_and_restore_is_resumed(tmp_path, interrupt_before_epoch, uninterrupted):
    """Backups of the previous versions (Keras' latest.weights.h5 + training_metadata.json)."""
    losses, weights = uninterrupted
    with pytest.raises(RuntimeError):
        _model().fit(
            X,
            Y,
            epochs=5,
            batch_size=4,
            shuffle=False,
            verbose=0,
            callbacks=[keras.callbacks.BackupAndRestore(str(tmp_path / "b")), interrupt_before_epoch(3)],
        )
    assert "latest.weights.h5" in _names(tmp_path / "b")
    model = _model()
    backup, history = _fit(model, tmp_path / "b")
    assert backup.restored_epoch == 3 and len(history.history["loss"]) == 2
    for got, want in zip(model.weights, weights):
        np.testing.assert_allclose(got.numpy(), want, rtol=1e-5, atol=1e-6)


def test_a_zero_byte_keras_backup_says_which_file(tmp_path):
    """The issue's case: Keras' latest.weights.h5 left at 0 bytes by a kill, no other copy."""
    folder = tmp_path / "b"
    folder.mkdir()
    (folder / "latest.weights.h5").write_bytes(b"")
    (folder / "training_metadata.json").write_text('{"epoch": 2, "batch": 0}')
    with pytest.raises(callbacks.BackupError, match=r"latest\.weights\.h5 \(.*is empty\)"):
        _fit(_model(), folder)


def test_sigkill_while_the_backup_is_written_then_resume(tmp_path, uninterrupted):
    """A real SIGKILL of the training process in the middle of writing epoch 3's backup (half
    of the file on disk): the rerun resumes from epoch 2's backup and ends like an
    uninterrupted run."""
    losses, weights = uninterrupted
    folder = tmp_path / "b"
    script = textwrap.dedent(
        f"""
        import os, signal
        import keras, numpy as np
        from dked_tf.experiment.callbacks import EpochBackup
        X = np.linspace(-1, 1, 16, dtype=np.float32)[:, None]
        Y = 3 * X + 1
        keras.utils.set_random_seed(0)
        model = keras.Sequential([keras.Input((1,)), keras.layers.Dense(1)])
        model.compile(optimizer=keras.optimizers.SGD(0.05, momentum=0.9), loss="mse")
        real_save = model.save_weights
        def save(path, *args, **kwargs):
            real_save(path, *args, **kwargs)
            if path.endswith("epoch-0003.weights.h5"):
                with open(path, "r+b") as handle:
                    handle.truncate(os.path.getsize(path) // 2)
                os.kill(os.getpid(), signal.SIGKILL)
        model.save_weights = save
        model.fit(X, Y, epochs=5, batch_size=4, shuffle=False, verbose=0, callbacks=[EpochBackup({str(folder)!r})])
        """
    )
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""), TF_CPP_MIN_LOG_LEVEL="3")
    proc = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    left = _names(folder)
    assert [name for name in left if not files.is_temporary(name)] == [
        "epoch-0001.json",
        "epoch-0001.weights.h5",
        "epoch-0002.json",
        "epoch-0002.weights.h5",
    ]
    assert any(files.is_temporary(name) for name in left)  # the half-written file, never renamed
    model = _model()
    backup, _ = _fit(model, folder, delete_at_end=False)
    assert backup.restored_epoch == 2
    np.testing.assert_allclose(backup.history["loss"], losses, rtol=1e-5)
    for got, want in zip(model.weights, weights):
        np.testing.assert_allclose(got.numpy(), want, rtol=1e-5, atol=1e-6)
    assert not any(files.is_temporary(name) for name in _names(folder))  # cleaned up by the next backup


def test_fit_resumes_a_run_killed_after_its_last_backup_with_every_epoch(tmp_path, uninterrupted):
    """train_lib.fit keeps the backups (keep_backup) for its caller; rerun after a kill that
    came before the model was saved, it has no epoch left to train and returns the logs of all
    of them, read back from the backup."""
    losses, weights = uninterrupted
    dataset = tf.data.Dataset.from_tensor_slices((X, Y)).batch(4)
    first = train_lib.fit(
        _model(), dataset, epochs=5, stage="s", checkpoint_dir=str(tmp_path), verbose=0, keep_backup=True
    )
    assert _names(tmp_path / "backup")[-1] == "epoch-0005.weights.h5" and (tmp_path / "clock.json").exists()
    model = _model()
    outcome = train_lib.fit(
        model, dataset, epochs=5, stage="s", checkpoint_dir=str(tmp_path), verbose=0, keep_backup=True
    )
    np.testing.assert_allclose(outcome.history["loss"], losses, rtol=1e-5)
    assert outcome.history == first.history and outcome.train_seconds >= first.train_seconds
    for got, want in zip(model.weights, weights):
        np.testing.assert_allclose(got.numpy(), want, rtol=1e-5, atol=1e-6)
    train_lib.remove_backup(str(tmp_path))
    assert not tmp_path.exists()


# ----------------------------------------------------------------------------- saved detectors


def test_a_kill_while_a_finished_model_is_replaced_keeps_the_old_one(tiny_detector, tmp_path):
    run = str(tmp_path / "run")
    model = tiny_detector("lodet_mobilenetv2_t", 1, seed=1, forward_size=64)
    save_detector(model, run, architecture="lodet_mobilenetv2_t", class_names=("ship",), image_size=64)
    before = {name: (tmp_path / "run" / name).read_bytes() for name in os.listdir(run)}
    saved_weights = [w.numpy() for w in model.weights]

    def dying_save(path, *args, **kwargs):
        with open(path, "wb") as handle:
            handle.write(b"\x89HDF\r\n")  # the start of a weights file
        raise KeyboardInterrupt("killed while writing")

    model.save_weights = dying_save
    with pytest.raises(KeyboardInterrupt):
        save_detector(model, run, architecture="lodet_mobilenetv2_t", class_names=("other",), image_size=64)
    assert {name: (tmp_path / "run" / name).read_bytes() for name in os.listdir(run)} == before
    loaded, meta = load_detector(run)
    assert meta["class_names"] == ["ship"]
    for got, want in zip(loaded.weights, saved_weights):
        np.testing.assert_array_equal(got.numpy(), want)


def test_a_zero_byte_weights_file_is_named_when_loading(tiny_detector, tmp_path):
    run = str(tmp_path / "run")
    model = tiny_detector("lodet_mobilenetv2_t", 1, forward_size=64)
    save_detector(model, run, architecture="lodet_mobilenetv2_t", class_names=("ship",), image_size=64)
    (tmp_path / "run" / WEIGHTS_FILE).write_bytes(b"")
    with pytest.raises(files.CorruptFileError, match=r"model\.weights\.h5 cannot be read \(0 bytes"):
        load_detector(run)
