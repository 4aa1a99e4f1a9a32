"""Evaluation and targets per member of an ensemble (scaling.run --mode ensemble --eval-every).

Unit parts (no TensorFlow): how a node's energy is split between the members on it, training so
far per member, eval.parquet's member column (older files, one row per (member, iteration)).
Under mpirun -np 2: every member's rows, equal to a solo run's scores; --stop-at-target waits
for every member; SIGTERM + --resume keeps the rows without duplicates.
"""
from __future__ import annotations

import dataclasses
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from common.rundir import EVAL_CONTEXT_FIELDS, EVAL_FILE, EpochRecord, EvalRecord, RunWriter, load_run
from common.vocab import STATUS_COMPLETED, STATUS_TARGET_REACHED
from conftest import ROOT, mpirun_prefix, run_module
from scaling.evaluation import Metered, member_energy, training_so_far

TINY = ["--epochs", "2", "--iterations-per-epoch", "2", "--batch-per-rank", "16", "--synthetic-events", "1024",
        "--threads", "1", "--eval-every", "2", "--showers-per-momentum", "20", "--warmup-epochs", "0",
        "--no-fpd-kpd"]   # FPD/KPD cost seconds per evaluation whatever the showers; a cheap score stands in
SEED = 31
SCORES = [f.name for f in dataclasses.fields(EvalRecord) if f.name not in EVAL_CONTEXT_FIELDS]


# -- energy and training so far per member (no TensorFlow) ---------------------------------------

def _epoch(rank, member, node, epoch=0, *, time_s=1.0, cpu=None, gpu=None, reader=True, interrupted=False):
    return EpochRecord(rank=rank, local_rank=0 if reader else 1, node=node, epoch=epoch, attempt=0, time_s=time_s,
                       compute_s=0.0, comm_s=0.0, data_wait_s=0.0, iterations=2, showers=100 * (member + 1),
                       warmup=False, interrupted=interrupted, member=member,
                       cpu_energy_j=math.nan if cpu is None else cpu,
                       cpu_energy_source=("measured" if cpu is not None else "unavailable") if reader else "not_reader",
                       gpu_energy_j=math.nan if gpu is None else gpu,
                       gpu_energy_source="measured" if gpu is not None else "unavailable")


def test_a_node_counter_is_split_over_the_members_by_their_ranks_on_the_node():
    # Node a: ranks 0, 1 (member 0) and 2 (member 1), read by rank 0; node b: rank 3 (member 1) alone.
    rows = [_epoch(0, 0, "a", cpu=90.0, gpu=1.0), _epoch(1, 0, "a", reader=False, gpu=2.0),
            _epoch(2, 1, "a", reader=False, gpu=4.0), _epoch(3, 1, "b", cpu=50.0, gpu=8.0)]
    metered = [Metered(0, r.node, r.member, r) for r in rows]
    e0, s0 = member_energy(metered, 0)
    e1, s1 = member_energy(metered, 1)
    assert e0 == pytest.approx(90.0 * 2 / 3 + 1.0 + 2.0) and s0 == "measured"
    assert e1 == pytest.approx(90.0 / 3 + 4.0 + 50.0 + 8.0) and s1 == "measured"
    # Node counters counted once: the members add up to the run.
    assert e0 + e1 == pytest.approx(90.0 + 50.0 + 1.0 + 2.0 + 4.0 + 8.0)
    # One GAN (every rank member 0): the whole run, as before ensembles.
    one = [Metered(0, r.node, 0, r) for r in rows]
    assert member_energy(one, 0)[0] == pytest.approx(155.0)


def test_a_member_sharing_an_unread_node_counter_has_a_partial_energy():
    rows = [_epoch(0, 0, "a", gpu=1.0), _epoch(1, 1, "a", reader=False, gpu=2.0), _epoch(2, 2, "b", cpu=5.0, gpu=3.0)]
    metered = [Metered(0, r.node, r.member, r) for r in rows]
    assert member_energy(metered, 1) == (pytest.approx(2.0), "partial")   # node a's counter was not read
    assert member_energy(metered, 2) == (pytest.approx(8.0), "measured")  # node b is its own


