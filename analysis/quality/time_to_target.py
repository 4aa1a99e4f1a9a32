"""Time and energy to a quality target: the study's answer to "how soon is the GAN trained?".

Per run (``time_to_target_table``), from eval.parquet: the first evaluation that meets the target
(``common.target.Target``), and the iterations, showers, training time (epoch clocks only) and
training energy at which the metric crossed it. A run that never met it keeps its row, with
``reached`` False and its best value.

The crossing is interpolated between the two evaluations that bracket it: the last one that
missed the target (value v0 at x0) and the first one that met it (v1 at x1), with the same
fraction f for iterations, showers, time and energy, so they stay consistent with each other:

    f = (g(v0) - g(target)) / (g(v0) - g(v1)),   x = x0 + f (x1 - x0),   g = log

Interpolation is in the log of the metric: chi2/NDF, FPD and W1 fall by
factors, not by steps, between checkpoints (a run going from chi2/NDF 50 to 5 spends as long
from 50 to 16 as from 16 to 5), and a straight line in the metric would place every crossing
too early. When a value is 0 the log is undefined and g is the identity (linear); when the
missing side is not finite (chi2/NDF is +inf while some momentum has no shower in range) there
is nothing to interpolate from and the values at the first meeting evaluation are reported (an
upper bound; ``interpolated`` False, said in ``notes``). A target met at the very first
evaluation is reported the same way.

Per series and N (``time_to_target_summary``): repeats are pooled (median, min and max over
the runs that reached the target; MLPerf asks for several runs per point because convergence
is noisy). Time-to-solution speedup S = N0 T(N0) / T(N) and efficiency S / N against the
smallest N that reached the target (N0 = 1 normally), for strong and weak series alike: the job
is the same trained GAN whatever the batch. Its spread is the lowest and highest speedup over
every pairing of a run at N0 with a run at N (with two repeats each: four pairs). Beside them
the throughput speedup and efficiency of the summary table (the speedup with its bootstrap
interval), and the throughput-only expectation: the time and energy to target if every N
needed the same number of showers as N0, i.e. T(N0) x (showers/s at N0) / (showers/s at N) and
E(N0) x (J per shower at N) / (J per shower at N0). The ratio of the two is
``showers_to_target_ratio``: how many more showers a larger global batch needs.

Ensembles (run.json mode "ensemble"): every member is one GAN with its own eval.parquet rows
(``member``), so it gets its own row per run, and the members of a point are pooled like repeats
(each member is one trained GAN; its time, showers and energy to target are its own, see
``scaling.evaluation`` for how node energy is split between members). The job at N is then N / G
GANs, not one, so the speedup counts GANs trained per unit time: S = N T(N0) / T(N) and the
efficiency S / N = T(N0) / T(N) (1 = every member reaches the target as soon as a member at N0),
and the throughput-only expectation uses the showers per second of one member (the run's over
its members): T(N0) x (showers/s at N0 / N0) / (showers/s at N / N).
"""
from __future__ import annotations

import math
from typing import Any, Iterable, Sequence

import numpy as np
import pandas as pd

from analysis import energy_metrics as em
from analysis.load import series_key
from analysis.summary import Column
from common.rundir import Run
from common.target import Target, parse_target
from common.vocab import MODE_ENSEMBLE, MODE_STRONG
from analysis.numbers import is_finite

INTERPOLATION = "log"
"""How crossings are interpolated: in the log of the metric (see the module docstring)."""

