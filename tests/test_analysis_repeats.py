"""Repeats pooled per point, confidence intervals in the summary and plots, fits that need a spare point."""
from __future__ import annotations

import math
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

sys.path.insert(0, str(Path(__file__).parent))
from test_analysis_support import make_run  # noqa: E402

from analysis.pipeline import analyse, build_document, fits_table  # noqa: E402
from analysis.plots import Plotter  # noqa: E402
from analysis.summary import COLUMN_NAMES  # noqa: E402
from bologan.metrics import SELECTION_METRIC  # noqa: E402

# Used epochs (warm-up epoch 0 left out) of three repeats of the weak N = 2 point: the levels
# differ from repeat to repeat, as on a machine that drifts during the study.
REPEAT_TIMES = {1: (11.0, 11.2, 11.4), 2: (12.0, 12.1, 12.2), 3: (13.0, 13.3, 13.6)}


def _weak_study(root: Path) -> Path:
    make_run(root, "horovod-weak-n1", n=1, mode="weak", time_fn=lambda e, r: (10.0, 9.9, 10.0, 10.1)[e])
    for k, times in REPEAT_TIMES.items():
        make_run(root, "horovod-weak-n2" + (f"-r{k}" if k > 1 else ""), n=2, mode="weak",
                 time_fn=lambda e, r, t=times: (99.0, *t)[e])
    return root


def _row(a, mode: str, n: int):
    s = a.summary
    return s[(s["mode"] == mode) & (s["world_size_ranks"] == n)].iloc[0]


def test_repeats_at_one_n_are_pooled_with_an_interval(tmp_path):
    a = analyse([_weak_study(tmp_path)])
    assert len(a.summary) == 2
    r2 = _row(a, "weak", 2)
    pooled = [t for times in REPEAT_TIMES.values() for t in times]
    assert (r2.runs_count, r2.epochs_used_count) == (3, 9)
    assert r2.epoch_time_median_s == pytest.approx(np.median(pooled))
    assert r2.weak_efficiency_ratio == pytest.approx(10.0 / np.median(pooled))
    assert r2.weak_efficiency_ci_low_ratio < r2.weak_efficiency_ratio < r2.weak_efficiency_ci_high_ratio
    # The interval is the speedup's (N T0/TN) divided by N.
    assert r2.speedup_ci_low_ratio == pytest.approx(2 * r2.weak_efficiency_ci_low_ratio)
    assert r2.speedup_ci_high_ratio == pytest.approx(2 * r2.weak_efficiency_ci_high_ratio)
    # Resampling the repeats covers the spread between them: at least from the middle repeat's
    # level (12.1 s) to within the outer ones'.
    assert r2.weak_efficiency_ci_low_ratio < 10.0 / 12.5 and r2.weak_efficiency_ci_high_ratio > 10.0 / 11.8
    assert math.isnan(r2.strong_efficiency_ci_low_ratio)
    # The baseline's efficiency is 1 by definition: no spread.
    r1 = _row(a, "weak", 1)
    assert r1.weak_efficiency_ci_low_ratio == r1.weak_efficiency_ci_high_ratio == 1.0
    # Reproducible: the same run directories give the same interval.
    again = _row(analyse([tmp_path]), "weak", 2)
    assert again.weak_efficiency_ci_low_ratio == r2.weak_efficiency_ci_low_ratio


def test_constant_epochs_give_a_point_interval(tmp_path):
    for n, t in {1: 100.0, 2: 55.0}.items():
        make_run(tmp_path, f"strong-n{n}", n=n, time_fn=t)
    r2 = _row(analyse([tmp_path]), "strong", 2)
    assert r2.strong_efficiency_ci_low_ratio == pytest.approx(r2.strong_efficiency_ratio)
    assert r2.strong_efficiency_ci_high_ratio == pytest.approx(r2.strong_efficiency_ratio)
    assert r2.speedup_ci_low_ratio == pytest.approx(100.0 / 55.0)


def test_summary_has_no_training_length_columns():
    # scaling.run never runs train.iterations: columns derived from it would be fiction.
    for name in ("epochs_to_solution_count", "time_to_solution_s", "energy_to_solution_j"):
        assert name not in COLUMN_NAMES


