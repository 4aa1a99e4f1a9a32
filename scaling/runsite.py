"""run.json's record of where a run ran: site (cluster), container, and the node's hardware."""
from __future__ import annotations

import os
import sys
from typing import Any, Mapping

from common.runinfo import container_runtime, cpu_model, memory_bytes, site_name, usable_cpus
from energy.gpuinfo import gpu_inventory


def cuda_runtime_version() -> str | None:
    """The CUDA version TensorFlow was built with (None: a CPU build, or TensorFlow not loaded)."""
    tf = sys.modules.get("tensorflow")
    try:
        return tf.sysconfig.get_build_info().get("cuda_version") if tf is not None else None
    except Exception:
        return None


def site_record(label: str | None, env: Mapping[str, str] = os.environ, *, root: str = "/") -> dict[str, Any]:
    """run.json ``site``: name, how it is known, and whether the run was in a container."""
    name, known_from = site_name(label, env)
    return {"name": name, "from": known_from, **container_runtime(env, root)}


def node_hardware(*, nvml_module: Any = None) -> dict[str, Any]:
    """Fields added to run.json ``hardware`` (rank 0's node; the nodes of a job are taken alike).
    GPUs are listed even for a CPU run: ``gpus_per_rank`` says whether they were used."""
    out: dict[str, Any] = {"cpu_model": cpu_model(), "logical_cpus": os.cpu_count(), "cpus_usable": usable_cpus(),
                           "memory_bytes": memory_bytes(), "cuda_runtime_version": cuda_runtime_version()}
    gpus = gpu_inventory(nvml_module)
    out.update(gpus)
    out["gpu_model"] = gpus["gpu_models"][0] if gpus["gpu_models"] else None
    return out
