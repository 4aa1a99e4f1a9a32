"""The run directory: the contract between training (writer, rank 0) and analysis (reader).

    <run>/run.json        metadata, resolved config, status, restarts (RUN_REQUIRED_KEYS)
    <run>/epochs.parquet  one row per (rank, epoch, attempt): EPOCH_SCHEMA
    <run>/power/part-<attempt>-<epoch>.parquet
                          power time series per rank/node/device, one file per epoch and
                          attempt: POWER_SCHEMA (older runs: a single <run>/power.parquet)
    <run>/eval.parquet    per evaluated checkpoint: EVAL_SCHEMA
    <run>/checkpoints/

Every file is replaced atomically. This module imports no TensorFlow: analysis uses it.
Power samples are appended as one new file per epoch, never rewritten: at ~10^4 samples/s on a
large job, one file replaced every epoch would grow without bound in rank 0's memory and in
the time each rewrite takes.

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
from common.telemetry_parts import TELEMETRY_DIR, TELEMETRY_PART_GLOB
# The file names and value vocabulary of a run directory live in common.vocab (the launchers
# read them without pyarrow); re-exported here beside the schemas.
from common.vocab import CHECKPOINT_SUBDIR as CHECKPOINT_DIR  # noqa: F401
from common.vocab import ENERGY_SOURCES, RUN_STATUSES  # noqa: F401
from common.vocab import EPOCHS_FILE, EVAL_FILE, POWER_FILE, RUN_JSON, SOURCE_UNAVAILABLE

SCHEMA_VERSION = 1
POWER_PARTS_DIR = "power"         # <run>/power/part-<attempt>-<label>.parquet
POWER_PART_GLOB = "part-*.parquet"
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
    gpu_energy_source: str = SOURCE_UNAVAILABLE
    cpu_energy_source: str = SOURCE_UNAVAILABLE
    dram_energy_source: str = SOURCE_UNAVAILABLE
    d_loss: float = math.nan
    g_loss: float = math.nan
    member: int = 0               # which GAN of an ensemble this rank trains (0 when one GAN is trained)
    # Quantiles of this rank's per-iteration step time outside the all-reduce (its compute and
    # input wait), s: what a straggler projection draws the slowest of N ranks from.
    step_time_p10_s: float = math.nan
    step_time_p50_s: float = math.nan
    step_time_p90_s: float = math.nan
    step_time_p99_s: float = math.nan
    step_time_max_s: float = math.nan


STEP_TIME_QUANTILES: tuple[tuple[float, str], ...] = (
    (0.10, "step_time_p10_s"), (0.50, "step_time_p50_s"), (0.90, "step_time_p90_s"),
    (0.99, "step_time_p99_s"), (1.00, "step_time_max_s"))
"""(quantile, EpochRecord field) of the per-iteration step times; 1.00 is the maximum."""


@dataclass
class EvalRecord:
    """One evaluated checkpoint (bologan.metrics fills it). Scores are dimensionless, w1 in GeV.

    chi2/ndf: BoloGAN's total-energy test (+inf when some momentum has no generated shower in
    the reference range); *_overflow: the same with underflow/overflow bins, finite from the
    first checkpoint; out_of_range_fraction: generated showers outside that range. fpd, kpd
    (and their _err): CaloChallenge's FPD and KPD x 10^3, as published (bologan.physics_distance);
    frechet_hlf_std: the package's earlier Fréchet distance of the reference-standardised
    high-level features (comparable only with itself); sep_*: separation power mean and max over
    the high-level features, and mean per feature group.
    The EVAL_CONTEXT_FIELDS columns place the evaluation in the training (iterations, time,
    showers, energy so far) and give the evaluation's own cost.
    """
    iteration: int
    chi2: float
    ndf: int
    chi2_ndf: float
    w1: float
    ks: float
    chi2_overflow: float = math.nan
    ndf_overflow: int = 0
    chi2_ndf_overflow: float = math.nan
    out_of_range_fraction: float = math.nan
    fpd: float = math.nan             # CaloChallenge FPD x 10^3
    fpd_err: float = math.nan
    kpd: float = math.nan             # CaloChallenge KPD x 10^3
    kpd_err: float = math.nan
    frechet_hlf_std: float = math.nan
    sep_power_mean: float = math.nan
    sep_power_max: float = math.nan
    sep_power_max_feature: str = ""
    sep_e_ratio: float = math.nan
    sep_e_layer: float = math.nan
    sep_centre: float = math.nan
    sep_width: float = math.nan
    sep_sparsity: float = math.nan
    # Where training stood when this checkpoint was evaluated (training-time evaluation fills
    # them; an offline ``bologan.evaluate`` leaves the defaults: -1 and NaN, "unknown").
    epoch: int = -1                   # epochs completed
    train_time_s: float = math.nan    # training wall time so far: epoch clocks only, no evaluation
    showers: int = -1                 # real showers processed so far, all ranks
    energy_j: float = math.nan        # training energy so far (epoch windows), all domains and nodes
    energy_source: str = SOURCE_UNAVAILABLE   # common.vocab ENERGY_SOURCES, or SOURCE_PARTIAL for a sum
    eval_time_s: float = math.nan     # wall time of this evaluation itself
    eval_energy_j: float = math.nan   # energy of this evaluation itself
    eval_energy_source: str = SOURCE_UNAVAILABLE
    member: int = 0                   # which GAN of an ensemble (0 when one GAN is trained)


def _schema_for(cls: type) -> pa.Schema:
    arrow = {int: pa.int64(), float: pa.float64(), str: pa.string(), bool: pa.bool_()}
    hints = typing.get_type_hints(cls)
    return pa.schema([(f.name, arrow[hints[f.name]]) for f in dataclasses.fields(cls)])


EPOCH_SCHEMA = _schema_for(EpochRecord)
POWER_SCHEMA = _schema_for(PowerSample)
EVAL_SCHEMA = _schema_for(EvalRecord)
EVAL_CONTEXT_FIELDS = ("epoch", "train_time_s", "showers", "energy_j", "energy_source", "eval_time_s",
                       "eval_energy_j", "eval_energy_source", "member")
"""EvalRecord columns that say where training stood, not how good the checkpoint is."""


def records_table(records: Iterable[Any], schema: pa.Schema) -> pa.Table:
    rows = [dataclasses.asdict(r) if dataclasses.is_dataclass(r) else dict(r) for r in records]
    return pa.Table.from_pylist(rows, schema=schema)


def power_table(samples: Iterable[PowerSample], attempt: int) -> pa.Table:
    """Samples as a POWER_SCHEMA table, every row stamped with ``attempt`` (the sampler does not
    know it). Built column by column: a compact form for gathering ranks' samples on rank 0."""
    samples = list(samples)
    columns: dict[str, list] = {name: [getattr(s, name) for s in samples]
                                for name in POWER_SCHEMA.names if name != "attempt"}
    columns["attempt"] = [attempt] * len(samples)
    return pa.table(columns, schema=POWER_SCHEMA)


