"""scaling.run's run.json content (``run_metadata``) without TensorFlow: a fake engine and world."""
from __future__ import annotations

import types

import pytest

import common.runinfo
from common.rundir import RunWriter, load_run
from scaling import run as scaling_run
from scaling.world import World


@pytest.fixture
def ctx(tmp_path, monkeypatch):
    # versions() would initialise MPI in the test process; what it reports is not under test.
    monkeypatch.setattr(common.runinfo, "versions", lambda: {"python": "3"})
    args = scaling_run.parse_args(["--mode", "weak", "--batch-per-rank", "16", "--study", "s1",
                                   "--iterations-per-epoch", "5"])
    cfg = scaling_run._resolve_config(args)
    world = World(rank=0, size=3, local_rank=0, local_size=2, node="a", hostname="a", launcher="mpirun", cores=4)
    engine = types.SimpleNamespace(on_gpu=False, describe=lambda: {"name": "fake"})
    return scaling_run.RunContext(world=world, coll=None, stop=None, args=args, cfg=cfg,
                                  workload=scaling_run.workload_hash(cfg), showers=None, engine=engine,
                                  replicas=3, batch=16, out=tmp_path / "weak-n3", writer=None,
                                  log=lambda msg: None)


def test_run_metadata_describes_the_job_and_loads_as_a_run(ctx):
    meta = scaling_run.run_metadata(ctx, precision="float32", nodes=["a", "b", "a"])
    assert (meta["run_id"], meta["study"], meta["status"]) == ("weak-n3", "s1", "running")
    assert (meta["world_size"], meta["processes"], meta["per_rank_batch"], meta["global_batch"]) == (3, 3, 16, 48)
    assert (meta["nodes"], meta["node_names"], meta["ranks_per_node"]) == (2, ["a", "b"], 2)
    assert meta["iterations_per_epoch"] == 5 and meta["config"]["scaling"]["mode"] == "weak"
    assert meta["hardware"]["gpus_per_rank"] == 0 and meta["engine_details"] == {"name": "fake"}
    assert meta["config_hash"] == ctx.workload and meta["restarts"] == [] and meta["end_time"] is None
    writer = RunWriter(ctx.out, meta)
    writer.write_meta()
    writer.add_epochs([])
    assert load_run(ctx.out).meta["ranks_per_node"] == 2     # every key the reader requires is there


def test_run_metadata_says_where_the_run_ran(ctx, monkeypatch):
    monkeypatch.setenv("SLURM_CLUSTER_NAME", "leonardo")
    monkeypatch.setenv("APPTAINER_CONTAINER", "/images/bologan.sif")
    meta = scaling_run.run_metadata(ctx, precision="float32", nodes=["a"])
    assert meta["site"]["name"] == "leonardo" and meta["site"]["from"] == "SLURM_CLUSTER_NAME"
    assert meta["site"]["in_container"] and meta["site"]["runtime"] == "apptainer"
    hw = meta["hardware"]
    assert hw["cpu_model"] and hw["logical_cpus"] >= 1 and "gpu_models" in hw and "memory_bytes" in hw
    ctx.args.site = "oph"
    assert scaling_run.run_metadata(ctx, precision="float32", nodes=["a"])["site"]["name"] == "oph"
