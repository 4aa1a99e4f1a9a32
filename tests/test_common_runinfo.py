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


def test_site_is_the_label_then_slurms_cluster_else_unknown():
    from common.runinfo import site_name

    assert site_name(" leonardo ", {"SLURM_CLUSTER_NAME": "x"}) == ("leonardo", "--site")
    assert site_name(None, {"SLURM_CLUSTER_NAME": "cnaf-hpc"}) == ("cnaf-hpc", "SLURM_CLUSTER_NAME")
    assert site_name(None, {"SLURM_CLUSTER_NAME": "cnaf-hpc", "BOLOGAN_SITE": "oph"}) == ("oph", "BOLOGAN_SITE")
    assert site_name("", {})[0] == "unknown"


def test_a_container_is_recognised_by_its_environment_or_its_singularity_folder(tmp_path):
    from common.runinfo import container_runtime

    assert container_runtime({"PATH": "/bin"}, str(tmp_path)) == {"in_container": False, "runtime": None,
                                                                  "evidence": []}
    got = container_runtime({"APPTAINER_CONTAINER": "/img.sif", "SINGULARITY_NAME": "img"}, str(tmp_path))
    assert got["in_container"] and got["runtime"] == "apptainer"
    assert got["evidence"] == ["APPTAINER_CONTAINER", "SINGULARITY_NAME"]
    (tmp_path / ".singularity.d").mkdir()
    assert container_runtime({}, str(tmp_path)) == {"in_container": True, "runtime": "singularity",
                                                    "evidence": ["/.singularity.d"]}


def test_node_memory_comes_from_meminfo(tmp_path):
    from common.runinfo import memory_bytes

    (tmp_path / "meminfo").write_text("MemTotal:       263842112 kB\nMemFree:         1000 kB\n")
    assert memory_bytes(str(tmp_path / "meminfo")) == 263842112 * 1024
    assert memory_bytes(str(tmp_path / "absent")) is None


def test_gpu_inventory_names_models_driver_and_cuda_from_nvml():
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).parent / "helpers"))
    from energy_fakes import FakeGpu, fake_nvml

    from energy.gpuinfo import gpu_inventory

    nvml = fake_nvml([FakeGpu(name="NVIDIA A100-SXM4-64GB"), FakeGpu(name=b"NVIDIA A100-SXM4-64GB")])
    got = gpu_inventory(nvml)
    assert got == {"gpu_models": ["NVIDIA A100-SXM4-64GB"] * 2, "gpu_driver_version": "550.54.15",
                   "cuda_driver_version": "12.4"}
    assert nvml.state["init"] == 0                       # NVML released again
    missing = gpu_inventory(fake_nvml(init_error=12))
    assert missing["gpu_models"] == [] and "nvmlInit failed" in missing["gpu_reason"]
