"""One accumulator per energy source: unwrapped total energy in microjoules, safe across threads.

Two kinds of source exist:

- counters (RAPL ``energy_uj``, NVML total energy, the utilisation estimate) report a cumulative
  energy; the accumulator adds the difference between consecutive reads, undoing a wrap-around
  when the counter has a known range;
- power meters (NVML power usage when the GPU has no energy counter) report watts; the
  accumulator integrates them over time with the trapezoid rule.

Both the background sampler and the window edges (``begin``/``end``) call ``update``; the read
and the bookkeeping happen under one lock, so two readers can never see the counter go
backwards because of each other, and a wrap seen by either is counted exactly once.
"""
from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Callable


@dataclass
class Channel:
    """How to read one device, and what it is.

    ``read`` returns microjoules (``kind == "counter"``) or watts (``kind == "power"``).
    ``max_range_uj`` is the counter's wrap point (RAPL ``max_energy_range_uj``); ``None`` means
    the counter never wraps in practice (NVML's 64-bit millijoule counter), so a decrease is a
    reset and is reported as an error instead of being unwrapped.
    """
    domain: str                     # "gpu" | "package" | "dram" | "estimate"
    device: str                     # "gpu0", "package-0", "package-0:dram", "cpu"
    kind: str                       # "counter" | "power"
    source: str                     # common.vocab.SOURCE_MEASURED or SOURCE_ESTIMATED
    method: str                     # "rapl-powercap", "nvml-energy-counter", ...
    read: Callable[[], float]
    max_range_uj: int | None = None
    close: Callable[[], None] | None = None
    info: dict = field(default_factory=dict)   # JSON-able details for describe()
    handle: object = None           # the device's NVML handle (GPU channels): telemetry reads through it


class Accumulator:
    """Unwrapped energy of one channel since it was opened, in microjoules."""

    def __init__(self, channel: Channel, clock: Callable[[], float]):
        self.channel = channel
        self._clock = clock                 # seconds on the meter's clock (since run start)
        self._lock = threading.Lock()
        self._last_raw: float | None = None
        self._last_t_s: float | None = None
        self.total_uj: float = 0            # int for integer counters: exact differences
        self.wraps = 0
        self.error: str | None = None       # first failure; the channel is not read after it

    def update(self) -> tuple[float, float, float | None] | None:
        """Read the device now; return ``(t_s, total_uj, watts or None)``, or ``None`` after an error.

        ``watts`` is the reading itself for power channels and ``None`` for counters (the caller
        derives power from consecutive totals).
        """
        with self._lock:
            if self.error is not None:
                return None
            try:
                raw = self.channel.read()
            except Exception as exc:  # any driver or file error: record it, never crash the caller
                self.error = f"{self.channel.device}: read failed ({_short(exc)})"
                return None
            t_s = self._clock()
            if self.channel.kind == "power":
                self._integrate_power(raw, t_s)
                watts: float | None = raw
            else:
                self._advance_counter(raw)
                if self.error is not None:
                    return None
                watts = None
            self._last_raw, self._last_t_s = raw, t_s
            return t_s, self.total_uj, watts

    def _advance_counter(self, raw: float) -> None:
        if self._last_raw is None:
            return
        delta = raw - self._last_raw
        if delta < 0:
            if self.channel.max_range_uj:
                # The counter passed its range and restarted from zero: what it gained is the
                # rest of the range before the wrap plus the new reading after it.
                delta += self.channel.max_range_uj
                self.wraps += 1
            else:
                self.error = (f"{self.channel.device}: counter decreased from {self._last_raw} to {raw} "
                              "(driver reloaded or counter reset)")
                return
        self.total_uj += delta

    def _integrate_power(self, watts: float, t_s: float) -> None:
        if self._last_t_s is None or self._last_raw is None:
            return
        dt = t_s - self._last_t_s
        if dt > 0:
            self.total_uj += 0.5 * (watts + self._last_raw) * dt * 1e6

    def close(self, timeout_s: float = 1.0) -> None:
        """Release the device; gives up after ``timeout_s`` if a read hangs (a stuck driver call)."""
        if not self._lock.acquire(timeout=timeout_s):
            return
        try:
            if self.channel.close is not None:
                try:
                    self.channel.close()
                except Exception:
                    pass  # closing is best effort; the values were already taken
                self.channel.close = None
            if self.error is None:
                self.error = f"{self.channel.device}: closed"
        finally:
            self._lock.release()


def _short(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__
