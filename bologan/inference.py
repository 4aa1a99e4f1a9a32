"""Inference benchmark: on-demand latency and batch throughput of the generator, energy per 1000 showers.

Examples::

    python -m bologan.inference --particle pions --out results/infer/pions.json
    python -m bologan.inference --checkpoint runs/photons/eval/best_checkpoint --precision mixed --xla \\
        --batch-sizes 1,64,4096 --out results/infer/photons-bf16-xla.json
    python -m bologan.bench --inference ...     # the same benchmark from the benchmark entry point

What one generator call does (and is timed): draw the noise, run the generator (inference mode),
scale the voxel fractions to MeV with the kinetic energy, and copy the result to host memory as
a numpy array -- what a caller asking for showers waits for. Label tensors are prepared once
per batch size, outside the timing. Warm-up calls (tracing, XLA compilation) are excluded.

- on-demand: ``--on-demand-calls`` separate batch-1 calls, each timed: median, p99, mean, min,
  max latency in ms;
- batch: for each batch size, calls are repeated until at least ``--min-time-s`` and
  ``--min-calls`` are reached (or ``--max-time-s`` has passed): throughput in showers/s, time per
  shower, per-call median and p99 in ms;
- energy: one ``energy.meter.EnergyMeter`` window around the on-demand loop and one per batch
  size. ``energy_per_1000_showers_j`` sums the domains that were measured (GPU through NVML,
  CPU package and DRAM through RAPL) and is marked ``measured``; with no counter it is
  ``unavailable`` with the reason, unless ``--estimate-energy --cpu-tdp-w W`` asks for the
  utilisation x TDP estimate (marked ``estimated``, never mixed with measured joules). Windows
  shorter than about a second are noisy on NVML; raise ``--min-time-s`` for energy figures.

Without ``--checkpoint`` the generator has random weights (recorded as ``"weights": "random"``):
the cost of a dense network does not depend on its weight values. With ``--checkpoint`` the
network and its settings come from the run (same rules as ``bologan.generate``).

Output: the JSON result (settings, versions, hardware, ``on_demand``, ``batches``, ``peak``,
``energy``) on stdout, or in ``--out FILE.json``; a summary on stderr; a figure of latency,
throughput and energy against batch size (PNG and PDF at ``--plot STEM``, by default beside
``--out``). Exit codes: 0 ok, 2 bad input.
"""
from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import json
import math
import os
import socket
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from common.atomic import atomic_write, atomic_write_json
from common.errors import UserError, main_guard
from common.runinfo import cpu_model, git_commit
from common.runinfo import versions as runinfo_versions

SCHEMA_VERSION = 1
RESULT_KIND = "bologan-inference-benchmark"
DEFAULT_BATCH_SIZES = (1, 4, 16, 64, 256, 1024, 4096, 16384)
MAX_BATCH_SIZE = 1 << 20
DEFAULT_MOMENTUM_MEV = 65536.0
ENERGY_DOMAINS = ("gpu", "cpu", "dram")


# --------------------------------------------------------------------------- settings and results

