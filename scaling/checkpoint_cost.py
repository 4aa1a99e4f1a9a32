"""What checkpoints cost a run, and when scaling.run saves one.

- When: at the end of an epoch (never inside one: a resumed run restarts at an epoch boundary).
  ``[train] checkpoint_every`` = 0 (default) saves after every epoch; K > 0 saves after each
  epoch that reaches a multiple of K iterations, and after the last epoch. A run that is being
  stopped (SIGTERM, preemption) saves its completed epoch whatever the interval.
- Cost: rank 0 records each save's wall time and the bytes of the checkpoint it wrote
  (run.json ``checkpoint_saves``), and each start's time from process start to its first epoch
  with the part spent restoring the checkpoint (run.json ``starts``). Saves stay outside the
  epoch clocks, as before; now they are visible to the analysis (``analysis.checkpoints``).
  In an ensemble, rank 0 records the saves of its own member (every member saves alike).
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Callable

# When this module is first imported (early in scaling.run, before TensorFlow): a start's clock.
PROCESS_T0 = time.monotonic()
SAVES_KEY = "checkpoint_saves"
STARTS_KEY = "starts"


def checkpoint_due(epoch: int, iterations_per_epoch: int, every_iterations: int, epochs: int) -> bool:
    """Whether the end of ``epoch`` (0-based) is a checkpoint under interval ``every_iterations``
    (0: every epoch). The last epoch always is."""
    if every_iterations <= 0 or epoch == epochs - 1:
        return True
    start, end = epoch * iterations_per_epoch, (epoch + 1) * iterations_per_epoch
    return end // every_iterations > start // every_iterations


def checkpoint_bytes(prefix: str | Path) -> int:
    """Bytes of one saved checkpoint: the files ``<prefix>.*`` (index and data shards)."""
    p = Path(prefix)
    return sum(f.stat().st_size for f in p.parent.glob(p.name + ".*") if f.is_file())


class CheckpointLog:
    """Rank 0's record of checkpoint saves and starts, kept in run.json (``writer`` None: not rank 0)."""

    def __init__(self, writer: Any, attempt: int):
        self.writer = writer
        self.attempt = attempt

    def timed_save(self, save: Callable[[], Any], epoch: int, iteration: int) -> None:
        """Run ``save`` (returns the checkpoint's path prefix, or None) and record its cost."""
        t0 = time.perf_counter()
        prefix = save()
        seconds = time.perf_counter() - t0
        if self.writer is None:
            return
        size = checkpoint_bytes(prefix) if prefix else None
        saves = list(self.writer.meta.get(SAVES_KEY) or [])
        saves.append({"attempt": self.attempt, "epoch": epoch, "iteration": iteration, "save_s": seconds,
                      "bytes": size})
        self.writer.write_meta(**{SAVES_KEY: saves})

    def record_start(self, restore_s: float | None, t_first_epoch: float | None = None) -> None:
        """This start's time from process start to its first epoch, and the part spent restoring."""
        if self.writer is None:
            return
        now = time.monotonic() if t_first_epoch is None else t_first_epoch
        starts = list(self.writer.meta.get(STARTS_KEY) or [])
        starts.append({"attempt": self.attempt, "startup_s": now - PROCESS_T0, "restore_s": restore_s})
        self.writer.write_meta(**{STARTS_KEY: starts})
