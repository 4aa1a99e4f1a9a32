"""Data-parallel BoloGAN training with per-rank time, communication and energy measurement.

Runs unchanged under mpirun, srun (--mpi=pmix), horovodrun, or plain python (one rank).
With no arguments it trains a small default on synthetic showers and says where it wrote.

Examples::

    python -m scaling.run                                        # 1 rank, defaults
    mpirun -np 4 python -m scaling.run --engine horovod --mode strong --global-batch 512
    srun -N4 --mpi=pmix python -m scaling.run --engine mirrored --mode weak --out results/s/m-w-n4
    mpirun -np 4 python -m scaling.run --mode ensemble --seed 10 --data 'eta_{member}.parquet'  # 4 GANs
    mpirun -np 4 python -m scaling.run --mode ensemble --group-size 2    # 2 GANs, 2 ranks each
    python -m scaling.run --out results/s/m-w-n4 --resume        # after preemption (exit code 3)

Exit codes: 0 done, 2 bad input, 3 interrupted by SIGTERM/SIGUSR1 and resumable with --resume,
1 anything else (a failed rank ends the whole job).
"""
from __future__ import annotations

import argparse
import datetime as dt
import os
import shutil
import signal
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from bologan.config import BOLOGAN_SECTIONS, config_hash
from bologan.trained_config import legacy_filled
from common.atomic import atomic_write_text
from common.cli import Parser
from common.codeversion import code_version
from common.errors import EXIT_FAILURE, EXIT_INTERRUPTED, EXIT_OK, EXIT_USER_ERROR, UserError
from common.rundir import RUN_JSON, RunWriter, power_table, read_run_meta
from common.telemetry_parts import telemetry_table, write_telemetry_part
from common.settings import add_section_arguments, resolve_sections, sections_to_dict
from common.vocab import (ENGINE_HOROVOD, ENGINE_MIRRORED, MODE_ENSEMBLE, NOT_WORKLOAD_KEYS, PLACEMENT_ENV, STATUS_COMPLETED, STATUS_FAILED,
                          STATUS_INTERRUPTED, STATUS_RUNNING, STATUS_TARGET_REACHED)
from energy.config import EnergyConfig
from scaling.checkpoint_cost import CheckpointLog, checkpoint_due
from scaling import watchdog
from scaling.collectives import HorovodCollectives, for_world
from scaling.config import ScalingConfig
from scaling.eval_config import EvalConfig
from scaling.ensemble import EnsembleLayout, common_checkpoint, ensemble_layout
from scaling.outdir import check_out, create_out, measurement_settings, run_shape
from scaling.failures import KIND_COLLECTIVE_TIMEOUT, classify
from scaling.trainer import StopFlag
from scaling.watchdog import WatchdogConfig
from scaling.world import World, discover

SECTIONS: dict[str, type] = {**BOLOGAN_SECTIONS, "scaling": ScalingConfig, "energy": EnergyConfig,
                             "eval": EvalConfig, "watchdog": WatchdogConfig}
KEEP_CHECKPOINTS = 3
# --timeline: Horovod's timeline (Chrome trace format) of one start of the run, in its directory.
TIMELINE_FILE = "horovod_timeline-{attempt}.json"
TIMING_NOTE = ("time_s wall per epoch; comm_s in-graph timestamps around the gradient all-reduce "
               "(includes waiting for the slowest replica); data_wait_s blocked on the next batch; "
               "compute_s the rest of the step calls")


class _AgreedError(UserError):
    """A user error that every rank raises at the same point, so all can exit without an abort."""


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = Parser("python -m scaling.run", __doc__)
    parser.add_argument("--config", help="TOML file with [model] [train] [data] [scaling] [energy] tables")
    parser.add_argument("--resume", action="store_true",
                        help="continue the run in --out from its latest checkpoint (after an interruption)")
    parser.add_argument("--timeline", action="store_true",
                        help="record Horovod's timeline of this start into the run directory "
                             f"({TIMELINE_FILE.format(attempt='<attempt>')}; --engine horovod only)")
    parser.add_argument("--site", help="name of the cluster or machine, recorded in run.json site (default: "
                                        "$BOLOGAN_SITE, else Slurm's SLURM_CLUSTER_NAME, else unknown); analysis "
                                        "compares sites side by side")
    add_section_arguments(parser, SECTIONS)
    return parser.parse_args(argv)