def power_part_name(attempt: int, label: str) -> str:
    """``part-<attempt>-<label>.parquet``; zero-padded so that names sort in writing order."""
    return f"part-{attempt:04d}-{label}.parquet"


class RunWriter:
    """Rank 0's writer for one run directory. Every write replaces its file atomically."""

    def __init__(self, path: str | Path, meta: dict[str, Any]):
        self.path = Path(path)
        self.meta = dict(meta)
        self.meta.setdefault("schema_version", SCHEMA_VERSION)
        self.epochs: list[EpochRecord] = []
        self.evals: list[EvalRecord] = []

    @classmethod
    def resume(cls, path: str | Path) -> "RunWriter":
        """Re-open a run directory written earlier, keeping its epoch records (reads only; power
        parts already written stay on disk and are not read).

        A run that died before its first epoch was recorded has no epochs file yet; it is
        resumed with no records rather than refused.
        """
        run = load_run(path, require_epochs=False, read_power=False)
        writer = cls(path, run.meta)
        if run.epochs is not None:
            writer.epochs = [EpochRecord(**row) for row in run.epochs.to_dict("records")]
        if run.eval is not None:
            writer.evals = [EvalRecord(**row) for row in run.eval.to_dict("records")]
        return writer

    def remove_stale_temp_files(self) -> list[Path]:
        """Delete temp files a killed writer left beside the result files; returns them.

        Only names of the form ``atomic_write`` uses for this directory's own files are
        touched, so nothing a user put there is removed.
        """
        removed = []
        patterns = [(self.path, f".{name}.*.tmp") for name in (RUN_JSON, EPOCHS_FILE, POWER_FILE, EVAL_FILE)]
        patterns.append((self.path / POWER_PARTS_DIR, f".{POWER_PART_GLOB}.*.tmp"))
        patterns.append((self.path / TELEMETRY_DIR, f".{TELEMETRY_PART_GLOB}.*.tmp"))
        for directory, pattern in patterns:
            for tmp in directory.glob(pattern):
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

    def add_power(self, parts: Iterable[pa.Table | PowerSample], *, attempt: int, label: str) -> Path | None:
        """Write one power part, ``power/part-<attempt>-<label>.parquet``; returns it (None when
        there is no sample). ``parts``: the per-rank tables of ``power_table`` (what rank 0
        gathers), or samples. Nothing is kept in memory: each epoch's part is written once.
        Without samples the parts folder is still created: the run recorded power, and had none."""
        parts = list(parts)
        tables = [p for p in parts if isinstance(p, pa.Table)]
        samples = [p for p in parts if not isinstance(p, pa.Table)]
        if samples:
            tables.append(power_table(samples, attempt))
        tables = [t for t in tables if t.num_rows]
        if not tables:
            (self.path / POWER_PARTS_DIR).mkdir(parents=True, exist_ok=True)
            return None
        path = self.path / POWER_PARTS_DIR / power_part_name(attempt, label)
        atomic_write_parquet(path, pa.concat_tables(tables))
        return path

    def write_eval(self, records: Iterable[EvalRecord]) -> None:
        atomic_write_parquet(self.path / EVAL_FILE, records_table(records, EVAL_SCHEMA))

    def add_eval(self, records: Iterable[EvalRecord]) -> None:
        """Add training-time evaluations and rewrite eval.parquet, ordered by (member, iteration).

        A record for a (member, iteration) already present replaces it: a run resumed from a
        checkpoint that was evaluated before it stopped evaluates that iteration again, and the
        file keeps one row per checkpoint.
        """
        by_key = {(int(r.member), int(r.iteration)): r for r in self.evals}
        for r in records:
            by_key[(int(r.member), int(r.iteration))] = r
        self.evals = [by_key[k] for k in sorted(by_key)]
        self.write_eval(self.evals)


