"""Ensembles and campaigns: many GANs at once, measured like data parallelism.

BoloGAN is trained as many GANs (one per particle and |eta| slice), so the question for P ranks
is how to spend them on M GANs: one GAN at a time over all P ranks (data parallel), one GAN per
rank (an ensemble), or groups in between. Everything here is read from run directories.

Per ensemble run (``ensemble_table``; run.json mode "ensemble", epochs.parquet ``member``):

- member iteration time: per epoch, the slowest rank of the member's group (its ranks wait for
  each other in the all-reduce) divided by the epoch's iterations; median over the epochs that
  are neither warm-up nor interrupted. The run's time is its slowest member's: a campaign waits
  for its last GAN.
- ensemble efficiency = t(baseline) / t(slowest member at N), with the baseline the member
  iteration time of one member alone: the ensemble run of the same workload with a single
  member (N = group size, normally 1), else the data-parallel run at N = group size with the
  same workload and per-rank batch (it trains the same GAN the same way).
- GANs per node-hour = 3600 x members / (B x t(slowest member) x nodes), for a budget of B
  iterations per GAN; the same formula with one member for a data-parallel run.
- energy per trained GAN = B x (energy per epoch of the whole run, every node and GPU counted
  once, median over the same epochs) / (members x iterations per epoch). With a quality target,
  also the energy each member spent until it met it (eval.parquet, ``analysis.quality.time_to_target``).

Per campaign (``campaign_makespans``), MLPerf HPC's TTTa: last stop minus first start of its
GANs from run.json (wall clock: requeue waits and restarts included). A campaign is an ensemble
run (its members), or the run directories under one ``members/`` folder (a job array).

The plan (``campaign_plan``): for M GANs on P ranks, each group size g dividing P gives P/g
groups of g ranks, each training ceil(M / (P/g)) GANs one after the other with data parallelism
inside the group. Its makespan = ceil(M g / P) x B x t and its energy = M x B x e, with t and e
the iteration time and energy per GAN-iteration measured for exactly that layout: the
data-parallel run at N = P for g = P, the ensemble run at N = P with group size g otherwise.
A layout that was not measured is "not measured". Beside it, labelled as an estimate, the
layout priced with the data-parallel run at N = g measured alone (groups assumed not to slow
each other, which an ensemble run tests). Idle groups of a last, partial round cost no energy in
this sum (their idle power is not counted).
"""
from __future__ import annotations

import datetime as dt
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd

from analysis import energy_metrics as em
from analysis.epochs import epoch_table, used_epochs
from analysis.load import series_key
from analysis.summary import Column
from common.rundir import Run
from common.target import Target
from common.vocab import FINISHED_STATUSES, MEMBERS_SUBDIR, MODE_ENSEMBLE, MODE_STRONG, MODE_WEAK, MODES

BOLOGAN_ITERATIONS = 1_000_000
"""Iterations per GAN in BoloGAN's production training: the default budget per trained GAN."""
MEMBERS_DIR = MEMBERS_SUBDIR
"""A job-array campaign's run directories: <campaign>/members/<name>/ (launch.sweep writes them)."""

