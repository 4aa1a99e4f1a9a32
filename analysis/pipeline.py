"""From run directories to a report directory: load, summarise, project, plot, write.

The report directory is built in a temporary sibling and moved into place at the end, so an
interrupted analysis never leaves a half-written report; an existing report is replaced only
when it carries the marker file written here (any other existing folder is refused).
"""
from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import pandas as pd

from analysis import energy_metrics as em
from analysis.comm_model import shipped_networks
from analysis.load import BenchFile, Series, find_inputs, group_series, load_bench, load_runs
from analysis.pareto import ParetoPoint, pareto_table
from analysis.plots import Plotter, PlotFile
from analysis.projection import ProjectionResult, build_projection
from analysis.report import Document, fmt
from analysis.summary import COLUMNS, SeriesResult, solution_iterations, summarise_series, summary_table
from common.errors import UserError
from common.rundir import Run

MARKER = ".bologan-analysis-report"
PLOTS_DIR = "plots"


@dataclass
class Analysis:
    inputs: list[str]
    runs: list[Run]
    series: list[Series]
    results: list[SeriesResult]
    summary: pd.DataFrame
    benches: list[BenchFile]
    projection: ProjectionResult
    pareto: pd.DataFrame
    recommended: ParetoPoint | None
    plots: list[PlotFile] = field(default_factory=list)
    skipped_plots: dict[str, str] = field(default_factory=dict)
    power_run: Run | None = None
    iterations_to_solution: int | None = None
    skipped_runs: list[str] = field(default_factory=list)


def analyse(paths: Sequence[str | Path], network_files: Sequence[Path] = (),
            progress: Callable[[str], None] = lambda s: None) -> Analysis:
    """Everything except writing: raises ``UserError`` for unusable inputs."""
    run_dirs, bench_paths = find_inputs(paths)
    progress(f"found {len(run_dirs)} run director{'y' if len(run_dirs) == 1 else 'ies'} and "
             f"{len(bench_paths)} all-reduce benchmark file(s)")
    skipped: list[str] = []
    runs = load_runs(run_dirs, progress, skipped)
    if not runs:
        raise UserError(f"no run with a recorded epoch ({len(skipped)} skipped; first: {skipped[0]})")
    series = group_series(runs)
    progress(f"{len(series)} series: " + "; ".join(f"{s.key.label} N={s.world_sizes}" for s in series))
    iterations = solution_iterations([r.meta["config"] for r in runs])
    results = [summarise_series(s, iterations) for s in series]
    summary = summary_table(results)
    benches = [load_bench(p) for p in bench_paths]
    projection = build_projection(results, benches, network_files)
    pareto, best = pareto_table(summary)
    return Analysis([str(p) for p in paths], runs, series, results, summary, benches, projection, pareto, best,
                    iterations_to_solution=iterations, skipped_runs=skipped)


def choose_power_run(analysis: Analysis, run_id: str | None) -> Run | None:
    """The run named by ``run_id``, else the largest-N run with power samples."""
    with_power = [r for r in analysis.runs if r.power is not None and len(r.power)]
    if run_id is not None:
        match = [r for r in analysis.runs if str(r.meta.get("run_id")) == run_id]
        if not match:
            raise UserError(f"--power-run {run_id}: no such run_id among the runs analysed")
        if match[0].power is None or not len(match[0].power):
            raise UserError(f"--power-run {run_id}: {match[0].path} has no power samples (power.parquet)")
        return match[0]
    if not with_power:
        return None
    return max(with_power, key=lambda r: (int(r.meta["world_size"]), str(r.meta.get("run_id"))))


