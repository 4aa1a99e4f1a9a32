"""analysis.quality.time_to_target and analysis.quality.quality_plots on run directories with known answers."""
from __future__ import annotations

import math
import sys
from pathlib import Path

import pandas as pd
import pytest

sys.path.insert(0, str(Path(__file__).parent))
from test_analysis_support import make_run  # noqa: E402

from analysis.quality import quality_plots  # noqa: E402
from analysis.load import find_inputs, group_series, load_runs  # noqa: E402
from analysis.summary import summarise_series, summary_table  # noqa: E402
from analysis.quality.time_to_target import (RUN_COLUMN_NAMES, SUMMARY_COLUMN_NAMES, crossing_fraction,  # noqa: E402
                                     interpretation, time_to_target_summary, time_to_target_table)
from common.rundir import EvalRecord, RunWriter, load_run  # noqa: E402
from common.target import parse_target  # noqa: E402

CHI2_5 = parse_target("chi2_ndf<=5")


def _eval(iteration: int, value: float, time_s: float, showers: int, energy_j: float,
          source: str = "measured", **kw) -> EvalRecord:
    return EvalRecord(iteration=iteration, chi2=value * 10, ndf=10, chi2_ndf=value, w1=0.1, ks=0.1,
                      epoch=iteration // 100, train_time_s=time_s, showers=showers, energy_j=energy_j,
                      energy_source=source, eval_time_s=1.5, **kw)


def _with_evals(path: Path, records: list[EvalRecord]) -> Path:
    RunWriter.resume(path).add_eval(records)
    return path


def _row(table: pd.DataFrame, run_id: str) -> pd.Series:
    hit = table[table["run_id"] == run_id]
    assert len(hit) == 1
    return hit.iloc[0]


def test_crossing_between_two_evaluations_is_interpolated_in_log_of_the_metric(tmp_path):
    run = _with_evals(make_run(tmp_path, "a"), [
        _eval(100, 20.0, 10.0, 1000, 100.0),
        _eval(200, 8.0, 20.0, 2000, 200.0),
        _eval(300, 2.0, 30.0, 3000, 300.0),
        _eval(400, 6.0, 40.0, 4000, 400.0),     # worse again later: the first crossing counts
    ])
    row = _row(time_to_target_table([load_run(run)], CHI2_5), "a")
    # By hand: the target 5 lies between 8 (iteration 200) and 2 (iteration 300);
    # f = (ln 8 - ln 5) / (ln 8 - ln 2) = ln 1.6 / ln 4 = 0.470004 / 1.386294 = 0.339036.
    assert row["reached"] and row["interpolated"]
    assert (row["iteration_before"], row["iteration_at"]) == (200, 300)
    assert (row["value_before"], row["value_at"]) == (8.0, 2.0)
    assert row["iterations_to_target"] == pytest.approx(233.9036, abs=1e-3)
    assert row["time_to_target_s"] == pytest.approx(23.39036, abs=1e-4)
    assert row["showers_to_target_count"] == pytest.approx(2339.036, abs=1e-2)
    assert row["energy_to_target_j"] == pytest.approx(233.9036, abs=1e-3)
    assert row["energy_source"] == "measured"
    assert row["eval_time_to_target_s"] == pytest.approx(4.5)      # three evaluations of 1.5 s
    assert row["best_value"] == 2.0 and row["best_iteration"] == 300
    assert "interpolated (log in chi2_ndf) between iterations 200 and 300" in row["notes"]
    assert tuple(time_to_target_table([load_run(run)], CHI2_5).columns) == RUN_COLUMN_NAMES


def test_crossing_fraction_linear_when_a_value_is_zero_and_none_from_infinity():
    # out_of_range_fraction 0.5 -> 0.0 with the target 0.1: linear, f = (0.5 - 0.1) / 0.5 = 0.8
    assert crossing_fraction(0.5, 0.0, 0.1) == (pytest.approx(0.8), "linear")
    assert crossing_fraction(math.inf, 3.0, 5.0) == (1.0, "none")
    assert crossing_fraction(5.0, 5.0, 5.0) == (1.0, "log")


def test_infinite_value_before_the_crossing_gives_the_meeting_evaluation_as_an_upper_bound(tmp_path):
    run = _with_evals(make_run(tmp_path, "b"), [_eval(100, math.inf, 10.0, 1000, 100.0),
                                                _eval(200, 3.0, 20.0, 2000, 200.0)])
    row = _row(time_to_target_table([load_run(run)], CHI2_5), "b")
    assert row["reached"] and not row["interpolated"]
    assert row["time_to_target_s"] == 20.0 and row["iterations_to_target"] == 200
    assert "not finite" in row["notes"] and "upper bound" in row["notes"]


