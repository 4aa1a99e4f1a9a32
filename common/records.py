"""Row types of the run directory that more than one layer produces (power.parquet)."""
from __future__ import annotations

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
