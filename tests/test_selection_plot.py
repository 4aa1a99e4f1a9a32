"""bologan.evaluate's selection plot: the curve drawn is the metric that selects, starred at its minimum."""
from __future__ import annotations

import math

from bologan.metrics import SELECTION_METRIC, best_iteration
from bologan.selection_plot import plot_chi2_ndf, selection_curve, selection_figure
from common.rundir import EvalRecord

INF = math.inf


def _records() -> list[EvalRecord]:
    # (iteration, BoloGAN chi2/NDF, chi2/NDF with overflow): BoloGAN's minimum (iteration 20)
    # is not the selected checkpoint, and at the selected one (40) BoloGAN's value is inf.
    rows = [(10, INF, 9.0), (20, 1.5, 6.0), (30, 3.0, 4.0), (40, INF, 2.5), (50, 4.0, 5.0)]
    return [EvalRecord(iteration=it, chi2=0.0, ndf=1, chi2_ndf=b, w1=1.0, ks=0.1, chi2_ndf_overflow=o)
            for it, b, o in rows]


def test_star_sits_at_the_minimum_of_the_selecting_curve():
    recs = _records()
    best = best_iteration(recs)
    assert best == 40 and SELECTION_METRIC == "chi2_ndf_overflow"
    curve = selection_curve(recs, best)
    assert curve.metric == SELECTION_METRIC and len(curve.points) == 5
    assert curve.best == (40, 2.5) == min(curve.points, key=lambda p: p[1])


def test_the_figure_draws_the_star_where_bologans_value_is_infinite(tmp_path):
    recs = _records()
    fig = selection_figure(recs, best_iteration(recs))
    lines = fig.axes[0].get_lines()
    star = next(line for line in lines if line.get_marker() == "*")
    assert list(star.get_xdata()) == [40] and list(star.get_ydata()) == [2.5]
    main = next(line for line in lines if "selects the best" in line.get_label())
    assert min(main.get_ydata()) == 2.5
    # BoloGAN's chi2/NDF is drawn beside it where finite (iterations 20, 30, 50).
    dashed = next(line for line in lines if line.get_linestyle() == "--")
    assert list(dashed.get_xdata()) == [20, 30, 50]
    paths = plot_chi2_ndf(recs, 40, tmp_path / "chi2_ndf")
    assert [p.name for p in paths] == ["chi2_ndf.png", "chi2_ndf.pdf"]


def test_no_star_without_a_finite_selecting_value():
    recs = [EvalRecord(iteration=it, chi2=0.0, ndf=1, chi2_ndf=INF, w1=1.0, ks=0.1) for it in (10, 20)]
    fig = selection_figure(recs, 20)
    assert not [line for line in fig.axes[0].get_lines() if line.get_marker() == "*"]
    assert "no checkpoint has a finite" in fig.axes[0].texts[0].get_text()
