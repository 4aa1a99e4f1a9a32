"""The checkpoint-selection plot of ``bologan.evaluate``: the score that chooses the best
checkpoint against iteration, with the chosen one starred.

The curve is ``bologan.metrics.SELECTION_METRIC`` (chi2/NDF with under- and overflow bins), the
metric ``best_iteration`` minimises, so the star sits at the curve's minimum by construction
and is finite whenever any checkpoint was scored. BoloGAN's own chi2/NDF (+inf while some
momentum has no generated shower inside the reference range) is drawn beside it, dashed,
where it is finite.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from common.plotting import new_figure, save_figure
from bologan.metrics import SELECTION_METRIC

_LABELS = {
    "chi2_ndf": r"BoloGAN's $\chi^2$/NDF",
    "chi2_ndf_overflow": r"$\chi^2$/NDF with under- and overflow bins",
}


@dataclass(frozen=True)
class SelectionCurve:
    """(iteration, value) points of one metric with a finite value, and the starred point."""
    metric: str
    points: list[tuple[int, float]]
    best: tuple[int, float] | None       # None when the best checkpoint's value is not finite


def selection_curve(records: Sequence[Any], best: int, metric: str = SELECTION_METRIC) -> SelectionCurve:
    """The finite points of ``metric`` over ``records`` (objects with ``iteration`` and the
    metric) and the point of iteration ``best``."""
    points = sorted((int(r.iteration), float(getattr(r, metric))) for r in records
                    if math.isfinite(float(getattr(r, metric))))
    star = next(((it, v) for it, v in points if it == best), None)
    return SelectionCurve(metric=metric, points=points, best=star)


def selection_figure(records: Sequence[Any], best: int, title: str = "", metric: str = SELECTION_METRIC) -> Any:
    """The figure: ``metric`` per checkpoint with ``best`` starred, BoloGAN's chi2/NDF dashed."""
    curve = selection_curve(records, best, metric)
    fig, axes = new_figure(6.4, 4.2)
    ax = axes[0, 0]
    label = _LABELS.get(metric, metric)
    if curve.points:
        x, y = zip(*curve.points, strict=True)
        ax.plot(x, y, marker="o", markersize=3, linewidth=1, label=f"{label} (selects the best)")
    if metric != "chi2_ndf":
        bologan = selection_curve(records, best, "chi2_ndf")
        if bologan.points:
            x, y = zip(*bologan.points, strict=True)
            ax.plot(x, y, linestyle="--", linewidth=1, color="tab:gray", label=_LABELS["chi2_ndf"] + " (where finite)")
    values = [v for _, v in curve.points if v > 0]
    if values and max(values) / min(values) >= 10:
        ax.set_yscale("log")
    if curve.best is not None:
        ax.plot([curve.best[0]], [curve.best[1]], marker="*", markersize=14, color="tab:red", linestyle="none",
                label=f"best: iteration {best}, {curve.best[1]:.3g}")
    ax.set_xlabel("iteration (n_disc critic steps + 1 generator step)")
    ax.set_ylabel(f"{label} of total shower energy")
    if not curve.points:
        ax.text(0.5, 0.5, f"no checkpoint has a finite {metric}", transform=ax.transAxes, ha="center", va="center")
    if title:
        ax.set_title(title)
    ax.grid(True, which="both", alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(loc="best", fontsize="small")
    return fig


def plot_chi2_ndf(records: Sequence[Any], best: int, stem: Path, title: str = "",
                  metric: str = SELECTION_METRIC) -> list[Path]:
    """``selection_figure`` written to ``stem``.png and .pdf."""
    return save_figure(selection_figure(records, best, title, metric), stem)
