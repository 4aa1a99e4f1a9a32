"""The epoch loop's stop and checkpoint rules, with a fake step (no TensorFlow, no MPI).

What is checked: a stop agreed mid-epoch keeps that epoch's partial row apart (interrupted)
and writes no checkpoint for it; a stop after an epoch's last iteration keeps the epoch; a
signal during start-up stops before any epoch; records reach disk before the checkpoint; the
first epoch after a resume is flagged warm-up; the stop signals are caught and restored; a
late SIGTERM while the process shuts down does not change its exit code.
"""
from __future__ import annotations

import itertools
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from scaling.collectives import LocalCollectives
from common.rundir import EPOCHS_FILE, RUN_REQUIRED_KEYS, SCHEMA_VERSION, RunWriter
from scaling.trainer import EpochPlan, StopFlag, run_epochs
from scaling.world import World

WORLD = World(rank=0, size=1, local_rank=0, local_size=1, node="n1", hostname="n1", launcher="python", cores=1)


from conftest import FakeEngine as _Engine  # noqa: E402
from conftest import FakeMeter as _Meter  # noqa: E402


class _Harness:
    """Runs ``run_epochs`` with a step that raises the stop flag at a chosen global iteration."""

    def __init__(self, tmp_path: Path, *, epochs: int = 3, ipe: int = 4, stop_at: int | None = None,
                 attempt: int = 0):
        self.stop = StopFlag()
        self.calls = 0
        self.stop_at = stop_at
        self.checkpoints: list[int] = []
        self.writer = RunWriter(tmp_path, {"run_id": "t"})
        self.plan = EpochPlan(epochs=epochs, iterations_per_epoch=ipe, warmup_epochs=1, attempt=attempt,
                              showers_per_iteration=10)

    def step(self, *args):
        self.calls += 1
        if self.stop_at is not None and self.calls >= self.stop_at:
            self.stop.signal = signal.SIGTERM
        return {"comm_s": 0.0, "d_loss": 1.0, "g_loss": -1.0}

    def save_checkpoint(self, epoch: int) -> None:
        # The epoch's records must already be on disk when its checkpoint is taken.
        on_disk = pq.read_table(self.writer.path / EPOCHS_FILE).to_pydict()
        assert epoch in on_disk["epoch"], f"checkpoint of epoch {epoch} before its record"
        self.checkpoints.append(epoch)

    def run(self, start_epoch: int = 0, coll=None, meter=None) -> bool:
        return run_epochs(world=WORLD, plan=self.plan, start_epoch=start_epoch, step=self.step, engine=_Engine(),
                          iterators=[itertools.repeat((None, None))], meter=meter or _Meter(),
                          coll=coll or LocalCollectives(),
                          writer=self.writer, save_checkpoint=self.save_checkpoint, stop=self.stop,
                          log=lambda msg: None)

    def rows(self) -> list[tuple[int, int, bool]]:
        return [(r.epoch, r.iterations, r.interrupted) for r in self.writer.epochs]


def test_no_stop_runs_every_epoch_and_checkpoints_each(tmp_path):
    h = _Harness(tmp_path)
    assert h.run() is True
    assert h.rows() == [(0, 4, False), (1, 4, False), (2, 4, False)]
    assert h.checkpoints == [0, 1, 2]


def test_every_epoch_clock_starts_after_a_barrier_past_the_last_checkpoint(tmp_path):
    # A rank must not start timing an epoch while rank 0 still writes the last one's records
    # and checkpoint: that wait would land in its first all-reduce of the epoch.
    events: list[str] = []

    class Coll(LocalCollectives):
        def barrier(self) -> None:
            events.append("barrier")

    class Meter(_Meter):
        def begin(self, name: str) -> None:
            events.append("begin")

    h = _Harness(tmp_path, ipe=2)
    step, save = h.step, h.save_checkpoint
    h.step = lambda *a: (events.append("step"), step(*a))[1]
    h.save_checkpoint = lambda epoch: (events.append("checkpoint"), save(epoch))[1]
    assert h.run(coll=Coll(), meter=Meter()) is True
    assert events == ["barrier", "begin", "step", "step", "checkpoint"] * 3


