"""Evaluation during scaling.run: when it runs, what it records, and that it stays out of epoch time.

Unit parts (no TensorFlow): the epoch loop calls the epoch-end hook outside every epoch clock;
the held-out split; the momenta spread over ranks; the sums of training so far; the step-time
quantiles; scoring from pooled parts equals scoring the whole. End to end (one rank, tiny
model): eval rows, TensorBoard, run.json, --stop-at-target, bad --target, SIGTERM + --resume.
Two ranks under mpirun give the same scores as one for the same weights.
"""
from __future__ import annotations

import itertools
import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from common.rundir import EPOCHS_FILE, EVAL_FILE, EpochRecord, RunWriter, load_run
from common.target import parse_target
from common.vocab import STATUS_TARGET_REACHED
from conftest import ROOT, mpirun_prefix, run_module
from scaling.collectives import LocalCollectives
from scaling.eval_config import EvalConfig
from scaling.evaluation import assign_momenta, training_so_far
from scaling.trainer import EpochPlan, StopFlag, run_epochs, step_time_quantiles
from scaling.world import World

WORLD = World(rank=0, size=1, local_rank=0, local_size=1, node="n1", hostname="n1", launcher="python", cores=1)
TINY = ["--synthetic-events", "1500", "--threads", "1", "--critic-widths", "64,64,64", "--generator", "relu",
        "--n-disc", "2", "--iterations-per-epoch", "3", "--warmup-epochs", "0", "--batch-per-rank", "32",
        "--mode", "weak", "--showers-per-momentum", "40"]
# Met by any evaluation (the overflow variant is finite from the start).
EASY_TARGET = "chi2_ndf_overflow<=1e9"


# -- the epoch loop and its hook (fake step) ----------------------------------------------------

from conftest import FakeEngine as _Engine  # noqa: E402
from conftest import FakeMeter as _Meter  # noqa: E402


def _loop(tmp_path, after_epoch, epochs=3, ipe=4):
    writer = RunWriter(tmp_path, {"run_id": "t"})
    plan = EpochPlan(epochs=epochs, iterations_per_epoch=ipe, warmup_epochs=0, attempt=0, showers_per_iteration=10)
    done = run_epochs(world=WORLD, plan=plan, start_epoch=0,
                      step=lambda *a: {"comm_s": 0.0, "d_loss": 1.0, "g_loss": -1.0}, engine=_Engine(),
                      iterators=[itertools.repeat((None, None))], meter=_Meter(), coll=LocalCollectives(),
                      writer=writer, save_checkpoint=lambda epoch: None, stop=StopFlag(), log=lambda m: None,
                      after_epoch=after_epoch)
    return done, writer


def test_epoch_end_work_never_enters_the_epoch_time(tmp_path):
    seen = []

    def slow_evaluation(epoch, records):
        # The epoch's rows are on disk before the hook runs, and the hook sees them.
        assert epoch in pq.read_table(tmp_path / EPOCHS_FILE).to_pydict()["epoch"]
        seen.append((epoch, [r.epoch for r in records]))
        time.sleep(0.3)
        return False

    done, writer = _loop(tmp_path, slow_evaluation)
    assert done is True and seen == [(0, [0]), (1, [1]), (2, [2])]
    assert all(r.time_s < 0.2 for r in writer.epochs), [r.time_s for r in writer.epochs]


def test_a_hook_that_says_stop_ends_the_run_as_completed(tmp_path):
    done, writer = _loop(tmp_path, lambda epoch, records: epoch == 1, epochs=5)
    assert done is True and [r.epoch for r in writer.epochs] == [0, 1]


def test_step_time_quantiles_are_recorded_per_rank_and_epoch(tmp_path):
    _, writer = _loop(tmp_path, None)
    for r in writer.epochs:
        q = [r.step_time_p10_s, r.step_time_p50_s, r.step_time_p90_s, r.step_time_p99_s, r.step_time_max_s]
        assert all(math.isfinite(v) and v >= 0 for v in q) and q == sorted(q)
    assert step_time_quantiles([1.0, 2.0, 3.0, 4.0, 5.0])["step_time_p50_s"] == 3.0
    assert step_time_quantiles([0.1, 0.1, 9.0])["step_time_max_s"] == 9.0