RUN_COLUMNS: tuple[Column, ...] = (
    Column("series", "text", "engine, mode, particle, fixed batch, config hash (as in the summary table)"),
    Column("mode", "text", "run.json mode"),
    Column("world_size_ranks", "ranks", "N, run.json world_size"),
    Column("nodes_count", "nodes", "run.json nodes"),
    Column("run_id", "text", "run.json run_id"),
    Column("run_path", "text", "run directory (tells repeats apart)"),
    Column("status", "text", "run.json status"),
    Column("member", "index", "eval.parquet member (0 unless an ensemble)"),
    Column("target", "text", "the quality target, METRIC<=VALUE"),
    Column("evaluations_count", "evaluations", "evaluations in eval.parquet (one per iteration)"),
    Column("reached", "bool", "some evaluation met the target"),
    Column("interpolated", "bool", "the values below are interpolated between two evaluations (else: at the first meeting one)"),
    Column("iteration_before", "iterations", "last evaluation before the crossing (missed the target)"),
    Column("value_before", "metric", "its metric value"),
    Column("iteration_at", "iterations", "first evaluation that met the target"),
    Column("value_at", "metric", "its metric value"),
    Column("iterations_to_target", "iterations", "iterations at the crossing"),
    Column("showers_to_target_count", "showers", "showers processed (all ranks) at the crossing"),
    Column("time_to_target_s", "s", "training wall time at the crossing, epoch clocks only (evaluation excluded)"),
    Column("energy_to_target_j", "J", "training energy at the crossing (eval.parquet energy_j)"),
    Column("energy_source", "text", "provenance of that energy"),
    Column("eval_time_to_target_s", "s", "time spent in the evaluations up to the first meeting one"),
    Column("best_value", "metric", "best metric value of all evaluations"),
    Column("best_iteration", "iterations", "iteration of the best value"),
    Column("notes", "text", "caveats for this run"),
)
RUN_COLUMN_NAMES = tuple(c.name for c in RUN_COLUMNS)

SUMMARY_COLUMNS: tuple[Column, ...] = (
    Column("series", "text", "as in the summary table"),
    Column("mode", "text", "strong, weak or ensemble"),
    Column("world_size_ranks", "ranks", "N"),
    Column("nodes_count", "nodes", "run.json nodes"),
    Column("target", "text", "the quality target"),
    Column("runs_count", "runs", "runs (repeats) pooled in this row; for an ensemble: GANs (members of all repeats)"),
    Column("reached_count", "runs", "of those, the runs that met the target"),
    Column("interpolated_count", "runs", "of those, the runs whose crossing is interpolated"),
    Column("iterations_to_target_median", "iterations", "median over the runs that met the target"),
    Column("showers_to_target_median_count", "showers", "median over the runs that met the target"),
    Column("time_to_target_median_s", "s", "T(N): median time to target over the runs that met it"),
    Column("time_to_target_min_s", "s", "fastest of those runs"),
    Column("time_to_target_max_s", "s", "slowest of those runs"),
    Column("energy_to_target_median_j", "J", "E(N): median energy to target over the runs that met it"),
    Column("energy_to_target_min_j", "J", "least of those runs"),
    Column("energy_to_target_max_j", "J", "most of those runs"),
    Column("energy_source", "text", "provenance of the pooled energies"),
    Column("best_value", "metric", "best metric value over all runs of the row (what a row that never met the target got to)"),
    Column("baseline_world_size_ranks", "ranks", "N0: smallest N of the series whose runs met the target"),
    Column("tts_speedup_ratio", "1", "time-to-solution speedup N0 T(N0) / T(N) (ensemble: GANs per unit time, N T(N0) / T(N))"),
    Column("tts_speedup_min_ratio", "1", "lowest time-to-solution speedup over every pair of a run at N0 and a run at N "
           "that met the target (the spread of tts_speedup_ratio over the repeats)"),
    Column("tts_speedup_max_ratio", "1", "highest time-to-solution speedup over those pairs"),
    Column("tts_efficiency_ratio", "1", "time-to-solution efficiency: speedup / N"),
    Column("showers_to_target_ratio", "1", "showers to target at N / at N0 (1 = a larger batch needs no more showers)"),
    Column("energy_to_target_ratio", "1", "E(N) / E(N0)"),
    Column("throughput_efficiency_ratio", "1", "summary table: strong (S/N) or weak (T(N0)/T(N)) efficiency per epoch"),
    Column("throughput_speedup_ratio", "1", "summary table: speedup per epoch (strong S, weak scaled speedup N T(N0)/T(N))"),
    Column("throughput_speedup_ci_low_ratio", "1", "summary table: its bootstrap interval, low end"),
    Column("throughput_speedup_ci_high_ratio", "1", "summary table: its bootstrap interval, high end"),
    Column("expected_time_to_target_s", "s", "throughput-only expectation: T(N0) x showers/s at N0 / showers/s at N (ensemble: per member)"),
    Column("expected_energy_to_target_j", "J", "throughput-only expectation: E(N0) x J per shower at N / at N0"),
    Column("notes", "text", "caveats for this row"),
)
SUMMARY_COLUMN_NAMES = tuple(c.name for c in SUMMARY_COLUMNS)


