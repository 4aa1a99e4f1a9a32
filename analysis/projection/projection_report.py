"""The projection's part of the report: what the model is, what it was calibrated and validated
on, and the one-line form in which the key results may quote it.

A projection is only ever quoted with its network, its assumptions and its validation verdict:
the out-of-sample error at the measured N (``ProjectionResult.validation``), flagged above
``VALIDATION_FLAG_RATIO``, or "not validated" when nothing could be held out.
"""
from __future__ import annotations

import math

import pandas as pd

from analysis.projection.comm_model import ALGORITHM_RING, Network
from analysis.numbers import duration, percent, ratio, significant
from analysis.plots import PROJECTION_LABELS, PROJECTION_MIN_WORLD_SIZE, PROJECTION_PARTS, projection_parts
from analysis.projection.projection import ProjectionResult
from analysis.report import Document
from common.vocab import MODE_STRONG, MODE_WEAK

VALIDATION_TARGET_RATIO = 0.10
"""Out-of-sample error the model aims for (relative, on the efficiency)."""
VALIDATION_FLAG_RATIO = 0.25
"""Above this out-of-sample error a projection is shown but flagged as indicative."""
PAST_CUTOFF = "-"
"""Table cell of a strong-scaling N past the per-rank batch cut-off (no point there)."""


def file_networks(p: ProjectionResult) -> list[Network]:
    """The networks a projection is quoted on: the network files given, else the measured links."""
    files = p.networks[len(p.comm_fits):]       # measured networks come first, one per fitted engine
    return files or list(p.networks)


def measured_particles(p: ProjectionResult) -> set[str]:
    return set(p.measured["particle"]) if len(p.measured) else set()


def assumptions_line(p: ProjectionResult, particle: str | None = None) -> str:
    """The projection's assumptions in one sentence (for the key results)."""
    model = next((m for m in p.models if m.network in file_networks(p)), p.models[0])
    if p.comm_fits:
        c_text = f"c = {duration(model.fixed_cost_s)} per all-reduce from the benchmark"
    elif model.fixed_cost_s > 0:
        c_text = f"c = {duration(model.fixed_cost_s)} per all-reduce"
    else:
        c_text = "c = 0 (no all-reduce benchmark: a lower bound)"
    measured = sorted(measured_particles(p))
    compute = "compute per iteration as measured here"
    if particle is not None and measured and particle not in measured:
        compute = f"{measured[0]}' compute per iteration scaled by the ratio of trainable parameters"
    stragglers = ("stragglers from the recorded step-time quantiles"
                  if any(c.step_time is not None for c in p.compute.values())
                  else "identical ranks (no step-time quantiles recorded)")
    return (f"Assumes {compute}, {p.n_disc + 1} all-reduces per iteration not overlapped with it, {c_text}, "
            f"the {model.algorithm} algorithm, each network's links and ranks per node, {stragglers}.")


def scaled_particles_note(p: ProjectionResult) -> str:
    """How unmeasured particles got a compute time ('' when every particle was measured)."""
    measured = sorted(measured_particles(p))
    notes = []
    for particle, size in p.sizes.items():
        if particle in measured or not measured:
            continue
        ref = p.sizes[measured[0]]
        notes.append(f"{particle} were not measured: their compute time is {ref.particle}' scaled by the ratio of "
                     f"trainable parameters, x{size.total_params / ref.total_params:.2f} (dense layers cost a "
                     "fixed number of FLOPs per weight and shower, so this is a FLOP ratio up to the critic's "
                     f"larger share: critic x{size.critic_params / ref.critic_params:.2f}, generator "
                     f"x{size.generator_params / ref.generator_params:.2f}), and are not validated.")
    return " ".join(notes)


def projection_plot_note(p: ProjectionResult) -> str:
    """What the projection plots cannot show themselves: scaled particles, straggler data."""
    parts = [scaled_particles_note(p)]
    if not any(c.step_time is not None for c in p.compute.values()):
        parts.append("No step-time quantiles were recorded: no straggler excess (identical ranks).")
    return " ".join(x for x in parts if x)


def validation_rows(p: ProjectionResult, particle: str, mode: str) -> pd.DataFrame:
    v = p.validation
    if not len(v):
        return v
    return v[(v["particle"] == particle) & (v["mode"] == mode) & v["relative_error_ratio"].notna()]


