"""On a real NVIDIA GPU: NVML window energy agrees with nvidia-smi power x time within 5 %.

Skipped where there is no GPU, no nvidia-smi or no GPU TensorFlow; the same code paths are
tested on a fake NVML module in test_energy_nvml.py.
"""
from __future__ import annotations

import os
import shutil
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from energy.config import EnergyConfig
from energy.meter import EnergyMeter

REPO = Path(__file__).resolve().parents[1]
LOAD = REPO / "tests" / "helpers" / "energy_gpu_load.py"
WINDOW_S = 10.0


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


def _physical_gpu0() -> int:
    """NVML index of the GPU the load runs on (its first visible GPU)."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",")[0].strip()
    return int(visible) if visible.isdigit() else 0


@pytest.mark.gpu
@pytest.mark.skipif(shutil.which("nvidia-smi") is None, reason="no nvidia-smi: not an NVIDIA GPU machine")
def test_nvml_window_matches_nvidia_smi_power(tmp_path):
    if _nvml_gpu_count() == 0:
        pytest.skip("NVML finds no GPU on this machine")
    index = _physical_gpu0()
    load = subprocess.Popen([sys.executable, str(LOAD), "300"], cwd=REPO, stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, text=True)
    smi = None
    try:
        first = load.stdout.readline().strip()
        if first != "ready":
            pytest.skip(f"GPU load did not start ({first or 'TensorFlow without GPU support?'})")
        readings: list[float] = []
        smi = subprocess.Popen(["nvidia-smi", "-i", str(index), "--query-gpu=power.draw",
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
        meter = EnergyMeter(EnergyConfig(), rank=0, local_rank=0, node="gpu-check", read_node_counters=False,
                            gpu_index=index, t0=time.monotonic())
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
    print(f"NVML {info['domains']['gpu']['method']}: {window.gpu_energy_j:.1f} J; nvidia-smi mean "
          f"{statistics.fmean(readings):.1f} W x {window.time_s:.2f} s = {smi_energy_j:.1f} J; diff {rel:.2%}")
    assert rel <= 0.05


@pytest.mark.gpu
@pytest.mark.skipif(shutil.which("nvidia-smi") is None, reason="no nvidia-smi: not an NVIDIA GPU machine")
def test_real_nvml_telemetry_reads_every_gpu_field_and_agrees_with_nvidia_smi_temperature():
    if _nvml_gpu_count() == 0:
        pytest.skip("NVML finds no GPU on this machine")
    index = _physical_gpu0()
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
