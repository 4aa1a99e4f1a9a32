"""Who am I in the job: rank, size, local rank and node, discovered in one place.

Sources, first match wins: horovodrun's Gloo launcher (HOROVOD_RANK ...), Open MPI's mpirun
(OMPI_COMM_WORLD_*), MPICH/Hydra (PMI_RANK ...), a Slurm job step (SLURM_PROCID, SLURM_LOCALID,
SLURM_STEP_TASKS_PER_NODE), else a single process. Under ``srun --mpi=pmix`` Open MPI sets its
OMPI_COMM_WORLD_* variables only inside MPI_Init, so Slurm's variables are the ones seen first.

A launcher that gives rank and size but no node-local rank (PMI_RANK/PMI_SIZE without
MPI_LOCALRANKID: Flux, ``srun --mpi=pmi2``) gets it from Slurm's variables when they describe
the same rank, else from MPI: COMM_WORLD split by shared memory, one communicator per node.
Guessing local rank = rank instead would make only global rank 0 read its node's RAPL
counters and give every rank cores // world size threads.
"""
from __future__ import annotations

import os
import re
import socket
from dataclasses import dataclass
from typing import Callable, Mapping

from common.runinfo import usable_cpus
from energy.meter import NODE_READER_LOCAL_RANK

# (rank, size) -> (local rank, local size), or None when it cannot tell.
NodeLocal = Callable[[int, int], "tuple[int, int] | None"]


@dataclass(frozen=True)
class World:
    rank: int
    size: int
    local_rank: int
    local_size: int
    node: str            # node name (Slurm's node name when set: emulated nodes share a hostname)
    hostname: str
    launcher: str        # "horovodrun" | "mpirun" | "mpiexec" | "srun" | "python"
    cores: int           # CPU cores this rank owns

    @property
    def is_root(self) -> bool:
        return self.rank == 0

    @property
    def reads_node_counters(self) -> bool:
        """One rank per node reads node-wide counters (RAPL), so nothing is counted twice; the
        rule is energy's (``EnergyMeter.for_rank``), asked here so tests and probes agree with it."""
        return self.local_rank == NODE_READER_LOCAL_RANK


def _int(env: Mapping[str, str], key: str) -> int | None:
    value = env.get(key)
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None


def _slurm_tasks_on_node(spec: str, node_id: int) -> int | None:
    """Tasks on node ``node_id`` from SLURM_STEP_TASKS_PER_NODE, e.g. '2(x3),1'."""
    counts: list[int] = []
    for part in spec.split(","):
        m = re.fullmatch(r"(\d+)(?:\(x(\d+)\))?", part.strip())
        if not m:
            return None
        counts += [int(m.group(1))] * int(m.group(2) or 1)
    return counts[node_id] if 0 <= node_id < len(counts) else None


def _slurm_node_local(env: Mapping[str, str], rank: int, size: int) -> tuple[int, int] | None:
    """Local rank and size from a Slurm job step that holds this very rank (srun --mpi=pmi2)."""
    if _int(env, "SLURM_PROCID") != rank or _int(env, "SLURM_STEP_NUM_TASKS") != size:
        return None
    local = _int(env, "SLURM_LOCALID")
    local_size = _slurm_tasks_on_node(env.get("SLURM_STEP_TASKS_PER_NODE", ""), _int(env, "SLURM_NODEID") or 0)
    return (local, local_size) if local is not None and local_size else None


def mpi_node_local(rank: int, size: int) -> tuple[int, int] | None:
    """Local rank and size from MPI (initialises it): COMM_WORLD split by shared memory, or
    the processor names gathered where the split is not supported. None without mpi4py, or
    when MPI's world is not this (rank, size)."""
    from scaling.collectives import prefer_yielding_mpi  # here: collectives imports this module

    prefer_yielding_mpi()   # before MPI starts, as for every other use of MPI in a run
    try:
        from scaling.mpistart import start_mpi

        start_mpi()
        from mpi4py import MPI
    except ImportError:
        return None
    comm = MPI.COMM_WORLD
    if (comm.Get_rank(), comm.Get_size()) != (rank, size):
        return None
    try:
        node = comm.Split_type(MPI.COMM_TYPE_SHARED, key=rank)
    except (MPI.Exception, NotImplementedError):
        names = comm.allgather(MPI.Get_processor_name())
        peers = [r for r, name in enumerate(names) if name == names[rank]]
        return peers.index(rank), len(peers)
    try:
        return node.Get_rank(), node.Get_size()
    finally:
        node.Free()


def _cores(env: Mapping[str, str], local_size: int) -> int:
    per_task = _int(env, "SLURM_CPUS_PER_TASK")
    if per_task:
        return per_task
    return max(1, usable_cpus() // max(1, local_size))


def discover(env: Mapping[str, str] | None = None, node_local: NodeLocal | None = None) -> World:
    """This process's place in the job.

    ``env``: the environment to read (default: this process's). ``node_local``: how to find the
    local rank when the launcher gives none (default: ``mpi_node_local`` for this process's
    environment; nothing for a given ``env``, whose job MPI would not know). With neither, the
    ranks are taken to share one node.
    """
    if node_local is None and env is None:
        node_local = mpi_node_local
    env = os.environ if env is None else env
    hostname = socket.gethostname()
    node = env.get("SLURMD_NODENAME") or hostname
    candidates = (
        ("horovodrun", "HOROVOD_RANK", "HOROVOD_SIZE", "HOROVOD_LOCAL_RANK", "HOROVOD_LOCAL_SIZE"),
        ("mpirun", "OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_SIZE", "OMPI_COMM_WORLD_LOCAL_RANK",
         "OMPI_COMM_WORLD_LOCAL_SIZE"),
        ("mpiexec", "PMI_RANK", "PMI_SIZE", "MPI_LOCALRANKID", "MPI_LOCALNRANKS"),
    )
    for launcher, k_rank, k_size, k_local, k_local_size in candidates:
        rank, size = _int(env, k_rank), _int(env, k_size)
        if rank is not None and size is not None:
            local = _int(env, k_local)
            local_size = _int(env, k_local_size)
            if local is None or local_size is None:
                derived = _slurm_node_local(env, rank, size) or (node_local(rank, size) if node_local else None)
                local, local_size = derived or (rank, size)
            return World(rank, size, local, local_size, node, hostname, launcher, _cores(env, local_size))
    if "SLURM_STEP_NUM_TASKS" in env and _int(env, "SLURM_PROCID") is not None:
        rank = _int(env, "SLURM_PROCID") or 0
        size = _int(env, "SLURM_STEP_NUM_TASKS") or 1
        local = _int(env, "SLURM_LOCALID") or 0
        local_size = _slurm_tasks_on_node(env.get("SLURM_STEP_TASKS_PER_NODE", ""),
                                          _int(env, "SLURM_NODEID") or 0) or 1
        return World(rank, size, local, local_size, node, hostname, "srun", _cores(env, local_size))
    return World(0, 1, 0, 1, node, hostname, "python", _cores(env, 1))
