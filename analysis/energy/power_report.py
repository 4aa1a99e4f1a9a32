"""Idle power, gross and net energy, peak power, and what every rank's hardware did (telemetry).

- Idle power: run.json ``idle_power_w`` (``energy.baseline``), one entry per rank and idle
  window; the GPU is the rank's own, CPU and DRAM the node's (its reader rank).
- Gross energy per epoch is what the counters read; net energy subtracts idle power x the
  rank's epoch time, domain by domain, so it is the energy the work added above an idle node.
- Peak power per (run, rank, domain, device): max and 99th percentile of the power samples.
- Telemetry per (run, attempt, rank, epoch): mean CPU and GPU utilisation, peak RSS and GPU
  memory, mean CPU and SM clocks, max GPU temperature, and whether the GPU throttled.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np
import pandas as pd

from analysis.epochs import used_epochs
from common.rundir import Run
from common.telemetry_parts import read_telemetry
from common.vocab import ENERGY_DOMAINS, SOURCES_WITH_VALUE
from energy.telemetry import is_throttling

IDLE_POWER_KEY = "idle_power_w"          # run.json key written by scaling.baseline
BEFORE_FIRST_EPOCH = "before_first_epoch"
# A rank is called memory-bound when its peak GPU memory reaches this share of the GPU's
# memory, or its node's ranks together hold this share of the node's memory (RSS).
MEMORY_BOUND_SHARE = 0.95
EPOCH_PHASE_PREFIX = "epoch-"

IDLE_COLUMNS = ["run_id", "node", "rank", "when", "attempt", "seconds", "gpu_idle_power_w", "cpu_idle_power_w",
                "dram_idle_power_w"]
GROSS_NET_COLUMNS = ["series", "world_size_ranks", "runs_count", "epochs_used_count", "gross_energy_per_epoch_j",
                     "net_energy_per_epoch_j", "idle_energy_per_epoch_j", "net_share_fraction", "domains", "note"]
PEAK_COLUMNS = ["run_id", "rank", "node", "domain", "device", "source", "samples_count", "mean_power_w",
                "p99_power_w", "max_power_w"]
TELEMETRY_EPOCH_COLUMNS = ["run_id", "attempt", "rank", "node", "epoch", "warmup", "samples_count",
                           "cpu_util_mean_ratio", "rss_peak_bytes", "cpu_freq_mean_mhz", "gpu_util_mean_ratio",
                           "gpu_mem_busy_mean_ratio", "gpu_mem_peak_bytes", "gpu_sm_clock_mean_mhz",
                           "gpu_temp_max_c", "gpu_throttled", "gpu_throttle_reasons"]


@dataclass
class PowerResult:
    idle: pd.DataFrame                  # IDLE_COLUMNS, one row per rank and idle window
    gross_net: pd.DataFrame             # GROSS_NET_COLUMNS, one row per series and N
    peaks: pd.DataFrame                 # PEAK_COLUMNS
    telemetry_epochs: pd.DataFrame      # TELEMETRY_EPOCH_COLUMNS
    telemetry: dict[str, pd.DataFrame] = field(default_factory=dict)   # run_id -> raw rows (runs that have them)
    notes: list[str] = field(default_factory=list)   # throttling and memory-bound findings


def _num(value: Any) -> float:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else math.nan


# ------------------------------------------------------------------------------------ idle power
def idle_entries(run: Run) -> list[dict[str, Any]]:
    entries = run.meta.get(IDLE_POWER_KEY)
    return [e for e in entries if isinstance(e, dict)] if isinstance(entries, list) else []


def idle_table(runs: Sequence[Run]) -> pd.DataFrame:
    rows = []
    for run in runs:
        for e in idle_entries(run):
            rows.append({"run_id": run.meta.get("run_id"), "node": e.get("node"), "rank": e.get("rank"),
                         "when": e.get("when"), "attempt": e.get("attempt", 0), "seconds": _num(e.get("seconds")),
                         **{f"{d}_idle_power_w": _num(e.get(d)) for d in ENERGY_DOMAINS}})
    return pd.DataFrame(rows, columns=IDLE_COLUMNS)


def _idle_lookup(run: Run) -> dict[tuple[int, int], dict[str, float]]:
    """(attempt, rank) -> idle W per domain, from the windows before the first epoch; an attempt
    without its own (baseline skipped on resume) uses the rank's first."""
    out: dict[tuple[int, int], dict[str, float]] = {}
    first: dict[int, dict[str, float]] = {}
    for e in idle_entries(run):
        if e.get("when") != BEFORE_FIRST_EPOCH:
            continue
        watts = {d: _num(e.get(d)) for d in ENERGY_DOMAINS}
        rank, attempt = int(e.get("rank", -1)), int(e.get("attempt", 0))
        out[(attempt, rank)] = watts
        first.setdefault(rank, watts)
    attempts = set(run.epochs["attempt"]) if len(run.epochs) else set()
    for attempt in attempts:
        for rank, watts in first.items():
            out.setdefault((int(attempt), rank), watts)
    return out


