"""The ``[run]`` settings shared by local studies and Slurm sweeps, and the scaling.run command.

Both launchers start the same trainer with the same flags; only how the processes are started
(mpirun, srun, plain python) differs, so the flag list is built here once.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from common.vocab import (DEFAULT_BATCH_PER_RANK, DEFAULT_EPOCHS, DEFAULT_GLOBAL_BATCH, DEFAULT_ITERATIONS_PER_EPOCH,
                          DEFAULT_SYNTHETIC_EVENTS, DEFAULT_THREADS, DEFAULT_WARMUP_EPOCHS, LR_NONE, LR_SCALINGS,
                          MODE_STRONG, PARTICLE_NAMES, PARTICLE_PHOTONS)


@dataclass
class RunSettings:
    """What every training run of a study does (passed to ``python -m scaling.run``).

    The defaults are scaling.run's own; a launcher profile (study_default.toml) states its choices.
    """
    epochs: int = field(default=DEFAULT_EPOCHS, metadata={"help": "epochs per run, warm-up included"})
    iterations_per_epoch: int = field(default=DEFAULT_ITERATIONS_PER_EPOCH, metadata={"help": "training iterations per epoch"})
    warmup_epochs: int = field(default=DEFAULT_WARMUP_EPOCHS, metadata={"help": "leading epochs left out of the timing statistics"})
    global_batch: int = field(default=DEFAULT_GLOBAL_BATCH, metadata={"help": "strong scaling: showers per critic step over all ranks"})
    batch_per_rank: int = field(default=DEFAULT_BATCH_PER_RANK, metadata={"help": "weak scaling: showers per critic step on each rank"})
    particle: str = field(default=PARTICLE_PHOTONS, metadata={"choices": PARTICLE_NAMES, "help": "photons or pions"})
    data: str = field(default="", metadata={"help": "showers Parquet file; empty = synthetic showers"})
    synthetic_events: int = field(default=DEFAULT_SYNTHETIC_EVENTS, metadata={"help": "synthetic showers generated when no data file is given"})
    threads: int = field(default=DEFAULT_THREADS, metadata={"help": "TensorFlow threads per rank (0 = let scaling.run decide from the cores allotted)"})
    train_config: str = field(default="", metadata={"help": "a bologan TOML file passed to scaling.run --config (model/train settings)"})
    # Time to quality (scaling.run's [eval] and [train] keys of the same names); each is passed
    # on only when it differs from scaling.run's default, so a profile without them makes the
    # same commands as before.
    eval_every: int = field(default=0, metadata={"help": "evaluate every this many iterations, at epoch ends (0 = never)"})
    showers_per_momentum: int = field(default=0, metadata={
        "help": "showers generated per reference momentum at each evaluation (0 = scaling.run's default)"})
    target: str = field(default="", metadata={"help": "quality target METRIC<=VALUE, e.g. chi2_ndf_overflow<=5 (empty = none)"})
    stop_at_target: bool = field(default=False, metadata={"help": "end each run at the first evaluation that meets target"})
    lr_scaling: str = field(default=LR_NONE, metadata={"choices": LR_SCALINGS,
                                                        "help": "learning rate x global batch ratio: none, linear or sqrt"})
    lr_warmup_iterations: int = field(default=0, metadata={"help": "iterations over which the scaled learning rate ramps up"})
    estimate_energy: bool = field(default=False, metadata={
        "help": "where no energy counter exists, estimate CPU energy from the CPU's TDP (the user's --cpu-tdp-w "
                "in train_config, else energy/data/cpu_tdp.csv); flagged 'estimated', never used where RAPL works"})

    def check(self) -> None:
        for name in ("epochs", "iterations_per_epoch", "global_batch", "batch_per_rank", "synthetic_events"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1")
        if not 0 <= self.warmup_epochs < self.epochs:
            raise ValueError(f"warmup_epochs must be >= 0 and below epochs ({self.epochs}): "
                             "at least one epoch has to be measured")
        if self.threads < 0:
            raise ValueError("threads must be >= 0")
        for name in ("eval_every", "showers_per_momentum", "lr_warmup_iterations"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0")
        if self.stop_at_target and not (self.target and self.eval_every):
            raise ValueError("stop_at_target needs a target and eval_every > 0")
        if self.target and "<=" not in self.target:
            raise ValueError(f"target {self.target!r} is not METRIC<=VALUE (e.g. chi2_ndf_overflow<=5)")

    def check_world(self, world_size: int, mode: str) -> None:
        """Strong scaling splits the global batch evenly over the ranks."""
        if mode == MODE_STRONG and self.global_batch % world_size:
            raise ValueError(f"global_batch {self.global_batch} does not split evenly over {world_size} ranks "
                             "(strong scaling): choose a multiple of every world size")


def absolute(path: str) -> str:
    """A user path made absolute (jobs may start in another directory); '' stays ''."""
    return str(Path(path).expanduser().absolute()) if path else ""


def _quality_args(run: RunSettings) -> list[str]:
    """The time-to-quality flags that differ from scaling.run's defaults."""
    args: list[str] = []
    if run.eval_every:
        args += ["--eval-every", str(run.eval_every)]
    if run.showers_per_momentum:
        args += ["--showers-per-momentum", str(run.showers_per_momentum)]
    if run.target:
        args += ["--target", run.target]
    if run.stop_at_target:
        args.append("--stop-at-target")
    if run.lr_scaling != LR_NONE:
        args += ["--lr-scaling", run.lr_scaling]
    if run.lr_warmup_iterations:
        args += ["--lr-warmup-iterations", str(run.lr_warmup_iterations)]
    if run.estimate_energy:
        args.append("--estimate-energy")
    return args


def scaling_run_args(run: RunSettings, *, engine: str, mode: str, out: str, study: str,
                     resume: bool = False) -> list[str]:
    """Arguments after ``python -m scaling.run`` for one run (``out`` is the run directory)."""
    args = ["--engine", engine, "--mode", mode]
    if mode == MODE_STRONG:
        args += ["--global-batch", str(run.global_batch)]
    else:
        args += ["--batch-per-rank", str(run.batch_per_rank)]
    args += ["--epochs", str(run.epochs), "--iterations-per-epoch", str(run.iterations_per_epoch),
             "--warmup-epochs", str(run.warmup_epochs), "--particle", run.particle]
    if run.data:
        args += ["--data", absolute(run.data)]
    else:
        args += ["--synthetic-events", str(run.synthetic_events)]
    if run.threads > 0:
        args += ["--threads", str(run.threads)]
    if run.train_config:
        args += ["--config", absolute(run.train_config)]
    args += _quality_args(run)
    args += ["--study", study, "--out", out]
    if resume:
        args.append("--resume")
    return args
