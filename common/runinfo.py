"""What result files record about the software and hardware that made them (run.json, benchmark JSON)."""
from __future__ import annotations

import platform
import subprocess
import sys
from pathlib import Path
from typing import Any


def versions(names: tuple[str, ...] = ("tensorflow", "numpy", "horovod", "mpi4py", "pyarrow"),
             mpi: bool = True) -> dict[str, Any]:
    """Python's version and those of the already-imported modules ``names`` (None if not
    imported); with ``mpi``, the MPI library's version line."""
    out: dict[str, Any] = {"python": platform.python_version()}
    for name in names:
        mod = sys.modules.get(name)
        out[name] = getattr(mod, "__version__", None) if mod else None
    if not mpi:
        return out
    try:
        from mpi4py import MPI

        out["mpi"] = MPI.Get_library_version().splitlines()[0].strip()
    except Exception:  # noqa: BLE001 - MPI missing or not initialisable: record that
        out["mpi"] = None
    return out


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def git_commit() -> str | None:
    here = Path(__file__).resolve().parent
    try:
        res = subprocess.run(["git", "-C", str(here), "rev-parse", "HEAD"], capture_output=True, text=True,
                             timeout=5, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return res.stdout.strip() or None if res.returncode == 0 else None
