"""RAPL through fake powercap trees: what is added, wrap-around, unreadable counters."""
from __future__ import annotations

import errno
import math
import os
import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent / "helpers"))
from energy_fakes import FakePowercap, two_socket_tree  # noqa: E402

from energy.config import EnergyConfig  # noqa: E402
from energy.meter import EnergyMeter  # noqa: E402
from energy.rapl import HINT_NO_TREE, HINT_PERMISSION, default_open, open_rapl, wrap_period_s  # noqa: E402


class Clock:
    """A hand-driven monotonic clock (seconds)."""

    def __init__(self, t: float = 100.0):
        self.t = t

    def __call__(self) -> float:
        return self.t


def node_meter(root: Path, clock=None, sample_interval_s: float = 0.1, **kwargs) -> EnergyMeter:
    """A node-reading meter without GPU over the powercap tree at ``root``."""
    config = EnergyConfig(powercap_root=str(root), sample_interval_s=sample_interval_s)
    clock = clock or Clock()
    return EnergyMeter(config, rank=0, local_rank=0, node="n0", read_node_counters=True, gpu_index=None,
                       t0=clock(), clock=clock, **kwargs)


def test_packages_and_dram_summed_core_and_psys_not(tmp_path):
    tree = two_socket_tree(tmp_path)
    meter = node_meter(tmp_path)
    meter.begin("epoch-0")
    tree.add("intel-rapl:0", 12_345_678)
    tree.add("intel-rapl:1", 1_000_001)
    tree.add("intel-rapl:0:0", 9_999_999)      # core: inside package-0, must not be added
    tree.add("intel-rapl:2", 50_000_000)       # psys: overlaps the packages, must not be added
    tree.add("intel-rapl:0:1", 2_500_000)
    tree.add("intel-rapl:1:1", 500_000)
    w = meter.end("epoch-0")
    assert w.cpu_energy_j == 13.345679
    assert w.dram_energy_j == 3.0
    assert (w.cpu_energy_source, w.dram_energy_source) == ("measured", "measured")
    assert w.gpu_energy_source == "unavailable" and math.isnan(w.gpu_energy_j)
    d = meter.describe()
    assert d["domains"]["cpu"]["devices"] == ["package-0", "package-1"]
    assert d["domains"]["dram"]["devices"] == ["package-0:dram", "package-1:dram"]
    skipped = {s["name"] for s in d["skipped_zones"]}
    assert skipped == {"core", "psys"}
    meter.stop()


def test_wrap_between_two_samples_counted_once(tmp_path):
    tree = FakePowercap(tmp_path)
    tree.zone("intel-rapl:0", "package-0", 900_000, max_range_uj=1_000_000)
    tree.zone("intel-rapl:0:0", "dram", 10, max_range_uj=1_000_000)
    tree.zone("intel-rapl:1", "package-1", 0, max_range_uj=5_000_000)
    clock = Clock()
    meter = node_meter(tmp_path, clock)
    meter.begin("e")
    clock.t += 0.1
    tree.set("intel-rapl:0", 990_000)
    meter.sample_now()
    clock.t += 0.1
    tree.set("intel-rapl:0", 50_000)          # wrapped: 10_000 to the range end, then 50_000
    tree.set("intel-rapl:1", 4_000_000)
    meter.sample_now()
    clock.t += 0.1
    tree.set("intel-rapl:0", 60_000)
    w = meter.end("e")
    # package-0: 90_000 + 60_000 + 10_000 = 160_000 uJ; package-1: 4_000_000 uJ
    assert w.cpu_energy_j == 4.16
    assert w.dram_energy_j == 0.0
    assert w.time_s == pytest.approx(0.3)
    # Power samples come from unwrapped totals: never negative across the wrap.
    samples = meter.drain_samples()
    p0 = [s.watts for s in samples if s.device == "package-0"]
    assert p0 == pytest.approx([0.9, 0.6])            # 90_000 uJ / 0.1 s, 60_000 uJ / 0.1 s
    assert meter.describe()["domains"]["cpu"]["details"][0]["wraps_seen"] == 1
    meter.stop()


