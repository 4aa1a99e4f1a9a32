"""The report's time-to-quality section: which target, per-run and per-N tables, key-results lines.

The target is the ``--target`` of ``python -m analysis``, else the one the runs were trained
with (run.json ``target``, written by ``scaling.run --target``). Only runs that evaluated
while training (eval.parquet) take part; a run that never met the target keeps its row with
its best value. The numbers come from ``analysis.quality.time_to_target``; this module only words them. An ensemble's
members are GANs of their own: each has its own row, and a point pools them like repeats.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import pandas as pd

from analysis.numbers import count, duration, energy, ratio, significant
from analysis.report import Document
from analysis.quality.time_to_target import (INTERPOLATION, RUN_COLUMNS, SUMMARY_COLUMNS, interpretation,
                                     time_to_target_summary, time_to_target_table)
from common.errors import UserError
from common.rundir import RUN_JSON, Run
from common.target import Target
from common.vocab import MODE_ENSEMBLE
from analysis.numbers import is_finite

RUNS_CSV = "time_to_target_runs.csv"
SUMMARY_CSV = "time_to_target.csv"


@dataclass
class QualityResult:
    target: Target
    source: str                       # where the target came from, in words
    per_run: pd.DataFrame             # analysis.quality.time_to_target.RUN_COLUMNS
    summary: pd.DataFrame             # analysis.quality.time_to_target.SUMMARY_COLUMNS
    notes: list[str] = field(default_factory=list)


def _evaluated(runs: Sequence[Run]) -> list[Run]:
    return [r for r in runs if r.eval is not None and len(r.eval)]


def resolve_target(runs: Sequence[Run], flag: Target | None) -> tuple[Target | None, str, list[str]]:
    """(target, where it came from, notes): the flag, else the runs' own when they agree."""
    if flag is not None:
        return flag, "`--target` of python -m analysis", []
    found: dict[str, Target] = {}
    for r in _evaluated(runs):
        data = r.meta.get("target")
        if data:
            t = Target.from_json(data, f"{r.path / RUN_JSON}: target")
            found.setdefault(t.text, t)
    if not found:
        return None, "", []
    texts = sorted(found)
    notes = []
    if len(texts) > 1:
        notes.append(f"the runs were trained with different targets ({', '.join(texts)}); {texts[0]} is used "
                     "for all (give --target to choose)")
    return found[texts[0]], "run.json `target` of the runs", notes


def analyse_quality(runs: Sequence[Run], summary: pd.DataFrame, flag: Target | None) -> QualityResult | None:
    """Time to target of the runs that evaluated while training; None without evaluations or target."""
    evaluated = _evaluated(runs)
    if not evaluated:
        return None
    target, source, notes = resolve_target(evaluated, flag)
    if target is None:
        return None
    missing = [c for c in (target.metric,) if c not in evaluated[0].eval.columns]
    if missing:
        raise UserError(f"--target {target.text}: eval.parquet has no column {missing[0]!r}")
    per_run = time_to_target_table(evaluated, target)
    return QualityResult(target, source, per_run, time_to_target_summary(per_run, summary), notes)


def key_result_items(q: QualityResult) -> list[str]:
    """Per series and N: time and energy to the target beside both efficiencies, and what the
    difference means; a point that never met the target, with its best value."""
    items = []
    for _, r in q.summary.iterrows():
        label = f"{r['series']} N = {int(r['world_size_ranks'])}"
        runs = "GAN(s), ensemble members" if r["mode"] == MODE_ENSEMBLE else "run(s)"
        if not int(r["reached_count"]):
            items.append(f"{label}: never reached {q.target.text} ({int(r['runs_count'])} {runs}; best "
                         f"{q.target.metric} {significant(r['best_value'])}).")
            continue
        text = (f"{label}: {q.target.text} reached in {duration(r['time_to_target_median_s'])} of training "
                f"({count(r['showers_to_target_median_count'])} showers, energy {energy(r['energy_to_target_median_j'])} "
                f"({r['energy_source']}); {int(r['reached_count'])} of {int(r['runs_count'])} {runs})")
        if is_finite(r["tts_efficiency_ratio"]) and int(r["world_size_ranks"]) != int(r["baseline_world_size_ranks"]):
            text += (f"; time-to-solution speedup {speedups(r)} against N0 = {int(r['baseline_world_size_ranks'])}"
                     f" (efficiency {ratio(r['tts_efficiency_ratio'])}), throughput speedup "
                     f"{speedups(r, 'throughput')} (efficiency {ratio(r['throughput_efficiency_ratio'])})")
        line = interpretation(r)
        items.append(text + "." + (f" {line}." if line else ""))
    return items


