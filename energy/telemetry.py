"""What a rank's process and GPU did, read by the energy sampler at each of its passes.

The sampler thread calls ``TelemetryReader.sample()`` right after reading the energy counters
(one thread, one interval: no second sampler). Each pass reads:

- the rank's process: CPU time (``/proc/self/stat`` utime + stime, in clock ticks) and resident
  memory (``/proc/self/statm``), and the current frequency of the CPUs it may run on
  (``/sys/devices/system/cpu/cpuN/cpufreq/scaling_cur_freq``, else ``/proc/cpuinfo``'s
  ``cpu MHz`` of all CPUs, re-read every ``CPUINFO_REFRESH_S``);
- the rank's GPU through the NVML handle the energy meter already chose: utilisation, memory
  used, SM clock, temperature and the clock-event (throttle) reasons, decoded to names.

A source that cannot be read at open (or fails later) gives NaN from then on, and
``describe()`` says why, as the energy domains do. Rows wait in a bounded buffer until the
trainer drains them at each epoch end; a reader that is never drained keeps the newest rows.
"""
from __future__ import annotations

import math
import os
import threading
from collections import deque
from pathlib import Path
from typing import Any, Callable

from common.records import TelemetrySample

# NVML clock-event reason bits (nvmlClocksEventReason* / older nvmlClocksThrottleReason* names
# in nvml.h), named after the NVML suffix.
THROTTLE_REASON_BITS: tuple[tuple[int, str], ...] = (
    (0x001, "gpu_idle"), (0x002, "applications_clocks_setting"), (0x004, "sw_power_cap"),
    (0x008, "hw_slowdown"), (0x010, "sync_boost"), (0x020, "sw_thermal_slowdown"),
    (0x040, "hw_thermal_slowdown"), (0x080, "hw_power_brake_slowdown"), (0x100, "display_clock_setting"),
)
# The reasons that mean the GPU was slowed against its will (power or heat). Idle, application
# clocks, sync boost and display clocks are settings or states, not throttling.
THROTTLING_REASONS = frozenset({"sw_power_cap", "hw_slowdown", "sw_thermal_slowdown", "hw_thermal_slowdown",
                                "hw_power_brake_slowdown"})
# At 10 Hz: one hour of rows, a few MB, for a meter whose owner never drains it (energy.monitor).
MAX_BUFFERED_ROWS = 36_000
# /proc/cpuinfo (the frequency fallback where cpufreq is missing) lists every CPU of the node
# and costs far more to read than the other sources: it is re-read at most this often.
CPUINFO_REFRESH_S = 5.0
# Enough CPUs for a rank's mean frequency; a rank pinned to more is averaged over the first ones.
MAX_FREQ_CPUS = 64
_NVML_CLOCK_SM = 1            # nvmlClockType_t NVML_CLOCK_SM
_NVML_TEMPERATURE_GPU = 0     # nvmlTemperatureSensors_t NVML_TEMPERATURE_GPU

PROCESS_FIELDS = ("cpu_util_ratio", "rss_bytes", "cpu_freq_mhz")
GPU_FIELDS = ("gpu_util_ratio", "gpu_mem_busy_ratio", "gpu_mem_used_bytes", "gpu_sm_clock_mhz", "gpu_temp_c",
              "gpu_throttle_reasons")
TELEMETRY_FIELDS = PROCESS_FIELDS + GPU_FIELDS


def decode_throttle_reasons(mask: int) -> list[str]:
    """Names of the set NVML clock-event bits, in bit order; unknown bits as ``bit_0x...``."""
    names = [name for bit, name in THROTTLE_REASON_BITS if mask & bit]
    known = sum(bit for bit, _ in THROTTLE_REASON_BITS)
    if mask & ~known:
        names.append(f"bit_{mask & ~known:#x}")
    return names


def is_throttling(reasons: str | None) -> bool:
    """Whether a ``gpu_throttle_reasons`` cell names a power or thermal slowdown."""
    return bool(reasons) and any(r in THROTTLING_REASONS for r in str(reasons).split(","))