@dataclass
class InferenceSettings:
    """What the benchmark runs; times in seconds, momentum in MeV."""

    particle: str = "photons"
    batch_sizes: list[int] = field(default_factory=lambda: list(DEFAULT_BATCH_SIZES))
    on_demand_calls: int = 200
    warmup_calls: int = 3
    min_time_s: float = 0.5
    min_calls: int = 5
    max_time_s: float = 20.0
    momentum_mev: float = DEFAULT_MOMENTUM_MEV
    xla: bool = False
    precision: str = "float32"
    threads: int = 0
    seed: int = 0

    def check(self) -> None:
        """Raise ``UserError`` naming the first bad setting."""
        if not self.batch_sizes:
            raise UserError("--batch-sizes: empty list")
        bad = [b for b in self.batch_sizes if not 1 <= b <= MAX_BATCH_SIZE]
        if bad:
            raise UserError(f"--batch-sizes: {bad[0]} is not between 1 and {MAX_BATCH_SIZE}")
        if len(set(self.batch_sizes)) != len(self.batch_sizes):
            raise UserError("--batch-sizes: a batch size is listed twice")
        for name in ("on_demand_calls", "min_calls"):
            if getattr(self, name) < 1:
                raise UserError(f"--{name.replace('_', '-')} must be >= 1")
        if self.warmup_calls < 0 or self.threads < 0:
            raise UserError("--warmup-calls and --threads must be >= 0")
        for name in ("min_time_s", "max_time_s"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value >= 0):
                raise UserError(f"--{name.replace('_', '-')} must be a finite number >= 0")
        if self.max_time_s < self.min_time_s:
            raise UserError("--max-time-s must be >= --min-time-s")
        if not (math.isfinite(self.momentum_mev) and self.momentum_mev > 0):
            raise UserError("--momentum-mev must be a positive number")
        if self.precision not in ("float32", "mixed"):
            raise UserError(f"--precision: {self.precision!r} is not float32 or mixed")


@dataclass
class EnergyFigure:
    """Energy of one window: total of the domains used (J), per 1000 showers (J), provenance."""

    energy_j: float | None
    energy_per_1000_showers_j: float | None
    energy_source: str                  # measured | estimated | unavailable
    energy_domains: list[str]           # domains summed into energy_j
    energy_reason: str                  # why unavailable ("" otherwise)
    energy_by_domain: dict[str, dict[str, Any]]


@dataclass
class OnDemandResult:
    calls: int
    time_s: float
    latency_median_ms: float
    latency_p99_ms: float
    latency_mean_ms: float
    latency_min_ms: float
    latency_max_ms: float
    throughput_showers_per_s: float


@dataclass
class BatchResult:
    batch_size: int
    calls: int
    showers: int
    time_s: float
    call_median_ms: float
    call_p99_ms: float
    time_per_shower_ms: float
    throughput_showers_per_s: float


# --------------------------------------------------------------------------- statistics and energy

def latency_stats(call_times_s: Sequence[float]) -> dict[str, float]:
    """Median, p99, mean, min, max of per-call times, in ms."""
    ms = np.asarray(call_times_s, dtype=np.float64) * 1e3
    return {"median_ms": float(np.median(ms)), "p99_ms": float(np.percentile(ms, 99)),
            "mean_ms": float(ms.mean()), "min_ms": float(ms.min()), "max_ms": float(ms.max())}


def combine_energy(window: Any, showers: int, describe: dict[str, Any] | None = None) -> EnergyFigure:
    """Turn an ``EnergyWindow`` into one energy figure for ``showers`` generated showers.

    Measured domains are summed when there is any; otherwise estimated ones; estimated joules are
    never added to measured ones. ``describe`` (``EnergyMeter.describe()``) supplies the reasons.
    """
    by_domain: dict[str, dict[str, Any]] = {}
    for d in ENERGY_DOMAINS:
        joules = getattr(window, f"{d}_energy_j")
        source = getattr(window, f"{d}_energy_source")
        entry: dict[str, Any] = {"energy_j": None if math.isnan(joules) else float(joules), "source": source}
        reason = ((describe or {}).get("domains", {}).get(d, {}) or {}).get("reason")
        if reason and source not in ("measured", "estimated"):
            entry["reason"] = reason
        by_domain[d] = entry
    for wanted in ("measured", "estimated"):
        used = [d for d in ENERGY_DOMAINS if by_domain[d]["source"] == wanted and by_domain[d]["energy_j"] is not None]
        if used:
            total = sum(by_domain[d]["energy_j"] for d in used)
            per_1000 = total * 1000.0 / showers if showers > 0 else None
            return EnergyFigure(total, per_1000, wanted, used, "", by_domain)
    reasons = [f"{d}: {by_domain[d].get('reason', by_domain[d]['source'])}" for d in ENERGY_DOMAINS]
    return EnergyFigure(None, None, "unavailable", [], "; ".join(reasons), by_domain)


