"""The node's NVIDIA GPUs as run.json records them: model, count, driver and CUDA driver version."""
from __future__ import annotations

from typing import Any

from energy.nvml import load_nvml, node_gpus, nvml_text, shutdown_nvml


def cuda_version_text(code: int) -> str:
    """NVML's CUDA driver version integer (12020) as ``"12.2"``."""
    return f"{code // 1000}.{code % 1000 // 10}"


def gpu_inventory(nvml_module: Any = None) -> dict[str, Any]:
    """``gpu_models`` (one name per GPU the node has, NVML order), ``gpu_driver_version``,
    ``cuda_driver_version``; each None (and ``gpu_reason`` set) where NVML cannot say."""
    out: dict[str, Any] = {"gpu_models": [], "gpu_driver_version": None, "cuda_driver_version": None}
    nvml, reason, _hint = load_nvml(nvml_module)
    if nvml is None:
        out["gpu_reason"] = reason
        return out
    try:
        out["gpu_models"] = [g.name for g in node_gpus(nvml)]
        for key, getter, convert in (("gpu_driver_version", "nvmlSystemGetDriverVersion", nvml_text),
                                     ("cuda_driver_version", "nvmlSystemGetCudaDriverVersion", cuda_version_text)):
            try:
                out[key] = convert(getattr(nvml, getter)())
            except Exception:
                pass   # older drivers or pynvml: left None
    except Exception as exc:
        out["gpu_reason"] = f"NVML device query failed: {exc}"
    finally:
        shutdown_nvml(nvml)
    return out