def speedups(row: Mapping[str, Any], kind: str = "tts") -> str:
    """'1.45 [1.38, 1.52]': a summary row's speedup with its spread (time to solution: the lowest
    and highest over the pairs of repeats; throughput: the scaling table's bootstrap interval)."""
    low, high = (("tts_speedup_min_ratio", "tts_speedup_max_ratio") if kind == "tts" else
                 ("throughput_speedup_ci_low_ratio", "throughput_speedup_ci_high_ratio"))
    spread = f" [{ratio(row[low])}, {ratio(row[high])}]" if is_finite(row[low]) and is_finite(row[high]) else ""
    return ratio(row[f"{kind}_speedup_ratio"]) + spread


def time_to_target_section(doc: Document, q: QualityResult) -> None:
    doc.h(1, f"Time to quality: {q.target.text}")
    doc.p(f"Target {q.target.text} (from {q.source}). Per run: the first training-time evaluation that met it; "
          f"iterations, showers, training time (epoch clocks only, evaluations excluded) and energy at the crossing "
          f"are interpolated ({INTERPOLATION} of the metric) between the two evaluations that bracket it, and say so "
          "in the notes; a run that never met it is listed with its best value. Per N: repeats (and an ensemble's "
          "members, one GAN each) pooled (median, min..max), time-to-solution speedup N0 T(N0) / T(N) (an "
          "ensemble's counts GANs: N T(N0) / T(N); in brackets the lowest and highest over every pair of a run "
          "at N0 and a run at N) and efficiency speedup / N, next to the throughput speedup per epoch of the "
          "scaling table (in brackets its bootstrap interval) and its efficiency.")
    for note in q.notes:
        doc.p(f"Note: {note}.")
    doc.table(["series", "N", "runs", "reached", "iterations", "showers", "time to target [min, max]",
               "energy to target (source)", "best value", "time-to-solution speedup [pairs]",
               "time-to-solution efficiency", "throughput speedup [CI]", "throughput efficiency",
               "showers vs N0", "notes"],
              [[r.series, r.world_size_ranks, r.runs_count, r.reached_count, significant(r.iterations_to_target_median),
                count(r.showers_to_target_median_count),
                f"{duration(r.time_to_target_median_s)} [{duration(r.time_to_target_min_s)}, "
                f"{duration(r.time_to_target_max_s)}]",
                f"{energy(r.energy_to_target_median_j)} ({r.energy_source})", significant(r.best_value),
                speedups(r._asdict()), ratio(r.tts_efficiency_ratio), speedups(r._asdict(), "throughput"),
                ratio(r.throughput_efficiency_ratio), ratio(r.showers_to_target_ratio),
                r.notes or "-"] for r in q.summary.itertuples()])
    doc.p("Per run:")
    doc.table(["run_id", "N", "member", "evaluations", "reached", "iteration", "time to target", "best value",
               "notes"],
              [[r.run_id, r.world_size_ranks, r.member, r.evaluations_count, "yes" if r.reached else "no",
                significant(r.iterations_to_target), duration(r.time_to_target_s), significant(r.best_value),
                r.notes or "-"] for r in q.per_run.itertuples()])
    doc.p(f"`{SUMMARY_CSV}` and `{RUNS_CSV}` hold both tables in full; their columns:")
    doc.table(["column", "unit", "how it is obtained"],
              [[c.name, c.unit, c.how] for c in (*SUMMARY_COLUMNS, *RUN_COLUMNS)])


def write_tables(q: QualityResult, out_dir: Path) -> None:
    q.summary.to_csv(out_dir / SUMMARY_CSV, index=False)
    q.per_run.to_csv(out_dir / RUNS_CSV, index=False)
