"""Layouts of a node: the same cores spent as ranks x threads, on one GAN or on many.

A layout is R ranks per node x T threads per rank (C = R x T cores per node), training one GAN
(a single rank, or data parallel over the ranks) or an ensemble (one GAN per member of g ranks).
Everything is read from run directories (``launch.study`` with ``threads_per_rank`` makes them).

Per run:
- threads per rank: config ``train.threads``, else run.json ``hardware.cores_per_rank`` (what
  scaling.run gives a rank whose threads are not pinned); unknown otherwise (no comparison).
- campaign showers/s: per used epoch (not warm-up, not interrupted), the showers processed by
  all ranks / the epoch's time (its slowest rank: a campaign waits for its last GAN); median
  over used epochs. A single-rank or data-parallel layout trains one GAN at a time, so its
  campaign rate is its one-GAN rate.
- one-GAN showers/s: single rank or data parallel, the same number; an ensemble, per member and
  used epoch the showers of its ranks / its slowest rank's time, median over epochs, and the
  slowest member's (members share the node; the campaign ends with the slowest).

Pooled (``layout_table``): the runs of one layout (same comparison, nodes, cores per node,
engine, mode, ranks per node, threads per rank, group size), i.e. its repeats: median of the
per-run rates, min..max beside it.

Compared: only layouts that train the same GAN, i.e. same particle, workload (config hash) and
batch per GAN (the global batch of a strong or weak run, per-rank batch x group size of an
ensemble member), on the same number of nodes with the same cores per node. Best for one GAN:
the highest one-GAN showers/s; best for a campaign: the highest campaign showers/s (ties: the
first in table order). The candidate layouts of C cores, R x C/R for every R dividing C as one
GAN, and for R >= 2 as an ensemble of one-rank members, that no run measured read
"not measured".
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from analysis.campaign.campaign import NOT_MEASURED, group_size, is_ensemble
from analysis.epochs import epoch_table, used_epochs
from analysis.load import configured_threads, series_key
from analysis.numbers import count, rate, significant
from analysis.report import Document
from analysis.summary import Column
from common.rundir import Run

CSV_NAME = "layouts.csv"
SINGLE, DATA_PARALLEL, ENSEMBLE = "single rank", "data parallel", "ensemble"
KIND_ORDER = (SINGLE, DATA_PARALLEL, ENSEMBLE)

LAYOUT_COLUMNS: tuple[Column, ...] = (
    Column("comparison", "text", "the GAN every layout of the comparison trains: particle, batch per GAN, config hash"),
    Column("particle", "text", "run.json particle"),
    Column("gan_batch_showers", "showers", "batch of one GAN: global batch (strong, weak), per-rank batch x group size (ensemble)"),
    Column("config_hash", "text", "run.json config_hash"),
    Column("nodes_count", "nodes", "run.json nodes"),
    Column("cores_per_node_count", "cores", "ranks per node x threads per rank"),
    Column("layout", "text", "ranks x threads, and how the GANs use them"),
    Column("kind", "text", "single rank, data parallel (one GAN over the ranks) or ensemble (one GAN per member)"),
    Column("engine", "text", "run.json engine ('-' when not measured)"),
    Column("mode", "text", "run.json mode ('-' when not measured)"),
    Column("ranks_per_node_count", "ranks", "run.json ranks_per_node"),
    Column("threads_per_rank_count", "threads", "config train.threads, else run.json hardware.cores_per_rank"),
    Column("group_size_ranks", "ranks", "ranks per GAN of an ensemble (0: not an ensemble)"),
    Column("gans_count", "GANs", "GANs trained side by side (ensemble members; 1 otherwise)"),
    Column("runs_count", "runs", "run directories pooled (repeats); 0: not measured"),
    Column("run_ids", "text", "run.json run_id of each pooled run"),
    Column("one_gan_showers_per_s", "showers/s", "median over runs of one GAN's showers/s (ensemble: the slowest member's)"),
    Column("one_gan_min_showers_per_s", "showers/s", "lowest of the same per-run values"),
    Column("one_gan_max_showers_per_s", "showers/s", "highest of the same per-run values"),
    Column("campaign_showers_per_s", "showers/s", "median over runs of all GANs' showers/s together"),
    Column("campaign_min_showers_per_s", "showers/s", "lowest of the same per-run values"),
    Column("campaign_max_showers_per_s", "showers/s", "highest of the same per-run values"),
    Column("best_one_gan", "bool", "the highest one-GAN showers/s of its comparison, nodes and cores per node"),
    Column("best_campaign", "bool", "the highest campaign showers/s of its comparison, nodes and cores per node"),
    Column("notes", "text", "caveats"),
)
LAYOUT_COLUMN_NAMES = tuple(c.name for c in LAYOUT_COLUMNS)
_POOL_KEY = ["comparison", "particle", "gan_batch_showers", "config_hash", "nodes_count", "cores_per_node_count",
             "engine", "mode", "ranks_per_node_count", "threads_per_rank_count", "group_size_ranks", "gans_count",
             "kind", "layout"]
_CHOICE_KEY = ["comparison", "nodes_count", "cores_per_node_count"]


@dataclass(frozen=True)
class BestLayout:
    """The best measured layouts of one comparison on ``nodes`` nodes of ``cores`` cores."""
    comparison: str
    nodes: int
    cores: int
    one_gan: dict          # the pooled row (LAYOUT_COLUMN_NAMES)
    campaign: dict
    not_measured: tuple[str, ...]   # candidate layouts no run measured


@dataclass
class LayoutResult:
    table: pd.DataFrame               # LAYOUT_COLUMN_NAMES, measured and not-measured rows
    best: list[BestLayout]            # comparisons with two or more layouts measured


def _plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


def describe(ranks: int, threads: int, kind: str, gans: int = 1, group: int = 1) -> str:
    """'1 rank x 2 threads', '2 ranks x 1 thread, data parallel', '2 members x 1 thread, ensemble'."""
    t = _plural(threads, "thread")
    if kind == ENSEMBLE:
        members = _plural(gans, "member")
        return f"{members} x {t}, ensemble" if group == 1 else f"{members} of {_plural(group, 'rank')} x {t}, ensemble"
    return f"{_plural(ranks, 'rank')} x {t}" + (", data parallel" if kind == DATA_PARALLEL else "")


def threads_per_rank(run: Run) -> int:
    """Threads per rank of the run (0 when unknown)."""
    pinned = configured_threads(run)
    if pinned:
        return pinned
    hw = run.meta.get("hardware")
    cores = hw.get("cores_per_rank") if isinstance(hw, dict) else None
    return cores if isinstance(cores, int) and not isinstance(cores, bool) and cores > 0 else 0


def _members(run: Run) -> int:
    m = run.meta.get("members")
    if isinstance(m, int) and not isinstance(m, bool) and m >= 1:
        return m
    return max(1, int(run.meta["world_size"]) // max(1, group_size(run)))


def campaign_rate(run: Run) -> float:
    """Median over used epochs of all ranks' showers / the epoch time (showers/s)."""
    used = used_epochs(epoch_table(run))
    if not len(used):
        return math.nan
    return float(np.median(used["showers_count"].to_numpy(dtype=float) / used["time_s"].to_numpy(dtype=float)))


