"""bologan.features: CaloChallenge high-level features, separation power, Fréchet distance."""
from __future__ import annotations

import math

import numpy as np
import pytest

from bologan.features import (
    FEATURE_GROUPS,
    Features,
    feature_frechet_distance,
    feature_names,
    frechet_distance,
    gaussian_frechet_distance,
    high_level_features,
    reference_bin_edges,
    separation_power,
    separation_powers,
    voxel_coordinates,
)
from bologan.geometry import PHOTONS, PIONS

# Flattened photon voxel index of (layer, angular bin, radial bin): layers start at
# 0 (L0, 8 voxels), 8 (L1, 16 x 10), 168 (L2, 19 x 10), 358 (L3, 5), 363 (L12, 5); radial fastest.
L1_R3_A7 = 8 + 7 * 16 + 3          # r in [6, 8] mm -> 7 mm; alpha bin 7 of 10 -> +pi/2
L2_R3_A2 = 168 + 2 * 19 + 3        # r in [10, 15] mm -> 12.5 mm; alpha bin 2 -> -pi/2
L2_R3_A7 = 168 + 7 * 19 + 3        # 12.5 mm, +pi/2


def _hand_showers() -> tuple[np.ndarray, np.ndarray]:
    """Shower 0: hot voxels at known places; shower 1: empty (everything below 1 MeV)."""
    v = np.zeros((2, PHOTONS.n_voxels))
    v[0, 2] = 100.0          # L0 radial bin [10, 30] mm -> r = 20
    v[0, 0] = -0.2           # negative (swish output): below threshold, zeroed
    v[0, L1_R3_A7] = 50.0
    v[0, L2_R3_A2] = 30.0    # two opposite voxels: phi = -12.5 and +12.5
    v[0, L2_R3_A7] = 30.0
    v[0, 358] = 0.5          # L3, below the 1 MeV threshold: zeroed
    v[0, 364] = 10.0         # L12 radial bin [100, 200] -> 150 mm
    v[0, 365] = 30.0         # L12 radial bin [200, 400] -> 300 mm
    v[1, 5] = 0.9
    return v, np.array([400.0, 1000.0])


def test_features_match_hand_computed_values():
    voxels, e_inc = _hand_showers()
    f = high_level_features(PHOTONS, voxels, e_inc)
    hand = {
        "e_ratio": 250.0 / 400.0,
        "e_layer_0": 100.0, "e_layer_1": 50.0, "e_layer_2": 60.0, "e_layer_3": 0.0, "e_layer_12": 40.0,
        "ec_r_0": 20.0, "width_r_0": 0.0, "sparsity_0": 7 / 8,
        "ec_eta_1": 0.0, "ec_phi_1": 7.0, "ec_r_1": 7.0,
        "width_eta_1": 0.0, "width_phi_1": 0.0, "width_r_1": 0.0, "sparsity_1": 159 / 160,
        "ec_eta_2": 0.0, "ec_phi_2": 0.0, "ec_r_2": 12.5,
        "width_eta_2": 0.0, "width_phi_2": 12.5, "width_r_2": 0.0, "sparsity_2": 188 / 190,
        "ec_r_3": 0.0, "width_r_3": 0.0, "sparsity_3": 1.0,
        # energy 10 at 150 mm and 30 at 300 mm: mean 262.5, std sqrt(0.25 * 0.75) * 150
        "ec_r_12": 262.5, "width_r_12": math.sqrt(0.25 * 0.75) * 150.0, "sparsity_12": 3 / 5,
    }
    assert set(hand) == set(f.names)
    for name, value in hand.items():
        assert f.column(name)[0] == pytest.approx(value, abs=1e-9), name
    # the empty shower: no energy, centres and widths 0 (not NaN), every voxel sparse
    assert np.all(f.values[1, [f.names.index(n) for n in f.names if not n.startswith("sparsity")]] == 0.0)
    assert all(f.column(f"sparsity_{lid}")[1] == 1.0 for lid in PHOTONS.layer_ids)


def test_eta_phi_only_for_angle_binned_layers_and_groups():
    names, groups = feature_names(PIONS)
    angular = [ly.layer_id for ly in PIONS.layers if ly.n_alpha > 1]
    assert angular == [1, 2, 12, 13]
    assert [n for n in names if n.startswith("ec_eta_")] == [f"ec_eta_{lid}" for lid in angular]
    assert len(names) == 1 + 7 * 4 + 4 * 4        # e_ratio; e_layer, ec_r, width_r, sparsity; 4 eta/phi
    assert set(groups) == set(FEATURE_GROUPS)
    assert groups[names.index("width_phi_13")] == "width"
    rng = np.random.default_rng(0)
    f = high_level_features(PIONS, rng.exponential(5.0, (20, PIONS.n_voxels)), np.full(20, 1000.0))
    assert f.values.shape == (20, len(names)) and np.all(np.isfinite(f.values))


def test_voxel_coordinates_radial_fastest():
    r, alpha = voxel_coordinates(PHOTONS, 1)
    assert r.shape == alpha.shape == (160,)
    assert r[:3].tolist() == [1.0, 3.0, 5.0] and r[16] == 1.0     # edges 0, 2, 4, 6
    assert alpha[0] == pytest.approx(-math.pi + math.pi / 10) and alpha[16] == pytest.approx(-math.pi + 3 * math.pi / 10)
    r0, a0 = voxel_coordinates(PHOTONS, 0)
    assert r0.tolist() == [2.5, 7.5, 20.0, 40.0, 75.0, 150.0, 300.0, 500.0] and np.all(a0 == 0.0)


