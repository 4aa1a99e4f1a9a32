"""Per-rank energy meter: the window API the trainer calls (``begin``/``end``) plus the sampler.

Each rank reads the GPU it drives; the node's RAPL counters are read by one rank per node
(``read_node_counters``, local rank 0 by convention), so summing the per-rank windows over the
job counts every GPU and every node exactly once. Other ranks report the node domains as
``not_reader`` (NaN joules).

Domains and their sources (``EnergyWindow.*_source`` and ``describe()``):

- ``gpu``: this rank's GPU(s) through NVML;
- ``cpu``: sum of every RAPL package zone of the node (or the opt-in utilisation estimate);
- ``dram``: sum of every RAPL dram zone of the node.

A source is ``measured``, ``estimated``, ``unavailable`` (with reason and hint in ``describe``),
or ``not_reader``.
"""
from __future__ import annotations

import math
import os
import socket
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Protocol, Sequence

from common.runinfo import cpu_model
from common.vocab import (DOMAIN_CPU, DOMAIN_DRAM, DOMAIN_GPU, ENERGY_DOMAINS, SOURCE_ESTIMATED, SOURCE_MEASURED,
                          SOURCE_NOT_READER, SOURCE_UNAVAILABLE, SOURCES_WITH_VALUE)
from energy.config import EnergyConfig
from energy.counters import Accumulator, Channel
from common.gpu_binding import GpuChoice
from energy.estimate import choose_cpu_tdp, open_cpu_estimate
from energy.nvml import gpus_of_process, index_of_bus_id, load_nvml, open_gpus, shutdown_nvml
from energy.rapl import OpenFn, default_open, interval_warning, open_rapl, wrap_period_s
from energy.records import EnergyWindow, PowerSample
from energy.sampler import Sampler
from energy.telemetry import TelemetrySample, open_telemetry

__all__ = ["EnergyMeter", "Placement", "RankPlacement", "tf_sync_devices"]

# The one rank per node that reads the node-wide counters, so no node is counted twice.
NODE_READER_LOCAL_RANK = 0


class RankPlacement(Protocol):
    """Where a rank runs, as far as metering goes (``scaling.world.World`` is one)."""

    @property
    def rank(self) -> int: ...

    @property
    def local_rank(self) -> int: ...          # rank among the processes of its node

    @property
    def node(self) -> str: ...                # node name; ranks of one node share it


@dataclass(frozen=True)
class Placement:
    """A ``RankPlacement`` for code without a job's world; the default is a process alone on
    its node (rank 0, local rank 0: it reads the node counters)."""
    rank: int = 0
    local_rank: int = 0
    node: str = field(default_factory=socket.gethostname)


@dataclass
class _Domain:
    source: str                                  # one of common.vocab.ENERGY_SOURCES
    method: str | None = None
    accumulators: list[Accumulator] = field(default_factory=list)
    reason: str | None = None
    hint: str = ""


@dataclass
class _OpenWindow:
    t_s: float
    totals_uj: list[float | None]                # per accumulator; None = could not be read


def tf_sync_devices() -> Callable[[], None] | None:
    """``tf.test.experimental.sync_devices`` when TensorFlow is already imported and has it.

    Never imports TensorFlow. The function fences queued GPU work so counters read right after
    it include that work; TensorFlow allows it only eagerly (outside ``tf.function``).
    """
    tf = sys.modules.get("tensorflow")
    if tf is None:
        return None
    fn = getattr(getattr(getattr(tf, "test", None), "experimental", None), "sync_devices", None)
    return fn if callable(fn) else None


def _nvml_indices(gpus: Sequence[GpuChoice], nvml_module: Any) -> tuple[list[int], str | None]:
    """NVML indices of the GPUs a process trains on, found by PCI bus id; ``([], reason)`` when
    one cannot be metered (no bus id, a MIG instance, NVML missing)."""
    if not gpus:
        return [], "the rank's GPU could not be matched to an NVML device (NVML unavailable)"
    for gpu in gpus:
        if gpu.mig_uuid is not None:
            return [], (f"{gpu.mig_uuid} is a MIG instance of GPU {gpu.pci_bus_id}: NVML's energy counter "
                        "covers the whole GPU and its other instances")
        if gpu.pci_bus_id is None:
            return [], f"GPU {gpu.position} has no known PCI bus id (NVML unavailable or CUDA_DEVICE_ORDER not PCI_BUS_ID)"
    nvml, reason, _hint = load_nvml(nvml_module)
    if nvml is None:
        return [], reason
    try:
        indices = [index_of_bus_id(nvml, g.pci_bus_id) for g in gpus]
    except Exception as exc:  # noqa: BLE001 - an NVML query failure makes the domain unavailable
        return [], f"NVML device query failed: {exc}"
    finally:
        shutdown_nvml(nvml)
    missing = [g.pci_bus_id for g, i in zip(gpus, indices) if i is None]
    if missing:
        return [], f"NVML lists no GPU at PCI bus id {missing[0]}"
    return [i for i in indices if i is not None], None


