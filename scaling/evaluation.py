"""Quality evaluation during ``scaling.run``: generate, score, record, and stop at a target.

Evaluation runs at epoch ends, after the epoch's records and checkpoint are written and before
the next epoch's clock starts, so no epoch's ``time_s`` ever contains it. Each evaluation has its
own energy window and its own wall time (``eval_time_s`` / ``eval_energy_j`` in eval.parquet).

Spreading the work: the reference momenta are dealt out round robin over the ranks (momentum k
of the sorted list to rank k mod N). Every rank generates its momenta's showers with rank 0's
generator weights (broadcast first: with Horovod, BatchNorm's moving statistics are each rank's
own, and the checkpoint holds rank 0's), reduces them to what scoring needs, the total energy
per shower and the high-level features (``bologan.metrics.score_summaries``; tens of numbers per
shower instead of hundreds of voxels), and rank 0 gathers those and scores. The noise of
momentum k is seeded by k alone, so the generated showers, and the scores, do not depend on how
many ranks share the work.

The context columns of an evaluation (``common.rundir.EVAL_CONTEXT_FIELDS``) are those of the
training that produced the evaluated checkpoint: over the clean (not interrupted) epochs up to
this one, ``train_time_s`` sums each epoch's slowest rank's ``time_s`` (the analysis's epoch
time), ``showers`` sums every rank's showers, ``energy_j`` every domain that has a value (node
counters once per node, ``not_reader`` rows skipped). Work lost to an interruption is not
counted: it did not lead to this checkpoint.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import numpy as np

from common.errors import UserError
from common.rundir import EpochRecord, EvalRecord, RunWriter
from common.target import Target
from common.vocab import (ENERGY_DOMAINS, MODE_ENSEMBLE, SOURCE_ESTIMATED, SOURCE_MEASURED, SOURCE_NOT_READER, SOURCE_PARTIAL,
                          SOURCE_UNAVAILABLE, SOURCES_WITH_VALUE)
from scaling.eval_config import EvalConfig

# Seeds of the evaluation noise: momentum k of the reference draws from EVAL_SEED_OFFSET + seed + k.
# Fixed across evaluations, so checkpoints are compared on the same noise (less jitter between them).
EVAL_SEED_OFFSET = 7_000_000


def read_reference(path: str | Path, particle: str):
    """Reference showers from a Parquet shower file or a CaloChallenge HDF5 file."""
    from bologan import dataio

    p = Path(path)
    if not p.is_file():
        raise UserError(f"--reference {p}: file not found")
    if dataio.is_hdf5(p):
        from bologan.importers import import_calochallenge_hdf5

        showers = import_calochallenge_hdf5(p, particle)
    else:
        showers = dataio.read_showers(p)
    if showers.particle.name != particle:
        raise UserError(f"--reference {p}: showers of {showers.particle.name}, but this run trains {particle}")
    return showers


def training_and_reference(eval_cfg: EvalConfig, showers, particle: str, seed: int, mode: str = ""):
    """(showers to train on, reference showers or None). Without a reference file, a held-out
    part of ``showers`` (``bologan.pipeline.split_holdout``) that training never sees."""
    if not eval_cfg.enabled:
        return showers, None
    if mode == MODE_ENSEMBLE:
        # Each member would need its own evaluation over its own ranks; not done yet.
        raise UserError("--eval-every: evaluation during training is not available with --mode ensemble yet "
                        "(evaluate the members' checkpoints with python -m bologan.evaluate)")
    if eval_cfg.reference:
        return showers, read_reference(eval_cfg.reference, particle)
    from bologan.pipeline import split_holdout

    train, held = split_holdout(showers, eval_cfg.holdout_fraction, seed)
    if len(held) == 0:
        raise UserError(f"--holdout-fraction {eval_cfg.holdout_fraction:g}: no momentum of the training data has "
                        f"two showers to split; give --reference")
    return train, held


def assign_momenta(momenta: Sequence[float], rank: int, size: int) -> list[tuple[int, float]]:
    """(index, momentum) pairs this rank generates: round robin over the sorted momenta."""
    return [(k, float(p)) for k, p in enumerate(sorted(momenta)) if k % size == rank]


# -- context of an evaluation: training so far --------------------------------------------------

@dataclass(frozen=True)
class TrainingSoFar:
    """What the clean epochs up to one epoch add up to (see the module docstring)."""
    train_time_s: float
    showers: int
    energy_j: float
    energy_source: str


def _sum_energy(rows: Iterable[Any]) -> tuple[float, str]:
    """Energy over records with ``<domain>_energy_j/_source`` fields, J, and its provenance: a
    domain with no value anywhere is left out; one with some rows unread makes the sum partial."""
    total, labels = 0.0, set()
    rows = list(rows)
    for domain in ENERGY_DOMAINS:
        values, sources = [], []
        for r in rows:
            source = getattr(r, f"{domain}_energy_source")
            if source == SOURCE_NOT_READER:
                continue
            value = float(getattr(r, f"{domain}_energy_j"))
            ok = source in SOURCES_WITH_VALUE and math.isfinite(value)
            sources.append(source if ok else SOURCE_UNAVAILABLE)
            if ok:
                values.append(value)
        if not values:
            continue
        total += sum(values)
        labels |= set(sources)
    if not labels:
        return math.nan, SOURCE_UNAVAILABLE
    if SOURCE_UNAVAILABLE in labels:
        return total, SOURCE_PARTIAL
    # A sum holding any estimate is labelled an estimate: it never passes for a measurement.
    return total, SOURCE_ESTIMATED if SOURCE_ESTIMATED in labels else SOURCE_MEASURED


def training_so_far(epochs: Iterable[EpochRecord], last_epoch: int, member: int = 0) -> TrainingSoFar:
    """Sums over the clean epoch rows of epochs 0..``last_epoch`` (of ``member``)."""
    rows = [r for r in epochs if not r.interrupted and r.epoch <= last_epoch and int(r.member) == member]
    slowest: dict[int, float] = {}
    for r in rows:
        slowest[r.epoch] = max(slowest.get(r.epoch, 0.0), float(r.time_s))
    energy_j, source = _sum_energy(rows)
    return TrainingSoFar(train_time_s=float(sum(slowest.values())), showers=int(sum(r.showers for r in rows)),
                         energy_j=energy_j, energy_source=source)


# -- the evaluator ------------------------------------------------------------------------------

@dataclass
class _Part:
    """One rank's share of an evaluation, as gathered on rank 0."""
    momenta: list[float]
    etot_mev: list[np.ndarray]        # per momentum: total energy per shower
    features: Any                     # bologan.features.Features of all its showers, or None
    generate_s: float


