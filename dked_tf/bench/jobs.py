"""Benchmark: two trainings one after the other vs side by side (`dked_tf.jobs`).

    python -m dked_tf bench jobs [--quick] [--model lodet_mobilenetv2_s] [--size 192] [--steps 40]

Each training compiles a preset detector and fits it for 1 + `--steps` steps on one repeated
synthetic batch, in its own spawned process (`dked_tf.jobs.run_jobs`):
  sequential  parallel=1: one training at a time, each with all cores as TensorFlow threads
              (what the recipe does with seed_jobs 1);
  side by side  parallel=2: both at once, cores / 2 threads each (seed_jobs 2).
Columns: wall_s (both trainings, process start included), first_step_s (trace + first run,
mean of the two), step_ms (median of the later steps, mean of the two). speedup = sequential
wall / side-by-side wall, measured in this run; step_throughput = 2 x sequential step_ms /
side-by-side step_ms (the steady-state gain without the traces).
"""

import argparse
import json
import os
import tempfile
import time

import keras
import numpy as np
import tensorflow as tf

from dked_tf.bench.distill import synthetic_batch
from dked_tf.bench.report import write_report
from dked_tf.experiment.optimizer import prebuild_optimizer
from dked_tf.jobs import Job, cpu_cores, run_jobs, threads_per_job
from dked_tf.models.presets import build_detector


def _train_steps(model_name, size, batch, steps, result_path):
    """Job body: fit `model_name` for 1 + steps steps; writes {"first_step_s", "step_ms"}.

    Runs in a spawned child (`dked_tf.jobs`) that sets TensorFlow's thread counts after importing
    this module and before calling this function: no TensorFlow op may run at this module's import."""
    images, targets = synthetic_batch(batch, size, 1)
    dataset = tf.data.Dataset.from_tensors((images, targets)).repeat()
    keras.utils.set_random_seed(0)
    model = build_detector(model_name, 1, size)
    model.compile(optimizer=keras.optimizers.AdamW(1e-4))
    prebuild_optimizer(model)
    ends = []

    class Clock(keras.callbacks.Callback):
        def on_train_batch_end(self, index, logs=None):
            ends.append(time.perf_counter())

    start = time.perf_counter()
    model.fit(dataset, epochs=1, steps_per_epoch=steps + 1, callbacks=[Clock()], verbose=0, shuffle=False)
    times = np.diff(np.array([start] + ends))
    with open(result_path, "w", encoding="utf-8") as handle:
        json.dump({"first_step_s": float(times[0]), "step_ms": float(np.median(times[1:]) * 1e3)}, handle)


def _measure(parallel, model_name, size, batch, steps, folder):
    tag = f"parallel{parallel}"
    jobs = [
        Job(
            f"{tag} run {k}",
            _train_steps,
            (model_name, size, batch, steps, os.path.join(folder, f"{tag}_{k}.json")),
            os.path.join(folder, f"{tag}_{k}.log"),
        )
        for k in range(2)
    ]
    start = time.perf_counter()
    run_jobs(jobs, parallel=parallel, echo=lambda line: None)
    wall = time.perf_counter() - start
    runs = []
    for job in jobs:
        with open(job.args[-1], encoding="utf-8") as handle:
            runs.append(json.load(handle))
    return {
        "mode": "sequential" if parallel == 1 else "side by side",
        "jobs_at_once": parallel,
        "threads_each": threads_per_job(parallel),
        "wall_s": wall,
        "first_step_s": float(np.mean([r["first_step_s"] for r in runs])),
        "step_ms": float(np.mean([r["step_ms"] for r in runs])),
    }


def main(argv=None):
    parser = argparse.ArgumentParser(
        prog="dked-tf bench jobs", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="tiny student at 64 px, 8 steps")
    parser.add_argument("--model", default=None, help="preset (default lodet_mobilenetv2_s)")
    parser.add_argument("--size", type=int, default=None, help="input side, px (default 192)")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--steps", type=int, default=None, help="timed steps after the first (default 40)")
    parser.add_argument("--output", default=None, help="JSON path (default bench_results/)")
    args = parser.parse_args(argv)

    if args.quick:
        model_name, size, steps = args.model or "lodet_mobilenetv2_t", args.size or 64, args.steps or 8
    else:
        model_name, size, steps = args.model or "lodet_mobilenetv2_s", args.size or 192, args.steps or 40
    if cpu_cores() < 2:
        print("bench jobs: this machine has 1 core; side by side would share it")
    with tempfile.TemporaryDirectory(prefix="dked_bench_jobs_") as folder:
        rows = []
        for parallel in (1, 2):
            print(
                f"  {'sequential' if parallel == 1 else 'side by side'}: 2 x {model_name} at {size} px, "
                f"{steps + 1} steps ...",
                flush=True,
            )
            rows.append(_measure(parallel, model_name, size, args.batch, steps, folder))
    sequential, side = rows
    for row in rows:
        row.update(model=model_name, size=size, batch=args.batch)
    side["speedup"] = sequential["wall_s"] / side["wall_s"]
    side["step_throughput"] = 2 * sequential["step_ms"] / side["step_ms"]
    write_report(
        "jobs",
        rows,
        path=args.output,
        title=f"Two trainings one after the other vs side by side ({cpu_cores()} cores)",
        columns=[
            "mode",
            "model",
            "size",
            "batch",
            "jobs_at_once",
            "threads_each",
            "wall_s",
            "first_step_s",
            "step_ms",
            "speedup",
            "step_throughput",
        ],
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