def test_training_so_far_is_the_members_own():
    rows = [_epoch(0, 0, "a", 0, time_s=1.0, cpu=10.0), _epoch(1, 1, "a", 0, time_s=3.0, reader=False),
            _epoch(0, 0, "a", 1, time_s=2.0, cpu=20.0), _epoch(1, 1, "a", 1, time_s=9.0, reader=False,
                                                                   interrupted=True)]
    m0, m1 = training_so_far(rows, 1, member=0), training_so_far(rows, 1, member=1)
    assert (m0.train_time_s, m0.showers) == (pytest.approx(3.0), 200)
    assert (m1.train_time_s, m1.showers) == (pytest.approx(3.0), 200)     # its interrupted epoch left out
    # Epoch 1's node energy: member 1's rank has no clean row there, so member 0 was the node's only rank.
    assert m0.energy_j == pytest.approx(10.0 / 2 + 20.0) and m1.energy_j == pytest.approx(10.0 / 2)


def _eval(member, iteration, fpd):
    return EvalRecord(iteration=iteration, chi2=1.0, ndf=1, chi2_ndf=1.0, w1=1.0, ks=0.1, fpd=fpd, member=member)


def test_eval_rows_are_one_per_member_and_iteration_and_older_files_are_member_0(tmp_path):
    meta = {"schema_version": 1, "run_id": "t", "status": "completed", "config": {}, "engine": "horovod",
            "mode": "ensemble", "particle": "photons", "world_size": 2, "nodes": 1, "ranks_per_node": 2,
            "per_rank_batch": 16, "global_batch": 16, "launcher": "mpirun", "versions": {}, "hardware": {},
            "start_time": "", "restarts": []}
    writer = RunWriter(tmp_path, meta)
    writer.write_meta()
    writer.add_epochs([])
    writer.add_eval([_eval(1, 2, 5.0), _eval(0, 2, 4.0), _eval(0, 4, 3.0)])
    writer.add_eval([_eval(0, 4, 2.0)])          # the same checkpoint evaluated again after a resume
    ev = load_run(tmp_path).eval
    assert list(zip(ev.member, ev.iteration, ev.fpd)) == [(0, 2, 4.0), (0, 4, 2.0), (1, 2, 5.0)]
    table = pq.read_table(tmp_path / EVAL_FILE)
    pq.write_table(table.drop(["member"]), tmp_path / EVAL_FILE)
    assert list(load_run(tmp_path).eval.member) == [0, 0, 0]


# -- an ensemble of two under mpirun -------------------------------------------------------------

def _ensemble(out: Path, *extra: str) -> subprocess.CompletedProcess:
    res = run_module("scaling.run", [*TINY, "--mode", "ensemble", "--seed", str(SEED), "--out", str(out), *extra],
                     ranks=2, timeout=500)
    assert res.returncode == 0, res.stderr[-3000:]
    return res


@pytest.fixture(scope="module")
def ensemble_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("enseval") / "ens"
    _ensemble(out)
    return load_run(out)


def _scores(row) -> dict:
    return {k: row[k] for k in SCORES}


# Scores of two processes go through BLAS/LAPACK (covariances, matrix square roots), whose
# summation order may differ between processes by a last bit: equal within this, not bit for bit.
CROSS_PROCESS_REL = 1e-9


def _same(a, b) -> bool:
    """Equal across two processes: exactly for counts and text, within ``CROSS_PROCESS_REL``
    for floats (NaN equals NaN, an infinity itself)."""
    if isinstance(a, float) and isinstance(b, float):
        if math.isnan(a) or math.isnan(b):
            return math.isnan(a) and math.isnan(b)
        return a == b or math.isclose(a, b, rel_tol=CROSS_PROCESS_REL, abs_tol=0.0)
    return a == b


def test_cross_process_equality_allows_a_last_bit_only():
    assert _same(53735980.28930652, 53735980.28930649)      # one ulp, seen between two processes
    assert not _same(1.0, 1.0 + 1e-8) and not _same(math.nan, 1.0) and not _same(math.inf, 1e308)
    assert _same(math.nan, math.nan) and _same(math.inf, math.inf) and _same(3, 3) and not _same(3, 4)


