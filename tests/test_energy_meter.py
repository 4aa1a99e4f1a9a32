"""EnergyMeter behaviour independent of the device kind: config, windows, estimate, sampler."""
from __future__ import annotations

import math
import os
import socket
import sys
import threading
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent / "helpers"))
from energy_fakes import FakeGpu, bus_id_of_slot, fake_nvml, two_socket_tree  # noqa: E402

from bologan.config import BOLOGAN_SECTIONS  # noqa: E402
from common.errors import UserError  # noqa: E402
from common.gpu_binding import GpuChoice, normalise_bus_id  # noqa: E402
from common.settings import section_from_mapping  # noqa: E402
from energy.config import EnergyConfig  # noqa: E402
from energy.meter import EnergyMeter, Placement  # noqa: E402


def meter_for(config: EnergyConfig, *, reader: bool = True, **kwargs) -> EnergyMeter:
    return EnergyMeter(config, rank=1, local_rank=0 if reader else 1, node="n0", read_node_counters=reader,
                       gpu_index=None, t0=time.monotonic(), **kwargs)


@pytest.mark.parametrize("bad", [
    {"sample_interval_s": 0.0}, {"sample_interval_s": -1.0}, {"sample_interval_s": 120.0},
    {"sample_interval_s": math.nan}, {"cpu_tdp_w": -5.0}, {"gpu_tdp_w": math.inf}, {"powercap_root": " "},
])
def test_config_check_rejects(bad):
    with pytest.raises(ValueError):
        EnergyConfig(**bad).check()
    with pytest.raises(UserError, match="energy"):
        section_from_mapping(EnergyConfig, bad, "run.toml: [energy]")


def test_config_defaults_and_unique_field_names():
    cfg = section_from_mapping(EnergyConfig, {"sample_interval_s": 1, "estimate_energy": True}, "t")
    assert cfg.sample_interval_s == 1.0 and cfg.estimate_energy and cfg.powercap_root == "/sys/class/powercap"
    with pytest.raises(UserError, match="unknown key 'interval'"):
        section_from_mapping(EnergyConfig, {"interval": 1}, "t")
    ours = set(EnergyConfig.__dataclass_fields__)
    for cls in BOLOGAN_SECTIONS.values():
        assert not ours & set(cls.__dataclass_fields__)


def test_windows_overlap_nest_and_restart(tmp_path):
    tree = two_socket_tree(tmp_path)
    meter = meter_for(EnergyConfig(powercap_root=str(tmp_path)))
    meter.begin("run")
    tree.add("intel-rapl:0", 1_000_000)
    meter.begin("epoch-0")
    tree.add("intel-rapl:0", 2_000_000)
    e0 = meter.end("epoch-0")
    meter.begin("epoch-1")
    meter.begin("epoch-1")              # reopening restarts the window
    tree.add("intel-rapl:1", 4_000_000)
    e1 = meter.end("epoch-1")
    run = meter.end("run")
    assert (e0.cpu_energy_j, e1.cpu_energy_j, run.cpu_energy_j) == (2.0, 4.0, 7.0)
    assert e0.time_s >= 0 and run.time_s >= e0.time_s + e1.time_s
    with pytest.raises(KeyError, match="never begun"):
        meter.end("epoch-0")
    assert meter.open_windows() == []
    meter.stop()


def test_not_reader_rank_reports_no_node_energy(tmp_path):
    tree = two_socket_tree(tmp_path)
    meter = meter_for(EnergyConfig(powercap_root=str(tmp_path)), reader=False)
    meter.begin("e")
    tree.add("intel-rapl:0", 1_000_000)
    w = meter.end("e")
    assert (w.cpu_energy_source, w.dram_energy_source) == ("not_reader", "not_reader")
    assert math.isnan(w.cpu_energy_j) and math.isnan(w.dram_energy_j)
    d = meter.describe()
    assert d["domains"]["cpu"]["devices"] == [] and d["powercap_root"] is None
    meter.stop()


def meters_by_local_rank(tmp_path, env, **kwargs) -> dict[int, dict]:
    """``describe()`` of the meters of ranks 6 and 7 (local ranks 0 and 1 of node n3)."""
    two_socket_tree(tmp_path)
    config = EnergyConfig(powercap_root=str(tmp_path))
    nvml = fake_nvml([FakeGpu(uuid="GPU-aaaa"), FakeGpu(uuid="GPU-bbbb")])
    out = {}
    for local_rank in (0, 1):
        meter = EnergyMeter.for_rank(Placement(6 + local_rank, local_rank, "n3"), config, t0=time.monotonic(),
                                     env=env, nvml_module=nvml, **kwargs)
        out[local_rank] = meter.describe()
        meter.stop()
    assert nvml.state["init"] == 0
    return out


