"""The ``[run]`` settings shared by local studies and Slurm sweeps, and the scaling.run command.

Both launchers start the same trainer with the same flags; only how the processes are started
(mpirun, srun, plain python) differs, so the flag list is built here once.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from common.vocab import (DEFAULT_BATCH_PER_RANK, DEFAULT_EPOCHS, DEFAULT_GLOBAL_BATCH, DEFAULT_ITERATIONS_PER_EPOCH,
                          DEFAULT_SYNTHETIC_EVENTS, DEFAULT_THREADS, DEFAULT_WARMUP_EPOCHS, MODE_STRONG,
                          PARTICLE_NAMES, PARTICLE_PHOTONS)


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

    def check(self) -> None:
        for name in ("epochs", "iterations_per_epoch", "global_batch", "batch_per_rank", "synthetic_events"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1")
        if not 0 <= self.warmup_epochs < self.epochs:
            raise ValueError(f"warmup_epochs must be >= 0 and below epochs ({self.epochs}): "
                             "at least one epoch has to be measured")
        if self.threads < 0:
            raise ValueError("threads must be >= 0")

    def check_world(self, world_size: int, mode: str) -> None:
        """Strong scaling splits the global batch evenly over the ranks."""
        if mode == MODE_STRONG and self.global_batch % world_size:
            raise ValueError(f"global_batch {self.global_batch} does not split evenly over {world_size} ranks "
                             "(strong scaling): choose a multiple of every world size")


def absolute(path: str) -> str:
    """A user path made absolute (jobs may start in another directory); '' stays ''."""
    return str(Path(path).expanduser().absolute()) if path else ""


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
    args += ["--study", study, "--out", out]
    if resume:
        args.append("--resume")
    return args
