"""The progress watchdog and the one-line failures, in one process (no TensorFlow run, no MPI).

Two watchdogs share a run directory as two ranks would: one keeps beating, the other is
"frozen" (its thread never runs after one beat), and the live one must name it, mark run.json
stalled and end the job. The limits, the engines' timeouts derived from them, the disk-full
line on a real tiny filesystem and the out-of-memory lines are checked too.
"""
from __future__ import annotations

import errno
import json
import os
import subprocess
import threading
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from common.atomic import WriteFailed, atomic_write_parquet
from common.records import PowerSample
from common.rundir import RUN_JSON, RunWriter, load_run
from scaling import watchdog
from scaling.failures import KIND_COLLECTIVE_TIMEOUT, KIND_DISK_FULL, KIND_OUT_OF_MEMORY, classify
from scaling.watchdog import (STALL_EPOCH_MULTIPLE, Watchdog, WatchdogConfig, read_beats, silent_ranks,
                              startup_timeout_from_argv)

from test_reliability_atomic import _run_dir


def _rank(out: Path, rank: int, ended: list, **limits) -> Watchdog:
    def end_job(code: int) -> None:
        ended.append((rank, code))      # os._exit in a real rank; here the thread just ends

    wd = Watchdog(rank=rank, size=2, node=f"node{rank}", end_job=end_job, **limits)
    wd.open_run(out, batch=64, iterations_per_epoch=5)
    return wd


def test_frozen_rank_is_named_and_the_run_marked_stalled(tmp_path, capsys):
    _run_dir(tmp_path)
    ended: list = []
    frozen = _rank(tmp_path, 1, ended, startup_timeout_s=60, stall_timeout_s=0.5)
    frozen.progress(5)
    frozen._write_beat()                  # its last beat; its thread never runs again
    live = _rank(tmp_path, 0, ended, startup_timeout_s=60, stall_timeout_s=0.5)
    live.progress(5)
    t0 = time.monotonic()
    live.start()
    live._thread.join(timeout=30)
    elapsed = time.monotonic() - t0
    assert ended == [(0, 1)], ended
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1, err
    assert "stalled: no progress for" in lines[0] and "silent: rank 1 on node1 (last iteration 5, in training)" in lines[0]
    assert f"--resume --out {tmp_path}" in lines[0]
    meta = json.loads((tmp_path / RUN_JSON).read_text())
    assert meta["status"] == "stalled" and meta["exit_status"] == 1
    assert meta["stall"]["silent_ranks"] == [{"rank": 1, "node": "node1", "iteration": 5}]
    assert list(load_run(tmp_path).epochs["epoch"]) == [0]     # records untouched
    assert elapsed < 10, elapsed


def test_a_rank_that_never_wrote_a_heartbeat_never_arrived(tmp_path):
    _rank(tmp_path, 0, [], startup_timeout_s=60)
    first = read_beats(tmp_path, 3)
    assert sorted(first) == [0]
    assert silent_ranks(first, first, 3) == [0, 1, 2]          # nothing moved
    moved = {0: watchdog.Beat(0, "n", 1, first[0].beat + 1, -1, "x")}
    assert silent_ranks(first, moved, 3) == [1, 2]


def test_startup_stall_before_the_run_directory_names_the_stage(capsys):
    ended: list = []

    def end_job(code):
        ended.append(code)

    wd = Watchdog(rank=0, size=2, node="n0", startup_timeout_s=0.6, end_job=end_job)
    wd.stage("engine start")
    wd.start()
    wd._thread.join(timeout=20)
    assert ended == [1]
    err = capsys.readouterr().err
    assert "error: start-up stalled: rank 0 on n0: no progress for" in err and "in engine start (limit 0.6 s)" in err


def test_stall_limit_grows_with_the_median_epoch_and_evaluation_is_not_epoch_time():
    now = [0.0]
    wd = Watchdog(rank=0, size=1, node="n", startup_timeout_s=600, stall_timeout_s=10, clock=lambda: now[0])
    wd.open_run(Path("/nonexistent-run"), batch=8, iterations_per_epoch=4)
    assert wd.stall_limit_s() == 10
    wd.progress(1)
    assert wd._limit_s == 600                                        # the first epoch warms up
    for epoch, seconds in enumerate([100.0, 20.0, 30.0, 40.0]):     # the first epoch compiles: no sample
        now[0] += seconds
        wd.progress(4 * (epoch + 1))
        if epoch == 2:
            with wd.allow("evaluation"):
                now[0] += 500.0
    assert wd.stall_limit_s() == STALL_EPOCH_MULTIPLE * 30.0        # median of 20, 30, 40
    assert wd._limit_s == wd.stall_limit_s()
    wd.stage("x")
    assert wd._limit_s == 600


