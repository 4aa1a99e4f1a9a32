"""SIGTERM to a sweep job's batch shell (not the USR1 warning): forwarded to the step, then requeue.

The rendered script runs under bash against fake srun/scontrol and the fake interpreter; the
signal goes to the batch shell's process only, as Slurm sends it to the batch step.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from test_launch_sweep import FAKE_PY, _resolve  # noqa: E402

from launch import sweep as sw  # noqa: E402

# PATH with fake srun/scontrol/sbatch; the file their calls are logged to.


def _wait_for(pred, what: str, timeout_s: float = 20.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not pred():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.05)


def _start(job: Path, env: dict[str, str]) -> subprocess.Popen:
    # Output to files: a fake step's leftover sleep must not hold a pipe open. A session of its
    # own, so that the test can end whatever is left (the whole group) afterwards.
    with job.with_suffix(".test-out").open("w") as out, job.with_suffix(".test-err").open("w") as err:
        return subprocess.Popen(["bash", str(job)], env=env, stdout=out, stderr=err, start_new_session=True)


def _end(proc: subprocess.Popen) -> tuple[str, str]:
    """Wait for the batch shell; its stdout and stderr."""
    job = Path(proc.args[1])
    try:
        proc.wait(timeout=30)
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    return job.with_suffix(".test-out").read_text(), job.with_suffix(".test-err").read_text()


def test_sigterm_during_training_is_forwarded_and_the_job_requeues(tmp_path, fake_slurm):
    sweep, run = _resolve(tmp_path, name="t", nodes=[1], engines=["horovod"], modes=["weak"], python=FAKE_PY,
                          max_requeues=2)
    jobs = sw.build_jobs(sweep, run)
    sw.write_jobs(sweep, jobs)
    run_json = tmp_path / "t" / "horovod-weak-N1x1" / "run.json"
    proc = _start(jobs[0].path, dict(os.environ, FAKE_WAIT_SIGNAL="1", SLURM_JOB_ID="91"))
    try:
        _wait_for(lambda: run_json.is_file() and "running" in run_json.read_text(), "the training to start")
        os.kill(proc.pid, signal.SIGTERM)
    finally:
        out, err = _end(proc)
    assert proc.returncode == 0, err
    assert "SIGTERM: passing it to the job step" in err
    assert json.loads(run_json.read_text())["status"] == "interrupted"    # the step got it and checkpointed
    assert "scontrol requeue 91" in fake_slurm.read_text()


def test_sigterm_during_the_benchmark_skips_training_and_requeues(tmp_path, fake_slurm):
    sweep, run = _resolve(tmp_path, name="b", nodes=[2], engines=["horovod"], modes=["weak"], python=FAKE_PY)
    jobs = sw.build_jobs(sweep, run)
    sw.write_jobs(sweep, jobs)
    log = tmp_path / "py.log"
    proc = _start(jobs[0].path, dict(os.environ, FAKE_SLEEP_S="30", SLURM_JOB_ID="92", FAKE_PYTHON_LOG=str(log)))
    try:
        _wait_for(lambda: log.is_file() and "allreduce_bench" in log.read_text(), "the benchmark to start")
        os.kill(proc.pid, signal.SIGTERM)
    finally:
        out, err = _end(proc)
    assert proc.returncode == 0, err
    assert "scaling.run" not in log.read_text()
    assert "scontrol requeue 92" in fake_slurm.read_text()


def test_requeue_limit_still_holds_after_sigterm(tmp_path, fake_slurm):
    sweep, run = _resolve(tmp_path, name="l", nodes=[1], engines=["horovod"], modes=["weak"], python=FAKE_PY,
                          max_requeues=1)
    jobs = sw.build_jobs(sweep, run)
    sw.write_jobs(sweep, jobs)
    run_json = tmp_path / "l" / "horovod-weak-N1x1" / "run.json"
    proc = _start(jobs[0].path, dict(os.environ, FAKE_WAIT_SIGNAL="1", SLURM_JOB_ID="93", SLURM_RESTART_COUNT="1"))
    try:
        _wait_for(lambda: run_json.is_file() and "running" in run_json.read_text(), "the training to start")
        os.kill(proc.pid, signal.SIGTERM)
    finally:
        _end(proc)
    assert proc.returncode == 3
    assert "scontrol" not in fake_slurm.read_text()
