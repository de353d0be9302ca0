import json
import os
import signal
import subprocess
import sys
import time

import pytest

from dked_tf import jobs
from dked_tf.config import ConfigError


# Job bodies run in spawned processes, which import them from this module by name.
def _report_process(path):
    import tensorflow as tf

    with open(path, "w", encoding="utf-8") as handle:
        json.dump(
            {
                "pid": os.getpid(),
                "intra": tf.config.threading.get_intra_op_parallelism_threads(),
                "inter": tf.config.threading.get_inter_op_parallelism_threads(),
            },
            handle,
        )
    print("[stage] epoch 1/2 loss 3.0 | elapsed 0:00:01, ETA 0:00:01")
    print("37/37 - 1s - 12ms/step - loss: 3.0")
    print("[00:07] stage: done")


def _meet(folder, name, other, wait_seconds):
    """Marks itself started, then waits up to wait_seconds for `other` to have started."""
    open(os.path.join(folder, name), "w").close()
    deadline = time.monotonic() + wait_seconds
    while time.monotonic() < deadline and not os.path.exists(os.path.join(folder, other)):
        time.sleep(0.05)
    with open(os.path.join(folder, name + ".saw"), "w", encoding="utf-8") as handle:
        handle.write(str(os.path.exists(os.path.join(folder, other))))


def _fail(message):
    raise ValueError(message)


def _sleep(seconds, path):
    open(path, "w").close()
    time.sleep(seconds)


def test_threads_per_job_splits_the_cores():
    assert jobs.threads_per_job(2, cores=2) == 1
    assert jobs.threads_per_job(2, cores=1) == 1
    assert jobs.threads_per_job(1, cores=4) == 4
    assert jobs.threads_per_job(3, cores=8) == 2


def test_jobs_run_in_their_own_processes_with_split_threads_and_echo_tagged_lines(tmp_path):
    echoed = []
    work = [
        jobs.Job(f"seed {k}", _report_process, (str(tmp_path / f"r{k}.json"),), str(tmp_path / "logs" / f"{k}.log"))
        for k in range(2)
    ]
    jobs.run_jobs(work, parallel=2, echo=echoed.append, poll_seconds=0.1, cores=4)
    reports = [json.loads((tmp_path / f"r{k}.json").read_text()) for k in range(2)]
    assert len({r["pid"] for r in reports} | {os.getpid()}) == 3
    assert all(r["intra"] == 2 and r["inter"] == 2 for r in reports)
    for k in range(2):
        lines = [line for line in echoed if line.startswith(f"seed {k} | ")]
        assert f"seed {k} | [stage] epoch 1/2 loss 3.0 | elapsed 0:00:01, ETA 0:00:01" in lines
        assert f"seed {k} | [00:07] stage: done" in lines
        assert not any("ms/step" in line for line in lines)  # untagged lines stay in the log
        assert lines[-1] == f"seed {k} | finished"
        log = (tmp_path / "logs" / f"{k}.log").read_text()
        assert "37/37 - 1s - 12ms/step" in log and "2 TensorFlow thread(s)" in log


@pytest.mark.parametrize("parallel, both_saw_each_other", [(2, True), (1, False)])
def test_at_most_parallel_jobs_run_at_once(tmp_path, parallel, both_saw_each_other):
    wait = 60 if parallel == 2 else 3
    work = [
        jobs.Job("a", _meet, (str(tmp_path), "a", "b", wait), str(tmp_path / "a.log")),
        jobs.Job("b", _meet, (str(tmp_path), "b", "a", wait), str(tmp_path / "b.log")),
    ]
    jobs.run_jobs(work, parallel=parallel, echo=lambda line: None, poll_seconds=0.1)
    saw = [(tmp_path / f"{name}.saw").read_text() == "True" for name in "ab"]
    # one after the other: a finishes before b starts, so only b finds the other's marker
    assert saw == ([True, True] if both_saw_each_other else [False, True])


def test_a_failing_job_names_itself_its_log_and_error_and_stops_the_others(tmp_path):
    work = [
        jobs.Job("sleeper", _sleep, (120, str(tmp_path / "sleeping")), str(tmp_path / "sleeper.log")),
        jobs.Job("seed 3", _fail, ("weights file is corrupt",), str(tmp_path / "seed3.log")),
    ]
    start = time.monotonic()
    with pytest.raises(jobs.JobError) as raised:
        jobs.run_jobs(work, parallel=2, echo=lambda line: None, poll_seconds=0.1)
    message = str(raised.value)
    assert "seed 3 failed (exit code 1)" in message and str(tmp_path / "seed3.log") in message
    assert "ValueError: weights file is corrupt" in message
    assert time.monotonic() - start < 100  # the 120 s sleeper was stopped, not waited for


def test_a_job_without_a_log_path_is_rejected():
    with pytest.raises(ValueError, match="no log_path"):
        jobs.run_jobs([jobs.Job("x", _fail, ("never run",))], parallel=1)


def _user_error_job(path):
    raise ConfigError(f"{path}: something is wrong")


def test_a_job_that_fails_on_a_user_error_logs_one_line(tmp_path):
    log = str(tmp_path / "job.log")
    with pytest.raises(jobs.JobError, match="exit code 2"):
        jobs.run_jobs([jobs.Job("seed 0", _user_error_job, ("cfg.yaml",), log)], parallel=1, echo=lambda line: None)
    text = open(log).read()
    assert "error: cfg.yaml: something is wrong" in text and "Traceback" not in text


def _sleep_with_pid(seconds, path):
    with open(path + ".tmp", "w", encoding="utf-8") as handle:
        handle.write(str(os.getpid()))
    os.replace(path + ".tmp", path)
    time.sleep(seconds)


def test_sigterm_to_the_parent_stops_its_jobs(tmp_path):
    """`kill PID` of a recipe leaves no training running on: the parent exits with 143 after
    stopping its job processes."""
    marker = str(tmp_path / "child.pid")
    script = (
        "import sys; sys.path.insert(0, {tests!r})\n"
        "from test_jobs import _sleep_with_pid\n"
        "from dked_tf import jobs\n"
        "jobs.run_jobs([jobs.Job('sleeper', _sleep_with_pid, (120, {marker!r}), {log!r})], parallel=1)\n"
    ).format(tests=os.path.dirname(__file__), marker=marker, log=str(tmp_path / "sleeper.log"))
    parent = subprocess.Popen([sys.executable, "-c", script])
    deadline = time.monotonic() + 120
    while not os.path.exists(marker) and time.monotonic() < deadline and parent.poll() is None:
        time.sleep(0.1)
    assert os.path.exists(marker), "the job did not start"
    child = int(open(marker, encoding="utf-8").read())
    parent.send_signal(signal.SIGTERM)
    assert parent.wait(timeout=60) == jobs.SIGTERM_EXIT
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            os.kill(child, 0)
        except ProcessLookupError:
            break
        time.sleep(0.1)
    else:
        os.kill(child, signal.SIGKILL)
        raise AssertionError(f"job process {child} still runs after its parent was stopped")
