"""All-reduce micro-benchmark: time of a float32 all-reduce of 1 KiB .. 64 MiB at this world size.

Run it under the same launcher as the training, e.g.::

    mpirun -np 4 python -m scaling.allreduce_bench --out results/study/allreduce-n4.json
    srun -N4 --mpi=pmix python -m scaling.allreduce_bench --engine mpi --out allreduce-n4.json
    mpirun -np 2 python -m scaling.allreduce_bench --engine mpi --training-sizes photons

``--training-sizes PARTICLE`` times exactly the messages one training iteration reduces (the
critic's gradients, ``--n-disc`` times, and the generator's once, sizes from the default model)
and adds their per-iteration time, n_disc x critic + generator, under ``"training"``.

Each size is reduced ``--repeats`` times after warm-up (fewer for large sizes when
``--budget-s`` runs out); each timing starts after a barrier and ends when this rank has the
result, and the slowest rank's time is kept (that is when the collective is done for all).
Rank 0 writes JSON (schema ``allreduce-bench/1``) that ``python -m analysis`` fits the
latency + bandwidth model to.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from bologan.config import TrainConfig
from bologan.model_size import model_size
from common.atomic import atomic_write_json
from common.cli import Parser, comma_list, positive_int
from common.errors import EXIT_USER_ERROR, UserError
from common.vocab import PARTICLE_NAMES
from scaling.collectives import for_world, prefer_yielding_mpi
from scaling.devices import pin_rank
from scaling.world import World, discover

SCHEMA = "allreduce-bench/1"
ELEMENT_BYTES = 4          # float32: every size must be a whole number of elements
MIN_REPEATS_IN_BUDGET = 3  # repeats timed even when --budget-s is spent (a median needs a few)
DEFAULT_SIZES = "1KiB..64MiB"
TRAINING_KEY = "training"  # the document's per-iteration summary with --training-sizes
MESSAGE_CRITIC, MESSAGE_GENERATOR = "critic", "generator"
QUANTILES = ("median", "p10", "p90")  # of a result row's time_s_<q>


@dataclass(frozen=True)
class TrainingMessage:
    """One all-reduce of a training iteration: whose gradients, their size (bytes) and how often
    one iteration reduces them (each step's gradients as one fused buffer: the engine's floor)."""
    name: str
    bytes: int
    per_iteration: int


def training_messages(particle: str, n_disc: int) -> list[TrainingMessage]:
    """The critic's gradients (reduced by each of the ``n_disc`` critic steps) and the
    generator's (once per iteration), for the default model of ``particle``."""
    size = model_size(None, particle)
    return [TrainingMessage(MESSAGE_CRITIC, size.critic_grad_bytes, n_disc),
            TrainingMessage(MESSAGE_GENERATOR, size.generator_grad_bytes, 1)]


def per_iteration_summary(particle: str, messages: list[TrainingMessage], rows: list[dict]) -> dict:
    """``"training"`` of the document: the messages and the all-reduce time of one iteration, s,
    sum over messages of ``per_iteration`` x that message's time (median, and the same sum of
    the 10th and 90th percentiles as a band). ``rows``: result rows in ``messages`` order."""
    out: dict[str, Any] = {
        "particle": particle, "n_disc": next(m.per_iteration for m in messages if m.name == MESSAGE_CRITIC),
        "messages": [{"message": m.name, "bytes": m.bytes, "per_iteration": m.per_iteration} for m in messages],
        "per_iteration_bytes": sum(m.bytes * m.per_iteration for m in messages)}
    for q in QUANTILES:
        out[f"per_iteration_s_{q}"] = float(sum(m.per_iteration * row[f"time_s_{q}"] for m, row in zip(messages, rows)))
    return out


def read_per_iteration_s(path: str | Path) -> float:
    """Median all-reduce time of one training iteration, s, from a file written with
    ``--training-sizes``; anything else is a ``UserError`` naming the file."""
    try:
        doc = json.loads(Path(path).read_text())
    except (OSError, ValueError) as exc:
        raise UserError(f"{path}: unreadable all-reduce benchmark file ({exc})") from None
    if not isinstance(doc, dict) or doc.get("schema") != SCHEMA:
        raise UserError(f"{path}: not an {SCHEMA} file")
    try:
        return float(doc[TRAINING_KEY]["per_iteration_s_median"])
    except (KeyError, TypeError, ValueError):
        raise UserError(f"{path}: no per-iteration time (written without --training-sizes?)") from None