def test_stop_mid_epoch_keeps_partial_row_apart_and_no_checkpoint_for_it(tmp_path):
    h = _Harness(tmp_path, stop_at=6)          # second iteration of epoch 1
    assert h.run() is False
    assert h.rows() == [(0, 4, False), (1, 2, True)]
    assert h.checkpoints == [0]
    assert h.calls == 6                         # nothing ran after the agreed stop


def test_stop_on_last_iteration_keeps_the_epoch(tmp_path):
    h = _Harness(tmp_path, stop_at=8)          # last iteration of epoch 1
    assert h.run() is False
    assert h.rows() == [(0, 4, False), (1, 4, False)]
    assert h.checkpoints == [0, 1]


def test_stop_on_the_very_last_iteration_is_a_completed_run(tmp_path):
    h = _Harness(tmp_path, stop_at=12)
    assert h.run() is True
    assert h.checkpoints == [0, 1, 2]


def test_signal_during_startup_stops_before_any_epoch(tmp_path):
    h = _Harness(tmp_path)
    h.stop.signal = signal.SIGUSR1
    assert h.run() is False
    assert h.calls == 0 and h.rows() == [] and h.checkpoints == []


def test_first_epoch_after_resume_is_warmup_and_numbering_goes_on(tmp_path):
    h = _Harness(tmp_path, epochs=4, attempt=1)
    assert h.run(start_epoch=2) is True
    assert [(r.epoch, r.attempt, r.warmup) for r in h.writer.epochs] == [(2, 1, True), (3, 1, False)]
    assert h.checkpoints == [2, 3]


def test_stop_flag_catches_term_and_usr1_and_restores_handlers():
    before = {sig: signal.getsignal(sig) for sig in StopFlag.SIGNALS}
    flag = StopFlag()
    previous = flag.install()
    try:
        for sig in (signal.SIGUSR1, signal.SIGTERM):
            flag.signal = None
            os.kill(os.getpid(), sig)
            assert flag.raised and flag.signal == sig
    finally:
        StopFlag.restore(previous)
    assert {sig: signal.getsignal(sig) for sig in StopFlag.SIGNALS} == before


_EXIT_WITH_SLOW_SHUTDOWN = """
import os, sys, time
from scaling.run import main

class SlowShutdown:  # stands in for Horovod's shutdown and MPI_Finalize after main() returned
    def __del__(self):
        os.write(1, b"shutting down\\n")
        time.sleep(3)

keep = SlowShutdown()
sys.exit(main(["--epochs", "0", "--out", sys.argv[1]], restore_signals=False))
"""


def test_late_sigterm_during_shutdown_keeps_the_exit_code(tmp_path):
    # Under mpirun the second SIGTERM of a time limit, or the launcher ending the job after a
    # peer exited with 3, can come while this rank is still finalizing MPI.
    proc = subprocess.Popen([sys.executable, "-c", _EXIT_WITH_SLOW_SHUTDOWN, str(tmp_path / "run")],
                            cwd=Path(__file__).resolve().parents[1], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, env=dict(os.environ, PYTHONUNBUFFERED="1"))
    assert proc.stdout.readline() == b"shutting down\n"
    time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 2, err.decode()       # the config error's code, not 143 (killed)
    assert b"epochs must be >= 1" in err


@pytest.mark.parametrize("leftover", [".epochs.parquet.abc123.tmp", ".run.json.x.tmp"])
def test_resume_reads_run_without_epochs_file_and_removes_stale_temp_files(tmp_path, leftover):
    # A run killed in its first epoch: run.json written, no epochs.parquet yet, a temp file left.
    meta = {key: 1 for key in RUN_REQUIRED_KEYS} | {"schema_version": SCHEMA_VERSION, "status": "running",
                                                    "restarts": [], "run_id": "r", "config": {}, "engine": "horovod",
                                                    "mode": "weak", "particle": "photons"}
    RunWriter(tmp_path, meta).write_meta()
    (tmp_path / leftover).write_bytes(b"half a file")
    (tmp_path / ".user-notes.tmp").write_text("not ours")
    writer = RunWriter.resume(tmp_path)
    assert writer.epochs == []
    assert writer.remove_stale_temp_files() == [tmp_path / leftover]
    assert not (tmp_path / leftover).exists() and (tmp_path / ".user-notes.tmp").exists()
