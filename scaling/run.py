"""Data-parallel BoloGAN training with per-rank time, communication and energy measurement.

Runs unchanged under mpirun, srun (--mpi=pmix), horovodrun, or plain python (one rank).
With no arguments it trains a small default on synthetic showers and says where it wrote.

Examples::

    python -m scaling.run                                        # 1 rank, defaults
    mpirun -np 4 python -m scaling.run --engine horovod --mode strong --global-batch 512
    srun -N4 --mpi=pmix python -m scaling.run --engine mirrored --mode weak --out results/s/m-w-n4
    python -m scaling.run --out results/s/m-w-n4 --resume        # after preemption (exit code 3)

Exit codes: 0 done, 2 bad input, 3 interrupted by SIGTERM/SIGUSR1 and resumable with --resume,
1 anything else (a failed rank ends the whole job).
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import signal
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bologan.config import BOLOGAN_SECTIONS, config_hash
from common.errors import EXIT_FAILURE, EXIT_INTERRUPTED, EXIT_OK, EXIT_USER_ERROR, UserError
from common.settings import add_section_arguments, resolve_sections, sections_to_dict
from energy.config import EnergyConfig
from scaling.collectives import HorovodCollectives, for_world
from scaling.config import ScalingConfig
from common.rundir import CHECKPOINT_DIR, RUN_JSON, RunWriter
from scaling.trainer import StopFlag
from scaling.world import World, discover

SECTIONS: dict[str, type] = {**BOLOGAN_SECTIONS, "scaling": ScalingConfig, "energy": EnergyConfig}
# Settings that do not change the per-iteration workload of a replica, or that scaling.run
# replaces (batch sizes come from [scaling]); excluded from the workload hash.
NOT_WORKLOAD = ("train.batch_size", "train.iterations", "train.checkpoint_every", "train.keep_checkpoints",
                "train.log_every", "train.threads")
KEEP_CHECKPOINTS = 3


class _Parser(argparse.ArgumentParser):
    """argparse whose usage errors are one line (exit 2), not a usage dump of every flag."""

    def error(self, message: str):  # type: ignore[override]
        raise UserError(f"{self.prog}: {message} (see --help)")


class _AgreedError(UserError):
    """A user error that every rank raises at the same point, so all can exit without an abort."""


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = _Parser(prog="python -m scaling.run", description=__doc__,
                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", help="TOML file with [model] [train] [data] [scaling] [energy] tables")
    parser.add_argument("--resume", action="store_true",
                        help="continue the run in --out from its latest checkpoint (after an interruption)")
    add_section_arguments(parser, SECTIONS)
    return parser.parse_args(argv)


def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


def _resolve_config(args: argparse.Namespace) -> dict:
    out = getattr(args, "scaling.out", "")
    if args.resume and args.config is None and out and (Path(out) / RUN_JSON).is_file():
        # A resumed run keeps its saved settings; flags given now (e.g. more epochs) still win.
        try:
            saved = json.loads((Path(out) / RUN_JSON).read_text())["config"]
        except (OSError, ValueError, KeyError) as exc:
            raise UserError(f"{Path(out) / RUN_JSON}: unreadable ({exc})") from None
        return resolve_sections(SECTIONS, None, args, overrides=saved)
    return resolve_sections(SECTIONS, args.config, args)


def workload_hash(cfg: dict[str, Any]) -> str:
    """run.json's ``config_hash``: the settings that define one replica's work per iteration."""
    return config_hash({k: v for k, v in sections_to_dict(cfg).items() if k in BOLOGAN_SECTIONS},
                       exclude=NOT_WORKLOAD)


def _replicas_before_engine(sc: ScalingConfig, world: World) -> int | None:
    """Replicas known without TensorFlow: one per process, except tf.distribute in one process
    (its devices are known only once TensorFlow runs)."""
    return world.size if sc.engine == "horovod" or world.size > 1 else None


def _per_replica_batch(sc: ScalingConfig, replicas: int) -> int:
    try:
        return sc.per_replica_batch(replicas)
    except ValueError as exc:
        raise UserError(f"--global-batch: {exc} (strong mode)") from None


def _out_path(sc: ScalingConfig, replicas: int) -> Path:
    return Path(sc.out or f"results/{sc.study}/{sc.engine}-{sc.mode}-n{replicas}")


def _not_writable(out: Path) -> str | None:
    """Why ``out`` could not be created or written, judged without creating anything."""
    probe = out
    while not probe.exists() and probe.parent != probe:
        probe = probe.parent
    if not probe.is_dir():
        return f"{out}: output directory not writable ({probe} is not a directory)"
    if not os.access(probe, os.W_OK | os.X_OK):
        return f"{out}: output directory not writable (no write permission on {probe})"
    return None


def _resume_mismatch(saved: dict[str, Any], now: dict[str, Any]) -> str | None:
    """A setting that would make the resumed epochs measure something else than the first ones."""
    for key, value in now.items():
        if value is not None and key in saved and saved[key] != value:
            return f"--resume with {key} {value!r}, but the run was started with {saved[key]!r}"
    return None


def _check_out(out: Path, resume: bool, workload_hash: str, shape: dict[str, Any]) -> str | None:
    """Problem with the output directory, as a one-line message, or None. Writes nothing.

    ``shape``: run.json keys a resumed run must keep (engine, mode, world size, batch, epoch
    length); a value of None is not known yet and not compared.
    """
    meta_path = out / RUN_JSON
    if resume:
        if not meta_path.is_file():
            return f"{out}: nothing to resume (no {RUN_JSON})"
        try:
            saved = json.loads(meta_path.read_text())
        except (OSError, ValueError) as exc:
            return f"{meta_path}: unreadable ({exc})"
        if not isinstance(saved, dict):
            return f"{meta_path}: expected a JSON object"
        if saved.get("config_hash") != workload_hash:
            return f"{out}: --resume with settings that change the workload (saved config_hash " \
                   f"{saved.get('config_hash')}, now {workload_hash}); use a new --out"
        mismatch = _resume_mismatch(saved, shape)
        if mismatch:
            return f"{out}: {mismatch}; use a new --out"
        return _not_writable(out)
    if meta_path.exists() or (out / CHECKPOINT_DIR).exists():
        return f"{out}: already holds a run (use --resume to continue it, or choose another --out)"
    return _not_writable(out)


def _create_out(out: Path) -> str | None:
    """Create ``out`` and prove a file can be written there; a problem as one line, or None."""
    try:
        out.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=out, prefix=".probe"):
            pass
    except OSError as exc:
        return f"{out}: output directory not writable ({exc.strerror})"
    return None


def _check_enough_showers(n_showers: int, n_disc: int, batch: int, replicas: int, source: str) -> None:
    need = n_disc * batch * replicas
    if n_showers < need:
        raise UserError(f"{source}: {n_showers} showers, but one iteration needs {need} "
                        f"(n_disc {n_disc} x batch {batch} x {replicas} replicas)")


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


def _preflight(argv: list[str] | None, world: World) -> _Checked:
    """Every check that needs no TensorFlow and no peer: arguments, config, batch split, output
    directory (rank 0), data. Raises ``UserError``; writes nothing."""
    args = parse_args(argv)
    cfg = _resolve_config(args)
    sc: ScalingConfig = cfg["scaling"]
    sc.set_horovod_environment()
    workload = workload_hash(cfg)
    replicas = _replicas_before_engine(sc, world)
    batch = out = writer = None
    if replicas is not None:
        batch = _per_replica_batch(sc, replicas)
        out = _out_path(sc, replicas)
        if world.rank == 0:
            problem = _check_out(out, args.resume, workload, _shape(sc, replicas, batch))
            if problem:
                raise UserError(problem)
            if args.resume:
                writer = RunWriter.resume(out)
    from bologan.pipeline import load_showers

    showers = load_showers(cfg["data"], cfg["model"].particle, cfg["train"].seed)
    if batch is not None:
        _check_enough_showers(len(showers), cfg["train"].n_disc, batch, replicas,
                              cfg["data"].data or "synthetic showers")
    return _Checked(args, cfg, workload, showers, replicas, batch, out, writer)


def _shape(sc: ScalingConfig, replicas: int | None, batch: int | None) -> dict[str, Any]:
    return {"engine": sc.engine, "mode": sc.mode, "world_size": replicas, "per_rank_batch": batch,
            "iterations_per_epoch": sc.iterations_per_epoch}


def _agree(coll, world: World, problem: str | None) -> None:
    """Every rank learns whether any rank found a problem; then all raise the first one."""
    found = [(r, node, p) for r, (node, p) in enumerate(coll.allgather((world.node, problem))) if p]
    if found:
        rank, node, message = found[0]
        raise _AgreedError(message if rank == 0 else f"rank {rank} on {node}: {message}")


def main(argv: list[str] | None = None, *, restore_signals: bool = True) -> int:
    """Run (or refuse) one training; returns the exit code.

    ``restore_signals=False`` ignores the stop signals after returning: a process that is about
    to exit must not be killed by a late SIGTERM and lose its exit code 3.
    """
    world = discover()
    # Before anything slow: a SIGTERM during start-up is then a clean stop, not a dead rank.
    stop = StopFlag()
    previous_handlers = stop.install()
    coll = None
    try:
        coll = for_world(world, _engine_from_argv(argv))
        return _run(argv, world, coll, stop)
    except _AgreedError as exc:
        if world.rank == 0:
            print(f"error: {exc}", file=sys.stderr, flush=True)
        return EXIT_USER_ERROR
    except UserError as exc:
        # Found by this rank alone: its peers may already wait in a collective, so end them all.
        where = f"rank {world.rank} on {world.node}: " if world.size > 1 else ""
        print(f"error: {where}{exc}", file=sys.stderr, flush=True)
        if world.size > 1 and coll is not None:
            coll.abort(EXIT_USER_ERROR)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    except Exception:  # noqa: BLE001 - report, then make sure no peer waits forever
        print(f"rank {world.rank} on {world.node} failed:\n{traceback.format_exc()}", file=sys.stderr, flush=True)
        if world.size > 1 and coll is not None:
            coll.abort(EXIT_FAILURE)
        return EXIT_FAILURE
    finally:
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
    return "horovod"


def _run(argv: list[str] | None, world: World, coll, stop: StopFlag) -> int:
    # Bad input is found before TensorFlow is imported (seconds, not a minute), and every rank
    # agrees on it before any rank goes on, so a problem one rank sees cannot leave the others
    # waiting in a collective.
    checked = problem = None
    try:
        checked = _preflight(argv, world)
    except UserError as exc:
        problem = str(exc)
    if checked is not None and isinstance(coll, HorovodCollectives):
        # Horovod's Gloo collectives run TensorFlow ops, which fix the thread pools: set them first.
        from bologan.tfsetup import configure

        c = checked.cfg
        configure(c["train"].threads or world.cores, c["train"].seed, c["scaling"].inter_op_threads)
    _agree(coll, world, problem)
    assert checked is not None
    args, cfg = checked.args, checked.cfg
    sc: ScalingConfig = cfg["scaling"]
    model_cfg, train_cfg, data_cfg = cfg["model"], cfg["train"], cfg["data"]
    log = (lambda msg: print(msg, flush=True)) if world.rank == 0 else (lambda msg: None)

    from bologan.tfsetup import configure, quiet_tensorflow

    quiet_tensorflow()
    from scaling.engines import make_engine

    engine = make_engine(sc, world, coll)
    configure(train_cfg.threads or world.cores, train_cfg.seed, sc.inter_op_threads)
    engine.setup()
    replicas = engine.replicas
    batch, out, writer = checked.batch, checked.out, checked.writer
    if replicas != checked.replicas:
        # tf.distribute in one process: the replica count is known only now.
        problem = None
        try:
            batch = _per_replica_batch(sc, replicas)
            out = _out_path(sc, replicas)
            _check_enough_showers(len(checked.showers), train_cfg.n_disc, batch, replicas,
                                  data_cfg.data or "synthetic showers")
            if world.rank == 0:
                problem = _check_out(out, args.resume, checked.workload, _shape(sc, replicas, batch))
                if not problem and args.resume:
                    writer = RunWriter.resume(out)
        except UserError as exc:
            problem = str(exc)
        _agree(coll, world, problem)
    assert batch is not None and out is not None
    # Every check passed: only now is anything created on disk.
    problem = coll.bcast(_create_out(out) if world.rank == 0 else None)
    if problem:
        raise _AgreedError(problem)
    workload = checked.workload

    from bologan.model import Gan, checkpoint_manager, set_precision
    from bologan.step import NoiseSpec, WganGpStep
    from common.runinfo import cpu_model, git_commit, versions

    policy = set_precision(train_cfg, engine.on_gpu)
    lr_scale = float(replicas) if sc.lr_scaling == "linear" else 1.0
    with engine.scope():
        gan = Gan(model_cfg, train_cfg, lr_scale=lr_scale, loss_scale=policy == "mixed_float16")
        # Per-replica noise streams differ by rank unless the global-noise check mode is on.
        noise = NoiseSpec(seed=train_cfg.seed if sc.global_noise else train_cfg.seed + 7919 * world.rank,
                          global_noise=sc.global_noise)
        step = WganGpStep(gan, model_cfg, train_cfg, replicas=engine.replicas_object(), noise=noise,
                          loss_scale=policy == "mixed_float16").compile(engine.wrap())

    # Horovod: rank 0 writes checkpoints. tf.distribute: every worker must take part in saving,
    # so the non-chief workers save into a scratch folder that is thrown away.
    writes_ckpt = engine.is_chief()
    ckpt_root = out if writes_ckpt else Path(tempfile.mkdtemp(prefix=f"ckpt-rank{world.rank}-"))
    manager = checkpoint_manager(gan, ckpt_root, KEEP_CHECKPOINTS)
    attempt = 0
    if args.resume:
        latest = checkpoint_manager(gan, out, KEEP_CHECKPOINTS).latest_checkpoint
        if latest:
            gan.checkpoint().restore(latest).assert_existing_objects_matched()
    engine.after_build(gan)
    start_iteration = int(gan.iteration.numpy())
    start_epoch = start_iteration // sc.iterations_per_epoch
    nodes = coll.allgather(world.node)
    t0 = time.monotonic()
    if args.resume and start_epoch >= sc.epochs:
        # Same answer on every rank (the checkpoint is rank 0's, broadcast by the engine).
        log(f"{out}: all {sc.epochs} epochs are done already; nothing to resume (give a larger --epochs to "
            f"train on)")
        return EXIT_OK

    if world.rank == 0:
        if args.resume:
            assert writer is not None
            writer.remove_stale_temp_files()
            attempt = len(writer.meta.get("restarts", [])) + 1
            # Epochs at or after the checkpoint were not saved: their rows stay, flagged as
            # interrupted, and the epochs are run again.
            for rec in writer.epochs:
                if rec.epoch >= start_epoch:
                    rec.interrupted = True
            writer.add_epochs([])
            writer.meta.setdefault("restarts", []).append(
                {"attempt": attempt, "time": _now(), "from_epoch": start_epoch})
            writer.write_meta(status="running", end_time=None, exit_status=None, config=sections_to_dict(cfg))
        else:
            writer = RunWriter(out, {
                "run_id": out.name, "study": sc.study, "status": "running", "config": sections_to_dict(cfg),
                "config_hash": workload, "engine": sc.engine, "mode": sc.mode, "particle": model_cfg.particle,
                "world_size": replicas, "processes": world.size, "nodes": len(set(nodes)),
                "node_names": sorted(set(nodes)),
                "ranks_per_node": max(nodes.count(n) for n in set(nodes)),
                "per_rank_batch": batch, "global_batch": batch * replicas, "n_disc": train_cfg.n_disc,
                "iterations_per_epoch": sc.iterations_per_epoch, "precision": policy,
                "launcher": world.launcher, "versions": versions(),
                "hardware": {"cpu_model": cpu_model(), "cores_per_rank": world.cores,
                             "gpus_per_rank": 1 if engine.on_gpu else 0},
                "engine_details": engine.describe(), "git_commit": git_commit(),
                "start_time": _now(), "end_time": None, "exit_status": None, "restarts": [],
                "timing": "time_s wall per epoch; comm_s in-graph timestamps around the gradient all-reduce "
                          "(includes waiting for the slowest replica); data_wait_s blocked on the next batch; "
                          "compute_s the rest of the step calls",
            })
            writer.write_meta()
            # An empty epochs file from the start: a run killed in its first epoch is still a
            # readable run directory that --resume can continue.
            writer.add_epochs([])
    else:
        writer = None
    attempt = coll.bcast(attempt)
    try:
        return _train(world, coll, cfg, engine, checked.showers, batch, replicas, step, manager, writes_ckpt,
                      writer, attempt, start_iteration, start_epoch, nodes, out, t0, stop, log)
    except Exception:
        if writer is not None:
            # Rank 0 failed: say so in run.json (a failure elsewhere kills rank 0 before it can).
            try:
                writer.write_meta(status="failed", end_time=_now(), exit_status=EXIT_FAILURE)
            except Exception:  # noqa: BLE001 - the original error matters more than this one
                pass
        raise


def _train(world: World, coll, cfg: dict[str, Any], engine, showers, batch: int, replicas: int, step, manager,
           writes_ckpt: bool, writer: RunWriter | None, attempt: int, start_iteration: int, start_epoch: int,
           nodes: list[str], out: Path, t0: float, stop: StopFlag, log) -> int:
    """The epochs of this attempt, then run.json's final status; returns the exit code."""
    from bologan.pipeline import IterationBatches
    from energy.meter import EnergyMeter, resolve_gpu_index, tf_sync_devices
    from energy.nvml import all_visible_indices
    from scaling.trainer import EpochPlan, run_epochs

    sc: ScalingConfig = cfg["scaling"]
    model_cfg, train_cfg, data_cfg = cfg["model"], cfg["train"], cfg["data"]
    gpu_index, gpu_indices = None, None
    if engine.on_gpu and len(engine.local_replica_ids()) > 1:
        gpu_indices = all_visible_indices()[0]  # one process drives every local GPU: meter them all
    elif engine.on_gpu:
        gpu_index = resolve_gpu_index(world.local_rank)
    meter = EnergyMeter(cfg["energy"], rank=world.rank, local_rank=world.local_rank, node=world.node,
                        read_node_counters=world.reads_node_counters, gpu_index=gpu_index,
                        gpu_indices=gpu_indices, t0=t0, sync=tf_sync_devices())
    descriptions = coll.gather(meter.describe())
    if writer is not None:
        writer.write_meta(energy=descriptions)

    iterators = []
    for rid in engine.local_replica_ids():
        shard = IterationBatches(showers, data_cfg, train_cfg.n_disc, batch, train_cfg.seed).shard(rid, replicas)
        iterators.append(iter(shard.dataset(start_iteration)))
    plan = EpochPlan(epochs=sc.epochs, iterations_per_epoch=sc.iterations_per_epoch,
                     warmup_epochs=sc.warmup_epochs, attempt=attempt,
                     showers_per_iteration=train_cfg.n_disc * batch * len(iterators))

    def save_checkpoint(epoch: int) -> None:
        if writes_ckpt or sc.engine == "mirrored":
            manager.save(checkpoint_number=(epoch + 1) * sc.iterations_per_epoch)

    log(f"{sc.engine} {sc.mode}: {replicas} replicas on {len(set(nodes))} node(s), batch {batch} per replica, "
        f"{model_cfg.particle}, epochs {start_epoch + 1}..{sc.epochs} x {sc.iterations_per_epoch} iterations -> {out}")
    meter.start()
    try:
        completed = run_epochs(world=world, plan=plan, start_epoch=start_epoch, step=step, engine=engine,
                               iterators=iterators, meter=meter, coll=coll, writer=writer,
                               save_checkpoint=save_checkpoint, stop=stop, log=log)
    finally:
        meter.stop()
    leftover = coll.gather(meter.drain_samples())
    # Described again after the run: now with the sampler's cost, wraps seen and read errors.
    descriptions = coll.gather(meter.describe())
    status, code = ("completed", EXIT_OK) if completed else ("interrupted", EXIT_INTERRUPTED)
    if writer is not None:
        writer.add_power([s for rank_samples in leftover for s in rank_samples])
        writer.write_meta(status=status, end_time=_now(), exit_status=code, energy=descriptions)
        if completed:
            log(f"done: results in {out} (analyse with: python -m analysis {out.parent} --out {out.parent / 'report'})")
        else:
            # The stop is agreed: this rank may have stopped for a signal that reached another one.
            why = signal.Signals(stop.signal).name if stop.signal else "a stop signal on another rank"
            log(f"interrupted by {why}: completed epochs are saved up to the last checkpoint; continue with "
                f"--resume --out {out}")
    coll.barrier()
    return code


if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    sys.exit(main(restore_signals=False))
