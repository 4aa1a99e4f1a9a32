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
import sys
import tempfile
import time
import traceback
from pathlib import Path

from bologan.config import BOLOGAN_SECTIONS, config_hash
from bologan.errors import EXIT_FAILURE, EXIT_INTERRUPTED, EXIT_OK, EXIT_USER_ERROR, UserError
from bologan.settings import add_section_arguments, resolve_sections, sections_to_dict
from energy.config import EnergyConfig
from scaling.collectives import for_world
from scaling.config import ScalingConfig
from scaling.rundir import CHECKPOINT_DIR, RUN_JSON, RunWriter
from scaling.world import World, discover

SECTIONS: dict[str, type] = {**BOLOGAN_SECTIONS, "scaling": ScalingConfig, "energy": EnergyConfig}
# Settings that do not change the per-iteration workload of a replica, or that scaling.run
# replaces (batch sizes come from [scaling]); excluded from the workload hash.
NOT_WORKLOAD = ("train.batch_size", "train.iterations", "train.checkpoint_every", "train.keep_checkpoints",
                "train.log_every", "train.threads")
KEEP_CHECKPOINTS = 3


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m scaling.run", description=__doc__,
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


def _check_out(out: Path, resume: bool, workload_hash: str) -> str | None:
    """Problem with the output directory, as a one-line message, or None."""
    meta_path = out / RUN_JSON
    if resume:
        if not meta_path.is_file():
            return f"{out}: nothing to resume (no {RUN_JSON})"
        try:
            saved = json.loads(meta_path.read_text())
        except (OSError, ValueError) as exc:
            return f"{meta_path}: unreadable ({exc})"
        if saved.get("config_hash") != workload_hash:
            return f"{out}: --resume with settings that change the workload (saved config_hash " \
                   f"{saved.get('config_hash')}, now {workload_hash}); use a new --out"
        return None
    if meta_path.exists() or (out / CHECKPOINT_DIR).exists():
        return f"{out}: already holds a run (use --resume to continue it, or choose another --out)"
    try:
        out.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=out, prefix=".probe"):
            pass
    except OSError as exc:
        return f"{out}: output directory not writable ({exc.strerror})"
    return None


def main(argv: list[str] | None = None) -> int:
    world = discover()
    coll = None
    try:
        coll = for_world(world, _engine_from_argv(argv))
        return _run(argv, world, coll)
    except UserError as exc:
        if world.rank == 0:
            print(f"error: {exc}", file=sys.stderr, flush=True)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    except Exception:  # noqa: BLE001 - report, then make sure no peer waits forever
        print(f"rank {world.rank} on {world.node} failed:\n{traceback.format_exc()}", file=sys.stderr, flush=True)
        if world.size > 1 and coll is not None:
            coll.abort(EXIT_FAILURE)
        return EXIT_FAILURE


def _engine_from_argv(argv: list[str] | None) -> str:
    args = sys.argv[1:] if argv is None else argv
    for i, a in enumerate(args):
        if a.startswith("--engine="):
            return a.split("=", 1)[1]
        if a == "--engine" and i + 1 < len(args):
            return args[i + 1]
    return "horovod"


def _run(argv: list[str] | None, world: World, coll) -> int:
    args = parse_args(argv)
    cfg = _resolve_config(args)
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
    try:
        batch = sc.per_replica_batch(replicas)
    except ValueError as exc:
        raise UserError(f"--global-batch: {exc} (strong mode)") from None
    out = Path(sc.out or f"results/{sc.study}/{sc.engine}-{sc.mode}-n{replicas}")
    workload = config_hash({k: v for k, v in sections_to_dict(cfg).items() if k in BOLOGAN_SECTIONS},
                           exclude=NOT_WORKLOAD)
    problem = coll.bcast(_check_out(out, args.resume, workload) if world.rank == 0 else None)
    if problem:
        raise UserError(problem)

    from bologan.model import Gan, checkpoint_manager, set_precision
    from bologan.pipeline import IterationBatches, load_showers
    from bologan.step import NoiseSpec, WganGpStep
    from energy.meter import EnergyMeter, resolve_gpu_index, tf_sync_devices
    from scaling.runinfo import cpu_model, git_commit, versions
    from scaling.trainer import EpochPlan, StopFlag, run_epochs

    stop = StopFlag()
    stop.install()
    showers = load_showers(data_cfg, model_cfg.particle, train_cfg.seed)
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
    writer: RunWriter | None = None
    if args.resume:
        latest = checkpoint_manager(gan, out, KEEP_CHECKPOINTS).latest_checkpoint
        if latest:
            gan.checkpoint().restore(latest).assert_existing_objects_matched()
    engine.after_build(gan)
    start_iteration = int(gan.iteration.numpy())
    start_epoch = start_iteration // sc.iterations_per_epoch
    nodes = coll.allgather(world.node)
    t0 = time.monotonic()

    if world.rank == 0:
        if args.resume:
            writer = RunWriter.resume(out)
            attempt = len(writer.meta.get("restarts", [])) + 1
            # Epochs at or after the checkpoint were not saved: their rows stay, flagged as
            # interrupted, and the epochs are run again.
            for rec in writer.epochs:
                if rec.epoch >= start_epoch:
                    rec.interrupted = True
            writer.add_epochs([])
            writer.meta["restarts"].append({"attempt": attempt, "time": _now(), "from_epoch": start_epoch})
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
    attempt = coll.bcast(attempt)

    gpu_index = resolve_gpu_index(world.local_rank) if engine.on_gpu else None
    meter = EnergyMeter(cfg["energy"], rank=world.rank, local_rank=world.local_rank, node=world.node,
                        read_node_counters=world.reads_node_counters, gpu_index=gpu_index, t0=t0,
                        sync=tf_sync_devices())
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
    status, code = ("completed", EXIT_OK) if completed else ("interrupted", EXIT_INTERRUPTED)
    if writer is not None:
        writer.add_power([s for rank_samples in leftover for s in rank_samples])
        writer.write_meta(status=status, end_time=_now(), exit_status=code)
        if completed:
            log(f"done: results in {out} (analyse with: python -m analysis {out.parent} --out {out.parent / 'report'})")
        else:
            log(f"interrupted by signal {stop.signal}: completed epochs are saved; continue with "
                f"--resume --out {out}")
    coll.barrier()
    return code


if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    sys.exit(main())
