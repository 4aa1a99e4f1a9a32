"""Project strong/weak efficiency of the photon and pion models to many ranks, and check the
projection out of sample.

Time per iteration at N ranks::

    t_it(N) = t_nc(N) * s(N) + t_comm(N)

- ``t_nc``: measured non-communication time per iteration (epoch time minus the time inside
  all-reduces, per iteration). Strong scaling (global batch fixed): ``t_nc(N) = a/N + b`` fitted
  to the strong series (``b = 0`` with one N); weak scaling (per-rank batch fixed): ``t_nc``
  constant, the value at the smallest measured N. Another particle's model: scaled by the
  ratio of trainable parameters (dense-layer FLOPs per shower follow the parameter count).
- ``s(N)``: the straggler factor, expected maximum over N ranks of the per-iteration step time
  divided by its mean (``analysis.projection.stragglers``), from the step-time quantiles the run recorded;
  1 when none were recorded (identical ranks, a lower bound at large N). The relative spread is
  assumed not to change with the per-rank batch.
- ``t_comm``: n_disc critic all-reduces + 1 generator all-reduce from ``analysis.projection.comm_model``
  (4 bytes per trainable parameter, no overlap with computation: an upper bound on its cost).

Strong efficiency ``t_it(1) / (N t_it(N))``, weak ``t_it(1) / t_it(N)``. Strong scaling stops
where the per-rank batch ``global batch / N`` would fall below ``min_per_rank_batch_showers``
(default one shower): no point is returned past it.

Validation (``validate_out_of_sample``): for each measured N above the smallest, fit the
compute model on the other N only, add the all-reduce model calibrated from the micro-benchmark,
predict the efficiency at the held-out N and compare. With N = 1 and 2 measured this is the
prediction of N = 2 from N = 1 training plus the N = 2 benchmark.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from analysis.projection.comm_model import (DEFAULT_ALGORITHM, CommFit, CommModel, Network, as_comm_model, fit_bench_files,
                                 load_network, shipped_networks)
from analysis.load import BenchFile
from analysis.projection.model_size import ModelSize, model_size
from analysis.projection.stragglers import StepTimeDistribution, has_step_time_quantiles, straggler_factor
from analysis.summary import SeriesResult
from common.errors import UserError
from common.vocab import ENGINE_HOROVOD, MODE_STRONG, MODE_WEAK, PARTICLE_NAMES

PROJECTED_WORLD_SIZES: tuple[int, ...] = tuple(2**k for k in range(0, 11))
"""1, 2, 4, ..., 1024 ranks."""
DEFAULT_MIN_PER_RANK_BATCH_SHOWERS = 1
"""Strong scaling ends where a rank would get less than one shower per critic step."""


# ------------------------------------------------------------------------------ compute model
@dataclass(frozen=True)
class ComputeModel:
    """Non-communication time per iteration of one particle's model, seconds:
    ``parallel_s / N + serial_s`` (strong) or ``weak_s`` (weak), times the straggler factor of
    ``step_time`` (None: 1)."""
    particle: str
    parallel_s: float
    serial_s: float
    weak_s: float
    basis: str                    # which measurement it comes from, for the report
    strong_global_batch_showers: int | None = None
    weak_per_rank_batch_showers: int | None = None
    step_time: StepTimeDistribution | None = None

    def scaled(self, particle: str, factor: float, note: str) -> "ComputeModel":
        return dataclasses.replace(self, particle=particle, parallel_s=self.parallel_s * factor,
                                   serial_s=self.serial_s * factor, weak_s=self.weak_s * factor,
                                   basis=f"{self.basis}; scaled x{factor:.3g} ({note})")

    def non_comm_s(self, mode: str, n: int) -> float:
        """Mean (not slowest-rank) non-communication time per iteration at ``n`` ranks, s."""
        return self.parallel_s / n + self.serial_s if mode == MODE_STRONG else self.weak_s


def fit_strong_compute(world_sizes: Sequence[int], t_nc_s: Sequence[float]) -> tuple[float, float]:
    """Fit t_nc(N) = a/N + b (a, b >= 0) to measured non-comm time per iteration.

    The serial part b is fitted only from three or more distinct N: with two, a two-parameter
    fit passes through both points whatever their noise (on a loaded machine it gave a = 0,
    compute that never shrinks with N). With fewer than three, b = 0 (compute per rank follows
    the per-rank batch) and a is the median of N t_nc(N).
    """
    from scipy.optimize import nnls

    n = np.asarray(world_sizes, dtype=float)
    t = np.asarray(t_nc_s, dtype=float)
    ok = np.isfinite(t) & (t > 0) & (n >= 1)
    n, t = n[ok], t[ok]
    if not t.size:
        return math.nan, math.nan
    if len(np.unique(n)) < 3:
        return float(np.median(n * t)), 0.0
    coef, _ = nnls(np.column_stack([1 / n, np.ones_like(n)]) / t[:, None], np.ones_like(t))
    return float(coef[0]), float(coef[1])


# --------------------------------------------------------------------------------- projection
@dataclass(frozen=True)
class ProjectionPoint:
    """One projected point; times per iteration in s. compute includes the straggler wait."""
    network: str
    particle: str
    mode: str
    world_size_ranks: int
    compute_per_iteration_s: float
    comm_per_iteration_s: float
    iteration_time_s: float
    efficiency_ratio: float
    per_rank_batch_showers: float = math.nan
    straggler_per_iteration_s: float = 0.0      # compute beyond the mean: waiting for the slowest rank
    fixed_cost_per_iteration_s: float = 0.0     # (n_disc + 1) c
    latency_per_iteration_s: float = 0.0        # (n_disc + 1) a(N)
    bandwidth_per_iteration_s: float = 0.0      # bandwidth terms


def project(compute: ComputeModel, critic_bytes: int, generator_bytes: int, n_disc: int,
            net: Network | CommModel, world_sizes: Sequence[int],
            min_per_rank_batch_showers: float = DEFAULT_MIN_PER_RANK_BATCH_SHOWERS) -> list[ProjectionPoint]:
    """Strong and weak efficiency projected to each N (see the module docstring).

    ``net``: a ``CommModel`` (engine fixed cost on a network) or a bare ``Network`` (c = 0).
    Strong points whose per-rank batch would fall below ``min_per_rank_batch_showers`` are left out.
    """
    comm_model = as_comm_model(net)
    out = []
    for mode in (MODE_STRONG, MODE_WEAK):
        t1 = compute.non_comm_s(mode, 1)
        if not math.isfinite(t1):
            continue
        for n in world_sizes:
            if mode == MODE_STRONG:
                g = compute.strong_global_batch_showers
                per_rank = g / n if g else math.nan
                if g and per_rank < min_per_rank_batch_showers:
                    continue
            else:
                per_rank = float(compute.weak_per_rank_batch_showers or math.nan)
            mean_nc = compute.non_comm_s(mode, n)
            nc = mean_nc * straggler_factor(compute.step_time, n)
            comm = comm_model.per_iteration(critic_bytes, generator_bytes, n_disc, n)
            t_it = nc + comm.total_s
            eff = t1 / (n * t_it) if mode == MODE_STRONG else t1 / t_it
            out.append(ProjectionPoint(comm_model.name, compute.particle, mode, int(n), nc, comm.total_s, t_it, eff,
                                       per_rank, nc - mean_nc, comm.fixed_s, comm.latency_s, comm.bandwidth_s))
    return out


# ------------------------------------------------------------------------- measured points
@dataclass(frozen=True)
class MeasuredScalingPoint:
    """What one world size of a series measured, per iteration, s."""
    world_size_ranks: int
    iteration_time_s: float            # epoch time (slowest rank) / iterations per epoch
    comm_per_iteration_s: float        # time inside all-reduces, mean over ranks

    @property
    def non_comm_s(self) -> float:
        return self.iteration_time_s - self.comm_per_iteration_s


def measured_points(result: SeriesResult) -> list[MeasuredScalingPoint]:
    """One point per timed world size of a series (summary rows), smallest N first."""
    out = []
    for _, r in result.rows.iterrows():
        t, it = r["epoch_time_median_s"], r["iterations_per_epoch_count"]
        if not (math.isfinite(t) and math.isfinite(it) and it > 0):
            continue
        comm = r["comm_time_s"] if math.isfinite(r["comm_time_s"]) else 0.0
        out.append(MeasuredScalingPoint(int(r["world_size_ranks"]), t / it, comm / it))
    return sorted(out, key=lambda p: p.world_size_ranks)


def measured_efficiency(mode: str, baseline: MeasuredScalingPoint, point: MeasuredScalingPoint) -> float:
    """Strong N0 T(N0) / (N T(N)) or weak T(N0) / T(N), as in the summary table."""
    n0, n = baseline.world_size_ranks, point.world_size_ranks
    if mode == MODE_STRONG:
        return n0 * baseline.iteration_time_s / (n * point.iteration_time_s)
    return baseline.iteration_time_s / point.iteration_time_s


def compute_from_points(mode: str, points: Sequence[MeasuredScalingPoint]) -> tuple[float, float]:
    """(parallel_s, serial_s) for strong or (weak_s, 0) for weak, from measured points.

    The measured non-comm time is a mean over ranks (the wait for the slowest rank is spent
    inside the all-reduce), so it is the mean the straggler factor multiplies.
    """
    pts = [p for p in points if math.isfinite(p.non_comm_s) and p.non_comm_s > 0]
    if not pts:
        return math.nan, math.nan
    if mode == MODE_STRONG:
        return fit_strong_compute([p.world_size_ranks for p in pts], [p.non_comm_s for p in pts])
    return min(pts, key=lambda p: p.world_size_ranks).non_comm_s, 0.0


# --------------------------------------------------------------------------------- validation
@dataclass(frozen=True)
class ValidationRow:
    """Projected vs measured efficiency at one held-out N; relative error = projected/measured - 1."""
    particle: str
    mode: str
    network: str
    held_out_world_size_ranks: int
    fitted_on_world_sizes: str                  # e.g. "1" or "1,2,8"
    measured_efficiency_ratio: float
    projected_efficiency_ratio: float
    relative_error_ratio: float


def validate_out_of_sample(particle: str, mode: str, points: Sequence[MeasuredScalingPoint], comm: CommModel,
                           critic_bytes: int, generator_bytes: int, n_disc: int,
                           step_time: StepTimeDistribution | None = None) -> list[ValidationRow]:
    """Leave-one-out over every measured N above the smallest (the baseline, always kept).

    The compute model is fitted on the remaining N only; ``comm`` should be calibrated from the
    all-reduce micro-benchmark (not from training). With N = 1 and 2 measured: the N = 2
    efficiency predicted from N = 1 training plus the N = 2 benchmark.
    """
    pts = sorted(points, key=lambda p: p.world_size_ranks)
    if len({p.world_size_ranks for p in pts}) < 2:
        return []
    base = pts[0]
    rows = []
    for held in pts[1:]:
        train = [p for p in pts if p.world_size_ranks != held.world_size_ranks]
        a, b = compute_from_points(mode, train)
        if not math.isfinite(a):
            continue
        n = held.world_size_ranks
        mean_nc = a / n + b if mode == MODE_STRONG else a
        t_pred = mean_nc * straggler_factor(step_time, n) + comm.per_iteration(
            critic_bytes, generator_bytes, n_disc, n).total_s
        predicted = measured_efficiency(mode, base, MeasuredScalingPoint(n, t_pred, math.nan))
        measured = measured_efficiency(mode, base, held)
        rows.append(ValidationRow(particle, mode, comm.name, n,
                                  ",".join(str(p.world_size_ranks) for p in train), measured, predicted,
                                  predicted / measured - 1 if measured > 0 else math.nan))
    return rows


# ---------------------------------------------------------------------------- the whole study
@dataclass
class ProjectionResult:
    available: bool
    networks: list[Network] = field(default_factory=list)            # measured first, then files
    models: list[CommModel] = field(default_factory=list)            # one per network, same order
    comm_fits: dict[str, CommFit] = field(default_factory=dict)      # engine -> fit
    compute: dict[str, ComputeModel] = field(default_factory=dict)   # particle -> model
    sizes: dict[str, ModelSize] = field(default_factory=dict)        # particle -> parameter counts
    n_disc: int = 5
    min_per_rank_batch_showers: float = DEFAULT_MIN_PER_RANK_BATCH_SHOWERS
    points: pd.DataFrame = field(default_factory=pd.DataFrame)
    measured: pd.DataFrame = field(default_factory=pd.DataFrame)     # series, particle, mode, N, efficiency
    check: pd.DataFrame = field(default_factory=pd.DataFrame)        # projection vs measurement at measured N
    validation: pd.DataFrame = field(default_factory=pd.DataFrame)   # ValidationRow columns
    notes: list[str] = field(default_factory=list)


def resolve_network_arg(arg: str) -> Path:
    """A path, or the stem of a shipped example ('infiniband_hdr')."""
    p = Path(arg)
    if p.exists():
        return p
    for shipped in shipped_networks():
        if shipped.stem == arg:
            return shipped
    names = ", ".join(s.stem for s in shipped_networks())
    raise UserError(f"{arg}: network file not found (shipped examples: {names})")


def _best(results: list[SeriesResult], particle: str, mode: str) -> SeriesResult | None:
    cands = [r for r in results if r.series.key.particle == particle and r.series.key.mode == mode
             and r.rows["epoch_time_median_s"].notna().any()]
    if not cands:
        return None
    return max(cands, key=lambda r: (r.rows["epoch_time_median_s"].notna().sum(),
                                     r.series.key.engine == ENGINE_HOROVOD, -len(r.series.key.slug)))


def step_time_distribution(result: SeriesResult | None) -> StepTimeDistribution | None:
    """Pooled step-time distribution of the series' smallest world size, from the per-(rank,
    epoch) quantile columns of its runs (not warm-up, not interrupted); None if not recorded."""
    if result is None:
        return None
    runs = [r for r in result.series.runs if has_step_time_quantiles(r.epochs)]
    if not runs:
        return None
    n0 = min(int(r.meta["world_size"]) for r in runs)
    frames = []
    for r in runs:
        if int(r.meta["world_size"]) != n0:
            continue
        e = r.epochs
        keep = np.ones(len(e), dtype=bool)
        for flag in ("warmup", "interrupted"):
            if flag in e.columns:
                keep &= ~e[flag].astype(bool).to_numpy()
        frames.append(e[keep])
    rows = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
    try:
        return StepTimeDistribution.from_quantile_rows(rows) if len(rows) else None
    except ValueError:
        return None


def _batch(result: SeriesResult | None, column: str) -> int | None:
    if result is None or column not in result.rows or not len(result.rows):
        return None
    return int(result.rows[column].iloc[0])


def _compute_model(particle: str, strong: SeriesResult | None, weak: SeriesResult | None) -> ComputeModel | None:
    if strong is None and weak is None:
        return None
    basis = []
    a = b = w = math.nan
    g = _batch(strong, "global_batch_showers")
    per_rank = _batch(weak, "per_rank_batch_showers")
    if strong is not None:
        pts = measured_points(strong)
        a, b = compute_from_points(MODE_STRONG, pts)
        basis.append(f"strong: t_nc(N) = {a:.4g}/N + {b:.3g} s per iteration fitted to {strong.series.key.label}")
    if weak is not None:
        pts = measured_points(weak)
        if pts:
            w, _ = compute_from_points(MODE_WEAK, pts)
            basis.append(f"weak: t_nc = {w:.4g} s per iteration at N0 = {pts[0].world_size_ranks} of "
                         f"{weak.series.key.label}")
    if not math.isfinite(w) and math.isfinite(a):
        w = a + b
        per_rank = g
        basis.append("weak: no weak series, per-rank batch taken as the strong series' global batch "
                     "(t_nc = t_nc(1) of the strong fit)")
    if not math.isfinite(a) and math.isfinite(w):
        a, b = w, 0.0
        g = per_rank
        basis.append("strong: no strong series, global batch taken as the weak per-rank batch, "
                     "perfect compute scaling assumed")
    dist = step_time_distribution(weak) or step_time_distribution(strong)
    if dist is None:
        basis.append("no per-iteration step-time quantiles recorded: ranks assumed identical (no straggler "
                     "wait; a lower bound at large N)")
    else:
        basis.append(f"stragglers: expected slowest of N ranks from the recorded step-time quantiles "
                     f"(x{dist.straggler_factor(1024):.3g} of the mean at N = 1024)")
    return ComputeModel(particle, a, b, w, "; ".join(basis), g, per_rank, dist)


def _engine_fit(fits: dict[str, CommFit]) -> tuple[str, CommFit] | None:
    """The benchmark whose fixed cost c network-file projections use: Horovod's if measured."""
    if ENGINE_HOROVOD in fits:
        return ENGINE_HOROVOD, fits[ENGINE_HOROVOD]
    if fits:
        first = sorted(fits)[0]
        return first, fits[first]
    return None