class Evaluator:
    """Training-time evaluation on every rank (each call is collective); rank 0 records.

    ``generator_fn`` returns the training generator (rank 0's weights are the ones evaluated);
    ``on_record`` (rank 0) sees each new EvalRecord (TensorBoard).
    """

    def __init__(self, *, cfg: EvalConfig, rank: int, size: int, coll, meter, model_cfg, label_kind: str,
                 seed: int, reference, iterations_per_epoch: int, writer: RunWriter | None,
                 generator_fn: Callable[[], Any], on_record: Callable[[EvalRecord], None] | None = None,
                 log: Callable[[str], None] = lambda msg: None, member: int = 0):
        self.cfg, self.rank, self.size, self.coll, self.meter = cfg, rank, size, coll, meter
        self.model_cfg, self.label_kind, self.seed = model_cfg, label_kind, seed
        self.ipe, self.writer, self.generator_fn = iterations_per_epoch, writer, generator_fn
        self.on_record, self.log, self.member = on_record, log, member
        self.target: Target | None = cfg.quality_target
        momenta = np.unique(np.asarray(reference.momentum_mev, dtype=np.float64))
        self.mine = assign_momenta(momenta, rank, size)
        self.reference = None
        if rank == 0:
            from bologan.metrics import Reference

            self.reference = Reference.from_showers(model_cfg.particle, reference.momentum_mev, reference.voxels_mev)
        self._generator = None
        self.reached: dict[str, Any] | None = None    # run.json "target_reached" once met

    # -- when --------------------------------------------------------------------------------
    def due(self, epoch: int) -> bool:
        """Whether the end of ``epoch`` is an evaluation point (same answer on every rank)."""
        return self.cfg.due(epoch * self.ipe, (epoch + 1) * self.ipe)

    def after_epoch(self, epoch: int) -> bool:
        """At the end of a complete, checkpointed epoch: evaluate when due. True when the run
        should end here (the target was met and --stop-at-target is on), on every rank."""
        if not self.due(epoch):
            return False
        self.evaluate(epoch)
        return self._stop()

    def before_first_epoch(self, start_epoch: int) -> bool:
        """On --resume: evaluate the checkpoint resumed from if it was due and has no row (the
        stop came before its evaluation), and see whether the target was met already. True when
        the run should end at once."""
        if start_epoch == 0:
            return False
        missing = False
        if self.rank == 0:
            assert self.writer is not None
            done = {(int(r.member), int(r.iteration)) for r in self.writer.evals}
            missing = self.due(start_epoch - 1) and (self.member, start_epoch * self.ipe) not in done
            if self.target is not None and self.reached is None:
                for r in self.writer.evals:
                    if int(r.member) == self.member and self.target.met(getattr(r, self.target.metric)):
                        self.reached = self._reached_fields(r)
                        break
        if self.coll.bcast(missing if self.reached is None else False):
            self.evaluate(start_epoch - 1)
        return self._stop()

    def _stop(self) -> bool:
        stop = self.cfg.stop_at_target and self.reached is not None
        return bool(self.coll.bcast(stop))

    # -- what ----------------------------------------------------------------------------------
    def _eval_generator(self):
        """A copy of the generator holding rank 0's weights (the training one is left alone)."""
        weights = self.generator_fn().get_weights() if self.rank == 0 else None
        if self.size > 1:
            weights = self.coll.bcast(weights)
        if self._generator is None:
            from bologan.model import build_generator

            self._generator = build_generator(self.model_cfg)
        self._generator.set_weights(weights)
        return self._generator

    def _generate_part(self) -> _Part:
        from bologan.metrics import shower_features
        from bologan.model import sample_showers

        t0 = time.perf_counter()
        generator = self._eval_generator()
        n = self.cfg.showers_per_momentum
        momenta, etot, voxel_sets = [], [], []
        for k, p in self.mine:
            requested = np.full(n, p, dtype=np.float64)
            voxels = sample_showers(generator, self.model_cfg, self.label_kind, requested,
                                    seed=EVAL_SEED_OFFSET + self.seed + k)
            momenta.append(p)
            etot.append(voxels.sum(axis=1, dtype=np.float64))
            voxel_sets.append(voxels)
        features = None
        if voxel_sets:
            features = shower_features(self.model_cfg.particle, np.repeat(momenta, n), np.concatenate(voxel_sets))
        return _Part(momenta, etot, features, time.perf_counter() - t0)

    def evaluate(self, epoch: int) -> EvalRecord | None:
        """Evaluate the model as it is at the end of ``epoch``; rank 0 records and returns the row."""
        from bologan.metrics import pool_features, score_summaries

        iteration = (epoch + 1) * self.ipe
        name = f"eval-{self.member}-{iteration}"
        self.meter.begin(name)
        t0 = time.perf_counter()
        parts = self.coll.gather(self._generate_part())
        record = None
        if self.rank == 0:
            etot = {p: e for part in parts for p, e in zip(part.momenta, part.etot_mev)}
            features = pool_features(part.features for part in parts if part.features is not None)
            _, score = score_summaries(self.reference, etot, features)
            record = EvalRecord(**score.eval_fields(iteration))
        window = self.meter.end(name)
        windows = self.coll.gather(window)
        if self.rank != 0:
            return None
        assert record is not None and self.writer is not None
        so_far = training_so_far(self.writer.epochs, epoch, self.member)
        eval_energy_j, eval_source = _sum_energy(windows)
        record.epoch, record.member = epoch + 1, self.member
        record.train_time_s, record.showers = so_far.train_time_s, so_far.showers
        record.energy_j, record.energy_source = so_far.energy_j, so_far.energy_source
        record.eval_time_s = time.perf_counter() - t0
        record.eval_energy_j, record.eval_energy_source = eval_energy_j, eval_source
        self.writer.add_eval([record])
        slowest_generation = max(part.generate_s for part in parts)
        self.log(_progress(record, self.target, slowest_generation))
        if self.on_record is not None:
            self.on_record(record)
        if self.target is not None and self.reached is None and self.target.met(getattr(record, self.target.metric)):
            self.reached = self._reached_fields(record)
            self.writer.write_meta(target_reached=self.reached)
        return record

    def _reached_fields(self, r: EvalRecord) -> dict[str, Any]:
        """run.json ``target_reached``: where the first evaluation that met the target stood."""
        assert self.target is not None
        return {"metric": self.target.metric, "value": float(getattr(r, self.target.metric)),
                "iteration": int(r.iteration), "epoch": int(r.epoch), "train_time_s": float(r.train_time_s),
                "showers": int(r.showers), "energy_j": None if math.isnan(r.energy_j) else float(r.energy_j),
                "energy_source": r.energy_source, "member": int(r.member),
                "note": "at the first evaluation that met the target (the analysis interpolates the crossing)"}


