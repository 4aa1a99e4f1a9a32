"""The shipped CPU TDP table and the estimate that uses it when the user gives no TDP."""
from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent / "helpers"))
sys.path.insert(0, str(Path(__file__).parent))

from test_energy_meter import meter_for, write_proc_stat  # noqa: E402

from energy.config import EnergyConfig  # noqa: E402
from energy.tdp import TABLE, estimate_tdp, load_table, lookup  # noqa: E402


def test_every_row_is_complete_and_names_a_vendor_page():
    rows = load_table()
    assert len(rows) >= 10
    kinds = {r.kind for r in rows}
    assert {"server", "laptop"} <= kinds
    for r in rows:
        assert r.tdp_w > 0 and r.threads >= r.cores >= 1
        assert "ark.intel.com" in r.source or "amd.com" in r.source, r.product


def test_lookup_by_model_string():
    assert lookup("Intel(R) Xeon(R) Platinum 8380 CPU @ 2.30GHz").tdp_w == 270
    assert lookup("AMD EPYC 7763 64-Core Processor").product == "AMD EPYC 7763"
    assert lookup("AMD EPYC 77630") is None                      # not a prefix match
    assert lookup("AMD EPYC").kind == "family"                   # a VM naming no product
    assert lookup("Imaginary CPU 9999") is None


def test_malformed_table_is_refused_with_its_row(tmp_path):
    bad = tmp_path / "t.csv"
    bad.write_text("product,match,tdp_w,cores,threads,kind,source\nX,X,-5,4,8,server,somewhere\n")
    with pytest.raises(ValueError, match="row 1"):
        load_table(bad)


def test_user_tdp_wins_and_table_is_charged_per_visible_thread():
    assert estimate_tdp("AMD EPYC 7763", 150.0, 2, 1).package_tdp_w == 150.0
    vm = estimate_tdp("AMD EPYC 7763 64-Core Processor", 0.0, 2, 1)
    assert vm.package_tdp_w == pytest.approx(280.0 * 2 / 128, rel=1e-12)
    assert "AMD EPYC 7763" in vm.source and "amd.com" in vm.source
    whole = estimate_tdp("AMD EPYC 7763", 0.0, 256, 2)          # two full sockets: whole TDP each
    assert whole.package_tdp_w == pytest.approx(280.0)
    assert estimate_tdp("Imaginary CPU", 0.0, 4, 1) is None


def test_meter_estimates_from_the_table_and_names_the_tdp(tmp_path, monkeypatch):
    monkeypatch.setattr("energy.estimate.cpu_model", lambda: "Intel(R) Core(TM) i7-8565U CPU @ 1.80GHz")
    stat = tmp_path / "stat"
    write_proc_stat(stat, busy=1000, idle=5000, cpus=8)
    meter = meter_for(EnergyConfig(powercap_root=str(tmp_path / "none"), estimate_energy=True),
                      proc_stat=str(stat), cpu_packages=1)
    meter.begin("e")
    ticks = os.sysconf("SC_CLK_TCK")
    write_proc_stat(stat, busy=1000 + 8 * ticks, idle=9000, cpus=8)    # 8 busy CPU-seconds on 8 CPUs
    w = meter.end("e")
    # 15 W (the table's i7-8565U, 8 threads, all visible) x 8 CPU-s / 8 CPUs = 15 J
    assert w.cpu_energy_source == "estimated" and w.cpu_energy_j == pytest.approx(15.0, rel=1e-12)
    detail = meter.describe()["domains"]["cpu"]["details"][0]
    assert "i7-8565U" in detail["cpu_tdp_source"] and str(TABLE.name) in detail["cpu_tdp_source"]
    meter.stop()
