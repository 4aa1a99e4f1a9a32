"""Analysis of run directories built with known answers: medians, exclusions, energy, errors."""
from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from test_analysis_support import base_config, make_run, strong_study, write_bench  # noqa: E402

from analysis.__main__ import main  # noqa: E402
from analysis.load import group_series, load_runs  # noqa: E402
from analysis.pipeline import analyse  # noqa: E402
from analysis.summary import summarise_series  # noqa: E402
from common.errors import UserError  # noqa: E402


def _rows(paths) -> dict:
    a = analyse(paths)
    return {(r.mode, r.world_size_ranks): r for r in a.summary.itertuples()}, a


def test_strong_scaling_known_answer(tmp_path):
    rows, a = _rows([strong_study(tmp_path, {1: 100.0, 2: 55.0})])
    r2 = rows[("strong", 2)]
    assert r2.epoch_time_median_s == pytest.approx(55.0)
    assert r2.speedup_ratio == pytest.approx(1.818, abs=1e-3)
    assert r2.strong_efficiency_ratio == pytest.approx(0.909, abs=1e-3)
    assert r2.karp_flatt_fraction == pytest.approx(0.1, abs=1e-3)
    assert math.isnan(r2.weak_efficiency_ratio)
    # showers per s from showers actually processed: 2 ranks x 10 iterations x 5 critic steps x 128.
    assert r2.showers_per_epoch_count == pytest.approx(2 * 10 * 5 * 128)
    assert r2.showers_per_s == pytest.approx(12800 / 55.0)
    assert rows[("strong", 1)].baseline_world_size_ranks == 1
    assert r2.comm_share_fraction == pytest.approx(0.2)
    assert r2.other_share_fraction == pytest.approx(0.2)


def test_weak_scaling_known_answer(tmp_path):
    for n, t in {1: 10.0, 2: 10.5, 4: 12.5}.items():
        make_run(tmp_path, f"w{n}", n=n, mode="weak", time_fn=t)
    rows, a = _rows([tmp_path])
    assert rows[("weak", 4)].weak_efficiency_ratio == pytest.approx(0.8)
    assert rows[("weak", 4)].speedup_ratio == pytest.approx(3.2)          # scaled speedup N T1/TN
    assert math.isnan(rows[("weak", 4)].strong_efficiency_ratio)
    assert a.results[0].fit.law == "gustafson"


def test_warmup_and_interrupted_epochs_are_excluded(tmp_path):
    # Epoch 0 is warm-up (500 s), epoch 3 was interrupted (1 s): neither may move the median.
    times = {0: 500.0, 1: 20.0, 2: 22.0, 3: 1.0, 4: 24.0}
    make_run(tmp_path, "r", n=1, epochs=5, time_fn=lambda e, r: times[e], interrupted=(3,))
    rows, _ = _rows([tmp_path])
    r = rows[("strong", 1)]
    assert r.epoch_time_median_s == pytest.approx(22.0)
    assert (r.epoch_time_p25_s, r.epoch_time_p75_s) == (pytest.approx(21.0), pytest.approx(23.0))
    assert (r.epochs_used_count, r.epochs_excluded_count) == (3, 2)
    # The energy the run really used includes the warm-up and interrupted epochs (GPU 100 W,
    # CPU 50 W, DRAM 10 W on one rank).
    assert r.all_epochs_energy_j == pytest.approx(160.0 * sum(times.values()))
    assert r.total_energy_per_epoch_j == pytest.approx(160.0 * 22.0)


def test_slowest_rank_defines_epoch_time(tmp_path):
    make_run(tmp_path, "r", n=4, time_fn=lambda e, r: 10.0 + r)      # rank 3 takes 13 s
    rows, _ = _rows([tmp_path])
    r = rows[("strong", 4)]
    assert r.epoch_time_median_s == pytest.approx(13.0)
    # busy = time - comm = 0.8 t: slowest / fastest = 13 / 10
    assert r.rank_imbalance_ratio == pytest.approx(1.3)


def test_node_energy_counted_once(tmp_path):
    # Two ranks on one node: rank 0 reads the node (50 W x 10 s), rank 1 is not_reader.
    make_run(tmp_path / "a", "one-node", n=2, nodes=1, time_fn=10.0)
    rows, _ = _rows([tmp_path / "a"])
    r = rows[("strong", 2)]
    assert r.cpu_energy_per_epoch_j == pytest.approx(500.0)
    assert r.dram_energy_per_epoch_j == pytest.approx(100.0)
    assert r.gpu_energy_per_epoch_j == pytest.approx(2 * 1000.0)       # every GPU counted
    assert r.cpu_energy_source == "measured"
    # The same two ranks on two nodes: both read their node, so the node energy is summed.
    make_run(tmp_path / "b", "two-nodes", n=2, nodes=2, time_fn=10.0)
    rows, _ = _rows([tmp_path / "b"])
    assert rows[("strong", 2)].cpu_energy_per_epoch_j == pytest.approx(1000.0)
    assert rows[("strong", 2)].total_energy_per_epoch_j == pytest.approx(2000 + 1000 + 200)


