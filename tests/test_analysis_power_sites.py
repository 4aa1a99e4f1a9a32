"""analysis.energy.power_report (idle, gross/net, peak power, telemetry) and analysis.sites on constructed runs."""
from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

sys.path.insert(0, str(Path(__file__).parent))
from test_analysis_support import make_run  # noqa: E402

from analysis.__main__ import main  # noqa: E402
from analysis.load import group_series, load_runs  # noqa: E402
from analysis.energy.power_report import analyse_power, epoch_gross_net, peak_table  # noqa: E402
from analysis.energy.power_sections import phase_spans  # noqa: E402
from analysis.sites import sites_table  # noqa: E402
from analysis.summary import summarise_series  # noqa: E402
from common.records import TelemetrySample  # noqa: E402
from common.telemetry_parts import telemetry_table, write_telemetry_part  # noqa: E402


def _update_meta(run_dir: Path, **fields) -> Path:
    path = run_dir / "run.json"
    meta = json.loads(path.read_text())
    meta.update(fields)
    path.write_text(json.dumps(meta))
    return run_dir


def _site(name: str, container: bool = False) -> dict:
    return {"name": name, "from": "--site", "in_container": container,
            "runtime": "apptainer" if container else None, "evidence": []}


def _hardware(cpu: str = "EPYC 7763", gpu: str | None = "A100") -> dict:
    return {"cpu_model": cpu, "logical_cpus": 128, "gpus_per_rank": 1 if gpu else 0, "gpu_model": gpu,
            "memory_bytes": 512 << 30}


def _idle(rank: int, node: str, gpu: float | None, cpu: float | None, dram: float | None, attempt: int = 0) -> dict:
    return {"rank": rank, "node": node, "when": "before_first_epoch", "attempt": attempt, "seconds": 2.0,
            "gpu": gpu, "cpu": cpu, "dram": dram, "gpu_source": "measured",
            "cpu_source": "measured" if cpu is not None else "not_reader",
            "dram_source": "measured" if dram is not None else "not_reader"}


def _load(*dirs: Path):
    return load_runs(list(dirs))


def test_site_and_hardware_split_series_and_old_runs_keep_their_key(tmp_path):
    old = make_run(tmp_path, "old", n=1)
    oph = _update_meta(make_run(tmp_path, "oph", n=1), site=_site("oph"), hardware=_hardware())
    box = _update_meta(make_run(tmp_path, "box", n=1), site=_site("oph", container=True), hardware=_hardware())
    series = group_series(_load(old, oph, box))
    labels = sorted(s.key.label for s in series)
    assert len(series) == 3
    assert sum("@" not in label for label in labels) == 1               # the old run: unknown site, label as before
    assert any(label.endswith("@ oph | EPYC 7763 x 128, A100") for label in labels)
    assert any("@ oph (container) | EPYC 7763 x 128, A100" in label for label in labels)
    assert len({s.key.slug for s in series}) == 3 and len({s.key.workload for s in series}) == 1


def test_sites_table_puts_one_workload_side_by_side(tmp_path):
    dirs = []
    for site, hw, t in (("leonardo", _hardware(gpu="A100"), 5.0), ("cnaf", _hardware(cpu="Xeon 6338", gpu="V100"), 8.0)):
        for n in (1, 2):
            d = make_run(tmp_path, f"{site}-n{n}", n=n, time_fn=t / n ** 0.5)
            dirs.append(_update_meta(d, site=_site(site), hardware=hw))
    dirs.append(make_run(tmp_path, "other-workload", n=1, config_hash="fff000fff000"))
    results = [summarise_series(s) for s in group_series(_load(*dirs))]
    table = sites_table(results)
    assert len(table) == 4 and set(table["site"]) == {"leonardo", "cnaf"}
    for n, g in table.groupby("world_size_ranks"):
        fast, slow = g[g["site"] == "leonardo"].iloc[0], g[g["site"] == "cnaf"].iloc[0]
        t_fast = 5.0 / n ** 0.5
        assert fast["iteration_time_s"] == pytest.approx(t_fast / 10)          # 10 iterations per epoch
        assert fast["iteration_time_relative_ratio"] == pytest.approx(1.0)
        assert slow["iteration_time_relative_ratio"] == pytest.approx(8.0 / 5.0)
        # Energy scales with time here (constant power): the slower site needs 1.6x the energy too.
        assert slow["energy_relative_ratio"] == pytest.approx(1.6)
    n2 = table[table["world_size_ranks"] == 2]
    assert n2["efficiency_ratio"].to_numpy() == pytest.approx([1 / 2 ** 0.5] * 2)


