"""Energy per epoch by domain, how each number was obtained, and derived energy metrics.

Energy provenance labels carried through every table and plot:

- ``measured``: every contributing counter was read (NVML energy, RAPL).
- ``estimated``: every contributing value is an estimate (e.g. power model x time).
- ``includes estimates``: a sum of measured and estimated values.
- ``partial``: some contributing GPUs/nodes had no reading; the value is a lower bound.
- ``unavailable``: nothing was read; the value is NaN.

Rows whose source is ``not_reader`` (ranks that are not their node's RAPL reader) do not
contribute: node counters are read once per node, so summing the reader rows counts every node
exactly once and never multiplies node energy by ranks per node.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterable, Sequence

import numpy as np

DOMAINS = ("gpu", "cpu", "dram")
MEASURED, ESTIMATED, MIXED, PARTIAL, UNAVAILABLE = (
    "measured", "estimated", "includes estimates", "partial", "unavailable")
NOT_READER = "not_reader"

_ATOMS = {MEASURED: {"m"}, ESTIMATED: {"e"}, MIXED: {"m", "e"}, PARTIAL: {"m", "u"},
          UNAVAILABLE: {"u"}}


def combine_sources(labels: Iterable[str]) -> str:
    """Provenance of a sum of values with the given labels (``not_reader`` ignored)."""
    atoms: set[str] = set()
    for label in labels:
        if label == NOT_READER:
            continue
        atoms |= _ATOMS.get(label, {"u"})
    if not atoms or atoms == {"u"}:
        return UNAVAILABLE
    if "u" in atoms:
        return PARTIAL
    if atoms == {"m", "e"}:
        return MIXED
    return ESTIMATED if atoms == {"e"} else MEASURED


@dataclass(frozen=True)
class DomainEnergy:
    """Energy of one domain summed over contributing rows, J, with its provenance."""
    energy_j: float
    source: str


def domain_energy(values_j: Sequence[float], sources: Sequence[str]) -> DomainEnergy:
    """Sum one domain over rows: each node/GPU once (``not_reader`` rows skipped).

    A row labelled measured/estimated but holding NaN counts as unavailable.
    """
    total, labels, any_value = 0.0, [], False
    for value, source in zip(values_j, sources):
        if source == NOT_READER:
            continue
        v = float(value) if value is not None else math.nan
        if math.isfinite(v) and source in (MEASURED, ESTIMATED):
            total += v
            any_value = True
            labels.append(source)
        else:
            labels.append(UNAVAILABLE)
    label = combine_sources(labels)
    return DomainEnergy(total if any_value else math.nan, label)


@dataclass(frozen=True)
class TotalEnergy:
    """Sum over the domains that have a value, J; ``domains`` names them ('gpu+cpu+dram')."""
    energy_j: float
    source: str
    domains: str


def total_energy(parts: dict[str, DomainEnergy]) -> TotalEnergy:
    """Add the available domains; the label says whether estimates are inside the total.

    Unavailable domains are left out and not named in ``domains``, so a GPU-only total is
    visible as such rather than silently treated as the full machine.
    """
    used = {k: v for k, v in parts.items() if v.source != UNAVAILABLE and math.isfinite(v.energy_j)}
    if not used:
        return TotalEnergy(math.nan, UNAVAILABLE, "")
    return TotalEnergy(sum(v.energy_j for v in used.values()),
                       combine_sources(v.source for v in used.values()),
                       "+".join(k for k in DOMAINS if k in used))


def energy_per_1000_showers_j(energy_j: float, showers: float) -> float:
    """E / showers * 1000, J per 1000 showers processed."""
    return energy_j / showers * 1000.0 if showers > 0 else math.nan


def showers_per_j(energy_j: float, showers: float) -> float:
    """Samples per joule = showers processed / energy."""
    return showers / energy_j if energy_j > 0 else math.nan


def average_power_w(energy_j: float, time_s: float) -> float:
    """P = E / T, W."""
    return energy_j / time_s if time_s > 0 else math.nan


def edp_j_s(energy_j: float, time_s: float) -> float:
    """Energy-delay product E x T, J s."""
    return energy_j * time_s


def ed2p_j_s2(energy_j: float, time_s: float) -> float:
    """Energy-delay-squared product E x T^2, J s^2 (weights time more than EDP)."""
    return energy_j * time_s * time_s


def nan_median(values: Sequence[float]) -> float:
    arr = np.asarray(values, dtype=float)
    arr = arr[np.isfinite(arr)]
    return float(np.median(arr)) if arr.size else math.nan