def _resolve_config(args: argparse.Namespace) -> dict:
    out = getattr(args, "scaling.out", "")
    if args.resume and args.config is None and out and (Path(out) / RUN_JSON).is_file():
        # A resumed run keeps its saved settings; flags given now (e.g. more epochs) still win.
        meta_path = Path(out) / RUN_JSON
        saved = read_run_meta(out)["config"]
        # A run older than a setting resumes as it trained (e.g. batch-statistics BatchNorm),
        # said in one line by rank 0 (_preflight).
        saved, args.legacy_notes = legacy_filled(saved, meta_path)
        unknown = sorted(set(saved) - set(SECTIONS))
        if unknown:
            raise UserError(f"{meta_path}: config has unknown section {unknown[0]!r} (not written by scaling.run; "
                            f"known: {', '.join(SECTIONS)})")
        try:
            resolve_sections(SECTIONS, None, overrides=saved)   # the saved settings alone first
        except UserError as exc:
            raise UserError(f"{meta_path}: saved {exc}") from None
        return resolve_sections(SECTIONS, None, args, overrides=saved)
    return resolve_sections(SECTIONS, args.config, args)


def workload_hash(cfg: dict[str, Any]) -> str:
    """run.json's ``config_hash``: the settings that define one replica's work per iteration."""
    return config_hash({k: v for k, v in sections_to_dict(cfg).items() if k in BOLOGAN_SECTIONS},
                       exclude=NOT_WORKLOAD_KEYS)


def main(argv: list[str] | None = None, *, restore_signals: bool = True) -> int:
    """Run (or refuse) one training; returns the exit code.

    ``restore_signals=False`` ignores the stop signals after returning: a process that is about
    to exit must not be killed by a late SIGTERM and lose its exit code 3.
    """
    world = discover()
    # Before MPI starts: a peer that never arrives leaves this rank waiting inside MPI_Init.
    wd = watchdog.start(rank=world.rank, size=world.size, node=world.node,
                        startup_timeout_s=watchdog.startup_timeout_from_argv(argv, WatchdogConfig.startup_timeout_s))
    # Before anything slow: a SIGTERM during start-up is then a clean stop, not a dead rank.
    stop = StopFlag()
    previous_handlers = stop.install()
    coll = code = None
    try:
        coll = for_world(world, _engine_from_argv(argv))
        wd.use_mpi(getattr(coll, "comm", None))
        code = _run(argv, world, coll, stop)
        return code
    except _AgreedError as exc:
        if world.rank == 0:
            print(f"error: {exc}", file=sys.stderr, flush=True)
        code = EXIT_USER_ERROR
        return code
    except UserError as exc:
        # Found by this rank alone: its peers may already wait in a collective, so end them all.
        code = EXIT_USER_ERROR
        where = f"rank {world.rank} on {world.node}: " if world.size > 1 else ""
        print(f"error: {where}{exc}", file=sys.stderr, flush=True)
        if world.size > 1 and coll is not None:
            coll.abort(EXIT_USER_ERROR)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    except Exception as exc:  # noqa: BLE001 - report, then make sure no peer waits forever
        known = classify(exc, where=f"rank {world.rank} on {world.node}", batch=wd.batch, out=wd.out)
        if known is not None and known.kind == KIND_COLLECTIVE_TIMEOUT:
            wd.report(f"the engine's collective timed out ({known.line})")   # ends the job
        if known is not None:
            print(f"error: {known.line}", file=sys.stderr, flush=True)
        else:
            print(f"rank {world.rank} on {world.node} failed:\n{traceback.format_exc()}", file=sys.stderr, flush=True)
        if world.size > 1 and coll is not None:
            coll.abort(EXIT_FAILURE)
        return EXIT_FAILURE
    finally:
        watchdog.stop(code)
        if restore_signals:
            StopFlag.restore(previous_handlers)
        else:
            StopFlag.ignore()


def _engine_from_argv(argv: list[str] | None) -> str:
    args = sys.argv[1:] if argv is None else argv
    for i, a in enumerate(args):
        if a.startswith("--engine="):
            return a.split("=", 1)[1]
        if a == "--engine" and i + 1 < len(args):
            return args[i + 1]
    return ENGINE_HOROVOD


# ------------------------------------------------------------------------ one run, step by step

