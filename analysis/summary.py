"""The summary table: one row per (series, world size N), every column named with its unit.

``COLUMNS`` documents each column (unit and how it was obtained); the report prints it, so a
number in the table can be traced to the run directories.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from analysis import energy_metrics as em
from analysis.bootstrap import CONFIDENCE, RESAMPLES, Interval, median_ratio_interval
from analysis.numbers import percent
from analysis.epochs import epoch_table, imbalance_ratio, used_epochs
from analysis.load import Series
from common.vocab import ENERGY_DOMAINS, MODE_STRONG
from analysis.scaling_metrics import (LawFit, amdahl_fit, fit_shortfall, gustafson_fit, karp_flatt, speedup,
                                      strong_efficiency, weak_efficiency)


@dataclass(frozen=True)
class Column:
    name: str
    unit: str
    how: str


CI_HOW = (f"{percent(CONFIDENCE)} bootstrap interval of the speedup ({RESAMPLES} resamples, fixed seed): the repeats "
          "(runs_count) and their used epochs (epochs_used_count) of this row and of the baseline row are resampled, "
          "repeats first, then epochs within each; equal to the value at the baseline itself")
COLUMNS: tuple[Column, ...] = (
    Column("series", "text", "engine, mode, particle, fixed batch, pinned threads per rank, config hash"),
    Column("engine", "text", "run.json engine"),
    Column("mode", "text", "run.json mode: strong (global batch fixed) or weak (per-rank batch fixed)"),
    Column("particle", "text", "run.json particle"),
    Column("config_hash", "text", "run.json config_hash (workload settings, without batch sizes, paths, N)"),
    Column("world_size_ranks", "ranks", "N, run.json world_size"),
    Column("nodes_count", "nodes", "run.json nodes"),
    Column("ranks_per_node_count", "ranks", "run.json ranks_per_node"),
    Column("per_rank_batch_showers", "showers", "run.json per_rank_batch (showers per critic step per rank)"),
    Column("global_batch_showers", "showers", "run.json global_batch (showers per critic step, all ranks)"),
    Column("runs_count", "runs", "repeats: run directories pooled in this row (same N and nodes; their used epochs share one median)"),
    Column("epochs_used_count", "epochs", "epochs entering the medians: not warm-up, not interrupted"),
    Column("epochs_excluded_count", "epochs", "warm-up and interrupted epochs (excluded from medians)"),
    Column("iterations_per_epoch_count", "iterations", "median iterations per epoch (one iteration = n_disc critic steps + 1 generator step)"),
    Column("epoch_time_median_s", "s", "T(N): median over used epochs of max-over-ranks epoch wall time"),
    Column("epoch_time_p25_s", "s", "25th percentile of the same epoch times"),
    Column("epoch_time_p75_s", "s", "75th percentile of the same epoch times"),
    Column("epoch_time_min_s", "s", "fastest used epoch"),
    Column("epoch_time_max_s", "s", "slowest used epoch"),
    Column("showers_per_epoch_count", "showers", "median over used epochs of showers processed, summed over ranks"),
    Column("showers_per_s", "showers/s", "median over used epochs of (showers summed over ranks / epoch time)"),
    Column("baseline_world_size_ranks", "ranks", "N0: smallest N of the series with a used epoch"),
    Column("speedup_ratio", "1", "strong: S = N0 T(N0) / T(N); weak: scaled speedup N T(N0) / T(N) (throughput ratio)"),
    Column("strong_efficiency_ratio", "1", "S / N (strong-scaling series only)"),
    Column("weak_efficiency_ratio", "1", "T(N0) / T(N) (weak-scaling series only)"),
    Column("speedup_ci_low_ratio", "1", f"{CI_HOW}: low end"),
    Column("speedup_ci_high_ratio", "1", f"{CI_HOW}: high end"),
    Column("strong_efficiency_ci_low_ratio", "1", "strong efficiency, same interval / N"),
    Column("strong_efficiency_ci_high_ratio", "1", "strong efficiency, same interval / N"),
    Column("weak_efficiency_ci_low_ratio", "1", "weak efficiency, same interval / N"),
    Column("weak_efficiency_ci_high_ratio", "1", "weak efficiency, same interval / N"),
    Column("karp_flatt_fraction", "1", "(1/S - 1/N) / (1 - 1/N), strong series, N > 1"),
    Column("compute_share_fraction", "1", "median over epochs of mean-over-ranks compute_s / epoch time"),
    Column("comm_share_fraction", "1", "median over epochs of mean-over-ranks comm_s (all-reduce) / epoch time"),
    Column("data_wait_share_fraction", "1", "median over epochs of mean-over-ranks data_wait_s / epoch time"),
    Column("other_share_fraction", "1", "1 - compute - comm - data-wait shares (bookkeeping, logging, sync)"),
    Column("compute_time_s", "s", "compute share x T(N)"),
    Column("comm_time_s", "s", "comm share x T(N)"),
    Column("data_wait_time_s", "s", "data-wait share x T(N)"),
    Column("other_time_s", "s", "other share x T(N)"),
    Column("rank_imbalance_ratio", "1", "median over epochs of slowest / fastest rank busy time (time_s - comm_s)"),
    Column("gpu_energy_per_epoch_j", "J", "median over used epochs of GPU energy summed over every rank's GPU"),
    Column("gpu_energy_source", "text", "measured / estimated / includes estimates / partial / unavailable"),
    Column("cpu_energy_per_epoch_j", "J", "median over used epochs of RAPL package energy, each node once (reader rank)"),
    Column("cpu_energy_source", "text", "as gpu_energy_source"),
    Column("dram_energy_per_epoch_j", "J", "median over used epochs of RAPL DRAM energy, each node once (reader rank)"),
    Column("dram_energy_source", "text", "as gpu_energy_source"),
    Column("total_energy_per_epoch_j", "J", "sum of the available domain medians above"),
    Column("total_energy_source", "text", "provenance of the total; 'includes estimates' when measured and estimated domains are added"),
    Column("total_energy_domains", "text", "domains inside the total (unavailable domains are left out)"),
    Column("energy_per_1000_showers_j", "J", "total energy per epoch / showers per epoch x 1000"),
    Column("showers_per_j", "showers/J", "showers per epoch / total energy per epoch"),
    Column("average_power_w", "W", "total energy per epoch / T(N)"),
    Column("edp_j_s", "J s", "energy-delay product: total energy per epoch x T(N)"),
    Column("ed2p_j_s2", "J s^2", "total energy per epoch x T(N)^2"),
    Column("all_epochs_energy_j", "J", "total energy of every recorded epoch of these runs, warm-up and interrupted included"),
    Column("all_epochs_energy_source", "text", "provenance of all_epochs_energy_j"),
    Column("run_ids", "text", "run.json run_id of the pooled runs"),
    Column("statuses", "text", "run.json status of the pooled runs"),
    Column("notes", "text", "caveats for this row"),
)
COLUMN_NAMES = tuple(c.name for c in COLUMNS)


@dataclass
class SeriesResult:
    """Summary rows of one series plus the fitted scaling law (None: ``fit_note`` says why)."""
    series: Series
    rows: pd.DataFrame
    fit: LawFit | None
    notes: list[str] = field(default_factory=list)
    epochs: pd.DataFrame | None = None   # per-epoch table of every run in the series
    law: str = ""                        # the law fitted to this mode: "amdahl" | "gustafson"
    fit_note: str = ""                   # why there is no fit (e.g. not enough world sizes)


def _pct(values: np.ndarray, q: float) -> float:
    return float(np.percentile(values, q)) if values.size else math.nan


def _median(values: Any) -> float:
    return em.nan_median(np.asarray(values, dtype=float))


def _row_for(series: Series, n: int, nodes: int, table: pd.DataFrame) -> dict[str, Any]:
    runs = [r for r in series.runs if int(r.meta["world_size"]) == n and int(r.meta["nodes"]) == nodes]
    meta = runs[0].meta
    all_n = table[(table["world_size"] == n) & (table["nodes"] == nodes)]
    used = used_epochs(all_n)
    t = used["time_s"].to_numpy(dtype=float)
    notes: list[str] = []
    row: dict[str, Any] = {
        "series": series.key.label, "engine": series.key.engine, "mode": series.key.mode,
        "particle": series.key.particle, "config_hash": series.key.config_hash, "world_size_ranks": n,
        "nodes_count": int(meta["nodes"]), "ranks_per_node_count": int(meta["ranks_per_node"]),
        "per_rank_batch_showers": int(meta["per_rank_batch"]), "global_batch_showers": int(meta["global_batch"]),
        "runs_count": len(runs), "epochs_used_count": int(len(used)),
        "epochs_excluded_count": int(len(all_n) - len(used)),
        "iterations_per_epoch_count": _median(used["iterations_count"]),
        "epoch_time_median_s": float(np.median(t)) if t.size else math.nan,
        "epoch_time_p25_s": _pct(t, 25), "epoch_time_p75_s": _pct(t, 75),
        "epoch_time_min_s": float(t.min()) if t.size else math.nan,
        "epoch_time_max_s": float(t.max()) if t.size else math.nan,
        "showers_per_epoch_count": _median(used["showers_count"]),
        "showers_per_s": _median(used["showers_count"] / used["time_s"]),
        "run_ids": ",".join(str(r.meta.get("run_id")) for r in runs),
        "statuses": ",".join(sorted({str(r.meta.get("status")) for r in runs})),
    }
    if not t.size:
        notes.append("no epoch outside warm-up/interruption: no timing")
    T = row["epoch_time_median_s"]
    shares = {k: _median(used[f"{k}_s"] / used["time_s"]) for k in ("compute", "comm", "data_wait")}
    known = sum(v for v in shares.values() if math.isfinite(v))
    if known > 1.0:
        # Timer noise can push the parts slightly past the wall time; rescale so they stack to T.
        shares = {k: v / known for k, v in shares.items()}
        known = 1.0
    shares["other"] = 1.0 - known if t.size else math.nan
    for k, v in shares.items():
        row[f"{k}_share_fraction"] = v
        row[f"{k}_time_s"] = v * T
    row["rank_imbalance_ratio"] = _median([imbalance_ratio(a, b) for a, b in
                                           zip(used["busy_max_s"], used["busy_min_s"])])
    parts = {}
    for d in ENERGY_DOMAINS:
        value = _median(used[f"{d}_energy_j"])
        source = em.combine_sources(used[f"{d}_energy_source"]) if len(used) else em.UNAVAILABLE
        parts[d] = em.DomainEnergy(value if source != em.UNAVAILABLE else math.nan, source)
        row[f"{d}_energy_per_epoch_j"] = parts[d].energy_j
        row[f"{d}_energy_source"] = parts[d].source
    tot = em.total_energy(parts)
    E, showers = tot.energy_j, row["showers_per_epoch_count"]
    row.update({
        "total_energy_per_epoch_j": E, "total_energy_source": tot.source, "total_energy_domains": tot.domains,
        "energy_per_1000_showers_j": em.energy_per_1000_showers_j(E, showers),
        "showers_per_j": em.showers_per_j(E, showers), "average_power_w": em.average_power_w(E, T),
        "edp_j_s": em.edp_j_s(E, T), "ed2p_j_s2": em.ed2p_j_s2(E, T),
    })
    if tot.source in (em.MIXED, em.ESTIMATED):
        notes.append("energy includes estimates")
    if tot.source == em.PARTIAL:
        notes.append("energy partial: some GPUs/nodes unread (lower bound)")
    all_energy = all_n["total_energy_j"].to_numpy(dtype=float)
    row["all_epochs_energy_j"] = float(np.nansum(all_energy)) if np.isfinite(all_energy).any() else math.nan
    row["all_epochs_energy_source"] = em.combine_sources(all_n["total_energy_source"])
    row["_notes"] = notes
    # Used epoch times per repeat, for the bootstrap interval (see analysis.bootstrap).
    row["_repeats"] = [g["time_s"].to_numpy(dtype=float) for _, g in used.groupby("run_path", sort=True)]
    return row


def _speedup_interval(row: dict[str, Any], base: dict[str, Any], strong: bool) -> Interval:
    """Bootstrap interval of ``row``'s speedup; the baseline row's own speedup is exact (N0)."""
    n, n0 = row["world_size_ranks"], base["world_size_ranks"]
    if row is base:
        return Interval(row["speedup_ratio"], row["speedup_ratio"])
    # Strong: S = N0 T(N0)/T(N); weak: N T(N0)/T(N). Both scale the ratio of medians.
    return median_ratio_interval(base["_repeats"], row["_repeats"]).scaled(n0 if strong else n)


def summarise_series(series: Series) -> SeriesResult:
    """Summary rows, baseline-relative metrics with their intervals, and the Amdahl/Gustafson
    fit of one series (None with too few world sizes: ``fit_note`` says so)."""
    tables = [epoch_table(r) for r in series.runs]
    table = pd.concat(tables, ignore_index=True) if tables else pd.DataFrame()
    rows = [_row_for(series, n, nodes, table) for n, nodes in series.placements]
    notes: list[str] = []
    timed = [r for r in rows if math.isfinite(r["epoch_time_median_s"])]
    n0 = timed[0]["world_size_ranks"] if timed else math.nan
    t0 = timed[0]["epoch_time_median_s"] if timed else math.nan
    if timed and n0 != 1:
        notes.append(f"no single-rank run: baseline is N0 = {n0}, speedup S = N0 T(N0)/T(N) "
                     "(assumes perfect scaling up to N0)")
    if len({r["world_size_ranks"] for r in timed}) < 2:
        notes.append("only one world size: no efficiency curve")
    for n in sorted({r["world_size_ranks"] for r in rows}):
        nodes = [r["nodes_count"] for r in rows if r["world_size_ranks"] == n]
        if len(nodes) > 1:
            notes.append(f"N = {n} was run on {' and '.join(map(str, nodes))} nodes: one row each")
    strong = series.key.mode == MODE_STRONG
    for r in rows:
        n, tn = r["world_size_ranks"], r["epoch_time_median_s"]
        r["baseline_world_size_ranks"] = n0
        # Weak scaling: the scaled (throughput) speedup N T(N0)/T(N), since the work grows with N.
        r["speedup_ratio"] = (speedup(t0, tn, n0) if strong else n * weak_efficiency(t0, tn)) if timed else math.nan
        r["strong_efficiency_ratio"] = strong_efficiency(t0, tn, n, n0) if strong and timed else math.nan
        r["weak_efficiency_ratio"] = weak_efficiency(t0, tn) if not strong and timed else math.nan
        r["karp_flatt_fraction"] = karp_flatt(r["speedup_ratio"], n) if strong else math.nan
        ci = _speedup_interval(r, timed[0], strong) if timed else Interval(math.nan, math.nan)
        eff = ci.scaled(1.0 / n)
        r["speedup_ci_low_ratio"], r["speedup_ci_high_ratio"] = ci.low, ci.high
        r["strong_efficiency_ci_low_ratio"] = eff.low if strong else math.nan
        r["strong_efficiency_ci_high_ratio"] = eff.high if strong else math.nan
        r["weak_efficiency_ci_low_ratio"] = eff.low if not strong else math.nan
        r["weak_efficiency_ci_high_ratio"] = eff.high if not strong else math.nan
        if timed and n0 != 1:
            r["_notes"].append(f"baseline N0={n0}")
        r["notes"] = "; ".join(r.pop("_notes"))
    ns = [r["world_size_ranks"] for r in timed]
    if strong:
        fit = amdahl_fit(ns, [r["speedup_ratio"] for r in timed])
    else:
        fit = gustafson_fit(ns, [r["speedup_ratio"] for r in timed])
    fit_note = "" if fit is not None else (fit_shortfall(ns) or "the fit failed")
    frame = pd.DataFrame(rows, columns=list(COLUMN_NAMES))
    return SeriesResult(series=series, rows=frame, fit=fit, notes=notes, epochs=table,
                        law="amdahl" if strong else "gustafson", fit_note=fit_note)


def summary_table(results: list[SeriesResult]) -> pd.DataFrame:
    """All series stacked, columns in ``COLUMN_NAMES`` order."""
    frames = [r.rows for r in results if len(r.rows)]
    if not frames:
        return pd.DataFrame(columns=list(COLUMN_NAMES))
    return pd.concat(frames, ignore_index=True)[list(COLUMN_NAMES)]