@pytest.mark.mpi
def test_every_member_has_a_row_at_every_evaluation_with_its_own_context(ensemble_run):
    ev, e = ensemble_run.eval, ensemble_run.epochs
    assert sorted(zip(ev.member, ev.iteration)) == [(0, 2), (0, 4), (1, 2), (1, 4)]
    for k in (0, 1):
        mine = ev[ev.member == k].sort_values("iteration")
        theirs = e[e.member == k]
        assert list(mine.showers) == list(theirs.showers.cumsum())
        assert mine.train_time_s.iloc[-1] == pytest.approx(theirs.time_s.sum(), rel=1e-12)
    # Different GANs, different scores.
    a = ev[(ev.member == 0) & (ev.iteration == 2)].iloc[0]
    b = ev[(ev.member == 1) & (ev.iteration == 2)].iloc[0]
    assert a.frechet_hlf_std != b.frechet_hlf_std and a.w1 != b.w1
    meta = ensemble_run.meta
    assert [m["reference_source"] for m in meta["evaluation"]["members"]] == [
        f"synthetic seed={SEED} (held-out 0.1 per momentum)", f"synthetic seed={SEED + 1} (held-out 0.1 per momentum)"]


@pytest.mark.mpi
@pytest.mark.parametrize("member", [0, 1])
def test_a_members_scores_are_a_solo_runs_with_its_seed(tmp_path, ensemble_run, member):
    """Same data, held-out split, weights (bit for bit) and noise seeds: the same scores, to
    ``CROSS_PROCESS_REL`` (they pass through BLAS in another process)."""
    solo = tmp_path / "solo"
    res = run_module("scaling.run", [*TINY, "--mode", "weak", "--seed", str(SEED + member), "--out", str(solo)],
                     timeout=400)
    assert res.returncode == 0, res.stderr[-3000:]
    theirs = load_run(solo).eval
    ours = ensemble_run.eval[ensemble_run.eval.member == member]
    assert list(ours.iteration) == list(theirs.iteration) == [2, 4]
    for (_, mine), (_, solo_row) in zip(ours.iterrows(), theirs.iterrows()):
        a, b = _scores(mine), _scores(solo_row)
        assert all(_same(a[k], b[k]) for k in SCORES), {k: (a[k], b[k]) for k in SCORES if not _same(a[k], b[k])}


@pytest.mark.mpi
def test_stop_at_target_waits_for_every_member(tmp_path, ensemble_run):
    ev = ensemble_run.eval
    first = ev[ev.iteration == 2].set_index("member").frechet_hlf_std
    lead, lag = (0, 1) if first[0] < first[1] else (1, 0)
    threshold = math.sqrt(first[0] * first[1])           # met by the leading member only, at iteration 2
    lag_at_4 = float(ev[(ev.member == lag) & (ev.iteration == 4)].frechet_hlf_std.iloc[0])
    out = tmp_path / "stop"
    _ensemble(out, "--target", f"frechet_hlf_std<={threshold!r}", "--stop-at-target")
    run = load_run(out)
    # The leader met it at the first evaluation, yet both trained on: epoch 1 and its rows exist.
    assert sorted(set(run.epochs.epoch)) == [0, 1] and sorted(run.eval.iteration) == [2, 2, 4, 4]
    reached = run.meta["target_reached"]
    assert isinstance(reached, list) and len(reached) == 2 and reached[lead]["iteration"] == 2
    assert reached[lead]["member"] == lead
    if lag_at_4 <= threshold:
        assert reached[lag]["iteration"] == 4 and run.meta["status"] == STATUS_TARGET_REACHED
    else:
        assert reached[lag] is None and run.meta["status"] == STATUS_COMPLETED


@pytest.mark.mpi
def test_stop_at_target_ends_the_run_once_every_member_met_it(tmp_path):
    out = tmp_path / "easy"
    _ensemble(out, "--epochs", "3", "--target", "chi2_ndf_overflow<=1e9", "--stop-at-target")
    run = load_run(out)
    assert run.meta["status"] == STATUS_TARGET_REACHED and run.meta["exit_status"] == 0
    assert sorted(set(run.epochs.epoch)) == [0]
    assert [r["iteration"] for r in run.meta["target_reached"]] == [2, 2]
    assert sorted(zip(run.eval.member, run.eval.iteration)) == [(0, 2), (1, 2)]


