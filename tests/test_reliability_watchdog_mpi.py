"""The watchdog and one-line failures for real under ``mpirun -np 2``.

Cheap runs (no TensorFlow; tests/helpers/reliability_fault.py): a rank that never starts MPI
(its Python start hangs) must end the job after --startup-timeout-s; a rank out of memory
must end the job with one line and no traceback.

One training run: rank 1 frozen with SIGSTOP after two recorded epochs (a rank stuck on a
dead mount or a hung device). The job must end in well under a minute with one line naming
rank 1, run.json ``stalled``, the epochs and checkpoint kept; ``--resume`` then completes.
"""
from __future__ import annotations

import os
import re
import signal
import time

import pytest

from common.rundir import CHECKPOINT_DIR, load_run
from scaling.watchdog import read_beats
from test_reliability_mpi import TEARDOWN_TARGET_S, _alive, _error_lines, _fault, _Job, _rows

pytestmark = [pytest.mark.mpi]

STALL_TIMEOUT_S = 5


def test_rank_that_never_starts_ends_the_job_after_the_startup_timeout(tmp_path):
    rc, text, elapsed = _fault(tmp_path, "hang-at-start", 1, "--startup-timeout-s", "3", "--out", str(tmp_path / "run"))
    print(f"\nrank 1 hung before MPI: job over after {elapsed:.1f} s (start-up timeout 3 s), exit {rc}")
    assert rc != 0, text
    lines = _error_lines(text)
    assert len(lines) == 1 and re.match(r"error: start-up stalled: rank 0 on \S+: no progress for [\d.]+ s in "
                                        r"start-up \(limit 3 s\)", lines[0]), text
    assert not (tmp_path / "run").exists()
    assert elapsed < TEARDOWN_TARGET_S, f"{elapsed:.1f} s"


def test_out_of_memory_on_one_rank_is_one_line_and_ends_every_rank(tmp_path):
    rc, text, elapsed = _fault(tmp_path, "oom-in-run", 1, "--out", str(tmp_path / "run"))
    assert rc == 1, text
    lines = _error_lines(text)
    assert len(lines) == 1 and re.match(r"error: rank 1 on \S+: out of host memory with its batch: try a smaller "
                                        r"--batch-per-rank", lines[0]), text
    assert "Traceback" not in text
    assert elapsed < TEARDOWN_TARGET_S, f"{elapsed:.1f} s"


@pytest.mark.slow
def test_frozen_rank_ends_the_job_and_the_run_resumes(tmp_path):
    out = tmp_path / "run"
    # Short epochs: the limit is max(--stall-timeout-s, 3 median epochs).
    job = _Job(tmp_path, "stall", out, "--epochs", "40", "--iterations-per-epoch", "10",
               "--stall-timeout-s", str(STALL_TIMEOUT_S))
    job.wait_for("two recorded epochs", lambda: sum(r["epoch"] == 1 for r in _rows(out)) == 2)
    ranks = job.ranks()
    os.kill(ranks[1], signal.SIGSTOP)
    frozen_at = time.monotonic()
    try:
        deadline = frozen_at + 2 * TEARDOWN_TARGET_S
        while (job.proc.poll() is None or any(_alive(p) for p in ranks.values())) and time.monotonic() < deadline:
            time.sleep(0.05)
        gone_s = time.monotonic() - frozen_at
    finally:
        if _alive(ranks[1]):
            os.kill(ranks[1], signal.SIGCONT)
        job.kill()
    print(f"\nSIGSTOP of rank 1: job over after {gone_s:.1f} s (--stall-timeout-s {STALL_TIMEOUT_S}), "
          f"exit {job.proc.returncode}")
    text = job.text()
    assert gone_s < TEARDOWN_TARGET_S, f"still there {gone_s:.0f} s after SIGSTOP:\n{text[-3000:]}"
    assert job.proc.returncode not in (0, None), text[-3000:]
    lines = _error_lines(text)
    assert len(lines) == 1, text[-3000:]
    assert re.search(r"^error: stalled: no progress for .* noticed by rank 0 on \S+; silent: rank 1 on \S+ "
                     r"\(last iteration \d+, in training\); run\.json marked stalled; .*--resume --out ", lines[0]), lines
    run = load_run(out)
    assert run.meta["status"] == "stalled" and run.meta["exit_status"] == 1
    assert [s["rank"] for s in run.meta["stall"]["silent_ranks"]] == [1]
    done = sorted(set(run.epochs["epoch"]))
    assert done[:2] == [0, 1] and not run.epochs["interrupted"].any()
    assert list((out / CHECKPOINT_DIR).glob("ckpt-*.index"))

    # --resume continues as after any failure, to a planned end one epoch later.
    job = _Job(tmp_path, "resume", out, "--resume", "--epochs", str(max(done) + 2), "--iterations-per-epoch", "10",
               "--stall-timeout-s", "120")
    assert job.finish() == 0, job.text()[-3000:]
    run = load_run(out)
    assert run.meta["status"] == "completed" and len(run.meta["restarts"]) == 1
    clean = run.epochs[~run.epochs["interrupted"]]
    for rank in (0, 1):
        assert sorted(clean[clean["rank"] == rank]["epoch"]) == list(range(max(done) + 2))
    beats = read_beats(out, 2)                    # each rank's last heartbeat says it finished
    assert [b.doing for b in beats.values()] == ["finished (exit 0)"] * 2, beats
