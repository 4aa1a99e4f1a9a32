"""Power samples are appended (one Parquet part per epoch and attempt), never held by rank 0.

What is checked: RunWriter keeps no sample between epochs (memory held stays flat however many
epochs it writes); every part reads back, complete, with its attempt; a run directory written
before the parts (one power.parquet without ``attempt``) still reads; a killed writer's temp part
is removed on resume; the epoch loop writes one part per epoch.
"""
from __future__ import annotations

import gc
import itertools
import pathlib
import tracemalloc

import pyarrow as pa
import pyarrow.parquet as pq

from common.records import PowerSample
from common.rundir import (POWER_PARTS_DIR, POWER_SCHEMA, RUN_REQUIRED_KEYS, SCHEMA_VERSION, RunWriter, load_run,
                           power_table)
from energy.records import EnergyWindow
from scaling.collectives import LocalCollectives
from scaling.trainer import EpochPlan, StopFlag, run_epochs
from scaling.world import World

SAMPLES_PER_EPOCH = 2000


def _meta(run_id: str = "r") -> dict:
    return {key: None for key in RUN_REQUIRED_KEYS} | {
        "schema_version": SCHEMA_VERSION, "run_id": run_id, "status": "running", "config": {}, "engine": "horovod",
        "mode": "weak", "particle": "photons", "world_size": 2, "nodes": 1, "ranks_per_node": 2,
        "per_rank_batch": 8, "global_batch": 16, "restarts": []}


def _samples(epoch: int, n: int = SAMPLES_PER_EPOCH, rank: int = 0) -> list[PowerSample]:
    return [PowerSample(rank, "n1", epoch + i / n, "gpu", f"gpu{rank}", 100.0 + i % 7, "measured")
            for i in range(n)]


def _write_epochs(writer: RunWriter, epochs: range, attempt: int = 0) -> None:
    for epoch in epochs:
        # What rank 0 receives from the gather: one table per rank.
        tables = [power_table(_samples(epoch, rank=r), attempt) for r in (0, 1)]
        writer.add_power(tables, attempt=attempt, label=f"{epoch:06d}")


def _python_bytes() -> int:
    """Python memory traced now, without pathlib's: it interns path parts, and the interpreter's
    table of interned strings doubles at a moment set by how much the test session imported
    (about 2 MB at once), which is not memory the writer keeps."""
    snapshot = tracemalloc.take_snapshot().filter_traces([tracemalloc.Filter(False, pathlib.__file__)])
    return sum(stat.size for stat in snapshot.statistics("filename"))


def test_writer_memory_stays_flat_over_many_epochs(tmp_path):
    writer = RunWriter(tmp_path, _meta())
    writer.write_meta()
    _write_epochs(writer, range(0, 3))             # warm caches (pyarrow, imports)
    gc.collect()
    tracemalloc.start()
    try:
        _write_epochs(writer, range(3, 5))
        gc.collect()
        python_few, arrow_few = _python_bytes(), pa.total_allocated_bytes()
        _write_epochs(writer, range(5, 45))
        gc.collect()
        python_many, arrow_many = _python_bytes(), pa.total_allocated_bytes()
    finally:
        tracemalloc.stop()
    # 40 more epochs x 4000 samples: kept as objects they would be ~66 MB of Python memory, kept
    # as Arrow tables ~5 MB outside it. Nothing may stay: growth is noise, under one epoch's worth.
    assert python_many - python_few < 200_000, (python_few, python_many)
    assert arrow_many - arrow_few < 100_000, (arrow_few, arrow_many)
    assert not any(isinstance(v, list) and len(v) > 0 and isinstance(v[0], PowerSample)
                   for v in vars(writer).values())


def test_parts_read_back_complete_with_their_attempt(tmp_path):
    writer = RunWriter(tmp_path, _meta())
    writer.write_meta()
    writer.add_epochs([])
    _write_epochs(writer, range(0, 3), attempt=0)
    _write_epochs(writer, range(2, 4), attempt=1)   # resumed: epoch 2 run again, new clock
    assert writer.add_power([power_table([], 1)], attempt=1, label="end") is None   # no empty part
    parts = sorted(p.name for p in (tmp_path / POWER_PARTS_DIR).iterdir())
    assert parts == ["part-0000-000000.parquet", "part-0000-000001.parquet", "part-0000-000002.parquet",
                     "part-0001-000002.parquet", "part-0001-000003.parquet"]
    power = load_run(tmp_path).power
    assert len(power) == 5 * 2 * SAMPLES_PER_EPOCH
    assert list(power.columns) == POWER_SCHEMA.names
    assert power.groupby("attempt").size().to_dict() == {0: 3 * 2 * SAMPLES_PER_EPOCH, 1: 2 * 2 * SAMPLES_PER_EPOCH}
    assert set(power["rank"]) == {0, 1}


