"""common.runinfo: the hardware record of a benchmark (GPU names come from the caller)."""
from __future__ import annotations

import os

from common import runinfo


def test_hardware_on_a_gpu_names_the_first_gpu():
    hw = runinfo.hardware("/job:localhost/replica:0/task:0/device:GPU:0", ["NVIDIA H100", "NVIDIA H100"])
    assert hw["device_kind"] == "GPU" and hw["device_name"] == "NVIDIA H100" and hw["gpus"] == ["NVIDIA H100"] * 2
    assert hw["device"].endswith("GPU:0") and hw["node"]


def test_hardware_on_the_cpu_names_the_cpu_model():
    hw = runinfo.hardware("/job:localhost/replica:0/task:0/device:CPU:0", [])
    assert hw["device_kind"] == "CPU" and hw["device_name"] == runinfo.cpu_model() and hw["gpus"] == []
    assert 1 <= hw["cpus_usable"] <= (os.cpu_count() or 1) == hw["logical_cpus"]
    # A GPU device string but no name known: still says GPU rather than guessing a CPU.
    assert runinfo.hardware("GPU:0", [])["device_name"] == "GPU"


def test_load_average():
    load = runinfo.load_average_1m()
    assert load is None or load >= 0.0