def test_estimated_and_measured_mixing_is_flagged(tmp_path):
    make_run(tmp_path, "r", n=2, time_fn=10.0, cpu_source="estimated", dram_w=None, dram_source="unavailable")
    rows, _ = _rows([tmp_path])
    r = rows[("strong", 2)]
    assert r.cpu_energy_source == "estimated"
    assert r.dram_energy_source == "unavailable" and math.isnan(r.dram_energy_per_epoch_j)
    assert r.total_energy_source == "includes estimates"
    assert r.total_energy_domains == "gpu+cpu"
    assert r.total_energy_per_epoch_j == pytest.approx(2000 + 500)
    assert "includes estimates" in r.notes


def test_energy_unavailable_everywhere(tmp_path):
    make_run(tmp_path, "r", n=1, gpu_w=None, cpu_w=None, dram_w=None, gpu_source="unavailable",
             cpu_source="unavailable", dram_source="unavailable")
    rows, a = _rows([tmp_path])
    assert rows[("strong", 1)].total_energy_source == "unavailable"
    assert math.isnan(rows[("strong", 1)].showers_per_j)
    assert len(a.pareto) == 0


def test_mixed_configuration_is_refused_naming_the_keys(tmp_path):
    make_run(tmp_path, "a", n=1, time_fn=10.0)
    cfg = base_config(learning_rate=5e-4)
    cfg["model"]["generator"] = "relu"
    make_run(tmp_path, "b", n=2, time_fn=6.0, config=cfg)     # same config_hash written, different settings
    runs = load_runs([tmp_path / "a", tmp_path / "b"])
    with pytest.raises(UserError) as err:
        group_series(runs)
    msg = str(err.value)
    assert "model.generator" in msg and "train.learning_rate" in msg
    assert "scaling.out" not in msg and "world_size" not in msg


def test_allowed_differences_share_a_series(tmp_path):
    make_run(tmp_path, "a", n=1, time_fn=10.0)
    cfg = base_config(batch_size=64)
    cfg["scaling"]["study"] = "other"
    make_run(tmp_path, "b", n=2, time_fn=6.0, config=cfg)
    series = group_series(load_runs([tmp_path / "a", tmp_path / "b"]))
    assert len(series) == 1 and series[0].world_sizes == [1, 2]


def test_different_workloads_form_separate_series(tmp_path):
    make_run(tmp_path, "a", n=1, time_fn=10.0, config_hash="aaaaaaaaaaaa")
    make_run(tmp_path, "b", n=1, time_fn=10.0, config_hash="bbbbbbbbbbbb", engine="mirrored")
    make_run(tmp_path, "c", n=1, time_fn=10.0, config_hash="aaaaaaaaaaaa", particle="pions")
    series = group_series(load_runs(sorted(p for p in tmp_path.iterdir())))
    assert len(series) == 3


def test_baseline_without_single_rank_and_single_world_size(tmp_path):
    strong_study(tmp_path / "s", {2: 50.0, 8: 15.0})
    rows, a = _rows([tmp_path / "s"])
    assert rows[("strong", 8)].baseline_world_size_ranks == 2
    assert rows[("strong", 8)].strong_efficiency_ratio == pytest.approx(2 * 50 / 15 / 8, abs=1e-9)
    assert any("N0 = 2" in n for n in a.results[0].notes)
    make_run(tmp_path / "one", "only", n=4, time_fn=10.0)
    res = summarise_series(group_series(load_runs([tmp_path / "one" / "only"]))[0])
    assert res.fit is None and any("only one world size" in n for n in res.notes)
    assert res.rows["strong_efficiency_ratio"].iloc[0] == pytest.approx(1.0)


def test_bench_files_feed_the_projection(tmp_path):
    strong_study(tmp_path, {1: 100.0, 2: 55.0})
    for n in (2, 4):
        write_bench(tmp_path, n, 4e-6, 5e9)
    a = analyse([tmp_path])
    p = a.projection
    assert p.available
    assert p.comm_fits["horovod"].latency_s == pytest.approx(4e-6, rel=1e-3)
    assert p.comm_fits["horovod"].bandwidth_bytes_per_s == pytest.approx(5e9, rel=1e-3)
    assert set(p.points["particle"]) == {"photons", "pions"}
    assert set(p.points["world_size_ranks"]) >= {8, 1024}
    assert "not measured" in p.compute["pions"].basis
    a2 = analyse([tmp_path / "strong-n1"])
    assert a2.projection.available is False and "allreduce" in " ".join(a2.projection.notes)


