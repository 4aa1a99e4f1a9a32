"""``--comm-timing off``: Horovod's all-reduce without the in-graph timestamps (review item 12).

The timed mode makes every gradient exist before any all-reduce starts; the untimed mode lets
Horovod overlap the reduction with back-propagation, and then says that it did not time it.
"""
from __future__ import annotations

import math

from conftest import run_module
from common.rundir import load_run
from test_scaling_run import TINY


def test_untimed_mode_records_nan_comm_and_the_whole_step_as_compute(tmp_path):
    out = tmp_path / "run"
    res = run_module("scaling.run", [*TINY, "--out", str(out), "--epochs", "2", "--iterations-per-epoch", "3",
                                     "--batch-per-rank", "16", "--comm-timing", "off"], timeout=400)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "comm untimed" in res.stdout
    run = load_run(out)
    e = run.epochs
    assert all(math.isnan(v) for v in e.comm_s)
    assert (e.compute_s > 0).all() and (e.compute_s + e.data_wait_s <= e.time_s + 1e-9).all()
    assert run.meta["config"]["scaling"]["comm_timing"] == "off"


def test_untimed_mode_is_refused_for_tf_distribute(tmp_path):
    res = run_module("scaling.run", [*TINY, "--out", str(tmp_path / "run"), "--engine", "mirrored",
                                     "--comm-timing", "off"], timeout=120)
    assert res.returncode == 2
    assert res.stderr.strip().count("\n") == 0 and "horovod engine only" in res.stderr
    assert not (tmp_path / "run").exists()
