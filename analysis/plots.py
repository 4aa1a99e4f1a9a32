"""Every figure of the report, drawn with matplotlib (``common.plotting``: Agg, no pyplot state,
the house rc style) as PNG and PDF.

House style on top of that: log2 world-size axis with integer ticks, an ideal line wherever one exists,
bootstrap confidence intervals on speedups and efficiencies and the epoch-time spread (25th-75th
percentile) on times, the colour-blind-safe Okabe-Ito
palette with distinct markers per series, axis labels with units, TrueType fonts in the PDF so
figures stay editable in papers. Projections are dashed and labelled as projections.

Each ``plot_*`` returns a ``PlotFile`` (paths, title and a caption saying how the plotted
numbers were measured) or None when there is nothing to draw (the reason goes to ``skipped``).
"""
from __future__ import annotations

import math
import textwrap
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch
from matplotlib.ticker import FixedLocator, FuncFormatter, LogLocator, NullFormatter, NullLocator

from analysis import energy_metrics as em
from analysis.bootstrap import CONFIDENCE
from analysis.numbers import count, percent
from analysis.energy.pareto import REFERENCE_SHOWERS
from analysis.summary import SeriesResult
from bologan.metrics import SELECTION_METRIC, best_iteration
from common.plotting import new_figure, save_figure
from common.vocab import ENERGY_DOMAINS

PALETTE = ("#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#000000", "#F0E442")
MARKERS = ("o", "s", "^", "D", "v", "P", "X", "h")
PART_COLOURS = {"compute": "#0072B2", "comm": "#D55E00", "data_wait": "#009E73", "other": "#BBBBBB"}
PART_LABELS = {"compute": "compute", "comm": "communication (all-reduce)", "data_wait": "data wait",
               "other": "other"}
DOMAIN_COLOURS = {"gpu": "#009E73", "cpu": "#0072B2", "dram": "#CC79A7"}
DOMAIN_LABELS = {"gpu": "GPU", "cpu": "CPU package", "dram": "DRAM"}
SOURCE_HATCH = {em.MEASURED: "", em.ESTIMATED: "///", em.MIXED: "//", em.PARTIAL: "..", em.UNAVAILABLE: ""}
FRONT_STYLES = ("-", "--", "-.", ":")
METRIC_LABELS = {"chi2_ndf": "chi2 / NDF", "chi2_ndf_overflow": "chi2 / NDF with under- and overflow bins",
                 "fpd": "CaloChallenge FPD x 10^3", "kpd": "CaloChallenge KPD x 10^3",
                 "frechet_hlf_std": "Fréchet distance of standardised high-level features"}
PROJECTION_MIN_WORLD_SIZE = 8
"""Projection plots start here: below it the measurements speak for themselves."""
PROJECTION_PARTS = ("compute", "straggler", "fixed", "latency", "bandwidth")
PROJECTION_COLOURS = {"compute": "#0072B2", "straggler": "#56B4E9", "fixed": "#E69F00", "latency": "#CC79A7",
                      "bandwidth": "#D55E00"}
PROJECTION_LABELS = {"compute": "compute (mean rank)", "straggler": "straggler excess (slowest rank - mean)",
                     "fixed": "all-reduce fixed cost c", "latency": "all-reduce latency a(N)",
                     "bandwidth": "all-reduce bandwidth 2(N-1)/N b/B"}
MAX_TIMELINE_RANKS = 8
MAX_LINE_POINTS = 3000

_SI_STEPS = {"J": ((1e9, "GJ"), (1e6, "MJ"), (1e3, "kJ")), "J s": ((1e9, "GJ s"), (1e6, "MJ s"), (1e3, "kJ s"))}


def unit_scale(values: Sequence[float], unit: str) -> tuple[float, str]:
    """(divisor, unit label) that keeps the largest value readable: J -> kJ/MJ, s -> min/h."""
    finite = [abs(v) for v in values if v is not None and math.isfinite(v)]
    top = max(finite) if finite else 0.0
    if unit == "s":
        if top >= 2 * 3600:
            return 3600.0, "h"
        if top >= 300:
            return 60.0, "min"
        return 1.0, "s"
    for div, label in _SI_STEPS.get(unit, ()):
        if top >= 10 * div:
            return div, label
    return 1.0, unit


def _plain(v: float, _pos=None) -> str:
    return f"{v:g}"


def tidy_log_axis(ax, axis: str = "y") -> None:
    """Plain numbers on a log10 axis that spans less than ~2 decades (no 4x10^0 labels)."""
    lo, hi = ax.get_ylim() if axis == "y" else ax.get_xlim()
    a = ax.yaxis if axis == "y" else ax.xaxis
    if lo > 0 and hi / lo < 150:
        a.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
        a.set_major_formatter(FuncFormatter(_plain))
        a.set_minor_formatter(NullFormatter())


