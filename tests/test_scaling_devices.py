"""Pinning this rank's device before TensorFlow's first op (scaling.devices), on every launch
path; the refusal of a GPU node whose TensorFlow sees none; tf.distribute worker ports.

TensorFlow refuses to change the visible devices once it has initialised them, and pinning
sets the visible CPU devices too, so on this CPU-only machine a path that runs an op before
pinning fails here just as it would on a GPU node.
"""
from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from common.errors import UserError
from conftest import ROOT, run_module
from scaling.devices import PORT_BASE, devices_summary, gpu_hardware_seen, worker_port


def _python(code: str, env: dict | None = None) -> subprocess.CompletedProcess:
    full = {**os.environ, "PYTHONPATH": str(ROOT), "TF_CPP_MIN_LOG_LEVEL": "2", **(env or {})}
    return subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300,
                          env=full)


def test_pinning_before_the_first_op_and_once_only():
    res = _python("""
import tensorflow as tf
from scaling.devices import pin_rank, pinned
p = pin_rank(0, 1)
assert pin_rank(1, 2) is p and pinned() is p       # decided once per process
assert p.decision.device == "CPU" and not p.on_gpu
assert [d.device_type for d in tf.config.get_visible_devices()] == ["CPU"]
print(tf.reduce_sum(tf.ones(3)).numpy())
""")
    assert res.returncode == 0, res.stderr[-2000:]
    assert res.stdout.strip() == "3.0"


def test_pinning_after_an_op_fails_loudly():
    res = _python("""
import tensorflow as tf
from scaling.devices import pin_rank
tf.ones(1) + 1
pin_rank(0, 1)
""")
    assert res.returncode != 0
    assert "pin_rank must run before the first TensorFlow op" in res.stderr


def test_horovod_collectives_path_pins_before_its_first_collective(tmp_path):
    """horovodrun --gloo: scaling.run agrees on the settings through Horovod's object
    collectives, which run TensorFlow ops; the pinning must come before them (here a
    collective that runs an op, as allgather_object does, stands in for Horovod's)."""
    res = _python(f"""
import tensorflow as tf
from scaling import run
from scaling.collectives import HorovodCollectives
from scaling.devices import pinned
from scaling.world import World

class OpRunningCollectives(HorovodCollectives):
    def __init__(self):
        pass
    def allgather(self, obj):
        assert pinned() is not None, "collective before pinning"
        tf.constant([1.0]) + 1.0            # initialises TensorFlow's devices
        return [obj]

world = World(0, 1, 0, 1, "n0", "n0", "horovodrun", 1)
checked = run._checked_by_every_rank(["--out", {str(tmp_path / 'r')!r}], world, OpRunningCollectives())
print(pinned().decision.device)
""")
    assert res.returncode == 0, res.stderr[-2000:]
    assert res.stdout.strip().endswith("CPU")


def _fake_nvidia_smi(folder: Path) -> Path:
    """An nvidia-smi that lists one GPU, as on a node with a driver (no GPU TensorFlow here)."""
    folder.mkdir()
    smi = folder / "nvidia-smi"
    smi.write_text("#!/bin/sh\necho 'GPU 0: NVIDIA A100-SXM4-40GB (UUID: GPU-aaaa1111-0000-0000-0000-000000000000)'\n")
    smi.chmod(smi.stat().st_mode | stat.S_IXUSR)
    return folder


def test_gpu_hardware_seen_from_device_files_or_nvidia_smi(tmp_path, monkeypatch):
    dev = tmp_path / "dev"
    dev.mkdir()
    (dev / "nvidiactl").write_text("")
    monkeypatch.setenv("PATH", "/nonexistent")
    assert gpu_hardware_seen(str(dev)) is None
    (dev / "nvidia0").write_text("")
    assert gpu_hardware_seen(str(dev)) == str(dev / "nvidia0")
    (dev / "nvidia0").unlink()
    monkeypatch.setenv("PATH", str(_fake_nvidia_smi(tmp_path / "bin")))
    assert gpu_hardware_seen(str(dev)) == "nvidia-smi -L"


def test_run_on_a_gpu_node_whose_tensorflow_sees_no_gpu_exits_2_with_one_line(tmp_path):
    bin_dir = _fake_nvidia_smi(tmp_path / "bin")
    env = {"PATH": f"{bin_dir}:{os.environ['PATH']}"}
    env.pop("CUDA_VISIBLE_DEVICES", None)
    out = tmp_path / "run"
    res = run_module("scaling.run", ["--epochs", "2", "--warmup-epochs", "1", "--iterations-per-epoch", "1",
                                     "--out", str(out)], env=env, timeout=300)
    assert res.returncode == 2, res.stderr[-2000:]
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, res.stderr
    assert lines[0].startswith("error: this node has an NVIDIA GPU (nvidia-smi -L) but TensorFlow sees none")
    assert not out.exists()


