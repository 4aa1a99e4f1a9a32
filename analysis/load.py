"""Find run directories and all-reduce benchmark files, and group runs into series.

A series is a set of runs that differ only in how many ranks ran them: same engine, mode,
particle, workload configuration (``config_hash``), the batch that the mode keeps fixed
(global batch for strong scaling, per-rank batch for weak scaling) and the threads per rank
the configuration pins (``train.threads``; a layout study varies them on purpose, so each
value is its own series). Runs that share a series key but whose resolved configurations
still differ are refused, naming the keys.
"""
from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

from analysis.sites import run_hardware, run_site
from common.errors import UserError
from common.rundir import EPOCHS_FILE, RUN_JSON, Run, is_run_dir, load_run
from common.vocab import (ALLREDUCE_BENCH_GLOB, FINISHED_STATUSES, MEASUREMENT_KEYS, MODE_STRONG, NOT_WORKLOAD_KEYS, RUN_LAYOUT_KEY_NAMES, RUN_MODES,
                          STATUS_FAILED, STATUS_INTERRUPTED, STATUS_RUNNING, STATUS_STALLED)

BENCH_SCHEMA = "allreduce-bench/1"
WORKLOAD_SECTIONS = ("model", "train", "data")   # the tables scaling.run hashes into config_hash
VARIANT_KEY = "scaling.variant"                   # launch.study [variants]: the variant a run measures


def may_vary_in_series(key: str) -> bool:
    """Whether the dotted config ``key`` may differ between the runs of one series.

    True for the keys scaling.run leaves out of the workload hash (``NOT_WORKLOAD_KEYS``), so
    runs sharing a ``config_hash`` are never refused over them, and for world size, placement,
    names, paths and times (``RUN_LAYOUT_KEY_NAMES``, by last dotted component). A different
    data file is a different workload, so ``data.data`` is compared.
    """
    if key in MEASUREMENT_KEYS:
        return False
    if key == VARIANT_KEY:
        return True     # part of the series key: inside a series it differs only as absent vs ""
    return key in NOT_WORKLOAD_KEYS or key.rsplit(".", 1)[-1] in RUN_LAYOUT_KEY_NAMES


@dataclass(frozen=True)
class SeriesKey:
    engine: str
    mode: str                     # "strong" | "weak"
    particle: str
    config_hash: str
    batch_showers: int            # global batch (strong) or per-rank batch (weak), showers per critic step
    threads: int = 0              # config train.threads: threads per rank (0: decided from the cores)
    variant: str = ""             # config scaling.variant: the study variant's name ("" = none)
    site: str = ""                # where it ran (analysis.sites.run_site); "" for runs that did not record it
    hardware: str = ""            # the node's CPU and GPU (analysis.sites.run_hardware); "" likewise

    @property
    def workload(self) -> tuple:
        """The key without where it ran: the same workload at two sites shares it."""
        return (self.engine, self.mode, self.particle, self.config_hash, self.batch_showers, self.threads,
                self.variant)

    @property
    def where(self) -> str:
        """'leonardo (container) | CPU x 32, GPU' or '' (no site recorded: an unknown site)."""
        return " | ".join(p for p in (self.site, self.hardware) if p)

    @property
    def batch_kind(self) -> str:
        return "global" if self.mode == MODE_STRONG else "per-rank"

    @property
    def label(self) -> str:
        """Short legend text, e.g. 'horovod strong photons, global batch 512 [1a2b3c]', with
        ', 2 threads per rank' before the hash when the configuration pins the threads."""
        threads = f", {self.threads} thread{'s' if self.threads != 1 else ''} per rank" if self.threads else ""
        where = f" @ {self.where}" if self.where else ""
        return ((f"{self.variant}: " if self.variant else "") + f"{self.engine} {self.mode} {self.particle}, {self.batch_kind} batch "
                f"{self.batch_showers}{threads} [{self.config_hash[:6]}]{where}")

    @property
    def slug(self) -> str:
        threads = f"-t{self.threads}" if self.threads else ""
        where = f"-at-{hashlib.sha1(self.where.encode()).hexdigest()[:6]}" if self.where else ""
        return ((f"{self.variant}-" if self.variant else "")
                + f"{self.engine}-{self.mode}-{self.particle}-b{self.batch_showers}{threads}-{self.config_hash[:6]}{where}")


@dataclass
class Series:
    key: SeriesKey
    runs: list[Run] = field(default_factory=list)

    @property
    def config(self) -> dict[str, Any]:
        return self.runs[0].meta.get("config", {})

    @property
    def world_sizes(self) -> list[int]:
        return sorted({int(r.meta["world_size"]) for r in self.runs})

    @property
    def placements(self) -> list[tuple[int, int]]:
        """Distinct (world size, nodes): the same N on a different number of nodes is its own row."""
        return sorted({(int(r.meta["world_size"]), int(r.meta["nodes"])) for r in self.runs})


