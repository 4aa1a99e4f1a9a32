"""Records produced by the energy package: energy windows and (from the run-directory schema) power samples."""
from __future__ import annotations

import math
from dataclasses import dataclass

from common.records import PowerSample
from common.vocab import SOURCE_UNAVAILABLE

__all__ = ["EnergyWindow", "PowerSample"]


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
    gpu_energy_source: str = SOURCE_UNAVAILABLE
    cpu_energy_source: str = SOURCE_UNAVAILABLE
    dram_energy_source: str = SOURCE_UNAVAILABLE
