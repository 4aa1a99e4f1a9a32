"""The training-time evaluation contract: EvalRecord's context columns, eval.parquet across
resumes, and the ``--target METRIC<=VALUE`` parser."""
from __future__ import annotations

import dataclasses
import math
import sys
import typing
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

sys.path.insert(0, str(Path(__file__).parent))
from test_analysis_support import make_run  # noqa: E402

from common.cli import Parser  # noqa: E402
from common.errors import EXIT_USER_ERROR, UserError, main_guard  # noqa: E402
from common.rundir import EVAL_CONTEXT_FIELDS, EVAL_SCHEMA, EvalRecord, RunWriter, load_run  # noqa: E402
from common.target import Target, parse_target, target_argument  # noqa: E402
from common.vocab import EVAL_FILE, EVAL_TARGET_METRICS, SOURCE_MEASURED  # noqa: E402


# ------------------------------------------------------------------ parsing

@pytest.mark.parametrize("text, metric, value", [
    ("chi2_ndf<=5", "chi2_ndf", 5.0),
    ("fpd<=0.05", "fpd", 0.05),
    ("  chi2_ndf_overflow <= 2.5e1 ", "chi2_ndf_overflow", 25.0),
])
def test_parse_target(text, metric, value):
    t = parse_target(text)
    assert (t.metric, t.comparison, t.value) == (metric, "<=", value)
    assert parse_target(t.text) == t


@pytest.mark.parametrize("text, says", [
    ("chi2_ndf<5", "expected METRIC<=VALUE"),
    ("chi2_ndf=5", "expected METRIC<=VALUE"),
    ("<=5", "expected METRIC<=VALUE"),
    ("", "expected METRIC<=VALUE"),
    ("chi2_ndf<=five", "'five' is not a number"),
    ("fpd<=inf", "finite"),
    ("fpd<=nan", "finite"),
    ("chi2<=5", "unknown metric 'chi2'"),
    ("accuracy>=0.9", "unknown metric 'accuracy'"),
    ("chi2_ndf>=5", "lower chi2_ndf is better, write chi2_ndf<=5"),
])
def test_bad_target_is_one_line_naming_the_flag(text, says):
    with pytest.raises(UserError) as err:
        parse_target(text)
    msg = str(err.value)
    assert "\n" not in msg and msg.startswith("--target ") and says in msg
    if "expected" in says or "unknown" in says:
        assert all(m in msg for m in EVAL_TARGET_METRICS)


def test_bad_target_on_a_command_line_exits_2_with_one_line(capsys):
    @main_guard
    def main(argv):
        parser = Parser("prog", "Test.")
        parser.add_argument("--target", type=target_argument())
        parser.parse_args(argv)
        return 0

    assert main(["--target", "fpd<=0.05"]) == 0
    assert main(["--target", "nonsense<=1"]) == EXIT_USER_ERROR
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and err.startswith("error: --target 'nonsense<=1': unknown metric")


def test_target_metrics_are_score_columns_of_eval_parquet():
    hints = typing.get_type_hints(EvalRecord)
    for name in EVAL_TARGET_METRICS:
        assert hints[name] is float, name
        assert name not in EVAL_CONTEXT_FIELDS


def test_met_and_best():
    t = parse_target("chi2_ndf<=5")
    assert t.met(5.0) and t.met(0.1)
    assert not t.met(5.0001) and not t.met(math.inf) and not t.met(math.nan)
    assert t.best([9.0, math.nan, 4.0, 7.0]) == 4.0
    assert math.isnan(t.best([math.nan]))
    up = Target("x", ">=", 0.9)   # a higher-is-better score, should one be added
    assert up.met(0.95) and not up.met(0.5) and up.best([0.2, 0.7]) == 0.7


def test_target_json_round_trip_and_errors():
    t = parse_target("fpd<=0.05")
    assert Target.from_json(t.to_json()) == t
    assert t.to_json()["text"] == "fpd<=0.05"
    with pytest.raises(UserError, match="run.json target: missing key 'value'"):
        Target.from_json({"metric": "fpd", "comparison": "<="}, "run.json target")


# ------------------------------------------------------------------ eval.parquet

def test_offline_eval_record_defaults():
    r = EvalRecord(iteration=100, chi2=1.0, ndf=2, chi2_ndf=0.5, w1=0.1, ks=0.1)
    assert r.epoch == -1 and r.showers == -1 and r.member == 0
    assert math.isnan(r.train_time_s) and math.isnan(r.energy_j) and math.isnan(r.eval_time_s)
    assert r.energy_source == "unavailable"
    for name in EVAL_CONTEXT_FIELDS:
        assert name in EVAL_SCHEMA.names


def _rec(iteration: int, chi2_ndf: float, **kw) -> EvalRecord:
    return EvalRecord(iteration=iteration, chi2=chi2_ndf * 10, ndf=10, chi2_ndf=chi2_ndf, w1=0.1, ks=0.1, **kw)


def test_add_eval_survives_resume_without_duplicates(tmp_path):
    run = make_run(tmp_path, "r")
    w = RunWriter.resume(run)
    w.add_eval([_rec(100, 9.0, epoch=1, train_time_s=10.0, showers=5000, energy_j=300.0,
                     energy_source=SOURCE_MEASURED, eval_time_s=2.0)])
    w.add_eval([_rec(200, 6.0, epoch=2, train_time_s=20.0, showers=10000)])
    # the run is killed after evaluating iteration 200, resumes from that checkpoint and evaluates it again
    again = RunWriter.resume(run)
    assert [r.iteration for r in again.evals] == [100, 200]
    again.add_eval([_rec(200, 5.5, epoch=2, train_time_s=20.5, showers=10000)])
    again.add_eval([_rec(300, 4.0, epoch=3, train_time_s=30.0, showers=15000)])
    table = load_run(run).eval
    assert list(table["iteration"]) == [100, 200, 300]
    assert list(table["chi2_ndf"]) == [9.0, 5.5, 4.0]
    assert table["train_time_s"].iloc[0] == 10.0 and table["energy_source"].iloc[0] == SOURCE_MEASURED
    assert table["eval_time_s"].iloc[0] == 2.0


def test_eval_file_from_before_the_context_columns_still_loads(tmp_path):
    run = make_run(tmp_path, "old")
    old = pa.schema([f for f in EVAL_SCHEMA if f.name not in EVAL_CONTEXT_FIELDS])
    row = {k: v for k, v in dataclasses.asdict(_rec(100, 3.0)).items() if k not in EVAL_CONTEXT_FIELDS}
    pq.write_table(pa.Table.from_pylist([row], schema=old), run / EVAL_FILE)
    table = load_run(run).eval
    assert list(table.columns) == EVAL_SCHEMA.names
    assert table["epoch"].iloc[0] == -1 and math.isnan(table["train_time_s"].iloc[0])
    assert table["chi2_ndf"].iloc[0] == 3.0
    # a score column is not optional: a file without it is refused, naming it
    pq.write_table(pa.Table.from_pylist([row], schema=old).drop(["chi2_ndf"]), run / EVAL_FILE)
    with pytest.raises(UserError, match="missing columns chi2_ndf"):
        load_run(run)
