"""Pin this rank's device in TensorFlow: the one rule of ``common.gpu_binding`` applied before
TensorFlow runs its first op, once per process, on every launch path.

``pin_rank`` is called right where a path first needs TensorFlow: scaling.run before Horovod's
object collectives (horovodrun --gloo) or before the engine starts, the all-reduce benchmark
and the preflight after ``hvd.init()``. Later calls return the same answer. It sets the visible
devices (this rank's GPU and the CPU) and memory growth on that GPU; TensorFlow refuses both
once it has initialised its devices, so a path that ran an op first fails loudly here, even on
a CPU-only machine.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from common.errors import UserError
from common.gpu_binding import (CUDA_ORDER, Decision, RankGpu, decide, node_sharing, nvidia_device_files,
                                visible_gpus)
from energy.nvml import read_node_gpus


@dataclass(frozen=True)
class Pinned:
    """What ``pin_rank`` decided and applied for this process."""
    decision: Decision
    tf_gpu_count: int                    # GPUs TensorFlow listed before pinning
    details: dict[str, Any] = field(default_factory=dict)   # TensorFlow's get_device_details of the GPU

    @property
    def on_gpu(self) -> bool:
        return self.decision.on_gpu

    @property
    def identity(self) -> str | None:
        """What ``node_sharing`` compares (None on the CPU; several GPUs: the first)."""
        return self.decision.gpus[0].identity if self.decision.gpus else None

    def describe(self) -> dict[str, Any]:
        """JSON-able: run.json's ``device`` of this rank, the preflight's row."""
        return {"device": self.decision.device, "on_gpu": self.on_gpu, "tf_gpu_count": self.tf_gpu_count,
                "gpus": [g.to_dict() for g in self.decision.gpus], "warning": self.decision.warning,
                **({"compute_capability": list(self.details["compute_capability"])}
                   if "compute_capability" in self.details else {})}


_pinned: Pinned | None = None


def gpu_hardware_seen(dev_dir: str = "/dev") -> str | None:
    """Evidence of an NVIDIA GPU on this node: its device file, or nvidia-smi listing one."""
    try:
        files = nvidia_device_files(os.listdir(dev_dir))
    except OSError:
        files = []
    if files:
        return str(Path(dev_dir) / files[0])
    smi = shutil.which("nvidia-smi")
    if smi:
        try:
            res = subprocess.run([smi, "-L"], capture_output=True, text=True, timeout=20, check=False)
        except (OSError, subprocess.TimeoutExpired):
            return None
        if res.returncode == 0 and res.stdout.strip().startswith("GPU"):
            return "nvidia-smi -L"
    return None


def prepare_cuda_environment(env: dict | os._Environ = os.environ) -> None:
    """Before CUDA starts: TensorFlow's GPU order = NVML's (PCI bus order), unless the user chose."""
    env.setdefault("CUDA_DEVICE_ORDER", CUDA_ORDER)


def decide_for_process(local_rank: int, local_size: int, tf_gpu_count: int, *, share: bool,
                       all_local: bool = False, env: Mapping[str, str] = os.environ, nvml_module: Any = None,
                       dev_dir: str = "/dev") -> Decision:
    """The decision for this process from what TensorFlow, NVML and the node report."""
    cvd = env.get("CUDA_VISIBLE_DEVICES")
    visible = None
    if tf_gpu_count:
        node, _reason = read_node_gpus(nvml_module)
        if node is not None:
            visible, problem = visible_gpus(cvd, node)
            if problem:
                return Decision(refusal=problem)
    return decide(local_rank=local_rank, local_size=local_size, tf_gpu_count=tf_gpu_count, visible=visible,
                  share=share, all_local=all_local, gpu_hardware=None if tf_gpu_count else gpu_hardware_seen(dev_dir),
                  cuda_visible_devices=cvd, cuda_device_order=env.get("CUDA_DEVICE_ORDER"))


def pin_rank(local_rank: int, local_size: int, *, share: bool = False, all_local: bool = False,
             nvml_module: Any = None, dev_dir: str = "/dev") -> Pinned:
    """Decide and apply this process's device (once; later calls return the first answer).

    Raises ``UserError`` (one line) when the rule refuses: a shared GPU without ``share``, a
    GPU on the node that TensorFlow cannot see. Raises RuntimeError when TensorFlow already
    initialised its devices (a TensorFlow op ran before the pinning: a bug of the caller).
    """
    global _pinned
    if _pinned is not None:
        return _pinned
    prepare_cuda_environment()
    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")
    decision = decide_for_process(local_rank, local_size, len(gpus), share=share, all_local=all_local,
                                  nvml_module=nvml_module, dev_dir=dev_dir)
    if decision.refusal:
        raise UserError(decision.refusal)
    chosen = [gpus[g.position] for g in decision.gpus]
    cpus = tf.config.list_physical_devices("CPU")
    try:
        tf.config.set_visible_devices(cpus + chosen)
        # TensorFlow skips a change to what is already set, so on a CPU-only node the line above
        # cannot notice an initialised runtime; configuring the CPU (one logical device, as by
        # default) always can, so pinning late fails on every machine, not only on GPU nodes.
        if tf.config.get_logical_device_configuration(cpus[0]) is None:
            tf.config.set_logical_device_configuration(cpus[0], [tf.config.LogicalDeviceConfiguration()])
        for gpu in chosen:
            tf.config.experimental.set_memory_growth(gpu, True)
    except RuntimeError as exc:
        raise RuntimeError(f"device pinning came after TensorFlow initialised its devices ({exc}): "
                           "pin_rank must run before the first TensorFlow op") from None
    details = tf.config.experimental.get_device_details(chosen[0]) if chosen else {}
    _pinned = Pinned(decision, len(gpus), dict(details))
    return _pinned


def pinned() -> Pinned | None:
    """This process's pinning, or None before ``pin_rank``."""
    return _pinned


