"""Run ``scaling.run.main`` under mpirun with one fault injected on one rank (no TensorFlow).

    mpirun -np 2 python reliability_fault.py FAULT RANK [scaling.run arguments...]

FAULT:
  raise-in-run      rank RANK raises RuntimeError while its peers wait in a barrier
  user-error-alone  rank RANK raises a UserError while its peers wait in a barrier
  data-error-alone  rank RANK cannot read the data file, its peers can (input check on one rank)
  oom-in-run        rank RANK runs out of host memory (MemoryError) while its peers wait in a barrier
  hang-at-start     rank RANK hangs before it starts MPI (a Python import stuck on a dead mount)
  none              nothing injected: the real checks run (input errors every rank sees)

Only the fault is fake; the error handling, agreement and abort are scaling.run's own.
"""
from __future__ import annotations

import os
import sys
import time

from common.errors import UserError
from scaling import run
from scaling.world import discover


def main() -> int:
    fault, target, argv = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
    if fault == "hang-at-start":
        if int(os.environ.get("OMPI_COMM_WORLD_RANK", "0")) == target:
            time.sleep(600)
    elif fault in ("raise-in-run", "user-error-alone", "oom-in-run"):
        def faulty_run(argv, world, coll, stop):
            if world.rank == target:
                time.sleep(0.5)  # let the peers reach the barrier first
                if fault == "raise-in-run":
                    raise RuntimeError("injected failure")
                if fault == "oom-in-run":
                    raise MemoryError()
                raise UserError("injected.toml: injected problem")
            coll.barrier()
            return 0

        run._run = faulty_run
    elif fault == "data-error-alone" and discover().rank == target:
        import bologan.pipeline

        def unreadable(data, particle, seed):
            raise UserError(f"{data.data or 'showers.parquet'}: file not found")

        bologan.pipeline.load_showers = unreadable
    elif fault not in ("none", "data-error-alone", "hang-at-start"):
        raise SystemExit(f"unknown fault {fault!r}")
    return run.main(argv)


if __name__ == "__main__":
    sys.exit(main())