def epoch_gross_net(run: Run) -> pd.DataFrame:
    """Per used epoch (attempt, epoch): gross and net energy summed over ranks and domains (J).

    Net is NaN for an epoch where a domain with energy has no idle power."""
    idle = _idle_lookup(run)
    used = used_epochs(run.epochs)
    rows = []
    for (attempt, epoch), g in used.groupby(["attempt", "epoch"]):
        gross = net = 0.0
        domains: set[str] = set()
        for rec in g.itertuples():
            watts = idle.get((int(attempt), int(rec.rank)), {})
            for d in ENERGY_DOMAINS:
                joules = getattr(rec, f"{d}_energy_j")
                if getattr(rec, f"{d}_energy_source") not in SOURCES_WITH_VALUE or not math.isfinite(joules):
                    continue
                domains.add(d)
                gross += joules
                net += joules - watts.get(d, math.nan) * float(rec.time_s)
        rows.append({"attempt": attempt, "epoch": epoch, "gross_j": gross if domains else math.nan,
                     "net_j": net if domains else math.nan, "domains": "+".join(sorted(domains))})
    return pd.DataFrame(rows, columns=["attempt", "epoch", "gross_j", "net_j", "domains"])


def gross_net_table(results: Sequence[Any]) -> pd.DataFrame:
    """Gross and net energy per epoch per (series, N): medians over the used epochs of its runs."""
    rows = []
    for r in results:
        by_n: dict[int, list[Run]] = {}
        for run in r.series.runs:
            by_n.setdefault(int(run.meta["world_size"]), []).append(run)
        for n, runs in sorted(by_n.items()):
            if not any(idle_entries(run) for run in runs):
                continue
            epochs = pd.concat([epoch_gross_net(run) for run in runs], ignore_index=True)
            gross = epochs["gross_j"].dropna()
            net = epochs["net_j"].dropna()
            note = ""
            if len(gross) and len(net) < len(gross):
                note = f"net for {len(net)} of {len(gross)} epochs (idle power missing for a domain)"
            g_med = float(np.median(gross)) if len(gross) else math.nan
            n_med = float(np.median(net)) if len(net) else math.nan
            rows.append({"series": r.series.key.label, "world_size_ranks": n, "runs_count": len(runs),
                         "epochs_used_count": len(epochs), "gross_energy_per_epoch_j": g_med,
                         "net_energy_per_epoch_j": n_med, "idle_energy_per_epoch_j": g_med - n_med,
                         "net_share_fraction": n_med / g_med if g_med > 0 else math.nan,
                         "domains": ", ".join(sorted(set("+".join(epochs["domains"]).split("+")) - {""})) or "-",
                         "note": note})
    return pd.DataFrame(rows, columns=GROSS_NET_COLUMNS)


# ------------------------------------------------------------------------------------ peak power
def peak_table(runs: Sequence[Run]) -> pd.DataFrame:
    """Max and 99th percentile of every power series (run, rank, domain, device)."""
    rows = []
    for run in runs:
        power = run.power
        if power is None or not len(power):
            continue
        for (rank, node, domain, device, source), g in power.groupby(["rank", "node", "domain", "device", "source"]):
            w = g["watts"].to_numpy(float)
            w = w[np.isfinite(w)]
            if not w.size:
                continue
            rows.append({"run_id": run.meta.get("run_id"), "rank": int(rank), "node": node, "domain": domain,
                         "device": device, "source": source, "samples_count": int(w.size),
                         "mean_power_w": float(w.mean()), "p99_power_w": float(np.percentile(w, 99)),
                         "max_power_w": float(w.max())})
    return pd.DataFrame(rows, columns=PEAK_COLUMNS)


# ------------------------------------------------------------------------------------ telemetry
def _is_throttling(reasons: Any) -> bool:
    return is_throttling(reasons if isinstance(reasons, str) else None)


