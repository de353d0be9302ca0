"""Atomic file writes: a temporary file in the target's folder, then `os.replace`, so a crash
leaves the old file or the new one, never half of one. Imports nothing of the package, so
every floor may use it (docs/architecture.md)."""

import json
import os


def write_text_atomic(path, text):
    """Writes `text` (UTF-8) to `path` atomically. Returns path."""
    temporary = f"{path}.tmp{os.getpid()}"
    with open(temporary, "w", encoding="utf-8") as handle:
        handle.write(text)
    os.replace(temporary, path)
    return path


def write_json(path, data):
    """Writes `data` as indented JSON to `path` atomically. Returns path."""
    return write_text_atomic(path, json.dumps(data, indent=2))


def read_json(path, default=None):
    """The JSON content of `path`, or `default` when the file does not exist."""
    if not os.path.exists(path):
        return default
    with open(path, encoding="utf-8") as handle:
        return json.load(handle)