def validation_verdict(p: ProjectionResult, particle: str, mode: str, short: bool = False) -> str:
    """'validation error 4.1 % (...)', flagged above ``VALIDATION_FLAG_RATIO``, or 'not validated (why)'.

    The error quoted is the largest over the held-out N; ``short``: without the explanation.
    """
    rows = validation_rows(p, particle, mode)
    if len(rows):
        worst = rows.loc[rows["relative_error_ratio"].abs().idxmax()]
        err = abs(float(worst["relative_error_ratio"]))
        flagged = err > VALIDATION_FLAG_RATIO
        if short:
            return f"{percent(err)} (flagged)" if flagged else percent(err)
        held = sorted(int(n) for n in rows["held_out_world_size_ranks"])
        at = int(worst["held_out_world_size_ranks"])
        which = f"at N = {at}" if len(held) == 1 else f"largest of held-out N = {', '.join(map(str, held))}, at N = {at}"
        how = (f"{which}: projected {ratio(worst['projected_efficiency_ratio'])} vs measured "
               f"{ratio(worst['measured_efficiency_ratio'])}, from training at N = "
               f"{str(worst['fitted_on_world_sizes']).replace(',', ', ')} and the all-reduce benchmark only")
        if flagged:
            return (f"validation error {percent(err)} > {percent(VALIDATION_FLAG_RATIO)}: treat as indicative "
                    f"({how})")
        return f"validation error {percent(err)} ({how})"
    m = p.measured
    if particle not in measured_particles(p):
        why = f"{particle} not measured"
    else:
        ns = sorted(set(m[(m["particle"] == particle) & (m["mode"] == mode)]["world_size_ranks"]))
        if not ns:
            why = f"no {mode}-scaling series measured"
        elif len(ns) < 2:
            why = f"only N = {ns[0]} measured"
        else:
            why = "no all-reduce benchmark of the series' engine to predict the other N from"
    return "not validated" if short else f"not validated ({why})"


def _last_n(points: pd.DataFrame) -> int:
    return int(points["world_size_ranks"].max()) if len(points) else 0


def key_result_items(p: ProjectionResult) -> list[str]:
    """One key-result line per (particle, mode): the value on every quoted network at the largest N
    with a point (strong scaling stops at the batch cut-off), its validation and its assumptions."""
    if not p.available or not len(p.points):
        return []
    nets = [n.name for n in file_networks(p)]
    items = []
    for particle in dict.fromkeys(p.points["particle"]):
        for mode in (MODE_STRONG, MODE_WEAK):
            pts = p.points[(p.points["particle"] == particle) & (p.points["mode"] == mode)
                           & p.points["network"].isin(nets)]
            top = _last_n(pts)
            if not top:
                continue
            at = pts[pts["world_size_ranks"] == top].set_index("network")["efficiency_ratio"]
            values = ", ".join(f"{net} {ratio(at[net])}" for net in nets if net in at.index)
            cut = (f" (the largest N before the per-rank batch falls below "
                   f"{significant(p.min_per_rank_batch_showers)} shower)"
                   if mode == MODE_STRONG and top < _last_n(p.points) else "")
            items.append(f"Projection (not a measurement) of {particle} {mode} efficiency at N = {top}{cut}: "
                         f"{values}; {validation_verdict(p, particle, mode)}. "
                         f"{assumptions_line(p, particle)}")
    return items


# ----------------------------------------------------------------------------------- section
MODEL_TEXT = (
    "Time per iteration at N ranks: `t_it(N) = t_nc(N) * s(N) + n_disc * t(b_critic, N) + t(b_generator, N)`, "
    "with one all-reduce of b bytes `t(b, N) = c + a(N) + 2(N-1)/N * b / B`. "
    "`c` is the engine's fixed software cost per collective (Horovod's cycle and negotiation, tf.distribute's "
    "launch), calibrated on the smallest sizes of the all-reduce micro-benchmark and the same for every N. "
    "`a(N)` is the latency term of the all-reduce algorithm: tree (MPICH's recursive doubling / Rabenseifner, "
    "NCCL's double binary tree for small and medium messages) `2 (ceil(log2 k) alpha_intra + ceil(log2 m) "
    "alpha_inter)` for k ranks per node on m nodes, or ring `2(N-1) alpha`. `2(N-1)/N * b / B` is the bandwidth "
    "term, B the slowest link the collective crosses: the intra-node link while all ranks share a node, else "
    "the slower of the two. The per-hop latency alpha is never fitted from one world size: there it cannot be "
    "told apart from c. Ranks fill nodes in order (ranks per node from the network file). `t_nc` is the "
    "measured time per iteration outside the all-reduces (strong: `a/N + b` fitted to the strong series, b = 0 "
    "with one N; weak: constant), `s(N)` the straggler factor: the expected slowest of N ranks over the mean, "
    "from the step-time quantiles the runs recorded, every collective waiting for the slowest rank. Gradients "
    "are 4 bytes per trainable parameter. Projected strong efficiency = t_it(1) / (N t_it(N)), weak = "
    "t_it(1) / t_it(N). Strong scaling stops where the per-rank batch would fall below {cutoff} shower: "
    "no point is computed past it. These are projections, not measurements.")