def test_for_rank_reads_node_counters_on_local_rank_0_and_its_own_gpu(tmp_path):
    d = meters_by_local_rank(tmp_path, {}, on_gpu=True)
    assert [(d[i]["rank"], d[i]["local_rank"], d[i]["node"]) for i in (0, 1)] == [(6, 0, "n3"), (7, 1, "n3")]
    assert d[0]["reads_node_counters"] and not d[1]["reads_node_counters"]
    assert (d[0]["domains"]["cpu"]["source"], d[0]["domains"]["dram"]["source"]) == ("measured", "measured")
    assert (d[1]["domains"]["cpu"]["source"], d[1]["domains"]["dram"]["source"]) == ("not_reader", "not_reader")
    # No CUDA_VISIBLE_DEVICES: local rank i drives GPU i.
    assert [d[i]["domains"]["gpu"]["devices"] for i in (0, 1)] == [["gpu0"], ["gpu1"]]


def test_placement_default_is_a_process_alone_on_its_node(tmp_path):
    two_socket_tree(tmp_path)
    meter = EnergyMeter.for_rank(Placement(), EnergyConfig(powercap_root=str(tmp_path)), t0=time.monotonic(),
                                 on_gpu=False)
    d = meter.describe()
    meter.stop()
    assert (d["rank"], d["local_rank"], d["node"]) == (0, 0, socket.gethostname())
    assert d["reads_node_counters"] and d["domains"]["cpu"]["source"] == "measured"


def test_for_rank_meters_the_gpu_tensorflow_trains_on_matched_by_bus_id(tmp_path):
    # The pinning's choice names the GPU by PCI bus id (TensorFlow's format); NVML lists it as
    # index 1 with its own format: the meter opens that one, whatever the local rank.
    trained = GpuChoice(position=0, pci_bus_id=normalise_bus_id(bus_id_of_slot(1)), uuid="GPU-bbbb", nvml_index=None)
    d = meters_by_local_rank(tmp_path / "bound", {"CUDA_VISIBLE_DEVICES": "0"}, on_gpu=True, gpus=(trained,))
    assert [d[i]["domains"]["gpu"]["devices"] for i in (0, 1)] == [["gpu1"], ["gpu1"]]
    # Reordered list, no explicit choice: the same rule picks entry number local rank.
    d = meters_by_local_rank(tmp_path / "list", {"CUDA_VISIBLE_DEVICES": "1,0"}, on_gpu=True)
    assert [d[i]["domains"]["gpu"]["devices"] for i in (0, 1)] == [["gpu1"], ["gpu0"]]
    d = meters_by_local_rank(tmp_path / "cpu", {}, on_gpu=False)
    assert [d[i]["domains"]["gpu"]["source"] for i in (0, 1)] == ["unavailable", "unavailable"]
    assert d[0]["domains"]["gpu"]["reason"] == "no GPU assigned to this rank"


def test_for_rank_refuses_to_meter_what_it_cannot_attribute(tmp_path):
    unknown = GpuChoice(position=0, pci_bus_id=None, uuid=None, nvml_index=None)
    d = meters_by_local_rank(tmp_path / "nobus", {}, on_gpu=True, gpus=(unknown,))
    assert d[0]["domains"]["gpu"]["source"] == "unavailable" and "no known PCI bus id" in d[0]["domains"]["gpu"]["reason"]
    mig = GpuChoice(0, normalise_bus_id(bus_id_of_slot(0)), "GPU-aaaa", 0, mig_uuid="MIG-1")
    d = meters_by_local_rank(tmp_path / "mig", {}, on_gpu=True, gpus=(mig,))
    assert "MIG instance" in d[0]["domains"]["gpu"]["reason"]
    gone = GpuChoice(0, "0000:99:00.0", None, None)
    d = meters_by_local_rank(tmp_path / "gone", {}, on_gpu=True, gpus=(gone,))
    assert d[0]["domains"]["gpu"]["reason"] == "NVML lists no GPU at PCI bus id 0000:99:00.0"


def test_ranks_sharing_a_gpu_count_its_energy_once(tmp_path):
    """Two ranks on one GPU (--share-gpu): each reports half, so the job's sum is the GPU's
    energy once (not twice, as when every rank metered it whole)."""
    gpu = FakeGpu(uuid="GPU-aaaa", energy_mj=1000)
    nvml = fake_nvml([gpu])
    shared = GpuChoice(0, normalise_bus_id(bus_id_of_slot(0)), "GPU-aaaa", 0)
    config = EnergyConfig(powercap_root=str(tmp_path / "none"))
    meters = [EnergyMeter.for_rank(Placement(r, r, "n1"), config, t0=time.monotonic(), on_gpu=True, gpus=(shared,),
                                   gpu_sharers=2, nvml_module=nvml) for r in (0, 1)]
    for m in meters:
        m.begin("e")
    gpu.energy_mj += 6000                       # the GPU used 6 J during the window
    windows = [m.end("e") for m in meters]
    assert [w.gpu_energy_j for w in windows] == [3.0, 3.0]
    assert sum(w.gpu_energy_j for w in windows) == 6.0
    d = meters[0].describe()["domains"]["gpu"]
    assert d["shared_by_ranks"] == 2 and "1/2 of its energy" in d["note"]
    assert d["details"][0]["energy_fraction"] == 0.5
    for m in meters:
        m.stop()


