"""Variants of one workload compared (launch.study ``[variants]``): which batch size, XLA or
precision setting is fastest, cheapest in energy, or best in energy-delay product.

Every series whose runs carry a variant name (run.json config ``scaling.variant``) is a
variant; at each N its row gives, over the used epochs of its repeats:

- iteration time (epoch time / iterations) and showers/s;
- time and energy per 1000 showers (the work every variant shares, whatever its batch) with
  bootstrap intervals (``analysis.bootstrap``), and EDP per 1000 showers = their product;
- peak memory: host RSS and GPU memory from the run's telemetry parts (``telemetry/``), "n/a"
  when the run recorded none;
- compile time: the slowest iteration of the first epoch (tracing, and XLA compilation with
  XLA on) minus the median iteration of the used epochs; the warm-up epoch's other iterations
  are not in it;
- with a quality target: the target metric at the largest iteration every variant evaluated,
  and its ratio to the first variant's (quality retention: 1 = the same, above 1 = worse for a
  lower-is-better metric).

The best variant per objective is the lowest median; it is compared with the runner-up
(``analysis.compare``), so the report says whether the win exceeds the spread.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd

from analysis.bootstrap import CONFIDENCE, median_interval
from analysis import energy_metrics as em
from analysis.compare import Comparison, compare
from analysis.energy.energy_intervals import per_repeat
from analysis.epochs import used_epochs
from analysis.numbers import duration, energy, interval, percent, rate, ratio, significant
from analysis.plots import PALETTE, PlotFile
from common.telemetry_parts import read_telemetry
from analysis.report import Document
from analysis.summary import Column, SeriesResult
from common.plotting import new_figure, save_figure
from common.rundir import Run
from common.target import Target

PLOT_NAME = "variants"
OBJECTIVES = (("time", "time_per_1000_showers", "s"), ("energy", "energy_per_1000_showers", "j"),
              ("EDP", "edp_per_1000_showers", "j_s"))

COLUMNS: tuple[Column, ...] = (
    Column("variant", "text", "launch.study [variants] name (run.json config scaling.variant)"),
    Column("series", "text", "the variant's series"),
    Column("world_size_ranks", "ranks", "N"),
    Column("runs_count", "runs", "repeats pooled"),
    Column("epochs_used_count", "epochs", "used epochs (not warm-up, not interrupted)"),
    Column("batch_showers", "showers", "per-rank batch (weak) or global batch (strong)"),
    Column("iteration_time_median_s", "s", "median over used epochs of epoch time / iterations"),
    Column("showers_per_s", "showers/s", "median over used epochs of showers / epoch time"),
    Column("time_per_1000_showers_median_s", "s", "median over used epochs of epoch time / showers x 1000"),
    Column("time_per_1000_showers_ci_low_s", "s", "bootstrap interval, low end"),
    Column("time_per_1000_showers_ci_high_s", "s", "bootstrap interval, high end"),
    Column("energy_per_1000_showers_median_j", "J", "median over used epochs of total energy / showers x 1000"),
    Column("energy_per_1000_showers_ci_low_j", "J", "bootstrap interval, low end"),
    Column("energy_per_1000_showers_ci_high_j", "J", "bootstrap interval, high end"),
    Column("energy_source", "text", "provenance of the energies (measured / estimated / ...)"),
    Column("edp_per_1000_showers_median_j_s", "J s", "median over used epochs of energy x time per 1000 showers"),
    Column("edp_per_1000_showers_ci_low_j_s", "J s", "bootstrap interval, low end"),
    Column("edp_per_1000_showers_ci_high_j_s", "J s", "bootstrap interval, high end"),
    Column("peak_host_memory_bytes", "bytes", "max rss_bytes over the runs' telemetry (NaN: none recorded)"),
    Column("peak_gpu_memory_bytes", "bytes", "max gpu_mem_used_bytes over the runs' telemetry (NaN: none recorded)"),
    Column("compile_time_s", "s", "median over runs of the first epoch's slowest iteration minus the median used iteration"),
    Column("quality_iteration_count", "iterations", "the iteration at which every variant's quality is compared"),
    Column("quality_value", "metric", "median over runs of the target metric at that iteration"),
    Column("quality_retention_ratio", "1", "quality_value / the first variant's (1 = same quality)"),
)
COLUMN_NAMES = tuple(c.name for c in COLUMNS)


@dataclass
class Best:
    objective: str
    variant: str
    world_size: int
    median: float
    low: float
    high: float
    runner_up: str = ""
    versus: Comparison | None = None


@dataclass
class VariantsResult:
    table: pd.DataFrame
    best: list[Best] = field(default_factory=list)
    target: Target | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def available(self) -> bool:
        return len(self.table) > 0


def _peak(runs: Sequence[Run], column: str) -> float:
    values = []
    for run in runs:
        t = read_telemetry(run.path)   # common.telemetry_parts: the one reader of the sampler's parts
        if t is not None and column in t.columns:
            v = t[column].astype(float)
            if v.notna().any():
                values.append(float(v.max()))
    return max(values) if values else math.nan


def compile_time_s(run: Run) -> float:
    """The first epoch's slowest iteration minus the median iteration of the used epochs (s)."""
    df = run.epochs
    if df is None or not len(df) or "step_time_max_s" not in df.columns:
        return math.nan
    first = df[(df["attempt"] == 0) & (df["epoch"] == df["epoch"].min())]
    used = df[~df["warmup"].astype(bool) & ~df["interrupted"].astype(bool)]
    if not len(first) or not len(used):
        return math.nan
    scaling = run.meta.get("config", {}).get("scaling", {})
    k = int(scaling.get("steps_per_call", 1) or 1) if isinstance(scaling, dict) else 1
    # One call of k iterations is timed as a whole and shared equally among them (scaling.trainer).
    slowest = float(first["step_time_max_s"].astype(float).max()) * k
    steady = float(used["step_time_p50_s"].astype(float).median()) * k
    return slowest - steady if math.isfinite(slowest) and math.isfinite(steady) else math.nan


