"""NVIDIA GPU energy through NVML (module ``pynvml`` from nvidia-ml-py), and rank -> GPU mapping.

Per GPU, the best available source is used and recorded as the channel's ``method``:

1. ``nvml-energy-counter``: ``nvmlDeviceGetTotalEnergyConsumption`` (millijoules since the
   driver loaded; Volta and newer). Window energy is an exact counter difference.
2. ``nvml-power-integrated``: ``nvmlDeviceGetPowerUsage`` (milliwatts) integrated over the
   sampler's readings (older GPUs answer NOT_SUPPORTED to 1.).
3. ``estimate`` (opt-in, ``gpu_tdp_w`` > 0): utilisation x TDP, flagged ``estimated``.

Failures (module missing, no driver, bad index) make the GPU domain unavailable with a reason.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, Mapping

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


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def open_gpu(nvml: Any, index: int, *, estimate_tdp_w: float = 0.0) -> Channel:
    """One GPU's channel, choosing counter > power > estimate. Raises with a reason if none works."""
    handle = nvml.nvmlDeviceGetHandleByIndex(index)
    info: dict[str, Any] = {"nvml_index": index}
    for key, getter in (("name", "nvmlDeviceGetName"), ("uuid", "nvmlDeviceGetUUID")):
        try:
            info[key] = _text(getattr(nvml, getter)(handle))
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


def _parse_visible(text: str) -> list[str]:
    """CUDA_VISIBLE_DEVICES entries up to the first invalid one (CUDA ignores the rest too)."""
    entries: list[str] = []
    for raw in text.split(","):
        item = raw.strip()
        if item.lstrip("-").isdigit():
            if int(item) < 0:
                break
            entries.append(str(int(item)))
        elif item.startswith(("GPU-", "MIG-")):
            entries.append(item)
        else:
            break
    return entries


def _uuid_to_index(nvml: Any, wanted: str) -> int | None:
    """NVML index of the GPU whose UUID starts with ``wanted`` (CUDA accepts unique prefixes)."""
    matches = []
    for i in range(nvml.nvmlDeviceGetCount()):
        uuid = _text(nvml.nvmlDeviceGetUUID(nvml.nvmlDeviceGetHandleByIndex(i)))
        if uuid.startswith(wanted):
            matches.append(i)
    return matches[0] if len(matches) == 1 else None


def resolve_gpu_index(local_rank: int, env: Mapping[str, str] = os.environ, visible_count: int | None = None,
                      *, nvml_module: Any = None) -> int | None:
    """NVML (physical) index of the GPU that local rank ``local_rank`` uses, or ``None`` for none.

    - ``CUDA_VISIBLE_DEVICES`` unset: GPU ``local_rank`` if it exists (``visible_count`` GPUs on
      the node; queried from NVML when ``None``).
    - set to one entry: that GPU, whatever the local rank (the launcher bound one GPU per task).
    - set to several entries: entry number ``local_rank``; ``None`` when there are fewer entries
      than local ranks (ranks must not share a GPU's energy).
    - empty, ``-1`` or ``NoDevFiles``: ``None``.
    Entries are integers or GPU UUIDs (prefixes allowed); MIG instances give ``None`` because
    NVML's energy counter belongs to the whole GPU. Integer entries are taken as NVML indices,
    which equal CUDA's when ``CUDA_DEVICE_ORDER=PCI_BUS_ID`` or all GPUs of the node are alike.
    """
    visible = env.get("CUDA_VISIBLE_DEVICES")
    need_nvml = visible is None and visible_count is None
    if visible is not None:
        entries = _parse_visible(visible)
        if not entries:
            return None
        if len(entries) == 1:
            chosen = entries[0]
        elif 0 <= local_rank < len(entries):
            chosen = entries[local_rank]
        else:
            return None
        if chosen.startswith("MIG-"):
            return None
        if chosen.isdigit():
            index = int(chosen)
            if visible_count is not None and index >= visible_count:
                return None
            return index
        need_nvml = True
    else:
        chosen = ""
    if not need_nvml:
        return local_rank if 0 <= local_rank < (visible_count or 0) else None
    nvml, _reason, _hint = load_nvml(nvml_module)
    if nvml is None:
        return None
    try:
        if chosen:
            return _uuid_to_index(nvml, chosen)
        count = nvml.nvmlDeviceGetCount()
        return local_rank if 0 <= local_rank < count else None
    except Exception:
        return None
    finally:
        shutdown_nvml(nvml)


def all_visible_indices(env: Mapping[str, str] = os.environ, *,
                        nvml_module: Any = None) -> tuple[list[int], str | None, str]:
    """Every NVML index a process started with ``env`` can use (for ``energy.monitor``).

    Returns ``(indices, reason, hint)``; ``reason`` says why the list is empty when it is.
    """
    nvml, reason, hint = load_nvml(nvml_module)
    if nvml is None:
        return [], reason, hint
    try:
        count = nvml.nvmlDeviceGetCount()
        visible = env.get("CUDA_VISIBLE_DEVICES")
        if visible is None:
            indices = list(range(count))
        else:
            indices = []
            for entry in _parse_visible(visible):
                if entry.startswith("MIG-"):
                    continue
                index = int(entry) if entry.isdigit() else _uuid_to_index(nvml, entry)
                if index is not None and index < count and index not in indices:
                    indices.append(index)
    except Exception as exc:
        return [], f"NVML device query failed: {_err_text(exc)}", HINT_NO_DRIVER
    finally:
        shutdown_nvml(nvml)
    if not indices:
        why = "NVML reports no GPU" if visible is None else f"CUDA_VISIBLE_DEVICES={visible!r} selects no GPU"
        return [], why, ""
    return indices, None, ""
