"""Figures of the time-to-quality study, in the style of ``analysis.plots`` (PNG and PDF through
``common.plotting``; each ``plot_*`` returns a ``PlotFile``, or None with the reason in ``skipped``).

- ``plot_quality_curves``: the target metric against training time (epoch clocks only) and against
  showers processed, one line per (series, N), repeats in the same colour; log y.
- ``plot_to_target``: time and energy to the target against N (median, bars min..max over
  repeats), with the throughput-only expectation dashed (every N needing N0's showers).

``*_figure`` build the figure without writing it, so tests can look at what is drawn.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Iterable

import numpy as np
import pandas as pd

from analysis.load import series_key
from analysis.plots import MARKERS, METRIC_LABELS, PALETTE, PlotFile, Plotter, tidy_log_axis, unit_scale
from common.plotting import new_figure, save_figure
from common.rundir import Run
from common.target import Target

CURVES_NAME = "quality_curves"
TO_TARGET_NAME = "time_to_target"
X_AXES = (("train_time_s", "training time (epoch clocks only)", "s"), ("showers", "showers processed (all ranks)", ""))


def _curves(runs: Iterable[Run], metric: str) -> list[tuple[str, int, pd.DataFrame]]:
    """(series label, N, evaluations) per run and member with at least one finite value."""
    out = []
    for run in runs:
        if run.eval is None or not len(run.eval):
            continue
        for _member, e in run.eval.groupby("member"):
            e = e.drop_duplicates("iteration", keep="last").sort_values("iteration")
            if np.isfinite(e[metric].astype(float)).any():
                out.append((series_key(run).label, int(run.meta["world_size"]), e))
    return out


def quality_curves_figure(runs: Iterable[Run], target: Target) -> tuple[Any, str] | None:
    """(figure, caption) or None when no run has a finite value of the target metric."""
    curves = _curves(runs, target.metric)
    if not curves:
        return None
    ns = sorted({n for _, n, _ in curves})
    series = list(dict.fromkeys(s for s, _, _ in curves))
    colour = {n: PALETTE[i % len(PALETTE)] for i, n in enumerate(ns)}
    marker = {s: MARKERS[i % len(MARKERS)] for i, s in enumerate(series)}
    fig, axes = new_figure(10.4, 4.6, 1, 2, sharey=True)
    times = [v for _, _, e in curves for v in e["train_time_s"].astype(float) if math.isfinite(v)]
    t_div, t_unit = unit_scale(times, "s")
    labelled: set[tuple[str, int]] = set()
    for ax, (col, label, unit) in zip(axes[0], X_AXES):
        for s, n, e in curves:
            x = e[col].astype(float).to_numpy()
            y = e[target.metric].astype(float).to_numpy()
            keep = np.isfinite(x) & (x >= 0) & np.isfinite(y) & (y > 0)
            if not keep.any():
                continue
            x = x[keep] / (t_div if unit == "s" else 1.0)
            key = (s, n)
            name = f"N={n}" + (f", {s}" if len(series) > 1 else "")
            ax.plot(x, y[keep], color=colour[n], marker=marker[s], markersize=3.5, linewidth=1.4,
                    label=name if key not in labelled and ax is axes[0, 0] else None)
            if ax is axes[0, 0]:
                labelled.add(key)
        ax.axhline(target.value, color="0.35", linestyle=":", linewidth=1.2,
                   label=f"target {target.text}" if ax is axes[0, 0] else None)
        ax.set_yscale("log")
        ax.set_xlabel(f"{label} [{t_unit}]" if unit == "s" else label)
    tidy_log_axis(axes[0, 0])
    axes[0, 0].set_ylabel(METRIC_LABELS.get(target.metric, target.metric))
    # Series labels are long: more than two side by side run off the figure.
    fig.legend(loc="outside lower center", ncols=1 if len(labelled) < 6 else 2, fontsize=8)
    caption = (f"{target.metric} at each training-time evaluation (eval.parquet) against training wall time "
               "(epoch clocks only, evaluation excluded) and against showers processed by all ranks; one colour "
               f"per N, repeats drawn alike; dotted: the target {target.text}. Non-finite values are not drawn.")
    return fig, caption


def plot_quality_curves(runs: Iterable[Run], target: Target, out_dir: str | Path,
                        skipped: dict[str, str] | None = None) -> PlotFile | None:
    made = quality_curves_figure(runs, target)
    if made is None:
        if skipped is not None:
            skipped[CURVES_NAME] = f"no run has a finite {target.metric} in eval.parquet"
        return None
    fig, caption = made
    png, pdf = save_figure(fig, Path(out_dir) / CURVES_NAME)
    return PlotFile(CURVES_NAME, f"{target.metric} vs training time and showers", caption, png, pdf)


def to_target_figure(tts: pd.DataFrame) -> tuple[Any, str] | None:
    """(figure, caption) from ``time_to_target_summary``; None when no row met the target."""
    done = tts[tts["time_to_target_median_s"].map(lambda v: math.isfinite(float(v)))]
    if not len(done):
        return None
    fig, axes = new_figure(10.4, 4.6, 1, 2)
    series = list(dict.fromkeys(tts["series"]))
    panels = (("time_to_target", "s", "time to target"), ("energy_to_target", "J", "energy to target"))
    for ax, (stem, unit, what) in zip(axes[0], panels):
        suffix = unit.lower()   # column names end in _s and _j
        med, lo, hi = f"{stem}_median_{suffix}", f"{stem}_min_{suffix}", f"{stem}_max_{suffix}"
        expected = f"expected_{stem}_{suffix}"
        if not done[med].map(lambda v: math.isfinite(float(v))).any():
            # An empty log axis reads as "zero"; say instead why there is nothing to draw.
            ax.text(0.5, 0.5, f"{what}: not measured\n(no energy counters on this machine)",
                    transform=ax.transAxes, ha="center", va="center", fontsize=10, color="0.35")
            ax.set_xticks([])
            ax.set_yticks([])
            continue
        div, shown = unit_scale(list(done[med].astype(float)) + list(done[hi].astype(float)), unit)
        for i, s in enumerate(series):
            g = tts[tts["series"] == s].sort_values("world_size_ranks")
            ok = g[g[med].map(lambda v: math.isfinite(float(v)))]
            colour, marker = PALETTE[i % len(PALETTE)], MARKERS[i % len(MARKERS)]
            if len(ok):
                y = ok[med].astype(float).to_numpy() / div
                err = np.vstack([y - ok[lo].astype(float).to_numpy() / div, ok[hi].astype(float).to_numpy() / div - y])
                ax.errorbar(ok["world_size_ranks"], y, yerr=np.clip(err, 0, None), color=colour, marker=marker,
                            capsize=3, label=s)
            exp = g[g[expected].map(lambda v: math.isfinite(float(v)))]
            if len(exp):
                ax.plot(exp["world_size_ranks"], exp[expected].astype(float) / div, color=colour, linestyle="--",
                        linewidth=1.2, label=f"{s}: throughput-only expectation")
        Plotter.log2_axis(ax, tts["world_size_ranks"])
        ax.set_yscale("log")
        tidy_log_axis(ax)
        ax.set_ylabel(f"{what} [{shown}]")
    # One column: series labels are long, and two side by side ran off the figure.
    fig.legend(*axes[0, 0].get_legend_handles_labels(), loc="outside lower center", ncols=1, fontsize=8)
    missing = tts[~tts.index.isin(done.index)]
    absent = "; ".join(f"N={int(r['world_size_ranks'])} of {r['series']} (best {float(r['best_value']):.4g})"
                       for _, r in missing.iterrows())
    target = tts["target"].iloc[0]
    caption = (f"Training time (epoch clocks only) and energy until {target} was first met, interpolated between "
               "the two evaluations that bracket the crossing; markers: median over repeats, bars: fastest to "
               "slowest run. Dashed: the throughput-only expectation, N0's time or energy scaled by the measured "
               "showers/s or J per shower, i.e. what N would take if it needed no more showers than N0."
               + (f" Never reached, not drawn: {absent}." if absent else ""))
    return fig, caption


def plot_to_target(tts: pd.DataFrame, out_dir: str | Path, skipped: dict[str, str] | None = None) -> PlotFile | None:
    made = to_target_figure(tts) if len(tts) else None
    if made is None:
        if skipped is not None:
            skipped[TO_TARGET_NAME] = "no run met the quality target"
        return None
    fig, caption = made
    png, pdf = save_figure(fig, Path(out_dir) / TO_TARGET_NAME)
    return PlotFile(TO_TARGET_NAME, "Time and energy to the quality target vs ranks", caption, png, pdf)
