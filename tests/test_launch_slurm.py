"""On a real Slurm cluster started on this machine (python -m launch.testcluster).

- the full flow: `srun -N4 python -m scaling.run` (4 ranks on 4 emulated nodes), then a 2-point
  sweep through `launch.sweep --submit --wait`, the run directories and the report;
- preemption: SIGUSR1 delivered by Slurm to a run, the job requeues itself and resumes
  (with the fake interpreter, so it takes seconds).
Every test starts its own cluster and stops it, checking that no daemon is left behind.
"""
from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from launch import testcluster as tc
from launch.common import find_executable, is_root
from launch.runargs import RunSettings, scaling_run_args

pytestmark = pytest.mark.slurm
ROOT = Path(__file__).resolve().parents[1]
FAKE_PY = str(Path(__file__).parent / "helpers" / "launch_fake_python.sh")


def _skip_reason() -> str | None:
    missing = [c for c in tc.DAEMONS + tc.CLIENTS if find_executable(c) is None]
    if missing:
        return (f"Slurm/munge not installed ({', '.join(missing)}): as root, apt-get install "
                f"{' '.join(tc.APT_PACKAGES)} (make test does this)")
    if not is_root():
        return "the one-machine test cluster runs slurmd, which must be root to start jobs"
    return None


class Cluster:
    def __init__(self, scratch: Path, conf: str):
        self.scratch = scratch
        self.env = dict(os.environ, SLURM_CONF=conf, PYTHONUNBUFFERED="1", TF_CPP_MIN_LOG_LEVEL="2")

    def run(self, argv: list[str], timeout: float, **env: str) -> subprocess.CompletedProcess:
        return subprocess.run(argv, cwd=ROOT, env={**self.env, **env}, capture_output=True, text=True,
                              timeout=timeout)


def _testcluster(action: str, scratch: Path, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "launch.testcluster", action, "--dir", str(scratch), *extra],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)


def _stop_and_check(scratch: Path) -> None:
    res = _testcluster("stop", scratch)
    left = tc.leftover_processes(scratch)
    assert res.returncode == 0, res.stderr
    assert not left, f"daemons left behind: {left}"


@pytest.fixture
def cluster():
    reason = _skip_reason()
    if reason:
        pytest.skip(reason)
    # A short folder: the munge socket path must fit in a unix socket address.
    scratch = Path(tempfile.mkdtemp(prefix="blg-slurm-"))
    try:
        res = _testcluster("start", scratch, "--nodes", "4")
        assert res.returncode == 0, f"testcluster start failed:\n{res.stderr}"
        (line,) = [x for x in res.stdout.splitlines() if x.startswith("export SLURM_CONF=")]
        status = _testcluster("status", scratch)
        assert status.returncode == 0 and status.stdout.count(" idle ") == 4, status.stdout
        yield Cluster(scratch, line.split("=", 1)[1])
    finally:
        _stop_and_check(scratch)
        shutil.rmtree(scratch, ignore_errors=True)


def _squeue(cluster: Cluster) -> str:
    return cluster.run(["squeue", "-h", "-o", "%i %j %T"], 10).stdout.strip()


def _wait_until(pred, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not pred():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.5)


@pytest.mark.timeout(120)
def test_slurm_signal_requeues_and_resumes(cluster, tmp_path):
    """Slurm's SIGUSR1 reaches the run; it exits 3, the job requeues itself and resumes."""
    out_dir = tmp_path / "sweep out"
    res = cluster.run([sys.executable, "-m", "launch.sweep", "--name", "pre", "--out-dir", str(out_dir),
                       "--nodes", "2", "--engines", "horovod", "--modes", "weak", "--python", FAKE_PY,
                       "--submit"], 60, FAKE_WAIT_SIGNAL="1")
    assert res.returncode == 0, res.stderr
    ids = dict(line.split(": job ") for line in res.stdout.splitlines() if ": job " in line)
    run_job = ids["horovod-weak-N2x1"]
    run_json = out_dir / "pre" / "horovod-weak-N2x1" / "run.json"
    _wait_until(lambda: run_json.exists() and "running" in run_json.read_text(), 60, "the run to start")
    # What --signal=USR1@<s> does near the time limit: signal the tasks of the job's steps.
    sig = cluster.run(["scancel", "--signal=USR1", run_job], 10)
    assert sig.returncode == 0, sig.stderr
    report = out_dir / "pre" / "report" / "report.md"
    _wait_until(report.exists, 90, "the requeued run and the analysis job")
    assert json.loads(run_json.read_text()) == {"status": "completed", "resumed": 1}
    log = next((out_dir / "pre" / "logs").glob("pre-horovod-weak-N2x1-*.out")).read_text()
    assert "requeueing job" in log and "--resume" in log


