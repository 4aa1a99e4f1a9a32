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
from analysis.bootstrap import CONFIDENCE, RESAMPLES
from analysis.campaign.campaign import CampaignRequest, CampaignResult, analyse_campaigns, is_ensemble
from analysis.energy.carbon import CarbonRequest, CarbonResult, carbon_section, carbon_table
from analysis.energy.carbon import key_result_items as carbon_key_items
from analysis.energy.carbon import write_tables as write_carbon_tables
from analysis.checkpoints import checkpoint_table, checkpoints_section
from analysis.energy.energy_intervals import EngineComparison, compare_engines, interval_table, intervals_section
from analysis.variants import VariantsResult, analyse_variants, best_items, plot_variants, variants_section
from analysis.variants import write_tables as write_variant_tables
from analysis.campaign.campaign_report import campaign_section, plot_campaign
from analysis.campaign.campaign_report import key_result_items as campaign_key_items
from analysis.campaign.campaign_report import write_tables as write_campaign_tables
from analysis.projection.comm_model import shipped_networks
from analysis.campaign.layout import LayoutResult, analyse_layouts, layout_section
from analysis.campaign.layout import key_result_items as layout_key_items
from analysis.campaign.layout import write_tables as write_layout_tables
from analysis.load import BenchFile, Series, find_inputs, group_series, load_bench, load_runs
from analysis.energy.pareto import REFERENCE_SHOWERS, ParetoPoint, pareto_table
from analysis.energy.power_report import PowerResult, analyse_power
from analysis.energy.power_report import write_tables as write_power_tables
from analysis.energy.power_sections import plot_telemetry_timeline, power_sections
from analysis.plots import Plotter, PlotFile
from analysis.projection.projection import ProjectionResult, build_projection
from analysis.projection.projection_report import file_networks, key_result_items, projection_plot_note, projection_section
from analysis.quality.quality_plots import plot_quality_curves, plot_to_target
from analysis.quality.quality_report import QualityResult, analyse_quality, time_to_target_section
from analysis.quality.quality_report import key_result_items as quality_key_items
from analysis.quality.quality_report import write_tables as write_quality_tables
from analysis.numbers import count, duration, energy, interval, percent, power, rate, ratio, significant
from analysis.report import Document
from analysis.sites import sites_section, sites_table
from analysis.summary import COLUMNS, SeriesResult, summarise_series, summary_table
from common.errors import UserError
from common.rundir import Run
from common.target import Target
from common.vocab import MODE_STRONG

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
    recommended: dict[str, ParetoPoint]    # front name ('strong photons') -> its recommended point
    plots: list[PlotFile] = field(default_factory=list)
    skipped_plots: dict[str, str] = field(default_factory=dict)
    power_run: Run | None = None
    skipped_runs: list[str] = field(default_factory=list)
    campaign: CampaignResult | None = None   # ensembles, campaign makespans and plan (analysis.campaign.campaign)
    quality: QualityResult | None = None     # time to a quality target (analysis.quality.quality_report)
    layouts: LayoutResult | None = None      # ranks x threads of a node compared (analysis.campaign.layout)
    carbon: CarbonResult | None = None       # CO2e and cost (analysis.energy.carbon)
    variants: VariantsResult | None = None   # launch.study [variants] compared (analysis.variants)
    energy_intervals: pd.DataFrame | None = None      # analysis.energy.energy_intervals
    engine_comparisons: list[EngineComparison] = field(default_factory=list)
    checkpoints: pd.DataFrame | None = None  # checkpoint cost and optimal interval (analysis.checkpoints)
    mtbf_h: float | None = None
    power: PowerResult | None = None         # idle, gross/net, peak power, telemetry (analysis.energy.power_report)
    sites: pd.DataFrame | None = None        # one workload at several sites (analysis.sites)


