"""Synthetic showers: reproducible, valid, and dependent on the incident energy."""
from __future__ import annotations

import time

import numpy as np
import pytest

from common.errors import UserError
from bologan.geometry import MOMENTA_MEV, PHOTONS, PIONS
from bologan.synthetic import REFERENCE_COUNTS, events_per_momentum, generate_showers

LOW, MID, HIGH = MOMENTA_MEV[0], MOMENTA_MEV[8], MOMENTA_MEV[10]  # 256 MeV, 65.5 GeV, 262 GeV


@pytest.fixture(scope="module")
def sets():
    three = [LOW, 1024.0, 8192.0, MID, HIGH]
    return {name: generate_showers(name, 6000, seed=1, momenta_mev=three) for name in ("photons", "pions")}


def _per_momentum(showers, fn):
    return {p: fn(showers.voxels_mev[showers.momentum_mev == p], p) for p in np.unique(showers.momentum_mev)}


def _layer_fractions(showers, p):
    v = showers.voxels_mev[showers.momentum_mev == p].astype(np.float64)
    layer = np.array([v[:, s].sum() for s in showers.particle.layer_slices().values()])
    return layer / layer.sum()


def test_reference_counts_match_pions_file_1():
    assert sum(REFERENCE_COUNTS.values()) == 120_230
    counts = events_per_momentum(120_230, MOMENTA_MEV)
    assert counts.tolist() == [10_000] * 11 + [5_000, 3_000, 2_000, 230]


@pytest.mark.parametrize("n", [15, 20, 1000, 121_000])
def test_event_split_sums_and_covers_every_momentum(n):
    counts = events_per_momentum(n, MOMENTA_MEV)
    assert counts.sum() == n
    assert counts.min() >= 1
    assert counts[0] >= counts[-1]


def test_same_seed_same_showers_other_seed_different():
    a = generate_showers("photons", 500, seed=3)
    b = generate_showers("photons", 500, seed=3)
    c = generate_showers("photons", 500, seed=4)
    assert np.array_equal(a.voxels_mev, b.voxels_mev) and np.array_equal(a.momentum_mev, b.momentum_mev)
    assert not np.array_equal(a.voxels_mev, c.voxels_mev)
    assert a.source == "synthetic seed=3"


@pytest.mark.parametrize("name", ["photons", "pions"])
def test_valid_layout_and_values(sets, name):
    s = sets[name]
    assert s.voxels_mev.dtype == np.float32 and s.momentum_mev.dtype == np.float64
    assert s.voxels_mev.shape == (6000, s.particle.n_voxels)
    assert np.isfinite(s.voxels_mev).all() and s.voxels_mev.min() >= 0
    assert (s.voxels_mev == 0).any() and (s.voxels_mev > 0).any()


@pytest.mark.parametrize("name", ["photons", "pions"])
def test_total_energy_rises_with_momentum_and_response_changes(sets, name):
    s = sets[name]
    mean_total = _per_momentum(s, lambda v, p: v.sum(axis=1, dtype=np.float64).mean())
    values = [mean_total[p] for p in sorted(mean_total)]
    assert all(b > a for a, b in zip(values, values[1:]))
    response = {p: mean_total[p] / s.particle.ekin_mev(p) for p in mean_total}
    # Etot/Ekin itself depends on energy, so a condition-blind generator cannot match it.
    assert abs(response[HIGH] - response[LOW]) > 0.08


@pytest.mark.parametrize("name", ["photons", "pions"])
def test_layer_fractions_change_with_momentum(sets, name):
    s = sets[name]
    low, high = _layer_fractions(s, LOW), _layer_fractions(s, HIGH)
    assert 0.5 * np.abs(high - low).sum() > 0.1  # total variation distance


def test_photon_showers_move_deeper_with_energy(sets):
    s = sets["photons"]
    depth = {p: float(np.dot(_layer_fractions(s, p), np.arange(len(PHOTONS.layers))))
             for p in (LOW, 1024.0, 8192.0, MID, HIGH)}
    values = [depth[p] for p in sorted(depth)]
    assert all(b > a for a, b in zip(values, values[1:]))


@pytest.mark.parametrize("name", ["photons", "pions"])
def test_more_empty_voxels_at_low_energy(sets, name):
    zeros = _per_momentum(sets[name], lambda v, p: float((v == 0).mean()))
    assert zeros[LOW] > zeros[HIGH] + 0.2


def test_pions_noisier_and_wider_than_photons(sets):
    def rel_spread(s, p):
        t = s.voxels_mev[s.momentum_mev == p].sum(axis=1, dtype=np.float64)
        return t.std() / t.mean()

    for p in (1024.0, MID):
        assert rel_spread(sets["pions"], p) > 2.5 * rel_spread(sets["photons"], p)

    def core_share(s):  # layer 1: energy share of the innermost radial bin
        ly = s.particle.layers[1]
        v = s.voxels_mev[s.momentum_mev == MID][:, s.particle.layer_slices()[1]].astype(np.float64)
        v = v.reshape(len(v), ly.n_alpha, ly.n_radial)
        return v[:, :, 0].sum() / v.sum()

    assert core_share(sets["photons"]) > core_share(sets["pions"]) + 0.1


def test_explicit_momenta_and_bad_arguments():
    s = generate_showers(PIONS, 40, seed=0, momenta_mev=[1000.0, 3000.0])
    assert sorted(set(s.momentum_mev.tolist())) == [1000.0, 3000.0]
    assert "off-grid" in s.source
    with pytest.raises(UserError, match="positive integer"):
        generate_showers("photons", 0, seed=1)
    with pytest.raises(UserError, match="not a positive number"):
        generate_showers("photons", 10, seed=1, momenta_mev=[1024.0, -5.0])
    with pytest.raises(UserError, match="unknown particle"):
        generate_showers("muons", 10, seed=1)


def test_full_size_pion_set_is_fast():
    t0 = time.perf_counter()
    s = generate_showers("pions", 121_000, seed=10)
    seconds = time.perf_counter() - t0
    assert len(s) == 121_000
    counts = {p: int((s.momentum_mev == p).sum()) for p in MOMENTA_MEV}
    assert counts[MOMENTA_MEV[0]] > counts[MOMENTA_MEV[-1]] > 0
    assert seconds < 30, f"121k pion showers took {seconds:.1f} s"
