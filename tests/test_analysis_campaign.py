"""analysis.campaign.campaign: ensemble efficiency, GANs per node-hour, energy per GAN, makespan (TTTa) and the
campaign plan, from constructed run directories with known answers."""
from __future__ import annotations

import math

import pandas as pd
import pyarrow.parquet as pq
import pytest

from analysis.campaign import campaign as cp
from analysis.__main__ import main
from analysis.load import load_runs
from analysis.pipeline import analyse, write_report
from common.rundir import EPOCHS_FILE, EvalRecord, RunWriter, load_run
from common.target import parse_target
from tests.test_analysis_support import ITERATIONS, make_run

B = 1000  # a small GAN budget keeps the numbers readable


def _runs(root):
    return load_runs(sorted(p.parent for p in root.rglob("run.json")))


def _study(root, dp_n2: bool = True):
    """Ensembles at N=1, 2 (member 1 of N=2 is 5 % slower), data-parallel strong at N=1 (and 2)."""
    make_run(root, "ens-n1", n=1, mode="ensemble", time_fn=10.0)
    make_run(root, "ens-n2", n=2, mode="ensemble", time_fn=lambda e, r: 10.0 if r == 0 else 10.5)
    make_run(root, "strong-n1", n=1, time_fn=10.0)
    if dp_n2:
        make_run(root, "strong-n2", n=2, time_fn=8.0)
    return root


def test_old_epochs_file_without_member_column_reads_as_member_0(tmp_path):
    run_dir = make_run(tmp_path, "old", n=2)
    table = pq.read_table(run_dir / EPOCHS_FILE)
    pq.write_table(table.drop(["member"]), run_dir / EPOCHS_FILE)
    run = load_run(run_dir)
    assert list(run.epochs["member"].unique()) == [0]
    assert len(RunWriter.resume(run_dir).epochs) == len(run.epochs)


def test_ensemble_efficiency_counts_the_slowest_member(tmp_path):
    runs = _runs(_study(tmp_path))
    table = cp.ensemble_table(runs, cp.CampaignRequest(gan_iterations=B)).set_index("run_id")
    n2 = table.loc["ens-n2"]
    assert n2["members_count"] == 2 and n2["group_size_ranks"] == 1
    assert n2["slowest_member_iteration_s"] == pytest.approx(10.5 / ITERATIONS)
    assert n2["fastest_member_iteration_s"] == pytest.approx(10.0 / ITERATIONS)
    assert n2["ensemble_efficiency_ratio"] == pytest.approx(10.0 / 10.5)
    assert n2["baseline"].startswith("ensemble N=1 (ens-n1)")
    assert table.loc["ens-n1", "ensemble_efficiency_ratio"] == pytest.approx(1.0)
    # Warm-up epochs do not count: a slow first epoch changes nothing.
    make_run(tmp_path / "w", "ens-n2", n=2, mode="ensemble", time_fn=lambda e, r: 99.0 if e == 0 else 10.5)
    make_run(tmp_path / "w", "ens-n1", n=1, mode="ensemble", time_fn=10.5)
    w = cp.ensemble_table(_runs(tmp_path / "w")).set_index("run_id")
    assert w.loc["ens-n2", "ensemble_efficiency_ratio"] == pytest.approx(1.0)


def test_baseline_falls_back_to_the_data_parallel_run_of_one_member(tmp_path):
    make_run(tmp_path, "ens-n2", n=2, mode="ensemble", time_fn=12.0)
    make_run(tmp_path, "weak-n1", n=1, mode="weak", time_fn=9.0)
    row = cp.ensemble_table(_runs(tmp_path)).iloc[0]
    assert row["baseline"].startswith("data parallel N=1 (weak-n1)")
    assert row["ensemble_efficiency_ratio"] == pytest.approx(9.0 / 12.0)


def test_no_baseline_no_efficiency(tmp_path):
    make_run(tmp_path, "ens-n2", n=2, mode="ensemble", time_fn=12.0)
    make_run(tmp_path, "weak-n1", n=1, mode="weak", time_fn=9.0, config_hash="another")
    row = cp.ensemble_table(_runs(tmp_path)).iloc[0]
    assert row["baseline"] == cp.NOT_MEASURED and math.isnan(row["ensemble_efficiency_ratio"])
    assert "no run of one member alone" in row["notes"]


