"""What the in-graph all-reduce timestamps cost: 2-rank Horovod runs with ``--comm-timing graph``
and ``off``, interleaved (A B A B ...), same run length; prints each run's median non-warm-up
epoch time and the ratio of the medians with its spread.

    .venv/bin/python tools/ab_comm_timing.py --repeats 3 --out results/ab-comm-timing

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


def run_once(out: Path, mode: str, ranks: int) -> float:
    if out.exists():
        shutil.rmtree(out)
    cmd = mpirun_command(ranks, "scaling.run", [*RUN, "--comm-timing", mode, "--out", str(out)])
    res = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=900)
    if res.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{res.stderr[-2000:]}")
    e = load_run(out).epochs
    e = e[~e.warmup & ~e.interrupted]
    return float(e.groupby("epoch").time_s.max().median())


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--ranks", type=int, default=2)
    p.add_argument("--out", default="results/ab-comm-timing")
    args = p.parse_args()
    out = ROOT / args.out
    times: dict[str, list[float]] = {"graph": [], "off": []}
    for r in range(args.repeats):
        for mode in ("graph", "off"):
            t = run_once(out / f"{mode}-{r}", mode, args.ranks)
            times[mode].append(t)
            print(f"repeat {r + 1} {mode:5s} median epoch {t:.3f} s  (load {os.getloadavg()[0]:.2f})", flush=True)
    ratios = np.array(times["graph"]) / np.array(times["off"])
    for mode, ts in times.items():
        print(f"{mode:5s}: median {np.median(ts):.3f} s, range {min(ts):.3f}-{max(ts):.3f} s")
    print(f"timed/untimed epoch-time ratio per repeat: {', '.join(f'{x:.3f}' for x in ratios)}; "
          f"median {np.median(ratios):.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
