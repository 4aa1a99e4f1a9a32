"""Shared test helpers: how to start several ranks here, and why tests are skipped."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def mpirun_prefix(n: int) -> list[str]:
    """``mpirun`` for ``n`` local ranks (root needs --allow-run-as-root; 2 cores need --oversubscribe)."""
    cmd = ["mpirun", "--oversubscribe", "-np", str(n)]
    if os.geteuid() == 0:
        cmd.insert(1, "--allow-run-as-root")
    return cmd


def run_module(module: str, args: list[str], ranks: int = 1, timeout: float = 600,
               env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """Run ``python -m module args`` on ``ranks`` ranks (mpirun when > 1) from the repo root."""
    cmd = [sys.executable, "-m", module, *args]
    if ranks > 1:
        cmd = mpirun_prefix(ranks) + cmd
    full_env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONPATH": str(ROOT), **(env or {})}
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout, env=full_env)


@pytest.fixture
def fake_slurm(tmp_path, monkeypatch):
    """PATH with fake srun, sbatch and scontrol (tests/helpers/launch_fake_*.sh); returns the
    file their calls are logged to."""
    helpers = Path(__file__).parent / "helpers"
    bindir = tmp_path / "bin"
    bindir.mkdir()
    for name in ("srun", "sbatch", "scontrol"):
        (bindir / name).symlink_to(helpers / f"launch_fake_{name}.sh")
    log = tmp_path / "slurm-calls.log"
    monkeypatch.setenv("PATH", f"{bindir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("FAKE_SLURM_LOG", str(log))
    return log



class FakeEngine:
    """The two engine calls the epoch loop makes, for tests that drive it with a fake step."""

    def feed(self, batches):
        return ()

    def local_values(self, value):
        return [value]


class FakeMeter:
    """An energy meter that measures nothing: every window is empty, no samples."""

    def begin(self, name: str) -> None:
        pass

    def end(self, name: str):
        from energy.records import EnergyWindow

        return EnergyWindow(name=name, time_s=0.0)

    def drain_samples(self) -> list:
        return []

    def drain_telemetry(self) -> list:
        return []

@pytest.fixture
def frozen_code_version(monkeypatch):
    """launch.study sees today's code as one fixed version: the sources of this tree may change
    while the tests run, and a changing hash would mark every planned run stale."""
    from common.codeversion import CodeVersion
    from launch import study

    today = CodeVersion("0123456789abcdef" * 4, None, None)
    monkeypatch.setattr(study, "code_version", lambda: today)
    return today


def pytest_collection_modifyitems(config, items):
    skip_mpi = None if shutil.which("mpirun") else pytest.mark.skip(
        reason="mpirun not found (install openmpi-bin: make test does this as root)")
    for item in items:
        if skip_mpi is not None and "mpi" in item.keywords:
            item.add_marker(skip_mpi)