def test_two_world_sizes_are_not_enough_for_a_fit(tmp_path):
    a = analyse([_weak_study(tmp_path)])
    res = a.results[0]
    assert res.fit is None and res.law == "gustafson" and "not enough points" in res.fit_note
    fits = fits_table(a.results)
    assert len(fits) == 1 and math.isnan(fits.iloc[0]["parallel_fraction"])
    assert "not enough points" in fits.iloc[0]["note"]
    text = build_document(a).markdown()
    scaling = text.split("## Scaling", 1)[1].split("\n## ", 1)[0]
    assert "| gustafson | not enough points |" in scaling
    # A third world size makes it a fit.
    make_run(tmp_path, "horovod-weak-n4", n=4, mode="weak", time_fn=12.5)
    res = analyse([tmp_path]).results[0]
    assert res.fit is not None and res.fit.points == 3 and res.fit_note == ""


def test_report_writes_numbers_for_people(tmp_path):
    a = analyse([_weak_study(tmp_path)])
    text = build_document(a).markdown()
    key = text.split("## Key results", 1)[1].split("\n## ", 1)[0]
    eff = _row(a, "weak", 2)
    assert f"weak efficiency {eff.weak_efficiency_ratio:.2f} at N = 2 (95 % CI [" in key
    assert "3 runs, 9 epochs" in key and "e+0" not in text and "e-0" not in key
    assert "1,000,000 showers" in text
    assert "| 2 | 1 | 3 | 9 | 12.1 s [" in text       # N, nodes, runs, epochs used, T(N) with its unit


def _captured(plotter: Plotter, monkeypatch) -> list:
    figs: list = []
    monkeypatch.setattr(plotter, "_save", lambda fig, name, title, caption: figs.append((fig, caption)) or name)
    return figs


def test_efficiency_error_bars_are_the_confidence_interval(tmp_path, monkeypatch):
    a = analyse([_weak_study(tmp_path)])
    plotter = Plotter(tmp_path / "plots", a.results)
    figs = _captured(plotter, monkeypatch)
    plotter.plot_efficiency()
    fig, caption = figs[0]
    weak_ax = fig.axes[1]
    bars = weak_ax.containers[0]
    segments = bars.lines[2][0].get_segments()
    r2 = _row(a, "weak", 2)
    (x, lo), (_, hi) = segments[1]
    assert x == 2 and lo == pytest.approx(r2.weak_efficiency_ci_low_ratio)
    assert hi == pytest.approx(r2.weak_efficiency_ci_high_ratio)
    assert "bootstrap confidence interval" in caption


def test_pareto_plot_draws_one_front_per_mode(tmp_path, monkeypatch):
    for n, t in {1: 100.0, 2: 55.0}.items():
        make_run(tmp_path, f"strong-n{n}", n=n, time_fn=t)
    for n, t in {1: 10.0, 2: 10.5}.items():
        make_run(tmp_path, f"weak-n{n}", n=n, mode="weak", time_fn=t)
    a = analyse([tmp_path])
    plotter = Plotter(tmp_path / "plots", a.results)
    figs = _captured(plotter, monkeypatch)
    plotter.plot_pareto(a.pareto)
    fig, caption = figs[0]
    fronts = [line.get_label() for line in fig.axes[0].lines if line.get_label().startswith("Pareto front")]
    assert sorted(fronts) == ["Pareto front, strong photons", "Pareto front, weak photons"]
    assert "1,000,000 showers processed" in caption and "iterations" not in caption


def test_chi2_plot_marks_the_selection_metric(tmp_path, monkeypatch):
    plotter = Plotter(tmp_path / "plots", [])
    figs = _captured(plotter, monkeypatch)
    # The BoloGAN rule prefers iteration 20, the selection metric iteration 30.
    evals = pd.DataFrame({"iteration": [10, 20, 30], "chi2_ndf": [3.0, 1.0, 2.0],
                          SELECTION_METRIC: [3.0, 2.5, 1.5]})
    plotter.plot_chi2([("run", evals)])
    fig, caption = figs[0]
    star = next(c for c in fig.axes[0].collections if len(c.get_offsets()) == 1)
    assert tuple(star.get_offsets()[0]) == (30.0, 1.5)
    assert f"`{SELECTION_METRIC}`" in caption
    # Runs evaluated before the selection metric existed: chi2_ndf, its lowest value.
    figs.clear()
    plotter.plot_chi2([("old", evals.assign(**{SELECTION_METRIC: math.nan}))])
    star = next(c for c in figs[0][0].axes[0].collections if len(c.get_offsets()) == 1)
    assert tuple(star.get_offsets()[0]) == (20.0, 1.0)