def _known(x: Any) -> float:
    """A count or measure as float; the 'unknown' markers of eval.parquet (-1, NaN) as NaN."""
    v = float(x)
    return v if math.isfinite(v) and v >= 0 else math.nan


def crossing_fraction(v_before: float, v_at: float, target: float) -> tuple[float, str]:
    """(f, how): where between two evaluations the metric reached ``target``, 0 < f <= 1.

    ``how`` is "log" or "linear" (a value is 0), or "none" with f = 1 when ``v_before`` is not
    finite (nothing to interpolate from). ``v_before`` missed the target and ``v_at`` met it.
    """
    if not (is_finite(v_before) and is_finite(v_at)):
        return 1.0, "none"
    if v_before > 0 and v_at > 0 and target > 0:
        g0, g1, gt, how = math.log(v_before), math.log(v_at), math.log(target), "log"
    else:
        g0, g1, gt, how = v_before, v_at, target, "linear"
    if g0 == g1:
        return 1.0, how
    return min(1.0, max(0.0, (g0 - gt) / (g0 - g1))), how


def _lerp(x0: float, x1: float, f: float) -> float:
    return x0 + f * (x1 - x0)


def _evaluations(run: Run, member: int) -> pd.DataFrame:
    e = run.eval[run.eval["member"] == member]
    # One row per iteration, the last written winning (a resumed run may have evaluated one twice).
    return e.drop_duplicates("iteration", keep="last").sort_values("iteration").reset_index(drop=True)


def _run_identity(run: Run, target: Target) -> dict[str, Any]:
    meta = run.meta
    return {"series": series_key(run).label, "mode": str(meta["mode"]),
            "world_size_ranks": int(meta["world_size"]), "nodes_count": int(meta["nodes"]),
            "run_id": str(meta.get("run_id")), "run_path": str(run.path), "status": str(meta.get("status")),
            "target": target.text}


def _empty_result(row: dict[str, Any]) -> dict[str, Any]:
    row.update({"reached": False, "interpolated": False, "iteration_before": math.nan, "value_before": math.nan,
                "iteration_at": math.nan, "value_at": math.nan, "iterations_to_target": math.nan,
                "showers_to_target_count": math.nan, "time_to_target_s": math.nan,
                "energy_to_target_j": math.nan, "energy_source": em.UNAVAILABLE,
                "eval_time_to_target_s": math.nan, "best_value": math.nan, "best_iteration": math.nan})
    return row


