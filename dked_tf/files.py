"""Atomic file writes: a temporary file in the target's folder, then `os.replace`, so a crash,
a kill or a full disk leaves the old file or the new one, never half of one. Imports nothing of
the package, so every floor may use it (docs/architecture.md).

    write_json(path, data)                   # JSON, atomically
    write_text_atomic(path, text)            # text, atomically
    link_or_copy(source, path)               # a hard link (or a copy) of a file, atomically
    with replacing(path) as temporary:       # any writer that takes a path (Keras, cv2, zip)
        model.save_weights(temporary)
"""

import contextlib
import json
import os
import secrets
import shutil


class CorruptFileError(OSError):
    """A file that exists but cannot be read back (empty, truncated, not the expected format);
    the message names the file. An OSError, so every handler of unreadable files catches it."""


# Temporary files start with this prefix (hidden, and recognisable as leftovers of a crash).
TEMPORARY_PREFIX = ".tmp-"


def temporary_path(path):
    """A fresh path next to `path`, in the same folder (so `os.replace` is atomic), ending like
    `path` (Keras insists on `.weights.h5`): `.tmp-<pid>-<random>-<name>`."""
    folder, name = os.path.split(os.fspath(path))
    return os.path.join(folder, f"{TEMPORARY_PREFIX}{os.getpid()}-{secrets.token_hex(4)}-{name}")


def is_temporary(name):
    """True for the name of a temporary file left by `replacing` (a crash during a write)."""
    return os.path.basename(name).startswith(TEMPORARY_PREFIX)


def fsync_path(path):
    """Flushes a written file (or a folder's entries) to the disk; best effort where the system
    cannot (a folder on some file systems)."""
    flags = os.O_RDONLY | getattr(os, "O_DIRECTORY", 0) if os.path.isdir(path) else os.O_RDONLY
    try:
        handle = os.open(path, flags)
    except OSError:
        return
    try:
        os.fsync(handle)
    except OSError:
        pass
    finally:
        os.close(handle)


@contextlib.contextmanager
def replacing(path):
    """Context manager for writing `path` atomically: yields a temporary path in the same
    folder; when the block ends normally and the writer has created the file, the file is
    flushed to disk and moved over `path` (`os.replace`). When the block raises (a full disk,
    an interruption), the temporary file is removed and `path` is left as it was."""
    path = os.fspath(path)
    temporary = temporary_path(path)
    try:
        yield temporary
        if not os.path.exists(temporary):
            raise FileNotFoundError(f"{path}: the writer created no file (expected {temporary})")
        fsync_path(temporary)
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.remove(temporary)
        raise
    fsync_path(os.path.dirname(os.path.abspath(path)))


def write_bytes_atomic(path, data):
    """Writes `data` (bytes) to `path` atomically. Returns path."""
    with replacing(path) as temporary, open(temporary, "wb") as handle:
        handle.write(data)
    return path


def write_text_atomic(path, text):
    """Writes `text` (UTF-8) to `path` atomically. Returns path."""
    return write_bytes_atomic(path, text.encode("utf-8"))


def write_json(path, data):
    """Writes `data` as indented JSON to `path` atomically. Returns path."""
    return write_text_atomic(path, json.dumps(data, indent=2))


def read_json(path, default=None):
    """The JSON content of `path`, or `default` when the file does not exist. A file that is not
    valid UTF-8 JSON (empty, truncated, overwritten) raises CorruptFileError naming the path."""
    if not os.path.exists(path):
        return default
    try:
        with open(path, encoding="utf-8") as handle:
            return json.load(handle)
    except ValueError as error:  # json.JSONDecodeError and UnicodeDecodeError
        raise CorruptFileError(f"{path} is not a valid JSON file ({error})") from None


def link_or_copy(source, path, link=True):
    """Puts the file `source` at `path` atomically: a hard link (link=True; a copy when linking
    fails, e.g. across file systems) or a copy. Returns "same" (path already is source),
    "link" or "copy"."""
    if os.path.exists(path) and os.path.samefile(source, path):
        return "same"
    how = "copy"
    with replacing(path) as temporary:
        if link:
            try:
                os.link(source, temporary)
                how = "link"
            except OSError:  # another file system, or links not allowed
                pass
        if how == "copy":
            shutil.copyfile(source, temporary)
    return how