def _run(argv: list[str] | None, world: World, coll, stop: StopFlag) -> int:
    """One training run on this rank; every rank takes the same steps. Returns the exit code."""
    # 1. Bad input is found before TensorFlow is imported (seconds, not a minute), and every
    #    rank agrees on it before any goes on, so a problem one rank sees cannot leave the
    #    others waiting in a collective.
    checked = _checked_by_every_rank(argv, world, coll)
    # 2. TensorFlow and the engine; only now is the replica count of tf.distribute in one
    #    process known, and what depends on it is checked again.
    watchdog.stage("engine start (TensorFlow import, engine initialisation)")
    engine = _start_engine(checked.cfg, world, coll)
    ctx = _context(checked, engine, world, coll, stop)
    ctx.devices, ctx.gpu_sharers = _devices_of_every_rank(world, coll, ctx.sc.share_gpu)
    # 3. Every check passed: only now is anything created on disk.
    problem = coll.bcast(create_out(ctx.out) if world.rank == 0 else None)
    if problem:
        raise _AgreedError(problem)
    watchdog.open_run(ctx.out, batch=ctx.batch, iterations_per_epoch=ctx.sc.iterations_per_epoch)
    watchdog.stage("model build and first collectives")
    # 4. The model and its compiled step; a resumed run continues from its latest checkpoint.
    model = _build_model(ctx)
    start_epoch = model.start_iteration // ctx.sc.iterations_per_epoch
    nodes = coll.allgather(world.node)
    t0 = time.monotonic()
    if ctx.resume and start_epoch >= ctx.sc.epochs:
        # Same answer on every rank (the checkpoint is rank 0's, broadcast by the engine).
        ctx.log(f"{ctx.out}: all {ctx.sc.epochs} epochs are done already; nothing to resume (give a larger "
                f"--epochs to train on)")
        return EXIT_OK
    # 5. run.json says "running" (rank 0 writes it) before the first epoch starts.
    attempt = coll.bcast(_open_run_directory(ctx, model, nodes, start_epoch) if world.rank == 0 else 0)
    # 6. The epochs, then run.json's final status.
    try:
        return _train(ctx, model, attempt, start_epoch, nodes, t0)
    except Exception:
        _record_failure(ctx.writer)
        raise


@dataclass
class RunContext:
    """What the steps of one run share on this rank, once the engine is set up."""
    world: World
    coll: Any                     # scaling.collectives: every rank's view of the others
    stop: StopFlag
    args: argparse.Namespace
    cfg: dict[str, Any]           # resolved sections: model, train, data, scaling, energy
    workload: str                 # run.json's config_hash
    showers: Any                  # bologan.data.Showers this rank trains on
    engine: Any                   # scaling.engines: Horovod, tf.distribute or single
    replicas: int
    batch: int                    # showers per critic step per replica
    out: Path                     # the run directory
    writer: RunWriter | None      # rank 0 only: the run directory's records
    log: Callable[[str], None]    # progress lines: rank 0 prints them, the others stay quiet
    ensemble: EnsembleLayout | None = None   # --mode ensemble: the members; cfg is then this rank's member's
    reference: Any = None         # [eval]: reference showers (bologan.dataio.Showers), None without evaluation
    devices: list = field(default_factory=list)   # every rank's device (scaling.devices.Pinned.describe)
    gpu_sharers: int = 1          # ranks that use this rank's GPU (--share-gpu)

    @property
    def sc(self) -> ScalingConfig:
        return self.cfg["scaling"]

    @property
    def checkpoint_root(self) -> Path:
        """The folder whose checkpoints/ this rank's GAN uses: the run's, or its member's own."""
        return self.ensemble.member_dir(self.out) if self.ensemble else self.out

    @property
    def run_config(self) -> dict[str, Any]:
        """run.json's config: the run's settings (an ensemble's, not one member's)."""
        return self.ensemble.config if self.ensemble else sections_to_dict(self.cfg)

    @property
    def resume(self) -> bool:
        return bool(self.args.resume)


@dataclass
class _Model:
    gan: Any
    step: Callable                # one training iteration, compiled for the engine
    checkpoints: Any              # tf.train.CheckpointManager this rank saves with (None: it does not save)
    scratch: Path | None          # non-chief tf.distribute workers: the folder their saves go to
    precision: str                # Keras dtype policy
    start_iteration: int
    restore_s: float | None = None   # seconds spent restoring the checkpoint on --resume

    def save(self, iteration: int) -> str:
        """Save ``ckpt-<iteration>`` and return its path prefix; a scratch save is removed at once
        (only the chief's is kept)."""
        try:
            return self.checkpoints.save(checkpoint_number=iteration)
        finally:
            if self.scratch is not None:
                shutil.rmtree(self.scratch, ignore_errors=True)


@dataclass
class _Checked:
    """What the checks before TensorFlow found valid (values None are known only later)."""
    args: argparse.Namespace
    cfg: dict[str, Any]
    workload: str
    showers: Any
    replicas: int | None
    batch: int | None
    out: Path | None
    writer: RunWriter | None      # rank 0 of a resumed run: the records read back
    ensemble: EnsembleLayout | None = None
    reference: Any = None         # [eval]: the reference showers (None: no evaluation)


# -- step 1: checks before TensorFlow -----------------------------------------------------------

