"""python -m analysis with runs that evaluated while training: the time-to-quality section."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).parent))
from test_analysis_support import make_run  # noqa: E402

from analysis.__main__ import main  # noqa: E402
from common.rundir import RUN_JSON, EvalRecord, RunWriter  # noqa: E402
from common.target import parse_target  # noqa: E402


def _evals(path: Path, values: list[float], step_s: float, showers_per_eval: int) -> None:
    records = [EvalRecord(iteration=100 * (k + 1), chi2=v * 10, ndf=10, chi2_ndf=v, w1=0.1, ks=0.1,
                          epoch=k + 1, train_time_s=step_s * (k + 1), showers=showers_per_eval * (k + 1),
                          energy_j=50.0 * (k + 1), energy_source="measured", eval_time_s=1.0)
               for k, v in enumerate(values)]
    RunWriter.resume(path).add_eval(records)


def _study(tmp_path: Path, target_in_run_json: bool = True) -> Path:
    root = tmp_path / "study"
    one = make_run(root, "n1", n=1, mode="weak", time_fn=10.0)
    two = make_run(root, "n2", n=2, mode="weak", time_fn=11.0)
    far = make_run(root, "n4", n=4, mode="weak", time_fn=12.0)
    # N=1 crosses chi2/NDF 5 between 20 and 4; N=2 needs more showers; N=4 never gets there.
    _evals(one, [50.0, 20.0, 4.0], step_s=10.0, showers_per_eval=1000)
    _evals(two, [50.0, 30.0, 10.0, 4.0], step_s=6.0, showers_per_eval=2000)
    _evals(far, [60.0, 40.0, 9.0], step_s=4.0, showers_per_eval=4000)
    if target_in_run_json:
        for path in (one, two, far):
            meta = json.loads((path / RUN_JSON).read_text())
            meta["target"] = parse_target("chi2_ndf<=5").to_json()
            (path / RUN_JSON).write_text(json.dumps(meta))
    return root


def test_report_has_the_time_to_target_section_tables_plots_and_key_results(tmp_path):
    out = tmp_path / "report"
    assert main([str(_study(tmp_path)), "--out", str(out), "--quiet"]) == 0
    text = (out / "report.md").read_text()
    assert "## Time to quality: chi2_ndf<=5" in text and "run.json `target`" in text
    assert (out / "plots" / "quality_curves.png").is_file() and (out / "plots" / "time_to_target.png").is_file()
    summary = pd.read_csv(out / "time_to_target.csv")
    assert list(summary.world_size_ranks) == [1, 2, 4]
    assert list(summary.reached_count) == [1, 1, 0]
    # The one that never got there is reported, with its best value, in the key results too.
    assert summary.best_value.iloc[2] == 9.0
    key = text.split("## Key results", 1)[1].split("\n## ", 1)[0]
    assert "N = 4: never reached chi2_ndf<=5" in key and "best chi2_ndf 9" in key
    assert "time-to-solution speedup" in key and "throughput speedup" in key
    # one run per N: the time-to-solution speedup's spread over the pairs is the value itself
    two_row = summary.iloc[1]
    from analysis.numbers import ratio

    s = ratio(two_row.tts_speedup_ratio)
    assert f"time-to-solution speedup {s} [{s}, {s}] against N0 = 1" in key
    assert "the showers of N=1 were needed" in key          # interpretation(row) of the N = 2 row
    runs = pd.read_csv(out / "time_to_target_runs.csv")
    assert runs.set_index("run_id").loc["n1", "interpolated"]


def test_the_target_flag_wins_over_run_json_and_works_without_it(tmp_path):
    out = tmp_path / "report"
    assert main([str(_study(tmp_path, target_in_run_json=False)), "--out", str(out), "--quiet",
                 "--target", "chi2_ndf<=45"]) == 0
    summary = pd.read_csv(out / "time_to_target.csv")
    assert set(summary.target) == {"chi2_ndf<=45"} and list(summary.reached_count) == [1, 1, 1]
    assert "`--target` of python -m analysis" in (out / "report.md").read_text()


def test_without_a_target_there_is_no_section(tmp_path):
    out = tmp_path / "report"
    assert main([str(_study(tmp_path, target_in_run_json=False)), "--out", str(out), "--quiet"]) == 0
    assert "Time to quality" not in (out / "report.md").read_text()
    assert not (out / "time_to_target.csv").exists()


def test_a_bad_target_flag_is_exit_2_with_one_line(tmp_path, capsys):
    assert main([str(_study(tmp_path)), "--out", str(tmp_path / "r"), "--target", "chi2_ndf=5"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--target" in err[0] and "METRIC<=VALUE" in err[0]


def test_energy_panel_without_counters_says_not_measured():
    import pandas as pd

    from analysis.quality.quality_plots import to_target_figure

    nan = float("nan")
    row = {"series": "s", "target": "w1<=5500", "best_value": 5000.0, "world_size_ranks": 1,
           "time_to_target_median_s": 500.0, "time_to_target_min_s": 490.0, "time_to_target_max_s": 510.0,
           "expected_time_to_target_s": 500.0, "energy_to_target_median_j": nan,
           "energy_to_target_min_j": nan, "energy_to_target_max_j": nan, "expected_energy_to_target_j": nan}
    tts = pd.DataFrame([row, {**row, "world_size_ranks": 2, "time_to_target_median_s": 300.0,
                              "expected_time_to_target_s": 250.0}])
    fig, _ = to_target_figure(tts)
    time_ax, energy_ax = fig.axes[:2]
    assert any("not measured" in t.get_text() for t in energy_ax.texts)
    assert not any("not measured" in t.get_text() for t in time_ax.texts) and time_ax.lines
