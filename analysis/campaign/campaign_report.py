"""The report's campaign section and its figure (makespan vs group size): see ``analysis.campaign.campaign``."""
from __future__ import annotations

import math
from pathlib import Path

import pandas as pd

from analysis.campaign.campaign import (BOLOGAN_ITERATIONS, ENSEMBLE_COLUMNS, MAKESPAN_COLUMNS, NOT_MEASURED, PLAN_COLUMNS, CampaignResult,
                               weak_efficiency_at)
from analysis.numbers import count, duration, energy, ratio, significant
from analysis.plots import MARKERS, PALETTE, Plotter, PlotFile, unit_scale
from analysis.report import Document
from analysis.numbers import is_finite

PLOT_NAME = "campaign_makespan"


def key_result_items(c: CampaignResult, summary: pd.DataFrame) -> list[str]:
    """Key-results lines: ensemble efficiency beside weak efficiency, and the recommended layout."""
    items = []
    for e in c.ensembles.itertuples():
        if e.members_count < 2:
            continue
        weak = weak_efficiency_at(summary, e.particle, int(e.world_size_ranks))
        items.append(f"{e.series}: ensemble efficiency {ratio(e.ensemble_efficiency_ratio)} at N = "
                     f"{e.world_size_ranks} ({e.members_count} GANs, slowest member counted; baseline "
                     f"{e.baseline}), data-parallel weak efficiency at the same N "
                     f"{ratio(weak) if is_finite(weak) else NOT_MEASURED}.")
    for r in c.plan[c.plan["recommended"].astype(bool)].itertuples():
        items.append(f"Campaign of {r.gans_count} {r.particle} GANs on {r.ranks_count} ranks: "
                     f"{r.groups_count} group(s) of {r.group_size_ranks} rank(s), makespan "
                     f"{duration(r.makespan_s)}, energy {energy(r.energy_j)} for "
                     f"{count(c.request.gan_iterations)} iterations per GAN ({r.measured_by}).")
    return items


def campaign_section(doc: Document, c: CampaignResult) -> None:
    doc.h(1, "Ensembles and campaigns")
    budget = count(c.request.gan_iterations)
    if not c.available:
        doc.p("No ensemble run (`scaling.run --mode ensemble`), no job-array campaign and no plan asked for "
              "(`--campaign-gans M`): nothing to show.")
        return
    which = ("BoloGAN's production budget, the default of `--gan-iterations`"
             if c.request.gan_iterations == BOLOGAN_ITERATIONS else
             f"set with `--gan-iterations`; BoloGAN trains {count(BOLOGAN_ITERATIONS)}")
    doc.p(f"Budget per trained GAN: {budget} iterations ({which}). "
          "Iteration time of a member: its slowest rank per epoch / iterations, median over epochs that are "
          "neither warm-up nor interrupted; an ensemble's time is its slowest member's. Ensemble efficiency = "
          "iteration time of one member alone / that of the slowest member at N. GANs per node-hour = "
          f"3600 x members / ({budget} x iteration time x nodes). Energy per GAN = {budget} x the run's energy per "
          "epoch (every node and GPU once) / (members x iterations per epoch).")
    if len(c.ensembles):
        doc.table(["series", "run", "N", "nodes", "group size", "members", "member iteration (median)",
                   "slowest member", "baseline (one member alone)", "ensemble efficiency", "GANs per node-hour",
                   "energy per GAN (source)", "members at target", "energy to target (median)", "notes"],
                  [[e.series, e.run_id, e.world_size_ranks, e.nodes_count, e.group_size_ranks, e.members_count,
                    duration(e.member_iteration_median_s), duration(e.slowest_member_iteration_s),
                    f"{e.baseline}: {duration(e.baseline_iteration_s)}", ratio(e.ensemble_efficiency_ratio),
                    significant(e.gans_per_node_hour), f"{energy(e.energy_per_gan_j)} ({e.energy_source})",
                    e.members_reached_count if c.request.target else "no target",
                    energy(e.energy_to_target_median_j) if c.request.target else "-", e.notes or "-"]
                   for e in c.ensembles.itertuples()])
    if len(c.makespans):
        doc.p("Campaign makespan (MLPerf HPC's TTTa): last run.json end_time minus first start_time over the "
              "campaign's GANs, wall clock (queue waits between requeues included).")
        doc.table(["campaign", "layout", "GANs", "completed", "restarts", "first start", "last stop", "makespan",
                   "notes"],
                  [[m.campaign, m.layout, m.gans_count, m.completed_count, m.restarts_count, m.first_start or "-",
                    m.last_stop or "-", duration(m.makespan_s), m.notes or "-"] for m in c.makespans.itertuples()])
    if len(c.plan):
        first = c.plan.iloc[0]
        doc.p(f"Plan: {first['gans_count']} GANs on P = {first['ranks_count']} ranks. Group size g (dividing P): P/g "
              "groups side by side, each training its share of the GANs one after the other, data parallel over "
              "its g ranks. Makespan = GANs per group x budget x iteration time; energy = GANs x budget x energy "
              "per GAN-iteration; both from the run that measured exactly that layout (data parallel at N = P "
              "for g = P, strong scaling preferred as it trains the same GAN as one rank; an ensemble at N = P "
              f"with group size g otherwise). A layout no run measured says \"{NOT_MEASURED}\". The estimate "
              "columns price the layout with the data-parallel run at N = g measured alone, assuming the groups "
              "do not slow each other (an estimate, not a measurement).")
        doc.table(["particle", "group size g", "groups", "GANs per group", "measured by", "iteration time",
                   "makespan", "energy (source)", "estimate: makespan", "estimate: energy", "estimate basis",
                   "recommended", "notes"],
                  [[r.particle, r.group_size_ranks, r.groups_count, r.gans_per_group_count, r.measured_by,
                    duration(r.iteration_time_s), duration(r.makespan_s) if is_finite(r.makespan_s) else NOT_MEASURED,
                    f"{energy(r.energy_j)} ({r.energy_source})" if is_finite(r.makespan_s) else NOT_MEASURED,
                    duration(r.estimate_makespan_s), energy(r.estimate_energy_j), r.estimate_basis or "-",
                    r.recommended, r.notes or "-"] for r in c.plan.itertuples()])
        for r in c.plan[c.plan["recommended"].astype(bool)].itertuples():
            doc.p(f"Recommended for {r.particle}: group size {r.group_size_ranks} ({r.groups_count} group(s)), "
                  f"makespan {duration(r.makespan_s)}, energy {energy(r.energy_j)} (shortest measured makespan; "
                  "ties go to less energy).")
        if not c.plan["recommended"].astype(bool).any():
            doc.p("No layout of the plan was measured: no recommendation (see the estimate columns).")
    doc.p("Columns of campaign_ensembles.csv, campaign_makespan.csv and campaign_plan.csv:")
    doc.table(["column", "unit", "how it is obtained"],
              [[col.name, col.unit, col.how] for col in (*ENSEMBLE_COLUMNS, *MAKESPAN_COLUMNS, *PLAN_COLUMNS)])