def peak_of(batches: Sequence[BatchResult]) -> dict[str, Any]:
    best = max(batches, key=lambda b: b.throughput_showers_per_s)
    return {"batch_size": best.batch_size, "throughput_showers_per_s": best.throughput_showers_per_s,
            "time_per_shower_ms": best.time_per_shower_ms}


# --------------------------------------------------------------------------- timing

CallFn = Callable[[Any, Any], Any]


def make_call(generator: Any, model_cfg: Any, xla: bool, seed: int) -> CallFn:
    """``call(label (B,1), ekin_mev (B,1)) -> numpy (B, n_voxels) MeV``: one timed generator call."""
    import tensorflow as tf

    rng = tf.random.Generator.from_seed(seed)
    latent, mean, std = model_cfg.latent_dim, model_cfg.latent_mean, model_cfg.latent_std

    @tf.function(jit_compile=xla)
    def showers(label, ekin):
        z = rng.normal((tf.shape(label)[0], latent), mean, std)
        return generator([z, label], training=False) * ekin

    def call(label, ekin):
        return showers(label, ekin).numpy()   # .numpy() waits for the device and copies to host

    call.device = lambda label, ekin: showers(label, ekin).device  # type: ignore[attr-defined]
    return call


def batch_inputs(particle: Any, label_kind: str, momentum_mev: float, batch_size: int) -> tuple[Any, Any]:
    import tensorflow as tf

    from bologan.labels import energy_label

    momenta = np.full(batch_size, momentum_mev, dtype=np.float64)
    label = energy_label(particle, momenta, label_kind)
    ekin = np.full((batch_size, 1), particle.ekin_mev(momentum_mev), dtype=np.float32)
    return tf.constant(label), tf.constant(ekin)


def time_on_demand(call: CallFn, inputs: tuple[Any, Any], calls: int, warmup: int,
                   clock: Callable[[], float] = time.perf_counter) -> tuple[OnDemandResult, list[float]]:
    for _ in range(warmup):
        call(*inputs)
    times = []
    start = clock()
    for _ in range(calls):
        t0 = clock()
        call(*inputs)
        times.append(clock() - t0)
    wall = clock() - start
    st = latency_stats(times)
    return OnDemandResult(calls, wall, st["median_ms"], st["p99_ms"], st["mean_ms"], st["min_ms"], st["max_ms"],
                          calls / wall if wall > 0 else math.inf), times


def time_batch(call: CallFn, inputs: tuple[Any, Any], batch_size: int, settings: InferenceSettings,
               clock: Callable[[], float] = time.perf_counter) -> BatchResult:
    """Repeat calls until the time/call budget is met (warm-up excluded)."""
    for _ in range(settings.warmup_calls):
        call(*inputs)
    times: list[float] = []
    start = clock()
    while True:
        t0 = clock()
        call(*inputs)
        now = clock()
        times.append(now - t0)
        elapsed = now - start
        if (len(times) >= settings.min_calls and elapsed >= settings.min_time_s) or elapsed >= settings.max_time_s:
            break
    wall = clock() - start
    st = latency_stats(times)
    showers = batch_size * len(times)
    return BatchResult(batch_size, len(times), showers, wall, st["median_ms"], st["p99_ms"],
                       wall / showers * 1e3, showers / wall if wall > 0 else math.inf)


# --------------------------------------------------------------------------- environment

def versions() -> dict[str, Any]:
    return runinfo_versions(("tensorflow", "keras", "numpy", "pyarrow"), mpi=False)