def _quality(runs: Sequence[Run], metric: str, iteration: int) -> float:
    values = []
    for run in runs:
        e = run.eval
        if e is None or not len(e) or metric not in e.columns:
            continue
        at = e[e["iteration"] == iteration][metric].astype(float)
        if at.notna().any():
            values.append(float(at.median()))
    return float(np.median(values)) if values else math.nan


def _per_epoch(used: pd.DataFrame) -> dict[str, pd.Series]:
    showers = used["showers_count"].astype(float)
    t1000 = used["time_s"].astype(float) / showers * 1000.0
    e1000 = used["total_energy_j"].astype(float) / showers * 1000.0
    return {"time_per_1000_showers": t1000, "energy_per_1000_showers": e1000, "edp_per_1000_showers": t1000 * e1000}


def analyse_variants(results: Sequence[SeriesResult], target: Target | None = None) -> VariantsResult | None:
    """The variants table and the best variant per objective; None when no run names a variant."""
    mine = [r for r in results if r.series.key.variant and r.epochs is not None and len(r.epochs)]
    if not mine:
        return None
    rows: list[dict[str, Any]] = []
    groups: dict[tuple[str, int], dict[str, list[list[float]]]] = {}
    runs_of: dict[tuple[str, int], list[Run]] = {}
    for r in mine:
        for n, nodes in r.series.placements:
            used = used_epochs(r.epochs[(r.epochs["world_size"] == n) & (r.epochs["nodes"] == nodes)])
            if not len(used):
                continue
            name = r.series.key.variant
            runs = [x for x in r.series.runs if int(x.meta["world_size"]) == n]
            values = _per_epoch(used)
            row: dict[str, Any] = {
                "variant": name, "series": r.series.key.label, "world_size_ranks": n,
                "runs_count": len(runs), "epochs_used_count": int(len(used)), "batch_showers": r.series.key.batch_showers,
                "iteration_time_median_s": float((used["time_s"] / used["iterations_count"]).median()),
                "showers_per_s": float((used["showers_count"] / used["time_s"]).median()),
                "energy_source": em.combine_sources(used["total_energy_source"]),
                "peak_host_memory_bytes": _peak(runs, "rss_bytes"),
                "peak_gpu_memory_bytes": _peak(runs, "gpu_mem_used_bytes"),
                "compile_time_s": em.nan_median([compile_time_s(x) for x in runs]),
            }
            groups[(name, n)] = {}
            for key, series in values.items():
                unit = dict((o[1], o[2]) for o in OBJECTIVES)[key]
                reps = per_repeat(used, series)
                ci = median_interval(reps)
                flat = np.asarray([v for g in reps for v in g], dtype=float)
                flat = flat[np.isfinite(flat)]
                row[f"{key}_median_{unit}"] = float(np.median(flat)) if flat.size else math.nan
                row[f"{key}_ci_low_{unit}"], row[f"{key}_ci_high_{unit}"] = ci.low, ci.high
                groups[(name, n)][key] = reps
            runs_of[(name, n)] = runs
            rows.append(row)
    table = pd.DataFrame(rows, columns=[c for c in COLUMN_NAMES if c not in
                                        ("quality_iteration_count", "quality_value", "quality_retention_ratio")])
    result = VariantsResult(table, target=target)
    _add_quality(result, runs_of, target)
    for n in sorted(set(table["world_size_ranks"])):
        at_n = table[table["world_size_ranks"] == n]
        for objective, key, unit in OBJECTIVES:
            col = f"{key}_median_{unit}"
            ok = at_n[at_n[col].map(lambda v: math.isfinite(float(v)))].sort_values(col)
            if not len(ok):
                continue
            first = ok.iloc[0]
            best = Best(objective, first.variant, int(n), float(first[col]), float(first[f"{key}_ci_low_{unit}"]),
                        float(first[f"{key}_ci_high_{unit}"]))
            if len(ok) > 1:
                second = ok.iloc[1]
                best.runner_up = second.variant
                best.versus = compare(groups[(first.variant, n)][key], groups[(second.variant, n)][key])
            result.best.append(best)
    return result


