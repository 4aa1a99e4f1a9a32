"""``python -m bologan.data bench FILE``: what reading showers costs, and whether the input
pipeline keeps up with training.

1. The same showers (FILE, a Parquet shower file) are written as FastCaloGAN CSV (one file per
   momentum), CaloChallenge HDF5 and Parquet with the compression the package writes (pyarrow's
   default, snappy) and, for comparison, uncompressed and zstd. Each is loaded by the package's
   own reader in a fresh process, ``repeats`` times: load time (median, min, max) and the
   reader's peak memory (the child's peak resident set, VmHWM, minus its resident set once the
   readers are imported and before the load).
2. tf.data input rate: the training pipeline (``bologan.pipeline.IterationBatches``) drained
   without a model, with prefetch off and on (``[data] prefetch`` iterations), each with and
   without a cache of one pass (the second pass timed: a cache replays the same order every
   pass, which training does not do, so it only says what a cache could gain).
3. Against the training's consumption rate: the median showers/s per rank of ``--run DIR`` (a
   scaling.run directory), or ``--training-showers-per-s``; the headroom is input rate /
   consumption rate (below 1: training waits for data).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

PARQUET_PACKAGE = "snappy"                  # pyarrow's default: what write_showers writes
PARQUET_OTHERS = ("none", "zstd")           # for comparison only
CSV_ETA = (20, 25)


@dataclass
class LoadResult:
    format: str                 # csv | hdf5 | parquet-<compression>
    written_by_package: bool    # the package writes (or reads as its own) this format and compression
    size_bytes: int
    load_median_s: float
    load_min_s: float
    load_max_s: float
    peak_memory_bytes: int      # the load's peak resident memory above the process before it
    showers: int


@dataclass
class RateResult:
    pipeline: str               # e.g. "prefetch 0", "prefetch 2", "prefetch 2 + cache"
    showers_per_s: float
    iterations: int


def _write_formats(showers: Any, folder: Path) -> dict[str, tuple[Path, bool]]:
    """Every format's file (or CSV folder), and whether the package writes that format so."""
    import numpy as np
    import pyarrow.parquet as pq

    from bologan.dataio import showers_to_table, write_showers
    from bologan.importers import write_calochallenge_hdf5

    out: dict[str, tuple[Path, bool]] = {}
    csv_dir = folder / "csv"
    csv_dir.mkdir()
    a, b = CSV_ETA
    pid = showers.particle.pid
    for mom in sorted(set(showers.momentum_mev.tolist())):
        rows = showers.voxels_mev[showers.momentum_mev == mom]
        np.savetxt(csv_dir / f"pid{pid}_E{int(mom)}_eta_{a}_{b}_voxalisation.csv", rows, delimiter=",", fmt="%.6g")
    out["csv"] = (csv_dir, True)        # read by the package's importer (FastCaloGAN's format)
    try:
        write_calochallenge_hdf5(folder / "showers.hdf5", showers)
        out["hdf5"] = (folder / "showers.hdf5", True)
    except Exception as exc:  # noqa: BLE001 - h5py missing: the row says so
        print(f"hdf5 skipped: {exc}", file=sys.stderr)
    write_showers(folder / f"showers-{PARQUET_PACKAGE}.parquet", showers)
    out[f"parquet-{PARQUET_PACKAGE}"] = (folder / f"showers-{PARQUET_PACKAGE}.parquet", True)
    table = showers_to_table(showers)
    for comp in PARQUET_OTHERS:
        path = folder / f"showers-{comp}.parquet"
        pq.write_table(table, path, compression=comp)
        out[f"parquet-{comp}"] = (path, False)
    return out


def _size(path: Path) -> int:
    return sum(f.stat().st_size for f in path.iterdir()) if path.is_dir() else path.stat().st_size