def hardware(device: str) -> dict[str, Any]:
    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")
    gpu_names = []
    for g in gpus:
        try:
            gpu_names.append(tf.config.experimental.get_device_details(g).get("device_name", g.name))
        except (ValueError, RuntimeError):
            gpu_names.append(g.name)
    on_gpu = "GPU" in device.upper()
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:
        cores = os.cpu_count() or 1
    return {"cpu_model": cpu_model(), "logical_cpus": os.cpu_count(), "cpus_usable": cores,
            "gpus": gpu_names, "device": device, "device_kind": "GPU" if on_gpu else "CPU",
            "device_name": (gpu_names[0] if gpu_names else "GPU") if on_gpu else cpu_model(),
            "node": socket.gethostname()}


def _load_average() -> float | None:
    """1-minute load average: other work on the machine inflates latencies, so it is recorded."""
    try:
        return os.getloadavg()[0]
    except (AttributeError, OSError):
        return None


# --------------------------------------------------------------------------- the benchmark

def open_meter(energy_cfg: Any, on_gpu: bool) -> Any:
    from energy.meter import EnergyMeter, resolve_gpu_index, tf_sync_devices

    gpu_index = resolve_gpu_index(0) if on_gpu else None
    return EnergyMeter(energy_cfg, rank=0, local_rank=0, node=socket.gethostname(), read_node_counters=True,
                       gpu_index=gpu_index, t0=time.monotonic(), sync=tf_sync_devices())