def analyse(paths: Sequence[str | Path], network_files: Sequence[Path] = (),
            progress: Callable[[str], None] = lambda s: None,
            campaign: CampaignRequest = CampaignRequest(), target: Target | None = None,
            carbon: CarbonRequest = CarbonRequest(), mtbf_h: float | None = None) -> Analysis:
    """Everything except writing: raises ``UserError`` for unusable inputs."""
    run_dirs, bench_paths = find_inputs(paths)
    progress(f"found {len(run_dirs)} run director{'y' if len(run_dirs) == 1 else 'ies'} and "
             f"{len(bench_paths)} all-reduce benchmark file(s)")
    skipped: list[str] = []
    runs = load_runs(run_dirs, progress, skipped)
    if not runs:
        raise UserError(f"no run with a recorded epoch ({len(skipped)} skipped; first: {skipped[0]})")
    # Ensemble runs train many GANs without reduction: analysed by analysis.campaign.campaign, not as a
    # data-parallel series (no speedup, no all-reduce to project).
    series = group_series([r for r in runs if not is_ensemble(r)])
    progress(f"{len(series)} series: " + "; ".join(f"{s.key.label} N={s.world_sizes}" for s in series))
    results = [summarise_series(s) for s in series]
    summary = summary_table(results)
    benches = [load_bench(p) for p in bench_paths]
    projection = build_projection(results, benches, network_files)
    pareto, best = pareto_table(summary)
    # Time to a quality target: data-parallel runs that evaluated while training (ensembles'
    # members get theirs in the campaign section).
    quality = analyse_quality([r for r in runs if not is_ensemble(r)], summary, target)
    campaigns = analyse_campaigns(runs, summary, campaign)
    return Analysis([str(p) for p in paths], runs, series, results, summary, benches, projection, pareto, best,
                    skipped_runs=skipped, campaign=campaigns, quality=quality,
                    layouts=analyse_layouts(runs),
                    carbon=carbon_table(summary, campaigns.plan if campaigns else None, carbon, campaign.gan_iterations,
                                        runs, campaigns.ensembles if campaigns else None),
                    variants=analyse_variants(results, quality.target if quality is not None else target),
                    energy_intervals=interval_table(results), engine_comparisons=compare_engines(results),
                    checkpoints=checkpoint_table(runs, mtbf_h), mtbf_h=mtbf_h,
                    power=analyse_power(runs, results), sites=sites_table(results))


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
    plotted = [n.name for n in file_networks(proj)] if proj.available else []
    note = projection_plot_note(proj) if proj.available else ""
    jobs = [
        plotter.plot_speedup, plotter.plot_efficiency, plotter.plot_time_breakdown,
        plotter.plot_energy_breakdown, plotter.plot_energy_efficiency,
        lambda: plotter.plot_power_timeline(label, analysis.power_run.power if analysis.power_run else None),
        lambda: plotter.plot_pareto(analysis.pareto),
        lambda: plotter.plot_chi2(evals),
        lambda: plotter.plot_allreduce_fit(analysis.benches, proj.comm_fits),
        lambda: plotter.plot_projection(proj.points, plotted, note=note),
        lambda: plotter.plot_projection_breakdown(proj.points, plotted, note=note),
        lambda: plot_campaign(plotter, analysis.campaign) if analysis.campaign else None,
        lambda: plot_variants(analysis.variants, plot_dir, plotter.skipped) if analysis.variants else None,
        lambda: (plot_telemetry_timeline(plotter, analysis.power_run, analysis.runs, analysis.power)
                 if analysis.power else None),
    ]
    quality = analysis.quality
    if quality is not None:
        curves = [r for r in analysis.runs if not is_ensemble(r)]
        jobs += [lambda: plot_quality_curves(curves, quality.target, plot_dir, plotter.skipped),
                 lambda: plot_to_target(quality.summary, plot_dir, plotter.skipped)]
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
    "the spread is given as 25th/75th percentile and min/max. Repeated runs at one N (`launch.study --repeats`) "
    "are pooled: T(N) is the median over the used epochs of all of them.",
    f"Confidence intervals ({percent(CONFIDENCE)}) of speedups and efficiencies: percentile bootstrap of T(N0)/T(N) "
    f"with {RESAMPLES} resamples and a fixed seed, resampling the repeats of each point and then the epochs within each "
    "drawn repeat, baseline and point independently; `runs` and `epochs used` say how much was resampled. "
    "Few epochs give wide (and themselves uncertain) intervals.",
    "Showers per second: showers actually processed in an epoch summed over ranks, divided by its epoch time; "
    "median over epochs.",
    "Speedup S(N) = N0 T(N0) / T(N) with N0 the smallest world size of the series (N0 = 1 gives T(1)/T(N)); "
    "strong efficiency = S/N (global batch fixed); weak efficiency = T(N0)/T(N) (per-rank batch fixed).",
    "Karp-Flatt serial fraction e = (1/S - 1/N)/(1 - 1/N): constant e is a fixed serial part, e rising with N is "
    "overhead growing with N.",
    "Amdahl fit (strong): S = 1/((1-P) + P/N); Gustafson fit (weak): N x weak efficiency = (1-P) + N P; "
    "P fitted by least squares, only with three or more world sizes (with two, any P fits both points).",
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