def downsample(t: np.ndarray, y: np.ndarray, max_points: int = MAX_LINE_POINTS) -> tuple[np.ndarray, np.ndarray]:
    """Mean over equal time bins when a series is longer than ``max_points`` (keeps PDFs small)."""
    if len(t) <= max_points:
        return t, y
    edges = np.linspace(t[0], t[-1], max_points + 1)
    idx = np.clip(np.searchsorted(edges, t, side="right") - 1, 0, max_points - 1)
    counts = np.bincount(idx, minlength=max_points)
    keep = counts > 0
    t_mean = np.bincount(idx, weights=t, minlength=max_points)[keep] / counts[keep]
    y_mean = np.bincount(idx, weights=y, minlength=max_points)[keep] / counts[keep]
    return t_mean, y_mean


CI_TEXT = (f"{percent(CONFIDENCE)} bootstrap confidence interval (repeats, then epochs within each, resampled; "
           "none at the baseline, which is exact by definition)")


def ci_error(value: np.ndarray, low: Sequence[float], high: Sequence[float]) -> np.ndarray:
    """``errorbar``'s yerr (2 x n) from interval bounds; no bar where a bound is missing."""
    value = np.asarray(value, dtype=float)
    lo = np.nan_to_num(value - np.asarray(low, dtype=float), nan=0.0)
    hi = np.nan_to_num(np.asarray(high, dtype=float) - value, nan=0.0)
    return np.vstack([np.clip(lo, 0, None), np.clip(hi, 0, None)])


def projection_parts(points: pd.DataFrame) -> dict[str, np.ndarray]:
    """The projected iteration time of each row of ``projection.csv`` split into
    ``PROJECTION_PARTS``, seconds per iteration; the parts add up to ``iteration_time_s``."""
    straggler = points["straggler_per_iteration_s"].to_numpy(float)
    return {"compute": points["compute_per_iteration_s"].to_numpy(float) - straggler, "straggler": straggler,
            "fixed": points["fixed_cost_per_iteration_s"].to_numpy(float),
            "latency": points["latency_per_iteration_s"].to_numpy(float),
            "bandwidth": points["bandwidth_per_iteration_s"].to_numpy(float)}


def _wrap(text: str, width: int) -> list[str]:
    return textwrap.wrap(text, width) or [text]


def bytes_label(v: float, _pos=None) -> str:
    for div, unit in ((2**30, "GiB"), (2**20, "MiB"), (2**10, "KiB")):
        if v >= div:
            return f"{v / div:g} {unit}"
    return f"{v:g} B"


@dataclass(frozen=True)
class PlotFile:
    name: str                     # file stem, e.g. "speedup"
    title: str
    caption: str                  # what is drawn and how it was measured
    png: Path
    pdf: Path


