"""Inference benchmark: on-demand latency and batch throughput of the generator, energy per 1000 showers.

Examples::

    python -m bologan.bench --inference --particle pions --out results/infer/pions.json
    python -m bologan.bench --inference --checkpoint runs/photons/eval/best_checkpoint --precision bf16 \\
        --xla --batch-sizes 1,64,4096 --out results/infer/photons-bf16-xla.json
    python -m bologan.bench --inference --particle photons --batch-sizes 1,64 --json > photons.json

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
``energy``) on stdout (with ``--json``, or when there is no ``--out``) and in ``--out FILE.json``;
a summary on stderr; a figure of latency, throughput and energy against batch size (PNG and PDF
at ``--plot STEM``, by default beside ``--out``). Exit codes: 0 ok, 2 bad input.

The modules: this one (settings and the benchmark), ``bologan.inference.inference_timing`` (the timed
call and loops), ``bologan.inference.inference_energy`` (meter and energy figures),
``bologan.inference.inference_report`` (figure and summary), ``bologan.inference.inference_cli`` (the flags of
``python -m bologan.bench --inference``).
"""
from __future__ import annotations

import dataclasses
import datetime as dt
import math
import time
from dataclasses import dataclass, field
from typing import Any, Callable

from bologan.config import PRECISIONS, RETIRED_PRECISIONS
from bologan.trained_config import config_file
from bologan.inference.inference_energy import NO_GPU_REASON, EnergyFigure, combine_energy, open_meter, overall_source
from bologan.inference.inference_timing import BatchResult, batch_inputs, make_call, peak_of, time_batch, time_on_demand
from common.errors import UserError
from common.runinfo import git_commit, hardware, load_average_1m, versions
from common.vocab import PARTICLE_PHOTONS

SCHEMA_VERSION = 1
RESULT_KIND = "bologan-inference-benchmark"
DEFAULT_BATCH_SIZES = (1, 4, 16, 64, 256, 1024, 4096, 16384)
MAX_BATCH_SIZE = 1 << 20
DEFAULT_MOMENTUM_MEV = 65536.0
VERSIONED_MODULES = ("tensorflow", "keras", "numpy", "pyarrow")
CALL_DEFINITION = "noise draw + generator forward (inference mode) + scale to MeV + copy to host"


@dataclass
class InferenceSettings:
    """What the benchmark runs; times in seconds, momentum in MeV."""

    particle: str = PARTICLE_PHOTONS
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
        if self.precision not in PRECISIONS:
            hint = RETIRED_PRECISIONS.get(self.precision)
            raise UserError(f"--precision: {self.precision!r} " + (f"is no longer accepted ({hint})" if hint else
                                                                   f"is not one of {', '.join(PRECISIONS)}"))


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
    no_gpu_reason = None if on_gpu else NO_GPU_REASON
    previous_policy = tf.keras.mixed_precision.global_policy().name
    started = dt.datetime.now(dt.timezone.utc)
    load_start = load_average_1m()
    t_start = time.perf_counter()
    try:
        policy = set_precision(TrainConfig(precision=settings.precision))
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
                         "config": str(config_file(checkpoint.config_dir))}
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
            od_energy = combine_energy(meter.end("on-demand"), settings.on_demand_calls,
                                       meter.describe(no_gpu_reason))
            batches: list[BatchResult] = []
            batch_energy: list[EnergyFigure] = []
            for b in settings.batch_sizes:
                inputs = batch_inputs(part, label_kind, settings.momentum_mev, b)
                for _ in range(settings.warmup_calls):
                    call(*inputs)
                meter.begin(f"batch-{b}")
                res = time_batch(call, inputs, b, dataclasses.replace(settings, warmup_calls=0))
                batch_energy.append(combine_energy(meter.end(f"batch-{b}"), res.showers,
                                                   meter.describe(no_gpu_reason)))
                batches.append(res)
                say(f"  batch {b:>6d}: {res.throughput_showers_per_s:12.1f} showers/s  "
                    f"{res.call_median_ms:9.3f} ms/call  ({res.calls} calls, {res.time_s:.2f} s)")
        finally:
            meter.stop()
        describe = meter.describe(no_gpu_reason)
    finally:
        tf.keras.mixed_precision.set_global_policy(previous_policy)

    overall, overall_reason = overall_source([od_energy] + batch_energy)
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
        "call_definition": CALL_DEFINITION,
        "on_demand": {**dataclasses.asdict(on_demand), **dataclasses.asdict(od_energy)},
        "batches": [{**dataclasses.asdict(b), **dataclasses.asdict(e)} for b, e in zip(batches, batch_energy)],
        "peak": peak_of(batches),
        "energy": {"source": overall, "reason": overall_reason, "config": dataclasses.asdict(energy_cfg),
                   "meter": describe},
        "versions": versions(VERSIONED_MODULES, mpi=False),
        "hardware": {**hardware(device, _gpu_names()), "weights_device": _weights_device(generator),
                     "load_average_1m": {"start": load_start, "end": load_average_1m()}},
        "git_commit": git_commit(),
        "started_at": started.isoformat(timespec="seconds"),
        "wall_s": time.perf_counter() - t_start,
        "notes": notes,
    }


def _gpu_names() -> list[str]:
    """Names of the GPUs TensorFlow sees (its device name where it can tell)."""
    import tensorflow as tf

    names = []
    for g in tf.config.list_physical_devices("GPU"):
        try:
            names.append(tf.config.experimental.get_device_details(g).get("device_name", g.name))
        except (ValueError, RuntimeError):
            names.append(g.name)
    return names


def _weights_device(generator: Any) -> str:
    try:
        return str(generator.weights[0].device)
    except (IndexError, AttributeError):
        return "unknown"
