"""What the in-graph all-reduce timing costs: 2-rank Horovod runs with ``--comm-timing graph``
(timestamps fenced on the gradients' values), ``graph-unfenced`` (ordered by control
dependencies only) and ``off``, interleaved (A B C A B C ...), same run length; prints each
run's median non-warm-up epoch time and comm_s share, and per-repeat ratios of epoch times:
graph / graph-unfenced is what the fence costs, graph / off what timing costs at all.

    .venv/bin/python tools/ab_comm_timing.py --repeats 3 --out results/ab-comm-timing
    .venv/bin/python tools/ab_comm_timing.py --in-process --repeats 5   # the fence alone

``--in-process`` times the fence by itself, which a loaded machine can still resolve: one
process, the photon critic's gradient shapes, a timed "reduction" (x 0.5) with and without the
fence in alternating blocks; prints microseconds per timed reduction, median and range.

Say the machine's load when quoting the numbers: on a shared machine only the interleaved ratio
means something.
"""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from common.rundir import load_run  # noqa: E402

# The short 2-rank training these tools compare settings on (tools/horovod_knobs.py too).
MPIRUN = ["mpirun", "--allow-run-as-root", "--oversubscribe", "--bind-to", "core"]
RUN_SHAPE = ["--engine", "horovod", "--mode", "weak", "--threads", "1", "--synthetic-events", "4096"]
RUN = [*RUN_SHAPE, "--epochs", "6", "--iterations-per-epoch", "12"]


def mpirun_command(ranks: int, module: str, args: list[str], mpirun_args: list[str] = ()) -> list[str]:
    """``mpirun [mpirun_args] -np ranks python -m module args``, bound to cores as the studies run."""
    return [*MPIRUN, *mpirun_args, "-np", str(ranks), sys.executable, "-m", module, *args]


MODES = ("graph", "graph-unfenced", "off")


def run_once(out: Path, mode: str, ranks: int) -> tuple[float, float]:
    """(median non-warm-up epoch time (s, slowest rank), median comm_s share of it)."""
    if out.exists():
        shutil.rmtree(out)
    cmd = mpirun_command(ranks, "scaling.run", [*RUN, "--comm-timing", mode, "--out", str(out)])
    res = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=900)
    if res.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{res.stderr[-2000:]}")
    e = load_run(out).epochs
    e = e[~e.warmup & ~e.interrupted]
    per_epoch = e.groupby("epoch")
    return float(per_epoch.time_s.max().median()), float((per_epoch.comm_s.mean() / per_epoch.time_s.max()).median())


def in_process(repeats: int, calls: int = 2000) -> None:
    """Microseconds per timed reduction of the photon critic's gradients, fenced and unfenced."""
    import time

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf

    from bologan.config import ModelConfig
    from bologan.model import build_critic
    from bologan.step import timed

    tf.config.threading.set_intra_op_parallelism_threads(1)
    grads = [tf.random.normal(v.shape) for v in build_critic(ModelConfig()).trainable_variables]

    def make(fence: bool):
        @tf.function
        def call(gs):
            return timed(lambda g: [t * 0.5 for t in g], gs, fence=fence)[1]
        call(grads)
        return call

    fns = {"fenced": make(True), "unfenced": make(False)}
    per_call: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():   # alternating blocks: both see the same load
            t0 = time.perf_counter()
            for _ in range(calls):
                fn(grads)
            per_call[name].append(1e6 * (time.perf_counter() - t0) / calls)
    for name, us in per_call.items():
        print(f"{name:8s}: {np.median(us):.1f} us per timed reduction (range {min(us):.1f}-{max(us):.1f}; "
              f"{len(grads)} gradients, {calls} calls x {repeats} blocks; load {os.getloadavg()[0]:.2f})")
    diff = np.array(per_call["fenced"]) - np.array(per_call["unfenced"])
    print(f"fence cost per timed reduction: median {np.median(diff):.1f} us, range {diff.min():.1f}-{diff.max():.1f} us")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--ranks", type=int, default=2)
    p.add_argument("--out", default="results/ab-comm-timing")
    p.add_argument("--in-process", action="store_true", help="time the fence alone, in this process")
    args = p.parse_args()
    if args.in_process:
        in_process(args.repeats)
        return 0
    out = ROOT / args.out
    times: dict[str, list[float]] = {mode: [] for mode in MODES}
    for r in range(args.repeats):
        for mode in MODES:   # interleaved, so every mode sees the same drift in the machine's load
            t, share = run_once(out / f"{mode}-{r}", mode, args.ranks)
            times[mode].append(t)
            print(f"repeat {r + 1} {mode:14s} median epoch {t:.3f} s  comm {100 * share:5.1f}%  "
                  f"(load {os.getloadavg()[0]:.2f})", flush=True)
    for mode, ts in times.items():
        print(f"{mode:14s}: median {np.median(ts):.3f} s, range {min(ts):.3f}-{max(ts):.3f} s")
    for name, a, b in (("fence (graph / graph-unfenced)", "graph", "graph-unfenced"),
                       ("timing (graph / off)", "graph", "off")):
        ratios = np.array(times[a]) / np.array(times[b])
        print(f"{name} epoch-time ratio per repeat: {', '.join(f'{x:.3f}' for x in ratios)}; "
              f"median {np.median(ratios):.3f}, range {ratios.min():.3f}-{ratios.max():.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
