"""Under mpirun: pose as a PMI launcher that names no local rank, then print discover()'s answer.

Open MPI's per-rank variables are removed before MPI starts (MPI_Init needs only its PMIx
ones), PMI_RANK/PMI_SIZE put in their place; rank 0 prints one JSON line per rank.
"""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

for key in [k for k in os.environ if k.startswith("OMPI_COMM_WORLD_")]:
    value = os.environ.pop(key)
    if key == "OMPI_COMM_WORLD_RANK":
        os.environ["PMI_RANK"] = value
    elif key == "OMPI_COMM_WORLD_SIZE":
        os.environ["PMI_SIZE"] = value
for key in ("MPI_LOCALRANKID", "MPI_LOCALNRANKS", "SLURM_LOCALID", "SLURM_PROCID", "SLURM_STEP_NUM_TASKS"):
    os.environ.pop(key, None)

from scaling.world import discover, mpi_node_local  # noqa: E402

answers = []


def recorded(rank: int, size: int):
    """mpi_node_local, noting that discover asked it (one node cannot tell it from local = rank)."""
    answers.append(mpi_node_local(rank, size))
    return answers[-1]


w = discover(dict(os.environ), node_local=recorded)
from mpi4py import MPI  # noqa: E402  (already started by discover)

rows = MPI.COMM_WORLD.gather({"rank": w.rank, "size": w.size, "local_rank": w.local_rank,
                              "local_size": w.local_size, "launcher": w.launcher,
                              "reads_node_counters": w.reads_node_counters, "mpi_answers": answers,
                              "default_agrees": discover() == w}, root=0)
if w.rank == 0:
    print(json.dumps(rows), flush=True)
