"""Records produced by the energy package (also the power.parquet row type)."""
from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass
class PowerSample:
    """One power reading. ``t_s`` is seconds since the run started (one clock per run)."""
    rank: int
    node: str
    t_s: float
    domain: str                   # "gpu" | "package" | "dram" | "estimate"
    device: str                   # e.g. "gpu0", "package-0", "package-0:dram"
    watts: float
    source: str                   # "measured" | "estimated"


@dataclass
class EnergyWindow:
    """Energy of one named window (e.g. one epoch) on one rank. Joules and seconds.

    ``cpu_energy_j``/``dram_energy_j`` are whole-node RAPL values and are only filled on the
    node's reader rank; elsewhere they are NaN with source ``not_reader``.
    """
    name: str
    time_s: float
    gpu_energy_j: float = math.nan
    cpu_energy_j: float = math.nan
    dram_energy_j: float = math.nan
    gpu_energy_source: str = "unavailable"
    cpu_energy_source: str = "unavailable"
    dram_energy_source: str = "unavailable"
