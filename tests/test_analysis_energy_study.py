"""Carbon and cost, energy intervals, significance of comparisons, variants and checkpoint cost
in the analysis (no TensorFlow: run directories built by test_analysis_support)."""
from __future__ import annotations

import json
import math
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

sys.path.insert(0, str(Path(__file__).parent))
from test_analysis_support import ITERATIONS, N_DISC, base_config, make_run  # noqa: E402

from analysis.__main__ import main  # noqa: E402
from analysis.energy.carbon import CarbonRequest  # noqa: E402
from analysis.checkpoints import daly_interval_s, young_interval_s  # noqa: E402
from analysis.compare import compare, permutation_p_value  # noqa: E402
from analysis.pipeline import analyse  # noqa: E402
from analysis.variants import compile_time_s  # noqa: E402
from common.records import TelemetrySample  # noqa: E402
from common.telemetry_parts import telemetry_table, write_telemetry_part  # noqa: E402


def variant_config(name: str, **train) -> dict:
    cfg = base_config(**train)
    cfg["scaling"]["variant"] = name
    return cfg


def jitter(base: float, spread: float):
    """Epoch times base x (1 + spread x a fixed pattern), different per epoch."""
    pattern = [0.0, 1.0, -1.0, 0.5, -0.5, 0.25, -0.25, 0.75, -0.75, 0.1]
    return lambda epoch, rank: base * (1 + spread * pattern[epoch % len(pattern)])


def test_carbon_and_cost_per_epoch_showers_and_gan(tmp_path):
    make_run(tmp_path, "one", time_fn=10.0)          # 100 + 50 + 10 W for 10 s = 1600 J per epoch
    req = CarbonRequest(carbon_intensity_g_per_kwh=400.0, pue=1.5, price_per_kwh=0.3, given=("carbon", "pue", "price"))
    a = analyse([tmp_path], carbon=req)
    t = a.carbon.table.set_index("scope")
    assert t.loc["epoch", "energy_j"] == pytest.approx(1600.0)
    assert t.loc["epoch", "co2e_g"] == pytest.approx(1600.0 * 1.5 / 3.6e6 * 400.0, rel=1e-12)
    assert t.loc["epoch", "cost"] == pytest.approx(1600.0 * 1.5 / 3.6e6 * 0.3, rel=1e-12)
    showers = ITERATIONS * N_DISC * 256
    assert t.loc["1000 showers", "energy_j"] == pytest.approx(1600.0 / showers * 1000, rel=1e-12)
    # a trained GAN: the default budget of 1,000,000 iterations at 1600 J per 10 iterations
    assert t.loc["trained GAN", "energy_j"] == pytest.approx(1600.0 / ITERATIONS * 1_000_000, rel=1e-12)
    assert set(t["energy_source"]) == {"measured"}


def test_carbon_defaults_are_named_and_estimates_stay_flagged(tmp_path):
    make_run(tmp_path, "one", time_fn=10.0, gpu_w=None, gpu_source="unavailable", cpu_source="estimated",
             dram_w=None, dram_source="unavailable")
    run = tmp_path / "one"
    meta = json.loads((run / "run.json").read_text())
    meta["energy"] = [{"domains": {"cpu": {"source": "estimated", "method": "estimate", "details": [
        {"method": "estimate", "cpu_tdp_w": 4.375, "cpu_tdp_source": "table energy/data/cpu_tdp.csv: AMD EPYC"}]}}}]
    (run / "run.json").write_text(json.dumps(meta))
    a = analyse([tmp_path])
    assert a.carbon.estimates == ["CPU energy estimated with TDP 4.38 W per package (table energy/data/cpu_tdp.csv: "
                                  "AMD EPYC): runs one."]
    assert "230 gCO2e/kWh (default)" in a.carbon.request.describe()
    assert "perun" in a.carbon.request.describe()
    assert set(a.carbon.table["energy_source"]) == {"estimated"}
    assert a.carbon.table["cost"].isna().all()          # no price given: no cost


@pytest.mark.parametrize("flag", [["--pue", "0.5"], ["--carbon-intensity-g-per-kwh", "-1"],
                                  ["--price-per-kwh", "nan"], ["--mtbf-h", "0"]])