def test_for_rank_one_process_driving_several_gpus_meters_them_all(tmp_path):
    d = meters_by_local_rank(tmp_path, {}, on_gpu=True, gpus_in_process=2)
    assert d[0]["domains"]["gpu"]["devices"] == ["gpu0", "gpu1"]
    d = meters_by_local_rank(tmp_path / "one", {"CUDA_VISIBLE_DEVICES": "1"}, on_gpu=True, gpus_in_process=2)
    assert d[0]["domains"]["gpu"]["devices"] == ["gpu1"]


def write_proc_stat(path: Path, busy: int, idle: int, cpus: int = 4) -> None:
    # user nice system idle iowait irq softirq steal guest guest_nice
    lines = [f"cpu  {busy} 0 0 {idle} 7 0 0 0 0 0"]
    lines += [f"cpu{i} 1 0 0 1 0 0 0 0 0 0" for i in range(cpus)]
    lines += ["intr 1 2 3", "ctxt 99"]
    path.write_text("\n".join(lines) + "\n")


def test_cpu_estimate_opt_in_flagged_and_exact(tmp_path):
    stat = tmp_path / "stat"
    write_proc_stat(stat, busy=1000, idle=5000)
    config = EnergyConfig(powercap_root=str(tmp_path / "none"), estimate_energy=True, cpu_tdp_w=100.0)
    meter = meter_for(config, proc_stat=str(stat), cpu_packages=2)
    meter.begin("e")
    ticks = os.sysconf("SC_CLK_TCK")
    write_proc_stat(stat, busy=1000 + 4 * ticks, idle=9000)     # 4 busy CPU-seconds on 4 CPUs
    w = meter.end("e")
    # 100 W x 2 packages x 4 CPU-s / 4 CPUs = 200 J
    assert w.cpu_energy_source == "estimated" and w.cpu_energy_j == pytest.approx(200.0, rel=1e-12)
    assert w.dram_energy_source == "unavailable"                # no DRAM model: never guessed
    d = meter.describe()
    assert d["domains"]["cpu"]["method"] == "estimate"
    assert d["domains"]["cpu"]["details"][0]["packages"] == 2
    assert any("estimate" in x for x in d["warnings"])
    meter.stop()


def test_estimate_needs_tdp_and_never_replaces_rapl(tmp_path, monkeypatch):
    # A CPU the shipped TDP table does not know (energy.tdp): no TDP, no estimate.
    monkeypatch.setattr("energy.estimate.cpu_model", lambda: "Imaginary CPU 9999")
    no_tdp = meter_for(EnergyConfig(powercap_root=str(tmp_path / "none"), estimate_energy=True))
    assert no_tdp.describe()["domains"]["cpu"]["source"] == "unavailable"
    assert any("cpu_tdp_w is 0" in x for x in no_tdp.describe()["warnings"])
    no_tdp.stop()
    two_socket_tree(tmp_path / "rapl")
    with_rapl = meter_for(EnergyConfig(powercap_root=str(tmp_path / "rapl"), estimate_energy=True, cpu_tdp_w=200))
    assert with_rapl.describe()["domains"]["cpu"]["source"] == "measured"
    with_rapl.stop()
    off = meter_for(EnergyConfig(powercap_root=str(tmp_path / "none"), cpu_tdp_w=200))
    assert off.describe()["domains"]["cpu"]["source"] == "unavailable"      # estimate is opt-in
    off.stop()


def test_drain_while_sampling_loses_nothing(tmp_path):
    two_socket_tree(tmp_path)
    meter = meter_for(EnergyConfig(powercap_root=str(tmp_path), sample_interval_s=0.001))
    got = []
    meter.start()
    end = time.monotonic() + 0.3
    while time.monotonic() < end:
        got.extend(meter.drain_samples())
        time.sleep(0.003)
    meter.stop()
    got.extend(meter.drain_samples())
    passes = meter.sampler_stats.samples          # includes the priming pass at construction
    assert passes > 10
    assert len(got) == (passes - 1) * 4
    assert meter.describe()["sampler"]["thread_cpu_s"] > 0


def test_stop_is_safe_from_any_thread_and_context_manager(tmp_path):
    two_socket_tree(tmp_path)
    with meter_for(EnergyConfig(powercap_root=str(tmp_path), sample_interval_s=0.01)) as meter:
        assert meter.describe()["sampler"]["running"]
        t = threading.Thread(target=meter.stop)
        t.start()
        t.join(5)
    assert not meter.describe()["sampler"]["running"]
    meter.stop()
