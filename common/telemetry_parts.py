"""The run directory's ``telemetry/`` parts: one Parquet file per epoch and attempt, like ``power/``.

    <run>/telemetry/part-<attempt>-<label>.parquet    TELEMETRY_SCHEMA rows (TelemetrySample)

Rank 0 writes each epoch's part once and keeps nothing, so memory stays bounded on long runs.
A run written before telemetry existed has no folder: ``read_telemetry`` returns None.
"""
from __future__ import annotations

import dataclasses
import typing
from pathlib import Path
from typing import Any, Iterable

import pyarrow as pa
import pyarrow.parquet as pq

from common.atomic import atomic_write_parquet
from common.errors import UserError
from common.records import TelemetrySample

TELEMETRY_DIR = "telemetry"
TELEMETRY_PART_GLOB = "part-*.parquet"


def _arrow_type(hint: Any) -> pa.DataType:
    if hint in (str, str | None):
        return pa.string()
    return {int: pa.int64(), float: pa.float64()}[hint]


TELEMETRY_SCHEMA = pa.schema([(f.name, _arrow_type(typing.get_type_hints(TelemetrySample)[f.name]))
                              for f in dataclasses.fields(TelemetrySample)])


def telemetry_table(samples: Iterable[TelemetrySample], attempt: int) -> pa.Table:
    """Samples as a TELEMETRY_SCHEMA table stamped with ``attempt`` (built column by column, the
    compact form ranks send to rank 0)."""
    samples = list(samples)
    columns = {name: [getattr(s, name) for s in samples] for name in TELEMETRY_SCHEMA.names if name != "attempt"}
    columns["attempt"] = [attempt] * len(samples)
    return pa.table(columns, schema=TELEMETRY_SCHEMA)


def write_telemetry_part(run_dir: str | Path, tables: Iterable[pa.Table], *, attempt: int, label: str) -> Path | None:
    """Write ``telemetry/part-<attempt>-<label>.parquet`` from the gathered per-rank tables;
    returns it, or None when no rank had a row (the folder is still created)."""
    folder = Path(run_dir) / TELEMETRY_DIR
    tables = [t for t in tables if t is not None and t.num_rows]
    folder.mkdir(parents=True, exist_ok=True)
    if not tables:
        return None
    path = folder / f"part-{attempt:04d}-{label}.parquet"
    atomic_write_parquet(path, pa.concat_tables(tables))
    return path


def read_telemetry(run_dir: str | Path) -> Any | None:
    """Every telemetry part as one DataFrame (empty when the run recorded none); None when the
    run has no ``telemetry/`` folder (written before telemetry existed)."""
    folder = Path(run_dir) / TELEMETRY_DIR
    if not folder.is_dir():
        return None
    tables = []
    for path in sorted(folder.glob(TELEMETRY_PART_GLOB)):
        try:
            table = pq.read_table(path)
        except Exception as exc:  # pyarrow raises several types for damaged files
            raise UserError(f"{path}: unreadable Parquet ({str(exc).splitlines()[0]})") from None
        missing = [n for n in TELEMETRY_SCHEMA.names if n not in table.column_names]
        if missing:
            raise UserError(f"{path}: missing columns {', '.join(missing)}")
        tables.append(table.select(TELEMETRY_SCHEMA.names).cast(TELEMETRY_SCHEMA))
    if not tables:
        return TELEMETRY_SCHEMA.empty_table().to_pandas()
    return pa.concat_tables(tables).to_pandas()