@pytest.mark.timeout(600)
def test_full_flow_srun_four_nodes_then_sweep_and_report(cluster, tmp_path):
    for module in ("scaling.run", "analysis"):
        if importlib.util.find_spec(module) is None:
            pytest.skip(f"{module} is not there yet")
    study = tmp_path / "slurm results"          # a space: quoting is exercised end to end
    name = "slurm-e2e"
    run = RunSettings(epochs=2, iterations_per_epoch=2, warmup_epochs=1, batch_per_rank=16,
                      synthetic_events=1024, threads=1)
    # 1. srun -N4: four ranks, one per emulated node, the same flags the sweep uses.
    out4 = study / name / "horovod-weak-N4x1"
    args = scaling_run_args(run, engine="horovod", mode="weak", out=str(out4), study=name)
    res = cluster.run(["srun", "-N4", "-n4", sys.executable, "-m", "scaling.run", *args], 300)
    assert res.returncode == 0, f"srun -N4 failed:\n{res.stdout[-3000:]}\n{res.stderr[-3000:]}"
    meta = json.loads((out4 / "run.json").read_text())
    assert meta["status"] == "completed" and meta["world_size"] == 4 and meta["launcher"] == "srun"
    assert meta["nodes"] == 4 and sorted(meta["node_names"]) == ["n1", "n2", "n3", "n4"]

    # 2. a 2-point sweep (1 and 2 nodes) submitted with sbatch; --wait returns after the report.
    flags = ["--epochs", "2", "--iterations-per-epoch", "2", "--warmup-epochs", "1", "--batch-per-rank", "16",
             "--synthetic-events", "1024", "--threads", "1"]
    res = cluster.run([sys.executable, "-m", "launch.sweep", "--name", name, "--out-dir", str(study),
                       "--nodes", "1,2", "--engines", "horovod", "--modes", "weak", "--time-limit", "10",
                       *flags, "--submit", "--wait"], 420)
    logs = study / name / "logs"
    log_text = "\n".join(f"--- {p.name}\n{p.read_text()[-2000:]}" for p in sorted(logs.glob("*.out")))
    assert res.returncode == 0, f"sweep failed:\n{res.stdout}\n{res.stderr}\n{log_text}"
    assert "horovod-weak-N1x1: job" in res.stdout and "horovod-weak-N2x1: job" in res.stdout
    for rid, world in (("horovod-weak-N1x1", 1), ("horovod-weak-N2x1", 2)):
        m = json.loads((study / name / rid / "run.json").read_text())
        assert m["status"] == "completed" and m["world_size"] == world, rid
        assert (study / name / rid / "epochs.parquet").exists()
    assert _squeue(cluster) == "", "jobs left in the queue"

    # 3. the report covers all three runs (N = 1, 2, 4) of the one weak-scaling series.
    report = study / name / "report"
    assert (report / "report.md").exists() and (report / "report.html").exists()
    summary = (report / "summary.csv").read_text()
    assert "horovod" in summary
    assert list(report.rglob("*.png")), "the report has plots"
    assert "1, 2, 4" in (report / "report.md").read_text()

    # 4. stopping leaves nothing behind (the fixture checks again).
    _stop_and_check(cluster.scratch)
