"""Cost of energy sampling: sampler CPU share, and a throughput on/off hook for training.

    python -m energy.overhead [--seconds S] [--sample-interval-s S] [--workload MODULE:FUNCTION] [--repeats N]

Prints one JSON line. ``sampler`` runs the background sampler for S seconds at the given
interval twice: on this machine's real counters (whatever NVML and RAPL expose, possibly none)
and on a fake powercap tree with two packages and two DRAM zones (so a number exists on machines
without RAPL). The figure is the sampler thread's own CPU time (``time.thread_time`` inside the
thread) over wall time: 0.005 = 0.5 % of one core, the target. It includes the per-rank
telemetry the sampler reads at every pass (``energy.telemetry``); ``telemetry_without_gpu``
gives that read's own CPU cost per pass (process and CPU-frequency files; NVML adds its queries).

With ``--workload``, ``throughput`` runs ``FUNCTION()`` (it returns how many items it processed,
e.g. showers) alternately with no meter and with a started meter, ``--repeats`` times each, and
reports items/s both ways and the slowdown (target: within 1 %). The same comparison is
available in Python as ``throughput_on_off(workload)`` for the trainer.
"""
from __future__ import annotations

import importlib
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Sequence

from common.cli import Parser
from common.errors import UserError, main_guard
from energy.config import MAX_INTERVAL_S, MIN_INTERVAL_S, EnergyConfig
from common.vocab import ENERGY_DOMAINS, SOURCE_MEASURED
from energy.meter import EnergyMeter
from energy.nvml import all_visible_indices
from energy.telemetry import TelemetryReader

TARGET_CPU_FRACTION = 0.005
TARGET_SLOWDOWN = 0.01


def write_fake_powercap(root: Path) -> Path:
    """Two packages with core and dram sub-zones, like a two-socket server."""
    layout = [("intel-rapl:0", "package-0"), ("intel-rapl:0:0", "core"), ("intel-rapl:0:1", "dram"),
              ("intel-rapl:1", "package-1"), ("intel-rapl:1:0", "core"), ("intel-rapl:1:1", "dram")]
    for zone, name in layout:
        d = root / zone
        d.mkdir(parents=True, exist_ok=True)
        (d / "name").write_text(name + "\n")
        (d / "energy_uj").write_text("123456789\n")
        (d / "max_energy_range_uj").write_text("262143328850\n")
    return root


def make_meter(config: EnergyConfig, *, real: bool) -> EnergyMeter:
    """A node-reading meter: real NVML GPUs + RAPL, or (``real=False``) RAPL only from ``config``."""
    gpus = all_visible_indices(os.environ)[0] if real else []
    return EnergyMeter(config, rank=0, local_rank=0, node="overhead", read_node_counters=True,
                       gpu_index=None, gpu_indices=gpus, t0=time.monotonic())


def sampler_cost(config: EnergyConfig, seconds: float, *, real: bool) -> dict[str, Any]:
    """Run the sampler alone for ``seconds``; its CPU share and what it read."""
    meter = make_meter(config, real=real)
    try:
        meter.start()
        time.sleep(seconds)
    finally:
        meter.stop()
    stats = meter.sampler_stats
    info = meter.describe()
    return {
        "powercap_root": config.powercap_root,
        "domains": {d: info["domains"][d]["source"] for d in ENERGY_DOMAINS},
        "channels": sum(len(info["domains"][d]["devices"]) for d in ENERGY_DOMAINS),
        "samples": stats.samples,
        "power_samples": len(meter.drain_samples()),
        "telemetry_rows": len(meter.drain_telemetry()),
        "telemetry_fields_read": sorted(k for k, v in info["telemetry"]["fields"].items() if v == "read"),
        "thread_cpu_s": round(stats.thread_cpu_s, 6),
        "wall_s": round(stats.wall_s, 3),
        "cpu_fraction": round(stats.cpu_fraction, 6),
        "cpu_us_per_sample": round(stats.thread_cpu_s / stats.samples * 1e6, 1) if stats.samples else None,
        "meets_target": stats.cpu_fraction <= TARGET_CPU_FRACTION,
    }


def telemetry_cost(passes: int = 500) -> dict[str, Any]:
    """CPU time of one telemetry read (this process, this node's /proc and /sys, no GPU), the
    share of each sampler pass that telemetry adds; microseconds per pass."""
    reader = TelemetryReader(rank=0, node="overhead", clock=time.monotonic, phase=lambda: "")
    try:
        cpu0 = time.thread_time()
        for _ in range(passes):
            reader.sample()
        cpu_s = time.thread_time() - cpu0
    finally:
        reader.close()
    return {"passes": passes, "cpu_us_per_pass": round(cpu_s / passes * 1e6, 1),
            "fields_read": sorted(k for k, v in reader.describe()["fields"].items() if v == "read")}