def run_benchmark(settings: InferenceSettings, energy_cfg: Any, checkpoint: Any = None,
                  echo: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Run the whole benchmark and return the JSON-ready result (see module docstring).

    ``checkpoint`` is a ``bologan.generate.CheckpointRef`` or ``None`` for random weights. The
    Keras dtype policy is restored afterwards, so the benchmark can run inside other code.
    """
    settings.check()
    say = echo or (lambda _line: None)
    from bologan.tfsetup import configure, quiet_tensorflow

    quiet_tensorflow()
    import tensorflow as tf

    notes: list[str] = []
    try:
        configure(settings.threads, settings.seed)
    except RuntimeError as exc:   # TensorFlow already started its thread pools in this process
        notes.append(f"--threads not applied: {exc}")
    from bologan.config import ModelConfig, TrainConfig
    from bologan.geometry import particle as lookup_particle
    from bologan.model import build_generator, set_precision

    on_gpu = bool(tf.config.list_physical_devices("GPU"))
    previous_policy = tf.keras.mixed_precision.global_policy().name
    started = dt.datetime.now(dt.timezone.utc)
    load_start = _load_average()
    t_start = time.perf_counter()
    try:
        policy = set_precision(TrainConfig(precision=settings.precision), on_gpu)
        if checkpoint is None:
            model_cfg, label_kind = ModelConfig(particle=settings.particle), "maxe"
            generator = build_generator(model_cfg)
            weights, ckpt_info = "random", None
        else:
            from bologan.generate import load_generator

            generator, sections = load_generator(checkpoint)
            model_cfg, label_kind = sections["model"], sections["data"].label
            if model_cfg.particle != settings.particle:
                notes.append(f"particle taken from the checkpoint: {model_cfg.particle}")
                settings = dataclasses.replace(settings, particle=model_cfg.particle)
            weights = "checkpoint"
            ckpt_info = {"checkpoint": str(checkpoint.prefix), "iteration": checkpoint.iteration,
                         "config": str(checkpoint.config_dir / "config.json")}
        part = lookup_particle(model_cfg.particle)
        call = make_call(generator, model_cfg, settings.xla, settings.seed)
        meter = open_meter(energy_cfg, on_gpu)
        meter.start()
        try:
            inputs = batch_inputs(part, label_kind, settings.momentum_mev, 1)
            device = call.device(*inputs) or "unknown"  # type: ignore[attr-defined]
            say(f"{part.name}: {settings.on_demand_calls} on-demand calls at batch 1 ({policy}"
                f"{', XLA' if settings.xla else ''}, {weights} weights)")
            for _ in range(settings.warmup_calls):
                call(*inputs)
            meter.begin("on-demand")
            on_demand, _times = time_on_demand(call, inputs, settings.on_demand_calls, 0)
            od_energy = combine_energy(meter.end("on-demand"), settings.on_demand_calls, _describe(meter, on_gpu))
            batches: list[BatchResult] = []
            batch_energy: list[EnergyFigure] = []
            for b in settings.batch_sizes:
                inputs = batch_inputs(part, label_kind, settings.momentum_mev, b)
                for _ in range(settings.warmup_calls):
                    call(*inputs)
                meter.begin(f"batch-{b}")
                res = time_batch(call, inputs, b, dataclasses.replace(settings, warmup_calls=0))
                batch_energy.append(combine_energy(meter.end(f"batch-{b}"), res.showers, _describe(meter, on_gpu)))
                batches.append(res)
                say(f"  batch {b:>6d}: {res.throughput_showers_per_s:12.1f} showers/s  "
                    f"{res.call_median_ms:9.3f} ms/call  ({res.calls} calls, {res.time_s:.2f} s)")
        finally:
            meter.stop()
        describe = _describe(meter, on_gpu)
    finally:
        tf.keras.mixed_precision.set_global_policy(previous_policy)

    result_device = _result_device(generator)
    overall = _overall_energy([od_energy] + batch_energy)
    return {
        "schema_version": SCHEMA_VERSION,
        "kind": RESULT_KIND,
        "particle": part.name,
        "n_voxels": part.n_voxels,
        "weights": weights,
        "checkpoint": ckpt_info,
        "model": dataclasses.asdict(model_cfg),
        "label": label_kind,
        "settings": {**dataclasses.asdict(settings), "precision_policy": policy},
        "call_definition": "noise draw + generator forward (inference mode) + scale to MeV + copy to host",
        "on_demand": {**dataclasses.asdict(on_demand), **dataclasses.asdict(od_energy)},
        "batches": [{**dataclasses.asdict(b), **dataclasses.asdict(e)} for b, e in zip(batches, batch_energy)],
        "peak": peak_of(batches),
        "energy": {"source": overall[0], "reason": overall[1], "config": dataclasses.asdict(energy_cfg),
                   "meter": describe},
        "versions": versions(),
        "hardware": {**hardware(device), "weights_device": result_device,
                     "load_average_1m": {"start": load_start, "end": _load_average()}},
        "git_commit": git_commit(),
        "started_at": started.isoformat(timespec="seconds"),
        "wall_s": time.perf_counter() - t_start,
        "notes": notes,
    }


def _describe(meter: Any, on_gpu: bool) -> dict[str, Any]:
    """``meter.describe()`` with the GPU reason worded for a single-process CPU run."""
    describe = meter.describe()
    gpu = describe["domains"]["gpu"]
    if not on_gpu and gpu["source"] == "unavailable":
        gpu["reason"] = "TensorFlow sees no GPU: the generator ran on the CPU"
        gpu.pop("hint", None)
    return describe


def _result_device(generator: Any) -> str:
    try:
        return str(generator.weights[0].device)
    except (IndexError, AttributeError):
        return "unknown"


def _overall_energy(figures: Sequence[EnergyFigure]) -> tuple[str, str]:
    sources = {f.energy_source for f in figures}
    if "measured" in sources:
        return "measured", ""
    if "estimated" in sources:
        return "estimated", ""
    return "unavailable", figures[0].energy_reason if figures else "no window"


# --------------------------------------------------------------------------- plot and summary

def plot_result(result: dict[str, Any], stem: str | Path) -> list[Path]:
    """Latency, throughput and energy per 1000 showers against batch size; writes STEM.png/.pdf."""
    from matplotlib.figure import Figure

    batches = result["batches"]
    x = [b["batch_size"] for b in batches]
    fig = Figure(figsize=(6.4, 8.4), layout="constrained")
    ax_lat, ax_thr, ax_en = fig.subplots(3, 1, sharex=True)
    ax_lat.plot(x, [b["call_median_ms"] for b in batches], marker="o", label="per call, median")
    ax_lat.plot(x, [b["call_p99_ms"] for b in batches], marker=".", linestyle=":", label="per call, p99")
    ax_lat.plot(x, [b["time_per_shower_ms"] for b in batches], marker="s", linestyle="--", label="per shower")
    od = result["on_demand"]
    ax_lat.errorbar([1], [od["latency_median_ms"]], yerr=[[0], [od["latency_p99_ms"] - od["latency_median_ms"]]],
                    marker="*", markersize=12, color="tab:red", linestyle="none", capsize=4,
                    label=f"on-demand ({od['calls']} calls): median, bar to p99")
    ax_lat.set_yscale("log")
    ax_lat.set_ylabel("latency [ms]")
    ax_lat.legend(fontsize="small")
    ax_thr.plot(x, [b["throughput_showers_per_s"] for b in batches], marker="o")
    pk = result["peak"]
    ax_thr.plot([pk["batch_size"]], [pk["throughput_showers_per_s"]], marker="*", markersize=14,
                color="tab:red", linestyle="none", label=f"peak: {pk['throughput_showers_per_s']:.3g} showers/s")
    ax_thr.set_yscale("log")
    ax_thr.set_ylabel("throughput [showers/s]")
    ax_thr.legend(fontsize="small")
    pts = [(b["batch_size"], b["energy_per_1000_showers_j"], b["energy_source"]) for b in batches
           if b["energy_per_1000_showers_j"] is not None]
    if pts:
        src = sorted({s for _, _, s in pts})
        ax_en.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=f"{', '.join(src)}")
        if all(p[1] > 0 for p in pts):
            ax_en.set_yscale("log")
        ax_en.legend(fontsize="small")
    else:
        reason = result["energy"]["reason"] or "no counter"
        ax_en.text(0.5, 0.5, "energy unavailable:\n" + _wrap(reason, 70), transform=ax_en.transAxes,
                   ha="center", va="center", fontsize="small")
        ax_en.set_yticks([])
    ax_en.set_ylabel("energy per 1000 showers [J]")
    ax_en.set_xlabel("batch size [showers per call]")
    ax_en.set_xscale("log", base=2)
    ax_en.set_xticks(x)
    ax_en.set_xticklabels([str(v) for v in x])
    for ax in (ax_lat, ax_thr, ax_en):
        ax.grid(True, which="both", alpha=0.3)
    s = result["settings"]
    hw = result["hardware"]
    fig.suptitle(f"BoloGAN {result['particle']} generator inference: {s['precision_policy']}"
                 f"{', XLA' if s['xla'] else ''}, {result['weights']} weights\n{hw['device_kind']}: "
                 f"{hw['device_name']}", fontsize="medium")
    paths = []
    stem = Path(stem)
    for fmt in ("png", "pdf"):
        path = stem.with_name(stem.name + f".{fmt}")
        atomic_write(path, lambda tmp, fmt=fmt: fig.savefig(tmp, format=fmt, dpi=150))
        paths.append(path)
    return paths


def _wrap(text: str, width: int) -> str:
    words, lines, line = text.split(), [], ""
    for w in words:
        if line and len(line) + 1 + len(w) > width:
            lines.append(line)
            line = w
        else:
            line = f"{line} {w}".strip()
    return "\n".join(lines + [line])


def format_summary(result: dict[str, Any]) -> str:
    od, pk = result["on_demand"], result["peak"]
    lines = [f"{result['particle']} ({result['settings']['precision_policy']}"
             f"{', XLA' if result['settings']['xla'] else ''}, {result['weights']} weights) on "
             f"{result['hardware']['device_kind']} {result['hardware']['device_name']}",
             f"  on-demand batch 1: median {od['latency_median_ms']:.3f} ms, p99 {od['latency_p99_ms']:.3f} ms "
             f"({od['calls']} calls)",
             f"  peak throughput: {pk['throughput_showers_per_s']:.1f} showers/s at batch {pk['batch_size']}",
             f"  {'batch':>6} {'showers/s':>12} {'ms/call':>10} {'ms/shower':>10} {'J/1000 showers':>16}"]
    for b in result["batches"]:
        e = b["energy_per_1000_showers_j"]
        energy = "n/a" if e is None else f"{e:.4g} ({b['energy_source'][:4]})"
        lines.append(f"  {b['batch_size']:>6d} {b['throughput_showers_per_s']:>12.1f} {b['call_median_ms']:>10.3f} "
                     f"{b['time_per_shower_ms']:>10.4f} {energy:>16}")
    if result["energy"]["source"] == "unavailable":
        lines.append(f"  energy unavailable: {result['energy']['reason']}")
    load = [v for v in (result["hardware"].get("load_average_1m") or {}).values() if v is not None]
    cpus = result["hardware"].get("logical_cpus") or 1
    if load and max(load) > cpus:
        lines.append(f"  note: 1-minute load average up to {max(load):.1f} on {cpus} CPUs: other work shared "
                     f"the machine, so latencies are inflated and throughputs deflated")
    return "\n".join(lines)


# --------------------------------------------------------------------------- command line

def _int_list(text: str) -> list[int]:
    try:
        return [int(t) for t in text.split(",") if t.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a comma-separated list of integers") from None


def add_inference_arguments(parser: argparse.ArgumentParser, include_common: bool = True) -> None:
    """Add the benchmark's flags to ``parser``.

    ``include_common=False`` leaves out ``--particle``, ``--threads``, ``--xla``, ``--precision``
    and ``--seed`` for a parser that already defines them with the same meaning (same dest names).
    """
    from bologan.generate import add_checkpoint_arguments
    from common.settings import add_section_arguments
    from energy.config import ENERGY_SECTIONS

    d = InferenceSettings()
    g = parser.add_argument_group("inference benchmark")
    if include_common:
        g.add_argument("--particle", choices=("photons", "pions"), default=d.particle,
                       help="generator to build when no checkpoint is given (default: photons)")
        g.add_argument("--xla", action=argparse.BooleanOptionalAction, default=d.xla,
                       help="compile the generator call with XLA (jit_compile)")
        g.add_argument("--precision", choices=("float32", "mixed"), default=d.precision,
                       help="float32, or mixed (bfloat16 on CPU, float16 on GPU)")
        g.add_argument("--threads", type=int, default=d.threads,
                       help="TensorFlow intra-op threads (0 = TensorFlow's default)")
        g.add_argument("--seed", type=int, default=d.seed, help="noise and weight seed")
    add_checkpoint_arguments(g, required=False)
    g.add_argument("--batch-sizes", type=_int_list, default=list(d.batch_sizes), metavar="B1,B2,...",
                   help=f"batch sizes for throughput (default: {','.join(map(str, d.batch_sizes))})")
    g.add_argument("--on-demand-calls", type=int, default=d.on_demand_calls, metavar="N",
                   help=f"timed batch-1 calls for the latency median and p99 (default: {d.on_demand_calls})")
    g.add_argument("--warmup-calls", type=int, default=d.warmup_calls, metavar="N",
                   help=f"untimed calls before each measurement (default: {d.warmup_calls})")
    g.add_argument("--min-time-s", type=float, default=d.min_time_s, metavar="S",
                   help=f"time at least this long per batch size (default: {d.min_time_s})")
    g.add_argument("--min-calls", type=int, default=d.min_calls, metavar="N",
                   help=f"and at least this many calls (default: {d.min_calls})")
    g.add_argument("--max-time-s", type=float, default=d.max_time_s, metavar="S",
                   help=f"stop a batch size after this long even with fewer calls (default: {d.max_time_s})")
    g.add_argument("--momentum-mev", type=float, default=d.momentum_mev, metavar="P",
                   help=f"incident momentum of every generated shower, MeV (default: {d.momentum_mev:g})")
    g.add_argument("--out", metavar="FILE.json", help="write the JSON result here (default: stdout)")
    g.add_argument("--plot", metavar="STEM", help="write STEM.png and STEM.pdf (default: --out without .json)")
    g.add_argument("--no-plot", action="store_true", help="do not draw the figure")
    g.add_argument("--energy-config", metavar="TOML", help="read the [energy] table of this file")
    add_section_arguments(parser, ENERGY_SECTIONS)


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line and exit code 2, through main_guard
        raise UserError(message)


def build_parser() -> argparse.ArgumentParser:
    doc = __doc__ or ""
    parser = _Parser(prog="python -m bologan.inference", description=doc.split("\n\n")[0],
                     epilog="\n\n".join(doc.split("\n\n")[1:]), formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--inference", action="store_true", help=argparse.SUPPRESS)  # passed on by bologan.bench
    add_inference_arguments(parser)
    return parser


def settings_from_args(args: argparse.Namespace) -> InferenceSettings:
    return InferenceSettings(
        particle=args.particle, batch_sizes=list(args.batch_sizes), on_demand_calls=args.on_demand_calls,
        warmup_calls=args.warmup_calls, min_time_s=args.min_time_s, min_calls=args.min_calls,
        max_time_s=args.max_time_s, momentum_mev=args.momentum_mev, xla=args.xla, precision=args.precision,
        threads=args.threads, seed=args.seed)


def run_from_args(args: argparse.Namespace) -> int:
    """The benchmark for already-parsed flags (those of ``add_inference_arguments``)."""
    from common.settings import resolve_sections
    from energy.config import ENERGY_SECTIONS

    settings = settings_from_args(args)
    settings.check()
    energy_cfg = resolve_sections(ENERGY_SECTIONS, args.energy_config, args)["energy"]
    checkpoint = None
    if args.checkpoint is not None:
        from bologan.generate import resolve_checkpoint

        checkpoint = resolve_checkpoint(args.checkpoint, args.iteration, args.config_from)
    elif args.iteration is not None or args.config_from is not None:
        raise UserError("--iteration and --config-from need --checkpoint")
    out = Path(args.out) if args.out else None
    if out is not None:
        if out.is_dir():
            raise UserError(f"--out {out}: is a directory; give a file name such as inference.json")
        probe = out.parent
        while not probe.exists() and probe != probe.parent:
            probe = probe.parent
        if not os.access(probe, os.W_OK):  # fail now, not after minutes of benchmarking
            raise UserError(f"--out {out}: cannot write in {probe}")
    stem = None
    if not args.no_plot:
        stem = Path(args.plot) if args.plot else (out.with_suffix("") if out is not None else None)

    result = run_benchmark(settings, energy_cfg, checkpoint,
                           echo=lambda line: print(line, file=sys.stderr, flush=True))
    if stem is not None:
        result["plots"] = [str(p) for p in plot_result(result, stem)]
    if out is not None:
        atomic_write_json(out, result)
    else:
        print(json.dumps(result, indent=2, sort_keys=True, default=str))
    print(format_summary(result), file=sys.stderr, flush=True)
    if out is not None:
        print(f"result: {out}" + (f"; plots: {', '.join(result['plots'])}" if stem else ""), file=sys.stderr)
    return 0


@main_guard
def main_inference(argv: Sequence[str] | None = None) -> int:
    """Entry point for ``python -m bologan.inference`` and ``python -m bologan.bench --inference``.

    ``argv`` may contain ``--inference`` (ignored), so ``bologan.bench`` can pass its arguments on.
    """
    args = build_parser().parse_args(list(sys.argv[1:] if argv is None else argv))
    return run_from_args(args)


main = main_inference

if __name__ == "__main__":
    sys.exit(main_inference())