def draw_plots(analysis: Analysis, plot_dir: Path, power_run_id: str | None,
               progress: Callable[[str], None]) -> None:
    plotter = Plotter(plot_dir, analysis.results)
    analysis.power_run = choose_power_run(analysis, power_run_id)
    label = ""
    if analysis.power_run is not None:
        m = analysis.power_run.meta
        label = f"run {m.get('run_id')}, {m['engine']} {m['mode']} N={m['world_size']}"
    evals = [(f"{r.meta.get('run_id')} (N={r.meta['world_size']})", r.eval) for r in analysis.runs]
    proj = analysis.projection
    jobs = [
        plotter.plot_speedup, plotter.plot_efficiency, plotter.plot_time_breakdown,
        plotter.plot_energy_breakdown, plotter.plot_energy_efficiency,
        lambda: plotter.plot_power_timeline(label, analysis.power_run.power if analysis.power_run else None),
        lambda: plotter.plot_pareto(analysis.pareto),
        lambda: plotter.plot_chi2(evals),
        lambda: plotter.plot_allreduce_fit(analysis.benches, proj.comm_fits),
        lambda: plotter.plot_projection(proj.points, proj.measured),
    ]
    for job in jobs:
        pf = job()
        if pf is not None:
            analysis.plots.append(pf)
            progress(f"plot {pf.name}.png / .pdf")
    analysis.skipped_plots = dict(plotter.skipped)


# ------------------------------------------------------------------------------------ report text
DEFINITIONS = [
    "Epoch: a fixed number of iterations (one iteration = n_disc critic steps + 1 generator step); "
    "every rank runs the same number.",
    "Epoch time: wall time of the slowest rank in that epoch (`max` over ranks of `time_s` in epochs.parquet).",
    "T(N): median epoch time over epochs that are neither warm-up (`warmup`) nor cut short (`interrupted`); "
    "the spread is given as 25th/75th percentile and min/max. Repeated runs at one N are pooled.",
    "Showers per second: showers actually processed in an epoch summed over ranks, divided by its epoch time; "
    "median over epochs.",
    "Speedup S(N) = N0 T(N0) / T(N) with N0 the smallest world size of the series (N0 = 1 gives T(1)/T(N)); "
    "strong efficiency = S/N (global batch fixed); weak efficiency = T(N0)/T(N) (per-rank batch fixed).",
    "Karp-Flatt serial fraction e = (1/S - 1/N)/(1 - 1/N): constant e is a fixed serial part, e rising with N is "
    "overhead growing with N.",
    "Amdahl fit (strong): S = 1/((1-P) + P/N); Gustafson fit (weak): N x weak efficiency = (1-P) + N P; "
    "P fitted by least squares.",
    "Time shares: compute (training step outside the all-reduce), communication (inside gradient all-reduces), "
    "data wait (waiting for input), each the mean over ranks divided by the epoch time; median over epochs; "
    "other = the rest.",
    "Rank imbalance: slowest / fastest rank busy time (time_s - comm_s), median over epochs.",
    "Energy per epoch: GPU = sum over every rank's GPU (NVML energy counter); CPU package and DRAM = RAPL read "
    "once per node by its local rank 0 (other ranks carry `not_reader`), so each node is counted once; "
    "median over the same epochs as T(N). Total = sum of the domain medians that are available.",
    "Energy provenance: measured / estimated / includes estimates (measured and estimated added) / partial (some "
    "GPUs or nodes unread: lower bound) / unavailable. A total never hides an estimate: its source says so.",
    "Energy per 1000 showers = E / showers x 1000; showers per joule = showers / E; average power = E / T; "
    "EDP = E x T; ED2P = E x T^2 (E, T per epoch).",
    "All-epochs energy: every recorded epoch, warm-up and interrupted included (the energy the runs really used).",
]


