"""FPD/KPD in eval.parquet and --target: the new columns, older files, and the switch that turns them off."""
from __future__ import annotations

import math

import pyarrow.parquet as pq
import pytest

from common.rundir import EVAL_FILE, EvalRecord, RunWriter, load_run
from common.target import parse_target
from scaling.eval_config import EvalConfig

META = {"schema_version": 1, "run_id": "t", "status": "completed", "config": {}, "engine": "horovod", "mode": "weak",
        "particle": "photons", "world_size": 1, "nodes": 1, "ranks_per_node": 1, "per_rank_batch": 16,
        "global_batch": 16, "launcher": "python", "versions": {}, "hardware": {}, "start_time": "", "restarts": []}


def _run(tmp_path) -> None:
    writer = RunWriter(tmp_path, META)
    writer.write_meta()
    writer.add_epochs([])
    writer.add_eval([EvalRecord(iteration=2, chi2=1.0, ndf=1, chi2_ndf=1.0, w1=1.0, ks=0.1, fpd=140.0, fpd_err=1.5,
                                kpd=11.0, kpd_err=1.0, frechet_hlf_std=3e5)])


def test_new_files_keep_fpd_kpd_and_the_standardised_distance(tmp_path):
    _run(tmp_path)
    row = load_run(tmp_path).eval.iloc[0]
    assert (row.fpd, row.fpd_err, row.kpd, row.kpd_err, row.frechet_hlf_std) == (140.0, 1.5, 11.0, 1.0, 3e5)


def test_an_older_files_fpd_is_read_as_the_standardised_distance(tmp_path):
    _run(tmp_path)
    table = pq.read_table(tmp_path / EVAL_FILE)
    pq.write_table(table.drop(["fpd_err", "kpd", "kpd_err", "frechet_hlf_std"]), tmp_path / EVAL_FILE)
    row = load_run(tmp_path).eval.iloc[0]
    assert row.frechet_hlf_std == 140.0 and math.isnan(row.fpd) and math.isnan(row.kpd)


def test_targets_on_fpd_and_kpd_read_as_published():
    assert parse_target("fpd<=150").metric == "fpd" and parse_target("kpd<=12").value == 12.0
    assert parse_target("frechet_hlf_std<=1e5").metric == "frechet_hlf_std"


def test_a_target_on_fpd_needs_fpd_kpd_on():
    EvalConfig(eval_every=5, target="fpd<=150").check()
    EvalConfig(eval_every=5, target="chi2_ndf<=5", fpd_kpd=False).check()
    with pytest.raises(ValueError, match="fpd_kpd = false"):
        EvalConfig(eval_every=5, target="kpd<=12", fpd_kpd=False).check()
