"""Report text and the power-and-telemetry timeline for ``analysis.energy.power_report``'s results."""
from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd

from analysis.numbers import duration, energy, percent, power, significant
from analysis.plots import PALETTE, PlotFile, Plotter, downsample
from analysis.energy.power_report import EPOCH_PHASE_PREFIX, MEMORY_BOUND_SHARE, PowerResult
from energy.telemetry import is_throttling
from common.rundir import Run

TIMELINE_PLOT = "telemetry_timeline"
MAX_TIMELINE_RANKS = 4
MAX_PEAK_ROWS = 24
# Phase colours of the timeline's shaded bands, and the order of the legend.
PHASE_STYLE = {"warm-up": "#E69F00", "epoch": "#56B4E9", "evaluation": "#009E73", "checkpoint": "#CC79A7",
               "idle baseline": "#999999"}


def phase_kind(phase: str, warmup_epochs: set[int]) -> str | None:
    """The band a telemetry ``phase`` belongs to ("epoch-3" -> "epoch" or "warm-up"), None outside windows."""
    if phase.startswith(EPOCH_PHASE_PREFIX):
        try:
            return "warm-up" if int(phase[len(EPOCH_PHASE_PREFIX):]) in warmup_epochs else "epoch"
        except ValueError:
            return "epoch"
    for prefix, kind in (("eval-", "evaluation"), ("checkpoint-", "checkpoint"), ("baseline-", "idle baseline")):
        if phase.startswith(prefix):
            return kind
    return None


def phase_spans(rows: pd.DataFrame, warmup_epochs: set[int]) -> list[tuple[str, float, float]]:
    """(kind, start s, end s) of each run of consecutive rows in one phase kind (one rank's rows,
    sorted by time); a span lasts until the next kind's first row. Rows outside windows give none."""
    spans: list[tuple[str, float, float]] = []
    current: str | None = None
    start = math.nan
    t_s = rows["t_s"].to_numpy(float)
    for t, phase in zip(t_s, rows["phase"].astype(str)):
        kind = phase_kind(phase, warmup_epochs)
        if kind == current:
            continue
        if current is not None:
            spans.append((current, start, t))
        current, start = kind, t
    if current is not None and len(t_s):
        spans.append((current, start, float(t_s[-1])))
    return spans


def _attempt_rows(run: Run, telemetry: pd.DataFrame) -> tuple[int, pd.DataFrame]:
    """The first attempt's rows: each attempt has its own clock, so one timeline shows one."""
    attempt = int(telemetry["attempt"].min())
    return attempt, telemetry[telemetry["attempt"] == attempt]


def timeline_run(preferred: Run | None, runs: list[Run], result: PowerResult) -> Run | None:
    """The power timeline's run when it has telemetry, else the largest-N run that has some."""
    if preferred is not None and str(preferred.meta.get("run_id")) in result.telemetry:
        return preferred
    with_rows = [r for r in runs if str(r.meta.get("run_id")) in result.telemetry]
    return max(with_rows, key=lambda r: (int(r.meta["world_size"]), str(r.meta.get("run_id"))), default=None)