ENSEMBLE_COLUMNS: tuple[Column, ...] = (
    Column("series", "text", "engine, ensemble, particle, per-rank batch, group size, config hash"),
    Column("particle", "text", "run.json particle"),
    Column("run_id", "text", "run.json run_id"),
    Column("run_path", "text", "run directory"),
    Column("world_size_ranks", "ranks", "N, run.json world_size"),
    Column("nodes_count", "nodes", "run.json nodes"),
    Column("group_size_ranks", "ranks", "G: ranks per member (data parallel inside the group)"),
    Column("members_count", "GANs", "M = N / G, run.json members"),
    Column("epochs_used_count", "epochs", "epochs of the slowest member entering the medians (not warm-up, not interrupted)"),
    Column("member_iteration_median_s", "s", "median over members of each member's median iteration time"),
    Column("slowest_member_iteration_s", "s", "t(N): the slowest member's median iteration time"),
    Column("fastest_member_iteration_s", "s", "the fastest member's median iteration time"),
    Column("baseline", "text", "the run giving t(baseline): one member alone"),
    Column("baseline_iteration_s", "s", "t(baseline): median iteration time of one member alone"),
    Column("ensemble_efficiency_ratio", "1", "t(baseline) / t(N) (1 = members run as fast side by side as alone)"),
    Column("gan_iterations_count", "iterations", "B: the iteration budget of one trained GAN"),
    Column("gans_per_node_hour", "GANs/(node h)", "3600 x M / (B x t(N) x nodes)"),
    Column("energy_per_member_iteration_j", "J", "median over used epochs of the run's total energy per epoch / (M x iterations per epoch)"),
    Column("energy_per_gan_j", "J", "B x energy per member-iteration"),
    Column("energy_source", "text", "provenance of the energies"),
    Column("energy_to_target_median_j", "J", "with a target: median over members that met it of their energy to target"),
    Column("members_reached_count", "GANs", "with a target: members that met it"),
    Column("notes", "text", "caveats for this row"),
)
ENSEMBLE_COLUMN_NAMES = tuple(c.name for c in ENSEMBLE_COLUMNS)

MAKESPAN_COLUMNS: tuple[Column, ...] = (
    Column("campaign", "text", "ensemble run directory, or the folder holding a job array's members/"),
    Column("layout", "text", "ensemble (one run, many members) or array (one run directory per GAN)"),
    Column("gans_count", "GANs", "GANs of the campaign"),
    Column("completed_count", "GANs", "of those, GANs whose run completed"),
    Column("restarts_count", "restarts", "resumes after an interruption, summed over the runs"),
    Column("first_start", "time", "earliest run.json start_time"),
    Column("last_stop", "time", "latest run.json end_time"),
    Column("makespan_s", "s", "TTTa = last stop - first start (wall clock, waits in the queue included)"),
    Column("notes", "text", "caveats"),
)
MAKESPAN_COLUMN_NAMES = tuple(c.name for c in MAKESPAN_COLUMNS)

PLAN_COLUMNS: tuple[Column, ...] = (
    Column("particle", "text", "the GANs' particle"),
    Column("gans_count", "GANs", "M"),
    Column("ranks_count", "ranks", "P"),
    Column("group_size_ranks", "ranks", "g: ranks per GAN (data parallel inside a group); g divides P"),
    Column("groups_count", "groups", "P / g groups running side by side"),
    Column("gans_per_group_count", "GANs", "ceil(M / (P/g)): GANs each group trains one after the other"),
    Column("measured_by", "text", "the run whose rate prices this layout, or 'not measured'"),
    Column("iteration_time_s", "s", "t: iteration time of one GAN in this layout (slowest group)"),
    Column("makespan_s", "s", "ceil(M / (P/g)) x B x t"),
    Column("energy_j", "J", "M x B x energy per GAN-iteration of that run"),
    Column("energy_source", "text", "provenance of energy_j"),
    Column("estimate_makespan_s", "s", "estimate: the same with the data-parallel run at N = g measured alone (groups assumed independent)"),
    Column("estimate_energy_j", "J", "estimate: M x B x that run's energy per iteration"),
    Column("estimate_basis", "text", "the run behind the estimate"),
    Column("recommended", "bool", "the measured layout with the shortest makespan (ties: less energy)"),
    Column("notes", "text", "caveats"),
)
PLAN_COLUMN_NAMES = tuple(c.name for c in PLAN_COLUMNS)
NOT_MEASURED = "not measured"


@dataclass(frozen=True)
class CampaignRequest:
    """What the user asks of the campaign analysis (``python -m analysis --campaign-*``)."""
    gans: int | None = None             # M: GANs to plan for; None: no plan
    ranks: int | None = None            # P; None: the largest world size measured
    gan_iterations: int = BOLOGAN_ITERATIONS
    target: Target | None = None        # quality target for energy to target (optional)