def test_startup_timeout_is_read_from_the_command_line_before_parsing():
    assert startup_timeout_from_argv(["--startup-timeout-s", "7"], 600) == 7
    assert startup_timeout_from_argv(["--startup-timeout-s=8.5"], 600) == 8.5
    assert startup_timeout_from_argv(["--epochs", "3"], 600) == 600
    assert startup_timeout_from_argv(["--startup-timeout-s", "x"], 600) == 600


def test_engine_timeouts_are_a_backstop_behind_the_watchdog(monkeypatch):
    for name in ("HOROVOD_STALL_CHECK_TIME_SECONDS", "HOROVOD_STALL_SHUTDOWN_TIME_SECONDS"):
        monkeypatch.delenv(name, raising=False)
    cfg = WatchdogConfig(stall_timeout_s=30, startup_timeout_s=200)
    cfg.set_horovod_environment()
    assert os.environ["HOROVOD_STALL_CHECK_TIME_SECONDS"] == "30"
    assert int(os.environ["HOROVOD_STALL_SHUTDOWN_TIME_SECONDS"]) == cfg.collective_timeout_s() == 400
    assert cfg.collective_timeout_s() > max(cfg.stall_timeout_s, cfg.startup_timeout_s)
    WatchdogConfig(stall_timeout_s=10, startup_timeout_s=100).set_horovod_environment()   # a later run: its own
    assert os.environ["HOROVOD_STALL_SHUTDOWN_TIME_SECONDS"] == "200"
    monkeypatch.setenv("HOROVOD_STALL_SHUTDOWN_TIME_SECONDS", "99")   # a user's own value stays
    cfg.set_horovod_environment()
    assert os.environ["HOROVOD_STALL_SHUTDOWN_TIME_SECONDS"] == "99"
    assert WatchdogConfig(stall_timeout_s=0).collective_timeout_s() == 0


@pytest.fixture
def tiny_fs(tmp_path):
    """A 300 KiB tmpfs (needs root and mount); skipped where it cannot be mounted."""
    mnt = tmp_path / "tiny"
    mnt.mkdir()
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=300k", "tmpfs", str(mnt)], capture_output=True, text=True)
    if proc.returncode != 0:
        pytest.skip(f"cannot mount a tiny tmpfs here ({proc.stderr.strip() or proc.returncode})")
    yield mnt
    subprocess.run(["umount", "-l", str(mnt)], check=False)


def test_disk_full_names_the_file_and_errno_and_keeps_every_record(tiny_fs):
    writer: RunWriter = _run_dir(tiny_fs / "run")
    rng = np.random.default_rng(0)
    with pytest.raises(WriteFailed) as caught:     # one power part per epoch fills the filesystem
        for epoch in range(1, 1000):
            writer.add_power([PowerSample(rank=0, node="n1", t_s=t, domain="gpu", device="gpu0", watts=w,
                                          source="measured") for t, w in rng.random((500, 2))],
                             attempt=0, label=f"{epoch:06d}")
    failure = classify(caught.value, where="rank 0 on n0", batch=64, out=str(tiny_fs / "run"))
    assert failure is not None and failure.kind == KIND_DISK_FULL
    assert f"cannot write {tiny_fs / 'run'}/" in failure.line and "[Errno 28] ENOSPC" in failure.line, failure.line
    assert "\n" not in failure.line
    run = load_run(tiny_fs / "run")
    assert run.meta["status"] == "running" and len(run.epochs) >= 1
    assert not list((tiny_fs / "run").glob(".*.tmp"))
    with pytest.raises(WriteFailed) as caught:
        atomic_write_parquet(tiny_fs / "run" / "x.parquet", pa.table({"x": list(range(100000))}))
    assert caught.value.errno == errno.ENOSPC and caught.value.target == tiny_fs / "run" / "x.parquet"


def test_quota_exceeded_is_named_too():
    exc = WriteFailed(OSError(errno.EDQUOT, "Disk quota exceeded"), Path("/r/run.json"))
    failure = classify(exc, where="rank 0 on n0", batch=8, out="/r")
    assert failure.kind == KIND_DISK_FULL and "cannot write /r/run.json: [Errno 122] EDQUOT" in failure.line