@dataclass(frozen=True)
class BenchFile:
    """One all-reduce micro-benchmark result file (one world size)."""
    path: Path
    engine: str
    world_size: int
    nodes: int
    ranks_per_node: int
    bytes: tuple[int, ...]
    time_s_median: tuple[float, ...]
    time_s_p10: tuple[float, ...]
    time_s_p90: tuple[float, ...]


def _walk(root: Path) -> Iterable[Path]:
    """Directories under ``root`` (itself included), sorted, not descending into run dirs."""
    for dirpath, dirnames, _files in os.walk(root):
        here = Path(dirpath)
        if is_run_dir(here):
            dirnames[:] = []      # checkpoints/ etc. hold no further runs
        else:
            dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        yield here


def find_inputs(paths: Iterable[str | Path]) -> tuple[list[Path], list[Path]]:
    """Run directories and benchmark files under each path; a path with no run is an error."""
    runs: list[Path] = []
    benches: list[Path] = []
    for raw in paths:
        root = Path(raw)
        if not root.exists():
            raise UserError(f"{root}: no such file or directory")
        if not root.is_dir():
            raise UserError(f"{root}: not a directory (give a run directory or a study directory)")
        found = 0
        for d in _walk(root):
            if is_run_dir(d):
                runs.append(d)
                found += 1
            benches.extend(sorted(d.glob(ALLREDUCE_BENCH_GLOB)))
        if not found:
            raise UserError(f"{root}: no run directory found (no {RUN_JSON} at any depth)")
    # The same run reached through two arguments is read once.
    uniq_runs = list(dict.fromkeys(p.resolve() for p in runs))
    uniq_bench = list(dict.fromkeys(p.resolve() for p in benches if p.is_file()))
    return uniq_runs, uniq_bench


def _unstarted(d: Path) -> str | None:
    """Why a run directory holds no epoch yet, if its run.json says it never completed one.

    A run that failed or was killed before its first epoch is not corrupt: a study with such
    a run still deserves a report of the others. A *completed* run without epochs is corrupt.
    """
    if (d / EPOCHS_FILE).exists():
        return None
    try:
        status = json.loads((d / RUN_JSON).read_text()).get("status")
    except (OSError, ValueError, AttributeError):
        return None                       # load_run reports the damaged run.json
    if status in (STATUS_RUNNING, STATUS_FAILED, STATUS_INTERRUPTED, STATUS_STALLED):
        return f"{d}: no epoch recorded (status {status})"
    return None


def load_runs(run_dirs: Iterable[Path], progress: Callable[[str], None] | None = None,
              skipped: list[str] | None = None) -> list[Run]:
    """``load_run`` each directory (a damaged one raises ``UserError`` naming its path).

    Runs that stopped before recording an epoch are left out and described in ``skipped``.
    """
    runs = []
    for d in run_dirs:
        why = _unstarted(Path(d))
        if why is not None:
            if skipped is not None:
                skipped.append(why)
            if progress:
                progress(f"skipped {why}")
            continue
        run = load_run(d)
        if len(run.epochs) == 0 and run.meta.get("status") not in FINISHED_STATUSES:
            why = f"{d}: no epoch recorded (status {run.meta.get('status')})"
            if skipped is not None:
                skipped.append(why)
            if progress:
                progress(f"skipped {why}")
            continue
        _check_meta(run)
        runs.append(run)
        if progress:
            progress(f"loaded {d} ({run.meta['engine']}, {run.meta['mode']}, N={run.meta['world_size']}, "
                     f"{len(run.epochs)} epoch rows)")
    return runs


def _check_meta(run: Run) -> None:
    meta, where = run.meta, run.path / RUN_JSON
    if meta.get("mode") not in RUN_MODES:
        raise UserError(f"{where}: mode {meta.get('mode')!r} is not one of {', '.join(RUN_MODES)}")
    for key in ("world_size", "per_rank_batch", "global_batch", "nodes", "ranks_per_node"):
        value = meta.get(key)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise UserError(f"{where}: {key} must be a positive integer, got {value!r}")
    if not isinstance(meta.get("config"), dict):
        raise UserError(f"{where}: config must be an object of sections")
    if len(run.epochs) == 0:
        raise UserError(f"{run.path}: epochs.parquet holds no epoch (the run recorded nothing yet)")


def flatten_config(config: dict[str, Any]) -> dict[str, Any]:
    """{'train': {'n_disc': 5}} -> {'train.n_disc': 5} (nested tables flattened with dots)."""
    out: dict[str, Any] = {}

    def walk(prefix: str, value: Any) -> None:
        if isinstance(value, dict):
            for k in sorted(value):
                walk(f"{prefix}.{k}" if prefix else str(k), value[k])
        else:
            out[prefix] = value

    walk("", config)
    return out