def _status_bytes(field: str) -> int:
    """A memory line of /proc/self/status (kB) in bytes; 0 where there is no such file."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def load_once(fmt: str, path: str, particle: str) -> dict[str, Any]:
    """Load one format with the package's reader (in this process, meant to be fresh):
    {'load_s', 'showers', 'peak_bytes'} (peak resident memory above the process before the load)."""
    import numpy  # noqa: F401  - the readers' libraries are loaded before the clock and the memory
    import pandas  # noqa: F401
    import pyarrow.parquet  # noqa: F401

    from bologan import importers
    from bologan.dataio import read_showers

    try:
        import h5py  # noqa: F401
    except ImportError:
        pass
    before = _status_bytes("VmRSS")
    t0 = time.perf_counter()
    if fmt == "csv":
        showers = importers.import_fastcalogan_csv(path, particle, eta=CSV_ETA)
    elif fmt == "hdf5":
        showers = importers.import_calochallenge_hdf5(path, particle)
    else:
        showers = read_showers(path, particle)
    load_s = time.perf_counter() - t0
    return {"load_s": load_s, "showers": len(showers), "peak_bytes": max(0, _status_bytes("VmHWM") - before)}


def _child(fmt: str, path: str, particle: str) -> dict[str, Any]:
    """``load_once`` in a fresh interpreter."""
    code = ("import json, sys; from bologan.data_bench import load_once; "
            "print(json.dumps(load_once(sys.argv[1], sys.argv[2], sys.argv[3])))")
    proc = subprocess.Popen([sys.executable, "-c", code, fmt, path, particle], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    out, err = proc.communicate()
    if proc.returncode != 0:
        raise RuntimeError(f"loading {fmt} failed: {err.decode(errors='replace').strip().splitlines()[-1:]}")
    return json.loads(out.decode().strip().splitlines()[-1])


def bench_loads(showers: Any, repeats: int, folder: Path) -> list[LoadResult]:
    files = _write_formats(showers, folder)
    particle = showers.particle.name
    results = []
    for fmt, (path, own) in files.items():
        runs = [_child(fmt, str(path), particle) for _ in range(repeats)]
        times = [r["load_s"] for r in runs]
        results.append(LoadResult(fmt, own, _size(path), statistics.median(times), min(times), max(times),
                                  int(statistics.median(r["peak_bytes"] for r in runs)), runs[0]["showers"]))
    return results


def bench_input_rate(showers: Any, *, batch: int, n_disc: int, prefetch: int, iterations: int,
                     seed: int = 10) -> list[RateResult]:
    """Showers/s of the training input pipeline with prefetch off, on, and on with a cache."""
    from bologan.config import DataConfig
    from bologan.pipeline import IterationBatches
    from bologan.tfsetup import quiet_tensorflow

    quiet_tensorflow()
    import tensorflow as tf

    results = []
    cases = [("prefetch 0", 0, False), (f"prefetch {prefetch}", prefetch, False),
             ("prefetch 0 + cache", 0, True), (f"prefetch {prefetch} + cache", prefetch, True)]
    for label, pf, cache in (cases if prefetch else cases[::2]):
        batches = IterationBatches(showers, DataConfig(prefetch=pf), n_disc, batch, seed)
        per_pass = batches.iterations_per_pass
        ds = batches.dataset()
        if cache:
            ds = ds.take(per_pass).cache().repeat()
            ds = ds.prefetch(pf) if pf else ds
            it = iter(ds)
            for _ in range(per_pass):          # the first pass fills the cache
                next(it)
        else:
            it = iter(ds)
            next(it)                            # start-up (generator, first batch) not timed
        t0 = time.perf_counter()
        for _ in range(iterations):
            next(it)
        dt = time.perf_counter() - t0
        results.append(RateResult(label, iterations * n_disc * batch / dt, iterations))
        del it, ds
        tf.keras.backend.clear_session()
    return results


def training_rate(run_dir: str | None, given: float | None) -> tuple[float | None, str]:
    """Showers/s one rank's input pipeline must deliver: ``given``, else the median over the
    run's used epochs of its showers / epoch time, divided by its ranks (each rank has its own
    pipeline)."""
    if given is not None:
        return given, "given (--training-showers-per-s)"
    if not run_dir:
        return None, "not given (--run DIR or --training-showers-per-s)"
    from common.rundir import load_run

    run = load_run(run_dir, read_power=False)
    e = run.epochs
    used = e[~e["warmup"].astype(bool) & ~e["interrupted"].astype(bool)]
    if not len(used):
        return None, f"{run_dir}: no used epoch"
    per_epoch = used.groupby(["epoch", "attempt"]).agg(showers=("showers", "sum"), time_s=("time_s", "max"))
    ranks = max(1, int(run.meta.get("world_size") or 1))
    rate = float((per_epoch["showers"] / per_epoch["time_s"]).median()) / ranks
    return rate, f"median showers/s per rank of {run_dir} ({ranks} rank(s))"


def add_arguments(bench: argparse.ArgumentParser) -> None:
    bench.add_argument("file", type=Path, help="Parquet shower file (bologan.data generate/convert)")
    bench.add_argument("--particle", default=None, help="fail unless the file holds this particle")
    bench.add_argument("--repeats", type=int, default=3, help="loads per format (default: %(default)s)")
    bench.add_argument("--batch", type=int, default=128, help="per-replica batch of the input-rate test")
    bench.add_argument("--n-disc", type=int, default=5, help="critic steps per iteration (default: %(default)s)")
    bench.add_argument("--prefetch", type=int, default=2, help="prefetch of the 'on' case (default: %(default)s)")
    bench.add_argument("--iterations", type=int, default=200, help="iterations timed per pipeline case")
    bench.add_argument("--run", default=None, metavar="RUN_DIR", help="scaling.run directory whose showers/s "
                       "the input rate is compared with")
    bench.add_argument("--training-showers-per-s", type=float, default=None, help="or the consumption rate itself")
    bench.add_argument("--json", action="store_true", help="print one JSON object instead of tables")


def run_bench(args: argparse.Namespace) -> int:
    from common.errors import UserError

    from bologan.dataio import read_showers

    for name in ("repeats", "batch", "n_disc", "iterations"):
        if getattr(args, name) < 1:
            raise UserError(f"--{name.replace('_', '-')} must be >= 1")
    if args.prefetch < 0:
        raise UserError("--prefetch must be >= 0")
    showers = read_showers(args.file, args.particle)
    if len(showers) < args.n_disc * args.batch:
        raise UserError(f"{args.file}: {len(showers)} showers, one iteration needs {args.n_disc * args.batch}")
    consumption, where = training_rate(args.run, args.training_showers_per_s)
    with tempfile.TemporaryDirectory(prefix="bologan-data-bench-") as tmp:
        loads = bench_loads(showers, args.repeats, Path(tmp))
    rates = bench_input_rate(showers, batch=args.batch, n_disc=args.n_disc, prefetch=args.prefetch,
                             iterations=args.iterations)
    report = {"file": str(args.file), "showers": len(showers), "particle": showers.particle.name,
              "cpus": os.cpu_count(), "loads": [asdict(r) for r in loads], "input_rates": [asdict(r) for r in rates],
              "training_showers_per_s": consumption, "training_rate_source": where,
              "headroom": {r.pipeline: (r.showers_per_s / consumption if consumption else None) for r in rates}}
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    print(f"{args.file}: {len(showers)} {showers.particle.name} showers; loads in fresh processes, {args.repeats} each")
    print(f"{'format':<16} {'package':>7} {'size MB':>9} {'load s (median [min, max])':>28} {'peak MiB':>9}")
    for r in loads:
        print(f"{r.format:<16} {'yes' if r.written_by_package else 'no':>7} {r.size_bytes / 1e6:>9.2f} "
              f"{r.load_median_s:>10.3f} [{r.load_min_s:.3f}, {r.load_max_s:.3f}]{'':>4} "
              f"{r.peak_memory_bytes / 2**20:>9.1f}")
    print(f"\ntf.data input rate (batch {args.batch}, n_disc {args.n_disc}, {args.iterations} iterations timed):")
    for r in rates:
        head = report["headroom"][r.pipeline]
        print(f"  {r.pipeline:<22} {r.showers_per_s:>12,.0f} showers/s"
              + (f"   {head:.1f}x the training's consumption" if head else ""))
    print(f"training consumption: {f'{consumption:,.0f} showers/s' if consumption else 'n/a'} ({where})")
    return 0