def test_bad_carbon_flags_are_one_line_user_errors(tmp_path, capsys, flag):
    make_run(tmp_path / "runs", "one")
    assert main([str(tmp_path / "runs"), "--out", str(tmp_path / "rep"), "--quiet", *flag]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and flag[0] in err[0]
    assert not (tmp_path / "rep").exists()


def test_compare_separates_distinct_and_not_equal_distributions():
    rng = np.random.default_rng(5)
    a = [list(10 + rng.normal(0, 0.1, 8)) for _ in range(3)]
    b = [list(12 + rng.normal(0, 0.1, 8)) for _ in range(3)]
    same = [list(10 + rng.normal(0, 0.1, 8)) for _ in range(3)]
    distinct = compare(a, b)
    assert distinct.exceeds_spread and distinct.interval.high < 1 and distinct.p_value < 0.01
    assert "exceeds the spread" in distinct.verdict()
    alike = compare(a, same)
    assert not alike.exceeds_spread and "within the spread" in alike.verdict()
    assert math.isnan(permutation_p_value([1.0], []))


def test_three_epochs_a_side_cannot_exceed_the_spread():
    # Twice as slow in every epoch: the bootstrap interval excludes 1, but 3 + 3 values allow no
    # two-sided permutation p below 0.1, so the verdict must not claim a real difference.
    c = compare([[1.0, 1.01, 1.02]], [[2.0, 2.01, 2.02]])
    assert c.interval.high < 1 and c.p_value >= 0.05
    assert not c.exceeds_spread and "too few values to tell" in c.verdict()


def test_energy_intervals_contain_the_median_and_widen_with_spread(tmp_path):
    make_run(tmp_path / "tight", "r", epochs=9, time_fn=jitter(10.0, 0.01))
    make_run(tmp_path / "wide", "r", epochs=9, time_fn=jitter(10.0, 0.2))
    tight = analyse([tmp_path / "tight"]).energy_intervals.iloc[0]
    wide = analyse([tmp_path / "wide"]).energy_intervals.iloc[0]
    for row in (tight, wide):
        assert row.energy_per_epoch_ci_low_j <= row.energy_per_epoch_median_j <= row.energy_per_epoch_ci_high_j
        assert row.power_ci_low_w <= row.power_median_w <= row.power_ci_high_w
        # constant watts: power does not depend on the epoch time
        assert row.power_median_w == pytest.approx(160.0)
    width = lambda r: r.energy_per_1000_showers_ci_high_j - r.energy_per_1000_showers_ci_low_j  # noqa: E731
    assert width(wide) > 5 * width(tight)


def test_engines_compared_with_their_spread(tmp_path):
    make_run(tmp_path, "hvd", engine="horovod", epochs=9, time_fn=jitter(10.0, 0.01))
    make_run(tmp_path, "mir", engine="mirrored", epochs=9, time_fn=jitter(13.0, 0.01))
    a = analyse([tmp_path])
    (c,) = a.engine_comparisons
    assert c.world_size == 1 and c.time.exceeds_spread
    assert c.time.ratio == pytest.approx(13.0 / 10.0, rel=1e-9) or c.time.ratio == pytest.approx(10.0 / 13.0, rel=1e-9)


def test_variants_table_best_per_objective_and_labels(tmp_path):
    make_run(tmp_path, "v-fast", epochs=9, time_fn=jitter(8.0, 0.01), config=variant_config("fast"),
             config_hash="aaaaaaaaaaaa")
    make_run(tmp_path, "v-slow", epochs=9, time_fn=jitter(12.0, 0.01), config=variant_config("slow", xla=True),
             config_hash="bbbbbbbbbbbb")
    make_run(tmp_path, "v-twin", epochs=9, time_fn=jitter(8.02, 0.01), config=variant_config("twin"),
             config_hash="cccccccccccc")
    a = analyse([tmp_path])
    t = a.variants.table.set_index("variant")
    assert set(t.index) == {"fast", "slow", "twin"}
    assert t.loc["fast", "series"].startswith("fast: ")          # labelled by name, not by hash alone
    assert t.loc["slow", "iteration_time_median_s"] == pytest.approx(12.0 / ITERATIONS)
    assert math.isnan(t.loc["fast", "peak_host_memory_bytes"])   # no telemetry recorded
    best = {b.objective: b for b in a.variants.best}
    assert best["time"].variant == "fast" and best["time"].runner_up == "twin"
    assert not best["time"].versus.exceeds_spread                 # 0.25 % apart with 1 % noise
    assert best["energy"].variant == "fast"


def test_variant_peak_memory_from_telemetry(tmp_path):
    run = make_run(tmp_path, "v", epochs=3, config=variant_config("only"))
    samples = [TelemetrySample(rank=0, node="n1", t_s=t_s, phase="epoch-1", cpu_util_ratio=1.0, rss_bytes=rss,
                               cpu_freq_mhz=np.nan, gpu_util_ratio=np.nan, gpu_mem_busy_ratio=np.nan,
                               gpu_mem_used_bytes=np.nan, gpu_sm_clock_mhz=np.nan, gpu_temp_c=np.nan,
                               gpu_throttle_reasons=None) for t_s, rss in ((0.0, 100.0), (1.0, 300.0))]
    write_telemetry_part(run, [telemetry_table(samples, attempt=0)], attempt=0, label="000000")
    row = analyse([tmp_path]).variants.table.iloc[0]
    assert row.peak_host_memory_bytes == 300.0 and math.isnan(row.peak_gpu_memory_bytes)


def test_compile_time_is_first_slowest_step_minus_steady_step():
    epochs = pd.DataFrame({"epoch": [0, 1, 2], "attempt": [0, 0, 0], "warmup": [True, False, False],
                           "interrupted": [False] * 3, "step_time_max_s": [5.2, 0.3, 0.31],
                           "step_time_p50_s": [0.2, 0.2, 0.2]})
    run = SimpleNamespace(epochs=epochs, meta={"config": {"scaling": {"steps_per_call": 1}}})
    assert compile_time_s(run) == pytest.approx(5.0)
    run.meta["config"]["scaling"]["steps_per_call"] = 2      # a call of 2 iterations timed as a whole
    assert compile_time_s(run) == pytest.approx(10.0)


def test_young_and_daly_intervals():
    assert young_interval_s(10.0, 3600.0) == pytest.approx(math.sqrt(72000.0), rel=1e-12)
    daly = daly_interval_s(10.0, 3600.0)
    assert young_interval_s(10.0, 3600.0) - 10.0 < daly < young_interval_s(10.0, 3600.0) * 1.02
    assert daly_interval_s(8000.0, 3600.0) == 3600.0             # C >= 2 MTBF: checkpoint every MTBF
    assert math.isnan(young_interval_s(10.0, 0.0))


def test_checkpoint_cost_and_optimal_interval_in_the_report(tmp_path):
    run = make_run(tmp_path / "runs", "ck", epochs=5, time_fn=10.0)
    meta = json.loads((run / "run.json").read_text())
    meta["checkpoint_saves"] = [{"attempt": 0, "epoch": e, "iteration": (e + 1) * ITERATIONS, "save_s": 0.5,
                                 "bytes": 2**20} for e in range(5)]
    meta["starts"] = [{"attempt": 0, "startup_s": 20.0, "restore_s": None},
                      {"attempt": 1, "startup_s": 25.0, "restore_s": 0.4}]
    (run / "run.json").write_text(json.dumps(meta))
    a = analyse([tmp_path / "runs"], mtbf_h=1.0)
    row = a.checkpoints.iloc[0]
    assert row.save_overhead_fraction == pytest.approx(2.5 / 50.0)
    assert row.restart_time_median_s == 25.0 and row.restore_time_median_s == 0.4
    assert row.current_interval_iterations == ITERATIONS and row.current_interval_s == pytest.approx(10.0)
    assert row.young_interval_s == pytest.approx(math.sqrt(2 * 0.5 * 3600.0))
    assert row.daly_interval_epochs == round(row.daly_interval_iterations / ITERATIONS)
    assert main([str(tmp_path / "runs"), "--out", str(tmp_path / "rep"), "--quiet", "--mtbf-h", "1",
                 "--price-per-kwh", "0.25"]) == 0
    text = (tmp_path / "rep" / "report.md").read_text()
    assert "# Checkpoints" in text and "Daly" in text and "# Carbon and cost" in text and "cost (EUR)" in text
    assert (tmp_path / "rep" / "checkpoints.csv").is_file() and (tmp_path / "rep" / "carbon.csv").is_file()


def test_variant_quality_retention_at_the_same_iteration(tmp_path):
    from common.target import Target

    make_run(tmp_path, "a", epochs=4, config=variant_config("a"), config_hash="aaaaaaaaaaaa", evals=True)
    b = make_run(tmp_path, "b", epochs=4, config=variant_config("b"), config_hash="bbbbbbbbbbbb", evals=True)
    ev = pd.read_parquet(b / "eval.parquet")
    ev["chi2_ndf"] = ev["chi2_ndf"] * 2.0          # the same iterations, twice the chi2/ndf
    ev = ev[ev["iteration"] <= 50]                 # and one evaluation fewer: compared at 50
    ev.to_parquet(b / "eval.parquet", index=False)
    t = analyse([tmp_path], target=Target("chi2_ndf", "<=", 0.1)).variants.table.set_index("variant")
    assert t.loc["a", "quality_iteration_count"] == 50
    assert t.loc["a", "quality_retention_ratio"] == pytest.approx(1.0)
    assert t.loc["b", "quality_retention_ratio"] == pytest.approx(2.0, rel=1e-12)
    assert t.loc["b", "quality_value"] == pytest.approx(2 * (50.0 / 5 + 5) / 10, rel=1e-12)


def test_carbon_of_an_ensemble_member_and_of_a_campaign_plan(tmp_path):
    from analysis.campaign.campaign import CampaignRequest

    make_run(tmp_path, "ens", n=2, mode="ensemble", time_fn=10.0)
    make_run(tmp_path, "one", n=1, mode="weak", time_fn=10.0, per_rank_batch=128)
    a = analyse([tmp_path], campaign=CampaignRequest(gans=4, ranks=2, gan_iterations=1000))
    t = a.carbon.table
    member = t[t["scope"] == "trained GAN (ensemble member)"]
    assert len(member) == 1
    # 2 GPUs x 100 W + 50 + 10 W for 10 s per epoch of 2 members x 10 iterations, 1000 iterations per GAN
    assert member["energy_j"].iloc[0] == pytest.approx((200 + 60) * 10 / (2 * ITERATIONS) * 1000, rel=1e-9)
    plan = t[t["scope"] == "campaign plan"]
    assert len(plan) >= 1 and (plan["co2e_g"] > 0).all()
