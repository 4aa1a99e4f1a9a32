"""On a real NVIDIA GPU (``pytest -m gpu tests/test_energy_gpu.py``): the GPU a rank trains on is
the one it meters, NVML's window energy agrees with nvidia-smi, the comm fence times the
all-reduce and not the kernel before it, and Horovod has NCCL.

Skipped where there is no GPU, no nvidia-smi or no GPU TensorFlow (the reason is given); the same
decisions are tested with faithful fakes in test_gpu_binding.py, test_energy_meter.py,
test_energy_nvml.py, test_scaling_devices.py and test_scaling_preflight.py.
"""
from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from common.gpu_binding import GpuChoice
from conftest import run_module
from energy.config import EnergyConfig
from energy.meter import EnergyMeter, Placement

REPO = Path(__file__).resolve().parents[1]
LOAD = REPO / "tests" / "helpers" / "energy_gpu_load.py"
WINDOW_S = 10.0

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(shutil.which("nvidia-smi") is None, reason="no nvidia-smi: not an NVIDIA GPU machine")]


def _nvml_gpu_count() -> int:
    try:
        import pynvml
        pynvml.nvmlInit()
    except Exception:
        return 0
    try:
        return pynvml.nvmlDeviceGetCount()
    finally:
        pynvml.nvmlShutdown()


@pytest.fixture(scope="module")
def preflight_report() -> dict:
    """``python -m scaling.preflight --json`` alone on this machine: rank 0's object."""
    if _nvml_gpu_count() == 0:
        pytest.skip("NVML finds no GPU on this machine")
    res = run_module("scaling.preflight", ["--json"], timeout=600)
    if res.returncode == 2:
        pytest.fail(f"preflight refused: {res.stderr.strip()}")
    (report,) = json.loads(res.stdout)
    if not report["checks"].get("tf_built_with_cuda"):
        pytest.skip("TensorFlow here is a CPU build (make install TF_BUILD=gpu)")
    return report


def test_pinned_gpu_is_the_trained_and_the_metered_one(preflight_report):
    r = preflight_report
    assert r["device"].startswith("GPU "), r
    assert r["gpu_pci_bus_id"] and r["checks"]["tf_gpu_bus_ids"] == [r["gpu_pci_bus_id"]], r["checks"]
    assert "GPU:0" in r["checks"]["tiny_op_device"]
    assert r["nvml_energy"] in ("nvml-energy-counter", "nvml-power-integrated"), r["warnings"]
    assert r["ok"], r["problems"]


def test_comm_fence_times_the_allreduce_not_the_kernel(preflight_report):
    fence = preflight_report["checks"]["fence"]
    print(f"kernel {1e3 * fence['kernel_s']:.1f} ms, timed all-reduce after it {1e3 * fence['timed_allreduce_s']:.2f} ms")
    assert fence["timed_allreduce_s"] < 0.5 * fence["kernel_s"]


def test_horovod_has_nccl_on_a_gpu_machine(preflight_report):
    assert preflight_report["checks"]["horovod_built"]["nccl"], "Horovod without NCCL operations"


def test_nvml_window_of_the_pinned_gpu_matches_nvidia_smi_power(tmp_path):
    if _nvml_gpu_count() == 0:
        pytest.skip("NVML finds no GPU on this machine")
    env = {**os.environ, "PYTHONPATH": str(REPO), "TF_CPP_MIN_LOG_LEVEL": "2"}
    load = subprocess.Popen([sys.executable, str(LOAD), "300"], cwd=REPO, stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, text=True, env=env)
    smi = None
    try:
        first = load.stdout.readline().split()
        if not first or first[0] != "ready":
            pytest.skip(f"GPU load did not start ({' '.join(first) or 'TensorFlow without GPU support?'})")
        bus_id = first[1]
        readings: list[float] = []
        smi = subprocess.Popen(["nvidia-smi", "-i", bus_id, "--query-gpu=power.draw",
                                "--format=csv,noheader,nounits", "-lms", "100"],
                               stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        collecting = threading.Event()

        def reader():
            for line in smi.stdout:
                if collecting.is_set():
                    try:
                        readings.append(float(line.strip()))
                    except ValueError:
                        pass

        thread = threading.Thread(target=reader, daemon=True)
        thread.start()
        # The meter opens the GPU the load trains on by its bus id, as a run's meter does.
        meter = EnergyMeter.for_rank(Placement(node="gpu-check"), EnergyConfig(), t0=time.monotonic(), on_gpu=True,
                                     gpus=(GpuChoice(0, bus_id, None, None),))
        meter.start()
        collecting.set()
        meter.begin("steady")
        time.sleep(WINDOW_S)
        window = meter.end("steady")
        collecting.clear()
        info = meter.describe()
        meter.stop()
    finally:
        load.kill()
        if smi is not None:
            smi.kill()
    assert window.gpu_energy_source == "measured", info["domains"]["gpu"]
    assert len(readings) >= 0.5 * WINDOW_S / 0.1, f"too few nvidia-smi readings: {len(readings)}"
    smi_energy_j = statistics.fmean(readings) * window.time_s
    rel = abs(window.gpu_energy_j - smi_energy_j) / smi_energy_j
    print(f"GPU {bus_id} NVML {info['domains']['gpu']['method']}: {window.gpu_energy_j:.1f} J; nvidia-smi mean "
          f"{statistics.fmean(readings):.1f} W x {window.time_s:.2f} s = {smi_energy_j:.1f} J; diff {rel:.2%}")
    assert rel <= 0.05


@pytest.mark.gpu
@pytest.mark.skipif(shutil.which("nvidia-smi") is None, reason="no nvidia-smi: not an NVIDIA GPU machine")
def test_real_nvml_telemetry_reads_every_gpu_field_and_agrees_with_nvidia_smi_temperature():
    if _nvml_gpu_count() == 0:
        pytest.skip("NVML finds no GPU on this machine")
    index = 0      # NVML's first GPU; nvidia-smi -i numbers GPUs the same way (PCI order)
    meter = EnergyMeter(EnergyConfig(), rank=0, local_rank=0, node="gpu-test", read_node_counters=False,
                        gpu_index=index, t0=time.monotonic())
    try:
        meter.sample_now()
        row = meter.drain_telemetry()[-1]
        fields = meter.describe()["telemetry"]["fields"]
    finally:
        meter.stop()
    gpu_fields = {k: v for k, v in fields.items() if k.startswith("gpu_")}
    assert set(gpu_fields.values()) == {"read"}, gpu_fields
    assert 0 <= row.gpu_util_ratio <= 1 and row.gpu_mem_used_bytes > 0 and row.gpu_sm_clock_mhz > 0
    smi = subprocess.run(["nvidia-smi", "-i", str(index), "--query-gpu=temperature.gpu", "--format=csv,noheader,nounits"],
                         capture_output=True, text=True, timeout=30, check=True)
    assert abs(float(smi.stdout.strip()) - row.gpu_temp_c) <= 5
    assert row.gpu_throttle_reasons is not None