def _as_trained(config: dict[str, Any]) -> dict[str, Any]:
    """A run's config with the settings it predates set as it trained (an older run without
    [model] generator_norm trained with batch statistics), so it is compared as what it did."""
    from bologan.config import with_legacy_values

    tables, _ = with_legacy_values({s: t for s, t in config.items() if s in WORKLOAD_SECTIONS and isinstance(t, dict)})
    return {**config, **tables}


def config_differences(configs: list[dict[str, Any]]) -> list[str]:
    """Dotted keys whose values differ between configs, except those that ``may_vary_in_series``."""
    flats = [flatten_config(_as_trained(c)) for c in configs]
    keys = sorted(set().union(*flats)) if flats else []
    diffs = []
    for key in keys:
        if may_vary_in_series(key):
            continue
        values = {json.dumps(f[key] if key in f else "<absent>", sort_keys=True, default=str)
                  for f in flats}
        if len(values) > 1:
            diffs.append(key)
    return diffs


def _config_hash(run: Run) -> str:
    value = run.meta.get("config_hash")
    if isinstance(value, str) and value:
        return value
    # Older writers: hash the workload tables as scaling.run does now (same excluded keys).
    from bologan.config import config_hash

    return config_hash({s: run.meta["config"].get(s, {}) for s in WORKLOAD_SECTIONS}, NOT_WORKLOAD_KEYS)


def configured_threads(run: Run) -> int:
    """The run's config ``train.threads`` (0 when absent or not a positive integer)."""
    train = run.meta["config"].get("train")
    value = train.get("threads") if isinstance(train, dict) else None
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0


def series_key(run: Run) -> SeriesKey:
    meta = run.meta
    batch = meta["global_batch"] if meta["mode"] == MODE_STRONG else meta["per_rank_batch"]
    return SeriesKey(engine=str(meta["engine"]), mode=str(meta["mode"]), particle=str(meta["particle"]),
                     config_hash=_config_hash(run), batch_showers=int(batch), threads=configured_threads(run),
                     variant=run_variant(run), site=run_site(meta), hardware=run_hardware(meta))


def run_variant(run: Run) -> str:
    """The run's config ``scaling.variant`` (launch.study [variants]); "" when absent."""
    scaling = run.meta["config"].get("scaling")
    value = scaling.get("variant") if isinstance(scaling, dict) else None
    return value if isinstance(value, str) else ""


def group_series(runs: Iterable[Run]) -> list[Series]:
    """Group runs by ``SeriesKey``; configs that still differ inside a group are a ``UserError``."""
    groups: dict[SeriesKey, Series] = {}
    for run in runs:
        key = series_key(run)
        groups.setdefault(key, Series(key)).runs.append(run)
    for s in groups.values():
        s.runs.sort(key=lambda r: (int(r.meta["world_size"]), int(r.meta["nodes"]), str(r.meta.get("run_id"))))
        diffs = config_differences([r.meta["config"] for r in s.runs])
        if diffs:
            paths = ", ".join(str(r.path) for r in s.runs[:4]) + (" ..." if len(s.runs) > 4 else "")
            raise UserError(f"series {s.key.label}: runs have different configurations in "
                            f"{', '.join(diffs)} (runs: {paths}); analyse them separately")
    return sorted(groups.values(), key=lambda s: (s.key.particle, s.key.engine, s.key.mode,
                                                  s.key.batch_showers, s.key.config_hash, s.key.threads,
                                                  s.key.variant, s.key.site, s.key.hardware))


def load_bench(path: Path) -> BenchFile:
    """Read one ``allreduce-bench/1`` file; anything malformed is a ``UserError`` naming it."""
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, ValueError) as exc:
        raise UserError(f"{path}: unreadable all-reduce benchmark file ({exc})") from None
    if not isinstance(data, dict) or data.get("schema") != BENCH_SCHEMA:
        got = data.get("schema") if isinstance(data, dict) else None
        raise UserError(f"{path}: schema {got!r} is not supported (this version reads {BENCH_SCHEMA!r})")
    try:
        rows = sorted(data["results"], key=lambda r: int(r["bytes"]))
        return BenchFile(
            path=Path(path), engine=str(data["engine"]), world_size=int(data["world_size"]),
            nodes=int(data.get("nodes", 1)), ranks_per_node=int(data.get("ranks_per_node", data["world_size"])),
            bytes=tuple(int(r["bytes"]) for r in rows),
            time_s_median=tuple(float(r["time_s_median"]) for r in rows),
            time_s_p10=tuple(float(r.get("time_s_p10", r["time_s_median"])) for r in rows),
            time_s_p90=tuple(float(r.get("time_s_p90", r["time_s_median"])) for r in rows))
    except (KeyError, TypeError, ValueError) as exc:
        raise UserError(f"{path}: malformed all-reduce benchmark file (missing or bad {exc})") from None
