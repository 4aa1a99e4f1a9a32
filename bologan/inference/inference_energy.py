"""Energy of the inference benchmark: the meter of the benchmarking process, and one energy
figure (J, J per 1000 showers, provenance) per timed window.

Measured domains are summed when there is any; otherwise estimated ones; estimated joules are
never added to measured ones.
"""
from __future__ import annotations

import math
import socket
import time
from dataclasses import dataclass, field
from typing import Any, Sequence

from common.vocab import ENERGY_DOMAINS, SOURCE_ESTIMATED, SOURCE_MEASURED, SOURCE_UNAVAILABLE, SOURCES_WITH_VALUE

# The meter's own wording is per rank ("no GPU assigned to this rank"); here the process is alone.
NO_GPU_REASON = "TensorFlow sees no GPU: the generator ran on the CPU"


@dataclass
class EnergyFigure:
    """Energy of one window: total of the domains used (J), per 1000 showers (J), provenance."""

    energy_j: float | None
    energy_per_1000_showers_j: float | None
    energy_source: str                  # measured | estimated | unavailable
    energy_domains: list[str]           # domains summed into energy_j
    energy_reason: str                  # why unavailable ("" otherwise)
    energy_by_domain: dict[str, dict[str, Any]]


@dataclass(frozen=True)
class _ThisProcess:
    """The benchmark is one process: rank 0 of one, reading its node's counters."""

    rank: int = 0
    local_rank: int = 0
    node: str = field(default_factory=socket.gethostname)


def open_meter(energy_cfg: Any, on_gpu: bool) -> Any:
    """The ``EnergyMeter`` of this process (its GPU when ``on_gpu``, the node's RAPL counters)."""
    from energy.meter import EnergyMeter, tf_sync_devices

    return EnergyMeter.for_rank(_ThisProcess(), energy_cfg, t0=time.monotonic(), on_gpu=on_gpu,
                                sync=tf_sync_devices())


def combine_energy(window: Any, showers: int, describe: dict[str, Any] | None = None) -> EnergyFigure:
    """Turn an ``EnergyWindow`` into one energy figure for ``showers`` generated showers.

    ``describe`` (``EnergyMeter.describe()``) supplies the reasons of unavailable domains.
    """
    by_domain: dict[str, dict[str, Any]] = {}
    for d in ENERGY_DOMAINS:
        joules = getattr(window, f"{d}_energy_j")
        source = getattr(window, f"{d}_energy_source")
        entry: dict[str, Any] = {"energy_j": None if math.isnan(joules) else float(joules), "source": source}
        reason = ((describe or {}).get("domains", {}).get(d, {}) or {}).get("reason")
        if reason and source not in SOURCES_WITH_VALUE:
            entry["reason"] = reason
        by_domain[d] = entry
    for wanted in (SOURCE_MEASURED, SOURCE_ESTIMATED):
        used = [d for d in ENERGY_DOMAINS if by_domain[d]["source"] == wanted and by_domain[d]["energy_j"] is not None]
        if used:
            total = sum(by_domain[d]["energy_j"] for d in used)
            per_1000 = total * 1000.0 / showers if showers > 0 else None
            return EnergyFigure(total, per_1000, wanted, used, "", by_domain)
    reasons = [f"{d}: {by_domain[d].get('reason', by_domain[d]['source'])}" for d in ENERGY_DOMAINS]
    return EnergyFigure(None, None, SOURCE_UNAVAILABLE, [], "; ".join(reasons), by_domain)


def overall_source(figures: Sequence[EnergyFigure]) -> tuple[str, str]:
    """(source, reason) of the whole benchmark: measured if any window was, else estimated if
    any was, else unavailable with the first window's reason."""
    sources = {f.energy_source for f in figures}
    if SOURCE_MEASURED in sources:
        return SOURCE_MEASURED, ""
    if SOURCE_ESTIMATED in sources:
        return SOURCE_ESTIMATED, ""
    return SOURCE_UNAVAILABLE, figures[0].energy_reason if figures else "no window"
