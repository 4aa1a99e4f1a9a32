"""Energy vs time-to-solution: the non-dominated (Pareto) set and the recommended configuration.

Axes: time to solution = T(N) x epochs to solution; energy to solution = total energy per
epoch x epochs to solution, where epochs to solution = a training length common to all
configurations (iterations) / iterations per epoch, so every point is the same training job.
Both are minimised.

A point is on the front when no other point is at least as good on both axes and strictly
better on one. Recommended configuration = the front point with the smallest energy-delay
product E x T (ties: the faster one).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import pandas as pd


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


def pareto_table(summary: pd.DataFrame) -> tuple[pd.DataFrame, ParetoPoint | None]:
    """Every (series, N) with an energy-to-solution value, flagged on_front / recommended."""
    cols = ["series", "world_size_ranks", "time_to_solution_s", "energy_to_solution_j", "edp_to_solution_j_s",
            "total_energy_source", "on_front", "recommended"]
    ok = summary[summary["time_to_solution_s"].notna() & summary["energy_to_solution_j"].notna()]
    points = [ParetoPoint(f"{r.series}, N={int(r.world_size_ranks)}", float(r.time_to_solution_s),
                          float(r.energy_to_solution_j)) for r in ok.itertuples()]
    front = pareto_front(points)
    best = recommend(front)
    on_front = {p.label for p in front}
    rows = []
    for p, r in zip(points, ok.itertuples()):
        rows.append({"series": r.series, "world_size_ranks": int(r.world_size_ranks), "time_to_solution_s": p.time_s,
                     "energy_to_solution_j": p.energy_j, "edp_to_solution_j_s": p.edp_j_s,
                     "total_energy_source": r.total_energy_source, "on_front": p.label in on_front,
                     "recommended": best is not None and p.label == best.label})
    return pd.DataFrame(rows, columns=cols), best