def test_epochs_files_without_step_time_columns_still_load(tmp_path):
    _loop(tmp_path, None)
    table = pq.read_table(tmp_path / EPOCHS_FILE)
    old = table.drop([c for c in table.column_names if c.startswith("step_time_")])
    pq.write_table(old, tmp_path / EPOCHS_FILE)
    (tmp_path / "run.json").write_text(json.dumps(_meta()))
    epochs = load_run(tmp_path).epochs
    assert len(epochs) == 3 and epochs["step_time_p50_s"].isna().all()


def _meta():
    return {"schema_version": 1, "run_id": "t", "status": "completed", "config": {}, "engine": "horovod",
            "mode": "weak", "particle": "photons", "world_size": 1, "nodes": 1, "ranks_per_node": 1,
            "per_rank_batch": 32, "global_batch": 32, "launcher": "python", "versions": {}, "hardware": {},
            "start_time": "", "restarts": []}


# -- when, where and what -----------------------------------------------------------------------

def test_evaluation_is_due_when_an_epoch_crosses_a_multiple():
    cfg = EvalConfig(eval_every=5)
    # epochs of 3 iterations: 0-3, 3-6 (crosses 5), 6-9, 9-12 (crosses 10)
    assert [cfg.due(3 * e, 3 * (e + 1)) for e in range(4)] == [False, True, False, True]
    assert not EvalConfig().due(0, 100)                    # eval_every 0: never


def test_momenta_are_dealt_round_robin_and_cover_every_momentum_once():
    momenta = [2.0 ** k for k in range(8, 23)]
    parts = [assign_momenta(momenta[::-1], r, 4) for r in range(4)]
    assert sorted(p for part in parts for _, p in part) == momenta
    assert [k for k, _ in parts[1]] == [1, 5, 9, 13]
    assert assign_momenta(momenta, 20, 21) == []           # more ranks than momenta: some idle


def test_held_out_showers_are_never_trained_on_and_the_split_is_reproducible():
    from bologan.pipeline import split_holdout
    from bologan.synthetic import generate_showers

    showers = generate_showers("photons", 1500, 3)
    train, held = split_holdout(showers, 0.2, seed=10)
    again, held_again = split_holdout(showers, 0.2, seed=10)
    assert len(train) + len(held) == len(showers)
    np.testing.assert_array_equal(held.voxels_mev, held_again.voxels_mev)
    rows = {v.tobytes() for v in train.voxels_mev}
    assert not any(v.tobytes() in rows for v in held.voxels_mev)
    for p in np.unique(showers.momentum_mev):
        n, k = (showers.momentum_mev == p).sum(), (held.momentum_mev == p).sum()
        assert k == max(1, round(0.2 * n)), (p, n, k)


def _row(rank, epoch, time_s, *, interrupted=False, cpu=None, cpu_source="measured", gpu_source="unavailable"):
    return EpochRecord(rank=rank, local_rank=rank, node="n1", epoch=epoch, attempt=0, time_s=time_s, compute_s=0.0,
                       comm_s=0.0, data_wait_s=0.0, iterations=3, showers=100, warmup=False, interrupted=interrupted,
                       cpu_energy_j=math.nan if cpu is None else cpu, cpu_energy_source=cpu_source,
                       gpu_energy_source=gpu_source)


def test_training_so_far_takes_the_slowest_rank_and_skips_interrupted_epochs():
    rows = [_row(0, 0, 1.0, cpu=10.0), _row(1, 0, 1.5, cpu_source="not_reader"),
            _row(0, 1, 9.0, interrupted=True, cpu=99.0), _row(1, 1, 9.0, interrupted=True, cpu_source="not_reader"),
            _row(0, 1, 2.0, cpu=20.0), _row(1, 1, 1.0, cpu_source="not_reader"),
            _row(0, 2, 5.0, cpu=50.0), _row(1, 2, 5.0, cpu_source="not_reader")]
    so_far = training_so_far(rows, last_epoch=1)
    assert so_far.train_time_s == pytest.approx(1.5 + 2.0)
    assert so_far.showers == 400
    assert (so_far.energy_j, so_far.energy_source) == (pytest.approx(30.0), "measured")
    # A reader that lost its counter in one epoch leaves a lower bound.
    rows[4] = _row(0, 1, 2.0, cpu_source="unavailable")
    assert training_so_far(rows, last_epoch=1).energy_source == "partial"


