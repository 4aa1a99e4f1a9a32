"""Atomic result files: a crash between writing the temp file and the rename keeps the old file.

Two kinds of crash: an exception at the rename (the writer cleans up its temp file), and a
process killed with SIGKILL at that moment (nothing runs any more: the temp file stays, the
old file is still complete, readers ignore the leftover and a resumed writer removes it).
"""
from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pytest

import common.atomic as atomic
from common.atomic import atomic_write_json, atomic_write_parquet, atomic_write_text
from common.rundir import EPOCHS_FILE, RUN_JSON, RUN_REQUIRED_KEYS, SCHEMA_VERSION, EpochRecord, RunWriter, load_run

REPO = Path(__file__).resolve().parents[1]


def _record(epoch: int) -> EpochRecord:
    return EpochRecord(rank=0, local_rank=0, node="n1", epoch=epoch, attempt=0, time_s=1.0, compute_s=0.8,
                       comm_s=0.1, data_wait_s=0.1, iterations=5, showers=100, warmup=epoch == 0)


def _run_dir(path: Path) -> RunWriter:
    meta = {key: 1 for key in RUN_REQUIRED_KEYS} | {
        "schema_version": SCHEMA_VERSION, "run_id": "run", "status": "running", "engine": "horovod",
        "mode": "weak", "particle": "photons", "restarts": [], "config": {}}
    writer = RunWriter(path, meta)
    writer.write_meta()
    writer.add_epochs([_record(0)])
    return writer


def _boom(*args, **kwargs):
    raise OSError(28, "No space left on device")


@pytest.mark.parametrize("write", [
    lambda p: atomic_write_text(p, "new"),
    lambda p: atomic_write_json(p, {"new": True}),
    lambda p: atomic_write_parquet(p, pa.table({"x": [9, 9]})),
], ids=["text", "json", "parquet"])
def test_failed_rename_keeps_old_file_and_leaves_no_temp(tmp_path, monkeypatch, write):
    target = tmp_path / "result.bin"
    target.write_bytes(b"old complete file")
    monkeypatch.setattr(atomic.os, "replace", _boom)
    with pytest.raises(OSError):
        write(target)
    assert target.read_bytes() == b"old complete file"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["result.bin"]


def test_failed_write_of_run_records_keeps_previous_epochs(tmp_path, monkeypatch):
    writer = _run_dir(tmp_path)
    monkeypatch.setattr(atomic.os, "replace", _boom)
    with pytest.raises(OSError):
        writer.add_epochs([_record(1)])
    monkeypatch.undo()
    run = load_run(tmp_path)
    assert list(run.epochs["epoch"]) == [0]


_KILLED_WRITER = """
import os, signal, sys
import common.atomic as atomic
from common.rundir import RunWriter, EpochRecord
writer = RunWriter.resume(sys.argv[1])
# Die the hard way right between the finished temp file and the rename.
atomic.os.replace = lambda src, dst: os.kill(os.getpid(), signal.SIGKILL)
writer.add_epochs([EpochRecord(rank=0, local_rank=0, node="n1", epoch=1, attempt=0, time_s=1.0, compute_s=0.8,
                               comm_s=0.1, data_wait_s=0.1, iterations=5, showers=100, warmup=False)])
"""


def test_writer_killed_before_rename_leaves_previous_records_readable(tmp_path):
    _run_dir(tmp_path)
    before = (tmp_path / EPOCHS_FILE).read_bytes()
    env = dict(os.environ, PYTHONPATH=str(REPO))
    proc = subprocess.run([sys.executable, "-c", _KILLED_WRITER, str(tmp_path)], env=env, cwd=REPO,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == -9, proc.stderr
    assert (tmp_path / EPOCHS_FILE).read_bytes() == before
    leftovers = [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]
    assert len(leftovers) == 1 and leftovers[0].name.startswith(f".{EPOCHS_FILE}.")
    # Readers see the last complete file; the next writer (a --resume) sweeps the leftover away.
    assert list(load_run(tmp_path).epochs["epoch"]) == [0]
    writer = RunWriter.resume(tmp_path)
    assert writer.remove_stale_temp_files() == leftovers
    assert sorted(p.name for p in tmp_path.iterdir()) == [EPOCHS_FILE, RUN_JSON]


def test_finished_files_get_the_mode_a_plain_open_gives(tmp_path):
    # Results are shared (colleagues, an analysis job): not mkstemp's owner-only 0600.
    umask = os.umask(0)
    os.umask(umask)
    atomic_write_text(tmp_path / "shared.txt", "x")
    (tmp_path / "plain.txt").write_text("x")
    mode = stat.S_IMODE((tmp_path / "shared.txt").stat().st_mode)
    assert mode == stat.S_IMODE((tmp_path / "plain.txt").stat().st_mode) == 0o666 & ~umask, oct(mode)
