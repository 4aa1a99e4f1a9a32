"""All-reduce micro-benchmark: time of a float32 all-reduce of 1 KiB .. 64 MiB at this world size.

Run it under the same launcher as the training, e.g.::

    mpirun -np 4 python -m scaling.allreduce_bench --out results/study/allreduce-n4.json
    srun -N4 --mpi=pmix python -m scaling.allreduce_bench --engine mpi --out allreduce-n4.json

Each size is reduced ``--repeats`` times after warm-up (fewer for large sizes when
``--budget-s`` runs out); each timing starts after a barrier and ends when this rank has the
result, and the slowest rank's time is kept (that is when the collective is done for all).
Rank 0 writes JSON (schema ``allreduce-bench/1``) that ``python -m analysis`` fits the
latency + bandwidth model to.
"""
from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np

from common.atomic import atomic_write_json
from common.errors import EXIT_USER_ERROR, UserError
from scaling.collectives import for_world, prefer_yielding_mpi
from scaling.world import discover

SCHEMA = "allreduce-bench/1"


def parse_sizes(text: str) -> list[int]:
    """'1KiB..64MiB' (powers of two) or a comma list with KiB/MiB suffixes -> bytes."""
    def one(t: str) -> int:
        t = t.strip()
        for suffix, mult in (("KiB", 1024), ("MiB", 1024**2), ("GiB", 1024**3), ("B", 1)):
            if t.endswith(suffix):
                return int(float(t[: -len(suffix)]) * mult)
        return int(t)

    try:
        if ".." in text:
            lo, hi = (one(t) for t in text.split(".."))
            sizes = []
            s = lo
            while s <= hi:
                sizes.append(s)
                s *= 2
            return sizes
        return [one(t) for t in text.split(",") if t.strip()]
    except ValueError:
        raise UserError(f"--sizes: cannot read {text!r} (e.g. 1KiB..64MiB or 4096,1MiB)") from None


def _reducer(engine: str):
    """A function (numpy float32 array) -> reduced array, for the chosen engine."""
    prefer_yielding_mpi()  # as in training, so the timings match what a training step sees
    if engine == "horovod":
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
        import horovod.tensorflow as hvd
        import tensorflow as tf

        hvd.init()

        def reduce(buf):
            return hvd.allreduce(tf.constant(buf), op=hvd.Sum).numpy()

        return reduce
    from mpi4py import MPI

    comm = MPI.COMM_WORLD

    def reduce(buf):
        out = np.empty_like(buf)
        comm.Allreduce(buf, out, op=MPI.SUM)
        return out

    return reduce


def main(argv: list[str] | None = None) -> int:
    world = discover()
    parser = argparse.ArgumentParser(prog="python -m scaling.allreduce_bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--engine", choices=("horovod", "mpi"), default="horovod")
    parser.add_argument("--sizes", default="1KiB..64MiB", help="message sizes (default 1KiB..64MiB)")
    parser.add_argument("--repeats", type=int, default=20, help="timed repeats per size (default 20)")
    parser.add_argument("--warmup", type=int, default=3, help="untimed repeats per size (default 3)")
    parser.add_argument("--budget-s", type=float, default=20.0, help="time budget per size (default 20 s)")
    parser.add_argument("--out", help="JSON file written by rank 0 (default: print only)")
    args = parser.parse_args(argv)
    try:
        sizes = parse_sizes(args.sizes)
        if args.repeats < 1 or args.warmup < 0 or args.budget_s <= 0 or not sizes or min(sizes) < 4:
            raise UserError("--repeats >= 1, --warmup >= 0, --budget-s > 0 and sizes >= 4 bytes are needed")
    except UserError as exc:
        if world.rank == 0:
            print(f"error: {exc}", file=sys.stderr)
        return EXIT_USER_ERROR
    coll = for_world(world, "mpi" if world.size > 1 else "local")
    reduce = _reducer(args.engine)
    nodes = coll.allgather(world.node)
    results = []
    for size in sizes:
        buf = np.ones(size // 4, dtype=np.float32)
        for _ in range(args.warmup):
            reduce(buf)
        times = []
        start = time.perf_counter()
        for _ in range(args.repeats):
            coll.barrier()
            t0 = time.perf_counter()
            out = reduce(buf)
            times.append(time.perf_counter() - t0)
            if time.perf_counter() - start > args.budget_s and len(times) >= 3:
                break
        if not np.allclose(out[:4], world.size):
            raise RuntimeError(f"all-reduce of {size} bytes gave a wrong sum")
        slowest = np.max(np.array(coll.allgather(times)), axis=0)
        row = {"bytes": size, "repeats": len(times), "time_s_median": float(np.median(slowest)),
               "time_s_p10": float(np.percentile(slowest, 10)), "time_s_p90": float(np.percentile(slowest, 90))}
        results.append(row)
        if world.rank == 0:
            gbit = size * 8 / row["time_s_median"] / 1e9
            print(f"{size:>10} B  {1e6 * row['time_s_median']:10.1f} us  {gbit:7.3f} Gbit/s algorithmic", flush=True)
    if world.rank == 0:
        doc = {"schema": SCHEMA, "engine": args.engine, "world_size": world.size, "nodes": len(set(nodes)),
               "ranks_per_node": max(nodes.count(n) for n in set(nodes)), "dtype": "float32",
               "launcher": world.launcher, "results": results}
        if args.out:
            atomic_write_json(args.out, doc)
            print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