def test_target_met_at_the_first_evaluation(tmp_path):
    run = _with_evals(make_run(tmp_path, "c"), [_eval(100, 4.0, 10.0, 1000, 100.0)])
    row = _row(time_to_target_table([load_run(run)], CHI2_5), "c")
    assert row["reached"] and not row["interpolated"] and row["time_to_target_s"] == 10.0
    assert math.isnan(row["iteration_before"]) and "first evaluation" in row["notes"]


def test_a_run_that_never_reaches_the_target_is_kept_with_its_best_value(tmp_path):
    never = _with_evals(make_run(tmp_path, "never"), [_eval(100, 30.0, 10.0, 1000, 100.0),
                                                      _eval(200, 7.5, 20.0, 2000, 200.0),
                                                      _eval(300, 9.0, 30.0, 3000, 300.0)])
    bare = make_run(tmp_path, "bare")                    # no eval.parquet at all
    table = time_to_target_table([load_run(never), load_run(bare)], CHI2_5)
    assert len(table) == 2
    row = _row(table, "never")
    assert not row["reached"] and row["best_value"] == 7.5 and row["best_iteration"] == 200
    assert math.isnan(row["time_to_target_s"]) and math.isnan(row["energy_to_target_j"])
    assert "not reached: best chi2_ndf 7.5 at iteration 200" in row["notes"]
    row = _row(table, "bare")
    assert not row["reached"] and row["evaluations_count"] == 0 and "no evaluation" in row["notes"]


def test_resumed_run_with_a_re_evaluated_iteration_counts_it_once(tmp_path):
    run = make_run(tmp_path, "r")
    RunWriter.resume(run).add_eval([_eval(100, 9.0, 10.0, 1000, 100.0), _eval(200, 6.0, 20.0, 2000, 200.0)])
    RunWriter.resume(run).add_eval([_eval(200, 6.0, 20.5, 2000, 205.0), _eval(300, 4.0, 30.5, 3000, 305.0)])
    row = _row(time_to_target_table([load_run(run)], CHI2_5), "r")
    assert row["evaluations_count"] == 3 and (row["iteration_before"], row["iteration_at"]) == (200, 300)


def _strong_pair(tmp_path: Path) -> list:
    """N=1 reaches chi2_ndf<=5 at exactly 100 s, 1000 J, 100,000 showers (no interpolation);
    N=2 twice, at 50 s and 70 s (median 60 s), 600 J and 800 J, 120,000 showers; a third N=2
    repeat never gets there. Epoch times 10 s at N=1 and 5.5 s at N=2 (throughput efficiency
    10 / (2 x 5.5) = 0.909)."""
    make_run(tmp_path, "n1", n=1, time_fn=10.0)
    for rid in ("n2a", "n2b", "n2c"):
        make_run(tmp_path, rid, n=2, time_fn=5.5)
    _with_evals(tmp_path / "n1", [_eval(100, 9.0, 50.0, 50_000, 500.0), _eval(200, 5.0, 100.0, 100_000, 1000.0)])
    _with_evals(tmp_path / "n2a", [_eval(100, 7.0, 30.0, 60_000, 300.0), _eval(200, 5.0, 50.0, 120_000, 600.0)])
    _with_evals(tmp_path / "n2b", [_eval(100, 7.0, 40.0, 60_000, 400.0), _eval(200, 5.0, 70.0, 120_000, 800.0)])
    _with_evals(tmp_path / "n2c", [_eval(100, 7.0, 40.0, 60_000, 400.0), _eval(200, 6.0, 70.0, 120_000, 800.0)])
    run_dirs, _ = find_inputs([tmp_path])
    return load_runs(run_dirs)