def _checked_by_every_rank(argv: list[str] | None, world: World, coll) -> _Checked:
    """``_preflight`` on every rank; then all go on, or all raise the first problem found."""
    checked = problem = None
    try:
        checked = _preflight(argv, world)
    except UserError as exc:
        problem = str(exc)
    if checked is not None and isinstance(coll, HorovodCollectives):
        # Horovod's Gloo collectives run TensorFlow ops, which fix the thread pools and the
        # visible devices: set them and pin this rank's GPU first.
        _configure_tensorflow(checked.cfg, world)
        problem = _pin_problem(checked.cfg, world)
    _agree(coll, world, problem)
    assert checked is not None
    return checked


def _preflight(argv: list[str] | None, world: World) -> _Checked:
    """Every check that needs no TensorFlow and no peer: arguments, config, batch split, output
    directory (rank 0), data. Raises ``UserError``; writes nothing."""
    args = parse_args(argv)
    cfg = _resolve_config(args)
    for note in getattr(args, "legacy_notes", []) if world.rank == 0 else []:
        print(f"note: {note}", flush=True)
    sc: ScalingConfig = cfg["scaling"]
    sc.set_horovod_environment()
    watchdog.configure(cfg["watchdog"])
    _enable_timeline(args, sc)
    workload = workload_hash(cfg)
    ensemble = ensemble_layout(cfg, world, args.timeline)
    if ensemble is not None:
        cfg = ensemble.member_config(cfg)     # from here on: this rank's GAN, its seed and data
    replicas = _replicas_before_engine(sc, world)
    batch = out = writer = None
    if replicas is not None:
        ranks = ensemble.world_size if ensemble else replicas   # run.json world_size
        batch = _per_replica_batch(sc, replicas)
        out = _out_path(sc, ranks)
        writer = _check_out_on_rank0(world, out, args.resume, workload, run_shape(sc, ranks, batch),
                                     measurement_settings(cfg))
    from bologan.pipeline import load_showers
    from scaling.evaluation import training_and_reference

    showers = load_showers(cfg["data"], cfg["model"].particle, cfg["train"].seed)
    showers, reference = training_and_reference(cfg["eval"], showers, cfg["model"].particle, cfg["train"].seed,
                                                cfg["data"].momenta)
    if batch is not None:
        _check_enough_showers(len(showers), cfg["train"].n_disc, batch, replicas,
                              cfg["data"].data or "synthetic showers")
    return _Checked(args, cfg, workload, showers, replicas, batch, out, writer, ensemble, reference)


def _enable_timeline(args: argparse.Namespace, sc: ScalingConfig) -> None:
    """--timeline: let Horovod record a timeline when asked (set before it initialises). The
    file is started only once the run directory exists, so a refused run writes nothing."""
    if not args.timeline:
        return
    if sc.engine != ENGINE_HOROVOD:
        raise UserError(f"--timeline: Horovod's timeline needs --engine {ENGINE_HOROVOD} (this run uses {sc.engine})")
    os.environ["HOROVOD_TIMELINE"] = "DYNAMIC"


def _replicas_before_engine(sc: ScalingConfig, world: World) -> int | None:
    """Replicas known without TensorFlow: one per process, except tf.distribute in one process
    (its devices are known only once TensorFlow runs). An ensemble member has its group's."""
    if sc.mode == MODE_ENSEMBLE:
        return sc.group_size
    return world.size if sc.engine == ENGINE_HOROVOD or world.size > 1 else None


def _per_replica_batch(sc: ScalingConfig, replicas: int) -> int:
    try:
        return sc.per_replica_batch(replicas)
    except ValueError as exc:
        raise UserError(f"--global-batch: {exc} (strong mode)") from None


def _out_path(sc: ScalingConfig, replicas: int) -> Path:
    return Path(sc.out or f"results/{sc.study}/{sc.engine}-{sc.mode}-n{replicas}")


def _check_out_on_rank0(world: World, out: Path, resume: bool, workload: str,
                        shape: dict[str, Any], settings: dict[str, Any]) -> RunWriter | None:
    """Rank 0 only: refuse an unusable output directory; on --resume, the records read back."""
    if world.rank != 0:
        return None
    problem = check_out(out, resume, workload, shape, settings)
    if problem:
        raise UserError(problem)
    return RunWriter.resume(out) if resume else None


def _check_enough_showers(n_showers: int, n_disc: int, batch: int, replicas: int, source: str) -> None:
    need = n_disc * batch * replicas
    if n_showers < need:
        raise UserError(f"{source}: {n_showers} showers, but one iteration needs {need} "
                        f"(n_disc {n_disc} x batch {batch} x {replicas} replicas)")


