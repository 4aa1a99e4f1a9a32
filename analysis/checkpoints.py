"""Checkpoint cost and the checkpoint interval a failure rate calls for.

scaling.run records each save's wall time and bytes (run.json ``checkpoint_saves``) and each
start's time to its first epoch (``starts``; attempts after the first are resumes). Per run:

- C: median save time; overhead = total save time / total epoch time (saves are outside the
  epoch clocks, so this is time the run spends on top of its training);
- R: median start-up time of its resumes (of its first start when it never resumed: a proxy);
- the current interval: ``[train] checkpoint_every`` iterations (0: one epoch) x the median
  iteration time;
- with ``--mtbf-h M`` (mean time between failures of the whole job, hours): Young's optimum
  sqrt(2 C M) (J. W. Young, "A first order approximation to the optimum checkpoint interval",
  CACM 17(9), 1974) and Daly's higher-order one, sqrt(2 C M) [1 + sqrt(C/2M)/3 + (C/2M)/9] - C
  for C < 2M, else M (J. T. Daly, "A higher order estimate of the optimum checkpoint interval
  for restart dumps", FGCS 22(3), 2006), both as time and as iterations. Saves happen at epoch
  ends only, so the usable interval is the optimum rounded to whole epochs.
"""
from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np
import pandas as pd

from analysis.numbers import count, duration, percent, significant
from analysis.report import Document
from analysis.summary import Column
from common.rundir import Run

SAVES_KEY = "checkpoint_saves"      # scaling.checkpoint_cost writes these run.json keys
STARTS_KEY = "starts"
S_PER_H = 3600.0


def young_interval_s(save_s: float, mtbf_s: float) -> float:
    """Young's first-order optimum: sqrt(2 C M), seconds of work between checkpoints."""
    return math.sqrt(2.0 * save_s * mtbf_s) if save_s >= 0 and mtbf_s > 0 else math.nan


def daly_interval_s(save_s: float, mtbf_s: float) -> float:
    """Daly's higher-order optimum (FGCS 2006, eq. 37): M when C >= 2M."""
    if not (save_s >= 0 and mtbf_s > 0):
        return math.nan
    if save_s >= 2.0 * mtbf_s:
        return mtbf_s
    x = save_s / (2.0 * mtbf_s)
    return math.sqrt(2.0 * save_s * mtbf_s) * (1.0 + math.sqrt(x) / 3.0 + x / 9.0) - save_s


COLUMNS: tuple[Column, ...] = (
    Column("run_id", "text", "run.json run_id"),
    Column("run_path", "text", "run directory"),
    Column("saves_count", "saves", "checkpoints recorded (run.json checkpoint_saves)"),
    Column("save_time_median_s", "s", "C: median save wall time"),
    Column("save_time_max_s", "s", "slowest save"),
    Column("checkpoint_median_bytes", "bytes", "median size of one checkpoint"),
    Column("save_overhead_fraction", "1", "total save time / total epoch time (saves are outside the epoch clocks)"),
    Column("resumes_count", "starts", "starts after the first (run.json starts, attempt > 0)"),
    Column("restart_time_median_s", "s", "R: median start-up time of the resumes (of the first start when none)"),
    Column("restore_time_median_s", "s", "median time spent restoring the checkpoint on a resume"),
    Column("iteration_time_median_s", "s", "median over used epochs of epoch time / iterations"),
    Column("current_interval_iterations", "iterations", "[train] checkpoint_every, at least one epoch (0 = one epoch)"),
    Column("current_interval_s", "s", "current interval x iteration time"),
    Column("mtbf_s", "s", "--mtbf-h x 3600 (NaN without it)"),
    Column("young_interval_s", "s", "sqrt(2 C MTBF)"),
    Column("daly_interval_s", "s", "Daly's higher-order optimum"),
    Column("daly_interval_iterations", "iterations", "Daly's optimum / iteration time"),
    Column("daly_interval_epochs", "epochs", "Daly's optimum rounded to whole epochs (saves happen at epoch ends)"),
)
COLUMN_NAMES = tuple(c.name for c in COLUMNS)


def _median(values: Sequence[float]) -> float:
    a = np.asarray([v for v in values if v is not None], dtype=float)
    a = a[np.isfinite(a)]
    return float(np.median(a)) if a.size else math.nan


