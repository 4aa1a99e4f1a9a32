"""python -m bologan.bench learning-curve: one JSON line per scored iteration, with the figures
and the setting that produced them; bad flags are one line, exit 2."""
from __future__ import annotations

import json
import math

import pytest

from bologan import bench
from conftest import run_module


def test_scores_at_the_iterations_asked_for():
    # Its own process: the check sets TensorFlow's thread pools, which a process that already
    # ran TensorFlow (an earlier test) can no longer change.
    res = run_module("bologan.bench", ["learning-curve", "--iterations", "4", "--at", "2,4", "--events", "1500",
                                       "--reference-events", "600", "--momenta", "2^12..2^16",
                                       "--generator-norm", "batch_statistics", "--json"])
    assert res.returncode == 0, res.stderr
    rows = [json.loads(line) for line in res.stdout.strip().splitlines()]
    assert [r["iteration"] for r in rows] == [2, 4]
    for r in rows:
        assert r["w1_gev"] > 0 and 0 <= r["out_of_range_fraction"] <= 1 and r["fpd_x1e3"] > 0 and r["fpd_err_x1e3"] >= 0 and r["frechet_hlf_std"] > 0
        assert r["chi2_ndf"] > 0 or math.isinf(r["chi2_ndf"])
        assert (r["generator"], r["generator_norm"], r["momenta"]) == ("bn_swish", "batch_statistics", "4096..65536")
        assert r["events"] == 1500 and r["reference_events"] == 600 and r["threads"] == 1
    assert rows[1]["train_time_s"] > rows[0]["train_time_s"]


@pytest.mark.parametrize("argv, says", [
    (["--iterations", "10", "--at", "20"], "--at: iterations must lie in 1..10"),
    (["--momenta", "4..2"], "--momenta"),
    (["--events", "0"], "must be >= 1"),
])
def test_bad_flags_are_one_line(capsys, argv, says):
    assert bench.main(["learning-curve", *argv]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and says in err[0], err