def _link_cells(net: Network) -> list:
    intra = net.intra_node
    return [net.ranks_per_node, net.bandwidth_gbit_s, net.latency_us,
            intra.bandwidth_bytes_per_s * 8 / 1e9 if intra else "as inter-node",
            intra.latency_s * 1e6 if intra else "as inter-node"]


def _validation_section(doc: Document, p: ProjectionResult) -> None:
    doc.h(2, "Out-of-sample validation")
    doc.p("Each measured N above the smallest is held out in turn: the compute model is fitted on the other "
          "world sizes' training only, the communication comes from the all-reduce micro-benchmark (never from "
          "the held-out training), and the efficiency predicted at the held-out N is compared with the "
          "measured one. With N = 1 and 2 measured this predicts N = 2 from N = 1 training plus the N = 2 "
          f"benchmark. Target: within {percent(VALIDATION_TARGET_RATIO)}; a projection whose validation error "
          f"exceeds {percent(VALIDATION_FLAG_RATIO)} is shown but flagged as indicative.")
    v = p.validation
    if not len(v):
        doc.p("No validation was possible: it needs two or more measured world sizes of a series and the "
              "all-reduce benchmark of its engine. Every projection below is therefore not validated.")
        return
    doc.table(["particle", "mode", "measured link (model)", "held-out N", "fitted on N", "measured efficiency",
               "projected efficiency", "relative error", "verdict"],
              [[r.particle, r.mode, r.network, r.held_out_world_size_ranks, r.fitted_on_world_sizes,
                ratio(r.measured_efficiency_ratio), ratio(r.projected_efficiency_ratio),
                f"{r.relative_error_ratio:+.1%}" if math.isfinite(r.relative_error_ratio) else "n/a",
                "flagged: indicative" if abs(r.relative_error_ratio) > VALIDATION_FLAG_RATIO
                else "within target" if abs(r.relative_error_ratio) <= VALIDATION_TARGET_RATIO else "above target"]
               for r in v.itertuples()])


def _efficiency_table(doc: Document, p: ProjectionResult) -> None:
    show = sorted(n for n in set(p.points["world_size_ranks"]) if n >= PROJECTION_MIN_WORLD_SIZE)
    rows = []
    for (net, particle, mode), g in p.points.groupby(["network", "particle", "mode"], sort=False):
        eff = dict(zip(g["world_size_ranks"], g["efficiency_ratio"]))
        rows.append([net, particle, mode] + [ratio(eff[n]) if n in eff else PAST_CUTOFF for n in show]
                    + [validation_verdict(p, particle, mode, short=True)])
    doc.p(f"Projected efficiency (`{PAST_CUTOFF}`: past the strong-scaling cut-off, no point):")
    doc.table(["network", "particle", "mode"] + [f"N={n}" for n in show] + ["validation"], rows)