def plot_telemetry_timeline(plotter: Plotter, preferred: Run | None, runs: list[Run],
                            result: PowerResult) -> PlotFile | None:
    """Power and telemetry of one run against time, with its phases shaded (``timeline_run``)."""
    run = timeline_run(preferred, runs, result)
    if run is None:
        plotter._skip(TIMELINE_PLOT, "no run has telemetry (telemetry/ parts; runs before this version have none)")
        return None
    attempt, tele = _attempt_rows(run, result.telemetry[str(run.meta.get("run_id"))])
    ranks = sorted(tele["rank"].unique())[:MAX_TIMELINE_RANKS]
    warm = {int(e) for e in run.epochs.loc[run.epochs["warmup"].astype(bool) & (run.epochs["attempt"] == attempt),
                                           "epoch"]}
    fig, axes = plotter._figure(width=8.6, height=7.4, nrows=3)
    ax_p, ax_u, ax_t = axes[0, 0], axes[1, 0], axes[2, 0]
    first_rank = tele[tele["rank"] == ranks[0]].sort_values("t_s")
    spans = phase_spans(first_rank, warm)
    epoch_rows = first_rank[first_rank["phase"].str.startswith(EPOCH_PHASE_PREFIX)]
    for t in epoch_rows.groupby("phase")["t_s"].min():      # consecutive epochs share a colour: mark each start
        for ax in (ax_p, ax_u, ax_t):
            ax.axvline(t, color="#777777", linewidth=0.5, linestyle=":")
    seen: set[str] = set()
    for kind, a, b in spans:
        for ax in (ax_p, ax_u, ax_t):
            ax.axvspan(a, max(b, a + 1e-3), color=PHASE_STYLE[kind], alpha=0.18, linewidth=0,
                       label=kind if ax is ax_p and kind not in seen else None)
        seen.add(kind)
    power = run.power
    if power is not None and len(power):
        power = power[(power["attempt"] == attempt) & power["rank"].isin(ranks)]
        for (rank, domain, device), g in power.groupby(["rank", "domain", "device"]):
            g = g.sort_values("t_s")
            t, w = downsample(g["t_s"].to_numpy(float), g["watts"].to_numpy(float))
            ax_p.plot(t, w, color=PALETTE[ranks.index(rank) % len(PALETTE)], linewidth=1.0,
                      linestyle={"gpu": "-", "package": "--", "dram": ":"}.get(domain, "-."),
                      label=f"rank {rank} {device}")
    else:
        ax_p.text(0.5, 0.5, "no power samples (no counter readable)", transform=ax_p.transAxes, ha="center",
                  fontsize=9, color="#555555")
    ax_p.set_ylabel("power (W)")
    ax_p.set_ylim(bottom=0)
    gpu_read = tele["gpu_temp_c"].notna().any()
    for i, rank in enumerate(ranks):
        g = tele[tele["rank"] == rank].sort_values("t_s")
        colour = PALETTE[i % len(PALETTE)]
        t = g["t_s"].to_numpy(float)
        for column, style, label in (("gpu_util_ratio", "-", "GPU util"), ("cpu_util_ratio", "--", "CPU cores busy")):
            y = g[column].to_numpy(float)
            if np.isfinite(y).any():
                ax_u.plot(*downsample(t, y), color=colour, linestyle=style, linewidth=1.0, label=f"rank {rank} {label}")
        temp = g["gpu_temp_c"].to_numpy(float)
        if gpu_read:
            ax_t.plot(*downsample(t, temp), color=colour, linewidth=1.0, label=f"rank {rank} GPU temperature")
            throttled = g["gpu_throttle_reasons"].map(lambda c: is_throttling(c if isinstance(c, str) else None))
            if throttled.any():
                ax_t.scatter(t[throttled.to_numpy()], temp[throttled.to_numpy()], color=colour, marker="x", s=14,
                             label=f"rank {rank} throttled")
        else:
            rss = g["rss_bytes"].to_numpy(float) / 2**30
            ax_t.plot(*downsample(t, rss), color=colour, linewidth=1.0, label=f"rank {rank} RSS (GiB)")
    ax_u.set_ylabel("utilisation (ratio)")
    ax_u.set_ylim(bottom=0)
    ax_t.set_ylabel("GPU temperature (°C)" if gpu_read else "resident memory (GiB)")
    ax_t.set_xlabel(f"time since the start of attempt {attempt} (s)")
    m = run.meta
    ax_p.set_title(f"Power and telemetry: run {m.get('run_id')}, {m['engine']} {m['mode']} N={m['world_size']}",
                   fontsize=10)
    for ax in (ax_p, ax_u, ax_t):
        if ax.get_legend_handles_labels()[0]:
            ax.legend(loc="center left", bbox_to_anchor=(1.01, 0.5), fontsize=7)
    return plotter._save(fig, TIMELINE_PLOT, f"Power and telemetry timeline (run {m.get('run_id')})",
                         "Shaded bands: the phases from the telemetry rows' innermost meter window (idle baseline, "
                         "warm-up epochs, epochs, evaluations, checkpoint saves; unshaded: start-up and bookkeeping), "
                         "dotted lines at each epoch's start, "
                         f"from rank {ranks[0]}. Top: power samples (GPU solid, RAPL package dashed, DRAM dotted). "
                         "Middle: GPU utilisation (NVML) and CPU cores busy of each rank's process. Bottom: GPU "
                         "temperature with throttled samples crossed, or resident memory where no GPU is read. "
                         f"First {MAX_TIMELINE_RANKS} ranks at most; one attempt (each has its own clock).")


def _w(value: Any) -> str:
    return power(value) if isinstance(value, (int, float)) and math.isfinite(value) else "-"