def run_to_target(evals: pd.DataFrame, target: Target, row: dict[str, Any] | None = None) -> dict[str, Any]:
    """One run's (one member's) row of ``RUN_COLUMNS`` from its evaluations, sorted by iteration."""
    row = _empty_result(dict(row or {}))
    notes: list[str] = []
    row["evaluations_count"] = int(len(evals))
    if not len(evals):
        row["notes"] = "no evaluation in eval.parquet: not reached"
        return row
    values = evals[target.metric].astype(float).to_numpy()
    best = target.best(values)
    row["best_value"] = best
    if not math.isnan(best):
        # the best value's last iteration, as bologan's best-iteration rule breaks ties
        row["best_iteration"] = int(evals["iteration"].to_numpy()[np.flatnonzero(values == best)[-1]])
    hits = [i for i, v in enumerate(values) if target.met(v)]
    if not hits:
        notes.append(f"not reached: best {target.metric} {best:.4g}"
                     + (f" at iteration {row['best_iteration']}" if is_finite(row["best_iteration"]) else ""))
        row["notes"] = "; ".join(notes)
        return row
    k = hits[0]
    at = evals.iloc[k]
    row.update({"reached": True, "iteration_at": int(at["iteration"]), "value_at": float(at[target.metric]),
                "energy_source": str(at["energy_source"])})
    eval_times = evals["eval_time_s"].astype(float).to_numpy()[:k + 1]
    row["eval_time_to_target_s"] = float(eval_times.sum()) if np.isfinite(eval_times).all() else math.nan
    if k == 0:
        f, how = 1.0, "none"
        notes.append("met at the first evaluation: values at it (an upper bound)")
        before = at
    else:
        before = evals.iloc[k - 1]
        row.update({"iteration_before": int(before["iteration"]), "value_before": float(before[target.metric])})
        f, how = crossing_fraction(row["value_before"], row["value_at"], target.value)
        if how == "none":
            notes.append(f"{target.metric} at iteration {row['iteration_before']} is not finite: values at "
                         f"iteration {row['iteration_at']} (an upper bound)")
        else:
            notes.append(f"interpolated ({how} in {target.metric}) between iterations "
                         f"{row['iteration_before']} and {row['iteration_at']}")
    row["interpolated"] = how != "none"
    for out, col in (("iterations_to_target", "iteration"), ("showers_to_target_count", "showers"),
                     ("time_to_target_s", "train_time_s"), ("energy_to_target_j", "energy_j")):
        row[out] = _lerp(_known(before[col]), _known(at[col]), f) if how != "none" else _known(at[col])
    if not is_finite(row["time_to_target_s"]):
        notes.append("no training time in eval.parquet (an offline evaluation): time to target unknown")
    if str(at["energy_source"]) != str(before["energy_source"]):
        row["energy_source"] = em.combine_sources([str(at["energy_source"]), str(before["energy_source"])])
    row["notes"] = "; ".join(notes)
    return row


def time_to_target_table(runs: Iterable[Run], target: Target) -> pd.DataFrame:
    """One row per run (and ensemble member) in ``RUN_COLUMN_NAMES`` order; runs without
    eval.parquet or that never met the target are kept (``reached`` False)."""
    rows = []
    for run in runs:
        ident = _run_identity(run, target)
        if run.eval is None or not len(run.eval):
            rows.append(run_to_target(pd.DataFrame(), target, {**ident, "member": 0}))
            continue
        for member in sorted(int(m) for m in run.eval["member"].unique()):
            rows.append(run_to_target(_evaluations(run, member), target, {**ident, "member": member}))
    frame = pd.DataFrame(rows, columns=list(RUN_COLUMN_NAMES))
    return frame.sort_values(["series", "world_size_ranks", "nodes_count", "run_id", "member"],
                             kind="stable", ignore_index=True)


def _median(values: Sequence[float]) -> float:
    return em.nan_median(np.asarray(values, dtype=float))


def _stat(values: pd.Series, fn) -> float:
    v = values.astype(float).to_numpy()
    v = v[np.isfinite(v)]
    return float(fn(v)) if v.size else math.nan