# ---------------------------------------------------------------- errors named by path, CLI exit 2
def _cli_error(capsys, argv) -> str:
    rc = main(argv)
    err = capsys.readouterr().err.strip()
    assert rc == 2
    assert len(err.splitlines()) == 1 and err.startswith("error: ")
    return err


def test_empty_dir_is_a_user_error(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    err = _cli_error(capsys, [str(tmp_path / "empty"), "--out", str(tmp_path / "rep"), "--quiet"])
    assert str(tmp_path / "empty") in err and "no run directory" in err
    assert not (tmp_path / "rep").exists()


def test_missing_path_and_dir_without_runs(tmp_path, capsys):
    err = _cli_error(capsys, [str(tmp_path / "nope"), "--out", str(tmp_path / "rep")])
    assert str(tmp_path / "nope") in err
    (tmp_path / "other" / "deeper").mkdir(parents=True)
    (tmp_path / "other" / "deeper" / "notes.txt").write_text("x")
    err = _cli_error(capsys, [str(tmp_path / "other"), "--out", str(tmp_path / "rep")])
    assert str(tmp_path / "other") in err


def test_corrupt_epochs_parquet_is_reported_by_path(tmp_path, capsys):
    run = make_run(tmp_path, "bad", n=1)
    (run / "epochs.parquet").write_bytes(b"PAR1 this is not parquet")
    err = _cli_error(capsys, [str(tmp_path), "--out", str(tmp_path / "rep"), "--quiet"])
    assert str(run / "epochs.parquet") in err


def test_corrupt_run_json_and_schema_version(tmp_path, capsys):
    run = make_run(tmp_path, "bad", n=1)
    meta = json.loads((run / "run.json").read_text())
    meta["schema_version"] = 99
    (run / "run.json").write_text(json.dumps(meta))
    err = _cli_error(capsys, [str(tmp_path), "--out", str(tmp_path / "rep"), "--quiet"])
    assert str(run / "run.json") in err and "schema_version" in err


def test_mixed_configuration_cli_exit_2(tmp_path, capsys):
    make_run(tmp_path, "a", n=1)
    make_run(tmp_path, "b", n=2, config=base_config(n_disc=3))
    err = _cli_error(capsys, [str(tmp_path), "--out", str(tmp_path / "rep"), "--quiet"])
    assert "train.n_disc" in err


def test_bad_bench_file_is_named(tmp_path, capsys):
    make_run(tmp_path, "a", n=1)
    (tmp_path / "allreduce-n2.json").write_text(json.dumps({"schema": "other/9"}))
    err = _cli_error(capsys, [str(tmp_path), "--out", str(tmp_path / "rep"), "--quiet"])
    assert "allreduce-n2.json" in err


def test_run_that_never_finished_an_epoch_is_skipped_but_a_completed_one_is_corrupt(tmp_path, capsys):
    make_run(tmp_path, "good", n=1)
    dead = make_run(tmp_path, "dead", n=2)
    (dead / "epochs.parquet").unlink()
    meta = json.loads((dead / "run.json").read_text())
    meta["status"] = "failed"
    (dead / "run.json").write_text(json.dumps(meta))
    a = analyse([tmp_path])
    assert [r.meta["run_id"] for r in a.runs] == ["good"]
    assert len(a.skipped_runs) == 1 and str(dead) in a.skipped_runs[0]
    meta["status"] = "completed"
    (dead / "run.json").write_text(json.dumps(meta))
    err = _cli_error(capsys, [str(tmp_path), "--out", str(tmp_path / "rep"), "--quiet"])
    assert str(dead / "epochs.parquet") in err


def test_same_world_size_on_different_node_counts_is_not_pooled(tmp_path):
    make_run(tmp_path, "n1", n=1, time_fn=40.0)
    make_run(tmp_path, "n4-one-node", n=4, nodes=1, time_fn=11.0)
    make_run(tmp_path, "n4-two-nodes", n=4, nodes=2, time_fn=14.0)
    a = analyse([tmp_path])
    rows = {(r.world_size_ranks, r.nodes_count): r for r in a.summary.itertuples()}
    assert rows[(4, 1)].epoch_time_median_s == pytest.approx(11.0)
    assert rows[(4, 2)].epoch_time_median_s == pytest.approx(14.0)
    assert rows[(4, 2)].cpu_energy_per_epoch_j == pytest.approx(2 * 50 * 14.0)
    assert any("1 and 2 nodes" in n for n in a.results[0].notes)
