"""How long a frozen rank keeps a job alive: mpirun -np 2 scaling.run, SIGSTOP of rank 1 after
two recorded epochs, seconds until mpirun and both ranks are gone. Prints each try, then the
median and the spread (min..max). Run from the repository root with PYTHONPATH set:

    python tools/stall_timing.py --tries 4 --stall-timeout-s 5
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from test_reliability_mpi import _alive, _Job, _rows  # noqa: E402


def one_try(tmp: Path, stall_timeout_s: float) -> tuple[float, int | None]:
    import os
    import signal

    out = tmp / "run"
    job = _Job(tmp, "stall", out, "--epochs", "40", "--iterations-per-epoch", "10",
               "--stall-timeout-s", str(stall_timeout_s))
    job.wait_for("two recorded epochs", lambda: sum(r["epoch"] == 1 for r in _rows(out)) == 2)
    ranks = job.ranks()
    os.kill(ranks[1], signal.SIGSTOP)
    t0 = time.monotonic()
    while (job.proc.poll() is None or any(_alive(p) for p in ranks.values())) and time.monotonic() < t0 + 300:
        time.sleep(0.05)
    gone = time.monotonic() - t0
    job.kill()
    return gone, job.proc.returncode


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tries", type=int, default=4)
    parser.add_argument("--stall-timeout-s", type=float, default=5.0)
    args = parser.parse_args()
    times = []
    for i in range(args.tries):
        with tempfile.TemporaryDirectory() as tmp:
            gone, rc = one_try(Path(tmp), args.stall_timeout_s)
        load = Path("/proc/loadavg").read_text().split()[0]
        print(f"try {i + 1}: job over {gone:.1f} s after SIGSTOP (exit {rc}, load average {load})", flush=True)
        times.append(gone)
    print(f"median {statistics.median(times):.1f} s, spread {min(times):.1f}..{max(times):.1f} s "
          f"over {len(times)} tries (--stall-timeout-s {args.stall_timeout_s:g})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