def _err_text(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


class _ProcessReader:
    """CPU time, RSS and CPU frequency of this process from /proc and /sys (roots injectable)."""

    def __init__(self, proc_root: str, sys_root: str, clock: Callable[[], float]):
        self.proc = Path(proc_root)
        self.sys = Path(sys_root)
        self.clock = clock
        self.reasons: dict[str, str] = {}
        self._ticks = float(os.sysconf("SC_CLK_TCK")) if hasattr(os, "sysconf") else 100.0
        self._page = float(os.sysconf("SC_PAGE_SIZE")) if hasattr(os, "sysconf") else 4096.0
        self._prev_cpu: tuple[float, float] | None = None   # (t_s, CPU seconds)
        self._freq_fds: list[int] = []
        self._cpuinfo = False
        self._cpuinfo_cache: tuple[float, float] = (-math.inf, math.nan)   # (t_s read, MHz)
        # Files stay open and are re-read from offset 0 (the kernel regenerates them): an open
        # and close per pass would double the cost of the sampler's pass.
        self._stat_fd = self._open_proc("self/stat", "cpu_util_ratio")
        self._statm_fd = self._open_proc("self/statm", "rss_bytes")
        try:
            if self._stat_fd is not None:
                self._prev_cpu = (clock(), self._cpu_seconds())
        except (OSError, ValueError, IndexError) as exc:
            self.reasons["cpu_util_ratio"] = f"{self.proc / 'self/stat'} unreadable ({_err_text(exc)})"
        try:
            if self._statm_fd is not None:
                self._rss()
        except (OSError, ValueError, IndexError) as exc:
            self.reasons["rss_bytes"] = f"{self.proc / 'self/statm'} unreadable ({_err_text(exc)})"
        self._open_freq()

    def _open_proc(self, name: str, field: str) -> int | None:
        try:
            return os.open(self.proc / name, os.O_RDONLY | os.O_CLOEXEC)
        except OSError as exc:
            self.reasons[field] = f"{self.proc / name} unreadable ({_err_text(exc)})"
            return None

    def _cpu_seconds(self) -> float:
        # Fields after the parenthesised command name (which may hold spaces): utime is the 14th
        # field of the line, stime the 15th.
        text = os.pread(self._stat_fd, 4096, 0)
        rest = text[text.rindex(b")") + 2:].split()
        return (int(rest[11]) + int(rest[12])) / self._ticks

    def _rss(self) -> float:
        return int(os.pread(self._statm_fd, 256, 0).split()[1]) * self._page

    def _cpus(self) -> list[int]:
        try:
            return sorted(os.sched_getaffinity(0))[:MAX_FREQ_CPUS]
        except (AttributeError, OSError):
            return list(range(min(os.cpu_count() or 1, MAX_FREQ_CPUS)))

    def _open_freq(self) -> None:
        for cpu in self._cpus():
            path = self.sys / f"devices/system/cpu/cpu{cpu}/cpufreq/scaling_cur_freq"
            try:
                fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
            except OSError:
                continue
            self._freq_fds.append(fd)
        if self._freq_fds:
            return
        if self._cpuinfo_mhz() is not None:
            self._cpuinfo = True
        else:
            self.reasons["cpu_freq_mhz"] = (f"no cpufreq scaling_cur_freq under {self.sys / 'devices/system/cpu'} "
                                            f"and no 'cpu MHz' in {self.proc / 'cpuinfo'} (VM or driver not loaded)")

    def _cpuinfo_mhz(self) -> float | None:
        try:
            lines = (self.proc / "cpuinfo").read_text().splitlines()
        except OSError:
            return None
        values = [float(line.split(":", 1)[1]) for line in lines if line.startswith("cpu MHz")]
        return sum(values) / len(values) if values else None

    def _freq_mhz(self) -> float:
        if self._cpuinfo:
            t_s = self.clock()
            if t_s - self._cpuinfo_cache[0] >= CPUINFO_REFRESH_S:
                got = self._cpuinfo_mhz()
                self._cpuinfo_cache = (t_s, math.nan if got is None else got)
            return self._cpuinfo_cache[1]
        values = []
        for fd in self._freq_fds:
            try:
                values.append(int(os.pread(fd, 32, 0)) / 1000.0)     # kHz -> MHz
            except (OSError, ValueError):
                continue
        return sum(values) / len(values) if values else math.nan

    def read(self, t_s: float) -> tuple[float, float, float]:
        util = rss = math.nan
        if "cpu_util_ratio" not in self.reasons and self._prev_cpu is not None:
            try:
                cpu_s = self._cpu_seconds()
                prev_t, prev_cpu = self._prev_cpu
                if t_s > prev_t:
                    util = (cpu_s - prev_cpu) / (t_s - prev_t)
                self._prev_cpu = (t_s, cpu_s)
            except (OSError, ValueError, IndexError) as exc:
                self.reasons["cpu_util_ratio"] = f"read failed during the run: {_err_text(exc)}"
        if "rss_bytes" not in self.reasons:
            try:
                rss = self._rss()
            except (OSError, ValueError, IndexError) as exc:
                self.reasons["rss_bytes"] = f"read failed during the run: {_err_text(exc)}"
        freq = math.nan if "cpu_freq_mhz" in self.reasons else self._freq_mhz()
        return util, rss, freq

    def close(self) -> None:
        fds, self._freq_fds = self._freq_fds, []
        fds += [fd for fd in (self._stat_fd, self._statm_fd) if fd is not None]
        self._stat_fd = self._statm_fd = None
        for fd in fds:
            try:
                os.close(fd)
            except OSError:
                pass


class _GpuReader:
    """NVML telemetry of one GPU through a handle someone else opened (the energy meter's)."""

    def __init__(self, nvml: Any, handle: Any, no_gpu_reason: str | None):
        self.nvml, self.handle = nvml, handle
        self.reasons: dict[str, str] = {}
        self.info: dict[str, Any] = {}
        if handle is None:
            for name in GPU_FIELDS:
                self.reasons[name] = no_gpu_reason or "no GPU handle"
            return
        self._reason_fn = (getattr(nvml, "nvmlDeviceGetCurrentClocksEventReasons", None)
                           or getattr(nvml, "nvmlDeviceGetCurrentClocksThrottleReasons", None))
        self._probe()
        try:
            self.info["gpu_mem_total_bytes"] = int(nvml.nvmlDeviceGetMemoryInfo(handle).total)
        except Exception:
            pass   # descriptive only: the memory-bound check then uses the used bytes alone

    def _probe(self) -> None:
        for fields, read in ((("gpu_util_ratio", "gpu_mem_busy_ratio"), self._util),
                             (("gpu_mem_used_bytes",), self._mem), (("gpu_sm_clock_mhz",), self._clock),
                             (("gpu_temp_c",), self._temp), (("gpu_throttle_reasons",), self._throttle)):
            try:
                read()
            except Exception as exc:  # NVMLError (not supported), AttributeError (old pynvml)
                for name in fields:
                    self.reasons[name] = f"NVML: {_err_text(exc)}"

    def _util(self) -> tuple[float, float]:
        rates = self.nvml.nvmlDeviceGetUtilizationRates(self.handle)
        return rates.gpu / 100.0, rates.memory / 100.0

    def _mem(self) -> float:
        return float(self.nvml.nvmlDeviceGetMemoryInfo(self.handle).used)

    def _clock(self) -> float:
        return float(self.nvml.nvmlDeviceGetClockInfo(self.handle, getattr(self.nvml, "NVML_CLOCK_SM", _NVML_CLOCK_SM)))

    def _temp(self) -> float:
        sensor = getattr(self.nvml, "NVML_TEMPERATURE_GPU", _NVML_TEMPERATURE_GPU)
        return float(self.nvml.nvmlDeviceGetTemperature(self.handle, sensor))

    def _throttle(self) -> str:
        if self._reason_fn is None:
            raise AttributeError("pynvml has neither nvmlDeviceGetCurrentClocksEventReasons nor "
                                 "nvmlDeviceGetCurrentClocksThrottleReasons")
        return ",".join(decode_throttle_reasons(int(self._reason_fn(self.handle))))

    def _get(self, name: str, read: Callable[[], Any], default: Any = math.nan) -> Any:
        if name in self.reasons:
            return default
        try:
            return read()
        except Exception as exc:
            self.reasons[name] = f"NVML read failed during the run: {_err_text(exc)}"
            return default

    def read(self) -> tuple[float, float, float, float, float, str | None]:
        util, busy = self._get("gpu_util_ratio", self._util, (math.nan, math.nan))
        if "gpu_mem_busy_ratio" in self.reasons:
            busy = math.nan
        return (util, busy, self._get("gpu_mem_used_bytes", self._mem), self._get("gpu_sm_clock_mhz", self._clock),
                self._get("gpu_temp_c", self._temp), self._get("gpu_throttle_reasons", self._throttle, None))


class TelemetryReader:
    """One rank's telemetry, read at each sampler pass; rows buffered until ``drain``.

    ``clock`` gives seconds on the meter's clock (the power samples'); ``phase`` returns the
    innermost open window's name. ``nvml``/``gpu_handle``: the meter's NVML module and the
    handle of the rank's GPU (None: no GPU fields, ``no_gpu_reason`` says why). ``proc_root``
    and ``sys_root`` let tests point at fake trees.
    """

    def __init__(self, *, rank: int, node: str, clock: Callable[[], float], phase: Callable[[], str],
                 nvml: Any = None, gpu_handle: Any = None, no_gpu_reason: str | None = None,
                 proc_root: str = "/proc", sys_root: str = "/sys", max_rows: int = MAX_BUFFERED_ROWS):
        self.rank, self.node = rank, node
        self._clock, self._phase = clock, phase
        self._process = _ProcessReader(proc_root, sys_root, clock)
        self._gpu = _GpuReader(nvml, gpu_handle, no_gpu_reason)
        self._rows: deque[TelemetrySample] = deque(maxlen=max_rows)
        self._lock = threading.Lock()
        self.dropped_rows = 0

    def sample(self) -> None:
        """Read every source once and buffer one row (called by the sampler thread)."""
        t_s = self._clock()
        util, rss, freq = self._process.read(t_s)
        row = TelemetrySample(self.rank, self.node, t_s, self._phase(), util, rss, freq, *self._gpu.read())
        with self._lock:
            if len(self._rows) == self._rows.maxlen:
                self.dropped_rows += 1
            self._rows.append(row)

    def drain(self) -> list[TelemetrySample]:
        """Rows since the previous drain, oldest first."""
        with self._lock:
            rows = list(self._rows)
            self._rows.clear()
        return rows

    def describe(self) -> dict[str, Any]:
        """JSON-able: per field ``"read"`` or the reason it is NaN; GPU details; dropped rows."""
        reasons = {**self._process.reasons, **self._gpu.reasons}
        return {"fields": {name: reasons.get(name, "read") for name in TELEMETRY_FIELDS},
                **self._gpu.info, "dropped_rows": self.dropped_rows}

    def close(self) -> None:
        self._process.close()



def open_telemetry(gpu_channels: list, nvml: Any, gpu_reason: str | None, *, rank: int, node: str,
                   clock: Callable[[], float], phase: Callable[[], str], proc_root: str = "/proc",
                   sys_root: str = "/sys") -> TelemetryReader:
    """The telemetry reader of an energy meter, reading the GPU through the NVML handle of the
    one channel its GPU domain opened (``gpu_channels``). Several GPUs in one process, or none:
    no GPU fields, and the reason (``gpu_reason``: why the GPU domain is unavailable)."""
    handles = [c.handle for c in gpu_channels if c.handle is not None]
    reason = None
    if len(handles) > 1:
        reason = f"{len(handles)} GPUs in one process: per-GPU telemetry is not recorded"
    elif not handles:
        reason = f"no GPU energy channel ({gpu_reason or 'no NVML handle'})"
    return TelemetryReader(rank=rank, node=node, clock=clock, phase=phase, nvml=nvml if len(handles) == 1 else None,
                           gpu_handle=handles[0] if len(handles) == 1 else None, no_gpu_reason=reason,
                           proc_root=proc_root, sys_root=sys_root)
