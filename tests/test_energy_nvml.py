"""GPU energy through a fake NVML module; the node's GPUs as NVML lists them; the TensorFlow fence."""
from __future__ import annotations

import math
import sys
import time
import types
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent / "helpers"))
from energy_fakes import NVML_ERROR_LIBRARY_NOT_FOUND, FakeGpu, fake_nvml  # noqa: E402

from energy.config import EnergyConfig  # noqa: E402
from energy.meter import EnergyMeter, tf_sync_devices  # noqa: E402
from energy.nvml import all_visible_indices, gpus_of_process, read_node_gpus  # noqa: E402


class Clock:
    def __init__(self, t: float = 50.0):
        self.t = t

    def __call__(self) -> float:
        return self.t


def gpu_meter(nvml, gpu_index=0, clock=None, sync=None, **config) -> EnergyMeter:
    clock = clock or Clock()
    return EnergyMeter(EnergyConfig(powercap_root="/nonexistent-powercap", **config), rank=3, local_rank=1,
                       node="n1", read_node_counters=False, gpu_index=gpu_index, t0=clock(), clock=clock,
                       sync=sync, nvml_module=nvml)


def test_energy_counter_exact_difference():
    gpus = [FakeGpu(energy_mj=10_000), FakeGpu(energy_mj=77)]
    nvml = fake_nvml(gpus)
    clock = Clock()
    fences = []
    meter = gpu_meter(nvml, gpu_index=1, clock=clock, sync=lambda: fences.append(clock.t))
    meter.begin("epoch-1")
    clock.t += 2.0
    gpus[1].energy_mj += 123_456
    gpus[0].energy_mj += 999_999               # another rank's GPU: not ours
    meter.sample_now()
    w = meter.end("epoch-1")
    assert w.gpu_energy_j == 123.456 and w.gpu_energy_source == "measured"
    assert (w.cpu_energy_source, w.dram_energy_source) == ("not_reader", "not_reader")
    assert math.isnan(w.cpu_energy_j) and math.isnan(w.dram_energy_j)
    assert len(fences) == 2                    # begin and end each fenced GPU work first
    gpu = meter.describe()["domains"]["gpu"]
    assert (gpu["source"], gpu["method"], gpu["devices"]) == ("measured", "nvml-energy-counter", ["gpu1"])
    [sample] = meter.drain_samples()
    assert (sample.domain, sample.device, sample.rank, sample.node) == ("gpu", "gpu1", 3, "n1")
    assert sample.watts == pytest.approx(123.456 / 2.0) and sample.t_s == pytest.approx(2.0)
    meter.stop()
    assert nvml.state["init"] == 0             # NVML released


def test_power_integrated_when_counter_not_supported():
    gpu = FakeGpu(energy_mj=None, power_mw=100_000)        # pre-Volta: no energy counter
    clock = Clock()
    meter = gpu_meter(fake_nvml([gpu]), clock=clock)
    meter.begin("e")
    clock.t += 1.0
    gpu.power_mw = 300_000
    meter.sample_now()                  # trapezoid 0..1 s: (100 + 300) / 2 = 200 J
    clock.t += 1.0
    meter.sample_now()                  # 1..2 s at 300 W: 300 J
    clock.t += 0.5
    gpu.power_mw = 100_000
    w = meter.end("e")                  # 2..2.5 s: (300 + 100) / 2 * 0.5 = 100 J
    assert w.gpu_energy_j == pytest.approx(600.0, rel=1e-12)
    assert w.gpu_energy_source == "measured"
    assert meter.describe()["domains"]["gpu"]["method"] == "nvml-power-integrated"
    assert [s.watts for s in meter.drain_samples()] == [300.0, 300.0]   # the readings themselves
    meter.stop()


def test_power_integration_on_the_real_clock_within_tolerance():
    gpu = FakeGpu(energy_mj=None, power_mw=150_000)
    meter = gpu_meter(fake_nvml([gpu]), clock=time.monotonic, sample_interval_s=0.01)
    meter.start()
    meter.begin("e")
    time.sleep(0.2)
    w = meter.end("e")
    meter.stop()
    assert w.gpu_energy_j == pytest.approx(150.0 * w.time_s, rel=0.02)


