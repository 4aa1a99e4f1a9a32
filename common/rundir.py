"""The run directory: the contract between training (writer, rank 0) and analysis (reader).

    <run>/run.json        metadata, resolved config, status, restarts (RUN_REQUIRED_KEYS)
    <run>/epochs.parquet  one row per (rank, epoch, attempt): EPOCH_SCHEMA
    <run>/power.parquet   power time series per rank/node/device: POWER_SCHEMA
    <run>/eval.parquet    per evaluated checkpoint: EVAL_SCHEMA
    <run>/checkpoints/

Every file is replaced atomically. This module imports no TensorFlow: analysis uses it.

Energy columns are per domain, each with its own source, because a GPU counter may be measured
while RAPL is unreadable on the same node:
- ``gpu_energy_j``: the GPU this rank drives (every rank reads its own).
- ``cpu_energy_j`` / ``dram_energy_j``: the whole node's RAPL packages / DRAM, filled on the
  node's reader rank (local rank 0) only; other ranks of the node carry NaN with source
  ``not_reader``, so summing a column over all rows counts each node exactly once.
"""
from __future__ import annotations

import dataclasses
import json
import math
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

import pyarrow as pa
import pyarrow.parquet as pq

from common.atomic import atomic_write_json, atomic_write_parquet
from common.errors import UserError
from common.records import PowerSample

SCHEMA_VERSION = 1
RUN_JSON = "run.json"
EPOCHS_FILE = "epochs.parquet"
POWER_FILE = "power.parquet"
EVAL_FILE = "eval.parquet"
CHECKPOINT_DIR = "checkpoints"

ENERGY_SOURCES = ("measured", "estimated", "unavailable", "not_reader")
RUN_STATUSES = ("running", "completed", "interrupted", "failed")
RUN_REQUIRED_KEYS = ("schema_version", "run_id", "status", "config", "engine", "mode", "particle",
                     "world_size", "nodes", "ranks_per_node", "per_rank_batch", "global_batch",
                     "launcher", "versions", "hardware", "start_time", "restarts")


@dataclass
class EpochRecord:
    """One rank's measurements for one epoch (or the interrupted part of one). Times in s."""
    rank: int
    local_rank: int
    node: str
    epoch: int
    attempt: int                  # 0 for the first start, +1 per resume
    time_s: float                 # wall time of the epoch on this rank
    compute_s: float              # time in the training step outside the all-reduce
    comm_s: float                 # time inside gradient all-reduces
    data_wait_s: float            # time waiting for the next input batch
    iterations: int
    showers: int                  # real showers this rank consumed
    warmup: bool
    interrupted: bool = False     # the epoch was cut short by a signal
    gpu_energy_j: float = math.nan
    cpu_energy_j: float = math.nan
    dram_energy_j: float = math.nan
    gpu_energy_source: str = "unavailable"
    cpu_energy_source: str = "unavailable"
    dram_energy_source: str = "unavailable"
    d_loss: float = math.nan
    g_loss: float = math.nan


@dataclass
class EvalRecord:
    iteration: int
    chi2: float
    ndf: int
    chi2_ndf: float
    w1: float
    ks: float


def _schema_for(cls: type) -> pa.Schema:
    arrow = {int: pa.int64(), float: pa.float64(), str: pa.string(), bool: pa.bool_()}
    hints = typing.get_type_hints(cls)
    return pa.schema([(f.name, arrow[hints[f.name]]) for f in dataclasses.fields(cls)])


EPOCH_SCHEMA = _schema_for(EpochRecord)
POWER_SCHEMA = _schema_for(PowerSample)
EVAL_SCHEMA = _schema_for(EvalRecord)


def records_table(records: Iterable[Any], schema: pa.Schema) -> pa.Table:
    rows = [dataclasses.asdict(r) if dataclasses.is_dataclass(r) else dict(r) for r in records]
    return pa.Table.from_pylist(rows, schema=schema)


