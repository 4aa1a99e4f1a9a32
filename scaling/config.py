"""The [scaling] section: engine, mode, batch and epoch plan, output."""
from __future__ import annotations

from dataclasses import dataclass, field

ENGINES = ("horovod", "mirrored")
MODES = ("strong", "weak")


@dataclass
class ScalingConfig:
    engine: str = field(default="horovod", metadata={"choices": ENGINES, "help": "data-parallel engine"})
    mode: str = field(default="weak", metadata={
        "choices": MODES, "help": "strong: fixed --global-batch split over ranks; weak: fixed --batch-per-rank"})
    global_batch: int = field(default=256, metadata={"help": "showers per critic step over all replicas (strong mode)"})
    batch_per_rank: int = field(default=128, metadata={"help": "showers per critic step per replica (weak mode)"})
    epochs: int = field(default=4, metadata={"help": "epochs to run (an epoch is a fixed number of iterations)"})
    iterations_per_epoch: int = field(default=20, metadata={"help": "iterations per epoch on every rank"})
    warmup_epochs: int = field(default=1, metadata={"help": "leading epochs flagged as warm-up (excluded from medians)"})
    out: str = field(default="", metadata={"help": "run directory; empty = results/<study>/<engine>-<mode>-n<N>"})
    study: str = field(default="default", metadata={"help": "study name recorded in run.json"})
    lr_scaling: str = field(default="none", metadata={
        "choices": ("none", "linear"), "help": "multiply the learning rate by the number of replicas (linear)"})
    fusion_threshold_bytes: int = field(default=-1, metadata={"help": "Horovod tensor-fusion buffer (-1 = Horovod default, 0 = off)"})
    cycle_time_ms: float = field(default=-1.0, metadata={"help": "Horovod cycle time (-1 = Horovod default)"})
    cpu_replicas: int = field(default=1, metadata={
        "help": "mirrored engine in one process without GPUs: split the CPU into this many logical devices"})
    global_noise: bool = field(default=False, metadata={
        "help": "draw the whole global batch's noise on every replica (bit-comparable to 1 replica; slower)"})
    inter_op_threads: int = field(default=1, metadata={"help": "TensorFlow inter-op threads per rank"})
    worker_base_port: int = field(default=0, metadata={
        "help": "mirrored engine across processes: first worker port (0 = pick free ports)"})

    def check(self) -> None:
        for name in ("global_batch", "batch_per_rank", "epochs", "iterations_per_epoch", "cpu_replicas",
                     "inter_op_threads"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1")
        if not 0 <= self.warmup_epochs < self.epochs:
            raise ValueError(f"warmup_epochs must be in 0..epochs-1 (epochs is {self.epochs})")
        if self.fusion_threshold_bytes < -1:
            raise ValueError("fusion_threshold_bytes must be -1 (default), 0 (off) or a byte count")
        if not 0 <= self.worker_base_port <= 65000:
            raise ValueError("worker_base_port must be 0..65000")

    def set_horovod_environment(self) -> None:
        """Put the Horovod settings where ``hvd.init()`` reads them (the environment). Done
        before any collective: under horovodrun the first one may initialise Horovod."""
        import os

        if self.fusion_threshold_bytes >= 0:
            os.environ["HOROVOD_FUSION_THRESHOLD"] = str(self.fusion_threshold_bytes)
        if self.cycle_time_ms >= 0:
            os.environ["HOROVOD_CYCLE_TIME"] = str(self.cycle_time_ms)

    def per_replica_batch(self, replicas: int) -> int:
        """Showers per critic step on each replica; a strong-mode batch must split evenly."""
        if self.mode == "weak":
            return self.batch_per_rank
        if self.global_batch % replicas:
            raise ValueError(f"global_batch {self.global_batch} is not divisible by {replicas} replicas")
        return self.global_batch // replicas