def test_time_to_solution_efficiency_against_n1_next_to_throughput_efficiency(tmp_path):
    runs = _strong_pair(tmp_path)
    summary = summary_table([summarise_series(s) for s in group_series(runs)])
    per_run = time_to_target_table(runs, CHI2_5)
    tts = time_to_target_summary(per_run, summary)
    assert tuple(tts.columns) == SUMMARY_COLUMN_NAMES
    one, two = tts.iloc[0], tts.iloc[1]
    assert (one["world_size_ranks"], two["world_size_ranks"]) == (1, 2)
    assert one["tts_speedup_ratio"] == 1.0 and one["tts_efficiency_ratio"] == 1.0
    # pooled repeats at N=2: two of three reached, median 60 s (50, 70), energy median 700 J
    assert (two["runs_count"], two["reached_count"]) == (3, 2)
    assert two["time_to_target_median_s"] == 60.0
    assert (two["time_to_target_min_s"], two["time_to_target_max_s"]) == (50.0, 70.0)
    assert two["energy_to_target_median_j"] == 700.0
    assert "1 of 3 runs did not reach chi2_ndf<=5" in two["notes"]
    assert two["best_value"] == 5.0
    # S = 1 x 100 / 60 = 1.6667, efficiency S / 2 = 0.8333; throughput efficiency 10 / (2 x 5.5) = 0.9091
    assert two["tts_speedup_ratio"] == pytest.approx(100 / 60)
    assert two["tts_efficiency_ratio"] == pytest.approx(100 / 120)
    assert two["throughput_efficiency_ratio"] == pytest.approx(10 / 11)
    # the spread of S over the pairs (100 s at N=1) x (50 s, 70 s at N=2); at N0 itself S is 1 exactly
    assert (two["tts_speedup_min_ratio"], two["tts_speedup_max_ratio"]) == pytest.approx((100 / 70, 100 / 50))
    assert (one["tts_speedup_min_ratio"], one["tts_speedup_max_ratio"]) == (1.0, 1.0)
    # the throughput speedup 10 s / 5.5 s per epoch, inside its bootstrap interval
    assert two["throughput_speedup_ratio"] == pytest.approx(10 / 5.5)
    assert two["throughput_speedup_ci_low_ratio"] <= two["throughput_speedup_ratio"] <= two["throughput_speedup_ci_high_ratio"]
    assert two["showers_to_target_ratio"] == pytest.approx(1.2)
    assert two["energy_to_target_ratio"] == pytest.approx(0.7)
    # throughput-only: showers/s 12,800/10 s at N=1 and 12,800/5.5 s at N=2 -> 100 s x 5.5/10 = 55 s;
    # J per shower: (100+50+10) W x 10 s = 1600 J at N=1, (2x100 + 50 + 10) W x 5.5 s = 1430 J at N=2,
    # same showers per epoch -> 1000 J x 1430/1600 = 893.75 J
    assert two["expected_time_to_target_s"] == pytest.approx(55.0)
    assert two["expected_energy_to_target_j"] == pytest.approx(893.75)
    line = interpretation(two)
    assert line.startswith("N=2: throughput efficiency 0.91, time-to-solution efficiency 0.83: 1.20x the showers")
    assert interpretation(one) == ""


def test_no_single_rank_success_moves_the_baseline_and_says_so(tmp_path):
    make_run(tmp_path, "n1", n=1, time_fn=10.0)
    make_run(tmp_path, "n2", n=2, time_fn=5.5)
    _with_evals(tmp_path / "n1", [_eval(100, 9.0, 50.0, 50_000, 500.0)])
    _with_evals(tmp_path / "n2", [_eval(100, 4.0, 30.0, 60_000, 300.0)])
    runs = load_runs(find_inputs([tmp_path])[0])
    tts = time_to_target_summary(time_to_target_table(runs, CHI2_5))
    one, two = tts.iloc[0], tts.iloc[1]
    assert one["reached_count"] == 0 and one["best_value"] == 9.0 and math.isnan(one["tts_efficiency_ratio"])
    assert two["baseline_world_size_ranks"] == 2 and two["tts_efficiency_ratio"] == 1.0
    assert "baseline N0 = 2" in two["notes"]
    assert math.isnan(two["throughput_efficiency_ratio"])     # no summary table given


def test_quality_plots(tmp_path):
    runs = _strong_pair(tmp_path / "runs")
    fig, caption = quality_plots.quality_curves_figure(runs, CHI2_5)
    left, right = fig.axes[0], fig.axes[1]
    assert left.get_yscale() == "log"
    # one line per run (four runs) and the target line, on both panels
    assert len(left.get_lines()) == 5 and len(right.get_lines()) == 5
    assert list(right.get_lines()[0].get_xdata()) == [50_000, 100_000]
    assert "chi2_ndf<=5" in caption
    summary = summary_table([summarise_series(s) for s in group_series(runs)])
    tts = time_to_target_summary(time_to_target_table(runs, CHI2_5), summary)
    fig, caption = quality_plots.to_target_figure(tts)
    dashed = [ln for ln in fig.axes[0].get_lines() if ln.get_linestyle() == "--"]
    assert len(dashed) == 1 and list(dashed[0].get_ydata()) == pytest.approx([100.0, 55.0])
    out = tmp_path / "plots"
    assert quality_plots.plot_quality_curves(runs, CHI2_5, out).png.stat().st_size > 0
    pf = quality_plots.plot_to_target(tts, out)
    assert pf.png.is_file() and pf.pdf.is_file()
    skipped: dict[str, str] = {}
    assert quality_plots.plot_to_target(tts.iloc[0:0], out, skipped) is None and "to_target" in "".join(skipped)