class RunWriter:
    """Rank 0's writer for one run directory. Every write replaces its file atomically."""

    def __init__(self, path: str | Path, meta: dict[str, Any]):
        self.path = Path(path)
        self.meta = dict(meta)
        self.meta.setdefault("schema_version", SCHEMA_VERSION)
        self.epochs: list[EpochRecord] = []
        self.power: list[PowerSample] = []

    @classmethod
    def resume(cls, path: str | Path) -> "RunWriter":
        """Re-open a run directory written earlier, keeping its records (reads only).

        A run that died before its first epoch was recorded has no epochs file yet; it is
        resumed with no records rather than refused.
        """
        run = load_run(path, require_epochs=False)
        writer = cls(path, run.meta)
        if run.epochs is not None:
            writer.epochs = [EpochRecord(**row) for row in run.epochs.to_dict("records")]
        if run.power is not None:
            writer.power = [PowerSample(**row) for row in run.power.to_dict("records")]
        return writer

    def remove_stale_temp_files(self) -> list[Path]:
        """Delete temp files a killed writer left beside the result files; returns them.

        Only names of the form ``atomic_write`` uses for this directory's own files are
        touched, so nothing a user put there is removed.
        """
        removed = []
        for name in (RUN_JSON, EPOCHS_FILE, POWER_FILE, EVAL_FILE):
            for tmp in self.path.glob(f".{name}.*.tmp"):
                try:
                    tmp.unlink()
                    removed.append(tmp)
                except FileNotFoundError:
                    pass
        return removed

    def write_meta(self, **updates: Any) -> None:
        self.meta.update(updates)
        atomic_write_json(self.path / RUN_JSON, self.meta)

    def add_epochs(self, records: Iterable[EpochRecord]) -> None:
        self.epochs.extend(records)
        atomic_write_parquet(self.path / EPOCHS_FILE, records_table(self.epochs, EPOCH_SCHEMA))

    def add_power(self, samples: Iterable[PowerSample]) -> None:
        samples = list(samples)
        if not samples and (self.path / POWER_FILE).exists():
            return
        self.power.extend(samples)
        atomic_write_parquet(self.path / POWER_FILE, records_table(self.power, POWER_SCHEMA))

    def write_eval(self, records: Iterable[EvalRecord]) -> None:
        atomic_write_parquet(self.path / EVAL_FILE, records_table(records, EVAL_SCHEMA))


@dataclass
class Run:
    path: Path
    meta: dict[str, Any]
    epochs: "Any"                 # pandas.DataFrame with EPOCH_SCHEMA columns (None: see load_run)
    power: "Any | None"
    eval: "Any | None"


def _read_parquet(path: Path, schema: pa.Schema, required: bool):
    if not path.exists():
        if required:
            raise UserError(f"{path}: missing (not a complete run directory)")
        return None
    try:
        table = pq.read_table(path)
    except Exception as exc:  # pyarrow raises several types for damaged files
        raise UserError(f"{path}: unreadable Parquet ({str(exc).splitlines()[0]})") from None
    missing = [n for n in schema.names if n not in table.column_names]
    if missing:
        raise UserError(f"{path}: missing columns {', '.join(missing)}")
    return table.select(schema.names).to_pandas()


def is_run_dir(path: str | Path) -> bool:
    return (Path(path) / RUN_JSON).is_file()


def load_run(path: str | Path, require_epochs: bool = True) -> Run:
    """Read and validate one run directory; problems are ``UserError`` naming the path.

    ``require_epochs=False`` accepts a run without ``epochs.parquet`` (``Run.epochs`` None):
    one that stopped before recording its first epoch, which ``--resume`` can still continue.
    """
    p = Path(path)
    meta_path = p / RUN_JSON
    if not p.is_dir():
        raise UserError(f"{p}: not a directory")
    if not meta_path.is_file():
        raise UserError(f"{p}: not a run directory (no {RUN_JSON})")
    try:
        meta = json.loads(meta_path.read_text())
    except (OSError, ValueError) as exc:
        raise UserError(f"{meta_path}: unreadable ({exc})") from None
    if not isinstance(meta, dict):
        raise UserError(f"{meta_path}: expected a JSON object")
    version = meta.get("schema_version")
    if version != SCHEMA_VERSION:
        raise UserError(f"{meta_path}: schema_version {version!r} is not supported (this version reads {SCHEMA_VERSION})")
    missing = [k for k in RUN_REQUIRED_KEYS if k not in meta]
    if missing:
        raise UserError(f"{meta_path}: missing keys {', '.join(missing)}")
    epochs = _read_parquet(p / EPOCHS_FILE, EPOCH_SCHEMA, required=require_epochs)
    power = _read_parquet(p / POWER_FILE, POWER_SCHEMA, required=False)
    evals = _read_parquet(p / EVAL_FILE, EVAL_SCHEMA, required=False)
    return Run(path=p, meta=meta, epochs=epochs, power=power, eval=evals)