def telemetry_epochs(run: Run, telemetry: pd.DataFrame) -> pd.DataFrame:
    """TELEMETRY_EPOCH_COLUMNS for one run: the rows sampled inside each epoch window."""
    rows = []
    in_epoch = telemetry[telemetry["phase"].str.startswith(EPOCH_PHASE_PREFIX)]
    warm = {(int(a), int(r), int(e)): bool(w) for a, r, e, w in
            run.epochs[["attempt", "rank", "epoch", "warmup"]].itertuples(index=False)}
    for (attempt, rank, node, phase), g in in_epoch.groupby(["attempt", "rank", "node", "phase"]):
        try:
            epoch = int(phase[len(EPOCH_PHASE_PREFIX):])
        except ValueError:
            continue
        reasons = sorted({r for cell in g["gpu_throttle_reasons"].dropna() for r in str(cell).split(",") if r})
        rows.append({"run_id": run.meta.get("run_id"), "attempt": int(attempt), "rank": int(rank), "node": node,
                     "epoch": epoch, "warmup": warm.get((int(attempt), int(rank), epoch), False),
                     "samples_count": len(g),
                     "cpu_util_mean_ratio": g["cpu_util_ratio"].mean(), "rss_peak_bytes": g["rss_bytes"].max(),
                     "cpu_freq_mean_mhz": g["cpu_freq_mhz"].mean(), "gpu_util_mean_ratio": g["gpu_util_ratio"].mean(),
                     "gpu_mem_busy_mean_ratio": g["gpu_mem_busy_ratio"].mean(),
                     "gpu_mem_peak_bytes": g["gpu_mem_used_bytes"].max(),
                     "gpu_sm_clock_mean_mhz": g["gpu_sm_clock_mhz"].mean(), "gpu_temp_max_c": g["gpu_temp_c"].max(),
                     "gpu_throttled": bool(g["gpu_throttle_reasons"].map(_is_throttling).any()),
                     "gpu_throttle_reasons": ",".join(reasons)})
    return pd.DataFrame(rows, columns=TELEMETRY_EPOCH_COLUMNS).sort_values(
        ["run_id", "attempt", "epoch", "rank"]).reset_index(drop=True)


def _gpu_memory_totals(run: Run) -> dict[int, float]:
    """rank -> GPU memory in bytes, from the meters' descriptions in run.json."""
    out = {}
    energy = run.meta.get("energy")
    for item in energy if isinstance(energy, list) else []:
        if isinstance(item, dict) and isinstance(item.get("telemetry"), dict):
            total = _num(item["telemetry"].get("gpu_mem_total_bytes"))
            if math.isfinite(total) and isinstance(item.get("rank"), int):
                out[item["rank"]] = total
    return out


def findings(run: Run, per_epoch: pd.DataFrame) -> list[str]:
    """Sentences for the report: which ranks throttled, which were near their memory limit."""
    out = []
    rid = run.meta.get("run_id")
    throttled = per_epoch[per_epoch["gpu_throttled"]]
    for rank, g in throttled.groupby("rank"):
        reasons = sorted({r for cell in g["gpu_throttle_reasons"] for r in cell.split(",") if r})
        out.append(f"run {rid}: the GPU of rank {rank} throttled in epoch(s) "
                   f"{', '.join(str(e + 1) for e in sorted(set(g['epoch'])))} (counted from 1) ({', '.join(reasons)}).")
    totals = _gpu_memory_totals(run)
    for rank, g in per_epoch.groupby("rank"):
        total = totals.get(int(rank), math.nan)
        peak = g["gpu_mem_peak_bytes"].max()
        if math.isfinite(total) and math.isfinite(peak) and peak >= MEMORY_BOUND_SHARE * total:
            out.append(f"run {rid}: rank {rank} was memory-bound on its GPU (peak {peak / 2**30:.1f} GiB of "
                       f"{total / 2**30:.1f} GiB).")
    node_mem = _num((run.meta.get("hardware") or {}).get("memory_bytes"))
    if math.isfinite(node_mem) and len(per_epoch):
        by_node = per_epoch.groupby(["attempt", "epoch", "node"])["rss_peak_bytes"].sum()
        high = by_node[by_node >= MEMORY_BOUND_SHARE * node_mem]
        if len(high):
            nodes = sorted({k[2] for k in high.index})
            out.append(f"run {rid}: the ranks on node(s) {', '.join(nodes)} were memory-bound on the host (their "
                       f"peak resident memory reached {high.max() / 2**30:.1f} GiB of {node_mem / 2**30:.1f} GiB).")
    return out


def analyse_power(runs: Sequence[Run], results: Sequence[Any]) -> PowerResult:
    frames, raw, notes = [], {}, []
    for run in runs:
        telemetry = read_telemetry(run.path)
        if telemetry is None or not len(telemetry):
            continue
        raw[str(run.meta.get("run_id"))] = telemetry
        per_epoch = telemetry_epochs(run, telemetry)
        frames.append(per_epoch)
        notes += findings(run, per_epoch)
    per_epoch = (pd.concat(frames, ignore_index=True) if frames
                 else pd.DataFrame(columns=TELEMETRY_EPOCH_COLUMNS))
    return PowerResult(idle_table(runs), gross_net_table(results), peak_table(runs), per_epoch, raw, notes)


def write_tables(result: PowerResult, out: Any) -> None:
    for name, table in (("idle_power.csv", result.idle), ("energy_gross_net.csv", result.gross_net),
                        ("peak_power.csv", result.peaks), ("telemetry_epochs.csv", result.telemetry_epochs)):
        if len(table):
            table.to_csv(out / name, index=False)
