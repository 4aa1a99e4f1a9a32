"""Bootstrap intervals of energy per epoch, energy per 1000 showers and average power, and the
engines compared with their spread.

The same resampling as the efficiencies (``analysis.bootstrap``): repeats of a point, then the
used epochs inside each. The statistic is the median of per-epoch values: an epoch's total
energy (every domain with a value), its energy per 1000 showers and its average power (energy /
epoch time). The summary's total is a sum of per-domain medians, so its value can differ
slightly from the median of totals whose interval is given here; the table shows both.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import pandas as pd

from analysis.bootstrap import CONFIDENCE, RESAMPLES, median_interval
from analysis.compare import Comparison, compare
from analysis.epochs import used_epochs
from analysis.numbers import energy, interval, percent, power
from analysis.report import Document
from analysis.summary import Column, SeriesResult

COLUMNS: tuple[Column, ...] = (
    Column("series", "text", "summary series"),
    Column("world_size_ranks", "ranks", "N"),
    Column("nodes_count", "nodes", "nodes"),
    Column("energy_source", "text", "provenance of the per-epoch totals (as total_energy_source)"),
    Column("energy_per_epoch_median_j", "J", "median over used epochs of the epoch's total energy"),
    Column("energy_per_epoch_ci_low_j", "J", f"{percent(CONFIDENCE)} bootstrap interval of that median: low end"),
    Column("energy_per_epoch_ci_high_j", "J", "high end"),
    Column("energy_per_1000_showers_median_j", "J", "median over used epochs of energy / showers x 1000"),
    Column("energy_per_1000_showers_ci_low_j", "J", "interval, low end"),
    Column("energy_per_1000_showers_ci_high_j", "J", "interval, high end"),
    Column("power_median_w", "W", "median over used epochs of energy / epoch time"),
    Column("power_ci_low_w", "W", "interval, low end"),
    Column("power_ci_high_w", "W", "interval, high end"),
)
COLUMN_NAMES = tuple(c.name for c in COLUMNS)


def per_repeat(used: pd.DataFrame, values: pd.Series) -> list[list[float]]:
    """``values`` (aligned with ``used``) split by repeat (run directory)."""
    return [values.loc[g.index].astype(float).tolist() for _, g in used.groupby("run_path", sort=True)]


def epoch_values(used: pd.DataFrame) -> dict[str, pd.Series]:
    """Per used epoch: total energy (J), energy per 1000 showers (J) and power (W)."""
    e = used["total_energy_j"].astype(float)
    return {"energy": e, "per_1000": e / used["showers_count"].astype(float) * 1000.0,
            "power": e / used["time_s"].astype(float)}


def _median(groups: Sequence[Sequence[float]]) -> float:
    flat = [v for g in groups for v in g if math.isfinite(v)]
    return float(pd.Series(flat).median()) if flat else math.nan


def interval_table(results: Sequence[SeriesResult]) -> pd.DataFrame:
    rows = []
    for r in results:
        if r.epochs is None or not len(r.epochs):
            continue
        for n, nodes in r.series.placements:
            used = used_epochs(r.epochs[(r.epochs["world_size"] == n) & (r.epochs["nodes"] == nodes)])
            if not len(used) or not used["total_energy_j"].notna().any():
                continue
            row = {"series": r.series.key.label, "world_size_ranks": n, "nodes_count": nodes,
                   "energy_source": ",".join(sorted(set(used["total_energy_source"].astype(str))))}
            for name, values in epoch_values(used).items():
                groups = per_repeat(used, values)
                ci = median_interval(groups)
                col = {"energy": ("energy_per_epoch", "j"), "per_1000": ("energy_per_1000_showers", "j"),
                       "power": ("power", "w")}[name]
                row[f"{col[0]}_median_{col[1]}"] = _median(groups)
                row[f"{col[0]}_ci_low_{col[1]}"] = ci.low
                row[f"{col[0]}_ci_high_{col[1]}"] = ci.high
            rows.append(row)
    return pd.DataFrame(rows, columns=list(COLUMN_NAMES))


@dataclass
class EngineComparison:
    """Two engines on the same workload and N: time and energy per 1000 showers, A over B."""
    what: str
    world_size: int
    time: Comparison
    energy_per_1000: Comparison


def compare_engines(results: Sequence[SeriesResult]) -> list[EngineComparison]:
    """Every pair of series that differ only in their engine, at every N both measured."""
    out = []
    by_rest: dict[tuple, list[SeriesResult]] = {}
    for r in results:
        k = r.series.key
        by_rest.setdefault((k.mode, k.particle, k.config_hash, k.batch_showers, k.threads,
                            getattr(k, "variant", "")), []).append(r)
    for group in by_rest.values():
        for i, a in enumerate(group):
            for b in group[i + 1:]:
                if a.epochs is None or b.epochs is None:
                    continue
                for n in sorted(set(a.series.world_sizes) & set(b.series.world_sizes)):
                    ua = used_epochs(a.epochs[a.epochs["world_size"] == n])
                    ub = used_epochs(b.epochs[b.epochs["world_size"] == n])
                    if not len(ua) or not len(ub):
                        continue
                    time_cmp = compare(per_repeat(ua, ua["time_s"]), per_repeat(ub, ub["time_s"]))
                    e_cmp = compare(per_repeat(ua, epoch_values(ua)["per_1000"]),
                                    per_repeat(ub, epoch_values(ub)["per_1000"]))
                    out.append(EngineComparison(f"{a.series.key.engine} over {b.series.key.engine} "
                                                f"({a.series.key.mode} {a.series.key.particle})", n, time_cmp, e_cmp))
    return out


def intervals_section(doc: Document, table: pd.DataFrame, engines: Sequence[EngineComparison]) -> None:
    doc.h(1, "Energy with its spread")
    if len(table):
        doc.p(f"Median over used epochs with a {percent(CONFIDENCE)} bootstrap interval ({RESAMPLES} resamples, fixed "
              "seed; repeats, then epochs within each). `energy_intervals.csv` holds the table.")
        doc.table(["series", "N", "energy per epoch [CI]", "energy per 1000 showers [CI]", "average power [CI]",
                   "source"],
                  [[r.series, r.world_size_ranks,
                    f"{energy(r.energy_per_epoch_median_j)} {interval(r.energy_per_epoch_ci_low_j, r.energy_per_epoch_ci_high_j, energy)}",
                    f"{energy(r.energy_per_1000_showers_median_j)} "
                    f"{interval(r.energy_per_1000_showers_ci_low_j, r.energy_per_1000_showers_ci_high_j, energy)}",
                    f"{power(r.power_median_w)} {interval(r.power_ci_low_w, r.power_ci_high_w, power)}",
                    r.energy_source] for r in table.itertuples()])
    else:
        doc.p("No run recorded energy: no intervals.")
    if engines:
        doc.p("Engines compared on the same workload and N (ratio of medians A/B with its bootstrap interval and a "
              "permutation test; below 1 means A needs less): a difference counts only when the interval "
              "excludes 1.")
        doc.table(["engines", "N", "epoch time A/B", "energy per 1000 showers A/B"],
                  [[c.what, c.world_size, c.time.verdict(), c.energy_per_1000.verdict()] for c in engines])
