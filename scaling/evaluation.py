"""Quality evaluation during ``scaling.run``: generate, score, record, and stop at a target.

Evaluation runs at epoch ends, after the epoch's records and checkpoint are written and before
the next epoch's clock starts, so no epoch's ``time_s`` ever contains it. Each evaluation has its
own energy window and its own wall time (``eval_time_s`` / ``eval_energy_j`` in eval.parquet).

Spreading the work, data parallel (one GAN): the reference momenta are dealt out round robin
over the ranks (momentum k of the sorted list to rank k mod N). Every rank generates its
momenta's showers with rank 0's generator weights (broadcast first: with Horovod, BatchNorm's
moving statistics are each rank's own, and the checkpoint holds rank 0's), reduces them to what
scoring needs, the total energy per shower and the high-level features
(``bologan.metrics.score_summaries``; tens of numbers per shower instead of hundreds of voxels),
and rank 0 gathers those and scores. The noise of momentum k is seeded by seed + k alone, so the
generated showers, and the scores, do not depend on how many ranks share the work.

Ensemble (``--mode ensemble``, one GAN per group of ranks): nothing is broadcast across the
world, since every member is a different GAN. Each member's chief (rank_in_group 0) generates
every momentum of its member's own reference (the held-out part of its own data, split with its
own seed, or the shared ``--reference``) with its own generator and scores it; all members do
so at the same epoch ends, side by side. With ``--group-size`` > 1 the other ranks of a member
generate nothing: they wait in the gather that follows. Rank 0 gathers the members' scores and
writes one eval.parquet row per (member, iteration). A member's scores are those a one-rank run
with the member's seed and data gets (same split, same noise seeds, same weights).

The context columns of an evaluation (``common.rundir.EVAL_CONTEXT_FIELDS``) are those of the
training that produced the evaluated checkpoint, per member: over the clean (not interrupted)
epochs up to this one, ``train_time_s`` sums each epoch's slowest rank of the member's
``time_s`` (the analysis's epoch time), ``showers`` sums the member's ranks' showers,
``energy_j`` every domain that has a value. Work lost to an interruption is not counted: it did
not lead to this checkpoint.

Energy per member (``member_energy``): a GPU counter is its rank's, so its member's. A node
counter (RAPL package and DRAM, read once per node by its reader rank, the others ``not_reader``)
is shared by every rank on the node: each member gets the node's energy times its ranks on the
node over all ranks on the node (members train the same work in lockstep, so an equal share per
rank). The members' energies therefore add up to the run's, node counters counted once; the
source label is the counters' own, the split is an attribution, not a per-member measurement.
With one GAN there is one member and the sum is the run's, as before. ``eval_energy_j`` is split
the same way over the evaluation windows, which span the whole evaluation phase (until every
member's scores reached rank 0), and ``eval_time_s`` is that phase's wall time on rank 0: how
long the evaluation held every member's training up.
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
from common.vocab import (ENERGY_DOMAINS, SOURCE_ESTIMATED, SOURCE_MEASURED, SOURCE_NOT_READER, SOURCE_PARTIAL,
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


def training_and_reference(eval_cfg: EvalConfig, showers, particle: str, seed: int, momenta: str = ""):
    """(showers to train on, reference showers or None). Without a reference file, a held-out
    part of ``showers`` (``bologan.pipeline.split_holdout``) that training never sees. In an
    ensemble each rank calls this with its member's showers and seed: its member's own split.
    A reference file is scored on the trained momentum range ``momenta`` ([data] momenta) only."""
    if not eval_cfg.enabled:
        return showers, None
    if eval_cfg.reference:
        from bologan.momenta import parse_momentum_range, restrict

        try:
            reference = restrict(read_reference(eval_cfg.reference, particle), parse_momentum_range(momenta),
                                 f"--reference {eval_cfg.reference}")
        except ValueError as exc:
            raise UserError(str(exc)) from None
        return showers, reference
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


@dataclass(frozen=True)
class Metered:
    """One rank's energy record of one window (an epoch row, an evaluation window), with where it
    ran: what ``member_energy`` splits. ``record`` has ``<domain>_energy_j/_source`` fields."""
    window: Any                   # which window (rows of one window share a node's counters)
    node: str
    member: int
    record: Any


def member_energy(rows: Iterable[Metered], member: int) -> tuple[float, str]:
    """Energy of ``member`` over ``rows`` (every rank's rows: a node's counter is shared by all of
    its ranks), J, and its provenance: a domain with no value in any row (of any member) is left
    out; one with some of the member's counters unread makes the sum partial. See the module
    docstring for the split."""
    rows = list(rows)
    ranks_on: dict[tuple[Any, str], int] = {}
    mine_on: dict[tuple[Any, str], int] = {}
    shared: set[tuple[Any, str, str]] = set()       # (window, node, domain) of node counters
    for r in rows:
        key = (r.window, r.node)
        ranks_on[key] = ranks_on.get(key, 0) + 1
        mine_on[key] = mine_on.get(key, 0) + (int(r.member) == member)
        for domain in ENERGY_DOMAINS:
            if getattr(r.record, f"{domain}_energy_source") == SOURCE_NOT_READER:
                shared.add((r.window, r.node, domain))
    total, labels = 0.0, set()
    for domain in ENERGY_DOMAINS:
        values, sources = [], []
        for r in rows:
            source = getattr(r.record, f"{domain}_energy_source")
            if source == SOURCE_NOT_READER:
                continue
            key = (r.window, r.node)
            if (r.window, r.node, domain) in shared:
                share = mine_on[key] / ranks_on[key]
            else:
                share = 1.0 if int(r.member) == member else 0.0
            if share == 0.0:
                continue
            value = float(getattr(r.record, f"{domain}_energy_j"))
            ok = source in SOURCES_WITH_VALUE and math.isfinite(value)
            sources.append(source if ok else SOURCE_UNAVAILABLE)
            if ok:
                values.append(share * value)
        read_somewhere = any(getattr(r.record, f"{domain}_energy_source") in SOURCES_WITH_VALUE
                             and math.isfinite(float(getattr(r.record, f"{domain}_energy_j"))) for r in rows)
        if not read_somewhere:
            continue
        total += sum(values)
        labels |= set(sources)
    if not labels or labels == {SOURCE_UNAVAILABLE}:
        return math.nan, SOURCE_UNAVAILABLE
    if SOURCE_UNAVAILABLE in labels:
        return total, SOURCE_PARTIAL
    # A sum holding any estimate is labelled an estimate: it never passes for a measurement.
    return total, SOURCE_ESTIMATED if SOURCE_ESTIMATED in labels else SOURCE_MEASURED


def training_so_far(epochs: Iterable[EpochRecord], last_epoch: int, member: int = 0) -> TrainingSoFar:
    """Sums over the clean epoch rows of epochs 0..``last_epoch`` of ``member`` (every member's
    rows are passed: a node counter is split over the ranks of all members on the node)."""
    clean = [r for r in epochs if not r.interrupted and r.epoch <= last_epoch]
    rows = [r for r in clean if int(r.member) == member]
    slowest: dict[int, float] = {}
    for r in rows:
        slowest[r.epoch] = max(slowest.get(r.epoch, 0.0), float(r.time_s))
    energy_j, source = member_energy((Metered((r.epoch, r.attempt), r.node, int(r.member), r) for r in clean),
                                     member)
    return TrainingSoFar(train_time_s=float(sum(slowest.values())), showers=int(sum(r.showers for r in rows)),
                         energy_j=energy_j, energy_source=source)


# -- the evaluator ------------------------------------------------------------------------------

@dataclass
class _Part:
    """One rank's share of an evaluation's generation (gathered on rank 0 in data parallel)."""
    momenta: list[float]
    etot_mev: list[np.ndarray]        # per momentum: total energy per shower
    features: Any                     # bologan.features.Features of all its showers, or None
    generate_s: float


@dataclass
class _Scored:
    """One member's scores, as its scoring rank sends them to rank 0."""
    member: int
    fields: dict[str, Any]            # EvalRecord fields from bologan.metrics
    generate_s: float                 # the slowest generation that went into them