def test_out_of_memory_lines_name_rank_batch_and_what_to_try():
    host = classify(MemoryError(), where="rank 1 on n1", batch=64, out="/r")
    assert host.kind == KIND_OUT_OF_MEMORY
    assert host.line.startswith("rank 1 on n1: out of host memory with a per-replica batch of 64 showers: try")
    assert "--batch-per-rank" in host.line and "--resume --out /r" in host.line
    tf = pytest.importorskip("tensorflow")
    wrapped = RuntimeError("step failed")
    wrapped.__cause__ = tf.errors.ResourceExhaustedError(None, None, "OOM when allocating tensor with shape[64,266]")
    gpu = classify(wrapped, where="rank 0 on n0", batch=512, out=None)
    assert gpu.kind == KIND_OUT_OF_MEMORY and "out of device memory" in gpu.line and "batch of 512" in gpu.line
    # TensorFlow reports a full disk (checkpoint) with the same class: not an out-of-memory.
    disk = tf.errors.ResourceExhaustedError(None, None, "{{function_node SaveV2}} /job:localhost/replica:0/task:0 "
                                            "/r/checkpoints/ckpt-5_temp/part-0.data; No space left on device")
    full = classify(disk, where="rank 0 on n0", batch=512, out="/r")
    assert full.kind == KIND_DISK_FULL and "cannot write /r/checkpoints/ckpt-5_temp/part-0.data: [Errno 28]" in full.line
    timeout = tf.errors.DeadlineExceededError(None, None, "Collective ops is aborted by: timed out")
    assert classify(timeout, where="rank 0 on n0", batch=8, out="/r").kind == KIND_COLLECTIVE_TIMEOUT
    # What Horovod 0.28's stall shutdown raised here (HOROVOD_STALL_SHUTDOWN_TIME_SECONDS, rank 1 asleep):
    shutdown = tf.errors.UnknownError(None, None, "{{function_node __wrapped__HorovodAllreduce_device_/job:localhost/"
                                      "replica:0/task:0/device:CPU:0}} Horovod has been shut down. This was caused by "
                                      "an exception on one of the ranks or an attempt to allreduce")
    stalled = classify(shutdown, where="rank 0 on n0", batch=8, out="/r")
    assert stalled.kind == KIND_COLLECTIVE_TIMEOUT and stalled.line.startswith("UnknownError: Horovod has been shut down")
    assert classify(ValueError("other"), where="rank 0 on n0", batch=8, out="/r") is None


def test_progress_without_a_watchdog_is_a_no_op():
    watchdog.stop()
    watchdog.progress(3)
    with watchdog.allow("evaluation"):
        pass
    assert watchdog.current() is None and threading.active_count() >= 1


@pytest.mark.slow
def test_disk_full_during_a_run_is_one_line_exit_1_and_the_records_stay(tiny_fs):
    from conftest import run_module

    out = tiny_fs / "run"
    proc = run_module("scaling.run", ["--synthetic-events", "2000", "--epochs", "6", "--iterations-per-epoch", "5",
                                      "--threads", "1", "--batch-per-rank", "32", "--out", str(out)], timeout=600)
    text = proc.stdout + proc.stderr
    assert proc.returncode == 1, text
    lines = [line for line in text.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1 and f"cannot write {out}/" in lines[0] and "[Errno 28] ENOSPC" in lines[0], text
    assert "Traceback" not in text
    run = load_run(out)                      # every record written before is readable
    assert len(run.epochs) >= 1 and run.meta["status"] in ("running", "failed")


def test_a_finished_rank_is_not_silent_and_a_refused_run_leaves_no_heartbeat(tmp_path):
    done = _rank(tmp_path, 1, [], startup_timeout_s=60)
    done.stop(0)
    beats = read_beats(tmp_path, 2)
    assert beats[1].doing == "finished (exit 0)"
    assert silent_ranks(beats, beats, 2) == [0]          # rank 0 wrote nothing: never arrived
    refused = tmp_path / "refused"
    refused.mkdir()
    wd = _rank(refused, 0, [], startup_timeout_s=60)
    wd.stop(2)
    assert sorted(p.name for p in refused.iterdir()) == []


def test_a_hung_filesystem_does_not_keep_the_watchdog_from_ending_the_job(tmp_path, monkeypatch, capsys):
    ended: list = []
    wd = Watchdog(rank=0, size=1, node="n0", startup_timeout_s=60, stall_timeout_s=0.5,
                  end_job=lambda code: ended.append(code))
    wd._out, wd._iterations_per_epoch = tmp_path, 1     # the run directory, whose filesystem now hangs:
    monkeypatch.setattr(watchdog, "write_beat", lambda out, beat: time.sleep(3600))
    monkeypatch.setattr(watchdog, "read_beats", lambda out, size: time.sleep(3600))
    monkeypatch.setattr(watchdog, "IO_BOUND_S", 0.5)
    monkeypatch.setattr(watchdog, "_bounded", lambda fn, timeout_s=0.5, real=watchdog._bounded: real(fn, 0.5))
    wd.progress(1)                           # one epoch done: the stall limit applies
    wd.start()
    wd._thread.join(timeout=60)
    err = capsys.readouterr().err
    assert ended == [1], err
    assert "error: stalled: no progress for" in err