def test_nothing_supported_without_estimate_is_unavailable():
    meter = gpu_meter(fake_nvml([FakeGpu(energy_mj=None, power_mw=None)]))
    gpu = meter.describe()["domains"]["gpu"]
    assert gpu["source"] == "unavailable" and "not supported" in gpu["reason"]
    meter.begin("e")
    assert meter.end("e").gpu_energy_source == "unavailable"
    meter.stop()


def test_estimate_only_when_opted_in_and_flagged():
    gpu = FakeGpu(energy_mj=None, power_mw=None, util_pct=50)
    clock = Clock()
    meter = gpu_meter(fake_nvml([gpu]), clock=clock, estimate_energy=True, gpu_tdp_w=300.0)
    meter.begin("e")
    clock.t += 1.0
    meter.sample_now()
    clock.t += 1.0
    w = meter.end("e")
    assert w.gpu_energy_source == "estimated" and w.gpu_energy_j == pytest.approx(300.0)   # 150 W x 2 s
    assert meter.describe()["domains"]["gpu"]["method"] == "estimate"
    [sample] = meter.drain_samples()                  # flagged in the series too, never a "gpu" row
    assert (sample.domain, sample.device, sample.source, sample.watts) == ("estimate", "gpu0", "estimated", 150.0)
    meter.stop()


def test_library_missing_or_init_failure_is_unavailable(monkeypatch):
    failing = fake_nvml(init_error=NVML_ERROR_LIBRARY_NOT_FOUND)
    meter = gpu_meter(failing)
    gpu = meter.describe()["domains"]["gpu"]
    assert gpu["source"] == "unavailable"
    assert "NVML Shared Library Not Found" in gpu["reason"] and "driver" in gpu["hint"]
    meter.begin("e")
    w = meter.end("e")
    assert w.gpu_energy_source == "unavailable" and math.isnan(w.gpu_energy_j)
    meter.stop()

    monkeypatch.setitem(sys.modules, "pynvml", None)            # module not installed
    meter = gpu_meter(None)
    gpu = meter.describe()["domains"]["gpu"]
    assert gpu["source"] == "unavailable" and "pynvml not importable" in gpu["reason"]
    assert "nvidia-ml-py" in gpu["hint"]
    meter.stop()


def test_real_pynvml_without_driver_is_unavailable():
    pynvml = pytest.importorskip("pynvml")
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError:
        pass
    else:
        pynvml.nvmlShutdown()
        pytest.skip("this machine has a working NVIDIA driver: the no-driver path is covered by the fakes")
    meter = gpu_meter(None)
    gpu = meter.describe()["domains"]["gpu"]
    assert gpu["source"] == "unavailable" and gpu["reason"].startswith("nvmlInit failed")
    meter.stop()


def test_bad_index_and_counter_reset():
    meter = gpu_meter(fake_nvml([FakeGpu()]), gpu_index=4)
    assert "gpu4" in meter.describe()["domains"]["gpu"]["reason"]
    meter.stop()
    gpu = FakeGpu(energy_mj=5000)
    meter = gpu_meter(fake_nvml([gpu]))
    meter.begin("e")
    gpu.energy_mj = 10                    # driver reloaded: the counter restarted
    w = meter.end("e")
    assert w.gpu_energy_source == "unavailable"
    assert "decreased" in meter.describe()["domains"]["gpu"]["details"][0]["error"]
    meter.stop()


def test_no_gpu_assigned():
    meter = gpu_meter(fake_nvml(), gpu_index=None)
    assert meter.describe()["domains"]["gpu"]["reason"] == "no GPU assigned to this rank"
    meter.stop()


UUIDS = ["GPU-aaaa1111-0000-0000-0000-000000000000", "GPU-bbbb2222-0000-0000-0000-000000000000",
         "GPU-bbbb3333-0000-0000-0000-000000000000"]