def test_two_wraps_seen_by_sampler_and_window_edges(tmp_path):
    tree = FakePowercap(tmp_path)
    tree.zone("intel-rapl:0", "package-0", 0, max_range_uj=1000)
    meter = node_meter(tmp_path)
    meter.begin("outer")
    tree.set("intel-rapl:0", 800)
    meter.sample_now()
    tree.set("intel-rapl:0", 300)          # wrap 1 (+500)
    meter.begin("inner")                   # a window edge sees this state: counted once in total
    tree.set("intel-rapl:0", 900)
    meter.sample_now()
    tree.set("intel-rapl:0", 100)          # wrap 2 (+200)
    inner = meter.end("inner")
    outer = meter.end("outer")
    assert inner.cpu_energy_j == (600 + 200) / 1e6
    assert outer.cpu_energy_j == (800 + 500 + 600 + 200) / 1e6
    meter.stop()


def test_interval_too_long_for_small_range_warns(tmp_path):
    tree = FakePowercap(tmp_path)
    tree.zone("intel-rapl:0", "package-0", 0, max_range_uj=100_000_000)   # 100 J: wraps in 0.1 s at 1 kW
    meter = node_meter(tmp_path, sample_interval_s=0.1)
    warnings = meter.describe()["warnings"]
    assert len(warnings) == 1 and "package-0" in warnings[0] and "may miss wrap" in warnings[0]
    meter.stop()
    assert wrap_period_s(262143328850) > 200     # a usual server range is far from the 10 Hz limit
    quiet = node_meter(two_socket_tree(tmp_path / "big").root)
    assert quiet.describe()["warnings"] == []
    quiet.stop()


def test_unreadable_energy_file_is_unavailable_not_a_crash(tmp_path):
    tree = two_socket_tree(tmp_path)
    target = tmp_path / "intel-rapl:1" / "energy_uj"
    target.unlink()
    target.mkdir()                            # reading a directory fails even for root
    meter = node_meter(tmp_path)
    meter.begin("e")
    tree.add("intel-rapl:0", 1_000_000)
    w = meter.end("e")
    assert w.cpu_energy_source == "unavailable" and math.isnan(w.cpu_energy_j)
    assert w.dram_energy_source == "measured" and w.dram_energy_j == 0.0     # other domain unaffected
    cpu = meter.describe()["domains"]["cpu"]
    assert cpu["source"] == "unavailable"
    assert "package-1" in cpu["reason"] and "IsADirectoryError" in cpu["reason"]
    assert cpu["hint"]
    meter.stop()


def test_permission_denied_gives_root_hint(tmp_path):
    two_socket_tree(tmp_path)

    def opener(path: str) -> int:
        if path.endswith("energy_uj"):
            raise PermissionError(errno.EACCES, "Permission denied", path)
        return default_open(path)

    meter = node_meter(tmp_path, open_fn=opener)
    d = meter.describe()["domains"]
    for domain in ("cpu", "dram"):
        assert d[domain]["source"] == "unavailable"
        assert "Permission denied" in d[domain]["reason"]
        assert d[domain]["hint"] == HINT_PERMISSION and "5.10" in HINT_PERMISSION
    meter.begin("e")                           # windows still work; they just carry no node energy
    w = meter.end("e")
    assert (w.cpu_energy_source, w.dram_energy_source) == ("unavailable", "unavailable")
    meter.stop()


def test_missing_tree_unavailable_with_hint(tmp_path):
    node = open_rapl(tmp_path / "nope")
    assert node.channels == []
    assert node.problems["package"].hint == HINT_NO_TREE
    assert "no powercap tree" in node.problems["dram"].reason


