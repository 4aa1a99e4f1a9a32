"""Start MPI so that a peer that never arrives cannot silence this rank's watchdog.

``MPI_Init`` waits for every rank of the job (Open MPI's start-up exchange), and mpi4py calls
it holding Python's interpreter lock: a rank whose peer hangs before starting MPI would then
wait with every Python thread stopped, the watchdog's included. Here ``MPI_Init_thread`` is
called through ctypes, which releases the lock for the duration of the call, on the very MPI
library mpi4py loaded; mpi4py then finds MPI running and finalizes it at exit as usual. Where
the library cannot be found this way, mpi4py starts MPI itself (the watchdog then covers
everything after MPI's start).
"""
from __future__ import annotations

import ctypes
import sys


def _loaded_mpi_library() -> str | None:
    """The path of the MPI library this process loaded (for mpi4py), from /proc/self/maps."""
    try:
        with open("/proc/self/maps") as fh:
            paths = {line.split()[-1] for line in fh if "/libmpi" in line}
    except OSError:
        return None
    paths = {p for p in paths if ".so" in p}
    return min(paths, key=len) if paths else None


def start_mpi() -> None:
    """Initialise MPI with MPI_THREAD_MULTIPLE (what mpi4py asks for by default), the
    interpreter lock released while it waits for the other ranks. Idempotent."""
    if "mpi4py.MPI" not in sys.modules:
        import mpi4py

        mpi4py.rc.initialize = False     # started below; mpi4py finalizes at exit
        mpi4py.rc.finalize = True
    from mpi4py import MPI

    if MPI.Is_initialized():
        return
    path = _loaded_mpi_library()
    if path is not None:
        try:
            lib = ctypes.CDLL(path)
            provided = ctypes.c_int(0)
            if lib.MPI_Init_thread(None, None, ctypes.c_int(MPI.THREAD_MULTIPLE), ctypes.byref(provided)) == 0:
                return
        except (OSError, AttributeError):
            pass
    MPI.Init_thread(MPI.THREAD_MULTIPLE)
