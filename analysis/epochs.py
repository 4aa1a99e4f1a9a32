"""One row per (run, epoch, attempt) from the per-rank rows of epochs.parquet.

- Epoch time T = max over ranks of ``time_s``: the slowest rank defines the epoch (the
  all-reduce makes every rank wait for it).
- compute/comm/data-wait: mean over ranks, seconds.
- busy time of a rank = ``time_s - comm_s`` (its own work plus input waiting); the rank
  imbalance of an epoch is max/min of busy time over ranks, because waiting for a slow rank
  shows up inside the all-reduce of the fast ones.
- showers: sum over ranks (showers actually processed).
- run_path: the run directory, which tells repeats apart (run ids may repeat across studies).
- energy by domain: see ``energy_metrics`` (GPU summed over ranks, CPU/DRAM once per node).
"""
from __future__ import annotations

import math

import numpy as np
import pandas as pd

from analysis.energy_metrics import NODE_DOMAINS, domain_energy, total_energy
from common.rundir import Run
from common.vocab import ENERGY_DOMAINS

EPOCH_TABLE_COLUMNS = (
    "run_id", "run_path", "world_size", "nodes", "epoch", "attempt", "ranks_count", "time_s", "time_min_s", "compute_s", "comm_s",
    "data_wait_s", "busy_max_s", "busy_min_s", "showers_count", "iterations_count", "warmup", "interrupted",
    "gpu_energy_j", "gpu_energy_source", "cpu_energy_j", "cpu_energy_source", "dram_energy_j",
    "dram_energy_source", "total_energy_j", "total_energy_source", "total_energy_domains",
)


def epoch_table(run: Run) -> pd.DataFrame:
    """Aggregate a run's per-rank rows into per-epoch rows (``EPOCH_TABLE_COLUMNS``)."""
    df = run.epochs
    nodes = int(run.meta["nodes"])
    rows = []
    for (epoch, attempt), g in df.groupby(["epoch", "attempt"], sort=True):
        busy = (g["time_s"] - g["comm_s"]).to_numpy(dtype=float)
        parts = {d: domain_energy(g[f"{d}_energy_j"].tolist(), g[f"{d}_energy_source"].tolist(),
                                  expected_readers=nodes if d in NODE_DOMAINS else None)
                 for d in ENERGY_DOMAINS}
        tot = total_energy(parts)
        row = {
            "run_id": str(run.meta.get("run_id")), "run_path": str(run.path),
            "world_size": int(run.meta["world_size"]),
            "nodes": int(run.meta["nodes"]),
            "epoch": int(epoch), "attempt": int(attempt), "ranks_count": int(len(g)),
            "time_s": float(g["time_s"].max()), "time_min_s": float(g["time_s"].min()),
            "compute_s": float(g["compute_s"].mean()), "comm_s": float(g["comm_s"].mean()),
            "data_wait_s": float(g["data_wait_s"].mean()),
            "busy_max_s": float(np.max(busy)), "busy_min_s": float(np.min(busy)),
            "showers_count": int(g["showers"].sum()), "iterations_count": int(g["iterations"].max()),
            "warmup": bool(g["warmup"].any()), "interrupted": bool(g["interrupted"].any()),
            "total_energy_j": tot.energy_j, "total_energy_source": tot.source,
            "total_energy_domains": tot.domains,
        }
        for d, part in parts.items():
            row[f"{d}_energy_j"] = part.energy_j
            row[f"{d}_energy_source"] = part.source
        rows.append(row)
    return pd.DataFrame(rows, columns=list(EPOCH_TABLE_COLUMNS))


def used_epochs(table: pd.DataFrame) -> pd.DataFrame:
    """Epochs that enter medians: not warm-up, not interrupted, with a positive time."""
    keep = ~table["warmup"].astype(bool) & ~table["interrupted"].astype(bool) & (table["time_s"] > 0)
    return table[keep]


def imbalance_ratio(busy_max_s: float, busy_min_s: float) -> float:
    """Slowest / fastest rank busy time (1 = perfectly balanced)."""
    return busy_max_s / busy_min_s if busy_min_s > 0 else math.nan