def _agree(coll, world: World, problem: str | None) -> None:
    """Every rank learns whether any rank found a problem; then all raise the first one."""
    found = [(r, node, p) for r, (node, p) in enumerate(coll.allgather((world.node, problem))) if p]
    if found:
        rank, node, message = found[0]
        raise _AgreedError(message if rank == 0 else f"rank {rank} on {node}: {message}")


# -- step 2: TensorFlow, the engine and the run's context ---------------------------------------

def _configure_tensorflow(cfg: dict[str, Any], world: World) -> None:
    from bologan.tfsetup import configure
    from scaling.devices import prepare_cuda_environment

    prepare_cuda_environment()     # before CUDA starts: TensorFlow's GPU order = NVML's

    configure(cfg["train"].threads or world.cores, cfg["train"].seed, cfg["scaling"].inter_op_threads)


def _start_engine(cfg: dict[str, Any], world: World, coll):
    """The engine (Horovod, tf.distribute or single), set up on this rank's devices."""
    from bologan.tfsetup import quiet_tensorflow

    quiet_tensorflow()
    from scaling.engines import make_engine

    engine = make_engine(cfg["scaling"], world, coll)
    _configure_tensorflow(cfg, world)
    _agree(coll, world, _pin_problem(cfg, world))     # before any TensorFlow op (MPI collectives run none)
    engine.setup()
    return engine


def _pin_problem(cfg: dict[str, Any], world: World) -> str | None:
    """Pin this rank's device (scaling.devices, once per process); the refusal's line, or None."""
    from scaling.engines import pin_devices

    try:
        pin_devices(world, cfg["scaling"])
    except UserError as exc:
        return str(exc)
    return None


def _devices_of_every_rank(world: World, coll, share: bool) -> tuple[list[dict], int]:
    """Every rank's device (run.json) and how many ranks use this rank's GPU; ranks of a node on
    one GPU without --share-gpu are refused on every rank."""
    from scaling.devices import check_node_sharing, pinned

    pin = pinned()
    assert pin is not None, "the engine pins the device before this"
    try:
        sharers = check_node_sharing(coll, world.rank, world.node, pin, share)
    except UserError as exc:
        raise _AgreedError(str(exc)) from None
    rows = coll.allgather({"rank": world.rank, "node": world.node, "local_rank": world.local_rank,
                           "gpu_sharers": sharers if pin.on_gpu else 0, **pin.describe()})
    return rows, sharers


def _context(checked: _Checked, engine, world: World, coll, stop: StopFlag) -> RunContext:
    """The run's context with the engine's replica count; batch, data and output directory are
    checked again (and agreed) when that count was not known before TensorFlow."""
    replicas = engine.replicas
    batch, out, writer = checked.batch, checked.out, checked.writer
    if replicas != checked.replicas:
        # tf.distribute in one process: the replica count is known only now.
        problem = None
        try:
            batch, out, writer = _recheck_for_replicas(checked, world, replicas)
        except UserError as exc:
            problem = str(exc)
        _agree(coll, world, problem)
    assert batch is not None and out is not None
    log = (lambda msg: print(msg, flush=True)) if world.rank == 0 else (lambda msg: None)
    return RunContext(world=world, coll=coll, stop=stop, args=checked.args, cfg=checked.cfg,
                      workload=checked.workload, showers=checked.showers, engine=engine, replicas=replicas,
                      batch=batch, out=out, writer=writer, log=log, ensemble=checked.ensemble,
                      reference=checked.reference)


def _recheck_for_replicas(checked: _Checked, world: World, replicas: int) -> tuple[int, Path, RunWriter | None]:
    """``_preflight``'s batch, data and output-directory checks for ``replicas``; raises UserError."""
    sc: ScalingConfig = checked.cfg["scaling"]
    batch = _per_replica_batch(sc, replicas)
    out = _out_path(sc, replicas)
    _check_enough_showers(len(checked.showers), checked.cfg["train"].n_disc, batch, replicas,
                          checked.cfg["data"].data or "synthetic showers")
    writer = _check_out_on_rank0(world, out, checked.args.resume, checked.workload,
                                 run_shape(sc, replicas, batch), measurement_settings(checked.cfg))
    return batch, out, writer


# -- step 4: the model --------------------------------------------------------------------------

