"""Pure analysis functions with hand-computed answers (no run directories)."""
from __future__ import annotations

import math

import numpy as np
import pytest

from analysis import energy_metrics as em
from analysis.projection.model_size import model_size
from analysis.energy.pareto import ParetoPoint, pareto_front, recommend
from analysis.scaling_metrics import (amdahl_fit, amdahl_speedup, gustafson_fit, karp_flatt, speedup,
                                      strong_efficiency, weak_efficiency)


def test_textbook_strong_scaling_numbers():
    s = speedup(100.0, 55.0)
    assert s == pytest.approx(1.818, abs=1e-3)
    assert strong_efficiency(100.0, 55.0, 2) == pytest.approx(0.909, abs=1e-3)
    assert karp_flatt(s, 2) == pytest.approx(0.1, abs=1e-3)
    assert math.isnan(karp_flatt(1.0, 1))


def test_baseline_other_than_one_rank():
    # N0 = 2 at 50 s, N = 8 at 15 s: S = 2 * 50 / 15, efficiency S / 8.
    assert speedup(50.0, 15.0, n_base=2) == pytest.approx(6.667, abs=1e-3)
    assert strong_efficiency(50.0, 15.0, 8, n_base=2) == pytest.approx(0.8333, abs=1e-3)


def test_weak_efficiency():
    assert weak_efficiency(10.0, 12.5) == pytest.approx(0.8)
    assert math.isnan(weak_efficiency(10.0, 0.0))


def test_amdahl_fit_recovers_parallel_fraction():
    n = np.array([1, 2, 4, 8, 16])
    fit = amdahl_fit(n, amdahl_speedup(n, 0.95))
    assert fit is not None and fit.parallel_fraction == pytest.approx(0.95, abs=1e-4)
    assert fit.serial_fraction == pytest.approx(0.05, abs=1e-4)
    assert amdahl_fit([4], [3.0]) is None


def test_gustafson_fit_recovers_parallel_fraction():
    n = np.array([1, 2, 4, 8])
    fit = gustafson_fit(n, 0.1 + 0.9 * n)
    assert fit is not None and fit.parallel_fraction == pytest.approx(0.9, abs=1e-9)


def test_node_energy_counted_once_and_gpus_summed():
    # Two ranks on one node: the reader carries the node's CPU energy, the other is not_reader.
    one_node = em.domain_energy([500.0, math.nan], ["measured", "not_reader"])
    assert one_node == em.DomainEnergy(500.0, "measured")
    two_nodes = em.domain_energy([500.0, 400.0], ["measured", "measured"])
    assert two_nodes.energy_j == pytest.approx(900.0)
    assert em.domain_energy([math.nan, math.nan], ["unavailable", "not_reader"]).source == "unavailable"
    # A reader whose counter failed makes the sum a lower bound.
    assert em.domain_energy([500.0, math.nan], ["measured", "unavailable"]) == em.DomainEnergy(500.0, "partial")


def test_estimates_never_hide_in_a_measured_total():
    parts = {"gpu": em.DomainEnergy(1000.0, "measured"), "cpu": em.DomainEnergy(300.0, "estimated"),
             "dram": em.DomainEnergy(math.nan, "unavailable")}
    tot = em.total_energy(parts)
    assert tot.energy_j == pytest.approx(1300.0)
    assert tot.source == "includes estimates"
    assert tot.domains == "gpu+cpu"
    assert em.combine_sources(["estimated", "estimated"]) == "estimated"
    assert em.combine_sources(["measured", "not_reader"]) == "measured"
    assert em.total_energy({"gpu": em.DomainEnergy(math.nan, "unavailable")}).source == "unavailable"


def test_derived_energy_metrics():
    assert em.energy_per_1000_showers_j(2000.0, 4000) == pytest.approx(500.0)
    assert em.showers_per_j(2000.0, 4000) == pytest.approx(2.0)
    assert em.average_power_w(2000.0, 10.0) == pytest.approx(200.0)
    assert em.edp_j_s(2000.0, 10.0) == pytest.approx(20000.0)
    assert em.ed2p_j_s2(2000.0, 10.0) == pytest.approx(200000.0)


def test_parameter_counts_by_hand():
    photons = model_size(None, "photons")
    # generator 51 -> 50 -> 100 -> 200 -> 368; bn_swish normalises every layer, the output too
    # (2 trainable per unit)
    gen = (51 * 50 + 50) + (50 * 100 + 100) + (100 * 200 + 200) + (200 * 368 + 368) + 2 * (50 + 100 + 200 + 368)
    critic = (369 * 368 + 368) + 2 * (368 * 368 + 368) + (368 + 1)
    assert (photons.n_voxels, photons.generator_params, photons.critic_params) == (368, gen, critic)
    assert photons.critic_grad_bytes == 4 * critic
    pions = model_size({"generator": "relu", "critic_widths": [100]}, "pions")
    assert pions.n_voxels == 533
    assert pions.generator_params == (51 * 50 + 50) + (50 * 100 + 100) + (100 * 200 + 200) + (200 * 533 + 533)
    assert pions.critic_params == (534 * 100 + 100) + (100 + 1)


def test_pareto_front_and_recommendation():
    pts = [ParetoPoint("a", 10, 100), ParetoPoint("b", 20, 50), ParetoPoint("c", 15, 120),
           ParetoPoint("d", 40, 45), ParetoPoint("e", 20, 60), ParetoPoint("f", math.nan, 1)]
    front = pareto_front(pts)
    assert [p.label for p in front] == ["a", "b", "d"]
    # E x T: a 1000, b 1000, d 1800 -> tie between a and b goes to the faster one.
    assert recommend(front).label == "a"
    assert recommend([]) is None