def power_sections(doc: Any, result: PowerResult) -> None:
    """Idle power and gross vs net energy; peak power; telemetry per rank and the findings."""
    idle, gn = result.idle, result.gross_net
    doc.h(1, "Idle power, gross and net energy")
    if not len(idle):
        doc.p("No run measured its idle power (run.json `idle_power_w`; `[energy] baseline_s` = 0, or runs from "
              "before this measurement existed): only gross energy is known.")
    else:
        doc.p("Before the first epoch every rank sleeps `baseline_s` seconds inside a meter window with all ranks "
              "idle at once (after model set-up, so the GPU holds its context): its energy over its time is the idle "
              "power of the rank's GPU and, on each node's reader rank, of the node's CPU packages and DRAM. "
              "**Gross** energy is what the counters read; **net** energy = gross - idle power x the rank's epoch "
              "time, domain by domain: the energy the training added above an idle node.")
        nodes = idle.groupby(["run_id", "when", "node"], sort=True).agg(
            gpu=("gpu_idle_power_w", lambda s: s.sum(min_count=1)), cpu=("cpu_idle_power_w", "max"),
            dram=("dram_idle_power_w", "max"), seconds=("seconds", "median"), ranks=("rank", "count")).reset_index()
        doc.table(["run", "when", "node", "ranks", "seconds", "GPU idle power (sum of its ranks)", "CPU idle power",
                   "DRAM idle power"],
                  [[r.run_id, r.when, r.node, r.ranks, duration(r.seconds), _w(r.gpu), _w(r.cpu), _w(r.dram)]
                   for r in nodes.itertuples()])
        if len(gn):
            doc.table(["series", "N", "runs", "epochs", "gross energy per epoch", "net energy per epoch",
                       "idle energy per epoch", "net share of gross", "domains", "note"],
                      [[r.series, r.world_size_ranks, r.runs_count, r.epochs_used_count,
                        energy(r.gross_energy_per_epoch_j), energy(r.net_energy_per_epoch_j),
                        energy(r.idle_energy_per_epoch_j), percent(r.net_share_fraction), r.domains, r.note or "-"]
                       for r in gn.itertuples()])
            doc.p("Gross and net are medians over the used epochs (not warm-up, not interrupted) of the sum over "
                  "ranks and domains with a value; the energy tables above are gross. `energy_gross_net.csv` and "
                  "`idle_power.csv` hold these numbers.")
    doc.h(1, "Peak power")
    peaks = result.peaks
    if not len(peaks):
        doc.p("No run has power samples: no peak power.")
    else:
        top = peaks.sort_values("max_power_w", ascending=False).head(MAX_PEAK_ROWS)
        doc.p("Per power series (run, rank, device): maximum and 99th percentile of the samples (each sample is the "
              "mean power over one sampler interval, so shorter spikes are averaged out). "
              + (f"The {MAX_PEAK_ROWS} highest of {len(peaks)} are shown; " if len(peaks) > MAX_PEAK_ROWS else "")
              + "`peak_power.csv` has all.")
        doc.table(["run", "rank", "node", "device", "source", "samples", "mean", "p99", "max"],
                  [[r.run_id, r.rank, r.node, r.device, r.source, r.samples_count, _w(r.mean_power_w),
                    _w(r.p99_power_w), _w(r.max_power_w)] for r in top.itertuples()])
    _telemetry_section(doc, result)


def _telemetry_section(doc: Any, result: PowerResult) -> None:
    doc.h(1, "What each rank's hardware did")
    per = result.telemetry_epochs
    if not len(per):
        doc.p("No run recorded telemetry (telemetry/ parts): runs from before this version, or no epoch finished.")
        return
    doc.p("Sampled by the energy sampler at its interval: each rank's process (CPU cores busy = CPU seconds per "
          "wall second, resident memory, mean current frequency of its CPUs) and its GPU through NVML (utilisation, "
          "memory used, SM clock, temperature, clock-event reasons). Per rank over its epochs that are not warm-up: "
          "means of utilisation and clocks, peaks of memory, the maximum temperature, and the epochs in which a "
          "power or thermal slowdown was reported. `telemetry_epochs.csv` has every epoch.")
    used = per[~per["warmup"].astype(bool)]
    used = used if len(used) else per
    agg = used.groupby(["run_id", "rank", "node"]).agg(
        epochs=("epoch", "nunique"), cpu=("cpu_util_mean_ratio", "mean"), rss=("rss_peak_bytes", "max"),
        freq=("cpu_freq_mean_mhz", "mean"), gpu=("gpu_util_mean_ratio", "mean"), mem=("gpu_mem_peak_bytes", "max"),
        clock=("gpu_sm_clock_mean_mhz", "mean"), temp=("gpu_temp_max_c", "max"),
        throttled=("gpu_throttled", "sum")).reset_index()

    def gib(v: float) -> str:
        return f"{v / 2**30:.2f} GiB" if math.isfinite(v) else "-"

    def num(v: float, unit: str = "") -> str:
        return f"{significant(v)}{unit}" if math.isfinite(v) else "-"

    doc.table(["run", "rank", "node", "epochs", "CPU cores busy", "peak RSS", "CPU clock", "GPU util", "peak GPU memory",
               "SM clock", "max GPU temperature", "epochs throttled"],
              [[r.run_id, r.rank, r.node, r.epochs, num(r.cpu), gib(r.rss), num(r.freq, " MHz"), num(r.gpu),
                gib(r.mem), num(r.clock, " MHz"), num(r.temp, " °C"), int(r.throttled)] for r in agg.itertuples()])
    if result.notes:
        doc.ul(result.notes)
    elif per["gpu_temp_max_c"].notna().any() or per["gpu_util_mean_ratio"].notna().any():
        doc.p("No GPU reported a power or thermal slowdown in an epoch, and no rank came within "
              f"{percent(1 - MEMORY_BOUND_SHARE)} of its GPU's or node's memory (memory-bound).")
    else:
        doc.p("No GPU was read (CPU runs, or NVML unavailable): throttling is unknown; no node's ranks came within "
              f"{percent(1 - MEMORY_BOUND_SHARE)} of its memory (memory-bound).")
