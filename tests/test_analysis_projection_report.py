"""How the report quotes a projection: validated, flagged, or not validated; and its plots."""
from __future__ import annotations

import dataclasses
import math

import pandas as pd
import pytest

from analysis.projection.comm_model import CommModel, load_network, shipped_networks
from analysis.plots import PROJECTION_PARTS, Plotter, projection_parts
from analysis.projection.projection import ComputeModel, ProjectionPoint, ProjectionResult, ValidationRow, project
from analysis.projection.projection_report import (VALIDATION_FLAG_RATIO, key_result_items, projection_plot_note,
                                        validation_verdict)
from analysis.projection.model_size import model_size


def measured(particle: str, mode: str, ns) -> pd.DataFrame:
    return pd.DataFrame([{"series": f"horovod {mode} {particle}", "particle": particle, "mode": mode,
                          "world_size_ranks": n, "efficiency_ratio": 1.0} for n in ns])


def validation(error: float, particle: str = "photons", mode: str = "weak") -> pd.DataFrame:
    row = ValidationRow(particle, mode, "measured (horovod all-reduce)", 2, "1", 0.80, 0.80 * (1 + error), error)
    return pd.DataFrame([dataclasses.asdict(row)])


@pytest.mark.parametrize("error, expected", [
    (0.31, "validation error 31 % > 25 %: treat as indicative"),
    (-0.31, "validation error 31 % > 25 %: treat as indicative"),
    (0.041, "validation error 4.1 % (at N = 2: projected 0.83 vs measured 0.8"),
])
def test_validation_error_is_quoted_and_flagged_above_25_percent(error, expected):
    p = ProjectionResult(True, measured=measured("photons", "weak", [1, 2]), validation=validation(error))
    verdict = validation_verdict(p, "photons", "weak")
    assert verdict.startswith(expected)
    assert ("treat as indicative" in verdict) == (abs(error) > VALIDATION_FLAG_RATIO)


def test_without_a_held_out_n_the_projection_is_not_validated():
    p = ProjectionResult(True, measured=measured("photons", "weak", [1]))
    assert validation_verdict(p, "photons", "weak") == "not validated (only N = 1 measured)"
    assert validation_verdict(p, "pions", "weak") == "not validated (pions not measured)"
    assert validation_verdict(p, "photons", "strong") == "not validated (no strong-scaling series measured)"
    two = ProjectionResult(True, measured=measured("photons", "weak", [1, 2]))
    assert validation_verdict(two, "photons", "weak").startswith("not validated (no all-reduce benchmark")


def small_projection() -> ProjectionResult:
    net = load_network(next(p for p in shipped_networks() if p.stem == "infiniband_hdr"))
    comm = CommModel(net, 1e-3)
    sizes = {pt: model_size(None, pt) for pt in ("photons", "pions")}
    compute = ComputeModel("photons", 0.1, 0.001, 0.05, "test", strong_global_batch_showers=256,
                           weak_per_rank_batch_showers=128)
    computes = {"photons": compute, "pions": compute.scaled("pions", 2.0, "test")}
    pts = []
    for pt, c in computes.items():
        pts += project(c, sizes[pt].critic_grad_bytes, sizes[pt].generator_grad_bytes, 5, comm,
                       [2**k for k in range(11)])
    points = pd.DataFrame([dataclasses.asdict(x) for x in pts],
                          columns=[f.name for f in dataclasses.fields(ProjectionPoint)])
    return ProjectionResult(True, networks=[net], models=[comm], compute=computes, sizes=sizes, points=points,
                            measured=measured("photons", "weak", [1, 2]), validation=validation(0.31))


def test_key_results_stop_strong_at_the_cutoff_and_carry_the_flag():
    items = key_result_items(small_projection())
    assert len(items) == 4
    strong = [i for i in items if "photons strong" in i][0]
    assert "at N = 256 (the largest N before the per-rank batch falls below 1 shower)" in strong
    weak = [i for i in items if "photons weak" in i][0]
    assert "at N = 1024" in weak and "InfiniBand HDR 200 Gb/s" in weak
    assert "validation error 31 % > 25 %: treat as indicative" in weak and "Assumes" in weak
    assert "c = 1 ms per all-reduce" in weak
    assert all("not validated (pions not measured)" in i for i in items if "pions" in i.split(" efficiency")[0])


def test_breakdown_parts_add_up_to_the_iteration_time():
    p = small_projection()
    parts = projection_parts(p.points)
    total = sum(parts[k] for k in PROJECTION_PARTS)
    assert total == pytest.approx(p.points["iteration_time_s"].to_numpy())
    assert (parts["fixed"][p.points["world_size_ranks"] > 1] == pytest.approx(6e-3))  # (n_disc + 1) c
    assert "pions were not measured" in projection_plot_note(p) and "x1.94" in projection_plot_note(p)


def test_projection_plots_start_at_8_ranks_and_are_drawn(tmp_path):
    p = small_projection()
    plotter = Plotter(tmp_path, [])
    eff = plotter.plot_projection(p.points, [p.networks[0].name])
    parts = plotter.plot_projection_breakdown(p.points, [p.networks[0].name])
    assert eff is not None and parts is not None
    assert eff.png.stat().st_size > 10_000 and parts.png.stat().st_size > 10_000
    assert "stop where the per-rank batch would fall below one shower" in eff.caption
    assert plotter.plot_projection(p.points[p.points["world_size_ranks"] < 8], None) is None
    assert "N >= 8" in plotter.skipped["projection"]
    assert not math.isnan(p.points["efficiency_ratio"].max())
