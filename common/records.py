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


@dataclass
class TelemetrySample:
    """What one rank's process and GPU were doing at one sampler pass (``telemetry/`` parts).

    ``t_s`` is on the same clock as ``PowerSample.t_s``. A quantity whose source is missing is
    NaN (``gpu_throttle_reasons``: None); the meter's ``describe()["telemetry"]`` says why.
    ``phase`` is the innermost meter window open at the pass ("epoch-3", "eval-0-200",
    "checkpoint-3", "baseline-before"), "" outside every window (start-up, bookkeeping).
    """
    rank: int
    node: str
    t_s: float
    phase: str
    cpu_util_ratio: float         # CPU seconds of the rank's process per wall second (1.0 = one core busy)
    rss_bytes: float              # resident memory of the rank's process
    cpu_freq_mhz: float           # mean current frequency of the CPUs the process may run on
    gpu_util_ratio: float         # NVML: share of the last sample period a kernel ran on the GPU
    gpu_mem_busy_ratio: float     # NVML: share of that period the GPU memory was read or written
    gpu_mem_used_bytes: float
    gpu_sm_clock_mhz: float
    gpu_temp_c: float
    gpu_throttle_reasons: str | None   # decoded NVML clock-event reasons, comma-separated ("" none)
    attempt: int = 0              # the writer stamps it, as for power rows