@dataclass
class Run:
    path: Path
    meta: dict[str, Any]
    epochs: "Any"                 # pandas.DataFrame with EPOCH_SCHEMA columns (None: see load_run)
    power: "Any | None"
    eval: "Any | None"


def _field_defaults(cls: type) -> dict[str, Any]:
    return {f.name: f.default for f in dataclasses.fields(cls) if f.default is not dataclasses.MISSING}


def _read_parquet(path: Path, schema: pa.Schema, required: bool, defaults: dict[str, Any] | None = None):
    """The file's ``schema`` columns as a DataFrame. A column named in ``defaults`` may be absent
    (a file written before that column existed) and is then filled with its default."""
    if not path.exists():
        if required:
            raise UserError(f"{path}: missing (not a complete run directory)")
        return None
    try:
        table = pq.read_table(path)
    except Exception as exc:  # pyarrow raises several types for damaged files
        raise UserError(f"{path}: unreadable Parquet ({str(exc).splitlines()[0]})") from None
    defaults = defaults or {}
    absent = [n for n in schema.names if n not in table.column_names]
    missing = [n for n in absent if n not in defaults]
    if missing:
        raise UserError(f"{path}: missing columns {', '.join(missing)}")
    for name in absent:
        column = pa.array([defaults[name]] * table.num_rows, type=schema.field(name).type)
        table = table.append_column(schema.field(name), column)
    return table.select(schema.names).to_pandas()


def is_run_dir(path: str | Path) -> bool:
    return (Path(path) / RUN_JSON).is_file()


# run.json keys whose type readers rely on, checked by ``read_run_meta`` (None: not checked,
# for keys a killed or older writer may leave empty).
_META_TYPES: dict[str, tuple[type, ...]] = {
    "run_id": (str,), "status": (str,), "engine": (str,), "mode": (str,), "particle": (str,),
    "world_size": (int,), "nodes": (int,), "ranks_per_node": (int,), "per_rank_batch": (int,),
    "global_batch": (int,), "config": (dict,), "restarts": (list,),
}


def _type_names(types: tuple[type, ...]) -> str:
    return {dict: "an object", list: "a list", str: "a string", int: "an integer"}[types[0]]