def check_node_sharing(coll, rank: int, node: str, pin: Pinned, share: bool) -> int:
    """Every rank's GPU gathered: raises ``UserError`` on every rank when ranks of one node share
    a GPU without ``share``; returns how many ranks use this rank's GPU (1: its own)."""
    rows = coll.allgather(RankGpu(rank, node, pin.identity))
    sharers, problem = node_sharing(rows, share)
    if problem:
        raise UserError(problem)
    return sharers.get(rank, 1)


def devices_summary(rows: list[dict]) -> str:
    """One phrase naming the devices of every rank (progress line, run.json, report), e.g.
    '4 x GPU 0000:3b:00.0 (NVIDIA A100) ...' grouped by device name, or '2 x CPU'."""
    if not rows:
        return "unknown device"
    counts: dict[str, int] = {}
    for row in rows:
        gpus = row.get("gpus") or []
        label = ", ".join(g.get("name") or "GPU" for g in gpus) if gpus else "CPU"
        if gpus and row.get("gpu_sharers", 1) > 1:
            label += f" shared by {row['gpu_sharers']} ranks"
        counts[label] = counts.get(label, 0) + 1
    return "; ".join(f"{n} rank(s) on {label}" for label, n in counts.items())


# -- worker ports (tf.distribute across processes) ---------------------------------------------

# As TensorFlow's SlurmClusterResolver: a fixed first port on each node, one port per local task.
PORT_BASE = 8888
PORT_JOB_SLOTS = 1000          # distinct job offsets; two jobs sharing a node rarely meet
PORT_SLOT_WIDTH = 32           # ports per job: local ranks of one node


def _job_key(env: Mapping[str, str]) -> str:
    for key in ("SLURM_JOB_ID", "PMIX_NAMESPACE", "OMPI_MCA_ess_base_jobid", "HOROVOD_GLOO_RENDEZVOUS_PORT"):
        if env.get(key):
            return f"{env[key]}.{env.get('SLURM_STEP_ID', '')}"
    return ""


def worker_port(local_rank: int, base_port: int = 0, env: Mapping[str, str] = os.environ) -> int:
    """The port this rank's tf.distribute worker listens on, known without binding a probe socket.

    ``local_rank``: the process's index among the job's processes on its host. Ports:
    ``SLURM_STEP_RESV_PORTS`` (srun --resv-ports) when set: its ``local_rank``-th port; else
    ``base_port`` + local rank when the user gave one; else ``PORT_BASE`` + an offset derived
    from the job id (so two jobs on one node differ) + local rank.
    """
    reserved = env.get("SLURM_STEP_RESV_PORTS")
    if reserved:
        ports: list[int] = []
        for part in reserved.split(","):
            lo, _, hi = part.strip().partition("-")
            try:
                ports += list(range(int(lo), int(hi or lo) + 1))
            except ValueError:
                raise UserError(f"SLURM_STEP_RESV_PORTS={reserved!r}: not a port range") from None
        if local_rank >= len(ports):
            raise UserError(f"SLURM_STEP_RESV_PORTS={reserved!r} holds {len(ports)} ports, local rank "
                            f"{local_rank} needs one (srun --resv-ports needs one per task)")
        return ports[local_rank]
    if base_port:
        return base_port + local_rank
    key = _job_key(env)
    offset = (zlib.crc32(key.encode()) % PORT_JOB_SLOTS) * PORT_SLOT_WIDTH if key else 0
    return PORT_BASE + offset + local_rank % PORT_SLOT_WIDTH