def _build_model(ctx: RunContext) -> _Model:
    """The GAN and its step compiled for the engine; on --resume, the latest checkpoint restored."""
    from bologan.model import Gan, checkpoint_manager, set_precision, uses_loss_scaling
    from bologan.step import NoiseSpec, WganGpStep

    sc, model_cfg, train_cfg, engine = ctx.sc, ctx.cfg["model"], ctx.cfg["train"], ctx.engine
    policy = set_precision(train_cfg)
    lr_scale = _lr_scale_factor(ctx)
    with engine.scope():
        gan = Gan(model_cfg, train_cfg, lr_scale=lr_scale, loss_scale=uses_loss_scaling(train_cfg))
        # Every replica's noise stream has the same checkpointed state; replicas differ by the
        # replica index each keys its draws with (bologan.step), unless global noise is on.
        noise = NoiseSpec(seed=train_cfg.seed, global_noise=sc.global_noise)
        step = WganGpStep(gan, model_cfg, train_cfg, replicas=engine.replicas_object(), noise=noise,
                          loss_scale=uses_loss_scaling(train_cfg)).compile(engine.wrap(), sc.steps_per_call)

    # Horovod: rank 0 writes checkpoints. tf.distribute: every worker must take part in saving,
    # so the non-chief workers save into a scratch folder, removed after each save.
    scratch = manager = None
    if engine.is_chief():
        manager = checkpoint_manager(gan, ctx.checkpoint_root, KEEP_CHECKPOINTS)
    elif sc.engine == ENGINE_MIRRORED:
        scratch = _scratch_dir(ctx)
        manager = checkpoint_manager(gan, scratch, KEEP_CHECKPOINTS)
    restore_s = None
    if ctx.resume:
        saved = checkpoint_manager(gan, ctx.checkpoint_root, KEEP_CHECKPOINTS)
        # Every member resumes, each from its own checkpoints, all at the same iteration.
        latest = common_checkpoint(saved, ctx.coll) if ctx.ensemble else saved.latest_checkpoint
        if latest:
            t_restore = time.perf_counter()
            try:
                gan.checkpoint().restore(latest).assert_existing_objects_matched()
                restore_s = time.perf_counter() - t_restore
            except AssertionError as exc:
                # e.g. a checkpoint written before the noise generator's state was saved
                raise UserError(f"{latest}: checkpoint does not hold this model's state "
                                f"({str(exc).splitlines()[0][:120]}); use a new --out") from None
    # Horovod broadcasts every variable from rank 0 (the iteration and noise state included);
    # tf.distribute workers each restore the chief's files, so they are checked to agree.
    engine.after_build(gan)
    start = int(gan.iteration.numpy())
    starts = ctx.coll.allgather(start)
    if len(set(starts)) > 1:
        raise _AgreedError(f"{ctx.out}: ranks resumed from different iterations {starts} (is --out on a "
                           f"filesystem that every node sees?)")
    return _Model(gan, step, manager, scratch, policy, start, restore_s)


def _lr_scale_factor(ctx: RunContext) -> float:
    """[train] lr_scaling's factor for this run's global batch against a 1-rank run's batch."""
    from bologan.lr_schedule import lr_scale_factor

    return lr_scale_factor(ctx.cfg["train"].lr_scaling, ctx.batch * ctx.replicas, ctx.sc.per_replica_batch(1))


def _scratch_dir(ctx: RunContext) -> Path:
    """A non-chief tf.distribute worker's checkpoint folder: named here, created by each save and
    removed after it, so that no worker leaves one behind (``_Model.save``)."""
    return Path(tempfile.gettempdir()) / f".ckpt-scratch-{ctx.out.name}-rank{ctx.world.rank}-{os.getpid()}"


# -- step 5: run.json ---------------------------------------------------------------------------

def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


def run_metadata(ctx: RunContext, *, precision: str, nodes: list[str]) -> dict[str, Any]:
    """run.json's content when a run starts; ``nodes`` holds every rank's node name."""
    from common.runinfo import cpu_model, git_commit, versions
    from scaling.devices import devices_summary
    from scaling.runsite import node_hardware, site_record

    sc, world, engine, train_cfg = ctx.sc, ctx.world, ctx.engine, ctx.cfg["train"]
    names = set(nodes)
    return {
        "run_id": ctx.out.name, "study": sc.study, "status": STATUS_RUNNING, "config": ctx.run_config,
        "config_hash": ctx.workload, "engine": sc.engine, "mode": sc.mode, "particle": ctx.cfg["model"].particle,
        "world_size": ctx.replicas, "processes": world.size, "nodes": len(names), "node_names": sorted(names),
        "ranks_per_node": max(nodes.count(n) for n in names),
        "per_rank_batch": ctx.batch, "global_batch": ctx.batch * ctx.replicas, "n_disc": train_cfg.n_disc,
        "iterations_per_epoch": sc.iterations_per_epoch, "precision": precision,
        "launcher": world.launcher, "placement": os.environ.get(PLACEMENT_ENV),
        "code_version": code_version().to_dict(), "versions": versions(),
        "hardware": {"device": devices_summary(ctx.devices), "cpu_model": cpu_model(), "cores_per_rank": world.cores,
                     "gpus_per_rank": 1 if engine.on_gpu else 0, **node_hardware()},
        "site": site_record(ctx.args.site),
        "devices": ctx.devices,
        "engine_details": engine.describe(), "git_commit": git_commit(),
        "start_time": _now(), "end_time": None, "exit_status": None, "restarts": [],
        "timing": TIMING_NOTE,
        "learning_rate": {"base": train_cfg.learning_rate, "scaling": train_cfg.lr_scaling,
                          "scale_factor": _lr_scale_factor(ctx), "warmup_iterations": train_cfg.lr_warmup_iterations},
        **(ctx.ensemble.run_json_fields() if ctx.ensemble else {}),
    }