def parse_sizes(text: str) -> list[int]:
    """'1KiB..64MiB' (powers of two) or a comma list with B/KiB/MiB/GiB suffixes -> bytes.

    Every size must be a positive multiple of 4 bytes (float32 elements) and a range must not
    be empty: anything else is a ``UserError`` naming ``--sizes`` and the value.
    """
    def bad(why: str) -> UserError:
        return UserError(f"--sizes {text!r}: {why} (e.g. 1KiB..64MiB or 4096,1MiB)")

    def one(t: str) -> int:
        t = t.strip()
        for suffix, mult in (("KiB", 1024), ("MiB", 1024**2), ("GiB", 1024**3), ("B", 1)):
            if t.endswith(suffix):
                value = float(t[: -len(suffix)]) * mult
                break
        else:
            value = float(t)
        if not math.isfinite(value) or value != int(value):
            raise bad(f"{t!r} is not a whole number of bytes")
        size = int(value)
        if size <= 0:
            raise bad(f"{t!r} is not a positive size")
        if size % ELEMENT_BYTES:
            raise bad(f"{t!r} is {size} bytes, not a multiple of {ELEMENT_BYTES} (float32 elements)")
        return size

    try:
        if ".." in text:
            lo, hi = (one(t) for t in text.split(".."))
            if lo > hi:
                raise bad(f"the range is empty ({lo} > {hi} bytes)")
            sizes = []
            s = lo
            while s <= hi:
                sizes.append(s)
                s *= 2
            return sizes
        sizes = comma_list(one, "size", allow_empty=True)(text)
    except (ValueError, argparse.ArgumentTypeError):
        raise bad("cannot read it") from None
    if not sizes:
        raise bad("no size given")
    return sizes


def another_repeat(done: int, repeats: int, elapsed_s: float, budget_s: float) -> bool:
    """Whether to time one more repeat of a size: until ``repeats`` are done, or earlier once
    ``budget_s`` seconds are spent and at least MIN_REPEATS_IN_BUDGET are."""
    if done >= repeats:
        return False
    return done < MIN_REPEATS_IN_BUDGET or elapsed_s <= budget_s


def timed_repeats(reduce, buf: Any, repeats: int, budget_s: float, coll,
                  clock=time.perf_counter) -> tuple[list[float], np.ndarray | None]:
    """This rank's time of each repeat, s, and the last result.

    Rank 0 alone decides, on its clock, whether another repeat runs and broadcasts the decision:
    were each rank to judge the budget on its own clock, one could leave for the gather while
    another still waits in the all-reduce (a deadlock). ``coll``: the job's collectives.
    """
    times: list[float] = []
    out = None
    start = clock()
    while coll.bcast(another_repeat(len(times), repeats, clock() - start, budget_s)):
        coll.barrier()
        t0 = clock()
        out = reduce(buf)
        times.append(clock() - t0)
    return times, out


@dataclass
class Reducer:
    """One engine's all-reduce, split so that only the reduction itself is timed.

    ``place`` puts a host buffer where the engine reduces it (on the GPU for Horovod with GPU
    operations) once per size, outside the timed region; ``reduce`` reduces a placed buffer and
    returns once the result is complete, without copying it back to the host; ``fetch`` copies a
    result to the host for the correctness check, after timing.
    """
    place: Callable[[np.ndarray], Any]
    reduce: Callable[[Any], Any]
    fetch: Callable[[Any], np.ndarray]


def _reducer(engine: str, world: World, share_gpu: bool = False) -> Reducer:
    prefer_yielding_mpi()  # as in training, so the timings match what a training step sees
    if engine == "horovod":
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
        import horovod.tensorflow as hvd
        import tensorflow as tf

        hvd.init()
        # The same device as training (one GPU per rank, by PCI bus id); after pinning, this
        # rank's GPU is the only one TensorFlow sees, as /GPU:0.
        device = "/GPU:0" if pin_rank(world.local_rank, world.local_size, share=share_gpu).on_gpu else "/CPU:0"

        def place(buf):
            with tf.device(device):
                return tf.identity(tf.constant(buf))

        def reduce(tensor):
            out = hvd.allreduce(tensor, op=hvd.Sum)
            # Reading one element waits for the whole reduction: a 4-byte copy, not the buffer's.
            out[:1].numpy()
            return out

        return Reducer(place=place, reduce=reduce, fetch=lambda out: out.numpy())
    from mpi4py import MPI

    comm = MPI.COMM_WORLD

    def reduce_mpi(buf):
        out = np.empty_like(buf)
        comm.Allreduce(buf, out, op=MPI.SUM)
        return out

    return Reducer(place=lambda buf: buf, reduce=reduce_mpi, fetch=lambda out: out)