def _add_quality(result: VariantsResult, runs_of: dict[tuple[str, int], list[Run]], target: Target | None) -> None:
    t = result.table
    t["quality_iteration_count"] = math.nan
    t["quality_value"] = math.nan
    t["quality_retention_ratio"] = math.nan
    if target is None:
        return
    evaluated = []
    for runs in runs_of.values():
        its = set()
        for run in runs:
            if run.eval is not None and len(run.eval) and target.metric in run.eval.columns:
                its |= set(int(i) for i in run.eval.loc[run.eval[target.metric].notna(), "iteration"])
        evaluated.append(its)
    common = set.intersection(*evaluated) if evaluated else set()
    if not common:
        result.notes.append(f"quality: no iteration at which every variant evaluated {target.metric}")
        return
    at = max(common)
    values = [_quality(runs_of[(r.variant, r.world_size_ranks)], target.metric, at) for r in t.itertuples()]
    t["quality_iteration_count"] = at
    t["quality_value"] = values
    ref = values[0]
    t["quality_retention_ratio"] = [v / ref if ref and math.isfinite(ref) else math.nan for v in values]


def write_tables(result: VariantsResult, out: Path) -> None:
    result.table[list(COLUMN_NAMES)].to_csv(Path(out) / "variants.csv", index=False)


def _bytes(v: float) -> str:
    return f"{significant(v / 2**20)} MiB" if math.isfinite(v) else "n/a"