class Evaluator:
    """Training-time evaluation on every rank (each call is collective); rank 0 records.

    ``generator_fn`` returns this rank's training generator: in data parallel rank 0's weights
    are the ones evaluated, in an ensemble (``ensemble``, a ``scaling.ensemble.EnsembleLayout``)
    each member's chief's. ``on_record`` (rank 0) sees each new EvalRecord of member 0
    (TensorBoard holds member 0's scores; every member's are in eval.parquet).
    """

    def __init__(self, *, cfg: EvalConfig, rank: int, size: int, coll, meter, model_cfg, label_kind: str,
                 seed: int, reference, iterations_per_epoch: int, writer: RunWriter | None,
                 generator_fn: Callable[[], Any], on_record: Callable[[EvalRecord], None] | None = None,
                 log: Callable[[str], None] = lambda msg: None, ensemble=None, node: str = ""):
        self.cfg, self.rank, self.size, self.coll, self.meter = cfg, rank, size, coll, meter
        self.model_cfg, self.label_kind, self.seed = model_cfg, label_kind, seed
        self.ipe, self.writer, self.generator_fn = iterations_per_epoch, writer, generator_fn
        self.on_record, self.log, self.node = on_record, log, node
        self.ensemble = ensemble
        self.member = ensemble.member if ensemble is not None else 0
        self.members = len(ensemble.names) if ensemble is not None else 1
        self.names = tuple(ensemble.names) if ensemble is not None else ("",)
        self.target: Target | None = cfg.quality_target
        momenta = np.unique(np.asarray(reference.momentum_mev, dtype=np.float64))
        if ensemble is not None:
            # A member's chief does its member's whole evaluation; its other ranks wait.
            self.scorer = ensemble.rank_in_group == 0
            self.mine = assign_momenta(momenta, 0, 1) if self.scorer else []
        else:
            self.scorer = rank == 0
            self.mine = assign_momenta(momenta, rank, size)
        self.reference = None
        if self.scorer:
            from bologan.metrics import Reference

            self.reference = Reference.from_showers(model_cfg.particle, reference.momentum_mev, reference.voxels_mev)
        self._generator = None
        self.reached: dict[int, dict[str, Any]] = {}   # rank 0: member -> its first evaluation that met the target

    # -- when --------------------------------------------------------------------------------
    def due(self, epoch: int) -> bool:
        """Whether the end of ``epoch`` is an evaluation point (same answer on every rank)."""
        return self.cfg.due(epoch * self.ipe, (epoch + 1) * self.ipe)

    def after_epoch(self, epoch: int) -> bool:
        """At the end of a complete, checkpointed epoch: evaluate when due. True when the run
        should end here (every member met the target and --stop-at-target is on), on every rank."""
        if not self.due(epoch):
            return False
        self.evaluate(epoch)
        return self._stop()

    def before_first_epoch(self, start_epoch: int) -> bool:
        """On --resume: evaluate the checkpoint resumed from if it was due and some member has no
        row for it (the stop came before its evaluation), and see which members met the target
        already. True when the run should end at once."""
        if start_epoch == 0:
            return False
        missing = False
        if self.rank == 0:
            assert self.writer is not None
            done = {(int(r.member), int(r.iteration)) for r in self.writer.evals}
            iteration = start_epoch * self.ipe
            missing = self.due(start_epoch - 1) and any((k, iteration) not in done for k in range(self.members))
            if self.target is not None:
                for r in sorted(self.writer.evals, key=lambda r: (int(r.member), int(r.iteration))):
                    if int(r.member) not in self.reached and self.target.met(getattr(r, self.target.metric)):
                        self.reached[int(r.member)] = self._reached_fields(r)
            missing = missing and not self._stopping()
        if self.coll.bcast(missing):
            self.evaluate(start_epoch - 1)
        return self._stop()

    def _stopping(self) -> bool:
        """Rank 0: --stop-at-target is on and every member has met the target."""
        return self.cfg.stop_at_target and len(self.reached) == self.members

    def _stop(self) -> bool:
        return bool(self.coll.bcast(self._stopping() if self.rank == 0 else False))

    def target_reached_meta(self) -> dict[str, Any] | list[dict[str, Any] | None] | None:
        """run.json ``target_reached``: one GAN's entry (data parallel), or a list by member with
        None for a member that has not met the target (ensemble)."""
        if self.ensemble is None:
            return self.reached.get(0)
        return [self.reached.get(k) for k in range(self.members)]

    # -- what ----------------------------------------------------------------------------------
    def _eval_generator(self):
        """A copy of the generator holding the evaluated weights (the training one is left alone):
        rank 0's broadcast in data parallel, this member's chief's own in an ensemble."""
        local = self.ensemble is not None or self.rank == 0
        weights = self.generator_fn().get_weights() if local else None
        if self.ensemble is None and self.size > 1:
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

    def _score(self, iteration: int, parts: Sequence[_Part]) -> _Scored:
        """This member's scores from the generated parts (on the scoring rank)."""
        from bologan.metrics import pool_features, score_summaries

        etot = {p: e for part in parts for p, e in zip(part.momenta, part.etot_mev)}
        features = pool_features(part.features for part in parts if part.features is not None)
        _, score = score_summaries(self.reference, etot, features, fpd_kpd=self.cfg.fpd_kpd)
        return _Scored(self.member, score.eval_fields(iteration), max(part.generate_s for part in parts))

    def evaluate(self, epoch: int) -> list[EvalRecord]:
        """Evaluate every member's model as it is at the end of ``epoch``; rank 0 records and
        returns the rows (one per member, in member order), the other ranks return []."""
        iteration = (epoch + 1) * self.ipe
        name = f"eval-{self.member}-{iteration}"
        self.meter.begin(name)
        t0 = time.perf_counter()
        if self.ensemble is not None:
            # No world-wide broadcast: each member's chief scores its own GAN; rank 0 collects.
            scored = self.coll.gather(self._score(iteration, [self._generate_part()]) if self.scorer else None)
        else:
            parts = self.coll.gather(self._generate_part())
            scored = [self._score(iteration, parts)] if self.rank == 0 else None
        window = self.meter.end(name)
        windows = self.coll.gather(Metered(iteration, self.node, self.member, window))
        if self.rank != 0:
            return []
        eval_time_s = time.perf_counter() - t0
        assert scored is not None and self.writer is not None
        by_member = sorted((s for s in scored if s is not None), key=lambda s: s.member)
        assert [s.member for s in by_member] == list(range(self.members)), [s.member for s in by_member]
        records = []
        for s in by_member:
            record = EvalRecord(**s.fields)
            so_far = training_so_far(self.writer.epochs, epoch, s.member)
            record.epoch, record.member = epoch + 1, s.member
            record.train_time_s, record.showers = so_far.train_time_s, so_far.showers
            record.energy_j, record.energy_source = so_far.energy_j, so_far.energy_source
            record.eval_time_s = eval_time_s
            record.eval_energy_j, record.eval_energy_source = member_energy(windows, s.member)
            records.append(record)
        self.writer.add_eval(records)
        newly_reached = False
        for s, record in zip(by_member, records):
            self.log(_progress(record, self.target, s.generate_s, self._label(s.member)))
            if self.on_record is not None and record.member == 0:
                self.on_record(record)
            if (self.target is not None and record.member not in self.reached
                    and self.target.met(getattr(record, self.target.metric))):
                self.reached[record.member] = self._reached_fields(record)
                newly_reached = True
        if newly_reached:
            self.writer.write_meta(target_reached=self.target_reached_meta())
        return records

    def _label(self, member: int) -> str:
        return f"member {member} ({self.names[member]}) " if self.ensemble is not None else ""

    def _reached_fields(self, r: EvalRecord) -> dict[str, Any]:
        """One member's ``target_reached``: where its first evaluation that met the target stood."""
        assert self.target is not None
        return {"metric": self.target.metric, "value": float(getattr(r, self.target.metric)),
                "iteration": int(r.iteration), "epoch": int(r.epoch), "train_time_s": float(r.train_time_s),
                "showers": int(r.showers), "energy_j": None if math.isnan(r.energy_j) else float(r.energy_j),
                "energy_source": r.energy_source, "member": int(r.member),
                "note": "at the first evaluation that met the target (the analysis interpolates the crossing)"}