def _progress(r: EvalRecord, target: Target | None, generate_s: float) -> str:
    line = (f"eval at iteration {r.iteration}: chi2/NDF {r.chi2_ndf:.4g} (with overflow {r.chi2_ndf_overflow:.4g}), "
            f"FPD {r.fpd:.4g}, W1 {r.w1:.4g} GeV  [{r.eval_time_s:.2f} s, generation {generate_s:.2f} s]")
    if target is not None:
        value = getattr(r, target.metric)
        line += f"  target {target.text}: {value:.4g} {'met' if target.met(value) else 'not met'}"
    return line


# -- what scaling.run hooks into its epoch loop -------------------------------------------------

class TrainingMonitor:
    """The epoch-end work of a run: TensorBoard scalars (rank 0) and evaluation (every rank).

    ``stopped_at_target`` is True once the run ended because an evaluation met the target with
    --stop-at-target (run.json status ``target_reached``).
    """

    def __init__(self, *, evaluator: Evaluator | None, tensorboard, iterations_per_epoch: int):
        self.evaluator, self.tensorboard, self.ipe = evaluator, tensorboard, iterations_per_epoch
        self.stopped_at_target = False

    @property
    def reached(self) -> dict[str, Any] | None:
        return self.evaluator.reached if self.evaluator is not None else None

    def before_first_epoch(self, start_epoch: int) -> bool:
        if self.evaluator is None:
            return False
        self.stopped_at_target = self.evaluator.before_first_epoch(start_epoch)
        return self.stopped_at_target

    def after_epoch(self, epoch: int, records: list[EpochRecord] | None) -> bool:
        if self.tensorboard is not None:
            self.tensorboard.epoch(records or [], (epoch + 1) * self.ipe)
        if self.evaluator is None:
            return False
        self.stopped_at_target = self.evaluator.after_epoch(epoch)
        return self.stopped_at_target

    def close(self) -> None:
        if self.tensorboard is not None:
            self.tensorboard.close()