def slowest_member_rate(run: Run) -> float:
    """An ensemble's slowest member: per member, the median over its used epochs of its ranks'
    showers / its slowest rank's time (showers/s)."""
    df = run.epochs.copy()
    if "member" not in df.columns:
        df["member"] = 0
    per = df.groupby(["member", "epoch", "attempt"]).agg(
        showers=("showers", "sum"), time_s=("time_s", "max"), warmup=("warmup", "any"),
        interrupted=("interrupted", "any")).reset_index()
    per = per[~per["warmup"].astype(bool) & ~per["interrupted"].astype(bool) & (per["time_s"] > 0)]
    if not len(per):
        return math.nan
    per = per.assign(rate=per["showers"].astype(float) / per["time_s"].astype(float))
    return float(per.groupby("member")["rate"].median().min())


def _run_row(run: Run) -> dict:
    meta = run.meta
    key = series_key(run)
    ensemble = is_ensemble(run)
    g = group_size(run) if ensemble else 0
    gans = _members(run) if ensemble else 1
    world, rpn, threads = int(meta["world_size"]), int(meta["ranks_per_node"]), threads_per_rank(run)
    kind = ENSEMBLE if gans > 1 else (SINGLE if world == 1 else DATA_PARALLEL)
    batch = int(meta["per_rank_batch"]) * max(1, g) if ensemble else int(meta["global_batch"])
    campaign = campaign_rate(run)
    one = slowest_member_rate(run) if gans > 1 else campaign
    return {"comparison": f"{key.particle}, batch {batch} per GAN [{key.config_hash[:6]}]",
            "particle": key.particle, "gan_batch_showers": batch, "config_hash": key.config_hash,
            "nodes_count": int(meta["nodes"]), "cores_per_node_count": rpn * threads if threads else math.nan,
            "layout": describe(rpn, threads, kind, gans, max(1, g)) if threads else f"{_plural(rpn, 'rank')} x ? threads",
            "kind": kind, "engine": str(meta["engine"]), "mode": str(meta["mode"]),
            "ranks_per_node_count": rpn, "threads_per_rank_count": threads if threads else math.nan,
            "group_size_ranks": g, "gans_count": gans, "run_id": str(meta.get("run_id")),
            "one_gan": one, "campaign": campaign}