def variants_section(doc: Document, result: VariantsResult) -> None:
    doc.h(1, "Variants")
    doc.p("One row per variant and N (launch.study `[variants]`): the same work, 1000 showers, timed and metered "
          f"for every variant, medians over used epochs with {percent(CONFIDENCE)} bootstrap intervals. Compile time: "
          "the first epoch's slowest iteration minus a steady one (tracing, plus XLA compilation with XLA on), apart "
          "from the warm-up epoch's time. Peak memory comes from the runs' telemetry; 'n/a' where none was "
          "recorded. `variants.csv` holds the full table.")
    t = result.table
    quality = result.target is not None and t["quality_value"].notna().any()
    head = ["variant", "N", "runs", "iteration time", "showers/s", "time per 1000 showers [CI]",
            "energy per 1000 showers [CI] (source)", "EDP per 1000 showers (J s)", "peak host memory",
            "peak GPU memory", "compile time"]
    if quality:
        head += [f"{result.target.metric} at iteration {int(t['quality_iteration_count'].iloc[0])}", "vs first variant"]
    rows = []
    for r in t.itertuples():
        row = [r.variant, r.world_size_ranks, r.runs_count, duration(r.iteration_time_median_s),
               rate(r.showers_per_s, "showers/s"),
               f"{duration(r.time_per_1000_showers_median_s)} "
               f"{interval(r.time_per_1000_showers_ci_low_s, r.time_per_1000_showers_ci_high_s, duration)}",
               f"{energy(r.energy_per_1000_showers_median_j)} "
               f"{interval(r.energy_per_1000_showers_ci_low_j, r.energy_per_1000_showers_ci_high_j, energy)} "
               f"({r.energy_source})",
               significant(r.edp_per_1000_showers_median_j_s), _bytes(r.peak_host_memory_bytes),
               _bytes(r.peak_gpu_memory_bytes), duration(r.compile_time_s)]
        if quality:
            row += [significant(r.quality_value), ratio(r.quality_retention_ratio)]
        rows.append(row)
    doc.table(head, rows)
    if result.best:
        doc.p("Best variant per objective (lowest median), against the runner-up:")
        doc.ul(best_items(result))
    for note in result.notes:
        doc.p(note)


def best_items(result: VariantsResult) -> list[str]:
    items = []
    fmt = {"time": duration, "energy": energy, "EDP": lambda v: f"{significant(v)} J s"}
    for b in result.best:
        src = result.table[(result.table["variant"] == b.variant) & (result.table["world_size_ranks"] == b.world_size)]
        flag = f" ({src['energy_source'].iloc[0]} energy)" if b.objective != "time" and len(src) else ""
        text = (f"{b.objective} (N = {b.world_size}): {b.variant}, {fmt[b.objective](b.median)} per 1000 showers "
                f"{interval(b.low, b.high, fmt[b.objective])}{flag}")
        if b.versus is not None:
            text += f"; over {b.runner_up}: {b.versus.verdict()}"
        items.append(text + ".")
    return items


def plot_variants(result: VariantsResult, out_dir: Path, skipped: dict[str, str]) -> PlotFile | None:
    t = result.table
    if not len(t):
        skipped[PLOT_NAME] = "no variant has a used epoch"
        return None
    panels = [("time_per_1000_showers", "s", "time per 1000 showers [s]")]
    if t["energy_per_1000_showers_median_j"].notna().any():
        panels.append(("energy_per_1000_showers", "j", "energy per 1000 showers [J]"))
    fig, axes = new_figure(4.2 * len(panels) + 1.0, 4.2, 1, len(panels))
    labels = [f"{v}" + (f" (N={n})" if t["world_size_ranks"].nunique() > 1 else "")
              for v, n in zip(t["variant"], t["world_size_ranks"])]
    x = np.arange(len(t))
    for ax, (key, unit, label) in zip(axes[0], panels):
        med = t[f"{key}_median_{unit}"].astype(float).to_numpy()
        lo = t[f"{key}_ci_low_{unit}"].astype(float).to_numpy()
        hi = t[f"{key}_ci_high_{unit}"].astype(float).to_numpy()
        err = np.vstack([np.nan_to_num(med - lo), np.nan_to_num(hi - med)]).clip(0)
        hatch = ["//" if key.startswith("energy") and s != em.MEASURED else "" for s in t["energy_source"]]
        bars = ax.bar(x, med, color=[PALETTE[i % len(PALETTE)] for i in range(len(t))], yerr=err, capsize=3)
        for b, h in zip(bars, hatch):
            b.set_hatch(h)
        ax.set_xticks(x, labels, rotation=45, ha="right", fontsize=8)
        ax.set_ylabel(label)
    png, pdf = save_figure(fig, Path(out_dir) / PLOT_NAME)
    caption = ("Time and energy for the same work (1000 showers) per variant: bars are medians over used epochs, "
               f"whiskers {percent(CONFIDENCE)} bootstrap intervals; hatched energy bars are not measured "
               "(estimated or partial).")
    return PlotFile(PLOT_NAME, "Variants: time and energy per 1000 showers", caption, png, pdf)