def training_monitor(ctx, meter, generator_fn: Callable[[], Any]) -> TrainingMonitor:
    """The monitor of one run (``scaling.run.RunContext``); rank 0 records the target in run.json."""
    eval_cfg: EvalConfig = ctx.cfg["eval"]
    tensorboard = None
    if ctx.writer is not None and eval_cfg.tensorboard:
        from scaling.tensorboard import TensorBoardLog

        tensorboard = TensorBoardLog(ctx.out)
    evaluator = None
    if eval_cfg.enabled:
        evaluator = Evaluator(cfg=eval_cfg, rank=ctx.world.rank, size=ctx.world.size, coll=ctx.coll, meter=meter,
                              model_cfg=ctx.cfg["model"], label_kind=ctx.cfg["data"].label, seed=ctx.cfg["train"].seed,
                              reference=ctx.reference, iterations_per_epoch=ctx.sc.iterations_per_epoch,
                              writer=ctx.writer, generator_fn=generator_fn,
                              on_record=tensorboard.evaluation if tensorboard is not None else None, log=ctx.log)
    if ctx.writer is not None:
        target = eval_cfg.quality_target
        ctx.writer.write_meta(target=target.to_json() if target else None,
                              evaluation=_evaluation_meta(eval_cfg, ctx.reference, ctx.world.size))
    return TrainingMonitor(evaluator=evaluator, tensorboard=tensorboard,
                           iterations_per_epoch=ctx.sc.iterations_per_epoch)


def _evaluation_meta(cfg: EvalConfig, reference, ranks: int) -> dict[str, Any] | None:
    """run.json ``evaluation``: where the reference came from and how the work was spread."""
    if not cfg.enabled:
        return None
    momenta = np.unique(np.asarray(reference.momentum_mev)) if reference is not None else []
    return {"eval_every_iterations": cfg.eval_every, "reference": cfg.reference or None,
            "reference_source": reference.source if reference is not None else None,
            "reference_showers": len(reference) if reference is not None else 0,
            "momenta": len(momenta), "showers_per_momentum": cfg.showers_per_momentum,
            "ranks_generating": min(ranks, len(momenta)), "stop_at_target": cfg.stop_at_target,
            "spread": "momenta round robin over ranks; rank 0 gathers total energies and features and scores"}