def main(argv: list[str] | None = None) -> int:
    world = discover()
    parser = Parser("python -m scaling.allreduce_bench", __doc__)
    parser.add_argument("--engine", choices=("horovod", "mpi"), default="horovod", help="who reduces")
    parser.add_argument("--sizes", default=None,
                        help=f"message sizes: a power-of-two range or a comma list (default {DEFAULT_SIZES})")
    parser.add_argument("--training-sizes", choices=PARTICLE_NAMES, default=None, metavar="PARTICLE",
                        help="instead of --sizes: the gradient buffers one training iteration of this "
                             f"particle's default model reduces ({', '.join(PARTICLE_NAMES)})")
    parser.add_argument("--n-disc", type=positive_int, default=TrainConfig().n_disc,
                        help="critic steps per iteration, for the per-iteration time of --training-sizes")
    parser.add_argument("--repeats", type=int, default=20, help="timed repeats per size")
    parser.add_argument("--warmup", type=int, default=3, help="untimed repeats per size")
    parser.add_argument("--budget-s", type=float, default=20.0, help="time budget per size, s")
    parser.add_argument("--share-gpu", action="store_true",
                        help="allow more ranks than GPUs on a node (as scaling.run --share-gpu)")
    parser.add_argument("--out", help="JSON file written by rank 0 (default: print only)")
    try:
        args = parser.parse_args(argv)   # inside: every rank refuses, only rank 0 says why
        if args.training_sizes and args.sizes is not None:
            raise UserError("--sizes and --training-sizes: give one of them")
        messages = training_messages(args.training_sizes, args.n_disc) if args.training_sizes else []
        sizes = [m.bytes for m in messages] if messages else parse_sizes(args.sizes or DEFAULT_SIZES)
        if args.repeats < 1 or args.warmup < 0 or args.budget_s <= 0 or not sizes or min(sizes) < 4:
            raise UserError("--repeats >= 1, --warmup >= 0, --budget-s > 0 and sizes >= 4 bytes are needed")
    except UserError as exc:
        if world.rank == 0:
            print(f"error: {exc}", file=sys.stderr)
        return EXIT_USER_ERROR
    coll = for_world(world, "mpi" if world.size > 1 else "local")
    try:
        reducer = _reducer(args.engine, world, args.share_gpu)
    except UserError as exc:      # the device rule refused (same answer on every rank of a node)
        print(f"error: rank {world.rank} on {world.node}: {exc}", file=sys.stderr, flush=True)
        return EXIT_USER_ERROR
    nodes = coll.allgather(world.node)
    results = []
    for i, size in enumerate(sizes):
        buf = reducer.place(np.ones(size // ELEMENT_BYTES, dtype=np.float32))
        for _ in range(args.warmup):
            reducer.reduce(buf)
        times, out = timed_repeats(reducer.reduce, buf, args.repeats, args.budget_s, coll)
        if not np.allclose(reducer.fetch(out)[:4], world.size):
            raise RuntimeError(f"all-reduce of {size} bytes gave a wrong sum")
        slowest = np.max(np.array(coll.allgather(times)), axis=0)
        row = {"bytes": size, "repeats": len(times), "time_s_median": float(np.median(slowest)),
               "time_s_p10": float(np.percentile(slowest, 10)), "time_s_p90": float(np.percentile(slowest, 90))}
        if messages:
            row["message"] = messages[i].name
        results.append(row)
        if world.rank == 0:
            gbit = size * 8 / row["time_s_median"] / 1e9
            label = f"  {messages[i].name}" if messages else ""
            print(f"{size:>10} B  {1e6 * row['time_s_median']:10.1f} us  {gbit:7.3f} Gbit/s algorithmic{label}",
                  flush=True)
    if world.rank == 0:
        doc = {"schema": SCHEMA, "engine": args.engine, "world_size": world.size, "nodes": len(set(nodes)),
               "ranks_per_node": max(nodes.count(n) for n in set(nodes)), "dtype": "float32",
               "launcher": world.launcher, "results": results}
        if messages:
            doc[TRAINING_KEY] = per_iteration_summary(args.training_sizes, messages, results)
            t = doc[TRAINING_KEY]
            print(f"per iteration ({t['n_disc']} x {MESSAGE_CRITIC} + 1 x {MESSAGE_GENERATOR}, "
                  f"{t['per_iteration_bytes']} B): {1e3 * t['per_iteration_s_median']:.3f} ms", flush=True)
        if args.out:
            atomic_write_json(args.out, doc)
            print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
