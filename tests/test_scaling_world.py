"""Rank/size/local-rank discovery and the batch plan (no processes started)."""
from __future__ import annotations

import os

import pytest

from scaling.config import ScalingConfig
from scaling.world import discover


def test_plain_python_is_one_rank():
    w = discover({})
    assert (w.rank, w.size, w.local_rank, w.local_size, w.launcher) == (0, 1, 0, 1, "python")
    assert w.cores >= 1 and w.reads_node_counters


def test_mpirun_variables():
    env = {"OMPI_COMM_WORLD_RANK": "3", "OMPI_COMM_WORLD_SIZE": "8", "OMPI_COMM_WORLD_LOCAL_RANK": "1",
           "OMPI_COMM_WORLD_LOCAL_SIZE": "4", "SLURM_PROCID": "0"}
    w = discover(env)
    assert (w.rank, w.size, w.local_rank, w.local_size, w.launcher) == (3, 8, 1, 4, "mpirun")
    assert not w.reads_node_counters


def test_srun_variables_with_uneven_tasks_per_node():
    env = {"SLURM_STEP_NUM_TASKS": "5", "SLURM_PROCID": "4", "SLURM_LOCALID": "0", "SLURM_NODEID": "2",
           "SLURM_STEP_TASKS_PER_NODE": "2(x2),1", "SLURMD_NODENAME": "n3", "SLURM_CPUS_PER_TASK": "7"}
    w = discover(env)
    assert (w.rank, w.size, w.local_rank, w.local_size, w.node, w.launcher, w.cores) == (4, 5, 0, 1, "n3", "srun", 7)


def test_batch_script_without_step_is_one_rank():
    assert discover({"SLURM_PROCID": "0", "SLURM_JOB_ID": "12"}).launcher == "python"


def test_hydra_and_horovodrun_variables():
    assert discover({"PMI_RANK": "1", "PMI_SIZE": "2"}).launcher == "mpiexec"
    w = discover({"HOROVOD_RANK": "1", "HOROVOD_SIZE": "2", "HOROVOD_LOCAL_RANK": "1", "HOROVOD_LOCAL_SIZE": "2"})
    assert (w.rank, w.local_rank, w.launcher) == (1, 1, "horovodrun")


def test_strong_and_weak_batches():
    assert ScalingConfig(mode="strong", global_batch=256).per_replica_batch(4) == 64
    assert ScalingConfig(mode="weak", batch_per_rank=128).per_replica_batch(4) == 128
    with pytest.raises(ValueError, match="not divisible by 3"):
        ScalingConfig(mode="strong", global_batch=256).per_replica_batch(3)


def test_mpi_yields_while_waiting_unless_the_user_chose(monkeypatch):
    from scaling.collectives import MPI_YIELD_VARIABLE, prefer_yielding_mpi

    monkeypatch.delenv(MPI_YIELD_VARIABLE, raising=False)
    prefer_yielding_mpi()
    assert os.environ[MPI_YIELD_VARIABLE] == "1"
    monkeypatch.setenv(MPI_YIELD_VARIABLE, "0")      # mpirun --mca mpi_yield_when_idle 0
    prefer_yielding_mpi()
    assert os.environ[MPI_YIELD_VARIABLE] == "0"
