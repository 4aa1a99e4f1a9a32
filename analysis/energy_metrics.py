"""Energy per epoch by domain, how each number was obtained, and derived energy metrics.

Energy provenance labels carried through every table and plot:

- ``measured``: every contributing counter was read (NVML energy, RAPL).
- ``estimated``: every contributing value is an estimate (e.g. power model x time).
- ``includes estimates``: a sum of measured and estimated values.
- ``partial``: some contributing GPUs/nodes had no reading, so the value is a lower bound; or
  the number of ranks that read node counters is not the run's number of nodes (a launcher
  whose local rank was guessed), so some node is missing or counted twice.
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

from common.vocab import DOMAIN_CPU, DOMAIN_DRAM, ENERGY_DOMAINS
from common.vocab import SOURCE_ESTIMATED as ESTIMATED
from common.vocab import SOURCE_MEASURED as MEASURED
from common.vocab import SOURCE_NOT_READER as NOT_READER
from common.vocab import SOURCE_PARTIAL as PARTIAL
from common.vocab import SOURCE_UNAVAILABLE as UNAVAILABLE

# Label of sums only (a single counter is never it), like PARTIAL.
MIXED = "includes estimates"
# Domains read once per node (by its local rank 0); the others are read by every rank.
NODE_DOMAINS = (DOMAIN_CPU, DOMAIN_DRAM)

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


def domain_energy(values_j: Sequence[float], sources: Sequence[str],
                  expected_readers: int | None = None) -> DomainEnergy:
    """Sum one domain over rows: each node/GPU once (``not_reader`` rows skipped).

    A row labelled measured/estimated but holding NaN counts as unavailable. ``expected_readers``
    (a node domain: the run's number of nodes): when the rows that are not ``not_reader`` are
    not that many, a sum with a value is ``partial``, never ``measured``.
    """
    total, labels, any_value = 0.0, [], False
    readers = 0
    for value, source in zip(values_j, sources):
        if source == NOT_READER:
            continue
        readers += 1
        v = float(value) if value is not None else math.nan
        if math.isfinite(v) and source in (MEASURED, ESTIMATED):
            total += v
            any_value = True
            labels.append(source)
        else:
            labels.append(UNAVAILABLE)
    label = combine_sources(labels)
    if expected_readers is not None and readers != expected_readers and label != UNAVAILABLE:
        label = PARTIAL
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
                       "+".join(k for k in ENERGY_DOMAINS if k in used))


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
