"""What result files record about the software and hardware that made them (run.json, benchmark JSON)."""
from __future__ import annotations

import os
import platform
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any, Mapping, Sequence


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


def usable_cpus() -> int:
    """Logical CPUs this process may run on (its affinity mask), not all of the machine's."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):   # not Linux
        return max(1, os.cpu_count() or 1)


def hardware(device: str, gpu_names: Sequence[str]) -> dict[str, Any]:
    """CPU, GPUs and the device a benchmark ran on. ``device`` is the framework's device string
    (``/job:localhost/.../GPU:0``); ``gpu_names`` are the GPUs the framework sees (the caller
    asks it, so this module needs no framework)."""
    on_gpu = "GPU" in device.upper()
    gpus = list(gpu_names)
    return {"cpu_model": cpu_model(), "logical_cpus": os.cpu_count(), "cpus_usable": usable_cpus(),
            "gpus": gpus, "device": device, "device_kind": "GPU" if on_gpu else "CPU",
            "device_name": (gpus[0] if gpus else "GPU") if on_gpu else cpu_model(),
            "node": socket.gethostname()}


def load_average_1m() -> float | None:
    """1-minute load average (None where the system has none): other work on the machine
    inflates latencies, so benchmarks record it."""
    try:
        return os.getloadavg()[0]
    except (AttributeError, OSError):
        return None


def git_commit() -> str | None:
    here = Path(__file__).resolve().parent
    try:
        res = subprocess.run(["git", "-C", str(here), "rev-parse", "HEAD"], capture_output=True, text=True,
                             timeout=5, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return res.stdout.strip() or None if res.returncode == 0 else None


# Environment variables and paths that say a process runs inside an Apptainer/Singularity container.
CONTAINER_ENV_PREFIXES = ("APPTAINER_", "SINGULARITY_")
CONTAINER_MARKERS = ("/.singularity.d",)
UNKNOWN_SITE = "unknown"
# The site label for runs started by a launcher that does not pass ``--site`` (inherited by ranks).
SITE_ENV = "BOLOGAN_SITE"


def site_name(label: str | None, env: Mapping[str, str] = os.environ) -> tuple[str, str]:
    """Where a run ran: ``(name, how it is known)``. A ``--site`` label wins, then ``BOLOGAN_SITE``,
    then Slurm's ``SLURM_CLUSTER_NAME``; else ``unknown`` (a host name would split one cluster's runs)."""
    if label and label.strip():
        return label.strip(), "--site"
    if env.get(SITE_ENV, "").strip():
        return env[SITE_ENV].strip(), SITE_ENV
    cluster = env.get("SLURM_CLUSTER_NAME", "").strip()
    if cluster:
        return cluster, "SLURM_CLUSTER_NAME"
    return UNKNOWN_SITE, f"no --site label, no {SITE_ENV} and no SLURM_CLUSTER_NAME"


def container_runtime(env: Mapping[str, str] = os.environ, root: str = "/") -> dict[str, Any]:
    """``{"in_container": bool, "runtime": "apptainer"|"singularity"|None, "evidence": [...]}``
    from the runtime's environment variables and its ``/.singularity.d`` folder."""
    names = sorted(k for k in env if k.startswith(CONTAINER_ENV_PREFIXES))
    markers = [m for m in CONTAINER_MARKERS if (Path(root) / m.lstrip("/")).exists()]
    runtime = None
    if any(n.startswith("APPTAINER_") for n in names):
        runtime = "apptainer"
    elif names or markers:
        runtime = "singularity"
    return {"in_container": runtime is not None, "runtime": runtime, "evidence": (names + markers)[:8]}


def memory_bytes(meminfo: str = "/proc/meminfo") -> int | None:
    """The node's physical memory (``MemTotal``), None where unreadable."""
    try:
        for line in Path(meminfo).read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) * 1024          # kB
    except (OSError, ValueError, IndexError):
        pass
    return None
