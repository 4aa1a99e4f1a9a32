"""Timing of generator calls for the inference benchmark: the timed call, its inputs, the
on-demand and batch loops, and their statistics (times in seconds, latencies in ms)."""
from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any, Callable, Protocol, Sequence

import numpy as np

CallFn = Callable[[Any, Any], Any]
Clock = Callable[[], float]


class CallBudget(Protocol):
    """How long one batch size is timed (``bologan.inference.inference.InferenceSettings`` is one)."""

    warmup_calls: int       # untimed calls first
    min_calls: int          # stop after at least this many calls ...
    min_time_s: float       # ... and at least this long,
    max_time_s: float       # or after this long whatever the count


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


def latency_stats(call_times_s: Sequence[float]) -> dict[str, float]:
    """Median, p99, mean, min, max of per-call times, in ms."""
    ms = np.asarray(call_times_s, dtype=np.float64) * 1e3
    return {"median_ms": float(np.median(ms)), "p99_ms": float(np.percentile(ms, 99)),
            "mean_ms": float(ms.mean()), "min_ms": float(ms.min()), "max_ms": float(ms.max())}


def peak_of(batches: Sequence[BatchResult]) -> dict[str, Any]:
    """The batch size with the highest throughput, its showers/s and ms per shower."""
    best = max(batches, key=lambda b: b.throughput_showers_per_s)
    return {"batch_size": best.batch_size, "throughput_showers_per_s": best.throughput_showers_per_s,
            "time_per_shower_ms": best.time_per_shower_ms}


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
    """(label, kinetic energy in MeV) tensors of ``batch_size`` showers at ``momentum_mev``,
    prepared once per batch size outside the timing."""
    import tensorflow as tf

    from bologan.labels import energy_label

    momenta = np.full(batch_size, momentum_mev, dtype=np.float64)
    label = energy_label(particle, momenta, label_kind)
    ekin = np.full((batch_size, 1), particle.ekin_mev(momentum_mev), dtype=np.float32)
    return tf.constant(label), tf.constant(ekin)


def time_on_demand(call: CallFn, inputs: tuple[Any, Any], calls: int, warmup: int,
                   clock: Clock = time.perf_counter) -> tuple[OnDemandResult, list[float]]:
    """``calls`` separate calls, each timed, after ``warmup`` untimed ones; also the call times (s)."""
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


def time_batch(call: CallFn, inputs: tuple[Any, Any], batch_size: int, budget: CallBudget,
               clock: Clock = time.perf_counter) -> BatchResult:
    """Repeat calls until the time/call budget is met (warm-up excluded)."""
    for _ in range(budget.warmup_calls):
        call(*inputs)
    times: list[float] = []
    start = clock()
    while True:
        t0 = clock()
        call(*inputs)
        now = clock()
        times.append(now - t0)
        elapsed = now - start
        if (len(times) >= budget.min_calls and elapsed >= budget.min_time_s) or elapsed >= budget.max_time_s:
            break
    wall = clock() - start
    st = latency_stats(times)
    showers = batch_size * len(times)
    return BatchResult(batch_size, len(times), showers, wall, st["median_ms"], st["p99_ms"],
                       wall / showers * 1e3, showers / wall if wall > 0 else math.inf)