class Plotter:
    """Writes figures into ``out_dir``; series keep the same colour and marker in every figure."""

    def __init__(self, out_dir: Path, results: Sequence[SeriesResult]):
        self.out_dir = Path(out_dir)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.results = list(results)
        self.skipped: dict[str, str] = {}
        self._style = {r.series.key.label: (PALETTE[i % len(PALETTE)], MARKERS[i % len(MARKERS)])
                       for i, r in enumerate(self.results)}

    # ---------------------------------------------------------------- helpers
    def style_of(self, label: str) -> tuple[str, str]:
        return self._style.get(label, ("#000000", "o"))

    def _figure(self, ncols: int = 1, nrows: int = 1, width: float | None = None,
                height: float | None = None) -> tuple[Figure, np.ndarray]:
        return new_figure(width or (6.4 if ncols == 1 else 5.2 * ncols), height or 4.3 * nrows, nrows, ncols)

    def _save(self, fig: Figure, name: str, title: str, caption: str) -> PlotFile:
        png, pdf = save_figure(fig, self.out_dir / name)
        return PlotFile(name, title, caption, png, pdf)

    def series_handle(self, label: str, hollow: bool = False) -> Line2D:
        colour, marker = self.style_of(label)
        return Line2D([], [], color=colour, marker=marker, markerfacecolor="white" if hollow else colour,
                      markeredgewidth=1.4 if hollow else 1.0)

    def _figure_legend(self, fig: Figure, handles: dict[str, Line2D]) -> None:
        """One legend below the panels: never on top of the data, however many series."""
        fig.legend(list(handles.values()), list(handles), loc="outside lower center",
                   ncols=2 if len(handles) > 2 else len(handles), fontsize=8)

    def _skip(self, name: str, reason: str) -> None:
        self.skipped[name] = reason

    @staticmethod
    def log2_axis(ax, ns: Sequence[float], label: str = "ranks N (log2 scale)") -> None:
        """log2 x axis with integer tick labels at the given world sizes (powers of 2 when many)."""
        vals = sorted({int(n) for n in ns if n and math.isfinite(n) and n >= 1})
        if not vals:
            vals = [1]
        lo, hi = vals[0], vals[-1]
        ticks = vals if len(vals) <= 12 else [2**k for k in range(int(math.log2(lo)), int(math.log2(hi)) + 1)]
        ax.set_xscale("log", base=2)
        ax.xaxis.set_major_locator(FixedLocator(ticks))
        ax.xaxis.set_minor_locator(NullLocator())
        ax.set_xticklabels([str(t) for t in ticks])
        ax.set_xlim(lo / 2**0.45, hi * 2**0.45)
        ax.set_xlabel(label)

    def _rows(self, mode: str | None = None, min_points: int = 1) -> list[SeriesResult]:
        out = []
        for r in self.results:
            timed = r.rows[r.rows["epoch_time_median_s"].notna()]
            if (mode is None or r.series.key.mode == mode) and timed["world_size_ranks"].nunique() >= min_points:
                out.append(r)
        return out

    # ---------------------------------------------------------------- scaling
    def plot_speedup(self) -> PlotFile | None:
        series = self._rows("strong", min_points=2)
        if not series:
            self._skip("speedup", "no strong-scaling series with two or more world sizes")
            return None
        fig, axes = self._figure()
        ax = axes[0, 0]
        all_n: list[float] = []
        for r in series:
            colour, marker = self.style_of(r.series.key.label)
            d = r.rows[r.rows["epoch_time_median_s"].notna()]
            n, s = d["world_size_ranks"].to_numpy(float), d["speedup_ratio"].to_numpy(float)
            ax.errorbar(n, s, yerr=ci_error(s, d["speedup_ci_low_ratio"], d["speedup_ci_high_ratio"]),
                        color=colour, marker=marker, capsize=3, label=r.series.key.label)
            if r.fit is not None:
                grid = np.geomspace(n.min(), n.max(), 60)
                # Many series: one generic legend entry for the fits (P values are in the report).
                fit_label = (f"Amdahl fit, parallel fraction P = {r.fit.parallel_fraction:.3f}"
                             if len(series) <= 3 else None)
                ax.plot(grid, r.fit.predict(grid), color=colour, linestyle=":", linewidth=1.3, label=fit_label)
            all_n += list(n)
        ideal = np.array(sorted(set(all_n)), dtype=float)
        ax.plot(ideal, ideal, color="0.35", linestyle="--", linewidth=1.2, label="ideal (S = N)", zorder=0)
        self.log2_axis(ax, all_n)
        ax.set_yscale("log", base=2)
        s_all = [v for r in series for v in r.rows["speedup_ratio"].dropna()] + list(all_n)
        k_lo = math.floor(math.log2(max(min(s_all), 1e-3)))
        k_hi = math.ceil(math.log2(max(s_all)))
        ax.yaxis.set_major_locator(FixedLocator([2.0**k for k in range(k_lo, k_hi + 1)]))
        ax.yaxis.set_minor_locator(NullLocator())
        ax.yaxis.set_major_formatter(FuncFormatter(_plain))
        ax.set_ylabel("speedup S = N0 T(N0) / T(N)")
        ax.set_title("Strong scaling: speedup")
        handles, labels = ax.get_legend_handles_labels()
        if len(series) > 3 and any(r.fit is not None for r in series):
            handles.append(Line2D([], [], color="0.3", linestyle=":"))
            labels.append("dotted: Amdahl fits (P in the report)")
        ax.legend(handles, labels, loc="upper left", fontsize=8 if len(series) <= 3 else 7)
        return self._save(fig, "speedup", "Speedup vs ranks (strong scaling)",
                          "Speedup from the median epoch time T(N) over non-warm-up, non-interrupted epochs (all "
                          "repeats of a point pooled); an epoch's time is that of its slowest rank. Error bars: "
                          f"{CI_TEXT}. Dotted: least-squares Amdahl fit (drawn with three or more world sizes).")

    def plot_efficiency(self) -> PlotFile | None:
        strong, weak = self._rows("strong", 2), self._rows("weak", 2)
        if not strong and not weak:
            self._skip("efficiency", "no series with two or more world sizes")
            return None
        fig, axes = self._figure(ncols=2, height=4.3 + 0.2 * len(strong + weak))
        handles: dict[str, Line2D] = {}
        for ax, group, mode in ((axes[0, 0], strong, "strong"), (axes[0, 1], weak, "weak")):
            col = f"{mode}_efficiency_ratio"
            all_n: list[float] = []
            ymax = 1.1
            for r in group:
                colour, marker = self.style_of(r.series.key.label)
                d = r.rows[r.rows[col].notna()]
                n, e = d["world_size_ranks"].to_numpy(float), d[col].to_numpy(float)
                high = d[f"{mode}_efficiency_ci_high_ratio"].to_numpy(float)
                ax.errorbar(n, e, yerr=ci_error(e, d[f"{mode}_efficiency_ci_low_ratio"], high),
                            color=colour, marker=marker, capsize=3)
                handles[r.series.key.label] = self.series_handle(r.series.key.label)
                all_n += list(n)
                top = np.fmax(e, high)
                if np.isfinite(top).any():
                    ymax = max(ymax, float(np.nanmax(top)) * 1.05)
            if all_n:
                ax.axhline(1.0, color="0.35", linestyle="--", linewidth=1.2, zorder=0)
                handles["ideal (efficiency 1)"] = Line2D([], [], color="0.35", linestyle="--", linewidth=1.2)
                self.log2_axis(ax, all_n)
            else:
                ax.text(0.5, 0.5, f"no {mode}-scaling series\nwith two or more world sizes", ha="center",
                        va="center", transform=ax.transAxes, color="0.4")
                ax.set_xticks([])
            ax.set_ylim(0, ymax)
            ax.set_ylabel("strong efficiency S / N" if mode == "strong" else "weak efficiency T(N0) / T(N)")
            ax.set_title(f"{mode.capitalize()} scaling efficiency")
        self._figure_legend(fig, handles)
        return self._save(fig, "efficiency", "Strong and weak scaling efficiency vs ranks",
                          "Strong efficiency S/N with the global batch fixed; weak efficiency T(N0)/T(N) with the "
                          "per-rank batch fixed. T is the median epoch time (slowest rank per epoch, warm-up and "
                          f"interrupted epochs excluded, repeats pooled); error bars: {CI_TEXT}.")

    def plot_time_breakdown(self) -> PlotFile | None:
        series = self._rows(None, 1)
        if not series:
            self._skip("time_breakdown", "no timed epochs")
            return None
        fig, axes = self._grid(len(series))
        for ax, r in zip(axes.flat, series):
            d = r.rows[r.rows["epoch_time_median_s"].notna()]
            n = d["world_size_ranks"].to_numpy(float)
            left, width = n * 2**-0.3, n * (2**0.3 - 2**-0.3)
            bottom = np.zeros(len(d))
            for part in ("compute", "comm", "data_wait", "other"):
                v = np.nan_to_num(d[f"{part}_time_s"].to_numpy(float))
                ax.bar(left, v, width=width, bottom=bottom, align="edge", color=PART_COLOURS[part],
                       edgecolor="white", linewidth=0.6, label=PART_LABELS[part])
                bottom += v
            t = d["epoch_time_median_s"].to_numpy(float)
            ax.errorbar(n, t, yerr=[t - d["epoch_time_p25_s"].to_numpy(float), d["epoch_time_p75_s"].to_numpy(float) - t],
                        fmt="none", ecolor="black", capsize=3, linewidth=1)
            self.log2_axis(ax, n)
            ax.set_ylabel("time per epoch (s)")
            ax.set_title(r.series.key.label, fontsize=9.5)
        self._hide_unused(axes, len(series))
        handles = [Patch(color=PART_COLOURS[p], label=PART_LABELS[p]) for p in PART_COLOURS]
        handles.append(Line2D([], [], color="black", marker="_", linestyle="none", markersize=10,
                              label="epoch time p25-p75"))
        fig.legend(handles=handles, loc="outside upper center", ncols=3 if len(series) == 1 else 5)
        return self._save(fig, "time_breakdown", "Time per epoch: compute, communication, data wait, other",
                          "Median epoch time T(N) split by the median share of each part: compute (training step "
                          "outside the all-reduce), communication (inside gradient all-reduces), data wait "
                          "(waiting for the next input batch), each the mean over ranks; other = the rest.")

    def _grid(self, count: int, per_row: int = 2) -> tuple[Figure, np.ndarray]:
        ncols = 1 if count == 1 else per_row
        nrows = math.ceil(count / ncols)
        return self._figure(ncols=ncols, nrows=nrows, width=7.0 if ncols == 1 else 5.4 * ncols,
                            height=3.9 * nrows + 0.5)

    @staticmethod
    def _hide_unused(axes: np.ndarray, used: int) -> None:
        for ax in list(axes.flat)[used:]:
            ax.set_visible(False)

    # ---------------------------------------------------------------- energy
    def _energy_rows(self) -> list[SeriesResult]:
        return [r for r in self._rows(None, 1) if r.rows["total_energy_per_epoch_j"].notna().any()]

    def plot_energy_breakdown(self) -> PlotFile | None:
        series = self._energy_rows()
        if not series:
            self._skip("energy_breakdown", "no energy measured or estimated in any run")
            return None
        fig, axes = self._grid(len(series))
        used_sources: set[str] = set()
        for ax, r in zip(axes.flat, series):
            d = r.rows[r.rows["total_energy_per_epoch_j"].notna()]
            n = d["world_size_ranks"].to_numpy(float)
            left, width = n * 2**-0.3, n * (2**0.3 - 2**-0.3)
            bottom = np.zeros(len(d))
            for dom in ENERGY_DOMAINS:
                v = np.nan_to_num(d[f"{dom}_energy_per_epoch_j"].to_numpy(float))
                for i, src in enumerate(d[f"{dom}_energy_source"]):
                    if v[i] <= 0:
                        continue
                    used_sources.add(src)
                    ax.bar(left[i], v[i], width=width[i], bottom=bottom[i], align="edge",
                           color=DOMAIN_COLOURS[dom], hatch=SOURCE_HATCH.get(src, ""), edgecolor="white",
                           linewidth=0.6)
                bottom += v
            self.log2_axis(ax, n)
            ax.set_ylabel("energy per epoch (J)")
            ax.set_title(r.series.key.label, fontsize=9.5)
        self._hide_unused(axes, len(series))
        handles = [Patch(facecolor=DOMAIN_COLOURS[d], label=DOMAIN_LABELS[d]) for d in ENERGY_DOMAINS]
        for src in (em.ESTIMATED, em.MIXED, em.PARTIAL):
            if src in used_sources:
                handles.append(Patch(facecolor="white", edgecolor="0.3", hatch=SOURCE_HATCH[src],
                                     label=f"hatched: {src}" if src != em.PARTIAL else "dotted: partial (lower bound)"))
        fig.legend(handles=handles, loc="outside upper center", ncols=min(3 if len(series) == 1 else 6, len(handles)))
        return self._save(fig, "energy_breakdown", "Energy per epoch by domain",
                          "Median over non-warm-up epochs of energy per epoch: GPU = sum over every rank's GPU "
                          "(NVML energy counter); CPU package and DRAM = RAPL, read once per node by its reader "
                          "rank, so each node is counted once. Hatched segments contain estimates.")

    def plot_energy_efficiency(self) -> PlotFile | None:
        series = self._energy_rows()
        if not series:
            self._skip("energy_efficiency", "no energy measured or estimated in any run")
            return None
        fig, axes = self._figure(ncols=2, height=4.3 + 0.2 * len(series))
        all_n: list[float] = []
        handles: dict[str, Line2D] = {}
        any_est = False
        for r in series:
            colour, marker = self.style_of(r.series.key.label)
            d = r.rows[r.rows["total_energy_per_epoch_j"].notna()]
            n = d["world_size_ranks"].to_numpy(float)
            all_n += list(n)
            measured = (d["total_energy_source"] == em.MEASURED).to_numpy()
            any_est |= not measured.all()
            handles[r.series.key.label] = self.series_handle(r.series.key.label, hollow=not measured.any())
            for ax, col in ((axes[0, 0], "showers_per_j"), (axes[0, 1], "edp_j_s")):
                y = d[col].to_numpy(float)
                ax.plot(n, y, color=colour, linestyle="-")
                if measured.any():
                    ax.scatter(n[measured], y[measured], color=colour, marker=marker, zorder=3)
                if not measured.all():
                    ax.scatter(n[~measured], y[~measured], facecolors="white", edgecolors=colour, marker=marker,
                               zorder=3, linewidths=1.4)
        for ax in axes.flat:
            self.log2_axis(ax, all_n)
        axes[0, 1].set_yscale("log")
        tidy_log_axis(axes[0, 1])
        axes[0, 0].set_ylabel("showers per joule (showers/J)")
        axes[0, 0].set_title("Energy efficiency (higher is better)")
        axes[0, 0].set_ylim(bottom=0)
        axes[0, 1].set_ylabel("energy-delay product per epoch (J s)")
        axes[0, 1].set_title("EDP = E x T (lower is better)")
        if any_est:
            handles["hollow: energy includes estimates or is partial"] = Line2D(
                [], [], marker="o", color="0.3", markerfacecolor="white", linestyle="none")
        self._figure_legend(fig, handles)
        return self._save(fig, "energy_efficiency", "Showers per joule and energy-delay product vs ranks",
                          "Showers per joule = showers processed per epoch / total energy per epoch; EDP = total "
                          "energy per epoch x median epoch time. Totals add the available domains (GPU, CPU "
                          "package, DRAM); hollow markers flag totals that include estimates or miss readings.")

    def plot_power_timeline(self, run_label: str, power: pd.DataFrame | None) -> PlotFile | None:
        if power is None or not len(power):
            self._skip("power_timeline", "no run has power samples (power.parquet)")
            return None
        ranks = sorted(power["rank"].unique())
        shown = ranks[:MAX_TIMELINE_RANKS]
        fig, axes = self._figure(width=8.0, height=4.4)
        ax = axes[0, 0]
        dash = {"gpu": "-", "package": "--", "dram": ":", "estimate": "-."}
        for i, rank in enumerate(shown):
            colour = PALETTE[i % len(PALETTE)]
            for (domain, device), g in power[power["rank"] == rank].groupby(["domain", "device"], sort=True):
                g = g.sort_values("t_s")
                est = " (estimated)" if (g["source"] == em.ESTIMATED).any() else ""
                t, w = downsample(g["t_s"].to_numpy(float), g["watts"].to_numpy(float))
                ax.plot(t, w, color=colour, linestyle=dash.get(domain, "-"), linewidth=1.2,
                        label=f"rank {rank} {device}{est}")
        ax.set_xlabel("time since run start (s)")
        ax.set_ylabel("power (W)")
        ax.set_ylim(bottom=0)
        more = f", ranks {shown[0]}-{shown[-1]} of {len(ranks)}" if len(ranks) > len(shown) else ""
        ax.set_title(f"Power per rank and device: {run_label}{more}", fontsize=10)
        ax.legend(loc="center left", bbox_to_anchor=(1.01, 0.5), fontsize=7.5)
        return self._save(fig, "power_timeline", f"Per-rank power timeline ({run_label})",
                          "Samples of power.parquet: GPU board power (NVML) of each rank's GPU (solid), RAPL "
                          "package (dashed) and DRAM (dotted) power of each node from its reader rank; "
                          f"estimates are labelled. Lines with more than {MAX_LINE_POINTS} samples are drawn as "
                          "averages over equal time bins.")

    def plot_pareto(self, table: pd.DataFrame) -> PlotFile | None:
        if table is None or not len(table):
            self._skip("pareto", "no configuration has both an epoch time and an energy per epoch")
            return None
        fig, axes = self._figure(width=7.2, height=5.6)
        ax = axes[0, 0]
        tdiv, tunit = unit_scale(table["time_to_solution_s"].tolist(), "s")
        ediv, eunit = unit_scale(table["energy_to_solution_j"].tolist(), "J")
        for label, g in table.groupby("series", sort=False):
            colour, marker = self.style_of(label)
            measured = (g["total_energy_source"] == em.MEASURED).to_numpy()
            x = g["time_to_solution_s"].to_numpy(float) / tdiv
            y = g["energy_to_solution_j"].to_numpy(float) / ediv
            if measured.any():
                ax.scatter(x[measured], y[measured], color=colour, marker=marker, s=42, zorder=3, label=label)
            if not measured.all():
                ax.scatter(x[~measured], y[~measured], facecolors="white", edgecolors=colour, marker=marker, s=42,
                           zorder=3, linewidths=1.4, label=None if measured.any() else label)
            for xi, yi, n in zip(x, y, g["world_size_ranks"]):
                ax.annotate(f"N={n}", (xi, yi), textcoords="offset points", xytext=(5, 4), fontsize=7.5,
                            color="0.25")
        # One line per front (mode, particle): a line through the fronts of two modes would join
        # configurations that are never compared with each other.
        fronts = table[table["on_front"]]
        for i, (name, front) in enumerate(fronts.groupby("front", sort=True)):
            front = front.sort_values("time_to_solution_s")
            ax.step(front["time_to_solution_s"] / tdiv, front["energy_to_solution_j"] / ediv, where="post",
                    color="0.2", linewidth=1.1, linestyle=FRONT_STYLES[i % len(FRONT_STYLES)], zorder=2,
                    label=f"Pareto front, {name}")
        best = table[table["recommended"]]
        if len(best):
            ax.scatter(best["time_to_solution_s"] / tdiv, best["energy_to_solution_j"] / ediv, marker="*", s=320,
                       facecolors="none", edgecolors="black", linewidths=1.3, zorder=4,
                       label="recommended (minimal E x T on the front)")
        for axis, col in (("x", "time_to_solution_s"), ("y", "energy_to_solution_j")):
            v = table[col].to_numpy(float)
            if v.min() > 0 and v.max() / v.min() > 8:
                (ax.set_xscale if axis == "x" else ax.set_yscale)("log")
                tidy_log_axis(ax, axis)
        ax.margins(0.08)
        ax.set_xlabel(f"time for {count(REFERENCE_SHOWERS)} showers ({tunit})")
        ax.set_ylabel(f"energy for {count(REFERENCE_SHOWERS)} showers ({eunit})")
        ax.set_title("Energy vs time for the same work (lower left is better)")
        fig.legend(*ax.get_legend_handles_labels(), loc="outside lower center", ncols=2, fontsize=7.5)
        return self._save(fig, "pareto", f"Energy vs time for {count(REFERENCE_SHOWERS)} showers (Pareto fronts)",
                          f"Every configuration taken to the same work, {count(REFERENCE_SHOWERS)} showers "
                          "processed (summed over ranks): time = median epoch time / showers per epoch x that "
                          "number, energy = total energy per epoch / showers per epoch x the same. One front per "
                          "scaling mode and particle (line style). Throughput at equal work, not time to a quality "
                          "target. Hollow markers: energy includes estimates or is partial.")

    def plot_chi2(self, evals: list[tuple[str, pd.DataFrame]]) -> PlotFile | None:
        evals = [(lbl, e) for lbl, e in evals if e is not None and len(e)]
        if not evals:
            self._skip("chi2", "no run has eval.parquet")
            return None
        fig, axes = self._figure(width=7.0, height=4.4)
        ax = axes[0, 0]
        # The metric that picks the best checkpoint; runs evaluated before it existed only have chi2_ndf.
        metric = SELECTION_METRIC if all(SELECTION_METRIC in e and e[SELECTION_METRIC].notna().any()
                                         for _, e in evals) else "chi2_ndf"
        for i, (label, e) in enumerate(evals[:len(PALETTE)]):
            e = e.sort_values("iteration")
            colour, marker = PALETTE[i % len(PALETTE)], MARKERS[i % len(MARKERS)]
            ax.plot(e["iteration"], e[metric], color=colour, marker=marker, markersize=3.5, label=label)
            best = best_iteration(e.itertuples(index=False), metric)
            b = e[e["iteration"] == best].iloc[-1]
            ax.scatter([b["iteration"]], [b[metric]], marker="*", s=160, color=colour, edgecolors="black",
                       zorder=4)
        ax.set_yscale("log")
        tidy_log_axis(ax)
        ax.set_xlabel("training iteration")
        ax.set_ylabel(f"{METRIC_LABELS.get(metric, metric)} of total energy vs reference")
        ax.set_title("Checkpoint quality (star: best iteration)")
        ax.legend(loc="upper right", fontsize=7.5)
        more = f" Only the first {len(PALETTE)} of {len(evals)} runs are drawn." if len(evals) > len(PALETTE) else ""
        return self._save(fig, "chi2", "chi2/NDF vs training iteration",
                          f"{METRIC_LABELS.get(metric, metric)} (`{metric}`) per evaluated checkpoint (eval.parquet); the star marks the best iteration "
                          "as bologan.metrics.best_iteration picks it (lowest value, ties to the later "
                          "iteration)." + more)

    # ---------------------------------------------------------------- projection
    @staticmethod
    def _projected(points: pd.DataFrame, networks: Sequence[str] | None,
                   min_world_size: int) -> tuple[pd.DataFrame, list[str]]:
        """The points to draw (N >= ``min_world_size``, the named networks) and the networks in order."""
        if networks:
            points = points[points["network"].isin(list(networks))]
        points = points[points["world_size_ranks"] >= min_world_size]
        return points, list(dict.fromkeys(points["network"]))

    def plot_projection(self, points: pd.DataFrame, networks: Sequence[str] | None = None,
                        *, min_world_size: int = PROJECTION_MIN_WORLD_SIZE, note: str = "") -> PlotFile | None:
        """Projected efficiency vs N: one panel per (particle, mode), one line per network."""
        if points is None or not len(points):
            self._skip("projection", "projection unavailable (see the projection section)")
            return None
        points, nets = self._projected(points, networks, min_world_size)
        if not len(points):
            self._skip("projection", f"no projected point at N >= {min_world_size}")
            return None
        particles = list(dict.fromkeys(points["particle"]))
        modes = [m for m in ("strong", "weak") if m in set(points["mode"])]
        fig, axes = new_figure(5.0 * len(modes), 3.3 * len(particles) + 0.4 + 0.16 * len(nets), len(particles),
                               len(modes), sharex=True, sharey=True)
        style = {n: (PALETTE[i % len(PALETTE)], MARKERS[i % len(MARKERS)]) for i, n in enumerate(nets)}
        all_n = sorted(set(points["world_size_ranks"]))
        for row, particle in enumerate(particles):
            for col, mode in enumerate(modes):
                ax = axes[row, col]
                p = points[(points["particle"] == particle) & (points["mode"] == mode)]
                for net, g in p.groupby("network", sort=False):
                    g = g.sort_values("world_size_ranks")
                    colour, marker = style[net]
                    ax.plot(g["world_size_ranks"], g["efficiency_ratio"], color=colour, marker=marker,
                            markersize=4, linestyle="--", linewidth=1.5)
                last = int(p["world_size_ranks"].max()) if len(p) else 0
                if mode == "strong" and last and last < all_n[-1]:
                    ax.axvspan(last * 2**0.5, all_n[-1] * 2**0.45, color="0.92", zorder=0)
                    ax.text(last * 2**0.6, 0.5, "per-rank batch\nbelow one shower", fontsize=7.5, color="0.35",
                            va="center")
                ax.axhline(1.0, color="0.35", linestyle=":", linewidth=1.0, zorder=0)
                self.log2_axis(ax, all_n)
                ax.set_ylim(0, 1.08)
                ax.set_title(f"{particle}, {mode} scaling (projection)", fontsize=10)
                ax.set_ylabel("strong efficiency S / N" if mode == "strong" else "weak efficiency T(1) / T(N)")
                if row < len(particles) - 1:
                    ax.set_xlabel("")
        handles = {n: Line2D([], [], color=style[n][0], marker=style[n][1], markersize=4, linestyle="--")
                   for n in nets}
        fig.legend(list(handles.values()), list(handles), loc="outside lower center", ncols=2, fontsize=8,
                   handlelength=3.0)
        return self._save(fig, "projection", "Projected scaling efficiency, one line per network",
                          "Projections, not measurements: efficiency at N ranks from the measured compute time per "
                          "iteration and the all-reduce model t = c + a(N) + 2(N-1)/N x b / B per collective "
                          "(n_disc critic + 1 generator all-reduce per iteration, no overlap with compute), on "
                          "each network. Strong lines stop where the per-rank batch would fall below one "
                          "shower (shaded). Validation against measurements: the projection section."
                          + (f" {note}" if note else ""))

    def plot_projection_breakdown(self, points: pd.DataFrame, networks: Sequence[str] | None = None,
                                  *, min_world_size: int = PROJECTION_MIN_WORLD_SIZE, note: str = "") -> PlotFile | None:
        """Share of the projected iteration time per part, stacked, one row per network."""
        if points is None or not len(points):
            self._skip("projection_breakdown", "projection unavailable (see the projection section)")
            return None
        points, nets = self._projected(points, networks, min_world_size)
        if not len(points):
            self._skip("projection_breakdown", f"no projected point at N >= {min_world_size}")
            return None
        panels = [(pt, m) for pt in dict.fromkeys(points["particle"]) for m in ("strong", "weak")
                  if len(points[(points["particle"] == pt) & (points["mode"] == m)])]
        fig, axes = new_figure(2.7 * len(panels) + 0.6, 1.55 * len(nets) + 1.0, len(nets), len(panels),
                               sharex=True, sharey=True)
        all_n = sorted(set(points["world_size_ranks"]))
        for row, net in enumerate(nets):
            for col, (particle, mode) in enumerate(panels):
                ax = axes[row, col]
                g = points[(points["network"] == net) & (points["particle"] == particle)
                           & (points["mode"] == mode)].sort_values("world_size_ranks")
                t = g["iteration_time_s"].to_numpy(float)
                parts = projection_parts(g)
                if len(g):
                    ax.stackplot(g["world_size_ranks"].to_numpy(float), *[parts[k] / t for k in PROJECTION_PARTS],
                                 colors=[PROJECTION_COLOURS[k] for k in PROJECTION_PARTS], linewidth=0)
                last = int(g["world_size_ranks"].max()) if len(g) else 0
                if last and last < all_n[-1]:
                    ax.axvspan(last, all_n[-1] * 2**0.45, color="0.92", zorder=0)
                self.log2_axis(ax, all_n, label="ranks N" if row == len(nets) - 1 else "")
                ax.xaxis.label.set_size(8)
                ax.tick_params(labelsize=7)
                ax.set_ylim(0, 1)
                ax.grid(False)
                if row == 0:
                    ax.set_title(f"{particle}, {mode}", fontsize=9)
                if col == 0:
                    ax.set_ylabel("\n".join(_wrap(net, 22)), fontsize=7.5)
        handles = [Patch(color=PROJECTION_COLOURS[k], label=PROJECTION_LABELS[k]) for k in PROJECTION_PARTS]
        handles.append(Patch(color="0.92", label="no point: per-rank batch below one shower"))
        fig.legend(handles=handles, loc="outside lower center", ncols=3, fontsize=7.5)
        return self._save(fig, "projection_breakdown", "What the projected iteration time is made of",
                          "Share of the projected time per iteration (a projection, not a measurement), stacked "
                          "from the bottom: mean compute of a rank, the wait for the slowest rank (straggler "
                          "excess, from the recorded step-time quantiles; zero when none were recorded), and "
                          "the three all-reduce terms over the n_disc + 1 collectives of an iteration: fixed "
                          "software cost c, latency a(N) and bandwidth 2(N-1)/N x b / B. One row per network."
                          + (f" {note}" if note else ""))

    def plot_allreduce_fit(self, benches: Sequence, fits: dict) -> PlotFile | None:
        if not benches:
            self._skip("allreduce_fit", "no all-reduce benchmark files")
            return None
        fig, axes = self._figure(width=7.0, height=4.6)
        ax = axes[0, 0]
        for i, b in enumerate(sorted(benches, key=lambda b: (b.engine, b.world_size))):
            colour, marker = PALETTE[i % len(PALETTE)], MARKERS[i % len(MARKERS)]
            x = np.asarray(b.bytes, float)
            y, lo, hi = (np.asarray(v, float) for v in (b.time_s_median, b.time_s_p10, b.time_s_p90))
            ok = (x > 0) & (y > 0)
            ax.errorbar(x[ok], y[ok], yerr=[np.clip(y - lo, 0, None)[ok], np.clip(hi - y, 0, None)[ok]],
                        color=colour, marker=marker, linestyle="none", capsize=2, markersize=4,
                        label=f"{b.engine}, N={b.world_size} ({b.nodes} node{'s' if b.nodes != 1 else ''})")
            fit = fits.get(b.engine)
            if fit is not None and b.world_size > 1 and ok.any():
                grid = np.geomspace(x[ok].min(), x[ok].max(), 80)
                ax.plot(grid, fit.predict_s(grid, b.world_size), color=colour, linewidth=1.1)
        ax.set_xscale("log", base=2)
        ax.xaxis.set_major_locator(LogLocator(base=16))
        ax.xaxis.set_minor_locator(LogLocator(base=2, subs=(1.0,), numticks=40))
        ax.xaxis.set_major_formatter(FuncFormatter(bytes_label))
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.set_yscale("log")
        ax.set_xlabel("message size (log2 scale)")
        ax.set_ylabel("all-reduce time (s)")
        ax.set_title("All-reduce benchmark and fitted model t = c + a(N) + 2(N-1)/N b/B", fontsize=10)
        ax.legend(loc="upper left", fontsize=7.5)
        algorithms = sorted({f.algorithm for f in fits.values()}) or ["tree"]
        return self._save(fig, "allreduce_fit", "All-reduce micro-benchmark and the fitted all-reduce model",
                          "Markers: median all-reduce time per message size (bars: 10th-90th percentile). Lines: "
                          "the model fitted per engine, t(b, N) = c + a(N) + 2(N-1)/N x b / B, with c the "
                          "engine's fixed cost per all-reduce (calibrated on the smallest sizes, the same for "
                          f"every N), a(N) the latency term of the {' / '.join(algorithms)} algorithm "
                          "(per-hop latency alpha fitted only from benchmarks at two or more world sizes, else "
                          "0 with the constant in c) and B the bandwidth; least squares on relative error.")