def test_worker_ports_from_slurm_reservation_user_base_or_job_id():
    assert worker_port(1, env={"SLURM_STEP_RESV_PORTS": "12000-12003"}) == 12001
    assert worker_port(2, env={"SLURM_STEP_RESV_PORTS": "12000,12005-12006"}) == 12006
    with pytest.raises(UserError, match="holds 2 ports, local rank 2"):
        worker_port(2, env={"SLURM_STEP_RESV_PORTS": "12000-12001"})
    assert worker_port(3, base_port=20000, env={}) == 20003
    assert worker_port(0, env={}) == PORT_BASE
    a = [worker_port(r, env={"SLURM_JOB_ID": "4711"}) for r in range(4)]
    assert a == list(range(a[0], a[0] + 4))                       # one port per local rank, no probing
    assert a == [worker_port(r, env={"SLURM_JOB_ID": "4711"}) for r in range(4)]   # every rank agrees
    assert worker_port(0, env={"SLURM_JOB_ID": "4712"}) != a[0]     # another job on the node: elsewhere
    assert all(PORT_BASE <= p < 65536 for p in a)


def test_devices_summary_names_every_rank_device():
    rows = [{"gpus": [{"name": "NVIDIA A100"}], "gpu_sharers": 1}] * 3 + [{"gpus": [], "gpu_sharers": 0}]
    assert devices_summary(rows) == "3 rank(s) on NVIDIA A100; 1 rank(s) on CPU"
    assert devices_summary([{"gpus": [{"name": "H100"}], "gpu_sharers": 2}]) == "1 rank(s) on H100 shared by 2 ranks"


def test_decision_from_what_tensorflow_nvml_and_the_node_report(tmp_path):
    sys.path.insert(0, str(Path(__file__).parent / "helpers"))
    from energy_fakes import FakeGpu, bus_id_of_slot, fake_nvml

    from common.gpu_binding import normalise_bus_id
    from scaling.devices import decide_for_process

    nvml = fake_nvml([FakeGpu(uuid="GPU-a"), FakeGpu(uuid="GPU-b")])
    env = {"CUDA_VISIBLE_DEVICES": "1,0", "CUDA_DEVICE_ORDER": "PCI_BUS_ID"}
    d = decide_for_process(0, 2, 2, share=False, env=env, nvml_module=nvml)
    assert [g.pci_bus_id for g in d.gpus] == [normalise_bus_id(bus_id_of_slot(1))] and d.warning is None
    d = decide_for_process(2, 3, 2, share=False, env=env, nvml_module=nvml)
    assert d.refusal.startswith("3 ranks on this node but 2 GPUs")
    dev = tmp_path / "dev"
    dev.mkdir()
    (dev / "nvidia0").write_text("")
    d = decide_for_process(0, 1, 0, share=False, env={}, nvml_module=nvml, dev_dir=str(dev))
    assert "TensorFlow sees none" in d.refusal
    assert nvml.state["init"] == 0


@pytest.mark.mpi
@pytest.mark.skipif(not (Path(sys.executable).parent / "horovodrun").exists(), reason="no horovodrun next to python")
def test_horovodrun_gloo_run_pins_before_its_collectives(tmp_path):
    """Issue 22, item 1, for real: under horovodrun --gloo scaling.run agrees on its settings
    through Horovod's object collectives; pinning (which fails once TensorFlow initialised its
    devices) comes first, and run.json names every rank's device."""
    out = tmp_path / "gloo"
    cmd = [str(Path(sys.executable).parent / "horovodrun"), "-np", "2", "-H", "localhost:2", "--gloo",
           sys.executable, "-m", "scaling.run", "--epochs", "2", "--warmup-epochs", "1", "--iterations-per-epoch", "1",
           "--batch-per-rank", "16", "--out", str(out)]
    res = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600,
                         env={**os.environ, "PYTHONPATH": str(ROOT), "TF_CPP_MIN_LOG_LEVEL": "2"})
    assert res.returncode == 0, (res.stdout + res.stderr)[-3000:]
    meta = json.loads((out / "run.json").read_text())
    assert meta["launcher"] == "horovodrun" and [d["device"] for d in meta["devices"]] == ["CPU", "CPU"]