def _key_results(doc: Document, a: Analysis) -> None:
    doc.h(1, "Key results")
    items = []
    for r in a.results:
        d = r.rows[r.rows["epoch_time_median_s"].notna()]
        if not len(d):
            items.append(f"{r.series.key.label}: no timed epoch.")
            continue
        last = d.iloc[-1]
        n0, n = int(last["baseline_world_size_ranks"]), int(last["world_size_ranks"])
        if n == n0:
            items.append(f"{r.series.key.label}: only N = {n} measured, T = {fmt(last['epoch_time_median_s'])} s "
                         f"per epoch, {fmt(last['showers_per_s'])} showers/s.")
            continue
        col = "strong_efficiency_ratio" if r.series.key.mode == "strong" else "weak_efficiency_ratio"
        text = (f"{r.series.key.label}: {r.series.key.mode} efficiency {fmt(last[col], 3)} at N = {n} "
                f"(baseline N0 = {n0}), {fmt(last['showers_per_s'])} showers/s, communication "
                f"{fmt(100 * last['comm_share_fraction'], 3)} % of the epoch")
        if math.isfinite(last["showers_per_j"]):
            text += f", {fmt(last['showers_per_j'], 3)} showers/J ({last['total_energy_source']})"
        items.append(text + ".")
    if a.recommended is not None:
        items.append(f"Recommended configuration (minimal E x T on the energy/time Pareto front): {a.recommended.label}.")
    p = a.projection
    if p.available and len(p.points):
        top = int(p.points["world_size_ranks"].max())
        at = p.points[(p.points["world_size_ranks"] == top)]
        for (net, mode), g in at.groupby(["network", "mode"], sort=False):
            eff = ", ".join(f"{row.particle} {fmt(row.efficiency_ratio, 3)}" for row in g.itertuples())
            items.append(f"Projection (not a measurement), {net}, {mode} scaling at N = {top}: {eff}.")
    doc.ul(items)


def _series_section(doc: Document, a: Analysis) -> None:
    doc.h(1, "Series")
    doc.p("A series is a set of runs that differ only in their number of ranks: same engine, scaling mode, "
          "particle, workload configuration (config hash) and fixed batch. Configurations inside a series were "
          "checked key by key.")
    rows = []
    for r in a.results:
        rows.append([r.series.key.label, ", ".join(str(n) for n in r.series.world_sizes), len(r.series.runs),
                     "; ".join(r.notes) or "-"])
    doc.table(["series", "world sizes N", "runs", "notes"], rows)


def _scaling_section(doc: Document, a: Analysis) -> None:
    doc.h(1, "Scaling")
    s = a.summary
    rows = [[r.series, r.world_size_ranks, r.nodes_count, r.epochs_used_count,
             f"{fmt(r.epoch_time_median_s)} [{fmt(r.epoch_time_p25_s)}, {fmt(r.epoch_time_p75_s)}]",
             r.showers_per_s, r.speedup_ratio,
             r.strong_efficiency_ratio if r.mode == "strong" else r.weak_efficiency_ratio,
             r.karp_flatt_fraction, r.comm_share_fraction, r.data_wait_share_fraction, r.rank_imbalance_ratio]
            for r in s.itertuples()]
    doc.table(["series", "N", "nodes", "epochs used", "T(N) median [p25, p75] (s)", "showers/s", "speedup (strong S, weak N T0/TN)",
               "efficiency (strong S/N or weak T0/TN)", "Karp-Flatt", "comm share", "data-wait share",
               "rank imbalance"], rows)
    fits = [[r.series.key.label, r.fit.law, r.fit.parallel_fraction, r.fit.serial_fraction, r.fit.points,
             r.fit.rms_residual] for r in a.results if r.fit is not None]
    if fits:
        doc.p("Scaling-law fits (least squares on the speedup; P = parallel fraction):")
        doc.table(["series", "law", "P", "serial fraction 1-P", "points", "rms residual of S"], fits)
    else:
        doc.p("No series has two or more world sizes: no efficiency curve and no scaling-law fit.")


