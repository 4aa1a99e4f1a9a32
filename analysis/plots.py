"""Every figure of the report, drawn with matplotlib (Agg, no pyplot state) as PNG and PDF.

House style: log2 world-size axis with integer ticks, an ideal line wherever one exists,
error bars from the epoch-time spread (25th-75th percentile), the colour-blind-safe Okabe-Ito
palette with distinct markers per series, axis labels with units, TrueType fonts in the PDF so
figures stay editable in papers. Projections are dashed and labelled as projections.

Each ``plot_*`` returns a ``PlotFile`` (paths, title and a caption saying how the plotted
numbers were measured) or None when there is nothing to draw (the reason goes to ``skipped``).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import matplotlib

matplotlib.use("Agg")  # never open a window; analysis runs on login nodes and in CI

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402
from matplotlib.patches import Patch  # noqa: E402
from matplotlib.ticker import FixedLocator, FuncFormatter, LogLocator, NullFormatter, NullLocator  # noqa: E402

from analysis import energy_metrics as em  # noqa: E402
from analysis.summary import SeriesResult  # noqa: E402

PALETTE = ("#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#000000", "#F0E442")
MARKERS = ("o", "s", "^", "D", "v", "P", "X", "h")
PART_COLOURS = {"compute": "#0072B2", "comm": "#D55E00", "data_wait": "#009E73", "other": "#BBBBBB"}
PART_LABELS = {"compute": "compute", "comm": "communication (all-reduce)", "data_wait": "data wait",
               "other": "other"}
DOMAIN_COLOURS = {"gpu": "#009E73", "cpu": "#0072B2", "dram": "#CC79A7"}
DOMAIN_LABELS = {"gpu": "GPU", "cpu": "CPU package", "dram": "DRAM"}
SOURCE_HATCH = {em.MEASURED: "", em.ESTIMATED: "///", em.MIXED: "//", em.PARTIAL: "..", em.UNAVAILABLE: ""}
DPI = 150
MAX_TIMELINE_RANKS = 8
MAX_LINE_POINTS = 3000

STYLE = {
    "font.size": 10, "axes.titlesize": 11, "axes.labelsize": 10.5, "xtick.labelsize": 9.5,
    "ytick.labelsize": 9.5, "legend.fontsize": 8.5, "legend.framealpha": 0.9, "lines.linewidth": 1.8,
    "lines.markersize": 6, "axes.grid": True, "grid.alpha": 0.3, "grid.linewidth": 0.6,
    "axes.spines.top": False, "axes.spines.right": False, "pdf.fonttype": 42, "ps.fonttype": 42,
    "savefig.dpi": DPI, "figure.dpi": DPI, "axes.axisbelow": True,
}

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
        with matplotlib.rc_context(STYLE):
            fig = Figure(figsize=(width or (6.4 if ncols == 1 else 5.2 * ncols), height or 4.3 * nrows),
                         layout="constrained")
            axes = fig.subplots(nrows, ncols, squeeze=False)
        return fig, axes

    def _save(self, fig: Figure, name: str, title: str, caption: str) -> PlotFile:
        png, pdf = self.out_dir / f"{name}.png", self.out_dir / f"{name}.pdf"
        with matplotlib.rc_context(STYLE):
            fig.savefig(png, dpi=DPI)
            fig.savefig(pdf)
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
            n0, t0 = d["baseline_world_size_ranks"].iloc[0], d["epoch_time_median_s"].iloc[0]
            lo = s - n0 * t0 / d["epoch_time_p75_s"].to_numpy(float)
            hi = n0 * t0 / d["epoch_time_p25_s"].to_numpy(float) - s
            ax.errorbar(n, s, yerr=[np.clip(lo, 0, None), np.clip(hi, 0, None)], color=colour, marker=marker,
                        capsize=3, label=r.series.key.label)
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
                          "Speedup from the median epoch time T(N) over non-warm-up, non-interrupted epochs; an "
                          "epoch's time is that of its slowest rank. Error bars: epoch-time 25th-75th percentile "
                          "at N (baseline held at its median). Dotted: least-squares Amdahl fit.")

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
                ratio_lo = d["epoch_time_median_s"].to_numpy(float) / d["epoch_time_p75_s"].to_numpy(float)
                ratio_hi = d["epoch_time_median_s"].to_numpy(float) / d["epoch_time_p25_s"].to_numpy(float)
                ax.errorbar(n, e, yerr=[np.clip(e - e * ratio_lo, 0, None), np.clip(e * ratio_hi - e, 0, None)],
                            color=colour, marker=marker, capsize=3)
                handles[r.series.key.label] = self.series_handle(r.series.key.label)
                all_n += list(n)
                ymax = max(ymax, float(np.nanmax(e * ratio_hi)) * 1.05)
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
                          "interrupted epochs excluded); error bars from the 25th-75th percentile of epoch times.")

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
            for dom in em.DOMAINS:
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
        handles = [Patch(facecolor=DOMAIN_COLOURS[d], label=DOMAIN_LABELS[d]) for d in em.DOMAINS]
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
                est = " (estimated)" if (g["source"] == "estimated").any() else ""
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
            self._skip("pareto", "no configuration has both a time and an energy to solution")
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
        front = table[table["on_front"]].sort_values("time_to_solution_s")
        ax.step(front["time_to_solution_s"] / tdiv, front["energy_to_solution_j"] / ediv, where="post",
                color="0.2", linewidth=1.1, linestyle="-", zorder=2, label="Pareto front")
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
        ax.set_xlabel(f"time to solution ({tunit})")
        ax.set_ylabel(f"energy to solution ({eunit})")
        ax.set_title("Energy vs time to solution (lower left is better)")
        fig.legend(*ax.get_legend_handles_labels(), loc="outside lower center", ncols=2, fontsize=7.5)
        return self._save(fig, "pareto", "Energy vs time to solution (Pareto front)",
                          "Time to solution = median epoch time x epochs to solution, energy to solution = total "
                          "energy per epoch x the same epochs; every configuration is taken to the same number of "
                          "training iterations. Hollow markers: energy includes estimates or is partial.")

    def plot_chi2(self, evals: list[tuple[str, pd.DataFrame]]) -> PlotFile | None:
        evals = [(lbl, e) for lbl, e in evals if e is not None and len(e)]
        if not evals:
            self._skip("chi2", "no run has eval.parquet")
            return None
        fig, axes = self._figure(width=7.0, height=4.4)
        ax = axes[0, 0]
        for i, (label, e) in enumerate(evals[:len(PALETTE)]):
            e = e.sort_values("iteration")
            colour, marker = PALETTE[i % len(PALETTE)], MARKERS[i % len(MARKERS)]
            ax.plot(e["iteration"], e["chi2_ndf"], color=colour, marker=marker, markersize=3.5, label=label)
            b = e.loc[e["chi2_ndf"].idxmin()]
            ax.scatter([b["iteration"]], [b["chi2_ndf"]], marker="*", s=160, color=colour, edgecolors="black",
                       zorder=4)
        ax.set_yscale("log")
        tidy_log_axis(ax)
        ax.set_xlabel("training iteration")
        ax.set_ylabel("chi2 / NDF of total energy vs reference")
        ax.set_title("Checkpoint quality (star: best iteration)")
        ax.legend(loc="upper right", fontsize=7.5)
        more = f" Only the first {len(PALETTE)} of {len(evals)} runs are drawn." if len(evals) > len(PALETTE) else ""
        return self._save(fig, "chi2", "chi2/NDF vs training iteration",
                          "chi2/NDF per evaluated checkpoint (eval.parquet); the star marks the lowest value, "
                          "BoloGAN's best-iteration rule." + more)

    # ---------------------------------------------------------------- projection
    def plot_projection(self, points: pd.DataFrame, measured: pd.DataFrame) -> PlotFile | None:
        if points is None or not len(points):
            self._skip("projection", "projection unavailable (see the projection section)")
            return None
        fig, axes = self._figure(ncols=2, height=4.9)
        networks = list(dict.fromkeys(points["network"]))
        particles = list(dict.fromkeys(points["particle"]))
        particle_dash = {"photons": (0, (6, 3)), "pions": (0, (1.5, 2))}
        net_colour = {n: PALETTE[(i + 2) % len(PALETTE)] for i, n in enumerate(networks)}
        handles: dict[str, Line2D] = {}
        for n in networks:
            handles[f"projection, {n}"] = Line2D([], [], color=net_colour[n], linestyle="--")
        for pt in particles:
            handles[f"projected {pt} model"] = Line2D([], [], color="0.4", linestyle=particle_dash.get(pt, "--"))
        for ax, mode in ((axes[0, 0], "strong"), (axes[0, 1], "weak")):
            p = points[points["mode"] == mode]
            for (net, particle), g in p.groupby(["network", "particle"], sort=False):
                g = g.sort_values("world_size_ranks")
                ax.plot(g["world_size_ranks"], g["efficiency_ratio"], color=net_colour[net],
                        linestyle=particle_dash.get(particle, "--"), linewidth=1.7)
            m = measured[measured["mode"] == mode] if len(measured) else measured
            for (label, particle), g in (m.groupby(["series", "particle"], sort=False) if len(m) else []):
                g = g.sort_values("world_size_ranks")
                marker = "o" if particle == "photons" else "s"
                ax.plot(g["world_size_ranks"], g["efficiency_ratio"], color="black", linestyle="-", marker=marker,
                        linewidth=1.4, zorder=4)
                handles[f"measured: {label}"] = Line2D([], [], color="black", marker=marker, linestyle="-")
            if not len(m):
                ax.text(0.97, 0.97, f"no {mode}-scaling measurement", transform=ax.transAxes, ha="right",
                        va="top", fontsize=8.5, color="0.4")
            ax.axhline(1.0, color="0.35", linestyle=":", linewidth=1.0, zorder=0)
            self.log2_axis(ax, points["world_size_ranks"])
            ax.set_ylim(0, 1.08)
            ax.set_ylabel("strong efficiency S / N" if mode == "strong" else "weak efficiency T(1) / T(N)")
            ax.set_title(f"{mode.capitalize()} scaling: projection vs measurement")
        fig.legend(list(handles.values()), list(handles), loc="outside lower center", ncols=2, fontsize=8,
                   handlelength=3.5)
        return self._save(fig, "projection", "Projected scaling efficiency (ring all-reduce model)",
                          "Dashed: projections from the ring all-reduce model (latency + size / bandwidth) fitted "
                          "to the all-reduce benchmark or given in a network file, plus the measured "
                          "non-communication time per iteration. Solid black: measurements.")

    def plot_allreduce_fit(self, benches: Sequence, fits: dict) -> PlotFile | None:
        if not benches:
            self._skip("allreduce_fit", "no all-reduce benchmark files")
            return None
        from analysis.comm_model import ring_allreduce_s

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
                ax.plot(grid, ring_allreduce_s(grid, b.world_size, fit.bandwidth_bytes_per_s, fit.latency_s),
                        color=colour, linewidth=1.1)
        ax.set_xscale("log", base=2)
        ax.xaxis.set_major_locator(LogLocator(base=16))
        ax.xaxis.set_minor_locator(LogLocator(base=2, subs=(1.0,), numticks=40))
        ax.xaxis.set_major_formatter(FuncFormatter(bytes_label))
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.set_yscale("log")
        ax.set_xlabel("message size (log2 scale)")
        ax.set_ylabel("all-reduce time (s)")
        ax.set_title("All-reduce benchmark and fitted ring model")
        ax.legend(loc="upper left", fontsize=7.5)
        return self._save(fig, "allreduce_fit", "All-reduce micro-benchmark and ring-model fit",
                          "Markers: median all-reduce time per message size (bars: 10th-90th percentile). Lines: "
                          "t = 2(N-1)/N x bytes / bandwidth + 2(N-1) x latency with one bandwidth and latency "
                          "per engine, fitted by least squares on relative error.")
