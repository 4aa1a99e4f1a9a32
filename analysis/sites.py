"""Where runs ran, and the same workload compared across sites ("sites" table).

run.json ``site`` (name, container) and ``hardware`` (CPU model and count, GPU model) enter the
series key, so runs from two clusters, or native and in a container on one machine, are never
pooled as repeats. A run written before these fields existed has an unknown site ("" in the key).
The sites table puts every series of one workload (engine, mode, particle, config hash, fixed
batch, threads) side by side when it ran in more than one place: iteration time, energy per
1000 showers and efficiency per world size, and each site's time and energy relative to the
first (the fastest at the smallest N). Native vs container on one node is the same table.
"""
from __future__ import annotations

import math
from typing import Any, Sequence

import pandas as pd

UNKNOWN_SITE_TEXT = "unknown site"
SITES_COLUMNS = ["workload", "where", "site", "in_container", "hardware", "world_size_ranks", "nodes_count",
                 "runs_count", "iteration_time_s", "showers_per_s", "energy_per_1000_showers_j", "energy_source",
                 "efficiency_ratio", "iteration_time_relative_ratio", "energy_relative_ratio"]


def run_site(meta: dict[str, Any]) -> str:
    """'leonardo', 'leonardo (container)', 'unknown', or '' (the run recorded no site)."""
    site = meta.get("site")
    if not isinstance(site, dict):
        return ""
    name = str(site.get("name") or "unknown")
    return f"{name} (container)" if site.get("in_container") else name


def run_hardware(meta: dict[str, Any]) -> str:
    """'AMD EPYC 7763 x 128, NVIDIA A100-SXM4-64GB' for runs that recorded a site, else ''.

    The GPU enters only when the run used one (``gpus_per_rank`` > 0)."""
    hw = meta.get("hardware")
    if not isinstance(meta.get("site"), dict) or not isinstance(hw, dict):
        return ""
    parts = [f"{hw.get('cpu_model') or 'unknown CPU'} x {hw.get('logical_cpus') or '?'}"]
    if (hw.get("gpus_per_rank") or 0) > 0:
        parts.append(str(hw.get("gpu_model") or "unknown GPU"))
    return ", ".join(parts)


def _ratio(a: float, b: float) -> float:
    return a / b if math.isfinite(a) and math.isfinite(b) and b > 0 else math.nan


def sites_table(results: Sequence[Any]) -> pd.DataFrame:
    """One row per (series, world size) of every workload measured in more than one place."""
    by_workload: dict[tuple, list] = {}
    for r in results:
        by_workload.setdefault(r.series.key.workload, []).append(r)
    rows = []
    for group in by_workload.values():
        if len({r.series.key.where for r in group}) < 2:
            continue
        for r in group:
            key, table = r.series.key, r.rows
            site = next(iter(r.series.runs)).meta.get("site") or {}
            for row in table.itertuples():
                iters = getattr(row, "iterations_per_epoch_count", math.nan)
                eff = row.strong_efficiency_ratio if key.mode == "strong" else row.weak_efficiency_ratio
                rows.append({
                    "workload": f"{key.engine} {key.mode} {key.particle}, {key.batch_kind} batch {key.batch_showers} "
                                f"[{key.config_hash[:6]}]",
                    "where": key.where or UNKNOWN_SITE_TEXT, "site": key.site or UNKNOWN_SITE_TEXT,
                    "in_container": bool(site.get("in_container")) if isinstance(site, dict) else False,
                    "hardware": key.hardware or "-", "world_size_ranks": int(row.world_size_ranks),
                    "nodes_count": int(row.nodes_count), "runs_count": int(row.runs_count),
                    "iteration_time_s": _ratio(row.epoch_time_median_s, iters), "showers_per_s": row.showers_per_s,
                    "energy_per_1000_showers_j": row.energy_per_1000_showers_j,
                    "energy_source": row.total_energy_source, "efficiency_ratio": eff})
    table = pd.DataFrame(rows, columns=SITES_COLUMNS)
    if not len(table):
        return table
    # Relative to the first place of each workload and N: the fastest one.
    for (_w, _n), idx in table.groupby(["workload", "world_size_ranks"]).groups.items():
        block = table.loc[idx]
        ref = block.loc[block["iteration_time_s"].idxmin()] if block["iteration_time_s"].notna().any() else block.iloc[0]
        table.loc[idx, "iteration_time_relative_ratio"] = [_ratio(v, ref["iteration_time_s"])
                                                           for v in block["iteration_time_s"]]
        table.loc[idx, "energy_relative_ratio"] = [_ratio(v, ref["energy_per_1000_showers_j"])
                                                   for v in block["energy_per_1000_showers_j"]]
    return table.sort_values(["workload", "world_size_ranks", "iteration_time_s"]).reset_index(drop=True)


def sites_section(doc: Any, table: pd.DataFrame) -> None:
    """The report's "Sites" section (nothing when no workload ran in two places)."""
    from analysis.numbers import duration, energy, ratio

    if not len(table):
        return
    doc.h(1, "Sites: the same workload where it ran")
    doc.p("Runs are grouped by where they ran (run.json `site`: the `--site` label, `BOLOGAN_SITE` or Slurm's cluster name, and "
          "whether in an Apptainer/Singularity container) and the node's hardware (CPU model and count, GPU model), "
          "so two clusters, or native and container runs on one machine, are never pooled. Each workload measured "
          "in more than one place is compared per N: iteration time = T(N) / iterations per epoch; energy per 1000 "
          "showers and efficiency as in the scaling and energy tables; relative = this place / the fastest place at "
          "that N. Runs without a recorded site are shown as `unknown site`.")
    doc.table(["workload", "where", "N", "runs", "iteration time", "relative time", "energy per 1000 showers (source)",
               "relative energy", "efficiency"],
              [[r.workload, r.where, r.world_size_ranks, r.runs_count, duration(r.iteration_time_s),
                ratio(r.iteration_time_relative_ratio), f"{energy(r.energy_per_1000_showers_j)} ({r.energy_source})",
                ratio(r.energy_relative_ratio), ratio(r.efficiency_ratio)] for r in table.itertuples()])
