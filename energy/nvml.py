"""NVIDIA GPU energy through NVML (module ``pynvml`` from nvidia-ml-py), and the node's GPUs as
NVML lists them (PCI bus ids, UUIDs, MIG instances) for the one rule of ``common.gpu_binding``.

Per GPU, the best available source is used and recorded as the channel's ``method``:

1. ``nvml-energy-counter``: ``nvmlDeviceGetTotalEnergyConsumption`` (millijoules since the
   driver loaded; Volta and newer). Window energy is an exact counter difference.
2. ``nvml-power-integrated``: ``nvmlDeviceGetPowerUsage`` (milliwatts) integrated over the
   sampler's readings (older GPUs answer NOT_SUPPORTED to 1.).
3. ``estimate`` (opt-in, ``gpu_tdp_w`` > 0): utilisation x TDP, flagged ``estimated``.

Failures (module missing, no driver, bad index) make the GPU domain unavailable with a reason.
A rank's meter opens the GPU it trains on by PCI bus id (``index_of_bus_id``).
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, Mapping

from common.gpu_binding import CUDA_ORDER, GpuChoice, NodeGpu, decide, normalise_bus_id, visible_gpus
from common.vocab import DOMAIN_GPU, SOURCE_ESTIMATED, SOURCE_MEASURED
from energy.counters import Channel

HINT_NO_DRIVER = ("no NVIDIA driver library on this node (no GPU, or a container started without "
                  "GPU support such as 'apptainer --nv' or 'docker --gpus')")
HINT_NO_MODULE = "install nvidia-ml-py (it provides the pynvml module)"


@dataclass
class GpuOpenResult:
    channels: list[Channel] = field(default_factory=list)
    reason: str | None = None          # set when the domain is unavailable
    hint: str = ""


def load_nvml(nvml_module: Any = None) -> tuple[Any | None, str | None, str]:
    """Return ``(module, None, "")`` with NVML initialised, or ``(None, reason, hint)``."""
    nvml = nvml_module
    if nvml is None:
        try:
            import pynvml as nvml  # optional: imported only when a GPU is wanted
        except ImportError as exc:
            return None, f"pynvml not importable ({exc})", HINT_NO_MODULE
    try:
        nvml.nvmlInit()
    except Exception as exc:  # NVMLError subclasses, OSError from the loader
        return None, f"nvmlInit failed: {_err_text(exc)}", HINT_NO_DRIVER
    return nvml, None, ""


def shutdown_nvml(nvml: Any) -> None:
    try:
        nvml.nvmlShutdown()
    except Exception:
        pass  # NVML reference-counts init/shutdown; failing to release it is harmless at exit


def _err_text(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _is_not_supported(nvml: Any, exc: BaseException) -> bool:
    code = getattr(nvml, "NVML_ERROR_NOT_SUPPORTED", 3)
    return getattr(exc, "value", None) == code


def nvml_text(value: Any) -> str:
    """An NVML string (bytes in older pynvml versions) as str."""
    return value.decode() if isinstance(value, bytes) else str(value)


def open_gpu(nvml: Any, index: int, *, estimate_tdp_w: float = 0.0) -> Channel:
    """One GPU's channel, choosing counter > power > estimate. Raises with a reason if none works."""
    handle = nvml.nvmlDeviceGetHandleByIndex(index)
    info: dict[str, Any] = {"nvml_index": index}
    for key, getter in (("name", "nvmlDeviceGetName"), ("uuid", "nvmlDeviceGetUUID")):
        try:
            info[key] = nvml_text(getattr(nvml, getter)(handle))
        except Exception:
            info[key] = None       # descriptive only
    device = f"gpu{index}"
    tried: list[str] = []

    try:
        nvml.nvmlDeviceGetTotalEnergyConsumption(handle)
    except Exception as exc:
        if not _is_not_supported(nvml, exc):
            raise
        tried.append("total energy counter: not supported")
    else:
        def read_counter() -> int:
            return nvml.nvmlDeviceGetTotalEnergyConsumption(handle) * 1000   # mJ -> uJ
        return Channel(DOMAIN_GPU, device, "counter", SOURCE_MEASURED, "nvml-energy-counter", read_counter, info=info,
                       handle=handle)

    try:
        nvml.nvmlDeviceGetPowerUsage(handle)
    except Exception as exc:
        if not _is_not_supported(nvml, exc):
            raise
        tried.append("power usage: not supported")
    else:
        def read_power() -> float:
            return nvml.nvmlDeviceGetPowerUsage(handle) / 1000.0                # mW -> W
        return Channel(DOMAIN_GPU, device, "power", SOURCE_MEASURED, "nvml-power-integrated", read_power, info=info,
                       handle=handle)

    if estimate_tdp_w > 0:
        nvml.nvmlDeviceGetUtilizationRates(handle)      # raises when even utilisation is missing

        def read_estimate() -> float:
            return nvml.nvmlDeviceGetUtilizationRates(handle).gpu / 100.0 * estimate_tdp_w
        info["tdp_w"] = estimate_tdp_w
        # Estimated power series carry domain "estimate" (device still says which GPU), so they
        # can never be summed with measured "gpu" samples by accident.
        return Channel("estimate", device, "power", SOURCE_ESTIMATED, "estimate", read_estimate, info=info,
                       handle=handle)
    raise RuntimeError(f"{device}: NVML offers no energy source ({'; '.join(tried)}); "
                       "set estimate_energy and gpu_tdp_w to estimate it")