def test_net_energy_subtracts_each_domains_idle_power_over_the_epoch_time(tmp_path):
    d = make_run(tmp_path, "r", n=2, time_fn=10.0, gpu_w=100.0, cpu_w=50.0, dram_w=10.0)
    _update_meta(d, idle_power_w=[_idle(0, "node0", 30.0, 20.0, 4.0), _idle(1, "node0", 30.0, None, None)])
    (run,) = _load(d)
    per_epoch = epoch_gross_net(run)
    assert len(per_epoch) == 3                                    # 4 epochs, 1 warm-up
    assert per_epoch["gross_j"].to_numpy() == pytest.approx([2 * 100 * 10 + 50 * 10 + 10 * 10] * 3)
    assert per_epoch["net_j"].to_numpy() == pytest.approx([2600 - (2 * 30 * 10 + 20 * 10 + 4 * 10)] * 3)
    result = analyse_power([run], [summarise_series(s) for s in group_series([run])])
    row = result.gross_net.iloc[0]
    assert (row.gross_energy_per_epoch_j, row.net_energy_per_epoch_j) == (pytest.approx(2600), pytest.approx(1760))
    assert row.net_share_fraction == pytest.approx(1760 / 2600) and row.domains == "cpu, dram, gpu"
    assert set(result.idle["rank"]) == {0, 1}


def test_net_energy_is_missing_where_a_domain_has_no_idle_power(tmp_path):
    d = make_run(tmp_path, "r", n=1, gpu_w=100.0, cpu_w=50.0, dram_w=None, dram_source="unavailable")
    _update_meta(d, idle_power_w=[_idle(0, "node0", 30.0, None, None)])
    (run,) = _load(d)
    per_epoch = epoch_gross_net(run)
    assert per_epoch["gross_j"].notna().all() and per_epoch["net_j"].isna().all()
    gn = analyse_power([run], [summarise_series(s) for s in group_series([run])]).gross_net
    assert math.isnan(gn.iloc[0].net_energy_per_epoch_j) and "idle power missing" in gn.iloc[0].note


def test_peak_power_is_the_max_and_99th_percentile_of_each_series(tmp_path):
    (run,) = _load(make_run(tmp_path, "r", n=2, power=True))
    peaks = peak_table([run])
    for (rank, device), g in run.power.groupby(["rank", "device"]):
        row = peaks[(peaks["rank"] == rank) & (peaks["device"] == device)].iloc[0]
        w = g["watts"].to_numpy(float)
        assert row.max_power_w == pytest.approx(w.max()) and row.p99_power_w == pytest.approx(np.percentile(w, 99))
        assert row.samples_count == len(w)


def _tele(rank: int, t: float, phase: str, **kw) -> TelemetrySample:
    values = dict(cpu_util_ratio=1.0, rss_bytes=1e9, cpu_freq_mhz=2000.0, gpu_util_ratio=0.8, gpu_mem_busy_ratio=0.3,
                  gpu_mem_used_bytes=10e9, gpu_sm_clock_mhz=1400.0, gpu_temp_c=60.0, gpu_throttle_reasons="")
    values.update(kw)
    return TelemetrySample(rank=rank, node="node0", t_s=t, phase=phase, **values)