def _open_run_directory(ctx: RunContext, model: _Model, nodes: list[str], start_epoch: int) -> int:
    """Rank 0: run.json (status running) and the epochs file before the first epoch; sets
    ``ctx.writer`` for a new run. Returns this start's attempt number (0 for the first)."""
    writer = ctx.writer
    if not ctx.resume:
        ctx.writer = writer = RunWriter(ctx.out, run_metadata(ctx, precision=model.precision, nodes=nodes))
        writer.write_meta()
        # An empty epochs file from the start: a run killed in its first epoch is still a
        # readable run directory that --resume can continue.
        writer.add_epochs([])
        return 0
    assert writer is not None
    writer.remove_stale_temp_files()
    attempt = len(writer.meta.get("restarts", [])) + 1
    # Epochs at or after the checkpoint were not saved: their rows stay, flagged as
    # interrupted, and the epochs are run again.
    for rec in writer.epochs:
        if rec.epoch >= start_epoch:
            rec.interrupted = True
    writer.add_epochs([])
    writer.meta.setdefault("restarts", []).append({"attempt": attempt, "time": _now(), "from_epoch": start_epoch})
    writer.write_meta(status=STATUS_RUNNING, end_time=None, exit_status=None, config=ctx.run_config)
    return attempt


def _record_failure(writer: RunWriter | None) -> None:
    """Rank 0 failed: say so in run.json (a failure elsewhere kills rank 0 before it can)."""
    if writer is None:
        return
    try:
        writer.write_meta(status=STATUS_FAILED, end_time=_now(), exit_status=EXIT_FAILURE)
    except Exception:  # noqa: BLE001 - the original error matters more than this one
        pass


# -- step 6: the epochs -------------------------------------------------------------------------

def _train(ctx: RunContext, model: _Model, attempt: int, start_epoch: int, nodes: list[str], t0: float) -> int:
    """The epochs of this attempt, then run.json's final status; returns the exit code."""
    from energy.meter import EnergyMeter, tf_sync_devices
    from scaling.baseline import record_idle_power
    from scaling.evaluation import training_monitor
    from scaling.trainer import EpochPlan, run_epochs

    sc, train_cfg, engine, coll = ctx.sc, ctx.cfg["train"], ctx.engine, ctx.coll
    from scaling.devices import devices_summary, pinned

    pin = pinned()
    meter = EnergyMeter.for_rank(ctx.world, ctx.cfg["energy"], t0=t0, on_gpu=engine.on_gpu,
                                 gpus_in_process=len(engine.local_replica_ids()), sync=tf_sync_devices(),
                                 gpus=pin.decision.gpus if pin is not None else None, gpu_sharers=ctx.gpu_sharers)
    descriptions = coll.gather(meter.describe())
    if ctx.writer is not None:
        ctx.writer.write_meta(energy=descriptions)
    iterators = _input_iterators(ctx, model.start_iteration)
    plan = EpochPlan(epochs=sc.epochs, iterations_per_epoch=sc.iterations_per_epoch,
                     warmup_epochs=sc.warmup_epochs, attempt=attempt,
                     showers_per_iteration=train_cfg.n_disc * ctx.batch * len(iterators),
                     member=ctx.ensemble.member if ctx.ensemble else 0, steps_per_call=sc.steps_per_call,
                     check_every=sc.check_every)

    # [train] checkpoint_every (scaling.checkpoint_cost): every rank decides alike; a stopping run
    # always saves its completed epoch. Each save's time and bytes go to run.json.
    checkpoints = CheckpointLog(ctx.writer, attempt)

    def save_checkpoint(epoch: int) -> None:
        due = checkpoint_due(epoch, sc.iterations_per_epoch, train_cfg.checkpoint_every, sc.epochs)
        if (due or coll.any(ctx.stop.raised)) and model.checkpoints is not None:
            iteration = (epoch + 1) * sc.iterations_per_epoch
            meter.begin(f"checkpoint-{epoch}")      # marks the save in the telemetry timeline
            checkpoints.timed_save(lambda: model.save(iteration), epoch, iteration)
            meter.end(f"checkpoint-{epoch}")

    ctx.log(f"{sc.engine} {sc.mode}: {ctx.replicas} replicas on {len(set(nodes))} node(s), batch {ctx.batch} per "
            f"replica, {ctx.cfg['model'].particle}, epochs {start_epoch + 1}..{sc.epochs} x "
            f"{sc.iterations_per_epoch} iterations on {devices_summary(ctx.devices)} -> {ctx.out}")
    if ctx.ensemble:
        ctx.log(ctx.ensemble.describe(ctx.out))
    timeline = ctx.out / TIMELINE_FILE.format(attempt=attempt) if ctx.args.timeline else None
    # Evaluation and TensorBoard at epoch ends (scaling.evaluation), outside the epoch clocks.
    monitor = training_monitor(ctx, meter, lambda: model.gan.generator)
    checkpoints.record_start(model.restore_s)
    meter.start()
    if timeline is not None:
        engine.start_timeline(timeline)
    try:
        record_idle_power(ctx, meter, attempt)
        with watchdog.allow("evaluation"):
            evaluated = monitor.before_first_epoch(start_epoch)
        watchdog.stage("first step call (tracing, compiling)")
        completed = evaluated or run_epochs(
            world=ctx.world, plan=plan, start_epoch=start_epoch, step=model.step, engine=engine,
            iterators=iterators, meter=meter, coll=coll, writer=ctx.writer, save_checkpoint=save_checkpoint,
            stop=ctx.stop, log=ctx.log, after_epoch=watchdog.allowing("evaluation", monitor.after_epoch))
        if completed:
            record_idle_power(ctx, meter, attempt, after=True)
    finally:
        if timeline is not None:
            engine.stop_timeline()
            _complete_timeline(ctx, timeline)
        monitor.close()
        meter.stop()
    watchdog.stage("finishing")
    return _finish(ctx, meter, completed, attempt, monitor.stopped_at_target)