def _progress(r: EvalRecord, target: Target | None, generate_s: float, label: str = "") -> str:
    line = (f"{label}eval at iteration {r.iteration}: chi2/NDF {r.chi2_ndf:.4g} (with overflow "
            f"{r.chi2_ndf_overflow:.4g}), FPD x1e3 {r.fpd:.4g}, KPD x1e3 {r.kpd:.3g}, W1 {r.w1:.4g} GeV  [{r.eval_time_s:.2f} s, "
            f"generation {generate_s:.2f} s]")
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
    def reached(self) -> dict[str, Any] | list[dict[str, Any] | None] | None:
        """run.json ``target_reached`` as it stands (``Evaluator.target_reached_meta``)."""
        return self.evaluator.target_reached_meta() if self.evaluator is not None else None

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
    """The monitor of one run (``scaling.run.RunContext``; every rank calls this: it gathers);
    rank 0 records the target and how evaluation is done in run.json."""
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
                              on_record=tensorboard.evaluation if tensorboard is not None else None, log=ctx.log,
                              ensemble=ctx.ensemble, node=ctx.world.node)
    # Each member has its own reference (its own held-out showers): rank 0 learns all of them.
    member = ctx.ensemble.member if ctx.ensemble else 0
    references = ctx.coll.gather((member, _reference_meta(ctx.reference))) if eval_cfg.enabled else None
    if ctx.writer is not None:
        target = eval_cfg.quality_target
        ctx.writer.write_meta(target=target.to_json() if target else None,
                              evaluation=_evaluation_meta(eval_cfg, dict(references or []), ctx.world.size,
                                                          ctx.ensemble))
    return TrainingMonitor(evaluator=evaluator, tensorboard=tensorboard,
                           iterations_per_epoch=ctx.sc.iterations_per_epoch)


