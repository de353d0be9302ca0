"""The `dked-tf` command: a dispatcher over `dked_tf/commands/<name>.py`.

Each command module defines `DESCRIPTION`, `add_arguments(parser)` and `run(args) -> int`; the
one-line help of each command is in `COMMANDS`.
Modules are imported only when their command runs, so `dked-tf --help` needs no TensorFlow.
A mistake of the user (`dked_tf.errors.USER_ERRORS`: a bad config value, annotation or input
file, a missing or unreadable file) ends a command with one line on stderr and exit code 2.
"""

import argparse
import importlib
import sys

from dked_tf.errors import EXIT_USER_ERROR, USER_ERRORS, error_line

COMMANDS = {
    "train": "train a detector (teacher or student) on HRSC2016, DOTA or the synthetic set",
    "distill": "train a student from a teacher with DKED",
    "evaluate": "score DOTA Task1 result files against ground truth (devkit VOC mAP or COCO AP50:95)",
    "predict": "detect objects in images or folders of any size (tiled, merged)",
    "export": "export a trained detector (SavedModel, TFLite, ONNX, TensorRT, TF-TRT)",
    "convert": "convert a dataset between HRSC2016, DOTA and YOLO-OBB",
    "bench": "run a benchmark from dked_tf/bench (prints a table, writes JSON)",
}


def build_parser():
    parser = argparse.ArgumentParser(
        prog="dked-tf",
        description="Lightweight oriented object detection with DKED knowledge distillation.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, help_text in COMMANDS.items():
        # Command modules are imported when their parser is needed: building one parser for
        # the `--help` of a single command imports only that module.
        sub.add_parser(name, help=help_text, add_help=False)
    return parser


def _command_parser(name):
    module = importlib.import_module(f"dked_tf.commands.{name}")
    parser = argparse.ArgumentParser(
        prog=f"dked-tf {name}",
        description=module.DESCRIPTION,
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    module.add_arguments(parser)
    return module, parser


def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    if not argv or argv[0] in ("-h", "--help"):
        parser.print_help()
        return 0
    name = argv[0]
    if name not in COMMANDS:
        parser.error(f"unknown command {name!r}; choose from {', '.join(COMMANDS)}")
    module, command_parser = _command_parser(name)
    args = command_parser.parse_args(argv[1:])
    try:
        return int(module.run(args) or 0)
    except USER_ERRORS as error:
        print(f"dked-tf {name}: error: {error_line(error)}", file=sys.stderr, flush=True)
        return EXIT_USER_ERROR


if __name__ == "__main__":
    sys.exit(main())
