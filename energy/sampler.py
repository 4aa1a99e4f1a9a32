"""The background sampler: one daemon thread per rank reading every channel at a fixed rate.

It keeps the accumulators current (so every RAPL wrap is seen) and turns consecutive readings
into power samples. The loop does no I/O besides the counter reads, never forks, and hands its
samples over by swapping a list under a lock held for a few instructions, so neither the
training thread nor the gatherer ever waits on it for long.
"""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Callable

from energy.counters import Accumulator
from energy.records import PowerSample


@dataclass
class SamplerStats:
    """Cost of the sampler thread so far. Seconds."""
    samples: int = 0            # sampling passes (each reads every channel once)
    thread_cpu_s: float = 0.0   # CPU time of the sampler thread itself
    wall_s: float = 0.0         # wall time since the thread started
    late_ticks: int = 0         # ticks skipped because a pass ran past the next deadline

    @property
    def cpu_fraction(self) -> float:
        """Share of one core used by the sampler (0.005 = 0.5 %)."""
        return self.thread_cpu_s / self.wall_s if self.wall_s > 0 else 0.0


class Sampler:
    def __init__(self, accumulators: list[Accumulator], *, interval_s: float, rank: int, node: str,
                 on_pass: Callable[[], None] | None = None):
        self.accumulators = accumulators
        self.on_pass = on_pass          # runs in every pass after the counters (energy.telemetry)
        self.interval_s = interval_s
        self.rank = rank
        self.node = node
        self.stats = SamplerStats()
        self._samples: list[PowerSample] = []
        self._samples_lock = threading.Lock()
        self._pass_lock = threading.Lock()          # one sampling pass at a time
        self._prev: dict[int, tuple[float, float]] = {}   # accumulator id -> (t_s, total_uj)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # -- sampling -----------------------------------------------------------------------------
    def sample_now(self) -> None:
        """Read every channel once and append one power sample per channel that has a rate."""
        fresh: list[PowerSample] = []
        with self._pass_lock:
            for i, acc in enumerate(self.accumulators):
                got = acc.update()
                if got is None:
                    continue
                t_s, total_uj, watts = got
                prev = self._prev.get(i)
                self._prev[i] = (t_s, total_uj)
                if watts is None:
                    if prev is None or t_s <= prev[0]:
                        continue
                    watts = (total_uj - prev[1]) * 1e-6 / (t_s - prev[0])
                ch = acc.channel
                fresh.append(PowerSample(rank=self.rank, node=self.node, t_s=t_s, domain=ch.domain,
                                         device=ch.device, watts=float(watts), source=ch.source))
            if self.on_pass is not None:
                self.on_pass()
            self.stats.samples += 1
        if fresh:
            with self._samples_lock:
                self._samples.extend(fresh)

    def drain(self) -> list[PowerSample]:
        """Samples since the previous drain, oldest first."""
        with self._samples_lock:
            out, self._samples = self._samples, []
        return out

    # -- thread -------------------------------------------------------------------------------
    def start(self) -> None:
        if self._thread is not None:
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name=f"energy-sampler-r{self.rank}", daemon=True)
        self._thread.start()

    def stop(self, timeout_s: float = 5.0) -> None:
        self._stop.set()
        thread, self._thread = self._thread, None
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout_s)

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def _run(self) -> None:
        cpu0 = time.thread_time()
        wall0 = time.monotonic()
        deadline = wall0 + self.interval_s
        while not self._stop.wait(max(0.0, deadline - time.monotonic())):
            self.sample_now()
            deadline += self.interval_s
            now = time.monotonic()
            if deadline <= now:
                # A pass ran long or the process was suspended: restart the grid from now
                # instead of firing a burst of catch-up passes.
                self.stats.late_ticks += 1
                deadline = now + self.interval_s
            self.stats.thread_cpu_s = time.thread_time() - cpu0
            self.stats.wall_s = now - wall0
        self.stats.thread_cpu_s = time.thread_time() - cpu0
        self.stats.wall_s = time.monotonic() - wall0