def _reference_meta(reference) -> dict[str, Any]:
    momenta = np.unique(np.asarray(reference.momentum_mev)) if reference is not None else []
    return {"reference_source": reference.source if reference is not None else None,
            "reference_showers": len(reference) if reference is not None else 0, "momenta": len(momenta)}


def _evaluation_meta(cfg: EvalConfig, references: dict[int, dict[str, Any]], ranks: int,
                     ensemble=None) -> dict[str, Any] | None:
    """run.json ``evaluation``: where the reference came from and how the work was spread
    (``references``: member -> ``_reference_meta``)."""
    if not cfg.enabled:
        return None
    common = {"eval_every_iterations": cfg.eval_every, "reference": cfg.reference or None,
              "showers_per_momentum": cfg.showers_per_momentum, "stop_at_target": cfg.stop_at_target,
              "fpd_kpd": cfg.fpd_kpd,
              "fpd_kpd_sampling": ("CaloChallenge settings: batches of 10,000-50,000 (FPD) and 10,000 (KPD) "
                                   "drawn with replacement from the generated and the reference showers")
              if cfg.fpd_kpd else None}
    if ensemble is None:
        ref = references.get(0, _reference_meta(None))
        return {**common, **ref, "ranks_generating": min(ranks, ref["momenta"]),
                "spread": "momenta round robin over ranks; rank 0 gathers total energies and features and scores"}
    return {**common, "members": [references.get(k, _reference_meta(None)) for k in range(len(ensemble.names))],
            "ranks_generating": len(ensemble.names),
            "spread": "per member: its chief (rank_in_group 0) generates and scores every momentum of its own "
                      "reference with its own generator, the members side by side; its other ranks wait; "
                      "rank 0 gathers the scores",
            "stop_rule": "--stop-at-target ends the run once every member has met the target; until then "
                         "every member trains on in lockstep",
            "energy_attribution": "per member: its ranks' GPUs, plus each node's counters split over the "
                                  "node's ranks (its share: its ranks there / all ranks there)",
            "tensorboard": "member 0's scores only; every member's are in eval.parquet"}