def throughput_on_off(workload: Callable[[], int], *, repeats: int = 3,
                      meter_factory: Callable[[], EnergyMeter] | None = None,
                      config: EnergyConfig | None = None) -> dict[str, Any]:
    """Items/s of ``workload()`` without and with a running meter, alternating to cancel drift.

    ``workload`` returns the number of items it processed (showers). ``meter_factory`` builds
    the meter to run alongside (default: this node's real counters with ``config``); each "on"
    run wraps the workload in a window, as the trainer does per epoch.
    """
    config = config or EnergyConfig()
    factory = meter_factory or (lambda: make_meter(config, real=True))
    rates: dict[str, list[float]] = {"off": [], "on": []}
    for r in range(repeats):
        for mode in (("off", "on") if r % 2 == 0 else ("on", "off")):
            meter = factory() if mode == "on" else None
            if meter is not None:
                meter.start()
                meter.begin("overhead")
            start = time.perf_counter()
            items = workload()
            elapsed = time.perf_counter() - start
            if meter is not None:
                meter.end("overhead")
                meter.stop()
            rates[mode].append(items / elapsed if elapsed > 0 else float("nan"))
    off, on = statistics.median(rates["off"]), statistics.median(rates["on"])
    slowdown = 1.0 - on / off if off > 0 else float("nan")
    # Run-to-run spread of the unmetered runs: a slowdown inside it is machine noise, not the meter.
    spread = (max(rates["off"]) - min(rates["off"])) / off if off > 0 else float("nan")
    return {"repeats": repeats, "items_per_s_off": off, "items_per_s_on": on,
            "runs_off": rates["off"], "runs_on": rates["on"], "slowdown": slowdown,
            "off_relative_spread": spread, "within_noise": abs(slowdown) <= spread,
            "meets_target": abs(slowdown) <= TARGET_SLOWDOWN}


def numpy_workload(seconds: float = 1.0) -> int:
    """A stand-in for a training epoch: float32 matmuls for about ``seconds``; returns matmuls."""
    import numpy as np

    rng = np.random.default_rng(0)
    a = rng.standard_normal((256, 256), dtype=np.float32)
    b = rng.standard_normal((256, 256), dtype=np.float32)
    n = 0
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        for _ in range(20):
            a = np.tanh(a @ b)
        n += 20
    return n


def _load_workload(spec: str) -> Callable[[], int]:
    module_name, _, attr = spec.partition(":")
    if not module_name or not attr:
        raise UserError(f"--workload {spec!r}: expected MODULE:FUNCTION")
    try:
        fn = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as exc:
        raise UserError(f"--workload {spec!r}: {exc}") from None
    if not callable(fn):
        raise UserError(f"--workload {spec!r}: not callable")
    return fn


@main_guard
def main(argv: Sequence[str] | None = None) -> int:
    parser = Parser("python -m energy.overhead", __doc__,
                    epilog="example:\n  python -m energy.overhead --seconds 10 --sample-interval-s 0.1 "
                           "--workload energy.overhead:numpy_workload")
    parser.add_argument("--seconds", type=float, default=5.0, help="seconds per sampler measurement")
    # --interval: the earlier spelling, kept for scripts; energy.monitor accepts both as well.
    parser.add_argument("--sample-interval-s", "--interval", dest="interval", type=float, metavar="S",
                        default=EnergyConfig().sample_interval_s, help="seconds between samples")
    parser.add_argument("--workload", metavar="MODULE:FUNCTION",
                        help="also compare FUNCTION()'s items/s with sampling off and on")
    parser.add_argument("--repeats", type=int, default=3, help="runs per mode for --workload")
    parser.add_argument("--powercap-root", default=EnergyConfig().powercap_root, help="real powercap tree")
    args = parser.parse_args(list(sys.argv[1:] if argv is None else argv))
    if not 0 < args.seconds <= 3600:
        raise UserError(f"--seconds must be in (0, 3600], got {args.seconds}")
    if not MIN_INTERVAL_S <= args.interval <= MAX_INTERVAL_S:
        raise UserError(f"--sample-interval-s must be between {MIN_INTERVAL_S} and {MAX_INTERVAL_S} s, "
                        f"got {args.interval}")
    if args.repeats < 1:
        raise UserError("--repeats must be >= 1")
    workload = _load_workload(args.workload) if args.workload else None

    real_config = EnergyConfig(sample_interval_s=args.interval, powercap_root=args.powercap_root)
    result: dict[str, Any] = {"interval_s": args.interval, "seconds": args.seconds,
                              "target_cpu_fraction": TARGET_CPU_FRACTION,
                              "real": sampler_cost(real_config, args.seconds, real=True),
                              "telemetry_without_gpu": telemetry_cost()}
    with tempfile.TemporaryDirectory(prefix="energy-overhead-") as tmp:
        fake_config = EnergyConfig(sample_interval_s=args.interval,
                                   powercap_root=str(write_fake_powercap(Path(tmp))))
        result["fake_powercap"] = sampler_cost(fake_config, args.seconds, real=False)
        if workload is not None:
            # Real counters when this node has any, else the fake tree: the sampler does real work either way.
            has_real = any(v == SOURCE_MEASURED for v in result["real"]["domains"].values())
            config = real_config if has_real else fake_config
            result["throughput"] = throughput_on_off(
                workload, repeats=args.repeats, config=config,
                meter_factory=lambda: make_meter(config, real=has_real))
            result["throughput"]["counters"] = "real" if has_real else "fake_powercap"
    print(json.dumps(result, sort_keys=True), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