def _rank_pids(launcher_pid: int) -> dict[int, int]:
    """{rank: pid} of the processes ``launcher_pid`` (mpirun) started."""
    ranks = {}
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            ppid = int((d / "stat").read_text().rsplit(")", 1)[1].split()[1])
            env = (d / "environ").read_bytes().split(b"\0") if ppid == launcher_pid else []
        except (OSError, ValueError, IndexError):
            continue
        for item in env:
            if item.startswith(b"OMPI_COMM_WORLD_RANK="):
                ranks[int(item.split(b"=", 1)[1])] = int(d.name)
    return ranks


def _keys(out: Path) -> list[tuple[int, int]]:
    try:
        t = pq.read_table(out / EVAL_FILE).to_pydict()
    except (FileNotFoundError, OSError):
        return []
    return list(zip(t["member"], t["iteration"]))


@pytest.mark.mpi
def test_member_rows_survive_sigterm_and_resume_without_duplicates(tmp_path):
    out = tmp_path / "ens"
    epochs = 20
    cmd = mpirun_prefix(2) + [sys.executable, "-m", "scaling.run", *TINY, "--epochs", str(epochs), "--mode",
                              "ensemble", "--seed", str(SEED), "--out", str(out)]
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONPATH": str(ROOT)}
    log = tmp_path / "first.log"
    with log.open("w") as fh:
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=fh, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 300
        while len(_keys(out)) < 4 and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.2)
        assert len(_keys(out)) >= 4, f"no evaluation of both members in time:\n{log.read_text()[-3000:]}"
        # SIGTERM to one rank (as Slurm's would reach it): the stop is agreed, every rank exits 3.
        os.kill(_rank_pids(proc.pid)[0], signal.SIGTERM)
        rc = proc.wait(timeout=120)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert rc == 3, log.read_text()[-3000:]
    before = _keys(out)
    assert len(set(before)) == len(before) and len(before) < 2 * epochs
    res = run_module("scaling.run", ["--out", str(out), "--resume"], ranks=2, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    after = _keys(out)
    assert after == [(k, 2 * e) for k in (0, 1) for e in range(1, epochs + 1)]
    assert set(before) <= set(after)
    ev = load_run(out).eval
    for k in (0, 1):
        assert (ev[ev.member == k].train_time_s.diff().dropna() > 0).all()


# -- the analysis: members pooled like repeats, the speedup counts GANs --------------------------

def test_time_to_target_pools_an_ensembles_members_and_counts_gans_in_its_speedup():
    import pandas as pd

    from analysis.quality.quality_report import QualityResult, key_result_items
    from analysis.quality.time_to_target import RUN_COLUMN_NAMES, time_to_target_summary
    from common.target import parse_target

    def member_row(n, member, time_s):
        row = {c: math.nan for c in RUN_COLUMN_NAMES}
        row.update({"series": "ens", "mode": "ensemble", "world_size_ranks": n, "nodes_count": 1, "run_id": f"n{n}",
                    "member": member, "target": "fpd<=1", "reached": True, "interpolated": True,
                    "iterations_to_target": 100, "showers_to_target_count": 1000, "time_to_target_s": time_s,
                    "energy_to_target_j": 10 * time_s, "energy_source": "measured", "best_value": 0.5, "notes": ""})
        return row

    per_run = pd.DataFrame([member_row(1, 0, 100.0), member_row(2, 0, 110.0), member_row(2, 1, 130.0)])
    tts = time_to_target_summary(per_run)
    two = tts[tts.world_size_ranks == 2].iloc[0]
    assert (two.runs_count, two.reached_count, two.time_to_target_median_s) == (2, 2, 120.0)
    # Two GANs in 120 s against one in 100 s on one rank: S = 2 x 100 / 120, efficiency S / 2.
    assert two.tts_speedup_ratio == pytest.approx(200 / 120)
    assert two.tts_efficiency_ratio == pytest.approx(100 / 120)
    items = key_result_items(QualityResult(parse_target("fpd<=1"), "test", per_run, tts))
    assert "2 of 2 GAN(s), ensemble members" in items[1]