def _sample(row) -> str:
    """'3 runs x 9 epochs': what the interval of a summary row was resampled from."""
    runs, epochs = int(row["runs_count"]), int(row["epochs_used_count"])
    return f"{runs} run{'s' if runs != 1 else ''}, {epochs} epoch{'s' if epochs != 1 else ''}"


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
            items.append(f"{r.series.key.label}: only N = {n} measured, T = {duration(last['epoch_time_median_s'])} "
                         f"per epoch, {rate(last['showers_per_s'], 'showers/s')}.")
            continue
        col = "strong_efficiency_ratio" if r.series.key.mode == MODE_STRONG else "weak_efficiency_ratio"
        ci = col.replace("_ratio", "_ci")
        text = (f"{r.series.key.label}: {r.series.key.mode} efficiency {ratio(last[col])} at N = {n} "
                f"({percent(CONFIDENCE)} CI {interval(last[f'{ci}_low_ratio'], last[f'{ci}_high_ratio'])}, {_sample(last)}; "
                f"baseline N0 = {n0}), {rate(last['showers_per_s'], 'showers/s')}, communication "
                f"{percent(last['comm_share_fraction'])} of the epoch")
        if math.isfinite(last["showers_per_j"]):
            text += f", {rate(last['showers_per_j'], 'showers/J')} ({last['total_energy_source']})"
        items.append(text + ".")
    for name, best in a.recommended.items():
        items.append(f"Recommended {name} configuration (minimal E x T on its energy/time Pareto front for "
                     f"{count(REFERENCE_SHOWERS)} showers): {best.label}.")
    items += key_result_items(a.projection)
    if a.campaign is not None:
        items += campaign_key_items(a.campaign, a.summary)
    if a.quality is not None:
        items += quality_key_items(a.quality)
    if a.layouts is not None:
        items += layout_key_items(a.layouts)
    if a.variants is not None:
        items += [f"Best variant for {b}" for b in best_items(a.variants)]
    if a.carbon is not None:
        items += carbon_key_items(a.carbon)
    doc.ul(items)


def _series_section(doc: Document, a: Analysis) -> None:
    doc.h(1, "Series")
    doc.p("A series is a set of runs that differ only in their number of ranks: same engine, scaling mode, "
          "particle, workload configuration (config hash), fixed batch and pinned threads per rank. Configurations "
          "inside a series were checked key by key.")
    rows = []
    for r in a.results:
        rows.append([r.series.key.label, ", ".join(str(n) for n in r.series.world_sizes), len(r.series.runs),
                     "; ".join(r.notes) or "-"])
    doc.table(["series", "world sizes N", "runs", "notes"], rows)