def _pool(rows: pd.DataFrame) -> pd.DataFrame:
    out = []
    for key, g in rows.groupby(_POOL_KEY, sort=False, dropna=False):
        row = dict(zip(_POOL_KEY, key))
        row["runs_count"] = int(len(g))
        row["run_ids"] = ",".join(sorted(g["run_id"]))
        for name in ("one_gan", "campaign"):
            v = g[name].to_numpy(dtype=float)
            v = v[np.isfinite(v)]
            row[f"{name}_showers_per_s"] = float(np.median(v)) if len(v) else math.nan
            row[f"{name}_min_showers_per_s"] = float(v.min()) if len(v) else math.nan
            row[f"{name}_max_showers_per_s"] = float(v.max()) if len(v) else math.nan
        row["notes"] = "threads per rank unknown: not compared" if not np.isfinite(row["cores_per_node_count"]) else ""
        out.append(row)
    return pd.DataFrame(out)


def _candidates(cores: int) -> list[tuple[int, int, str]]:
    """(ranks per node, threads per rank, kind) of the basic layouts of ``cores`` cores."""
    out = []
    for ranks in range(1, cores + 1):
        if cores % ranks == 0:
            out.append((ranks, cores // ranks, SINGLE if ranks == 1 else DATA_PARALLEL))
            if ranks > 1:
                out.append((ranks, cores // ranks, ENSEMBLE))
    return out


def _missing_rows(pooled: pd.DataFrame) -> list[dict]:
    rows = []
    known = pooled[pooled["cores_per_node_count"].notna()]
    for (comparison, nodes, cores), g in known.groupby(_CHOICE_KEY, sort=False):
        first = g.iloc[0]
        have = {(int(r.ranks_per_node_count), int(r.threads_per_rank_count), r.kind) for r in g.itertuples()}
        for ranks, threads, kind in _candidates(int(cores)):
            if (ranks, threads, kind) in have:
                continue
            gans = ranks if kind == ENSEMBLE else 1
            rows.append({"comparison": comparison, "particle": first["particle"],
                         "gan_batch_showers": first["gan_batch_showers"], "config_hash": first["config_hash"],
                         "nodes_count": nodes, "cores_per_node_count": cores,
                         "layout": describe(ranks, threads, kind, gans), "kind": kind, "engine": "-", "mode": "-",
                         "ranks_per_node_count": ranks, "threads_per_rank_count": threads,
                         "group_size_ranks": 1 if kind == ENSEMBLE else 0, "gans_count": gans, "runs_count": 0,
                         "run_ids": "", "notes": NOT_MEASURED})
    return rows


def _pick(g: pd.DataFrame, column: str) -> int | None:
    """Index label of the highest finite ``column`` in ``g`` (the first of ties), None if none."""
    finite = g[column].astype(float)
    finite = finite[np.isfinite(finite)]
    return None if not len(finite) else finite.idxmax()


def analyse_layouts(runs: Sequence[Run]) -> LayoutResult:
    """The layout table of ``runs`` and the best layout of every comparison with a choice."""
    if not runs:
        return LayoutResult(pd.DataFrame(columns=list(LAYOUT_COLUMN_NAMES)), [])
    pooled = _pool(pd.DataFrame([_run_row(r) for r in runs]))
    table = pd.concat([pooled, pd.DataFrame(_missing_rows(pooled))], ignore_index=True)
    table["kind_order"] = table["kind"].map(KIND_ORDER.index)
    table = table.sort_values(["comparison", "nodes_count", "cores_per_node_count", "kind_order",
                               "ranks_per_node_count", "threads_per_rank_count", "engine", "mode"],
                              kind="stable", na_position="last").drop(columns="kind_order").reset_index(drop=True)
    table["best_one_gan"] = False
    table["best_campaign"] = False
    best: list[BestLayout] = []
    measured = table[(table["runs_count"] > 0) & table["cores_per_node_count"].notna()]
    for (comparison, nodes, cores), g in measured.groupby(_CHOICE_KEY, sort=False):
        if len({(r.ranks_per_node_count, r.threads_per_rank_count, r.kind) for r in g.itertuples()}) < 2:
            continue       # one layout measured: nothing to choose between
        one, camp = _pick(g, "one_gan_showers_per_s"), _pick(g, "campaign_showers_per_s")
        if one is None or camp is None:
            continue
        table.loc[one, "best_one_gan"] = True
        table.loc[camp, "best_campaign"] = True
        same = ((table["comparison"] == comparison) & (table["nodes_count"] == nodes)
                & (table["cores_per_node_count"] == cores))
        missing = table[same & (table["runs_count"] == 0)]
        best.append(BestLayout(str(comparison), int(nodes), int(cores), table.loc[one].to_dict(),
                               table.loc[camp].to_dict(), tuple(missing["layout"])))
    table = table[list(LAYOUT_COLUMN_NAMES)]
    for name in ("cores_per_node_count", "threads_per_rank_count"):
        table[name] = table[name].astype("Int64")     # whole numbers; <NA> when threads are unknown
    return LayoutResult(table, best)


# ------------------------------------------------------------------------------------ report
def _rate_text(row: dict, prefix: str) -> str:
    runs = int(row["runs_count"])
    text = rate(row[f"{prefix}_showers_per_s"], "showers/s")
    if runs > 1:
        text += (f" ({runs} runs, {significant(row[f'{prefix}_min_showers_per_s'])}.."
                 f"{significant(row[f'{prefix}_max_showers_per_s'])})")
    return text


def _where(b: BestLayout) -> str:
    nodes = f" on {_plural(b.nodes, 'node')}" if b.nodes > 1 else ""
    return f"{b.cores} cores per node{nodes} ({b.comparison})"


def key_result_items(result: LayoutResult) -> list[str]:
    """One key-results line per comparison with a choice: its best layouts and what is missing."""
    items = []
    for b in result.best:
        missing = f"; not measured: {', '.join(b.not_measured)}" if b.not_measured else ""
        items.append(f"Best layout of {_where(b)}: for one GAN {b.one_gan['layout']} ({b.one_gan['engine']} "
                     f"{b.one_gan['mode']}), {_rate_text(b.one_gan, 'one_gan')}; for a campaign "
                     f"{b.campaign['layout']} ({b.campaign['engine']} {b.campaign['mode']}), "
                     f"{_rate_text(b.campaign, 'campaign')}{missing}.")
    return items


def layout_section(doc: Document, result: LayoutResult) -> None:
    """'Layouts of a node': the pooled table and the best layouts (only when there is a choice)."""
    if not result.best:
        return
    doc.h(1, "Layouts of a node")
    doc.p("The same cores of a node spent as ranks x threads per rank, training one GAN (a single rank, or data "
          "parallel over the ranks) or one GAN per member (an ensemble). Only layouts training the same GAN are "
          "compared: same particle, workload (config hash) and batch per GAN, same nodes and cores per node. One "
          "GAN: showers/s of one GAN (an ensemble: its slowest member). Campaign: all GANs' showers/s together (a "
          "single-rank or data-parallel layout trains one GAN at a time, so it is its one-GAN rate). Repeats are "
          f"pooled: median, min..max. A basic layout of the cores that no run measured reads \"{NOT_MEASURED}\".")
    shown = result.table[result.table["comparison"].isin({b.comparison for b in result.best})]
    doc.table(["comparison", "nodes", "cores per node", "layout", "engine", "mode", "runs", "one GAN showers/s",
               "campaign showers/s", "best for"],
              [[r.comparison, r.nodes_count, count(r.cores_per_node_count), r.layout, r.engine, r.mode, r.runs_count,
                _rate_text(r._asdict(), "one_gan") if r.runs_count else NOT_MEASURED,
                _rate_text(r._asdict(), "campaign") if r.runs_count else NOT_MEASURED,
                ", ".join(w for w, on in (("one GAN", r.best_one_gan), ("campaign", r.best_campaign)) if on) or "-"]
               for r in shown.itertuples()])
    doc.ul(key_result_items(result))
    doc.p(f"Columns of {CSV_NAME} (every run's layout, comparisons without a choice included):")
    doc.table(["column", "unit", "how it is obtained"], [[c.name, c.unit, c.how] for c in LAYOUT_COLUMNS])


def write_tables(result: LayoutResult, out: Path) -> list[Path]:
    """layouts.csv when there is a row; returns the files written."""
    if not len(result.table):
        return []
    path = Path(out) / CSV_NAME
    result.table.to_csv(path, index=False)
    return [path]
