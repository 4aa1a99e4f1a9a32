"""scaling.allreduce_bench: every rank times the same repeats, and --sizes is validated.

The agreement is tested with two threads as ranks (fake collectives, fake clocks that disagree
about the budget) and once for real under ``mpirun -np 2``.
"""
from __future__ import annotations

import itertools
import json
import subprocess
import sys
import threading

import numpy as np
import pytest

from common.errors import UserError
from conftest import ROOT, run_module
from scaling.allreduce_bench import (SCHEMA, TRAINING_KEY, another_repeat, parse_sizes, per_iteration_summary,
                                     read_per_iteration_s, timed_repeats, training_messages)


# ------------------------------------------------------------------------------- --sizes
@pytest.mark.parametrize("text, sizes", [
    ("1KiB..4KiB", [1024, 2048, 4096]), ("4096,1MiB", [4096, 1024**2]), ("4B", [4]),
    ("0.5KiB", [512]), ("12..48", [12, 24, 48])])
def test_sizes_read(text, sizes):
    assert parse_sizes(text) == sizes


@pytest.mark.parametrize("text, words", [
    ("-4", "not a positive size"), ("0", "not a positive size"), ("0B,4KiB", "not a positive size"),
    ("6", "not a multiple of 4"), ("1KiB,1026B", "not a multiple of 4"), ("1.5B", "not a whole number"),
    ("nan", "not a whole number"), ("inf", "not a whole number"), ("4KiB..1KiB", "the range is empty"),
    ("lots", "cannot read"), (",", "no size given")])
def test_bad_sizes_name_the_flag_and_the_value(text, words):
    with pytest.raises(UserError) as info:
        parse_sizes(text)
    message = str(info.value)
    assert message.startswith(f"--sizes {text!r}: ") and words in message and "\n" not in message


def test_a_range_from_zero_is_refused_not_looped_forever():
    # 0 doubled stays 0: before the check this never returned (run apart, so a hang fails).
    code = "from scaling.allreduce_bench import parse_sizes\ntry:\n parse_sizes('0..1KiB')\nexcept Exception as e:\n print(e)"
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert "--sizes '0..1KiB'" in proc.stdout and "not a positive size" in proc.stdout


def test_bad_sizes_exit_2_with_one_line():
    proc = run_module("scaling.allreduce_bench", ["--sizes", "0..1KiB"], timeout=60)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == ["error: --sizes '0..1KiB': '0' is not a positive size "
                                                "(e.g. 1KiB..64MiB or 4096,1MiB)"]


# --------------------------------------------------------------------- repeat agreement
def test_another_repeat_rule():
    assert another_repeat(0, 20, 100.0, 1.0)          # fewer than 3 done: always
    assert another_repeat(2, 20, 100.0, 1.0)
    assert not another_repeat(3, 20, 100.0, 1.0)      # budget spent, 3 done
    assert another_repeat(3, 20, 0.5, 1.0)
    assert not another_repeat(20, 20, 0.0, 1.0)       # all repeats done
    assert not another_repeat(2, 2, 0.0, 1.0)


class _ThreadRanks:
    """Collectives between threads standing in for ranks (bcast from rank 0, barrier)."""

    def __init__(self, n: int):
        self.barrier_ = threading.Barrier(n, timeout=10)
        self.value = None

    def for_rank(self, rank: int):
        shared = self

        class Coll:
            def bcast(self, obj):
                if rank == 0:
                    shared.value = obj
                shared.barrier_.wait()
                value = shared.value
                shared.barrier_.wait()
                return value

            def barrier(self):
                shared.barrier_.wait()

        return Coll()