def _throughput(summary: pd.DataFrame | None, series: str, n: int, nodes: int) -> dict[str, float]:
    """The summary table's throughput numbers for (series, N, nodes); NaN when absent."""
    out = {"showers_per_s": math.nan, "energy_per_1000_showers_j": math.nan, "efficiency": math.nan,
           "speedup": math.nan, "speedup_low": math.nan, "speedup_high": math.nan}
    if summary is None or not len(summary):
        return out
    hit = summary[(summary["series"] == series) & (summary["world_size_ranks"] == n) & (summary["nodes_count"] == nodes)]
    if not len(hit):
        return out
    r = hit.iloc[0]
    eff = r["strong_efficiency_ratio"] if r["mode"] == MODE_STRONG else r["weak_efficiency_ratio"]
    return {"showers_per_s": float(r["showers_per_s"]), "efficiency": float(eff),
            "energy_per_1000_showers_j": float(r["energy_per_1000_showers_j"]),
            "speedup": float(r["speedup_ratio"]), "speedup_low": float(r["speedup_ci_low_ratio"]),
            "speedup_high": float(r["speedup_ci_high_ratio"])}


def time_to_target_summary(per_run: pd.DataFrame, summary: pd.DataFrame | None = None) -> pd.DataFrame:
    """One row per (series, N, nodes) in ``SUMMARY_COLUMN_NAMES`` order, from
    ``time_to_target_table``; ``summary`` is ``analysis.summary.summary_table``'s (for the
    throughput efficiency and the throughput-only expectation; None leaves those NaN)."""
    rows = []
    for (series, n, nodes), g in per_run.groupby(["series", "world_size_ranks", "nodes_count"], sort=True):
        ok = g[g["reached"].astype(bool)]
        notes = []
        missed = len(g) - len(ok)
        if missed:
            notes.append(f"{missed} of {len(g)} runs did not reach {g['target'].iloc[0]}")
        if len(ok) and len(ok) > ok["interpolated"].astype(bool).sum():
            notes.append("some values at the first meeting evaluation (upper bound)")
        lower_better = parse_target(str(g["target"].iloc[0])).lower_is_better
        bests = g["best_value"].astype(float)
        rows.append({
            "series": series, "mode": g["mode"].iloc[0], "world_size_ranks": int(n), "nodes_count": int(nodes),
            "target": g["target"].iloc[0], "runs_count": int(len(g)), "reached_count": int(len(ok)),
            "interpolated_count": int(ok["interpolated"].astype(bool).sum()),
            "iterations_to_target_median": _median(ok["iterations_to_target"]),
            "showers_to_target_median_count": _median(ok["showers_to_target_count"]),
            "time_to_target_median_s": _median(ok["time_to_target_s"]),
            "time_to_target_min_s": _stat(ok["time_to_target_s"], np.min),
            "time_to_target_max_s": _stat(ok["time_to_target_s"], np.max),
            "energy_to_target_median_j": _median(ok["energy_to_target_j"]),
            "energy_to_target_min_j": _stat(ok["energy_to_target_j"], np.min),
            "energy_to_target_max_j": _stat(ok["energy_to_target_j"], np.max),
            "energy_source": em.combine_sources(ok["energy_source"]) if len(ok) else em.UNAVAILABLE,
            "best_value": _stat(bests, np.min if lower_better else np.max),
            "_times": [t for t in ok["time_to_target_s"].astype(float) if math.isfinite(t) and t > 0],
            "_notes": notes,
        })
    frame = pd.DataFrame(rows)
    if not len(frame):
        return pd.DataFrame(columns=list(SUMMARY_COLUMN_NAMES))
    out = []
    for series, g in frame.groupby("series", sort=True):
        g = g.sort_values(["world_size_ranks", "nodes_count"]).copy()
        timed = g[g["time_to_target_median_s"].map(is_finite)]
        base = timed.iloc[0] if len(timed) else None
        n0 = int(base["world_size_ranks"]) if base is not None else math.nan
        if base is not None and n0 != 1:
            for notes in g["_notes"]:
                notes.append(f"baseline N0 = {n0} (no single-rank run met the target)")
        tp0 = _throughput(summary, series, n0, int(base["nodes_count"])) if base is not None else None
        for i, r in g.iterrows():
            n = int(r["world_size_ranks"])
            tp = _throughput(summary, series, n, int(r["nodes_count"]))
            g.at[i, "throughput_efficiency_ratio"] = tp["efficiency"]
            g.at[i, "throughput_speedup_ratio"] = tp["speedup"]
            g.at[i, "throughput_speedup_ci_low_ratio"] = tp["speedup_low"]
            g.at[i, "throughput_speedup_ci_high_ratio"] = tp["speedup_high"]
            if base is None:
                for col in ("baseline_world_size_ranks", "tts_speedup_ratio", "tts_speedup_min_ratio",
                            "tts_speedup_max_ratio", "tts_efficiency_ratio",
                            "showers_to_target_ratio", "energy_to_target_ratio", "expected_time_to_target_s",
                            "expected_energy_to_target_j"):
                    g.at[i, col] = math.nan
                continue
            t0, t = float(base["time_to_target_median_s"]), float(r["time_to_target_median_s"])
            # An ensemble at N trains N / G GANs at once: its speedup counts GANs (module docstring).
            ensemble = str(r["mode"]) == MODE_ENSEMBLE
            speedup = (n if ensemble else n0) * t0 / t if is_finite(t) and t > 0 else math.nan
            g.at[i, "baseline_world_size_ranks"] = n0
            g.at[i, "tts_speedup_ratio"] = speedup
            g.at[i, "tts_efficiency_ratio"] = speedup / n
            # The spread over the repeats: every pairing of a run at N0 with a run at N.
            pairs = [(n if ensemble else n0) * a / b for a in base["_times"] for b in r["_times"]]
            g.at[i, "tts_speedup_min_ratio"] = min(pairs) if pairs else math.nan
            g.at[i, "tts_speedup_max_ratio"] = max(pairs) if pairs else math.nan
            g.at[i, "showers_to_target_ratio"] = _ratio(r["showers_to_target_median_count"],
                                                       base["showers_to_target_median_count"])
            g.at[i, "energy_to_target_ratio"] = _ratio(r["energy_to_target_median_j"], base["energy_to_target_median_j"])
            per_member = n / n0 if ensemble else 1.0     # showers/s of one member: the run's over N / G
            g.at[i, "expected_time_to_target_s"] = t0 * _ratio(tp0["showers_per_s"], tp["showers_per_s"]) * per_member
            g.at[i, "expected_energy_to_target_j"] = float(base["energy_to_target_median_j"]) * _ratio(
                tp["energy_per_1000_showers_j"], tp0["energy_per_1000_showers_j"])
        out.append(g)
    result = pd.concat(out, ignore_index=True)
    result["notes"] = ["; ".join(n) for n in result.pop("_notes")]
    return result[list(SUMMARY_COLUMN_NAMES)]