def test_scores_of_pooled_parts_equal_the_scores_of_all_showers():
    from bologan.metrics import (Reference, etot_by_momentum, pool_features, score_showers, score_summaries,
                                 shower_features)
    from bologan.synthetic import generate_showers

    ref, gen = generate_showers("photons", 1500, 1), generate_showers("photons", 1500, 2)
    reference = Reference.from_showers("photons", ref.momentum_mev, ref.voxels_mev)
    _, whole = score_showers(reference, gen.momentum_mev, gen.voxels_mev)
    momenta = np.unique(gen.momentum_mev)
    parts = [np.isin(gen.momentum_mev, momenta[r::2]) for r in range(2)]
    etot = {p: e for m in parts for p, e in etot_by_momentum(gen.momentum_mev[m], gen.voxels_mev[m]).items()}
    feats = pool_features(shower_features("photons", gen.momentum_mev[m], gen.voxels_mev[m]) for m in parts)
    _, pooled = score_summaries(reference, etot, feats)
    a, b = whole.eval_fields(1), pooled.eval_fields(1)
    for key, value in a.items():
        if isinstance(value, float):
            assert b[key] == pytest.approx(value, rel=1e-9, abs=1e-12), key
        else:
            assert b[key] == value, key


# -- end to end, one rank -----------------------------------------------------------------------

@pytest.fixture(scope="module")
def eval_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("eval") / "run"
    res = run_module("scaling.run", [*TINY, "--out", str(out), "--epochs", "3", "--eval-every", "3",
                                     "--target", "fpd<=1e-30", "--lr-scaling", "sqrt"], timeout=400)
    assert res.returncode == 0, res.stderr[-3000:]
    return out, res


def test_every_due_epoch_end_is_evaluated_with_its_training_context(eval_run):
    out, res = eval_run
    run = load_run(out)
    e, ev = run.epochs, run.eval
    assert list(ev.iteration) == [3, 6, 9] and list(ev.epoch) == [1, 2, 3]
    assert list(ev.showers) == [192, 384, 576]
    assert np.all(np.diff(ev.train_time_s) > 0)
    # Training time is the epoch clocks alone: the last row sums every epoch's time_s exactly.
    assert ev.train_time_s.iloc[-1] == pytest.approx(e.time_s.sum(), rel=1e-12)
    assert (ev.eval_time_s > 0).all() and ev.chi2_ndf_overflow.map(math.isfinite).all()
    assert (ev.fpd > 0).all() and "eval at iteration 9" in res.stdout
    # Not met: the run went on to its last epoch and says so with the best value in the analysis.
    assert run.meta["status"] == "completed" and run.meta["target"]["text"] == "fpd<=1e-30"
    assert not run.meta.get("target_reached")


def test_tensorboard_events_and_learning_rate_are_in_the_run_directory(eval_run):
    out, _ = eval_run
    events = list((out / "tensorboard").glob("events.out.tfevents.*"))
    assert events and events[0].stat().st_size > 0
    lr = load_run(out).meta["learning_rate"]
    assert (lr["scaling"], lr["scale_factor"]) == ("sqrt", 1.0)   # 1 rank: the ratio is 1


def test_tensorboard_holds_losses_throughput_and_metrics(eval_run):
    import tensorflow as tf

    out, _ = eval_run
    tags = set()
    for path in (out / "tensorboard").glob("events.out.tfevents.*"):
        for event in tf.compat.v1.train.summary_iterator(str(path)):
            tags |= {v.tag for v in event.summary.value}
    assert {"loss/critic", "loss/generator", "throughput/showers_per_s", "eval/chi2_ndf_overflow",
            "eval/fpd", "eval/w1"} <= tags


def test_stop_at_target_ends_the_run_at_the_first_evaluation_that_meets_it(tmp_path):
    out = tmp_path / "run"
    res = run_module("scaling.run", [*TINY, "--out", str(out), "--epochs", "6", "--eval-every", "6",
                                     "--target", EASY_TARGET, "--stop-at-target"], timeout=400)
    assert res.returncode == 0, res.stderr[-3000:]
    run = load_run(out)
    assert run.meta["status"] == STATUS_TARGET_REACHED and run.meta["exit_status"] == 0
    reached = run.meta["target_reached"]
    assert (reached["iteration"], reached["epoch"], reached["metric"]) == (6, 2, "chi2_ndf_overflow")
    assert reached["train_time_s"] == pytest.approx(run.epochs.time_s.sum(), rel=1e-12)
    assert sorted(set(run.epochs.epoch)) == [0, 1] and list(run.eval.iteration) == [6]
    assert run.meta["target"]["text"] == parse_target(EASY_TARGET).text
    # Resuming a run that stopped at its target trains no further.
    res = run_module("scaling.run", [*TINY, "--out", str(out), "--resume"], timeout=400)
    assert res.returncode == 0, res.stderr[-3000:]
    again = load_run(out)
    assert again.meta["status"] == STATUS_TARGET_REACHED and len(again.epochs) == len(run.epochs)
    assert list(again.eval.iteration) == [6]