def test_node_gpus_lists_bus_ids_normalised_uuids_and_mig_instances():
    nvml = fake_nvml([FakeGpu(uuid=UUIDS[0]), FakeGpu(uuid=UUIDS[1], mig_uuids=("MIG-x1", "MIG-x2")),
                      FakeGpu(uuid=UUIDS[2], bus_id="00000001:C1:00.0")])
    gpus, reason = read_node_gpus(nvml)
    assert reason is None and nvml.state["init"] == 0
    assert [(g.nvml_index, g.pci_bus_id, g.uuid, g.mig_uuids) for g in gpus] == [
        (0, "0000:1b:00.0", UUIDS[0], ()), (1, "0000:3b:00.0", UUIDS[1], ("MIG-x1", "MIG-x2")),
        (2, "0001:c1:00.0", UUIDS[2], ())]
    assert read_node_gpus(fake_nvml(init_error=NVML_ERROR_LIBRARY_NOT_FOUND))[0] is None


@pytest.mark.parametrize("visible, local_rank, local_size, expected", [
    (None, 0, 3, ["0000:1b:00.0"]),
    (None, 2, 3, ["0000:5b:00.0"]),
    ("2,0", 0, 2, ["0000:5b:00.0"]),                  # CUDA order: entry 0 is NVML's GPU 2
    ("2,0", 1, 2, ["0000:1b:00.0"]),
    (UUIDS[2], 3, 4, ["0000:5b:00.0"]),              # --gpu-bind: one GPU, whatever the local rank
    (f"{UUIDS[1]},{UUIDS[0]}", 1, 2, ["0000:1b:00.0"]),
    ("GPU-aaaa", 0, 1, ["0000:1b:00.0"]),            # a unique UUID prefix
    ("GPU-bbbb", 0, 1, []),                          # an ambiguous one: no GPU rather than a guess
    ("", 0, 1, []),
])
def test_gpus_of_process_follows_the_one_rule(visible, local_rank, local_size, expected):
    nvml = fake_nvml([FakeGpu(uuid=u) for u in UUIDS])
    env = {} if visible is None else {"CUDA_VISIBLE_DEVICES": visible}
    assert [g.pci_bus_id for g in gpus_of_process(local_rank, local_size, env, nvml_module=nvml)] == expected
    assert nvml.state["init"] == 0


def test_all_visible_indices_for_a_whole_node_monitor():
    nvml = fake_nvml([FakeGpu(uuid=u) for u in UUIDS])
    assert all_visible_indices({"CUDA_VISIBLE_DEVICES": f"2,{UUIDS[0]},2"}, nvml_module=nvml)[0] == [2, 0]
    assert all_visible_indices({}, nvml_module=nvml)[0] == [0, 1, 2]
    indices, reason, _ = all_visible_indices({"CUDA_VISIBLE_DEVICES": ""}, nvml_module=nvml)
    assert indices == [] and "selects no GPU" in reason
    assert nvml.state["init"] == 0


def test_tf_sync_devices_never_imports_tensorflow(monkeypatch):
    monkeypatch.delitem(sys.modules, "tensorflow", raising=False)
    assert tf_sync_devices() is None
    assert "tensorflow" not in sys.modules
    calls = []
    fake_tf = types.SimpleNamespace(test=types.SimpleNamespace(
        experimental=types.SimpleNamespace(sync_devices=lambda: calls.append(1))))
    monkeypatch.setitem(sys.modules, "tensorflow", fake_tf)
    fence = tf_sync_devices()
    fence()
    assert calls == [1]
    monkeypatch.setitem(sys.modules, "tensorflow", types.SimpleNamespace(test=types.SimpleNamespace()))
    assert tf_sync_devices() is None                    # TF older than 2.12


def test_failing_sync_is_noted_not_fatal():
    def sync():
        raise RuntimeError("sync_devices() must be called eagerly")

    gpu = FakeGpu(energy_mj=0)
    meter = gpu_meter(fake_nvml([gpu]), sync=sync)
    meter.begin("e")
    gpu.energy_mj = 2000
    assert meter.end("e").gpu_energy_j == 2.0
    assert any("sync failed" in w for w in meter.describe()["warnings"])
    meter.stop()