def _breakdown_table(doc: Document, p: ProjectionResult) -> None:
    """What the iteration time is made of at the largest projected N (and what led at the smallest)."""
    rows = []
    for (net, particle, mode), g in p.points.groupby(["network", "particle", "mode"], sort=False):
        g = g[g["world_size_ranks"] >= PROJECTION_MIN_WORLD_SIZE].sort_values("world_size_ranks")
        if not len(g):
            continue
        parts = projection_parts(g)
        shares = {k: parts[k] / g["iteration_time_s"].to_numpy(float) for k in PROJECTION_PARTS}
        lead = [max(PROJECTION_PARTS, key=lambda k, i=i: shares[k][i]) for i in (0, -1)]
        first, last = g.iloc[0], g.iloc[-1]
        rows.append([net, particle, mode, f"{PROJECTION_LABELS[lead[0]]} (N = {int(first.world_size_ranks)})",
                     int(last.world_size_ranks), duration(last.iteration_time_s)]
                    + [percent(shares[k][-1]) for k in PROJECTION_PARTS] + [PROJECTION_LABELS[lead[1]]])
    doc.p("What the projected time per iteration t_it is made of at the largest projected N (strong scaling: "
          "the last N before the cut-off), and which part led at the smallest plotted N:")
    doc.table(["network", "particle", "mode", "largest part at the smallest N", "N", "t_it"]
              + [PROJECTION_LABELS[k] for k in PROJECTION_PARTS] + ["largest part"], rows)


def _size_range(p: ProjectionResult) -> str:
    sizes = [b for s in p.sizes.values() for b in (s.critic_grad_bytes, s.generator_grad_bytes)]
    return f"{significant(min(sizes) / 1e6, 2)}-{significant(max(sizes) / 1e6, 2)} MB" if sizes else "n/a"


def projection_section(doc: Document, p: ProjectionResult, networks_hint: str) -> None:
    doc.h(1, "Projection to many ranks")
    doc.p(MODEL_TEXT.format(cutoff=significant(p.min_per_rank_batch_showers)))
    if not p.available:
        doc.ul(p.notes)
        doc.p(networks_hint)
        return
    if p.comm_fits:
        doc.p("Calibration on the all-reduce micro-benchmark (non-negative least squares on relative error):")
        doc.table(["engine", "world sizes", "points", "fit"],
                  [[e, ", ".join(str(n) for n in f.world_sizes), f.points, f.describe()]
                   for e, f in p.comm_fits.items()])
    doc.p("Networks (measured links first, then the network files; figures per direction, latency per hop):")
    doc.table(["network", "ranks per node", "inter-node bandwidth (Gbit/s)", "inter-node latency (us)",
               "intra-node bandwidth (Gbit/s)", "intra-node latency (us)", "fixed cost c", "algorithm", "origin"],
              [[n.name, *_link_cells(n), duration(m.fixed_cost_s), m.algorithm, n.origin]
               for n, m in zip(p.networks, p.models)])
    sources = []
    for n, m in zip(p.networks, p.models):
        text = f"{n.name}: {n.description + '. ' if n.description else ''}Inter-node figures: {n.source or '-'}."
        if n.intra_node is not None:
            text += f" Intra-node figures: {n.intra_node.source}."
        text += f" Fixed cost: {m.fixed_cost_origin}."
        sources.append(text)
    doc.p("Where the figures come from:")
    doc.ul(sources)
    doc.table(["particle", "voxels", "generator parameters", "critic parameters", "bytes per critic all-reduce",
               "bytes per generator all-reduce"],
              [[s.particle, s.n_voxels, s.generator_params, s.critic_params, s.critic_grad_bytes,
                s.generator_grad_bytes] for s in p.sizes.values()])
    doc.p("Assumptions and where the compute time comes from:")
    ring = any(m.algorithm == ALGORITHM_RING for m in p.models)
    doc.ul([assumptions_line(p)]
           + [f"{c.particle}: {c.basis}" for c in p.compute.values()] + [f"n_disc = {p.n_disc}"]
           + ([] if ring else [f"The ring algorithm (`2(N-1) alpha`) would be the conservative choice for large "
                               "messages; the tree is what MPI and NCCL pick for messages of BoloGAN's size "
                               f"({_size_range(p)}) at many ranks."])
           + p.notes)
    _validation_section(doc, p)
    doc.h(2, "Projected efficiency")
    _efficiency_table(doc, p)
    _breakdown_table(doc, p)
    if len(p.check):
        doc.p("In-sample check at every measured N: the compute model fitted on all measured N, the "
              "communication from the benchmark model. At the baseline N the two agree by construction; elsewhere "
              "the gap is communication and waiting that the benchmark does not show (the test of the model is "
              "the out-of-sample validation above):")
        doc.table(["network", "particle", "mode", "N", "measured efficiency", "projected efficiency"],
                  [[r.network, r.particle, r.mode, r.world_size_ranks, ratio(r.measured_efficiency_ratio),
                    ratio(r.projected_efficiency_ratio)] for r in p.check.itertuples()])
