"""A sweep job whose interrupted step srun reports as killed still requeues itself.

With ``srun --kill-on-bad-exit=1`` the first rank to exit 3 ends the step; a rank still shutting
down is then killed and srun's status is 137, not 3 (seen on the test cluster under load). The
batch script then trusts run.json, which rank 0 wrote before any rank exited. Here a fake srun
writes a run.json the way the trainer does and exits 137; the script runs under bash.
"""
from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from test_launch_sweep import FAKE_PY, _resolve  # noqa: E402

from common.rundir import RunWriter  # noqa: E402
from common.vocab import RUN_JSON, STATUS_FAILED, STATUS_INTERRUPTED  # noqa: E402
from launch import sweep as sw  # noqa: E402

# PATH with fake srun/scontrol/sbatch; the file their calls are logged to.

# srun whose step leaves FAKE_RUN_JSON (if set) as the run's run.json, then reports a killed rank.
_KILLED_SRUN = """#!/bin/bash
if [ -n "${FAKE_RUN_JSON:-}" ]; then cp "$FAKE_RUN_JSON" "$FAKE_RUN_DIR/run.json"; fi
exit 137
"""


def _job(tmp_path: Path, monkeypatch, **kw) -> tuple[Path, Path]:
    """The batch script of one point with srun replaced by the killed-step one; its run directory.
    No preflight: the killed-step srun would fail it."""
    sweep, run = _resolve(tmp_path, name="k", nodes=[1], engines=["horovod"], modes=["weak"], python=FAKE_PY,
                          max_requeues=2, preflight=False, **kw)
    jobs = sw.build_jobs(sweep, run)
    sw.write_jobs(sweep, jobs)
    bindir = tmp_path / "killed-bin"
    bindir.mkdir()
    (bindir / "srun").write_text(_KILLED_SRUN)
    (bindir / "srun").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bindir}{os.pathsep}{os.environ['PATH']}")
    run_dir = tmp_path / "k" / "horovod-weak-N1x1"
    run_dir.mkdir(parents=True)
    return jobs[0].path, run_dir


def _run_json_as_the_trainer_writes_it(folder: Path, status: str, exit_status: int) -> Path:
    folder.mkdir(exist_ok=True)
    RunWriter(folder, {"status": status, "exit_status": exit_status, "restarts": []}).write_meta()
    return folder / RUN_JSON


def test_step_killed_after_the_run_saved_its_interruption_requeues(tmp_path, fake_slurm, monkeypatch):
    script, run_dir = _job(tmp_path, monkeypatch)
    src = _run_json_as_the_trainer_writes_it(tmp_path / "src", STATUS_INTERRUPTED, 3)
    env = dict(os.environ, SLURM_JOB_ID="61", FAKE_RUN_JSON=str(src), FAKE_RUN_DIR=str(run_dir))
    res = subprocess.run(["bash", str(script)], env=env, capture_output=True, text=True, timeout=30)
    assert res.returncode == 0, res.stderr
    assert "the step ended with exit 137 after the run was interrupted and saved" in res.stderr
    assert "scontrol requeue 61" in fake_slurm.read_text()


@pytest.mark.parametrize("case", ["failed run", "stale run.json"])
def test_step_killed_otherwise_is_a_failure(tmp_path, fake_slurm, monkeypatch, case):
    # max_same_failures = 1: the first failure already ends the job (no requeue to try again).
    script, run_dir = _job(tmp_path, monkeypatch, max_same_failures=1)
    env = dict(os.environ, SLURM_JOB_ID="62", FAKE_RUN_DIR=str(run_dir))
    if case == "failed run":
        env["FAKE_RUN_JSON"] = str(_run_json_as_the_trainer_writes_it(tmp_path / "src", STATUS_FAILED, 1))
    else:
        # An earlier start's interruption: written before this start began, so not its result.
        old = _run_json_as_the_trainer_writes_it(run_dir, STATUS_INTERRUPTED, 3)
        hour_ago = time.time() - 3600
        os.utime(old, (hour_ago, hour_ago))
    res = subprocess.run(["bash", str(script)], env=env, capture_output=True, text=True, timeout=30)
    assert res.returncode == 137, res.stderr
    assert "scontrol" not in (fake_slurm.read_text() if fake_slurm.exists() else "")
    way = "run status failed" if case == "failed run" else "exit 137, no run status"
    assert f"failed the same way 1 times in a row ({way}; this time exit 137): not requeueing" in res.stderr