@dataclass
class CampaignResult:
    request: CampaignRequest
    ensembles: pd.DataFrame            # ENSEMBLE_COLUMN_NAMES
    makespans: pd.DataFrame            # MAKESPAN_COLUMN_NAMES
    plan: pd.DataFrame                 # PLAN_COLUMN_NAMES (empty without a plan)
    ranks: int | None = None           # P actually planned for

    @property
    def available(self) -> bool:
        return bool(len(self.ensembles) or len(self.makespans) or len(self.plan))


# ------------------------------------------------------------------------------ ensemble runs
def is_ensemble(run: Run) -> bool:
    return run.meta.get("mode") == MODE_ENSEMBLE


def group_size(run: Run) -> int:
    """G of an ensemble run (1 when run.json does not say), 0 for a data-parallel run."""
    if not is_ensemble(run):
        return 0
    g = run.meta.get("group_size", 1)
    return int(g) if isinstance(g, int) and not isinstance(g, bool) and g >= 1 else 1


def member_iteration_times(run: Run) -> pd.DataFrame:
    """One row per (member, epoch, attempt): the member's slowest rank's time_s, iterations,
    warm-up and interrupted flags, and ``iteration_s`` = time / iterations."""
    df = run.epochs
    rows = []
    for (member, epoch, attempt), g in df.groupby(["member", "epoch", "attempt"], sort=True):
        iterations = int(g["iterations"].max())
        t = float(g["time_s"].max())
        rows.append({"member": int(member), "epoch": int(epoch), "attempt": int(attempt), "time_s": t,
                     "iterations": iterations, "warmup": bool(g["warmup"].any()),
                     "interrupted": bool(g["interrupted"].any()),
                     "iteration_s": t / iterations if iterations > 0 else math.nan})
    return pd.DataFrame(rows, columns=["member", "epoch", "attempt", "time_s", "iterations", "warmup",
                                       "interrupted", "iteration_s"])


def _used(frame: pd.DataFrame) -> pd.DataFrame:
    keep = ~frame["warmup"].astype(bool) & ~frame["interrupted"].astype(bool) & (frame["time_s"] > 0)
    return frame[keep]


def member_medians(run: Run) -> dict[int, tuple[float, int]]:
    """{member: (median iteration time over its used epochs in s, epochs used)}."""
    used = _used(member_iteration_times(run))
    return {int(m): (float(np.median(g["iteration_s"])), int(len(g))) for m, g in used.groupby("member")}


def energy_per_iteration(run: Run, members: int) -> tuple[float, str]:
    """(J, source): the run's energy per epoch (all nodes and GPUs, each node once; median over
    used epochs) per member-iteration."""
    table = used_epochs(epoch_table(run))
    per_iteration = (table["total_energy_j"] / (table["iterations_count"] * members)).to_numpy(dtype=float)
    value = em.nan_median(per_iteration)
    source = em.combine_sources(table["total_energy_source"]) if len(table) else em.UNAVAILABLE
    return (value if source != em.UNAVAILABLE else math.nan), source