def checkpoint_row(run: Run, mtbf_h: float | None) -> dict[str, Any] | None:
    saves = [s for s in run.meta.get(SAVES_KEY) or [] if isinstance(s, dict)]
    if not saves:
        return None
    starts = [s for s in run.meta.get(STARTS_KEY) or [] if isinstance(s, dict)]
    resumes = [s for s in starts if int(s.get("attempt", 0)) > 0]
    epochs = run.epochs
    scaling = run.meta.get("config", {}).get("scaling", {})
    ipe = int(run.meta.get("iterations_per_epoch") or (scaling.get("iterations_per_epoch") if isinstance(scaling, dict)
                                                       else 0) or 0)
    train = run.meta.get("config", {}).get("train", {})
    every = int(train.get("checkpoint_every", 0) or 0) if isinstance(train, dict) else 0
    # 0 is one epoch; a K shorter than an epoch still saves once per epoch (never inside one).
    every = max(every, ipe)
    used = epochs[~epochs["warmup"].astype(bool) & ~epochs["interrupted"].astype(bool)] if len(epochs) else epochs
    per_epoch = used.groupby(["epoch", "attempt"]).agg(time_s=("time_s", "max"), iterations=("iterations", "max"))
    iteration_s = _median((per_epoch["time_s"] / per_epoch["iterations"]).tolist()) if len(per_epoch) else math.nan
    all_epochs = epochs.groupby(["epoch", "attempt"])["time_s"].max().sum() if len(epochs) else math.nan
    save_times = [float(s.get("save_s", math.nan)) for s in saves]
    C = _median(save_times)
    mtbf_s = mtbf_h * S_PER_H if mtbf_h else math.nan
    daly = daly_interval_s(C, mtbf_s)
    daly_it = daly / iteration_s if iteration_s > 0 else math.nan
    return {
        "run_id": str(run.meta.get("run_id")), "run_path": str(run.path), "saves_count": len(saves),
        "save_time_median_s": C, "save_time_max_s": float(np.nanmax(save_times)),
        "checkpoint_median_bytes": _median([s.get("bytes") for s in saves]),
        "save_overhead_fraction": float(np.nansum(save_times)) / all_epochs if all_epochs > 0 else math.nan,
        "resumes_count": len(resumes),
        "restart_time_median_s": _median([s.get("startup_s") for s in (resumes or starts)]),
        "restore_time_median_s": _median([s.get("restore_s") for s in resumes]),
        "iteration_time_median_s": iteration_s, "current_interval_iterations": every,
        "current_interval_s": every * iteration_s, "mtbf_s": mtbf_s,
        "young_interval_s": young_interval_s(C, mtbf_s), "daly_interval_s": daly,
        "daly_interval_iterations": daly_it,
        "daly_interval_epochs": max(1, round(daly_it / ipe)) if ipe and math.isfinite(daly_it) else math.nan,
    }


def checkpoint_table(runs: Sequence[Run], mtbf_h: float | None) -> pd.DataFrame:
    rows = [r for r in (checkpoint_row(run, mtbf_h) for run in runs) if r is not None]
    return pd.DataFrame(rows, columns=list(COLUMN_NAMES))


def checkpoints_section(doc: Document, table: pd.DataFrame, mtbf_h: float | None) -> None:
    doc.h(1, "Checkpoints")
    if not len(table):
        doc.p("No run recorded its checkpoint saves (runs made before scaling.run recorded them).")
        return
    doc.p("Each save's wall time and size as the runs recorded them (outside the epoch clocks); overhead = total "
          "save time / total epoch time. Restart time: a resume's time from process start to its first epoch. "
          + ("Optimal interval for the given MTBF: Young's sqrt(2 C MTBF) and Daly's higher-order estimate "
             "(FGCS 2006), next to the current one; saves happen at epoch ends, so the last column rounds Daly's "
             "optimum to whole epochs. `checkpoints.csv` holds the table." if mtbf_h else
             "Give `--mtbf-h HOURS` (the job's mean time between failures) for the optimal interval "
             "(Young/Daly). `checkpoints.csv` holds the table."))
    head = ["run", "saves", "save time (median, max)", "size", "overhead", "restart time (resumes)",
            "current interval"]
    if mtbf_h:
        head += [f"Young (MTBF {significant(mtbf_h)} h)", "Daly", "Daly in epochs"]
    rows = []
    for r in table.itertuples():
        row = [r.run_id, r.saves_count, f"{duration(r.save_time_median_s)}, {duration(r.save_time_max_s)}",
               f"{significant(r.checkpoint_median_bytes / 2**20)} MiB" if math.isfinite(r.checkpoint_median_bytes)
               else "n/a", percent(r.save_overhead_fraction),
               f"{duration(r.restart_time_median_s)} ({r.resumes_count})",
               f"{count(r.current_interval_iterations)} iterations = {duration(r.current_interval_s)}"]
        if mtbf_h:
            row += [duration(r.young_interval_s),
                    f"{duration(r.daly_interval_s)} = {count(round(r.daly_interval_iterations))} iterations"
                    if math.isfinite(r.daly_interval_iterations) else "n/a",
                    count(r.daly_interval_epochs)]
        rows.append(row)
    doc.table(head, rows)