def _scaling_section(doc: Document, a: Analysis) -> None:
    doc.h(1, "Scaling")
    s = a.summary
    rows = []
    for r in s.itertuples():
        eff = "strong_efficiency" if r.mode == MODE_STRONG else "weak_efficiency"
        # The baseline's own speedup is exact by definition: no interval to give.
        at_base = r.world_size_ranks == r.baseline_world_size_ranks
        ci = (lambda lo, hi: "(baseline)") if at_base else interval
        rows.append([
            r.series, r.world_size_ranks, r.nodes_count, r.runs_count, r.epochs_used_count,
            f"{duration(r.epoch_time_median_s)} [{duration(r.epoch_time_p25_s)}, {duration(r.epoch_time_p75_s)}]",
            significant(r.showers_per_s),
            f"{ratio(r.speedup_ratio)} {ci(r.speedup_ci_low_ratio, r.speedup_ci_high_ratio)}",
            f"{ratio(getattr(r, f'{eff}_ratio'))} "
            f"{ci(getattr(r, f'{eff}_ci_low_ratio'), getattr(r, f'{eff}_ci_high_ratio'))}",
            ratio(r.karp_flatt_fraction), percent(r.comm_share_fraction), percent(r.data_wait_share_fraction),
            ratio(r.rank_imbalance_ratio, 3)])
    doc.table(["series", "N", "nodes", "runs", "epochs used", "T(N) median [p25, p75]", "showers/s",
               f"speedup (strong S, weak N T0/TN) [{percent(CONFIDENCE)} CI]",
               f"efficiency (strong S/N or weak T0/TN) [{percent(CONFIDENCE)} CI]",
               "Karp-Flatt", "comm share", "data-wait share", "rank imbalance"], rows)
    fits = [[f.series, f.law, ratio(f.parallel_fraction, 3) if f.note == "" else "not enough points",
             ratio(f.serial_fraction, 3) if f.note == "" else "-", f.points_count,
             ratio(f.rms_residual_ratio) if f.note == "" else "-", f.note or "-"]
            for f in fits_table(a.results).itertuples()]
    if fits:
        doc.p("Scaling-law fits (least squares on the speedup; P = parallel fraction). A law is fitted only "
              "with a point to spare: with the baseline and one more world size any P passes through both, "
              "which tests nothing.")
        doc.table(["series", "law", "P", "serial fraction 1-P", "points", "rms residual of S", "note"], fits)
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
        return f"{energy(v)} ({src})"

    rows = [[r.series, r.world_size_ranks, dom(r.gpu_energy_per_epoch_j, r.gpu_energy_source),
             dom(r.cpu_energy_per_epoch_j, r.cpu_energy_source), dom(r.dram_energy_per_epoch_j, r.dram_energy_source),
             f"{energy(r.total_energy_per_epoch_j)} ({r.total_energy_source}; {r.total_energy_domains or '-'})",
             energy(r.energy_per_1000_showers_j), significant(r.showers_per_j), power(r.average_power_w),
             significant(r.edp_j_s), significant(r.ed2p_j_s2),
             f"{energy(r.all_epochs_energy_j)} ({r.all_epochs_energy_source})"]
            for r in s.itertuples()]
    doc.table(["series", "N", "GPU energy per epoch (source)", "CPU energy per epoch (source)",
               "DRAM energy per epoch (source)", "total energy per epoch (source; domains)",
               "energy per 1000 showers", "showers/J", "average power", "EDP (J s)", "ED2P (J s^2)",
               "all epochs energy (source)"], rows)
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
                    why = "; ".join(str(d[k]) for k in ("reason", "hint", "note") if d.get(k))
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
    doc.h(1, f"Energy vs time for {count(REFERENCE_SHOWERS)} showers")
    if not len(a.pareto):
        doc.p("Skipped: no configuration has both an epoch time and an energy per epoch (energy unavailable).")
        return
    doc.p(f"Every configuration is compared on the same work, {count(REFERENCE_SHOWERS)} showers processed "
          "(summed over ranks): time = T(N) / showers per epoch x that number, energy = total energy per epoch / "
          "showers per epoch x the same number (so a weak-scaling run, which processes N times more showers per "
          "iteration, is not credited with the same work as a strong one). There is one front per scaling mode "
          "and particle: weak scaling grows the global batch with N, so its showers do not train like a strong "
          "run's, and showers of different particles are different work. Front: configurations that no other "
          "configuration of the same mode and particle beats on both. Recommended: the front point with the "
          "smallest energy-delay product E x T (ties: the faster). This is throughput at equal work, not time to "
          "a quality target.")
    front = a.pareto[a.pareto["on_front"]]
    doc.table(["front (mode, particle)", "series", "N", "time per shower", "energy per shower",
               f"time for {count(REFERENCE_SHOWERS)} showers", f"energy for {count(REFERENCE_SHOWERS)} showers",
               "E x T (J s)", "energy source", "recommended"],
              [[r.front, r.series, r.world_size_ranks, duration(r.time_per_shower_s), energy(r.energy_per_shower_j),
                duration(r.time_to_solution_s), energy(r.energy_to_solution_j), significant(r.edp_to_solution_j_s),
                r.total_energy_source, r.recommended] for r in front.itertuples()])
    for name, best in a.recommended.items():
        doc.p(f"Recommended {name} configuration: {best.label} (time {duration(best.time_s)}, energy "
              f"{energy(best.energy_j)} for {count(REFERENCE_SHOWERS)} showers).")