def _complete_timeline(ctx: RunContext, path: Path) -> None:
    """On one rank Horovod reduces nothing, so its timeline file stays empty: make it the empty
    trace ``[]``, which trace viewers open, rather than a file that is not JSON."""
    if ctx.world.size == 1 and path.is_file() and path.stat().st_size == 0:
        atomic_write_text(path, "[]\n")


def _input_iterators(ctx: RunContext, start_iteration: int) -> list:
    """One batch iterator per replica this process drives, positioned at ``start_iteration``."""
    from bologan.pipeline import IterationBatches

    data_cfg, train_cfg = ctx.cfg["data"], ctx.cfg["train"]
    iterators = []
    for rid in ctx.engine.local_replica_ids():
        batches = IterationBatches(ctx.showers, data_cfg, train_cfg.n_disc, ctx.batch, train_cfg.seed)
        iterators.append(iter(batches.shard(rid, ctx.replicas).dataset(start_iteration, ctx.sc.steps_per_call)))
    return iterators


def _finish(ctx: RunContext, meter, completed: bool, attempt: int, at_target: bool = False) -> int:
    """Gather the last power samples and the meters' final descriptions; run.json's status
    (``at_target``: the run ended early because an evaluation met --target)."""
    coll, writer, out = ctx.coll, ctx.writer, ctx.out
    leftover = coll.gather(power_table(meter.drain_samples(), attempt))
    telemetry = coll.gather(telemetry_table(meter.drain_telemetry(), attempt))
    # Described again after the run: now with the sampler's cost, wraps seen and read errors.
    descriptions = coll.gather(meter.describe())
    status, code = (STATUS_COMPLETED, EXIT_OK) if completed else (STATUS_INTERRUPTED, EXIT_INTERRUPTED)
    if completed and at_target:
        status = STATUS_TARGET_REACHED
    if writer is not None:
        writer.add_power(leftover, attempt=attempt, label="end")
        write_telemetry_part(writer.path, telemetry, attempt=attempt, label="end")
        writer.write_meta(status=status, end_time=_now(), exit_status=code, energy=descriptions)
        if at_target:
            ctx.log(f"target reached: {writer.meta.get('target_reached')}")
        if completed:
            ctx.log(f"done: results in {out} (analyse with: python -m analysis {out.parent} --out "
                    f"{out.parent / 'report'})")
        else:
            # The stop is agreed: this rank may have stopped for a signal that reached another one.
            why = signal.Signals(ctx.stop.signal).name if ctx.stop.signal else "a stop signal on another rank"
            ctx.log(f"interrupted by {why}: completed epochs are saved up to the last checkpoint; continue with "
                    f"--resume --out {out}")
    coll.barrier()
    return code


if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    sys.exit(main(restore_signals=False))
