"""Project strong/weak efficiency of the photon and pion models to many ranks.

Inputs: the measured series (non-communication time per iteration), the all-reduce
benchmark files (the measured network) and optional network TOML files. The model itself is
in ``analysis.comm_model``.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import pandas as pd

from analysis.comm_model import (CommFit, ComputeModel, Network, fit_bench_files, fit_strong_compute,
                                 load_network, project, shipped_networks)
from analysis.load import BenchFile
from analysis.model_size import ModelSize, model_size
from analysis.summary import SeriesResult
from common.errors import UserError
from bologan.geometry import PARTICLE_NAMES

PROJECTED_WORLD_SIZES: tuple[int, ...] = tuple(2**k for k in range(0, 11))
"""1, 2, 4, ..., 1024 ranks."""


@dataclass
class ProjectionResult:
    available: bool
    networks: list[Network] = field(default_factory=list)
    comm_fits: dict[str, CommFit] = field(default_factory=dict)     # engine -> fit
    compute: dict[str, ComputeModel] = field(default_factory=dict)  # particle -> model
    sizes: dict[str, ModelSize] = field(default_factory=dict)       # particle -> parameter counts
    n_disc: int = 5
    points: pd.DataFrame = field(default_factory=pd.DataFrame)
    measured: pd.DataFrame = field(default_factory=pd.DataFrame)     # series, particle, mode, N, efficiency
    check: pd.DataFrame = field(default_factory=pd.DataFrame)        # projection vs measurement at measured N
    notes: list[str] = field(default_factory=list)


def resolve_network_arg(arg: str) -> Path:
    """A path, or the stem of a shipped example ('infiniband_100g')."""
    p = Path(arg)
    if p.exists():
        return p
    for shipped in shipped_networks():
        if shipped.stem == arg:
            return shipped
    names = ", ".join(s.stem for s in shipped_networks())
    raise UserError(f"{arg}: network file not found (shipped examples: {names})")


def _non_comm_per_iteration(rows: pd.DataFrame) -> pd.DataFrame:
    t = rows["epoch_time_median_s"] - rows["comm_time_s"].fillna(0.0)
    return pd.DataFrame({"n": rows["world_size_ranks"], "t_nc": t / rows["iterations_per_epoch_count"]})


def _best(results: list[SeriesResult], particle: str, mode: str) -> SeriesResult | None:
    cands = [r for r in results if r.series.key.particle == particle and r.series.key.mode == mode
             and r.rows["epoch_time_median_s"].notna().any()]
    if not cands:
        return None
    return max(cands, key=lambda r: (r.rows["epoch_time_median_s"].notna().sum(),
                                     r.series.key.engine == "horovod", -len(r.series.key.slug)))


def _compute_model(particle: str, strong: SeriesResult | None, weak: SeriesResult | None) -> ComputeModel | None:
    if strong is None and weak is None:
        return None
    basis = []
    a = b = w = math.nan
    if strong is not None:
        nc = _non_comm_per_iteration(strong.rows).dropna()
        a, b = fit_strong_compute(nc["n"].tolist(), nc["t_nc"].tolist())
        basis.append(f"strong: t_nc(N) = {a:.4g}/N + {b:.3g} s per iteration fitted to {strong.series.key.label}")
    if weak is not None:
        nc = _non_comm_per_iteration(weak.rows).dropna()
        if len(nc):
            w = float(nc.sort_values("n")["t_nc"].iloc[0])
            basis.append(f"weak: t_nc = {w:.4g} s per iteration at N0 = {int(nc['n'].min())} of {weak.series.key.label}")
    if not math.isfinite(w) and math.isfinite(a):
        w = a + b
        basis.append("weak: no weak series, per-rank batch taken as the strong series' global batch "
                     "(t_nc = t_nc(1) of the strong fit)")
    if not math.isfinite(a) and math.isfinite(w):
        a, b = w, 0.0
        basis.append("strong: no strong series, global batch taken as the weak per-rank batch, "
                     "perfect compute scaling assumed")
    return ComputeModel(particle, a, b, w, "; ".join(basis))


def build_projection(results: list[SeriesResult], benches: Sequence[BenchFile],
                     network_files: Sequence[Path] = (),
                     world_sizes: Sequence[int] = PROJECTED_WORLD_SIZES) -> ProjectionResult:
    out = ProjectionResult(available=False)
    by_engine: dict[str, list[BenchFile]] = {}
    for b in benches:
        by_engine.setdefault(b.engine, []).append(b)
    for engine, files in sorted(by_engine.items()):
        fit = fit_bench_files(files)
        if fit is None:
            out.notes.append(f"{engine} all-reduce benchmark: too few points with N > 1 to fit the ring model")
            continue
        out.comm_fits[engine] = fit
        names = ", ".join(f.path.name for f in files)
        out.networks.append(fit.network(f"measured ({engine} all-reduce)", f"fitted to {names}"))
    out.networks.extend(load_network(p) for p in network_files)
    if not out.networks:
        out.notes.append("projection unavailable: no all-reduce benchmark file (allreduce*.json) found "
                         "and no --network file given")
        return out

    chosen: dict[str, tuple[SeriesResult | None, SeriesResult | None]] = {}
    for particle in PARTICLE_NAMES:
        strong, weak = _best(results, particle, "strong"), _best(results, particle, "weak")
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
    for net in out.networks:
        for particle in PARTICLE_NAMES:
            size = out.sizes[particle]
            points += project(out.compute[particle], size.critic_grad_bytes, size.generator_grad_bytes,
                              out.n_disc, net, world_sizes)
    out.points = pd.DataFrame([dataclasses.asdict(p) for p in points])

    measured = []
    for particle, pair in chosen.items():
        for res in pair:
            if res is None:
                continue
            col = "strong_efficiency_ratio" if res.series.key.mode == "strong" else "weak_efficiency_ratio"
            for _, r in res.rows.iterrows():
                if math.isfinite(r[col]):
                    measured.append({"series": res.series.key.label, "particle": particle,
                                     "mode": res.series.key.mode, "world_size_ranks": int(r["world_size_ranks"]),
                                     "efficiency_ratio": float(r[col])})
    out.measured = pd.DataFrame(measured, columns=["series", "particle", "mode", "world_size_ranks",
                                                   "efficiency_ratio"])
    checks = []
    for net in out.networks[:len(out.comm_fits)]:      # measured networks only
        for _, m in out.measured.iterrows():
            size = out.sizes[m["particle"]]
            pp = project(out.compute[m["particle"]], size.critic_grad_bytes, size.generator_grad_bytes,
                         out.n_disc, net, [int(m["world_size_ranks"])])
            hit = [p for p in pp if p.mode == m["mode"]]
            if hit:
                checks.append({"network": net.name, "particle": m["particle"], "mode": m["mode"],
                               "world_size_ranks": int(m["world_size_ranks"]),
                               "measured_efficiency_ratio": m["efficiency_ratio"],
                               "projected_efficiency_ratio": hit[0].efficiency_ratio})
    out.check = pd.DataFrame(checks)
    out.available = True
    return out