def read_run_meta(run_dir: str | Path) -> dict[str, Any]:
    """``<run_dir>/run.json``, checked for the shape every reader relies on (the one place that
    judges it: analysis and ``scaling.run --resume`` both read through here). Problems are one
    ``UserError`` naming the file and the key."""
    meta_path = Path(run_dir) / RUN_JSON
    try:
        meta = json.loads(meta_path.read_text())
    except (OSError, ValueError) as exc:
        raise UserError(f"{meta_path}: unreadable ({exc})") from None
    if not isinstance(meta, dict):
        raise UserError(f"{meta_path}: expected a JSON object, got {type(meta).__name__}")
    version = meta.get("schema_version")
    if version != SCHEMA_VERSION:
        raise UserError(f"{meta_path}: schema_version {version!r} is not supported (this version reads {SCHEMA_VERSION})")
    missing = [k for k in RUN_REQUIRED_KEYS if k not in meta]
    if missing:
        raise UserError(f"{meta_path}: missing keys {', '.join(missing)}")
    for key, types in _META_TYPES.items():
        value = meta[key]
        if isinstance(value, bool) or not isinstance(value, types):
            raise UserError(f"{meta_path}: {key} must be {_type_names(types)}, got {value!r:.60}")
    for section, table in meta["config"].items():
        if not isinstance(table, dict):
            raise UserError(f"{meta_path}: config.{section} must be an object of settings, got {table!r:.60}")
    return meta


def _read_power(run_dir: Path) -> "Any | None":
    """Every power part (and an older run's single power.parquet) as one DataFrame; empty when
    the run recorded power without a sample, None when it recorded none."""
    parts_dir = run_dir / POWER_PARTS_DIR
    files = sorted(parts_dir.glob(POWER_PART_GLOB))
    if (run_dir / POWER_FILE).exists():
        files.insert(0, run_dir / POWER_FILE)
    if not files:
        return POWER_SCHEMA.empty_table().to_pandas() if parts_dir.is_dir() else None
    tables = []
    for path in files:
        try:
            table = pq.read_table(path)
        except Exception as exc:  # pyarrow raises several types for damaged files
            raise UserError(f"{path}: unreadable Parquet ({str(exc).splitlines()[0]})") from None
        if "attempt" not in table.column_names:
            # Written before power rows carried their attempt: one clock, attempt 0.
            table = table.append_column("attempt", pa.array([0] * table.num_rows, pa.int64()))
        missing = [n for n in POWER_SCHEMA.names if n not in table.column_names]
        if missing:
            raise UserError(f"{path}: missing columns {', '.join(missing)}")
        tables.append(table.select(POWER_SCHEMA.names).cast(POWER_SCHEMA))
    return pa.concat_tables(tables).to_pandas()


def load_run(path: str | Path, require_epochs: bool = True, read_power: bool = True) -> Run:
    """Read and validate one run directory; problems are ``UserError`` naming the path.

    ``require_epochs=False`` accepts a run without ``epochs.parquet`` (``Run.epochs`` None):
    one that stopped before recording its first epoch, which ``--resume`` can still continue.
    ``read_power=False`` leaves ``Run.power`` None without reading the (possibly large) parts.
    """
    p = Path(path)
    if not p.is_dir():
        raise UserError(f"{p}: not a directory")
    if not (p / RUN_JSON).is_file():
        raise UserError(f"{p}: not a run directory (no {RUN_JSON})")
    meta = read_run_meta(p)
    # ``member`` came with ensembles (older epochs files are one GAN: member 0), the step-time
    # quantiles later still (older files: NaN, not recorded).
    epochs = _read_parquet(p / EPOCHS_FILE, EPOCH_SCHEMA, required=require_epochs,
                           defaults={"member": 0, **{name: math.nan for _, name in STEP_TIME_QUANTILES}})
    power = _read_power(p) if read_power else None
    # Evaluation columns were added over time; older eval.parquet files get the defaults.
    evals = _read_parquet(p / EVAL_FILE, EVAL_SCHEMA, required=False, defaults=_field_defaults(EvalRecord))
    if evals is not None and "kpd" not in pq.read_schema(p / EVAL_FILE).names:
        # Written before CaloChallenge's FPD/KPD: its "fpd" is the standardised Fréchet distance.
        evals["frechet_hlf_std"], evals["fpd"] = evals["fpd"], math.nan
    return Run(path=p, meta=meta, epochs=epochs, power=power, eval=evals)