def _members(run: Run) -> int:
    m = run.meta.get("members")
    if isinstance(m, int) and not isinstance(m, bool) and m >= 1:
        return m
    return max(1, int(run.meta["world_size"]) // max(1, group_size(run)))


def ensemble_label(run: Run) -> str:
    """'horovod ensemble photons, per-rank batch 128, group size 1 [abc123]'."""
    key = series_key(run)
    threads = f", {key.threads} thread{'s' if key.threads != 1 else ''} per rank" if key.threads else ""
    return (f"{key.engine} {MODE_ENSEMBLE} {key.particle}, per-rank batch {int(run.meta['per_rank_batch'])}, "
            f"group size {group_size(run)}{threads} [{key.config_hash[:6]}]")


def _same_workload(a: Run, b: Run) -> bool:
    ka, kb = series_key(a), series_key(b)
    return ((ka.engine, ka.particle, ka.config_hash, ka.threads) == (kb.engine, kb.particle, kb.config_hash, kb.threads)
            and int(a.meta["per_rank_batch"]) == int(b.meta["per_rank_batch"]))


def _baseline(run: Run, runs: Sequence[Run]) -> tuple[str, float]:
    """(description, iteration time) of one member of ``run`` alone; ('', NaN) when not measured."""
    g = group_size(run)
    solo = [r for r in runs if is_ensemble(r) and _same_workload(r, run) and group_size(r) == g and _members(r) == 1]
    kind = f"ensemble N={g}"
    if not solo:
        solo = [r for r in runs if r.meta.get("mode") in MODES and _same_workload(r, run)
                and int(r.meta["world_size"]) == g]
        kind = f"data parallel N={g}"
    times = [t for r in solo for t, _ in member_medians(r).values()]
    if not times:
        return "", math.nan
    ids = ",".join(sorted(str(r.meta.get("run_id")) for r in solo))
    # Repeats of the baseline are pooled by their median.
    return f"{kind} ({ids})", float(np.median(times))


def ensemble_table(runs: Sequence[Run], request: CampaignRequest = CampaignRequest()) -> pd.DataFrame:
    """One row per ensemble run (``ENSEMBLE_COLUMN_NAMES``)."""
    from analysis.quality.time_to_target import time_to_target_table

    budget = int(request.gan_iterations)
    rows = []
    for run in [r for r in runs if is_ensemble(r)]:
        m, g = _members(run), group_size(run)
        nodes = int(run.meta["nodes"])
        medians = member_medians(run)
        notes: list[str] = []
        times = [t for t, _ in medians.values()]
        slowest = max(times) if times else math.nan
        if len(medians) != m:
            notes.append(f"{len(medians)} of {m} members have a used epoch")
        base_kind, base = _baseline(run, runs)
        if not base_kind:
            notes.append(f"no run of one member alone (ensemble or data parallel at N={g}): no efficiency")
        e_iter, source = energy_per_iteration(run, m)
        row = {
            "series": ensemble_label(run), "particle": str(run.meta["particle"]), "run_id": str(run.meta.get("run_id")), "run_path": str(run.path),
            "world_size_ranks": int(run.meta["world_size"]), "nodes_count": nodes, "group_size_ranks": g,
            "members_count": m,
            "epochs_used_count": medians[max(medians, key=lambda k: medians[k][0])][1] if medians else 0,
            "member_iteration_median_s": float(np.median(times)) if times else math.nan,
            "slowest_member_iteration_s": slowest,
            "fastest_member_iteration_s": min(times) if times else math.nan,
            "baseline": base_kind or NOT_MEASURED, "baseline_iteration_s": base,
            "ensemble_efficiency_ratio": base / slowest if slowest > 0 else math.nan,
            "gan_iterations_count": budget,
            "gans_per_node_hour": gans_per_node_hour(m, slowest, nodes, budget),
            "energy_per_member_iteration_j": e_iter, "energy_per_gan_j": e_iter * budget,
            "energy_source": source, "energy_to_target_median_j": math.nan, "members_reached_count": math.nan,
        }
        if request.target is not None:
            tt = time_to_target_table([run], request.target)
            ok = tt[tt["reached"].astype(bool)]
            row["members_reached_count"] = int(len(ok))
            row["energy_to_target_median_j"] = em.nan_median(ok["energy_to_target_j"].to_numpy(dtype=float))
        row["notes"] = "; ".join(notes)
        rows.append(row)
    frame = pd.DataFrame(rows, columns=list(ENSEMBLE_COLUMN_NAMES))
    return frame.sort_values(["series", "world_size_ranks", "run_id"], ignore_index=True)


def gans_per_node_hour(members: int, iteration_s: float, nodes: int, budget_iterations: int) -> float:
    """3600 x members / (budget x iteration time x nodes): trained GANs per node-hour."""
    if not (iteration_s > 0) or nodes < 1 or budget_iterations < 1:
        return math.nan
    return 3600.0 * members / (budget_iterations * iteration_s * nodes)


# ------------------------------------------------------------------------------ makespan (TTTa)
def _time(value: Any) -> dt.datetime | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        t = dt.datetime.fromisoformat(value)
    except ValueError:
        return None
    return t if t.tzinfo else t.replace(tzinfo=dt.timezone.utc)


def _makespan_row(name: str, layout: str, runs: Sequence[Run], gans: int) -> dict[str, Any]:
    starts = [_time(r.meta.get("start_time")) for r in runs]
    stops = [_time(r.meta.get("end_time")) for r in runs]
    notes = []
    first = min((s for s in starts if s), default=None)
    last = max((s for s in stops if s), default=None)
    if any(s is None for s in stops):
        notes.append(f"{sum(s is None for s in stops)} run(s) without end_time (still running or killed): no makespan")
        last = None
    # An ensemble run completes all its members at once.
    per_run = gans if layout == MODE_ENSEMBLE else 1
    completed = per_run * sum(int(r.meta.get("status") in FINISHED_STATUSES) for r in runs)
    return {"campaign": name, "layout": layout, "gans_count": gans, "completed_count": completed,
            "restarts_count": sum(len(r.meta.get("restarts") or []) for r in runs),
            "first_start": first.isoformat() if first else "", "last_stop": last.isoformat() if last else "",
            "makespan_s": (last - first).total_seconds() if first and last else math.nan,
            "notes": "; ".join(notes)}


def campaign_makespans(runs: Sequence[Run]) -> pd.DataFrame:
    """One row per campaign (``MAKESPAN_COLUMN_NAMES``): each ensemble run, and each folder whose
    ``members/`` holds run directories (a job array; its members may be of any mode)."""
    rows = [_makespan_row(str(r.path), MODE_ENSEMBLE, [r], _members(r)) for r in runs if is_ensemble(r)]
    arrays: dict[Path, list[Run]] = {}
    for r in runs:
        if r.path.parent.name == MEMBERS_DIR and not is_ensemble(r):
            arrays.setdefault(r.path.parent.parent, []).append(r)
    for folder, members in sorted(arrays.items()):
        rows.append(_makespan_row(str(folder), "array", members, len(members)))
    return pd.DataFrame(rows, columns=list(MAKESPAN_COLUMN_NAMES))


# ------------------------------------------------------------------------------ the plan
@dataclass(frozen=True)
class Rate:
    """One measured way of training: iteration time of one GAN and its energy per iteration."""
    label: str
    particle: str
    world_size: int
    group_size: int                 # ranks per GAN
    iteration_s: float
    energy_per_iteration_j: float
    energy_source: str
    note: str = ""


def data_parallel_rates(summary: pd.DataFrame) -> list[Rate]:
    """A rate per summary row (data-parallel series): t = T(N) / iterations per epoch."""
    out = []
    for r in summary.itertuples():
        iters = float(r.iterations_per_epoch_count)
        if not (iters > 0 and math.isfinite(float(r.epoch_time_median_s))):
            continue
        note = ("" if r.mode == MODE_STRONG else
                f"{r.mode} scaling: the global batch is {int(r.global_batch_showers)} showers at N={r.world_size_ranks}")
        out.append(Rate(f"data parallel {r.series} N={r.world_size_ranks}", str(r.particle), int(r.world_size_ranks),
                        int(r.world_size_ranks), float(r.epoch_time_median_s) / iters,
                        float(r.total_energy_per_epoch_j) / iters, str(r.total_energy_source), note))
    return out


def ensemble_rates(ensembles: pd.DataFrame) -> list[Rate]:
    """A rate per ensemble run: its slowest member's iteration time, energy per member-iteration."""
    return [Rate(f"ensemble {e.run_id} (N={e.world_size_ranks}, {e.members_count} members)", str(e.particle),
                 int(e.world_size_ranks), int(e.group_size_ranks), float(e.slowest_member_iteration_s),
                 float(e.energy_per_member_iteration_j), str(e.energy_source))
            for e in ensembles.itertuples() if math.isfinite(float(e.slowest_member_iteration_s))]


def _fastest(rates: list[Rate], prefer_strong: bool = False) -> Rate | None:
    if not rates:
        return None
    if prefer_strong and any(not r.note for r in rates):
        rates = [r for r in rates if not r.note]   # strong scaling trains the same GAN as one rank
    return min(rates, key=lambda r: (r.iteration_s, r.label))


def divisors(p: int) -> list[int]:
    return [g for g in range(1, p + 1) if p % g == 0]


def campaign_plan(gans: int, ranks: int, budget_iterations: int, dp: Sequence[Rate],
                  ens: Sequence[Rate]) -> pd.DataFrame:
    """``PLAN_COLUMN_NAMES`` rows for every particle measured and every group size g dividing P."""
    if gans < 1 or ranks < 1 or budget_iterations < 1:
        raise ValueError("gans, ranks and budget_iterations must be >= 1")
    rows = []
    for particle in sorted({r.particle for r in [*dp, *ens]}):
        for g in divisors(ranks):
            groups = ranks // g
            rounds = math.ceil(gans / groups)
            solo = [r for r in dp if r.particle == particle and r.world_size == g]
            if groups == 1:
                measured = _fastest(solo, prefer_strong=True) or _fastest(
                    [r for r in ens if r.particle == particle and r.world_size == g and r.group_size == g])
            else:
                measured = _fastest([r for r in ens if r.particle == particle and r.world_size == ranks
                                     and r.group_size == g])
            alone = _fastest(solo, prefer_strong=True) if groups > 1 else None
            notes = []
            if measured is not None and measured.note:
                notes.append(measured.note)
            if rounds * groups > gans:
                notes.append(f"last round: {rounds * groups - gans} of {groups} groups idle")
            row = {"particle": particle, "gans_count": gans, "ranks_count": ranks, "group_size_ranks": g,
                   "groups_count": groups, "gans_per_group_count": rounds,
                   "measured_by": measured.label if measured else NOT_MEASURED,
                   "iteration_time_s": measured.iteration_s if measured else math.nan,
                   "makespan_s": rounds * budget_iterations * measured.iteration_s if measured else math.nan,
                   "energy_j": gans * budget_iterations * measured.energy_per_iteration_j if measured else math.nan,
                   "energy_source": measured.energy_source if measured else em.UNAVAILABLE,
                   "estimate_makespan_s": rounds * budget_iterations * alone.iteration_s if alone else math.nan,
                   "estimate_energy_j": gans * budget_iterations * alone.energy_per_iteration_j if alone else math.nan,
                   "estimate_basis": (f"{alone.label}, groups assumed independent" if alone else ""),
                   "recommended": False, "notes": "; ".join(notes)}
            rows.append(row)
    frame = pd.DataFrame(rows, columns=list(PLAN_COLUMN_NAMES))
    for _, g in frame.groupby("particle"):
        ok = g[g["makespan_s"].map(lambda v: math.isfinite(float(v)))]
        if len(ok):
            energy_key = ok["energy_j"].astype(float).fillna(math.inf)
            best = ok.assign(_e=energy_key).sort_values(["makespan_s", "_e", "group_size_ranks"]).index[0]
            frame.at[best, "recommended"] = True
    return frame


def analyse_campaigns(runs: Sequence[Run], summary: pd.DataFrame,
                      request: CampaignRequest = CampaignRequest()) -> CampaignResult:
    """Ensemble table, makespans and (when ``request.gans`` is set) the plan."""
    ensembles = ensemble_table(runs, request)
    makespans = campaign_makespans(runs)
    plan = pd.DataFrame(columns=list(PLAN_COLUMN_NAMES))
    ranks = request.ranks
    if request.gans is not None:
        if ranks is None:
            ranks = max((int(r.meta["world_size"]) for r in runs), default=1)
        plan = campaign_plan(request.gans, ranks, request.gan_iterations, data_parallel_rates(summary),
                             ensemble_rates(ensembles))
    return CampaignResult(request, ensembles, makespans, plan, ranks)


def weak_efficiency_at(summary: pd.DataFrame, particle: str, n: int) -> float:
    """The best weak data-parallel efficiency at N measured for ``particle`` (NaN when none)."""
    if not len(summary):
        return math.nan
    hit = summary[(summary["mode"] == MODE_WEAK) & (summary["particle"] == particle)
                  & (summary["world_size_ranks"] == n)]
    values = hit["weak_efficiency_ratio"].astype(float).dropna()
    return float(values.max()) if len(values) else math.nan
