"""`dked-tf bench NAME [options]`: run `dked_tf/bench/NAME.py`."""

import argparse
import importlib
import pkgutil

import dked_tf.bench

DESCRIPTION = "Run a benchmark. Each prints a table and writes JSON (default bench_results/NAME.json)."


def available():
    return sorted(
        info.name
        for info in pkgutil.iter_modules(dked_tf.bench.__path__)
        if not info.name.startswith("_") and info.name != "report"
    )


def add_arguments(parser):
    parser.add_argument("name", choices=available(), help="which benchmark")
    parser.add_argument("options", nargs=argparse.REMAINDER, help="options of that benchmark (see NAME --help)")


def run(args):
    module = importlib.import_module(f"dked_tf.bench.{args.name}")
    return module.main(args.options)
