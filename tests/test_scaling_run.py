"""scaling.run for real: one rank, and data-parallel equivalence on two ranks/devices."""
from __future__ import annotations

import json
import os

import numpy as np
import pytest

from conftest import run_module
from common.rundir import load_run
from common.telemetry_parts import read_telemetry

TINY = ["--synthetic-events", "1500", "--threads", "1", "--critic-widths", "64,64,64",
        "--generator", "relu", "--n-disc", "2"]


def _weights(run_dir):
    """All variables of the run's latest checkpoint, by name."""
    import tensorflow as tf

    reader = tf.train.load_checkpoint(str(run_dir / "checkpoints"))
    values = {k: reader.get_tensor(k) for k in reader.get_variable_to_shape_map()
              if "OPTIMIZER" not in k and "save_counter" not in k}
    return {k: v for k, v in values.items() if isinstance(v, np.ndarray) and v.dtype.kind == "f"}


def test_one_rank_records_and_timing_parts(tmp_path):
    out = tmp_path / "run"
    res = run_module("scaling.run", [*TINY, "--out", str(out), "--epochs", "3", "--iterations-per-epoch", "3",
                                     "--batch-per-rank", "32", "--mode", "weak"], timeout=400)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "epoch 3/3" in res.stdout and "showers/s" in res.stdout
    run = load_run(out)
    e = run.epochs
    assert list(e.epoch) == [0, 1, 2] and list(e.warmup) == [True, False, False]
    # One Horovod rank still calls its (trivial) all-reduce: ~0, well under 1% of the epoch.
    assert (e.comm_s < 0.01 * e.time_s).all()
    assert (e.compute_s + e.comm_s + e.data_wait_s <= e.time_s + 1e-9).all()
    assert (e.showers == 3 * 2 * 32).all() and (e.iterations == 3).all()
    assert run.meta["status"] == "completed" and run.meta["world_size"] == 1
    assert e.gpu_energy_source.iloc[0] in ("unavailable", "measured")
    # Idle power measured before the first epoch; telemetry beside power, phases marked.
    (idle,) = run.meta["idle_power_w"]
    assert idle["when"] == "before_first_epoch" and idle["seconds"] >= 1.9 and idle["rank"] == 0
    telemetry = read_telemetry(out)
    phases = set(telemetry["phase"])
    assert {"baseline-before_first_epoch", "epoch-0", "checkpoint-0"} <= phases
    assert telemetry["rss_bytes"].gt(0).all() and telemetry["t_s"].is_monotonic_increasing
    assert run.meta["site"]["name"] == "unknown" or os.environ.get("SLURM_CLUSTER_NAME")
    # The device every rank trained on: run.json (per rank and in the hardware summary the
    # report shows) and the progress line.
    assert [(d["rank"], d["device"], d["gpus"]) for d in run.meta["devices"]] == [(0, "CPU", [])]
    assert run.meta["hardware"]["device"] == "1 rank(s) on CPU"
    assert "iterations on 1 rank(s) on CPU ->" in res.stdout


def _equivalence_runs(tmp_path, label, ranks, extra, env=None):
    out = tmp_path / label
    args = [*TINY, "--out", str(out), "--epochs", "2", "--iterations-per-epoch", "3", "--warmup-epochs", "0",
            "--mode", "strong", "--global-batch", "64", "--global-noise", *extra]
    res = run_module("scaling.run", args, ranks=ranks, timeout=500, env=env)
    assert res.returncode == 0, f"{label}: {res.stderr[-3000:]}"
    return out


@pytest.fixture(scope="module")
def reference_run(tmp_path_factory):
    return _equivalence_runs(tmp_path_factory.mktemp("ref"), "one", 1, ["--engine", "horovod"])


def _assert_same_weights(a, b):
    """Equal up to float reassociation: a sum over 2 replicas of means differs from one mean in
    the last bits, and Adam's normalisation magnifies that for gradients near zero, by at most a
    fraction of one step (lr = 1e-4). So: all within 1e-5, and nearly all within 1e-6."""
    wa, wb = _weights(a), _weights(b)
    assert wa.keys() == wb.keys() and len(wa) > 8
    diffs = np.concatenate([np.abs(wa[k] - wb[k]).ravel() for k in wa])
    for k in wa:
        np.testing.assert_allclose(wa[k], wb[k], rtol=0, atol=1e-5, err_msg=k)
    assert np.mean(diffs > 1e-6) < 0.01


