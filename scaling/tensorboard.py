"""TensorBoard scalars of a run, in ``<run>/tensorboard/`` (rank 0 only): ``tensorboard --logdir <run>``.

Per epoch (step = iterations done): the critic and generator losses (mean over ranks), showers
per second (all ranks' showers over the slowest rank's epoch time) and that epoch time; per
evaluation: every score of eval.parquet and the evaluation's own time. Written between epochs,
never inside an epoch's clock, and flushed at each epoch end, so a running job can be watched.
"""
from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Sequence

from common.rundir import EVAL_CONTEXT_FIELDS, EpochRecord, EvalRecord

TENSORBOARD_SUBDIR = "tensorboard"


class TensorBoardLog:
    def __init__(self, run_dir: str | Path):
        import tensorflow as tf

        self._tf = tf
        self.path = Path(run_dir) / TENSORBOARD_SUBDIR
        self._writer = tf.summary.create_file_writer(str(self.path))

    def _scalars(self, values: dict[str, float], step: int) -> None:
        with self._writer.as_default():
            for name, value in values.items():
                if math.isfinite(value):
                    self._tf.summary.scalar(name, value, step=step)

    def epoch(self, records: Sequence[EpochRecord], iterations_done: int) -> None:
        """One epoch's rows (all ranks); flushed at once."""
        if records:
            slowest = max(r.time_s for r in records)
            showers = sum(r.showers for r in records)
            self._scalars({
                "loss/critic": sum(r.d_loss for r in records) / len(records),
                "loss/generator": sum(r.g_loss for r in records) / len(records),
                "throughput/showers_per_s": showers / slowest if slowest > 0 else math.nan,
                "throughput/epoch_time_s": slowest,
            }, iterations_done)
        self._writer.flush()

    def evaluation(self, record: EvalRecord) -> None:
        """Every score of one evaluation (and its cost), at its iteration."""
        values = {f"eval/{k}": float(v) for k, v in dataclasses.asdict(record).items()
                  if k not in EVAL_CONTEXT_FIELDS and k != "iteration" and isinstance(v, (int, float))
                  and not isinstance(v, bool)}
        values["eval_cost/eval_time_s"] = float(record.eval_time_s)
        self._scalars(values, int(record.iteration))
        self._writer.flush()

    def close(self) -> None:
        self._writer.close()
