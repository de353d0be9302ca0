"""The package's floors import only downward: nothing under dked_tf/ imports the faces (the CLI
commands, the recipes); export/ does not import evaluation/ (evaluation uses export's runners)."""

import ast
import os

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGE = os.path.join(ROOT, "dked_tf")


def _imports(path):
    with open(path, encoding="utf-8") as handle:
        tree = ast.parse(handle.read(), path)
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            yield node.module
            yield from (f"{node.module}.{alias.name}" for alias in node.names)


def _modules(folder):
    for directory, _, files in os.walk(folder):
        for name in files:
            if name.endswith(".py"):
                yield os.path.join(directory, name)


def test_library_does_not_import_the_faces():
    faces = os.path.join(PACKAGE, "commands")
    bad = []
    for path in _modules(PACKAGE):
        if path.startswith(faces + os.sep) or path == os.path.join(PACKAGE, "cli.py"):
            continue
        for name in _imports(path):
            if name.startswith(("dked_tf.commands", "recipes")):
                bad.append(f"{os.path.relpath(path, ROOT)} imports {name}")
    assert not bad, bad


def test_export_does_not_import_evaluation():
    bad = [
        f"{os.path.relpath(path, ROOT)} imports {name}"
        for path in _modules(os.path.join(PACKAGE, "export"))
        for name in _imports(path)
        if name.startswith("dked_tf.evaluation")
    ]
    assert not bad, bad