def test_amd_like_tree_without_dram(tmp_path):
    tree = FakePowercap(tmp_path)
    tree.zone("intel-rapl:0", "package-0", 5)
    tree.zone("intel-rapl:0:0", "core", 5)
    meter = node_meter(tmp_path)
    meter.begin("e")
    tree.add("intel-rapl:0", 2_000_000)
    w = meter.end("e")
    assert (w.cpu_energy_j, w.cpu_energy_source) == (2.0, "measured")
    assert w.dram_energy_source == "unavailable"
    assert "DRAM" in meter.describe()["domains"]["dram"]["reason"]
    meter.stop()


def test_nested_devices_layout_and_top_level_dram(tmp_path):
    # /sys/devices/virtual/powercap/intel-rapl/intel-rapl:0/intel-rapl:0:0 style, plus a top-level dram zone
    tree = FakePowercap(tmp_path)
    tree.zone("intel-rapl/intel-rapl:0", "package-0", 0)
    tree.zone("intel-rapl/intel-rapl:0/intel-rapl:0:0", "dram", 0)
    tree.zone("intel-rapl/intel-rapl:1", "dram", 0)
    node = open_rapl(tmp_path)
    assert [(c.domain, c.device) for c in node.channels] == [
        ("package", "package-0"), ("dram", "package-0:dram"), ("dram", "dram")]
    for c in node.channels:
        c.close()


def test_unreadable_range_is_unavailable(tmp_path):
    tree = two_socket_tree(tmp_path)
    (tree.root / "intel-rapl:0" / "max_energy_range_uj").write_text("garbage\n")
    node = open_rapl(tmp_path)
    assert "max_energy_range_uj" in node.problems["package"].reason
    assert "package" not in {c.domain for c in node.channels}
    for c in node.channels:
        c.close()


def test_read_failure_mid_run_marks_window_unavailable(tmp_path):
    tree = two_socket_tree(tmp_path)
    meter = node_meter(tmp_path)
    meter.begin("e")
    cpu_acc = next(a for a in meter._accumulators if a.channel.device == "package-1")
    real_read = cpu_acc.channel.read

    def broken() -> int:
        raise OSError(errno.EIO, "Input/output error")

    cpu_acc.channel.read = broken
    tree.add("intel-rapl:0", 1)
    w = meter.end("e")
    assert w.cpu_energy_source == "unavailable" and math.isnan(w.cpu_energy_j)
    assert w.dram_energy_source == "measured"
    assert "Input/output error" in meter.describe()["domains"]["cpu"]["details"][1]["error"]
    cpu_acc.channel.read = real_read
    meter.stop()


def test_sampler_thread_collects_samples_and_stops(tmp_path):
    tree = two_socket_tree(tmp_path)
    meter = node_meter(tmp_path, clock=time.monotonic, sample_interval_s=0.01)
    meter.start()
    meter.begin("e")
    deadline = time.monotonic() + 5
    while meter.sampler_stats.samples < 5 and time.monotonic() < deadline:
        tree.add("intel-rapl:0", 1000)
        time.sleep(0.01)
    w = meter.end("e")
    meter.stop()
    meter.stop()                                      # idempotent
    samples = meter.drain_samples()
    assert meter.sampler_stats.samples >= 5
    assert {s.device for s in samples} == {"package-0", "package-1", "package-0:dram", "package-1:dram"}
    ts = [s.t_s for s in samples if s.device == "package-0"]
    assert ts == sorted(ts) and all(s.watts >= 0 for s in samples)
    assert w.cpu_energy_j > 0
    assert not meter.describe()["sampler"]["running"]
    with pytest.raises(RuntimeError):
        meter.begin("late")
    # the counter files were closed by stop()
    assert not any(Path(f"/proc/self/fd/{fd}").exists() and os.readlink(f"/proc/self/fd/{fd}").endswith("energy_uj")
                   for fd in range(3, 256))