@pytest.mark.parametrize("target, problem", [("chi2<=5", "unknown metric 'chi2'"),
                                             ("chi2_ndf=5", "expected METRIC<=VALUE"),
                                             ("chi2_ndf>=5", "lower chi2_ndf is better")])
def test_bad_target_is_one_line_and_exit_2(tmp_path, target, problem):
    res = run_module("scaling.run", ["--out", str(tmp_path / "r"), "--eval-every", "3", "--target", target],
                     timeout=120)
    assert res.returncode == 2
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and problem in lines[0] and "target" in lines[0], res.stderr
    assert not (tmp_path / "r").exists()


def _rows(out: Path) -> list[int]:
    try:
        return pq.read_table(out / EVAL_FILE).to_pydict()["iteration"]
    except (FileNotFoundError, OSError):
        return []


def test_eval_rows_survive_sigterm_and_resume_without_duplicates(tmp_path):
    out = tmp_path / "run"
    args = [*TINY, "--out", str(out), "--epochs", "40", "--eval-every", "3", "--no-fpd-kpd"]   # 40 evaluations
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, "-m", "scaling.run", *args], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 300
        while len(_rows(out)) < 2 and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.2)
        assert len(_rows(out)) >= 2, "no evaluation recorded in time"
        proc.send_signal(signal.SIGTERM)
        stdout, stderr = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 3, stderr[-3000:]
    before = _rows(out)
    assert len(before) < 40 and len(set(before)) == len(before)
    res = run_module("scaling.run", [*args, "--resume"], timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    run = load_run(out)
    after = list(run.eval.iteration)
    # Every epoch end is an evaluation point: one row each, the earlier rows kept.
    assert after == [3 * k for k in range(1, 41)]
    assert set(before) <= set(after)
    assert np.all(np.diff(run.eval.train_time_s) > 0)


# -- two ranks: the momenta are spread, the scores are the same ---------------------------------

def _spread(tmp_path, ranks):
    out = tmp_path / f"n{ranks}"
    out.mkdir()
    cmd = [sys.executable, str(ROOT / "tests" / "helpers" / "eval_spread.py"), str(out)]
    if ranks > 1:
        cmd = mpirun_prefix(ranks) + cmd
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONPATH": f"{ROOT}{os.pathsep}{ROOT / 'tests'}"}
    res = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=400)
    assert res.returncode == 0, res.stderr[-3000:]
    return json.loads((out / "record.json").read_text())


@pytest.mark.mpi
def test_two_ranks_spread_the_momenta_and_score_like_one(tmp_path):
    one, two = _spread(tmp_path, 1), _spread(tmp_path, 2)
    a, b = two["momenta_by_rank"]
    assert a and b and not set(a) & set(b) and len(a) + len(b) == len(one["momenta_by_rank"][0])
    for key, value in one["record"].items():
        if key in ("eval_time_s",):
            continue
        assert two["record"][key] == pytest.approx(value, rel=1e-6, abs=1e-9, nan_ok=True), key


# -- the learning rate follows the global batch -------------------------------------------------

@pytest.mark.parametrize("mode, rule, replicas, factor", [("weak", "sqrt", 4, 2.0), ("weak", "linear", 4, 4.0),
                                                          ("weak", "none", 4, 1.0), ("strong", "linear", 4, 1.0)])
def test_scaling_run_scales_the_learning_rate_by_the_batch_ratio(mode, rule, replicas, factor):
    from types import SimpleNamespace

    from common.settings import resolve_sections
    from scaling import run as scaling_run

    cfg = resolve_sections(scaling_run.SECTIONS, None,
                           scaling_run.parse_args(["--mode", mode, "--lr-scaling", rule, "--global-batch", "128"]))
    batch = cfg["scaling"].per_replica_batch(replicas)
    ctx = SimpleNamespace(cfg=cfg, sc=cfg["scaling"], batch=batch, replicas=replicas)
    assert scaling_run._lr_scale_factor(ctx) == pytest.approx(factor)