def _run_ranks(clock_steps_s: list[float], repeats: int, budget_s: float) -> list[list[float]]:
    """timed_repeats on one thread per rank; rank r's clock advances clock_steps_s[r] per call."""
    ranks = _ThreadRanks(len(clock_steps_s))
    results: dict[int, list[float]] = {}
    errors: list[BaseException] = []

    def rank_main(rank: int) -> None:
        ticks = itertools.count(0.0, clock_steps_s[rank])
        try:
            times, out = timed_repeats(lambda buf: buf * 2, np.ones(4, np.float32), repeats, budget_s,
                                       ranks.for_rank(rank), clock=lambda: next(ticks))
            assert out is not None and out[0] == 2
            results[rank] = times
        except BaseException as exc:   # noqa: BLE001 - reported below, in the test's thread
            errors.append(exc)

    threads = [threading.Thread(target=rank_main, args=(r,)) for r in range(len(clock_steps_s))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert not errors, f"a rank failed (a deadlock shows as a broken barrier): {errors!r}"
    return [results[r] for r in range(len(clock_steps_s))]


def test_ranks_whose_clocks_disagree_time_the_same_repeats():
    # Rank 1's clock runs 1000x faster: on its own it would stop after 3 repeats while rank 0
    # goes on to 20, and wait forever in the barrier of repeat 4.
    slow_root, fast_peer = _run_ranks([0.001, 1.0], repeats=20, budget_s=5.0)
    assert len(slow_root) == len(fast_peer) == 20
    # The other way round: rank 0 has spent the budget, so both stop after the minimum 3.
    fast_root, slow_peer = _run_ranks([1.0, 0.001], repeats=20, budget_s=5.0)
    assert len(fast_root) == len(slow_peer) == 3


@pytest.mark.mpi
def test_two_ranks_agree_under_mpirun_with_a_tiny_budget(tmp_path):
    out = tmp_path / "bench.json"
    proc = run_module("scaling.allreduce_bench",
                      ["--engine", "mpi", "--sizes", "4KiB..256KiB", "--repeats", "50", "--warmup", "1",
                       "--budget-s", "1e-6", "--out", str(out)], ranks=2, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    doc = json.loads(out.read_text())
    assert doc["world_size"] == 2
    assert [r["bytes"] for r in doc["results"]] == [4096 * 2**k for k in range(7)]
    assert all(r["repeats"] == 3 for r in doc["results"]), doc["results"]


def test_horovod_reduction_is_timed_on_the_placed_buffer_without_copying_it_back():
    """The timed call gets the buffer already placed on the engine's device and hands back the
    engine's tensor; the copy to the host happens in ``fetch``, after timing (review item 13)."""
    code = """
import numpy as np
import tensorflow as tf
from scaling.allreduce_bench import _reducer
from scaling.devices import pinned
from scaling.world import discover
r = _reducer("horovod", discover())
assert pinned() is not None      # the training's pinning, before the first op
placed = r.place(np.ones(1024, np.float32))
out = r.reduce(placed)
assert isinstance(placed, tf.Tensor) and isinstance(out, tf.Tensor), (type(placed), type(out))
assert np.allclose(r.fetch(out), 1.0)
print("ok")
"""
    res = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0 and res.stdout.strip().endswith("ok"), res.stderr[-2000:]


# ------------------------------------------------------------------------ --training-sizes
def test_training_messages_are_the_gradient_buffers_of_one_iteration():
    # Closed form of the default photons model (368 voxels), independent of the counting code:
    # critic 369 -> 368 x3 -> 1; generator 51 -> 50 -> 100 -> 200 -> 368 with gamma and beta
    # on every normalised unit (output included).
    critic = (368 + 2) * 368 + (368 + 1) * 368 * 2 + (368 + 1)
    generator = sum((a + 1) * b for a, b in zip([51, 50, 100, 200], [50, 100, 200, 368])) + 2 * (50 + 100 + 200 + 368)
    messages = training_messages("photons", n_disc=5)
    assert [(m.name, m.bytes, m.per_iteration) for m in messages] == [
        ("critic", 4 * critic, 5), ("generator", 4 * generator, 1)]
    assert training_messages("pions", 3)[0].bytes > messages[0].bytes   # 533 voxels


def test_per_iteration_time_is_n_disc_critic_reductions_plus_one_generator():
    messages = training_messages("photons", n_disc=4)
    rows = [{"time_s_median": 2e-3, "time_s_p10": 1e-3, "time_s_p90": 3e-3},
            {"time_s_median": 5e-4, "time_s_p10": 4e-4, "time_s_p90": 9e-4}]
    out = per_iteration_summary("photons", messages, rows)
    assert out["per_iteration_s_median"] == pytest.approx(4 * 2e-3 + 5e-4)
    assert out["per_iteration_s_p10"] == pytest.approx(4 * 1e-3 + 4e-4)
    assert out["per_iteration_s_p90"] == pytest.approx(4 * 3e-3 + 9e-4)
    assert out["per_iteration_bytes"] == 4 * messages[0].bytes + messages[1].bytes
    assert out["n_disc"] == 4 and out["particle"] == "photons"


def test_training_sizes_write_a_file_the_analysis_reads(tmp_path):
    from analysis.load import load_bench

    out = tmp_path / "allreduce-training.json"
    proc = run_module("scaling.allreduce_bench", ["--engine", "mpi", "--training-sizes", "photons", "--n-disc", "3",
                                                  "--repeats", "3", "--warmup", "0", "--out", str(out)], timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    doc = json.loads(out.read_text())
    messages = training_messages("photons", 3)
    assert [(r["message"], r["bytes"]) for r in doc["results"]] == [(m.name, m.bytes) for m in messages]
    assert doc[TRAINING_KEY]["n_disc"] == 3
    assert read_per_iteration_s(out) == doc[TRAINING_KEY]["per_iteration_s_median"] > 0
    bench = load_bench(out)
    assert sorted(bench.bytes) == sorted(m.bytes for m in messages) and bench.world_size == 1


def test_sizes_and_training_sizes_together_exit_2_with_one_line():
    proc = run_module("scaling.allreduce_bench", ["--training-sizes", "photons", "--sizes", "4KiB"], timeout=60)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == ["error: --sizes and --training-sizes: give one of them"]


def test_a_file_without_training_sizes_has_no_per_iteration_time(tmp_path):
    plain = tmp_path / "plain.json"
    plain.write_text(json.dumps({"schema": SCHEMA, "results": []}))
    other = tmp_path / "other.json"
    other.write_text(json.dumps({"schema": "something/9"}))
    with pytest.raises(UserError, match="no per-iteration time"):
        read_per_iteration_s(plain)
    with pytest.raises(UserError, match="not an allreduce-bench/1 file"):
        read_per_iteration_s(other)
    with pytest.raises(UserError, match="unreadable"):
        read_per_iteration_s(tmp_path / "missing.json")


@pytest.mark.mpi
def test_training_sizes_on_two_ranks(tmp_path):
    out = tmp_path / "bench.json"
    proc = run_module("scaling.allreduce_bench", ["--engine", "mpi", "--training-sizes", "pions", "--repeats", "3",
                                                  "--warmup", "1", "--out", str(out)], ranks=2, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    doc = json.loads(out.read_text())
    assert doc["world_size"] == 2 and [r["message"] for r in doc["results"]] == ["critic", "generator"]
    assert doc[TRAINING_KEY]["per_iteration_s_median"] > 0