def open_gpus(nvml: Any, indices: list[int], *, estimate_tdp_w: float = 0.0) -> GpuOpenResult:
    """Open every GPU in ``indices``; one failure makes the whole GPU domain unavailable."""
    result = GpuOpenResult()
    for index in indices:
        try:
            result.channels.append(open_gpu(nvml, index, estimate_tdp_w=estimate_tdp_w))
        except Exception as exc:
            result.channels = []
            result.reason = f"gpu{index}: {_err_text(exc)}"
            result.hint = "check the GPU index (CUDA_VISIBLE_DEVICES / local rank) and the driver"
            break
    return result


def node_gpus(nvml: Any) -> list[NodeGpu]:
    """Every GPU of the node as NVML lists it (index order = PCI bus order), with bus id, UUID,
    name and MIG instances: the plain input ``common.gpu_binding`` decides from."""
    out = []
    for i in range(nvml.nvmlDeviceGetCount()):
        handle = nvml.nvmlDeviceGetHandleByIndex(i)
        bus = normalise_bus_id(nvml_text(nvml.nvmlDeviceGetPciInfo(handle).busId)) or ""
        try:
            name = nvml_text(nvml.nvmlDeviceGetName(handle))
        except Exception:
            name = ""       # descriptive only
        out.append(NodeGpu(i, bus, nvml_text(nvml.nvmlDeviceGetUUID(handle)), name, _mig_uuids(nvml, handle)))
    return out


def _mig_uuids(nvml: Any, handle: Any) -> tuple[str, ...]:
    """UUIDs of the MIG instances on one GPU (empty when MIG is off or NVML cannot say)."""
    try:
        current, _pending = nvml.nvmlDeviceGetMigMode(handle)
        if not current:
            return ()
        uuids = []
        for j in range(nvml.nvmlDeviceGetMaxMigDeviceCount(handle)):
            try:
                uuids.append(nvml_text(nvml.nvmlDeviceGetUUID(nvml.nvmlDeviceGetMigDeviceHandleByIndex(handle, j))))
            except Exception:
                continue    # an empty MIG slot
        return tuple(uuids)
    except Exception:
        return ()           # no MIG support (older GPU or driver)


def read_node_gpus(nvml_module: Any = None) -> tuple[list[NodeGpu] | None, str | None]:
    """``node_gpus`` with NVML loaded and released here; ``(None, reason)`` when NVML fails."""
    nvml, reason, _hint = load_nvml(nvml_module)
    if nvml is None:
        return None, reason
    try:
        return node_gpus(nvml), None
    except Exception as exc:
        return None, f"NVML device query failed: {_err_text(exc)}"
    finally:
        shutdown_nvml(nvml)


def index_of_bus_id(nvml: Any, pci_bus_id: str) -> int | None:
    """NVML index of the GPU at ``pci_bus_id`` (any format), or None."""
    wanted = normalise_bus_id(pci_bus_id)
    for gpu in node_gpus(nvml):
        if normalise_bus_id(gpu.pci_bus_id) == wanted:
            return gpu.nvml_index
    return None


def gpus_of_process(local_rank: int, local_size: int, env: Mapping[str, str] = os.environ, *,
                    all_local: bool = False, share: bool = True,
                    nvml_module: Any = None) -> tuple[GpuChoice, ...]:
    """The GPU(s) a process that runs on the GPU uses, by the one rule (``common.gpu_binding``),
    for callers that do not pin TensorFlow themselves (one process: inference, benchmarks): the
    GPUs CUDA_VISIBLE_DEVICES leaves visible stand for TensorFlow's list. Empty when NVML cannot
    say."""
    gpus, _reason = read_node_gpus(nvml_module)
    if gpus is None:
        return ()
    visible, problem = visible_gpus(env.get("CUDA_VISIBLE_DEVICES"), gpus)
    if problem:
        return ()
    decision = decide(local_rank=local_rank, local_size=local_size, tf_gpu_count=len(visible), visible=visible,
                      share=share, all_local=all_local, cuda_visible_devices=env.get("CUDA_VISIBLE_DEVICES"),
                      cuda_device_order=env.get("CUDA_DEVICE_ORDER", CUDA_ORDER))
    return decision.gpus


def all_visible_indices(env: Mapping[str, str] = os.environ, *,
                        nvml_module: Any = None) -> tuple[list[int], str | None, str]:
    """Every NVML index a process started with ``env`` can use (for ``energy.monitor``).

    Returns ``(indices, reason, hint)``; ``reason`` says why the list is empty when it is.
    """
    nvml, reason, hint = load_nvml(nvml_module)
    if nvml is None:
        return [], reason, hint
    visible = env.get("CUDA_VISIBLE_DEVICES")
    try:
        chosen, _problem = visible_gpus(visible, node_gpus(nvml))
        indices = []
        for gpu in chosen:
            # A MIG instance's energy is its whole GPU's, shared with the other instances.
            if gpu.mig_uuid is None and gpu.nvml_index is not None and gpu.nvml_index not in indices:
                indices.append(gpu.nvml_index)
    except Exception as exc:
        return [], f"NVML device query failed: {_err_text(exc)}", HINT_NO_DRIVER
    finally:
        shutdown_nvml(nvml)
    if not indices:
        why = "NVML reports no GPU" if visible is None else f"CUDA_VISIBLE_DEVICES={visible!r} selects no GPU"
        return [], why, ""
    return indices, None, ""