def _shared(channel: Channel, sharers: int) -> Channel:
    """``channel`` reporting 1/``sharers`` of its GPU's energy or power (ranks sharing a GPU)."""
    if sharers == 1:
        return channel
    read = channel.read
    info = {**channel.info, "shared_by_ranks": sharers, "energy_fraction": 1 / sharers}
    return Channel(channel.domain, channel.device, channel.kind, channel.source, channel.method,
                   (lambda: read() / sharers), channel.max_range_uj, channel.close, info)


def _domain_source(channels: list[Channel]) -> str:
    # One estimated device makes the whole sum an estimate: it is flagged, never passed as measured.
    return SOURCE_ESTIMATED if any(c.source == SOURCE_ESTIMATED for c in channels) else SOURCE_MEASURED


def _method(channels: list[Channel]) -> str:
    return "+".join(sorted({c.method for c in channels}))


class EnergyMeter:
    """Energy of named windows on one rank, and its power time series.

    A rank of a job gets its meter from ``EnergyMeter.for_rank(world, config, ...)``, which picks
    the node-counter reader and the GPU from the rank's placement; the constructor is for
    callers that decide both themselves (a whole-node monitor, tests).

    ``t0`` is ``time.monotonic()`` at run start: every timestamp is seconds since ``t0``.
    ``gpu_index`` is this rank's NVML index or ``None``; ``gpu_sharers`` > 1 says that many
    ranks use that GPU (``--share-gpu``): each then reports 1/``gpu_sharers`` of its energy and
    power, so the job's sum counts the GPU once; ``no_gpu_reason`` replaces the reason given
    when ``gpu_index`` is None.

    Extra keyword arguments (defaults are right for training): ``gpu_indices`` measures several
    GPUs as one domain (``energy.monitor``); ``open_fn`` opens sysfs files (tests inject
    failures); ``proc_stat`` and ``cpu_packages`` feed the CPU estimate; ``clock`` replaces
    ``time.monotonic`` (tests drive time by hand).
    """

    def __init__(self, config: EnergyConfig, *, rank: int, local_rank: int, node: str,
                 read_node_counters: bool, gpu_index: int | None, t0: float,
                 sync: Callable[[], None] | None = None, nvml_module: Any = None,
                 gpu_indices: list[int] | None = None, open_fn: OpenFn = default_open,
                 proc_stat: str = "/proc/stat", cpu_packages: int | None = None,
                 clock: Callable[[], float] = time.monotonic, proc_root: str = "/proc", sys_root: str = "/sys",
                 gpu_sharers: int = 1, no_gpu_reason: str | None = None):
        config.check()
        if gpu_sharers < 1:
            raise ValueError(f"gpu_sharers must be >= 1, got {gpu_sharers}")
        self.gpu_sharers = gpu_sharers
        self._no_gpu_reason = no_gpu_reason
        self._monotonic = clock
        self.config = config
        self.rank = rank
        self.local_rank = local_rank
        self.node = node
        self.read_node_counters = read_node_counters
        self.t0 = t0
        self._sync = sync
        self._warnings: list[str] = []
        self._skipped_zones: list[dict] = []
        self._nvml: Any = None
        self._windows: dict[str, _OpenWindow] = {}
        self._windows_lock = threading.Lock()
        self._stopped = False

        indices = list(gpu_indices) if gpu_indices is not None else ([] if gpu_index is None else [gpu_index])
        self._domains: dict[str, _Domain] = {
            DOMAIN_GPU: self._open_gpu_domain(indices, nvml_module),
        }
        if read_node_counters:
            cpu, dram = self._open_node_domains(open_fn, proc_stat, cpu_packages)
        else:
            why = "node counters are read by the node's reader rank (local rank 0)"
            cpu = _Domain(SOURCE_NOT_READER, reason=why)
            dram = _Domain(SOURCE_NOT_READER, reason=why)
        self._domains[DOMAIN_CPU] = cpu
        self._domains[DOMAIN_DRAM] = dram
        self._accumulators = [a for d in ENERGY_DOMAINS for a in self._domains[d].accumulators]
        for acc in self._accumulators:
            warning = interval_warning(acc.channel, config.sample_interval_s)
            if warning:
                self._warnings.append(warning)
        gpu = self._domains[DOMAIN_GPU]
        self._telemetry = open_telemetry([a.channel for a in gpu.accumulators], self._nvml, gpu.reason, rank=rank,
                                         node=node, clock=self._clock, phase=self.current_phase,
                                         proc_root=proc_root, sys_root=sys_root)
        self._sampler = Sampler(self._accumulators, interval_s=config.sample_interval_s, rank=rank, node=node,
                                on_pass=self._telemetry.sample)
        self._sampler.sample_now()     # first reading: later samples and windows difference against it
        self._sampler.drain()

    @classmethod
    def for_rank(cls, world: RankPlacement, config: EnergyConfig, *, t0: float, on_gpu: bool,
                 gpus_in_process: int = 1, gpus: Sequence[GpuChoice] | None = None, gpu_sharers: int = 1,
                 sync: Callable[[], None] | None = None, env: Mapping[str, str] = os.environ,
                 nvml_module: Any = None, **kwargs: Any) -> "EnergyMeter":
        """The meter of one rank of a job, placed by ``world``.

        - node counters (RAPL) are read by the node's local rank 0 only; the others report
          ``not_reader``;
        - ``on_gpu=False``: no GPU domain. Otherwise the GPU domain is the GPU(s) the process
          trains on: ``gpus``, the choice its pinning made (``scaling.devices``), opened in
          NVML by PCI bus id; without ``gpus`` the same rule (``common.gpu_binding``) is asked
          here from CUDA_VISIBLE_DEVICES in ``env`` (a process that drives ``gpus_in_process``
          > 1 GPUs meters every GPU visible to it as one domain).
        - ``gpu_sharers``: ranks that use this rank's GPU (``common.gpu_binding.node_sharing``).

        ``t0``, ``sync``, ``nvml_module`` and other keyword arguments go to the constructor.
        """
        gpu_indices: list[int] = []
        why = None
        if on_gpu:
            if gpus is None:
                gpus = gpus_of_process(world.local_rank, getattr(world, "local_size", 1), env,
                                       all_local=gpus_in_process > 1, nvml_module=nvml_module)
            gpu_indices, why = _nvml_indices(gpus, nvml_module)
        return cls(config, rank=world.rank, local_rank=world.local_rank, node=world.node,
                   read_node_counters=world.local_rank == NODE_READER_LOCAL_RANK, gpu_index=None,
                   gpu_indices=gpu_indices, t0=t0, sync=sync, nvml_module=nvml_module, gpu_sharers=gpu_sharers,
                   no_gpu_reason=why, **kwargs)

    # -- construction -------------------------------------------------------------------------
    def _clock(self) -> float:
        return self._monotonic() - self.t0

    def _accumulate(self, channels: list[Channel]) -> list[Accumulator]:
        return [Accumulator(ch, self._clock) for ch in channels]

    def _open_gpu_domain(self, indices: list[int], nvml_module: Any) -> _Domain:
        if not indices:
            return _Domain(SOURCE_UNAVAILABLE, reason=self._no_gpu_reason or "no GPU assigned to this rank",
                           hint="GPU energy needs the NVIDIA GPU the rank trains on (scaling.devices pins it)")
        nvml, reason, hint = load_nvml(nvml_module)
        if nvml is None:
            return _Domain(SOURCE_UNAVAILABLE, reason=reason, hint=hint)
        self._nvml = nvml
        tdp = self.config.gpu_tdp_w if self.config.estimate_energy else 0.0
        opened = open_gpus(nvml, indices, estimate_tdp_w=tdp)
        if opened.reason is not None:
            return _Domain(SOURCE_UNAVAILABLE, reason=opened.reason, hint=opened.hint)
        channels = [_shared(c, self.gpu_sharers) for c in opened.channels]
        return _Domain(_domain_source(channels), _method(channels), self._accumulate(channels))

    def _open_node_domains(self, open_fn: OpenFn, proc_stat: str,
                           cpu_packages: int | None) -> tuple[_Domain, _Domain]:
        rapl = open_rapl(self.config.powercap_root, open_fn)
        self._skipped_zones = rapl.skipped
        out: list[_Domain] = []
        for domain in ("package", "dram"):
            channels = [c for c in rapl.channels if c.domain == domain]
            problem = rapl.problems.get(domain)
            if problem is None:
                out.append(_Domain(SOURCE_MEASURED, "rapl-powercap", self._accumulate(channels)))
            else:
                out.append(_Domain(SOURCE_UNAVAILABLE, reason=problem.reason, hint=problem.hint))
        cpu, dram = out
        if cpu.source == SOURCE_UNAVAILABLE and self.config.estimate_energy:
            cpu = self._open_cpu_estimate(cpu, proc_stat, cpu_packages)
        return cpu, dram

    def _open_cpu_estimate(self, measured: _Domain, proc_stat: str, packages: int | None) -> _Domain:
        # The user's TDP, else the shipped table's for this CPU model (energy.tdp).
        choice = choose_cpu_tdp(self.config.cpu_tdp_w, packages, proc_stat)
        if choice is None:
            self._warnings.append(f"estimate_energy is on but cpu_tdp_w is 0 and the TDP table has no row for "
                                  f"{cpu_model()!r}: no CPU estimate (give --cpu-tdp-w)")
            return measured
        try:
            channel = open_cpu_estimate(choice.package_tdp_w, packages=packages, proc_stat=proc_stat,
                                        tdp_source=choice.source)
        except (OSError, ValueError) as exc:
            self._warnings.append(f"CPU estimate impossible: {exc}")
            return measured
        self._warnings.append(f"cpu energy is an estimate (RAPL unavailable: {measured.reason}); "
                              f"TDP {choice.package_tdp_w:.4g} W per package, {choice.source}")
        return _Domain(SOURCE_ESTIMATED, "estimate", self._accumulate([channel]))

    # -- lifecycle ----------------------------------------------------------------------------
    def start(self) -> None:
        """Start the sampler thread (daemon); a second call does nothing."""
        self._check_running()
        self._sampler.start()

    def stop(self) -> None:
        """Stop the sampler and release files and NVML; idempotent. Windows cannot be used after."""
        if self._stopped:
            return
        self._stopped = True
        self._sampler.stop()
        self._telemetry.close()
        for acc in self._accumulators:
            acc.close()
        if self._nvml is not None:
            shutdown_nvml(self._nvml)
            self._nvml = None

    def _check_running(self) -> None:
        if self._stopped:
            raise RuntimeError("energy meter already stopped")

    # -- windows ------------------------------------------------------------------------------
    def _fence(self) -> None:
        if self._sync is None:
            return
        try:
            self._sync()
        except Exception as exc:
            # A failed fence only makes the edge less sharp; losing the window would be worse.
            note = f"device sync failed, window edges may miss queued GPU work: {exc}"
            if note not in self._warnings:
                self._warnings.append(note)

    def _read_all(self) -> tuple[float, list[float | None]]:
        self._fence()
        t_s = self._clock()
        totals: list[float | None] = []
        for acc in self._accumulators:
            got = acc.update()
            totals.append(None if got is None else got[1])
        return t_s, totals

    def begin(self, name: str) -> None:
        """Open window ``name`` (fences GPU work first). Reopening a name restarts it."""
        self._check_running()
        t_s, totals = self._read_all()
        with self._windows_lock:
            self._windows[name] = _OpenWindow(t_s, totals)

    def end(self, name: str) -> EnergyWindow:
        """Close window ``name`` and return its energy (J) per domain; windows may overlap or nest."""
        self._check_running()
        with self._windows_lock:
            if name not in self._windows:
                raise KeyError(f"energy window {name!r} was never begun (or already ended)")
            opened = self._windows.pop(name)
        t_s, totals = self._read_all()
        window = EnergyWindow(name=name, time_s=t_s - opened.t_s)
        index = {id(a): i for i, a in enumerate(self._accumulators)}
        for domain in ENERGY_DOMAINS:
            state = self._domains[domain]
            joules = math.nan
            source = state.source
            if source in SOURCES_WITH_VALUE:
                diffs = []
                for acc in state.accumulators:
                    i = index[id(acc)]
                    a, b = opened.totals_uj[i], totals[i]
                    if a is None or b is None:
                        diffs = None
                        break
                    diffs.append(b - a)
                if diffs is None:
                    source = SOURCE_UNAVAILABLE      # a device failed during the window: no partial sums
                else:
                    joules = sum(diffs) / 1_000_000
            setattr(window, f"{domain}_energy_j", joules)
            setattr(window, f"{domain}_energy_source", source)
        return window

    def open_windows(self) -> list[str]:
        with self._windows_lock:
            return list(self._windows)

    # -- samples and description --------------------------------------------------------------
    def sample_now(self) -> None:
        """Take one sample pass now (the thread does this every ``sample_interval_s``)."""
        self._check_running()
        self._sampler.sample_now()

    def drain_samples(self) -> list[PowerSample]:
        """Power samples collected since the previous drain (thread-safe, O(1) under the lock)."""
        return self._sampler.drain()

    def drain_telemetry(self) -> list[TelemetrySample]:
        """Telemetry rows (``energy.telemetry``) since the previous drain, taken at the sampler's passes."""
        return self._telemetry.drain()

    def current_phase(self) -> str:
        """Name of the innermost open window ("" when none is open): the phase telemetry rows carry."""
        with self._windows_lock:
            return next(reversed(self._windows), "")

    @property
    def sampler_stats(self):
        """``SamplerStats``: passes, thread CPU seconds, wall seconds (for the overhead benchmark)."""
        return self._sampler.stats

    def describe(self, no_gpu_reason: str | None = None, no_gpu_hint: str | None = None) -> dict:
        """JSON-able description of every domain: devices, source, method, reason and hint.

        A caller that knows why its process has no GPU to meter (TensorFlow sees none, NVML
        lists none) passes ``no_gpu_reason``, and ``no_gpu_hint`` (None: no hint); they replace
        the per-rank wording of an unavailable GPU domain.
        """
        domains: dict[str, Any] = {}
        for name in ENERGY_DOMAINS:
            state = self._domains[name]
            devices = []
            for acc in state.accumulators:
                entry = {"device": acc.channel.device, "method": acc.channel.method,
                         "source": acc.channel.source, **acc.channel.info}
                if acc.channel.max_range_uj:
                    entry["wraps_seen"] = acc.wraps
                    entry["min_wrap_period_s"] = round(wrap_period_s(acc.channel.max_range_uj), 3)
                if acc.error is not None and not acc.error.endswith(": closed"):
                    entry["error"] = acc.error
                devices.append(entry)
            domains[name] = {"source": state.source, "method": state.method,
                             "devices": [d["device"] for d in devices], "details": devices}
            if state.reason:
                domains[name]["reason"] = state.reason
            if state.hint:
                domains[name]["hint"] = state.hint
        gpu = domains[DOMAIN_GPU]
        if self.gpu_sharers > 1:
            gpu["shared_by_ranks"] = self.gpu_sharers
            gpu["note"] = (f"{self.gpu_sharers} ranks share this GPU (--share-gpu): each reports "
                           f"1/{self.gpu_sharers} of its energy and power")
        if no_gpu_reason is not None and gpu["source"] == SOURCE_UNAVAILABLE:
            gpu["reason"] = no_gpu_reason
            gpu.pop("hint", None)
            if no_gpu_hint is not None:
                gpu["hint"] = no_gpu_hint
        stats = self._sampler.stats
        return {
            "rank": self.rank, "local_rank": self.local_rank, "node": self.node,
            "reads_node_counters": self.read_node_counters,
            "sample_interval_s": self.config.sample_interval_s,
            "powercap_root": self.config.powercap_root if self.read_node_counters else None,
            "domains": domains,
            "skipped_zones": list(self._skipped_zones),
            "telemetry": self._telemetry.describe(),
            "warnings": list(self._warnings),
            "sampler": {"samples": stats.samples, "thread_cpu_s": stats.thread_cpu_s, "wall_s": stats.wall_s,
                        "cpu_fraction": stats.cpu_fraction, "late_ticks": stats.late_ticks,
                        "running": self._sampler.running},
            "pid": os.getpid(),
        }

    def __enter__(self) -> "EnergyMeter":
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