def _ratio(a: Any, b: Any) -> float:
    a, b = float(a), float(b)
    return a / b if math.isfinite(a) and math.isfinite(b) and b != 0 else math.nan


def interpretation(row: pd.Series | dict[str, Any]) -> str:
    """One line on what the gap between throughput and time-to-solution efficiency means at a
    summary row (``time_to_target_summary``); empty at the baseline or without both numbers."""
    n, n0 = row["world_size_ranks"], row["baseline_world_size_ranks"]
    tp, tts = float(row["throughput_efficiency_ratio"]), float(row["tts_efficiency_ratio"])
    if not (is_finite(n0) and n != n0 and math.isfinite(tp) and math.isfinite(tts)):
        return ""
    more = float(row["showers_to_target_ratio"])
    n, n0 = int(n), int(n0)   # a summary frame may hold them as floats (NaN elsewhere in the column)
    line = (f"N={n}: throughput efficiency {tp:.2f}, time-to-solution efficiency {tts:.2f}")
    if math.isfinite(more):
        if more > 1.0:
            line += (f": {more:.2f}x the showers of N={n0} were needed to reach {row['target']}, so part of "
                     f"the extra throughput went into a larger batch that converges less per shower")
        else:
            line += (f": {more:.2f}x the showers of N={n0} were enough to reach {row['target']}, so the "
                     f"larger batch lost nothing per shower")
    return line
