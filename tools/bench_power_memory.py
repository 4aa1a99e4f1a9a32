"""Rank 0's memory while it writes power samples, epoch after epoch (it must stay flat).

A fake meter produces ``--rate`` samples per second of training spread over ``--ranks`` ranks
(default 10^4/s: 1024 GPUs sampled at ~10 Hz); every epoch each rank's samples become a table
(as ``scaling.trainer`` does before the gather) and rank 0's ``RunWriter`` writes them as one
power part. Printed after epochs 1, 10 and 100: resident set size, Python heap (tracemalloc),
Arrow's pool, and the time the last write took.

    python tools/bench_power_memory.py                      # 100 epochs of 10 s at 10^4 samples/s
    python tools/bench_power_memory.py --epochs 300 --report-at 1,10,100,300
"""
from __future__ import annotations

import argparse
import gc
import os
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import pyarrow as pa  # noqa: E402

from common.records import PowerSample  # noqa: E402
from common.rundir import POWER_PARTS_DIR, RunWriter, power_table  # noqa: E402


def rss_bytes() -> int:
    """Current resident set size (not the peak), from /proc."""
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def fake_drain(rank: int, epoch: int, n: int, epoch_s: float) -> list[PowerSample]:
    """What one rank's meter hands over at the end of ``epoch``: ``n`` GPU power samples."""
    t0 = epoch * epoch_s
    return [PowerSample(rank, f"node{rank // 4}", t0 + i * epoch_s / n, "gpu", f"gpu{rank % 4}", 250.0 + i % 13,
                        "measured") for i in range(n)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rate", type=float, default=1e4, help="samples per second over all ranks")
    parser.add_argument("--ranks", type=int, default=1024)
    parser.add_argument("--epoch-s", type=float, default=10.0, help="simulated seconds per epoch")
    parser.add_argument("--epochs", type=int, default=100)
    parser.add_argument("--report-at", default="1,10,100", help="epochs after which to print memory")
    args = parser.parse_args(argv)
    report_at = {int(x) for x in args.report_at.split(",")}
    per_rank = max(1, round(args.rate * args.epoch_s / args.ranks))
    with tempfile.TemporaryDirectory() as tmp:
        writer = RunWriter(tmp, {"run_id": "bench"})
        tracemalloc.start()
        print(f"{args.ranks} ranks x {per_rank} samples per {args.epoch_s:g} s epoch "
              f"({per_rank * args.ranks / args.epoch_s:,.0f} samples/s)")
        print(f"{'epoch':>6} {'samples written':>16} {'RSS MiB':>9} {'Python heap MiB':>16} {'Arrow MiB':>10} "
              f"{'write s':>8}")
        for epoch in range(args.epochs):
            tables = [power_table(fake_drain(r, epoch, per_rank, args.epoch_s), attempt=0) for r in range(args.ranks)]
            t0 = time.perf_counter()
            writer.add_power(tables, attempt=0, label=f"{epoch:06d}")
            write_s = time.perf_counter() - t0
            del tables
            if epoch + 1 in report_at:
                gc.collect()
                heap = tracemalloc.get_traced_memory()[0]
                print(f"{epoch + 1:>6} {(epoch + 1) * per_rank * args.ranks:>16,} {rss_bytes() / 2**20:>9.1f} "
                      f"{heap / 2**20:>16.2f} {pa.total_allocated_bytes() / 2**20:>10.2f} {write_s:>8.3f}")
        tracemalloc.stop()
        parts = list((Path(tmp) / POWER_PARTS_DIR).iterdir())
        print(f"{len(parts)} parts, {sum(p.stat().st_size for p in parts) / 2**20:.1f} MiB on disk")
    return 0


if __name__ == "__main__":
    sys.exit(main())
