"""Small host-side collectives between ranks (records, stop flags, barriers).

MPI (mpi4py) whenever the job was started by an MPI launcher or srun; Horovod's object
collectives when Horovod runs without MPI (horovodrun with Gloo); nothing for one process.
"""
from __future__ import annotations

import os
from typing import Any

from common.vocab import ENGINE_HOROVOD
from scaling.world import World

# Open MPI busy-polls while a rank waits in a collective unless told to yield. Horovod's
# background thread waits in one every cycle (1 ms), on the core where the rank's TensorFlow
# thread computes, so polling takes CPU from the compute. Measured on 2 cores, 2 ranks: the
# same compute ran 1.5x slower with polling than with yielding.
MPI_YIELD_VARIABLE = "OMPI_MCA_mpi_yield_when_idle"


def prefer_yielding_mpi() -> None:
    """Make Open MPI yield the CPU while waiting, unless the user chose (``--mca
    mpi_yield_when_idle 0`` or the variable). Effective only before MPI is initialised."""
    os.environ.setdefault(MPI_YIELD_VARIABLE, "1")


class LocalCollectives:
    """One process: every collective is the identity."""

    def gather(self, obj: Any) -> list[Any] | None:
        return [obj]

    def allgather(self, obj: Any) -> list[Any]:
        return [obj]

    def bcast(self, obj: Any) -> Any:
        return obj

    def any(self, flag: bool) -> bool:
        return flag

    def barrier(self) -> None:
        pass

    def abort(self, code: int) -> None:
        raise SystemExit(code)


class MpiCollectives(LocalCollectives):
    def __init__(self):
        prefer_yielding_mpi()
        from scaling.mpistart import start_mpi

        start_mpi()
        from mpi4py import MPI

        self._mpi = MPI
        self.comm = MPI.COMM_WORLD

    def gather(self, obj: Any) -> list[Any] | None:
        """Objects of every rank on rank 0 (None elsewhere)."""
        return self.comm.gather(obj, root=0)

    def allgather(self, obj: Any) -> list[Any]:
        return self.comm.allgather(obj)

    def bcast(self, obj: Any) -> Any:
        return self.comm.bcast(obj, root=0)

    def any(self, flag: bool) -> bool:
        """True on every rank if ``flag`` is true on any rank."""
        import numpy as np

        buf = np.array([1 if flag else 0], dtype=np.int32)
        out = np.zeros(1, dtype=np.int32)
        self.comm.Allreduce(buf, out, op=self._mpi.MAX)
        return bool(out[0])

    def barrier(self) -> None:
        self.comm.Barrier()

    def abort(self, code: int) -> None:
        """End every rank of the job (used when this rank failed: peers must not hang)."""
        self.comm.Abort(code)


class HorovodCollectives(LocalCollectives):
    """Horovod's object collectives (horovodrun with Gloo, no MPI).

    Horovod is initialised by the first collective, which may come before the engine's setup
    (the agreement on input errors); the caller sets HOROVOD_* settings in the environment first.
    """

    def __init__(self):
        import horovod.tensorflow as hvd

        self._hvd = hvd

    @property
    def hvd(self):
        if not self._hvd.is_initialized():
            self._hvd.init()
        return self._hvd

    def gather(self, obj: Any) -> list[Any] | None:
        objs = self.hvd.allgather_object(obj)
        return objs if self.hvd.rank() == 0 else None

    def allgather(self, obj: Any) -> list[Any]:
        return self.hvd.allgather_object(obj)

    def bcast(self, obj: Any) -> Any:
        return self.hvd.broadcast_object(obj, root_rank=0)

    def any(self, flag: bool) -> bool:
        return any(self.hvd.allgather_object(bool(flag)))

    def barrier(self) -> None:
        self.hvd.join()

    def abort(self, code: int) -> None:
        import os

        os._exit(code)


def for_world(world: World, engine: str) -> LocalCollectives:
    if world.size == 1:
        return LocalCollectives()
    if world.launcher == "horovodrun" and engine == ENGINE_HOROVOD:
        return HorovodCollectives()
    return MpiCollectives()