def _projection_section(doc: Document, a: Analysis) -> None:
    projection_section(doc, a.projection, "Shipped example networks (pass with `--network NAME`): "
                       + ", ".join(f"`{s.stem}`" for s in shipped_networks()) + ".")


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
    if a.energy_intervals is not None:
        intervals_section(doc, a.energy_intervals, a.engine_comparisons)
    if a.power is not None:
        power_sections(doc, a.power)
    if a.carbon is not None:
        carbon_section(doc, a.carbon)
    _pareto_section(doc, a)
    if a.variants is not None:
        variants_section(doc, a.variants)
    if a.sites is not None:
        sites_section(doc, a.sites)
    if a.campaign is not None and a.campaign.available:
        campaign_section(doc, a.campaign)
    if a.quality is not None:
        time_to_target_section(doc, a.quality)
    if a.layouts is not None:
        layout_section(doc, a.layouts)
    if a.checkpoints is not None:
        checkpoints_section(doc, a.checkpoints, a.mtbf_h)
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
FITS_COLUMNS = ["series", "law", "parallel_fraction", "serial_fraction", "points_count", "rms_residual_ratio", "note"]


def fits_table(results: Sequence[SeriesResult]) -> pd.DataFrame:
    """fits.csv: one row per series with two or more world sizes; the fitted columns are empty
    (NaN) where there were not enough points for a fit, and ``note`` says so."""
    rows = []
    for r in results:
        if r.fit is not None:
            rows.append({"series": r.series.key.label, "law": r.fit.law, "parallel_fraction": r.fit.parallel_fraction,
                         "serial_fraction": r.fit.serial_fraction, "points_count": r.fit.points,
                         "rms_residual_ratio": r.fit.rms_residual, "note": ""})
            continue
        points = int(r.rows.loc[r.rows["epoch_time_median_s"].notna(), "world_size_ranks"].nunique())
        if points >= 2:
            rows.append({"series": r.series.key.label, "law": r.law, "parallel_fraction": math.nan,
                         "serial_fraction": math.nan, "points_count": points, "rms_residual_ratio": math.nan,
                         "note": r.fit_note})
    return pd.DataFrame(rows, columns=FITS_COLUMNS)


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
        fits_table(a.results).to_csv(tmp / "fits.csv", index=False)
        if a.campaign is not None:
            write_campaign_tables(a.campaign, tmp)
        if a.quality is not None:
            write_quality_tables(a.quality, tmp)
        if a.layouts is not None:
            write_layout_tables(a.layouts, tmp)
        if a.carbon is not None:
            write_carbon_tables(a.carbon, tmp)
        if a.variants is not None:
            write_variant_tables(a.variants, tmp)
        if a.energy_intervals is not None:
            a.energy_intervals.to_csv(tmp / "energy_intervals.csv", index=False)
        if a.checkpoints is not None and len(a.checkpoints):
            a.checkpoints.to_csv(tmp / "checkpoints.csv", index=False)
        if a.power is not None:
            write_power_tables(a.power, tmp)
        if a.sites is not None and len(a.sites):
            a.sites.to_csv(tmp / "sites.csv", index=False)
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
