"""The [scaling] section: engine, mode, batch and epoch plan, output."""
from __future__ import annotations

from dataclasses import dataclass, field

from common.settings import Range
from common.vocab import (COMM_TIMING_GRAPH, COMM_TIMING_MODES, COMM_TIMING_OFF, COMM_TIMING_UNFENCED, DEFAULT_BATCH_PER_RANK, DEFAULT_EPOCHS, DEFAULT_GLOBAL_BATCH, DEFAULT_ITERATIONS_PER_EPOCH,
                          DEFAULT_WARMUP_EPOCHS, ENGINE_HOROVOD, ENGINES, MODE_ENSEMBLE, MODE_WEAK, RUN_MODES)


@dataclass
class ScalingConfig:
    engine: str = field(default=ENGINE_HOROVOD, metadata={"choices": ENGINES, "help": "data-parallel engine"})
    mode: str = field(default=MODE_WEAK, metadata={
        "choices": RUN_MODES, "help": "strong: fixed --global-batch split over ranks; weak: fixed --batch-per-rank; "
                                      "ensemble: every group of --group-size ranks trains its own GAN (seed + member)"})
    global_batch: int = field(default=DEFAULT_GLOBAL_BATCH, metadata={"help": "showers per critic step over all replicas (strong mode)"})
    batch_per_rank: int = field(default=DEFAULT_BATCH_PER_RANK, metadata={"help": "showers per critic step per replica (weak mode)"})
    epochs: int = field(default=DEFAULT_EPOCHS, metadata={"help": "epochs to run (an epoch is a fixed number of iterations)"})
    iterations_per_epoch: int = field(default=DEFAULT_ITERATIONS_PER_EPOCH, metadata={"help": "iterations per epoch on every rank"})
    warmup_epochs: int = field(default=DEFAULT_WARMUP_EPOCHS, metadata={"help": "leading epochs flagged as warm-up (excluded from medians)"})
    out: str = field(default="", metadata={"help": "run directory; empty = results/<study>/<engine>-<mode>-n<N>"})
    study: str = field(default="default", metadata={"help": "study name recorded in run.json"})
    fusion_threshold_bytes: int = field(default=-1, metadata={"help": "Horovod tensor-fusion buffer (-1 = Horovod default, 0 = off)"})
    cycle_time_ms: float = field(default=-1.0, metadata={"help": "Horovod cycle time (-1 = Horovod default)",
                                                         "range": Range(-1.0)})
    cpu_replicas: int = field(default=1, metadata={
        "help": "mirrored engine in one process without GPUs: split the CPU into this many logical devices"})
    global_noise: bool = field(default=False, metadata={
        "help": "draw the whole global batch's noise on every replica (bit-comparable to 1 replica; slower)"})
    inter_op_threads: int = field(default=1, metadata={"help": "TensorFlow inter-op threads per rank"})
    comm_timing: str = field(default=COMM_TIMING_GRAPH, metadata={
        "choices": COMM_TIMING_MODES,
        "help": "graph: time Horovod's all-reduce between in-graph timestamps (comm_s per epoch; the "
                "reduction starts once every gradient exists); off: Horovod's own overlap of the "
                "all-reduce with back-propagation, comm_s NaN (use --timeline for where time goes); "
                "graph-unfenced: timestamps not waiting for the values, only to measure the fence's cost "
                "(comm_s then holds queued compute on GPUs)"})
    group_size: int = field(default=1, metadata={
        "help": "ensemble mode: ranks per member (each member trains its own GAN; --batch-per-rank per rank)"})
    member_names: list[str] = field(default_factory=list, metadata={
        "help": "ensemble mode: member names in member order (default m0,m1,...); --data may then be a "
                "pattern with {member}, or list one file per member"})
    worker_base_port: int = field(default=0, metadata={
        "help": "mirrored engine across processes: first worker port on each node, + local rank (0 = Slurm's "
                "reserved step ports when srun --resv-ports, else 8888 + an offset from the job id)"})
    share_gpu: bool = field(default=False, metadata={
        "help": "allow more ranks than GPUs on a node: ranks share a GPU and each reports its share of "
                "the GPU's energy (refused without it)"})
    variant: str = field(default="", metadata={
        "help": "name of the study variant this run measures (launch.study [variants]); labels its series"})
    steps_per_call: int = field(default=1, metadata={
        "help": "training iterations per compiled call (horovod: a loop in the graph; mirrored: unrolled "
                "per replica); must divide --iterations-per-epoch"})
    check_every: int = field(default=0, metadata={
        "help": "iterations between read-backs of the step results (NaN check, step times) and stop-flag "
                "agreements; a multiple of --steps-per-call that divides --iterations-per-epoch (0 = every "
                "call). On GPUs, a larger value keeps the host from waiting for the device every call"})

    def check(self) -> None:
        for name in ("global_batch", "batch_per_rank", "epochs", "iterations_per_epoch", "cpu_replicas",
                     "inter_op_threads", "group_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1")
        if not 0 <= self.warmup_epochs < self.epochs:
            raise ValueError(f"warmup_epochs must be in 0..epochs-1 (epochs is {self.epochs})")
        if -1 < self.cycle_time_ms < 0:
            raise ValueError(f"cycle_time_ms must be -1 (Horovod default) or >= 0, got {self.cycle_time_ms!r}")
        if self.fusion_threshold_bytes < -1:
            raise ValueError("fusion_threshold_bytes must be -1 (default), 0 (off) or a byte count")
        if not 0 <= self.worker_base_port <= 65000:
            raise ValueError("worker_base_port must be 0..65000")
        self._check_steps_per_call()
        if self.comm_timing != COMM_TIMING_GRAPH and self.engine != ENGINE_HOROVOD:
            raise ValueError(f"comm_timing {self.comm_timing!r} is for the horovod engine only "
                             "(tf.distribute's reduction is always timed in the graph)")

    def _check_steps_per_call(self) -> None:
        what = "steps_per_call (--steps-per-call)"
        if self.steps_per_call < 1:
            raise ValueError(f"{what} must be >= 1")
        if self.iterations_per_epoch % self.steps_per_call:
            raise ValueError(f"{what} {self.steps_per_call} does not divide iterations_per_epoch "
                             f"{self.iterations_per_epoch} (an epoch is a whole number of calls)")
        every = "check_every (--check-every)"
        if self.check_every < 0:
            raise ValueError(f"{every} must be >= 0 (0: once per call)")
        if self.check_every and (self.check_every % self.steps_per_call
                                 or self.iterations_per_epoch % self.check_every):
            raise ValueError(f"{every} {self.check_every} must be a multiple of steps_per_call "
                             f"{self.steps_per_call} that divides iterations_per_epoch {self.iterations_per_epoch}")

    @property
    def comm_timed(self) -> bool:
        """Whether the all-reduce is timed between in-graph timestamps."""
        return self.comm_timing != COMM_TIMING_OFF

    @property
    def comm_fenced(self) -> bool:
        """Whether those timestamps wait for the values (bologan.step.host_fence)."""
        return self.comm_timing != COMM_TIMING_UNFENCED

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
        if self.mode in (MODE_WEAK, MODE_ENSEMBLE):   # an ensemble member keeps the per-rank batch
            return self.batch_per_rank
        if self.global_batch % replicas:
            raise ValueError(f"global_batch {self.global_batch} is not divisible by {replicas} replicas")
        return self.global_batch // replicas
