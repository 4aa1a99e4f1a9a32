"""Builders of run directories with known answers for the analysis tests (no tests here)."""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Callable

from energy.records import PowerSample
from common.rundir import EpochRecord, EvalRecord, RunWriter

N_DISC = 5
ITERATIONS = 10


def base_config(**train_overrides) -> dict:
    train = {"batch_size": 128, "n_disc": N_DISC, "learning_rate": 1e-4, "iterations": 100, "threads": 0}
    train.update(train_overrides)
    return {
        "model": {"particle": "photons", "generator": "bn_swish", "generator_widths": [50, 100, 200],
                  "critic_widths": [], "latent_dim": 50, "latent_mean": 0.5, "latent_std": 0.5},
        "train": train,
        "data": {"data": "", "synthetic_events": 20000, "label": "maxe", "shuffle_buffer": 0, "prefetch": 2},
        "scaling": {"engine": "horovod", "mode": "strong", "global_batch": 256, "batch_per_rank": 128,
                    "epochs": 4, "iterations_per_epoch": ITERATIONS, "out": "", "study": "test"},
        "energy": {"sample_interval_s": 0.1, "estimate_energy": False},
    }


def make_run(root: Path, run_id: str, *, n: int = 1, mode: str = "strong", engine: str = "horovod",
             particle: str = "photons", epochs: int = 4, warmup_epochs: int = 1,
             time_fn: Callable[[int, int], float] | float = 10.0, nodes: int = 1,
             gpu_w: float | None = 100.0, cpu_w: float | None = 50.0, dram_w: float | None = 10.0,
             gpu_source: str = "measured", cpu_source: str = "measured", dram_source: str = "measured",
             per_rank_batch: int | None = None, global_batch: int = 256, config: dict | None = None,
             config_hash: str = "abc123def456", interrupted: tuple[int, ...] = (), power: bool = False,
             evals: bool = False, comm_fraction: float | None = None, group_size: int = 1,
             start_time: str = "2026-01-01T00:00:00", end_time: str | None = None) -> Path:
    """A complete run directory; ``time_fn(epoch, rank)`` gives each rank's epoch time (s).

    Ranks are spread evenly over ``nodes``; the first rank of each node reads the node's RAPL
    counters (cpu/dram filled), the others carry NaN with source ``not_reader``.
    ``mode="ensemble"``: rank r trains member r // ``group_size`` (run.json group_size, members,
    member_names; epochs.parquet member), with the per-rank batch of weak scaling.
    """
    ensemble = mode == "ensemble"
    if comm_fraction is None:
        # a single rank, or an ensemble of single ranks, has nothing to all-reduce
        comm_fraction = 0.0 if n == 1 or (ensemble and group_size == 1) else 0.2
    if per_rank_batch is None:
        per_rank_batch = global_batch // n if mode == "strong" else 128
    if mode in ("weak", "ensemble"):
        global_batch = per_rank_batch * n
    cfg = config or base_config()
    cfg = json.loads(json.dumps(cfg))
    cfg["model"]["particle"] = particle
    cfg["scaling"].update({"engine": engine, "mode": mode, "out": str(root / run_id)})
    rpn = math.ceil(n / nodes)
    meta = {"run_id": run_id, "study": "test", "status": "completed", "config": cfg, "config_hash": config_hash,
            "engine": engine, "mode": mode, "particle": particle, "world_size": n, "nodes": nodes,
            "ranks_per_node": rpn, "per_rank_batch": per_rank_batch, "global_batch": global_batch,
            "launcher": "mpirun" if n > 1 else "python", "versions": {"python": "3.11"},
            "hardware": {"cpu_model": "test cpu"}, "start_time": start_time, "end_time": end_time, "restarts": [],
            "energy": [{"gpu": "nvml-energy", "rank": r} for r in range(n)]}
    if ensemble:
        meta.update({"group_size": group_size, "members": n // group_size,
                     "member_names": [f"m{k}" for k in range(n // group_size)]})
    w = RunWriter(root / run_id, meta)
    w.write_meta()
    records = []
    tf = time_fn if callable(time_fn) else (lambda e, r, v=float(time_fn): v)
    for epoch in range(epochs):
        for rank in range(n):
            t = float(tf(epoch, rank))
            reader = rank % rpn == 0
            rec = EpochRecord(
                rank=rank, local_rank=rank % rpn, node=f"node{rank // rpn}", epoch=epoch, attempt=0, time_s=t,
                compute_s=t * (0.75 - comm_fraction), comm_s=t * comm_fraction, data_wait_s=t * 0.05,
                iterations=ITERATIONS, showers=ITERATIONS * N_DISC * per_rank_batch,
                warmup=epoch < warmup_epochs, interrupted=epoch in interrupted,
                gpu_energy_j=gpu_w * t if gpu_w is not None else math.nan, gpu_energy_source=gpu_source,
                cpu_energy_j=cpu_w * t if (reader and cpu_w is not None) else math.nan,
                cpu_energy_source=cpu_source if reader else "not_reader",
                dram_energy_j=dram_w * t if (reader and dram_w is not None) else math.nan,
                dram_energy_source=dram_source if reader else "not_reader",
                member=rank // group_size if ensemble else 0)
            records.append(rec)
    w.add_epochs(records)
    if power:
        samples = []
        for rank in range(n):
            for i in range(20):
                samples.append(PowerSample(rank, f"node{rank // rpn}", i * 0.5, "gpu", f"gpu{rank % rpn}",
                                           90.0 + 5 * math.sin(i / 3 + rank), "measured"))
                if rank % rpn == 0:
                    samples.append(PowerSample(rank, f"node{rank // rpn}", i * 0.5, "package", "package-0",
                                               45.0 + 3 * math.cos(i / 4), "measured"))
        w.add_power(samples, attempt=0, label="000000")
    if evals:
        w.write_eval([EvalRecord(iteration=10 * (i + 1), chi2=50.0 / (i + 1) + 5, ndf=10,
                                 chi2_ndf=(50.0 / (i + 1) + 5) / 10, w1=0.1, ks=0.2) for i in range(6)])
    return root / run_id


def write_bench(root: Path, n: int, latency_s: float, bandwidth_bytes_per_s: float, engine: str = "horovod",
                nodes: int = 1, fixed_cost_s: float = 0.0) -> Path:
    """A synthetic all-reduce benchmark following analysis.projection.comm_model's default (tree) model
    exactly: c + 2 ceil(log2 N) alpha + 2(N-1)/N b/B (p10/p90 at +-5 %)."""
    results = []
    for k in range(2, 28, 2):
        b = 2**k
        t = fixed_cost_s + 2 * math.ceil(math.log2(n)) * latency_s + 2 * (n - 1) / n * b / bandwidth_bytes_per_s
        results.append({"bytes": b, "repeats": 20, "time_s_median": t, "time_s_p10": 0.95 * t,
                        "time_s_p90": 1.05 * t})
    path = root / f"allreduce-n{n}.json"
    path.write_text(json.dumps({"schema": "allreduce-bench/1", "engine": engine, "world_size": n, "nodes": nodes,
                                "ranks_per_node": n // nodes, "dtype": "float32", "results": results}))
    return path


def strong_study(root: Path, times: dict[int, float] | None = None, **kw) -> Path:
    """Strong-scaling series with T(N) = times[N] for every non-warm-up epoch."""
    times = times or {1: 100.0, 2: 55.0, 4: 30.0}
    for n, t in times.items():
        make_run(root, f"strong-n{n}", n=n, time_fn=t, **kw)
    return root
