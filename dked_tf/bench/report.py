"""Shared helpers of the benchmarks: timing, a plain-text table, a JSON file."""

import json
import os
import platform
import time

import numpy as np

from dked_tf.files import write_text_atomic


def time_call(fn, *, repeat=5, warmup=1, min_seconds=0.0):
    """Runs `fn()` `warmup` times, then at least `repeat` times (and at least `min_seconds`).

    Returns: dict with `median_s`, `min_s`, `mean_s`, `runs` (seconds, wall clock).
    """
    for _ in range(warmup):
        fn()
    times = []
    start = time.perf_counter()
    while len(times) < repeat or (time.perf_counter() - start) < min_seconds:
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return {
        "median_s": float(np.median(times)),
        "min_s": float(np.min(times)),
        "mean_s": float(np.mean(times)),
        "runs": len(times),
    }


def format_table(rows, columns=None):
    """rows: list of dicts. Returns a Markdown-style table as text."""
    if not rows:
        return "(no rows)"
    columns = columns or list(rows[0].keys())

    def cell(value):
        if isinstance(value, float):
            return f"{value:.4g}" if abs(value) < 1e5 else f"{value:.3e}"
        return str(value)

    body = [[cell(row.get(c, "")) for c in columns] for row in rows]
    widths = [max(len(str(c)), *(len(r[i]) for r in body)) for i, c in enumerate(columns)]
    lines = [
        "| " + " | ".join(str(c).ljust(w) for c, w in zip(columns, widths)) + " |",
        "|" + "|".join("-" * (w + 2) for w in widths) + "|",
    ]
    lines += ["| " + " | ".join(v.ljust(w) for v, w in zip(r, widths)) + " |" for r in body]
    return "\n".join(lines)


def machine_info():
    return {
        "python": platform.python_version(),
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
        "time": time.strftime("%Y-%m-%d %H:%M:%S"),
    }


def write_report(name, rows, *, path=None, extra=None, columns=None, title=None):
    """Prints the table and writes `{"benchmark", "machine", "rows", ...extra}` as JSON."""
    path = path or os.path.join("bench_results", f"{name}.json")
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    print(f"\n## {title or name}\n")
    print(format_table(rows, columns))
    payload = {"benchmark": name, "machine": machine_info(), "rows": rows, **(extra or {})}
    write_text_atomic(path, json.dumps(payload, indent=2, default=float))
    print(f"\nwritten {path}")
    return payload
