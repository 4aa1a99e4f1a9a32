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


# ---------------------------------------------------------- PMI without a local-rank variable
def test_pmi_without_local_rank_asks_for_the_node_local_rank():
    # Two nodes of two ranks; global rank 3 is the second rank of node 1. Guessing local rank =
    # rank (3) would leave node 1 without a RAPL reader and give each rank cores // 4 threads.
    asked = []

    def two_per_node(rank, size):
        asked.append((rank, size))
        return rank % 2, 2

    w = discover({"PMI_RANK": "3", "PMI_SIZE": "4"}, node_local=two_per_node)
    assert asked == [(3, 4)]
    assert (w.rank, w.size, w.local_rank, w.local_size, w.launcher) == (3, 4, 1, 2, "mpiexec")
    assert not w.reads_node_counters
    w2 = discover({"PMI_RANK": "2", "PMI_SIZE": "4"}, node_local=two_per_node)
    assert w2.local_rank == 0 and w2.reads_node_counters
    assert w.cores == discover({"OMPI_COMM_WORLD_RANK": "3", "OMPI_COMM_WORLD_SIZE": "4",
                                "OMPI_COMM_WORLD_LOCAL_RANK": "1", "OMPI_COMM_WORLD_LOCAL_SIZE": "2"}).cores


def test_pmi_under_srun_takes_slurms_local_rank():
    env = {"PMI_RANK": "3", "PMI_SIZE": "4", "SLURM_PROCID": "3", "SLURM_STEP_NUM_TASKS": "4",
           "SLURM_LOCALID": "1", "SLURM_NODEID": "1", "SLURM_STEP_TASKS_PER_NODE": "2(x2)"}
    w = discover(env, node_local=lambda rank, size: pytest.fail("MPI asked although Slurm said"))
    assert (w.local_rank, w.local_size, w.launcher) == (1, 2, "mpiexec")


def test_pmi_local_rank_given_is_used_and_unknown_means_one_node():
    w = discover({"PMI_RANK": "1", "PMI_SIZE": "2", "MPI_LOCALRANKID": "0", "MPI_LOCALNRANKS": "1"},
                 node_local=lambda rank, size: pytest.fail("MPI asked although the launcher said"))
    assert (w.local_rank, w.local_size) == (0, 1)
    w = discover({"PMI_RANK": "1", "PMI_SIZE": "2"}, node_local=lambda rank, size: None)
    assert (w.local_rank, w.local_size) == (1, 2)


@pytest.mark.mpi
def test_pmi_without_local_rank_under_mpirun_splits_the_communicator():
    import json
    import subprocess
    import sys
    from pathlib import Path

    from conftest import ROOT, mpirun_prefix

    probe = Path(__file__).parent / "helpers" / "world_pmi_probe.py"
    proc = subprocess.run(mpirun_prefix(2) + [sys.executable, str(probe)], cwd=ROOT, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = json.loads(proc.stdout.strip().splitlines()[-1])
    assert [(r["rank"], r["local_rank"], r["local_size"], r["launcher"]) for r in rows] == [
        (0, 0, 2, "mpiexec"), (1, 1, 2, "mpiexec")]
    assert [r["mpi_answers"] for r in rows] == [[[0, 2]], [[1, 2]]]   # from the shared-memory split
    assert all(r["default_agrees"] for r in rows)
    assert [r["reads_node_counters"] for r in rows] == [True, False]
