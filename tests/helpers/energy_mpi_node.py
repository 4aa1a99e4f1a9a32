"""Run under ``mpirun -np 2``: two ranks share one (fake) node; node energy must appear once.

Usage: energy_mpi_node.py POWERCAP_ROOT. Every rank builds an EnergyMeter over the same tree;
the local rank from Open MPI decides (through ``EnergyMeter.for_rank``) which one reads the
node counters. Rank 0 changes the counters inside a window, both ranks gather their windows to
rank 0, and rank 0 checks that the sum over ranks equals the tree's change (not twice it).
Prints one JSON line on rank 0 and exits non-zero there when a check fails.
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
import sys
import time
from pathlib import Path

from mpi4py import MPI

sys.path.insert(0, str(Path(__file__).parent))
from energy_fakes import FakePowercap  # noqa: E402

from energy.config import EnergyConfig  # noqa: E402
from energy.meter import EnergyMeter, Placement  # noqa: E402

PACKAGE_DELTA_UJ = {"intel-rapl:0": 5_000_000, "intel-rapl:1": 2_500_000}
DRAM_DELTA_UJ = {"intel-rapl:0:1": 750_000}


def main() -> int:
    comm = MPI.COMM_WORLD
    rank = comm.Get_rank()
    local_rank = int(os.environ.get("OMPI_COMM_WORLD_LOCAL_RANK", "-1"))
    tree = FakePowercap(Path(sys.argv[1]))
    t0 = comm.bcast(time.monotonic() if rank == 0 else None)
    # A long interval: the sampler thread runs but takes no pass while rank 0 rewrites the files.
    config = EnergyConfig(sample_interval_s=30.0, powercap_root=str(tree.root))
    meter = EnergyMeter.for_rank(Placement(rank, local_rank, "fake-node"), config, t0=t0, on_gpu=False)
    meter.start()
    comm.Barrier()
    meter.begin("epoch-0")
    comm.Barrier()
    if rank == 0:
        for zone, delta in {**PACKAGE_DELTA_UJ, **DRAM_DELTA_UJ}.items():
            tree.add(zone, delta)
    comm.Barrier()
    window = meter.end("epoch-0")
    meter.stop()
    rows = comm.gather({"rank": rank, "local_rank": local_rank, **dataclasses.asdict(window)}, root=0)
    if rank != 0:
        return 0
    cpu = [r["cpu_energy_j"] for r in rows if not math.isnan(r["cpu_energy_j"])]
    dram = [r["dram_energy_j"] for r in rows if not math.isnan(r["dram_energy_j"])]
    result = {
        "rows": rows,
        "cpu_sum_j": sum(cpu), "dram_sum_j": sum(dram),
        "expected_cpu_j": sum(PACKAGE_DELTA_UJ.values()) / 1e6,
        "expected_dram_j": sum(DRAM_DELTA_UJ.values()) / 1e6,
        "sources": sorted(r["cpu_energy_source"] for r in rows),
    }
    ok = (len(rows) == 2 and result["cpu_sum_j"] == result["expected_cpu_j"]
          and result["dram_sum_j"] == result["expected_dram_j"]
          and result["sources"] == ["measured", "not_reader"])
    result["ok"] = ok
    print(json.dumps(result, sort_keys=True), flush=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
