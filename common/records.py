"""Row types of the run directory that more than one layer produces (power rows)."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass
class PowerSample:
    """One power reading. ``t_s`` is seconds since this attempt of the run started: each start
    (the first, then one per ``--resume``) has its own clock, told apart by ``attempt``."""
    rank: int
    node: str
    t_s: float
    domain: str                   # "gpu" | "package" | "dram" | "estimate"
    device: str                   # e.g. "gpu0", "package-0", "package-0:dram"
    watts: float
    source: str                   # common.vocab.SOURCE_MEASURED or SOURCE_ESTIMATED
    attempt: int = 0              # 0 for the first start, +1 per resume (the writer stamps it)