def build_projection(results: list[SeriesResult], benches: Sequence[BenchFile],
                     network_files: Sequence[Path] = (),
                     world_sizes: Sequence[int] = PROJECTED_WORLD_SIZES,
                     min_per_rank_batch_showers: float = DEFAULT_MIN_PER_RANK_BATCH_SHOWERS,
                     algorithm: str = DEFAULT_ALGORITHM) -> ProjectionResult:
    out = ProjectionResult(available=False, min_per_rank_batch_showers=min_per_rank_batch_showers)
    by_engine: dict[str, list[BenchFile]] = {}
    measured_models: dict[str, CommModel] = {}
    for b in benches:
        by_engine.setdefault(b.engine, []).append(b)
    for engine, files in sorted(by_engine.items()):
        fit = fit_bench_files(files, algorithm)
        if fit is None:
            out.notes.append(f"{engine} all-reduce benchmark: too few points with N > 1 to fit the model")
            continue
        out.comm_fits[engine] = fit
        names = ", ".join(f.path.name for f in files)
        net = fit.network(f"measured ({engine} all-reduce)", f"fitted to {names}")
        out.networks.append(net)
        measured_models[engine] = fit.model(net, f"{engine} all-reduce benchmark")
        out.models.append(measured_models[engine])
        if not fit.latency_fitted:
            out.notes.append(f"{engine} all-reduce benchmark at one world size only: per-hop latency not "
                             "identifiable, the whole small-message time is the fixed cost c")
    engine_c = _engine_fit(out.comm_fits)
    for p in network_files:
        net = load_network(p)
        out.networks.append(net)
        if engine_c is None:
            out.models.append(CommModel(net, 0.0, algorithm))
        else:
            engine, fit = engine_c
            out.models.append(CommModel(net, fit.fixed_cost_s, algorithm,
                                        f"c = {fit.fixed_cost_s * 1e6:.3g} us from the {engine} all-reduce benchmark"))
    if network_files:
        out.notes.append(f"network files: the engine's fixed cost c comes from the {engine_c[0]} all-reduce "
                         "benchmark" if engine_c else
                         "network files: no all-reduce benchmark, fixed cost c = 0 (a lower bound)")
    if not out.networks:
        out.notes.append("projection unavailable: no all-reduce benchmark file (allreduce*.json) found "
                         "and no --network file given")
        return out

    chosen: dict[str, tuple[SeriesResult | None, SeriesResult | None]] = {}
    for particle in PARTICLE_NAMES:
        strong, weak = _best(results, particle, MODE_STRONG), _best(results, particle, MODE_WEAK)
        model = _compute_model(particle, strong, weak)
        if model is not None:
            out.compute[particle] = model
            chosen[particle] = (strong, weak)
    if not out.compute:
        out.notes.append("projection unavailable: no series with timed epochs to take compute time from")
        return out

    ref_particle = next(iter(out.compute))
    ref_series = next(s for s in chosen[ref_particle] if s is not None).series
    model_cfg = dict(ref_series.config.get("model", {}))
    out.n_disc = int(ref_series.config.get("train", {}).get("n_disc", 5))
    for particle in PARTICLE_NAMES:
        cfg = dict(model_cfg, particle=particle)
        if particle in chosen:
            s = next(x for x in chosen[particle] if x is not None).series
            cfg = dict(s.config.get("model", {}), particle=particle)
        out.sizes[particle] = model_size(cfg, particle)
    for particle in PARTICLE_NAMES:
        if particle not in out.compute:
            ref = out.compute[ref_particle]
            ratio = out.sizes[particle].total_params / out.sizes[ref_particle].total_params
            out.compute[particle] = ref.scaled(particle, ratio, f"{particle} not measured; parameter ratio "
                                                                f"{particle}/{ref_particle}")

    points = []
    for model in out.models:
        for particle in PARTICLE_NAMES:
            size = out.sizes[particle]
            points += project(out.compute[particle], size.critic_grad_bytes, size.generator_grad_bytes,
                              out.n_disc, model, world_sizes, min_per_rank_batch_showers)
    out.points = pd.DataFrame([dataclasses.asdict(p) for p in points],
                              columns=[f.name for f in dataclasses.fields(ProjectionPoint)])
    largest = max(world_sizes, default=1)
    if any(c.strong_global_batch_showers and c.strong_global_batch_showers / largest < min_per_rank_batch_showers
           for c in out.compute.values()):
        out.notes.append(f"strong scaling stops where the per-rank batch falls below {min_per_rank_batch_showers:g} "
                         "shower(s): no point past it")

    measured, validation = [], []
    for particle, pair in chosen.items():
        for res in pair:
            if res is None:
                continue
            mode = res.series.key.mode
            col = "strong_efficiency_ratio" if mode == MODE_STRONG else "weak_efficiency_ratio"
            for _, r in res.rows.iterrows():
                if math.isfinite(r[col]):
                    measured.append({"series": res.series.key.label, "particle": particle, "mode": mode,
                                     "world_size_ranks": int(r["world_size_ranks"]),
                                     "efficiency_ratio": float(r[col])})
            comm = measured_models.get(res.series.key.engine)
            if comm is None:
                out.notes.append(f"{res.series.key.label}: no {res.series.key.engine} all-reduce benchmark, "
                                 "so no out-of-sample check")
                continue
            size = out.sizes[particle]
            validation += validate_out_of_sample(particle, mode, measured_points(res), comm,
                                                 size.critic_grad_bytes, size.generator_grad_bytes, out.n_disc,
                                                 out.compute[particle].step_time)
    out.measured = pd.DataFrame(measured, columns=["series", "particle", "mode", "world_size_ranks",
                                                   "efficiency_ratio"])
    out.validation = pd.DataFrame([dataclasses.asdict(v) for v in validation],
                                  columns=[f.name for f in dataclasses.fields(ValidationRow)])
    checks = []
    for model in out.models[:len(out.comm_fits)]:      # measured networks only
        for _, m in out.measured.iterrows():
            size = out.sizes[m["particle"]]
            pp = project(out.compute[m["particle"]], size.critic_grad_bytes, size.generator_grad_bytes,
                         out.n_disc, model, [int(m["world_size_ranks"])], min_per_rank_batch_showers)
            hit = [p for p in pp if p.mode == m["mode"]]
            if hit:
                checks.append({"network": model.name, "particle": m["particle"], "mode": m["mode"],
                               "world_size_ranks": int(m["world_size_ranks"]),
                               "measured_efficiency_ratio": m["efficiency_ratio"],
                               "projected_efficiency_ratio": hit[0].efficiency_ratio})
    out.check = pd.DataFrame(checks)
    out.available = True
    return out