def _energy_section(doc: Document, a: Analysis) -> None:
    doc.h(1, "Energy")
    s = a.summary
    if not s["total_energy_per_epoch_j"].notna().any():
        doc.p("Energy is unavailable in every run (no GPU energy counter, no readable RAPL and no estimate): "
              "energy tables, energy plots and the Pareto front are skipped.")
        return

    def dom(v, src):
        return f"{fmt(v)} ({src})"

    rows = [[r.series, r.world_size_ranks, dom(r.gpu_energy_per_epoch_j, r.gpu_energy_source),
             dom(r.cpu_energy_per_epoch_j, r.cpu_energy_source), dom(r.dram_energy_per_epoch_j, r.dram_energy_source),
             f"{fmt(r.total_energy_per_epoch_j)} ({r.total_energy_source}; {r.total_energy_domains or '-'})",
             r.energy_per_1000_showers_j, r.showers_per_j, r.average_power_w, r.edp_j_s, r.ed2p_j_s2,
             f"{fmt(r.all_epochs_energy_j)} ({r.all_epochs_energy_source})"]
            for r in s.itertuples()]
    doc.table(["series", "N", "GPU J/epoch (source)", "CPU J/epoch (source)", "DRAM J/epoch (source)",
               "total J/epoch (source; domains)", "J per 1000 showers", "showers/J", "avg power (W)",
               "EDP (J s)", "ED2P (J s^2)", "all epochs J (source)"], rows)
    flagged = s[s["total_energy_source"].isin([em.MIXED, em.ESTIMATED, em.PARTIAL])]
    if len(flagged):
        doc.p(f"{len(flagged)} row(s) have totals that include estimates or miss readings; they are labelled in "
              "the tables and drawn hatched or hollow in the plots.")


def _meters_section(doc: Document, a: Analysis) -> None:
    doc.h(1, "Runs and how they were measured")
    rows = []
    for r in a.runs:
        m = r.meta
        hw = m.get("hardware", {})
        hw_text = ", ".join(f"{k}: {v}" for k, v in hw.items()) if isinstance(hw, dict) else str(hw)
        rows.append([m.get("run_id"), str(r.path), m["engine"], m["mode"], m["world_size"], m["nodes"],
                     m["ranks_per_node"], m.get("launcher"), m.get("status"), len(m.get("restarts") or []),
                     hw_text[:160]])
    doc.table(["run_id", "path", "engine", "mode", "N", "nodes", "ranks/node", "launcher", "status", "restarts",
               "hardware"], rows)
    meters: dict[tuple, int] = {}
    for r in a.runs:
        energy = r.meta.get("energy")
        items = energy if isinstance(energy, list) else list(energy.values()) if isinstance(energy, dict) else []
        for item in items:
            domains = item.get("domains") if isinstance(item, dict) else None
            if isinstance(domains, dict):
                for name, d in domains.items():
                    d = d if isinstance(d, dict) else {}
                    why = "; ".join(str(d[k]) for k in ("reason", "hint") if d.get(k))
                    key = (name, str(d.get("source") or "-"), str(d.get("method") or "-"), why)
                    meters[key] = meters.get(key, 0) + 1
            else:   # a writer that describes its meter differently: show it verbatim
                key = ("?", "?", json.dumps(item, sort_keys=True, default=str)[:200], "")
                meters[key] = meters.get(key, 0) + 1
    if meters:
        doc.p("Energy meters as the runs describe them (run.json `energy`, one entry per rank; count = rank "
              "entries over all runs):")
        doc.table(["domain", "source", "method", "reason / hint", "rank entries"],
                  [[*k[:3], k[3] or "-", v] for k, v in sorted(meters.items())])
    else:
        doc.p("The runs do not describe their energy meters (no `energy` key in run.json).")


