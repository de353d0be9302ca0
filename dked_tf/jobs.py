"""Independent trainings side by side, in child processes that split the CPU cores.

A small detector's training step leaves CPU cores idle: it is thousands of small ops, mostly
run one after another. Two trainings in two processes with one core each finish sooner than
the same two run one after the other on both cores: on 2 cores, `dked-tf bench jobs` measures
1.6x for two small students at 192 px, and the default recipe's seed trainings (real data
pipeline, backups, distillation) finished 1.35x sooner.

    jobs = [Job("seed 0", train_seed, (0,), "logs/seed0.log"), Job("seed 1", train_seed, (1,), "logs/seed1.log")]
    run_jobs(jobs, parallel=2)

Each job runs `function(*args)` in a fresh (spawned) process whose TensorFlow uses
`cores // parallel` intra-op and inter-op threads, and whose stdout and stderr go to its log
file (appended). Log lines that start with a bracketed tag (`[student] epoch 3/12 ...`,
`[02:10] ...`) are echoed as they appear, prefixed with the job's label. A job that fails
stops the run with its exit code, log path and the end of its log (a user's mistake, e.g. a bad
file, is one line there, `dked_tf.errors`, instead of a traceback).
"""

from __future__ import annotations

import contextlib
import dataclasses
import multiprocessing
import os
import re
import signal
import sys
import threading
import time
import traceback
from typing import Callable

from dked_tf.errors import EXIT_USER_ERROR, USER_ERRORS, error_line

ECHOED = re.compile(r"^\[[^\]\s]+\] ")


@dataclasses.dataclass
class Job:
    """label: shown before its echoed lines. function: a module-level (picklable) callable run
    as function(*args) in the child. log_path: the child's stdout and stderr (appended)."""

    label: str
    function: Callable
    args: tuple = ()
    log_path: str = ""


class JobError(RuntimeError):
    """A job's process ended with a non-zero exit code."""


def cpu_cores():
    """CPU cores this process may run on."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return max(1, os.cpu_count() or 1)


def threads_per_job(parallel, cores=None):
    """TensorFlow threads of each of `parallel` jobs sharing `cores` (at least 1)."""
    return max(1, (cores or cpu_cores()) // max(1, int(parallel)))


def _child(function, args, threads, log_path):
    """Entry point of a job's process: log redirection, TensorFlow threads, then the job."""
    log = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.dup2(log, 1)
    os.dup2(log, 2)
    os.close(log)
    sys.stdout.reconfigure(line_buffering=True)
    sys.stderr.reconfigure(line_buffering=True)
    print(f"=== started {time.strftime('%Y-%m-%d %H:%M:%S')}, {threads} TensorFlow thread(s) ===", flush=True)
    try:
        import tensorflow as tf

        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(threads)
        function(*args)
    except USER_ERRORS as error:  # a bad file or value: its one line, as the CLI prints it
        print(f"error: {error_line(error)}", file=sys.stderr, flush=True)
        raise SystemExit(EXIT_USER_ERROR) from None
    except BaseException:
        traceback.print_exc()
        sys.stderr.flush()
        raise SystemExit(1) from None


class _Tail:
    """Complete lines appended to a file since the last read."""

    def __init__(self, path):
        self.path = path
        self.offset = os.path.getsize(path) if os.path.exists(path) else 0
        self.partial = ""

    def lines(self):
        if not os.path.exists(self.path):
            return []
        with open(self.path, encoding="utf-8", errors="replace") as handle:
            handle.seek(self.offset)
            text = handle.read()
            self.offset = handle.tell()
        text = self.partial + text
        *complete, self.partial = re.split(r"[\r\n]", text)
        return [line for line in complete if line.strip()]


def _last_lines(path, count=25):
    try:
        with open(path, encoding="utf-8", errors="replace") as handle:
            lines = [line.rstrip() for line in re.split(r"[\r\n]", handle.read()) if line.strip()]
    except OSError:
        return "(no log)"
    return "\n".join(lines[-count:])


# exit status of a process stopped by SIGTERM (128 + the signal's number), as the shell reports it
SIGTERM_EXIT = 128 + signal.SIGTERM


@contextlib.contextmanager
def _sigterm_raises():
    """While inside, SIGTERM to this process raises SystemExit(SIGTERM_EXIT) instead of ending it
    at once, so that `finally` blocks run (and stop the child processes). Only in the main thread
    (Python delivers signals there); elsewhere a no-op."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def stop(signum, frame):
        raise SystemExit(SIGTERM_EXIT)

    previous = signal.signal(signal.SIGTERM, stop)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def run_jobs(jobs, *, parallel, echo=print, poll_seconds=1.0, cores=None):
    """Runs `jobs` (list of Job), at most `parallel` at a time, each in a spawned process with
    `threads_per_job(parallel, cores)` TensorFlow threads. Blocks until all have finished.

    Raises JobError (naming the job, its exit code and log, with the log's last lines) when a
    job fails; the jobs still running are stopped. Ctrl-C stops them too, and so does SIGTERM to
    this process (`kill PID`), which then exits with SIGTERM_EXIT: no job is left running
    without the process that started it.
    """
    jobs = list(jobs)
    for job in jobs:
        if not job.log_path:
            raise ValueError(f"job {job.label!r} has no log_path")
        os.makedirs(os.path.dirname(os.path.abspath(job.log_path)), exist_ok=True)
    threads = threads_per_job(parallel, cores)
    context = multiprocessing.get_context("spawn")
    pending = list(jobs)
    running = []  # (job, process, tail)
    with _sigterm_raises():
        try:
            while pending or running:
                while pending and len(running) < max(1, int(parallel)):
                    job = pending.pop(0)
                    tail = _Tail(job.log_path)
                    process = context.Process(
                        target=_child,
                        args=(job.function, tuple(job.args), threads, job.log_path),
                        name=job.label,
                        daemon=False,
                    )
                    process.start()
                    echo(f"{job.label} | started (pid {process.pid}, {threads} thread(s)); log: {job.log_path}")
                    running.append((job, process, tail))
                time.sleep(poll_seconds)
                for entry in list(running):
                    job, process, tail = entry
                    finished = not process.is_alive()
                    for line in tail.lines():
                        if ECHOED.match(line.strip()):
                            echo(f"{job.label} | {line.strip()}")
                    if not finished:
                        continue
                    process.join()
                    running.remove(entry)
                    if process.exitcode != 0:
                        raise JobError(
                            f"{job.label} failed (exit code {process.exitcode}); log {job.log_path}; "
                            f"its last lines:\n{_last_lines(job.log_path)}"
                        )
                    echo(f"{job.label} | finished")
        finally:
            for _, process, _ in running:
                if process.is_alive():
                    process.terminate()
            for _, process, _ in running:
                process.join(timeout=10)