def write_tables(c: CampaignResult, out: Path) -> list[Path]:
    """The campaign CSV files that have rows; returns them."""
    written = []
    for name, frame in (("campaign_ensembles", c.ensembles), ("campaign_makespan", c.makespans),
                        ("campaign_plan", c.plan)):
        if len(frame):
            path = Path(out) / f"{name}.csv"
            frame.to_csv(path, index=False)
            written.append(path)
    return written


def plot_campaign(plotter: Plotter, c: CampaignResult) -> PlotFile | None:
    """Makespan vs group size: measured layouts filled and joined, estimates hollow and dashed,
    layouts without a measurement named along the bottom."""
    plan = c.plan
    if not len(plan):
        plotter._skip(PLOT_NAME, "no campaign plan asked for (--campaign-gans)")
        return None
    values = [*plan["makespan_s"].astype(float), *plan["estimate_makespan_s"].astype(float)]
    if not any(math.isfinite(v) for v in values):
        plotter._skip(PLOT_NAME, "no layout of the plan has a measured or estimated rate")
        return None
    div, unit = unit_scale(values, "s")
    fig, axes = plotter._figure(width=6.4, height=4.3)
    ax = axes[0, 0]
    for i, (particle, g) in enumerate(plan.groupby("particle", sort=True)):
        colour, marker = PALETTE[i % len(PALETTE)], MARKERS[i % len(MARKERS)]
        g = g.sort_values("group_size_ranks")
        m = g[g["makespan_s"].map(is_finite)]
        ax.plot(m["group_size_ranks"], m["makespan_s"].astype(float) / div, color=colour, marker=marker,
                label=f"{particle}: measured")
        est = g[g["estimate_makespan_s"].map(is_finite)]
        if len(est):
            ax.plot(est["group_size_ranks"], est["estimate_makespan_s"].astype(float) / div, color=colour,
                    marker=marker, linestyle="--", markerfacecolor="white", label=f"{particle}: estimate (groups independent)")
        for r in g[g["recommended"].astype(bool)].itertuples():
            ax.scatter([r.group_size_ranks], [float(r.makespan_s) / div], marker="*", s=180, color=colour,
                       edgecolors="black", zorder=4)
        for r in g[~g["makespan_s"].map(is_finite)].itertuples():
            ax.annotate(NOT_MEASURED, (r.group_size_ranks, 0.02), xycoords=("data", "axes fraction"),
                        ha="center", fontsize=7.5, color=colour, rotation=90, va="bottom")
    plotter.log2_axis(ax, plan["group_size_ranks"].tolist(), "ranks per GAN g (log2 scale)")
    ax.set_ylabel(f"campaign makespan ({unit})")
    first = plan.iloc[0]
    ax.set_title(f"{first['gans_count']} GANs on {first['ranks_count']} ranks")
    ax.legend(loc="best", fontsize=7.5)
    return plotter._save(fig, PLOT_NAME, "Campaign makespan vs group size",
                         f"Makespan of {first['gans_count']} GANs of {count(c.request.gan_iterations)} iterations on "
                         f"{first['ranks_count']} ranks for each group size g (P/g groups side by side, data parallel "
                         "inside a group), from the measured rates (campaign_plan.csv); dashed and hollow: estimates "
                         "from the data-parallel run at N = g measured alone; the star marks the recommended layout.")