def test_bad_shape_is_an_error():
    with pytest.raises(ValueError, match="368"):
        high_level_features(PHOTONS, np.zeros((3, 10)), np.ones(3))


# ----------------------------------------------------------------------- separation power

def test_separation_power_identical_disjoint_and_hand_value():
    assert separation_power([3, 0, 5, 2], [6, 0, 10, 4]) == 0.0       # same shape, other statistics
    assert separation_power([3, 4, 0, 0], [0, 0, 1, 9]) == pytest.approx(1.0)
    # [0.5, 0.5] vs [0.25, 0.75]: 0.5 * (0.25^2 / 0.75 + 0.25^2 / 1.25)
    assert separation_power([1, 1], [1, 3]) == pytest.approx(0.5 * (0.0625 / 0.75 + 0.0625 / 1.25))
    with pytest.raises(ValueError):
        separation_power([0, 0], [1, 1])


def _features(values: np.ndarray) -> Features:
    d = values.shape[1]
    return Features(names=tuple(f"f{i}" for i in range(d)), groups=("e_layer",) * d, values=values)


def test_separation_powers_zero_for_same_sample_one_beyond_the_reference():
    rng = np.random.default_rng(1)
    ref = _features(np.column_stack([rng.lognormal(5, 2, 5000), rng.integers(0, 8, 5000) / 8,
                                     np.full(5000, 3.0)]))
    assert all(v == 0.0 for v in separation_powers(ref, ref).values())
    # every generated value above the reference maximum lands in the overflow bin: disjoint
    beyond = _features(ref.values + np.array([1e6, 2.0, 1.0]))
    assert separation_powers(ref, beyond) == pytest.approx({"f0": 1.0, "f1": 1.0, "f2": 1.0})


def test_reference_bin_edges_one_bin_per_discrete_value():
    edges = reference_bin_edges(np.array([0.0, 0.25, 0.25, 0.5, 1.0]))
    assert edges.tolist() == [0.0, 0.125, 0.375, 0.75, 1.0]
    quantile = reference_bin_edges(np.arange(1001.0), bins=10)
    assert quantile == pytest.approx([100.0 * k for k in range(11)])


# ----------------------------------------------------------------------- Fréchet distance

def test_gaussian_frechet_closed_forms():
    # commuting covariances: |dmu|^2 + sum (sigma1 - sigma2)^2 = 5 + 1 + 1
    assert gaussian_frechet_distance([0, 0], np.diag([1.0, 4.0]), [1, 2], np.diag([4.0, 9.0])) == pytest.approx(7.0)
    # S1 = I, S2 with eigenvalues 3 and 1: 2 + 4 - 2 (sqrt(3) + 1)
    s2 = np.array([[2.0, 1.0], [1.0, 2.0]])
    assert gaussian_frechet_distance([0, 0], np.eye(2), [0, 0], s2) == pytest.approx(4.0 - 2.0 * math.sqrt(3.0))


def test_frechet_distance_of_samples():
    rng = np.random.default_rng(2)
    x = rng.normal(size=(3000, 4))
    assert frechet_distance(x, x) == pytest.approx(0.0, abs=1e-9)
    cov2 = np.array([[2.0, 1.0], [1.0, 2.0]])
    a = rng.multivariate_normal([0.0, 0.0], np.eye(2), 200_000)
    b = rng.multivariate_normal([0.3, -0.4], cov2, 200_000)
    expected = 0.25 + 4.0 - 2.0 * math.sqrt(3.0)
    assert frechet_distance(a, b) == pytest.approx(expected, abs=0.02)


def test_frechet_distance_with_singular_covariances():
    rng = np.random.default_rng(3)
    a, b = rng.normal(0.0, 1.0, 5000), rng.normal(0.5, 2.0, 5000)
    one_d = frechet_distance(a[:, None], b[:, None])
    # a duplicated column doubles the distance; a column constant in both adds nothing
    x = np.column_stack([a, a, np.full(5000, 7.0)])
    y = np.column_stack([b, b, np.full(5000, 7.0)])
    value = frechet_distance(x, y)
    assert math.isfinite(value) and value == pytest.approx(2.0 * one_d, rel=1e-6)
    assert one_d == pytest.approx((a.mean() - b.mean()) ** 2 + (a.std(ddof=1) - b.std(ddof=1)) ** 2, rel=1e-9)


def test_feature_frechet_standardises_by_the_reference():
    rng = np.random.default_rng(4)
    ref = rng.normal([0.0, 100.0], [1.0, 50.0], (4000, 2))
    gen = rng.normal([0.2, 120.0], [1.1, 40.0], (4000, 2))
    fpd = feature_frechet_distance(_features(ref), _features(gen))
    mean, std = ref.mean(axis=0), ref.std(axis=0)
    assert fpd == pytest.approx(frechet_distance((ref - mean) / std, (gen - mean) / std), rel=1e-12)
    # a change of units (MeV -> keV on the second feature) leaves it unchanged
    keV = np.array([1.0, 1000.0])
    assert feature_frechet_distance(_features(ref * keV), _features(gen * keV)) == pytest.approx(fpd, rel=1e-9)
    assert feature_frechet_distance(_features(ref), _features(ref)) == pytest.approx(0.0, abs=1e-9)
    # a feature constant in the reference keeps its units (scale 1) and stays finite
    const = np.column_stack([ref, np.zeros(4000)])
    spread = np.column_stack([gen, rng.normal(0.0, 1.0, 4000)])
    assert math.isfinite(feature_frechet_distance(_features(const), _features(spread)))