def _pareto_section(doc: Document, a: Analysis) -> None:
    doc.h(1, "Energy vs time to solution")
    if not len(a.pareto):
        doc.p("Skipped: no configuration has both a time and an energy to solution (energy unavailable, or "
              "train.iterations missing from the run configuration).")
        return
    doc.p(f"Every configuration is compared on the same training length, {fmt(a.iterations_to_solution)} "
          "iterations (the most common train.iterations of the runs): time to solution = T(N) x epochs to "
          "solution and energy to solution = total energy per epoch x the same epochs, with epochs to solution = "
          "training length / iterations per epoch. Front: configurations that no other configuration beats on "
          "both. Recommended: the front point with the smallest energy-delay product E x T (ties: the faster).")
    front = a.pareto[a.pareto["on_front"]]
    doc.table(["series", "N", "time to solution (s)", "energy to solution (J)", "E x T (J s)", "energy source",
               "recommended"],
              [[r.series, r.world_size_ranks, r.time_to_solution_s, r.energy_to_solution_j, r.edp_to_solution_j_s,
                r.total_energy_source, r.recommended] for r in front.itertuples()])
    if a.recommended is not None:
        doc.p(f"Recommended configuration: {a.recommended.label} (time {fmt(a.recommended.time_s)} s, energy "
              f"{fmt(a.recommended.energy_j)} J).")


def _projection_section(doc: Document, a: Analysis) -> None:
    p = a.projection
    doc.h(1, "Projection to many ranks")
    doc.p("Communication model (ring all-reduce of b bytes over N ranks, bandwidth B, latency L): "
          "`t(b, N) = 2(N-1)/N * b / B + 2(N-1) * L`. One iteration all-reduces the critic gradients n_disc "
          "times and the generator gradients once (4 bytes per trainable parameter); communication is assumed "
          "not to overlap computation. Non-communication time per iteration t_nc is measured: strong scaling "
          "uses t_nc(N) = a/N + b fitted to the strong series (b = 0 with one N), weak scaling keeps t_nc "
          "constant; an unmeasured particle's t_nc is scaled by its parameter count. Projected strong "
          "efficiency = t(1) / (N t(N)), weak = t(1) / t(N). These are projections, not measurements.")
    if not p.available:
        doc.ul(p.notes)
        doc.p("Shipped example networks (pass with `--network NAME`): "
              + ", ".join(f"`{s.stem}`" for s in shipped_networks()) + ".")
        return
    doc.table(["network", "bandwidth (Gbit/s)", "latency (us)", "origin", "description"],
              [[n.name, n.bandwidth_gbit_s, n.latency_us, n.origin, n.description] for n in p.networks])
    doc.table(["particle", "voxels", "generator parameters", "critic parameters", "bytes per critic all-reduce",
               "bytes per generator all-reduce"],
              [[s.particle, s.n_voxels, s.generator_params, s.critic_params, s.critic_grad_bytes,
                s.generator_grad_bytes] for s in p.sizes.values()])
    doc.ul([f"{c.particle}: {c.basis}" for c in p.compute.values()] + [f"n_disc = {p.n_disc}"] + p.notes)
    show = [n for n in (8, 32, 128, 512, 1024) if n in set(p.points["world_size_ranks"])]
    rows = []
    for (net, particle, mode), g in p.points.groupby(["network", "particle", "mode"], sort=False):
        eff = dict(zip(g["world_size_ranks"], g["efficiency_ratio"]))
        rows.append([net, particle, mode] + [eff.get(n, math.nan) for n in show])
    doc.p("Projected efficiency:")
    doc.table(["network", "particle", "mode"] + [f"N={n}" for n in show], rows)
    if len(p.check):
        doc.p("Check of the model against the measurements (measured network only):")
        doc.table(["network", "particle", "mode", "N", "measured efficiency", "projected efficiency"],
                  [list(r)[1:] for r in p.check.itertuples()])