def test_samples_given_as_records_get_the_attempt(tmp_path):
    writer = RunWriter(tmp_path, _meta())
    writer.write_meta()
    writer.add_epochs([])
    writer.add_power(_samples(0, n=5), attempt=2, label="000000")
    power = load_run(tmp_path).power
    assert len(power) == 5 and set(power["attempt"]) == {2}


def test_an_older_single_power_file_still_reads_as_attempt_0(tmp_path):
    writer = RunWriter(tmp_path, _meta())
    writer.write_meta()
    writer.add_epochs([])
    old_schema = pa.schema([f for f in POWER_SCHEMA if f.name != "attempt"])
    old = power_table(_samples(0, n=10), 0).select(old_schema.names)
    pq.write_table(old, tmp_path / "power.parquet")
    writer.add_power(_samples(1, n=4), attempt=1, label="000001")
    power = load_run(tmp_path).power
    assert len(power) == 14
    assert list(power["attempt"]) == [0] * 10 + [1] * 4


def test_resume_removes_a_killed_writers_temp_part_and_does_not_load_power(tmp_path):
    writer = RunWriter(tmp_path, _meta())
    writer.write_meta()
    writer.add_epochs([])
    _write_epochs(writer, range(0, 2))
    stale = tmp_path / POWER_PARTS_DIR / ".part-0000-000002.parquet.k1ll3d.tmp"
    stale.write_bytes(b"half")
    resumed = RunWriter.resume(tmp_path)
    assert resumed.remove_stale_temp_files() == [stale]
    assert not stale.exists()
    assert len(list((tmp_path / POWER_PARTS_DIR).iterdir())) == 2


class _SamplingMeter:
    """Hands out a fixed batch of samples per epoch, as the sampler thread would."""

    def __init__(self):
        self.epoch = itertools.count()

    def begin(self, name: str) -> None:
        pass

    def end(self, name: str) -> EnergyWindow:
        return EnergyWindow(name=name, time_s=0.0)

    def drain_samples(self) -> list:
        return _samples(next(self.epoch), n=50)

    def drain_telemetry(self) -> list:
        return []


class _Engine:
    def feed(self, batches):
        return ()

    def local_values(self, value):
        return [value]


def test_epoch_loop_writes_one_part_per_epoch(tmp_path):
    world = World(rank=0, size=1, local_rank=0, local_size=1, node="n1", hostname="n1", launcher="python", cores=1)
    writer = RunWriter(tmp_path, _meta())
    writer.write_meta()
    plan = EpochPlan(epochs=4, iterations_per_epoch=2, warmup_epochs=1, attempt=3, showers_per_iteration=10)
    ok = run_epochs(world=world, plan=plan, start_epoch=1, step=lambda *a: {"comm_s": 0.0, "d_loss": 1.0, "g_loss": -1.0},
                    engine=_Engine(), iterators=[itertools.repeat((None, None))], meter=_SamplingMeter(),
                    coll=LocalCollectives(), writer=writer, save_checkpoint=lambda epoch: None, stop=StopFlag(),
                    log=lambda msg: None)
    assert ok
    names = sorted(p.name for p in (tmp_path / POWER_PARTS_DIR).iterdir())
    assert names == ["part-0003-000001.parquet", "part-0003-000002.parquet", "part-0003-000003.parquet"]
    power = load_run(tmp_path).power
    assert len(power) == 150 and set(power["attempt"]) == {3}


def test_a_run_that_recorded_power_without_samples_reads_as_empty_not_missing(tmp_path):
    writer = RunWriter(tmp_path, _meta())
    writer.write_meta()
    writer.add_epochs([])
    assert load_run(tmp_path).power is None                 # nothing recorded yet
    assert writer.add_power([power_table([], 0)], attempt=0, label="000000") is None
    power = load_run(tmp_path).power
    assert power is not None and len(power) == 0 and list(power.columns) == POWER_SCHEMA.names