def test_gans_per_node_hour_and_energy_per_gan(tmp_path):
    make_run(tmp_path, "ens-n2", n=2, mode="ensemble", time_fn=10.0)
    row = cp.ensemble_table(_runs(tmp_path), cp.CampaignRequest(gan_iterations=B)).iloc[0]
    t_iter = 10.0 / ITERATIONS
    assert row["gans_per_node_hour"] == pytest.approx(3600 * 2 / (B * t_iter * 1))
    # Per epoch: two GPUs at 100 W and one node's CPU (50 W) and DRAM (10 W), for 10 s, counted once.
    epoch_j = 2 * 100 * 10 + 50 * 10 + 10 * 10
    assert row["energy_per_member_iteration_j"] == pytest.approx(epoch_j / (2 * ITERATIONS))
    assert row["energy_per_gan_j"] == pytest.approx(B * epoch_j / (2 * ITERATIONS))
    assert row["energy_source"] == "measured"
    assert cp.gans_per_node_hour(1, 0.0, 1, B) != cp.gans_per_node_hour(1, 0.0, 1, B)   # NaN


def test_energy_to_target_per_member(tmp_path):
    run_dir = make_run(tmp_path, "ens-n2", n=2, mode="ensemble", time_fn=10.0)
    w = RunWriter.resume(run_dir)
    # member 0 crosses chi2_ndf 5 at iteration 20 (energy 200 J), member 1 never does
    w.add_eval([EvalRecord(iteration=10 * (i + 1), chi2=0, ndf=1, chi2_ndf=v, w1=0, ks=0, energy_j=100.0 * (i + 1),
                           train_time_s=1.0 * (i + 1), showers=100 * (i + 1), energy_source="measured", member=m)
                for m, values in ((0, (9.0, 5.0, 4.0)), (1, (9.0, 8.0, 7.0))) for i, v in enumerate(values)])
    row = cp.ensemble_table(_runs(tmp_path), cp.CampaignRequest(target=parse_target("chi2_ndf<=5"))).iloc[0]
    assert row["members_reached_count"] == 1
    assert row["energy_to_target_median_j"] == pytest.approx(200.0)


def test_makespan_of_an_ensemble_and_of_a_job_array(tmp_path):
    make_run(tmp_path, "ens", n=2, mode="ensemble", start_time="2026-01-01T00:00:00+00:00",
             end_time="2026-01-01T00:10:00+00:00")
    members = tmp_path / "camp" / cp.MEMBERS_DIR
    make_run(members, "a", start_time="2026-01-01T01:00:00+00:00", end_time="2026-01-01T01:05:00+00:00")
    make_run(members, "b", start_time="2026-01-01T01:02:00+00:00", end_time="2026-01-01T01:20:00+00:00")
    make_run(members, "c", start_time="2026-01-01T00:59:00+00:00", end_time="2026-01-01T01:01:00+00:00")
    table = cp.campaign_makespans(_runs(tmp_path)).set_index("layout")
    assert table.loc["ensemble", "makespan_s"] == pytest.approx(600.0)
    assert table.loc["ensemble", "gans_count"] == 2 and table.loc["ensemble", "completed_count"] == 2
    arr = table.loc["array"]
    assert arr["gans_count"] == 3 and arr["completed_count"] == 3
    assert arr["makespan_s"] == pytest.approx(21 * 60.0)       # 00:59 -> 01:20
    make_run(members, "d", end_time=None)
    arr = cp.campaign_makespans(_runs(tmp_path)).set_index("layout").loc["array"]
    assert math.isnan(arr["makespan_s"]) and "without end_time" in arr["notes"]