def test_telemetry_per_epoch_and_the_throttling_and_memory_findings(tmp_path):
    d = make_run(tmp_path, "r", n=2)
    meta = json.loads((d / "run.json").read_text())
    for item in meta["energy"]:
        item["telemetry"] = {"gpu_mem_total_bytes": 16e9}
    _update_meta(d, energy=meta["energy"], hardware=_hardware())
    rows = [_tele(0, 0.5, "baseline-before_first_epoch", gpu_util_ratio=0.0)]
    for rank in (0, 1):
        rows += [_tele(rank, 1.0, "epoch-1", gpu_temp_c=70.0, gpu_sm_clock_mhz=1500.0),
                 _tele(rank, 1.1, "epoch-1", gpu_temp_c=75.0, gpu_sm_clock_mhz=1300.0, gpu_util_ratio=0.6),
                 _tele(rank, 2.0, "epoch-2", gpu_mem_used_bytes=15.5e9 if rank == 1 else 1e9,
                       gpu_throttle_reasons="gpu_idle" if rank == 0 else "sw_power_cap,hw_thermal_slowdown"),
                 _tele(rank, 2.5, "checkpoint-2")]
    write_telemetry_part(d, [telemetry_table(rows, 0)], attempt=0, label="000001")
    (run,) = _load(d)
    result = analyse_power([run], [])
    per = result.telemetry_epochs
    assert len(per) == 4                                           # 2 ranks x epochs 1 and 2; baseline/checkpoint out
    e1 = per[(per["rank"] == 0) & (per["epoch"] == 1)].iloc[0]
    assert (e1.gpu_temp_max_c, e1.gpu_sm_clock_mean_mhz, e1.gpu_util_mean_ratio) == (75.0, 1400.0, pytest.approx(0.7))
    assert not e1.gpu_throttled and not e1.warmup
    e2 = per[(per["rank"] == 1) & (per["epoch"] == 2)].iloc[0]
    assert e2.gpu_throttled and e2.gpu_throttle_reasons == "hw_thermal_slowdown,sw_power_cap"
    assert not per[(per["rank"] == 0) & (per["epoch"] == 2)].iloc[0].gpu_throttled   # idle is not throttling
    notes = " ".join(result.notes)
    assert "rank 1 throttled in epoch(s) 3 (counted from 1)" in notes and "rank 1 was memory-bound on its GPU" in notes
    assert "rank 0 was memory-bound" not in notes and "on the host" not in notes


def test_phase_spans_follow_the_telemetry_phases():
    rows = pd.DataFrame({"t_s": [0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0],
                         "phase": ["", "baseline-before_first_epoch", "epoch-0", "epoch-0", "checkpoint-0",
                                   "eval-0-100", "epoch-1"]})
    assert phase_spans(rows, warmup_epochs={0}) == [
        ("idle baseline", 1.0, 2.0), ("warm-up", 2.0, 4.0), ("checkpoint", 4.0, 5.0), ("evaluation", 5.0, 6.0),
        ("epoch", 6.0, 6.0)]


def test_the_report_has_the_new_sections_and_old_runs_still_load(tmp_path):
    study = tmp_path / "study"
    old = make_run(study, "old", n=1, power=True)
    new = _update_meta(make_run(study, "new", n=1, power=True), site=_site("oph"), hardware=_hardware(),
                       idle_power_w=[_idle(0, "node0", 30.0, 20.0, 4.0)])
    write_telemetry_part(new, [telemetry_table([_tele(0, 1.0, "epoch-1"), _tele(0, 2.0, "epoch-2")], 0)],
                         attempt=0, label="000001")
    assert old.exists()
    out = tmp_path / "report"
    assert main([str(study), "--out", str(out), "--quiet"]) == 0
    text = (out / "report.md").read_text()
    for heading in ("## Idle power, gross and net energy", "## Peak power", "## What each rank's hardware did",
                    "## Sites: the same workload where it ran"):
        assert heading in text
    assert "unknown site" in (out / "sites.csv").read_text()
    assert (out / "plots/telemetry_timeline.png").exists() and (out / "energy_gross_net.csv").exists()