def build_document(a: Analysis) -> Document:
    doc = Document("BoloGAN scaling and energy report")
    doc.p(f"Generated {time.strftime('%Y-%m-%d %H:%M:%S %Z')} by `python -m analysis` from "
          f"{len(a.runs)} run director{'y' if len(a.runs) == 1 else 'ies'} in {len(a.series)} series under: "
          + ", ".join(f"`{p}`" for p in a.inputs) + ". Every number below can be regenerated from those run "
          "directories; `summary.csv` / `summary.parquet` hold the full table (units in the column names).")
    if a.skipped_runs:
        doc.p("Run directories left out because they stopped before recording an epoch:")
        doc.ul(a.skipped_runs)
    _key_results(doc, a)
    doc.h(1, "How the numbers are measured")
    doc.ul(DEFINITIONS)
    _series_section(doc, a)
    _scaling_section(doc, a)
    _energy_section(doc, a)
    _pareto_section(doc, a)
    _projection_section(doc, a)
    doc.h(1, "Plots")
    doc.p("Each figure is also saved as PDF (vector, TrueType fonts) beside its PNG.")
    for pf in a.plots:
        doc.h(2, pf.title)
        doc.img(f"{PLOTS_DIR}/{pf.png.name}", pf.title, pf.caption)
    if a.skipped_plots:
        doc.p("Plots not drawn:")
        doc.ul([f"{name}: {why}" for name, why in a.skipped_plots.items()])
    _meters_section(doc, a)
    doc.h(1, "Columns of summary.csv")
    doc.table(["column", "unit", "how it is obtained"], [[c.name, c.unit, c.how] for c in COLUMNS])
    return doc


# ------------------------------------------------------------------------------------ writing
def check_out(out: str | Path) -> None:
    """Refuse an output folder that exists and is not a report written here (checked first, so
    a long analysis never ends in this error)."""
    out = Path(out)
    if out.exists():
        if not out.is_dir():
            raise UserError(f"{out}: exists and is not a directory")
        if any(out.iterdir()) and not (out / MARKER).exists():
            raise UserError(f"{out}: exists and is not an analysis report directory; choose another --out")


def _prepare_out(out: Path) -> Path:
    out = Path(out)
    check_out(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o777 & ~umask)   # mkdtemp makes it private; a report is meant to be shared
    return tmp


def _swap_in(tmp: Path, out: Path) -> None:
    old = None
    if out.exists():
        old = out.with_name(f".{out.name}.old-{os.getpid()}")
        os.replace(out, old)
    os.replace(tmp, out)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def write_report(a: Analysis, out: str | Path, power_run_id: str | None = None,
                 progress: Callable[[str], None] = lambda s: None) -> Path:
    out = Path(out)
    tmp = _prepare_out(out)
    try:
        draw_plots(a, tmp / PLOTS_DIR, power_run_id, progress)
        a.summary.to_csv(tmp / "summary.csv", index=False)
        a.summary.to_parquet(tmp / "summary.parquet", index=False)
        if len(a.pareto):
            a.pareto.to_csv(tmp / "pareto.csv", index=False)
        fits = [{"series": r.series.key.label, "law": r.fit.law, "parallel_fraction": r.fit.parallel_fraction,
                 "serial_fraction": r.fit.serial_fraction, "points_count": r.fit.points,
                 "rms_residual_ratio": r.fit.rms_residual} for r in a.results if r.fit is not None]
        pd.DataFrame(fits, columns=["series", "law", "parallel_fraction", "serial_fraction", "points_count",
                                    "rms_residual_ratio"]).to_csv(tmp / "fits.csv", index=False)
        if a.projection.available:
            a.projection.points.to_csv(tmp / "projection.csv", index=False)
        doc = build_document(a)
        # Plain writes: the whole folder becomes visible at once when it is renamed into place.
        (tmp / "report.md").write_text(doc.markdown(), encoding="utf-8")
        (tmp / "report.html").write_text(doc.html(tmp), encoding="utf-8")
        (tmp / MARKER).write_text("written by python -m analysis; this folder is replaced on the next run\n")
        _swap_in(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    progress(f"report written to {out}/report.md and report.html")
    return out