@pytest.mark.mpi
def test_strong_scaling_with_batchnorm_is_one_rank_with_the_global_batch(tmp_path):
    # BatchNorm as BoloGAN trains it (fixed moments) makes a shower independent of the others
    # in its batch, so 2 ranks x 32 train the model 1 rank x 64 trains (generator_norm default).
    bn = ["--generator", "bn_swish", "--generator-widths", "16,16,16", "--engine", "horovod"]
    one = _equivalence_runs(tmp_path, "bn1", 1, bn)
    two = _equivalence_runs(tmp_path, "bn2", 2, bn)
    assert load_run(two).meta["config"]["model"]["generator_norm"] == "fixed_moments"
    assert any("moving_mean" in k for k in _weights(one))   # BatchNorm layers were trained
    _assert_same_weights(one, two)


def _assert_comm_measured(run_dir, ranks):
    run = load_run(run_dir)
    e = run.epochs
    assert run.meta["world_size"] == 2 and run.meta["per_rank_batch"] == 32
    assert len(e) == 2 * ranks
    assert (e.comm_s > 0).all()
    assert (e.compute_s + e.comm_s + e.data_wait_s <= e.time_s + 1e-9).all()


@pytest.mark.mpi
def test_horovod_two_ranks_equal_one_rank_with_double_batch(tmp_path, reference_run):
    two = _equivalence_runs(tmp_path, "hvd2", 2, ["--engine", "horovod"])
    _assert_same_weights(reference_run, two)
    _assert_comm_measured(two, 2)
    meta = json.loads((two / "run.json").read_text())
    assert meta["launcher"] == "mpirun" and meta["processes"] == 2
    # Every rank measured its idle power and sent its telemetry; node counters on the reader only.
    idle = {e["rank"]: e for e in meta["idle_power_w"]}
    assert sorted(idle) == [0, 1] and idle[1]["cpu_source"] == "not_reader"
    assert set(read_telemetry(two)["rank"]) == {0, 1}


def test_mirrored_two_logical_devices_equal_one_rank(tmp_path, reference_run):
    two = _equivalence_runs(tmp_path, "mirrored2", 1, ["--engine", "mirrored", "--cpu-replicas", "2"])
    _assert_same_weights(reference_run, two)
    _assert_comm_measured(two, 1)


@pytest.mark.mpi
def test_multiworker_two_processes_equal_one_rank(tmp_path, reference_run):
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    two = _equivalence_runs(tmp_path, "mwms2", 2, ["--engine", "mirrored"], env={"TMPDIR": str(scratch)})
    _assert_same_weights(reference_run, two)
    _assert_comm_measured(two, 2)
    assert load_run(two).meta["engine_details"]["strategy"] == "MultiWorkerMirroredStrategy"
    # The non-chief worker saved each epoch's checkpoint into a scratch folder under TMPDIR
    # (every worker must take part in a save); none may be left behind.
    assert not [p.name for p in scratch.rglob("*ckpt*")]


def _assert_same_losses(a, b):
    """XLA fuses and reorders float operations: the epochs' mean losses agree to rounding, the
    weights to a small fraction of one Adam step (lr 1e-4) per iteration."""
    ea, eb = (load_run(r).epochs.groupby("epoch")[["d_loss", "g_loss"]].mean() for r in (a, b))
    assert len(ea) == len(eb) == 2
    np.testing.assert_allclose(eb.to_numpy(), ea.to_numpy(), rtol=1e-3, atol=1e-4)
    wa, wb = _weights(a), _weights(b)
    assert wa.keys() == wb.keys()
    for k in wa:
        np.testing.assert_allclose(wa[k], wb[k], rtol=0, atol=1e-4, err_msg=k)


@pytest.mark.mpi
def test_horovod_two_ranks_with_xla_match_the_run_without(tmp_path, reference_run):
    # --xla used to fail on every data-parallel run: tf.timestamp and the all-reduce have no XLA
    # kernels. Now XLA compiles each replica's forward/backward and update around them.
    two = _equivalence_runs(tmp_path, "hvd2-xla", 2, ["--engine", "horovod", "--xla"])
    _assert_same_losses(reference_run, two)
    _assert_comm_measured(two, 2)


@pytest.mark.mpi
def test_multiworker_two_processes_with_xla_match_the_run_without(tmp_path, reference_run):
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    two = _equivalence_runs(tmp_path, "mwms2-xla", 2, ["--engine", "mirrored", "--xla"],
                            env={"TMPDIR": str(scratch)})
    _assert_same_losses(reference_run, two)
    _assert_comm_measured(two, 2)
