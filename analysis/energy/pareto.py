"""Energy vs time for the same work: the non-dominated (Pareto) set and the recommended configuration.

The work compared is showers processed, not iterations: a weak-scaling run at N ranks processes
N times more showers per iteration than a strong-scaling one, and the training length the runs
were configured with says nothing about how long they ran. So every configuration is taken to
the same job, REFERENCE_SHOWERS showers processed:

    time   = T(N) / showers per epoch x REFERENCE_SHOWERS        (T(N): median epoch time)
    energy = E(N) / showers per epoch x REFERENCE_SHOWERS        (E(N): total energy per epoch)

both minimised. The per-shower values are in the table too.

Modes and particles are never mixed on one front: a weak run's global batch grows with N, so
its showers train differently from a strong run's, and a pion shower is other work than a photon
shower. There is one front, and one recommendation, per (mode, particle).

A point is on its front when no other point of the front's group is at least as good on both
axes and strictly better on one. Recommended = the front point with the smallest energy-delay
product E x T (ties: the faster one).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import pandas as pd

# The job every configuration is compared on, in showers processed (summed over ranks).
REFERENCE_SHOWERS = 1_000_000

COLUMNS = ["front", "series", "mode", "particle", "world_size_ranks", "nodes_count", "showers_per_epoch_count",
           "time_per_shower_s", "energy_per_shower_j", "reference_showers_count", "time_to_solution_s",
           "energy_to_solution_j", "edp_to_solution_j_s", "total_energy_source", "on_front", "recommended"]


@dataclass(frozen=True)
class ParetoPoint:
    label: str
    time_s: float
    energy_j: float

    @property
    def edp_j_s(self) -> float:
        return self.time_s * self.energy_j


def pareto_front(points: Sequence[ParetoPoint]) -> list[ParetoPoint]:
    """Non-dominated points (both coordinates minimised), sorted by time."""
    pts = [p for p in points if math.isfinite(p.time_s) and math.isfinite(p.energy_j)]
    front = []
    for p in pts:
        dominated = any(q.time_s <= p.time_s and q.energy_j <= p.energy_j
                        and (q.time_s < p.time_s or q.energy_j < p.energy_j) for q in pts)
        if not dominated:
            front.append(p)
    return sorted(front, key=lambda p: (p.time_s, p.energy_j))


def recommend(front: Sequence[ParetoPoint]) -> ParetoPoint | None:
    """The front point with minimal EDP (ties broken by time)."""
    return min(front, key=lambda p: (p.edp_j_s, p.time_s)) if front else None


def front_name(mode: str, particle: str) -> str:
    """The group a configuration is compared within, e.g. 'strong photons'."""
    return f"{mode} {particle}"


def point_label(series: str, world_size: int, nodes: int) -> str:
    """'<series>, N=4' (', 2 nodes' added when the ranks span nodes)."""
    return f"{series}, N={world_size}" + (f", {nodes} nodes" if nodes > 1 else "")


def pareto_table(summary: pd.DataFrame, reference_showers: int = REFERENCE_SHOWERS
                 ) -> tuple[pd.DataFrame, dict[str, ParetoPoint]]:
    """Every (series, N) with a time and an energy per shower, flagged on_front / recommended
    within its (mode, particle) front; and the recommended point of each front by front name."""
    if reference_showers <= 0:
        raise ValueError(f"reference_showers must be > 0, got {reference_showers}")
    rows, points = [], []
    for r in summary.itertuples():
        showers = float(r.showers_per_epoch_count)
        t1 = float(r.epoch_time_median_s) / showers if showers > 0 else math.nan
        e1 = float(r.total_energy_per_epoch_j) / showers if showers > 0 else math.nan
        if not (math.isfinite(t1) and math.isfinite(e1)):
            continue
        n, nodes = int(r.world_size_ranks), int(r.nodes_count)
        rows.append({"front": front_name(r.mode, r.particle), "series": r.series, "mode": r.mode,
                     "particle": r.particle, "world_size_ranks": n, "nodes_count": nodes,
                     "showers_per_epoch_count": showers, "time_per_shower_s": t1, "energy_per_shower_j": e1,
                     "reference_showers_count": int(reference_showers),
                     "time_to_solution_s": t1 * reference_showers, "energy_to_solution_j": e1 * reference_showers,
                     "edp_to_solution_j_s": t1 * e1 * reference_showers ** 2,
                     "total_energy_source": r.total_energy_source, "on_front": False, "recommended": False})
        points.append(ParetoPoint(point_label(r.series, n, nodes), rows[-1]["time_to_solution_s"],
                                  rows[-1]["energy_to_solution_j"]))
    best: dict[str, ParetoPoint] = {}
    for name in dict.fromkeys(row["front"] for row in rows):
        members = [i for i, row in enumerate(rows) if row["front"] == name]
        front = pareto_front([points[i] for i in members])
        on = {id(p) for p in front}
        chosen = recommend(front)
        for i in members:
            rows[i]["on_front"] = id(points[i]) in on
            rows[i]["recommended"] = chosen is not None and points[i] is chosen
        if chosen is not None:
            best[name] = chosen
    return pd.DataFrame(rows, columns=COLUMNS), best