def test_plan_prices_each_group_size_with_the_run_that_measured_it(tmp_path):
    runs = _runs(_study(tmp_path))
    result = cp.analyse_campaigns(runs, analyse([tmp_path]).summary,
                                  cp.CampaignRequest(gans=8, ranks=2, gan_iterations=B))
    plan = result.plan.set_index("group_size_ranks")
    assert list(plan.index) == [1, 2]
    one, two = plan.loc[1], plan.loc[2]
    # g = 1: two GANs side by side, four rounds, at the slowest member's rate of the N=2 ensemble.
    assert one["groups_count"] == 2 and one["gans_per_group_count"] == 4
    assert one["measured_by"].startswith("ensemble ens-n2")
    assert one["makespan_s"] == pytest.approx(4 * B * 10.5 / ITERATIONS)
    # g = 2: eight GANs one after the other, data parallel (strong) at N=2.
    assert two["gans_per_group_count"] == 8 and "strong" in two["measured_by"]
    assert two["makespan_s"] == pytest.approx(8 * B * 8.0 / ITERATIONS)
    assert one["recommended"] and not two["recommended"]           # 4 x 1.05 s < 8 x 0.8 s
    # The estimate for g = 1 prices the solo data-parallel run, groups assumed independent.
    assert one["estimate_makespan_s"] == pytest.approx(4 * B * 10.0 / ITERATIONS)
    assert "groups assumed independent" in one["estimate_basis"]


def test_plan_says_not_measured_instead_of_extrapolating(tmp_path):
    runs = _runs(_study(tmp_path, dp_n2=False))
    result = cp.analyse_campaigns(runs, analyse([tmp_path]).summary,
                                  cp.CampaignRequest(gans=8, ranks=4, gan_iterations=B))
    plan = result.plan.set_index("group_size_ranks")
    assert list(plan.index) == [1, 2, 4]
    for g in (1, 2, 4):   # nothing ran at N = 4
        assert plan.loc[g, "measured_by"] == cp.NOT_MEASURED and math.isnan(plan.loc[g, "makespan_s"])
    assert not plan["recommended"].any()
    assert plan.loc[1, "estimate_makespan_s"] == pytest.approx(2 * B * 10.0 / ITERATIONS)
    assert math.isnan(plan.loc[2, "estimate_makespan_s"])          # no data-parallel run at N = 2 either


def test_report_has_the_campaign_section_table_and_plot(tmp_path):
    _study(tmp_path / "s")
    a = analyse([tmp_path / "s"], campaign=cp.CampaignRequest(gans=8, ranks=2, gan_iterations=B))
    # Ensemble runs are not a data-parallel series.
    assert set(a.summary["mode"]) == {"strong"}
    out = write_report(a, tmp_path / "rep")
    md = (out / "report.md").read_text()
    assert "# Ensembles and campaigns" in md.replace("##", "#")
    assert "ensemble efficiency 0.95 at N = 2" in md
    assert "Recommended for photons: group size 1" in md
    plan = pd.read_csv(out / "campaign_plan.csv")
    assert list(plan["group_size_ranks"]) == [1, 2]
    assert (out / "plots" / "campaign_makespan.png").is_file() and (out / "plots" / "campaign_makespan.pdf").is_file()
    assert (out / "campaign_ensembles.csv").is_file()


def test_only_ensemble_runs_still_make_a_report(tmp_path):
    make_run(tmp_path / "s", "ens-n1", n=1, mode="ensemble", time_fn=10.0)
    make_run(tmp_path / "s", "ens-n2", n=2, mode="ensemble", time_fn=10.0)
    assert main([str(tmp_path / "s"), "--out", str(tmp_path / "rep"), "--quiet", "--campaign-gans", "4"]) == 0
    md = (tmp_path / "rep" / "report.md").read_text()
    assert "ensemble efficiency 1 at N = 2" in md or "ensemble efficiency 1.0 at N = 2" in md
    plan = pd.read_csv(tmp_path / "rep" / "campaign_plan.csv")
    assert list(plan["ranks_count"].unique()) == [2]           # P defaults to the largest N measured


def test_cli_refuses_campaign_ranks_without_gans(tmp_path, capsys):
    make_run(tmp_path / "s", "strong-n1")
    assert main([str(tmp_path / "s"), "--out", str(tmp_path / "rep"), "--quiet", "--campaign-ranks", "2"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--campaign-ranks needs --campaign-gans" in err[0]
    assert main([str(tmp_path / "s"), "--out", str(tmp_path / "rep"), "--quiet", "--campaign-gans", "0"]) == 2
