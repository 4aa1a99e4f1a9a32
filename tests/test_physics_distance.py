"""bologan.physics_distance: CaloChallenge's FPD and KPD (jetnet 0.2.5 definitions), numpy only."""
from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.linalg

from bologan import physics_distance as pd
from bologan.features import high_level_features
from bologan.geometry import PHOTONS, PIONS
from bologan.metrics import pool_features, shower_features

# Photon voxel indices (layers start at 0, 8, 168, 358, 363; radial index fastest).
L1_R3_A7 = 8 + 7 * 16 + 3          # r 7 mm, alpha +pi/2
L2_R3_A2 = 168 + 2 * 19 + 3        # r 12.5 mm, alpha -pi/2
L2_R3_A7 = 168 + 7 * 19 + 3        # r 12.5 mm, alpha +pi/2


def _gaussians(n: int, d: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(n, d))


# ----------------------------------------------------------------------- feature vector

def test_feature_vector_names_follow_calochallenge_order():
    names = pd.feature_vector_names(PHOTONS)
    assert names == (
        "log10_e_inc",
        "log10_e_layer_0", "log10_e_layer_1", "log10_e_layer_2", "log10_e_layer_3", "log10_e_layer_12",
        "ec_eta_1", "ec_eta_2", "ec_phi_1", "ec_phi_2",
        "width_eta_1", "width_eta_2", "width_phi_1", "width_phi_2",
        "log10_e_tot",
        "sparsity_0", "sparsity_1", "sparsity_2", "sparsity_3", "sparsity_12",
        "ec_r_0", "ec_r_1", "ec_r_2", "ec_r_3", "ec_r_12",
        "width_r_0", "width_r_1", "width_r_2", "width_r_3", "width_r_12")
    # Pions: 7 layers, 4 of them binned in angle (1, 2, 12, 13).
    assert len(pd.feature_vector_names(PIONS)) == 1 + 7 + 4 * 4 + 1 + 7 + 7 + 7


def test_feature_vector_values_and_the_1_mev_threshold():
    v = np.zeros((1, PHOTONS.n_voxels))
    v[0, 2] = 100.0          # L0, r 20 mm
    v[0, 0] = -0.2           # negative: zeroed
    v[0, L1_R3_A7] = 50.0    # L1: eta 0, phi +7 mm
    v[0, L2_R3_A2] = 30.0    # L2: phi -12.5 and +12.5 mm
    v[0, L2_R3_A7] = 30.0
    v[0, 358] = 0.999        # L3, just below 1 MeV: zeroed, so layer 3 is empty
    v[0, 364] = 10.0         # L12, r 150 mm
    v[0, 365] = 30.0         # L12, r 300 mm
    v[0, 366] = 1.0          # exactly 1 MeV is kept (only energies below it are zeroed)
    momentum = np.array([512.0])
    x = pd.feature_vector(shower_features("photons", momentum, v))[0]
    col = dict(zip(pd.feature_vector_names(PHOTONS), x, strict=True))
    e_l12 = 41.0
    assert col["log10_e_inc"] == pytest.approx(math.log10(512.0))
    assert col["log10_e_layer_0"] == pytest.approx(2.0)
    assert col["log10_e_layer_3"] == pytest.approx(-8.0)          # log10(0 + 1e-8)
    assert col["log10_e_layer_12"] == pytest.approx(math.log10(e_l12))
    assert col["log10_e_tot"] == pytest.approx(math.log10(100 + 50 + 60 + e_l12))
    assert col["ec_phi_1"] == pytest.approx(0.07) and col["ec_eta_1"] == pytest.approx(0.0, abs=1e-12)
    assert col["width_phi_2"] == pytest.approx(0.125) and col["ec_phi_2"] == pytest.approx(0.0, abs=1e-12)
    assert col["sparsity_3"] == 1.0 and col["sparsity_12"] == pytest.approx(2 / 5)
    assert col["sparsity_0"] == pytest.approx(7 / 8)
    # L12: 10 MeV at 150, 30 at 300, 1 at 700 mm (bin [400, 1000]); centre and width in decimetres.
    r, e = np.array([150.0, 300.0, 700.0]), np.array([10.0, 30.0, 1.0])
    mean = (r * e).sum() / e.sum()
    assert col["ec_r_12"] == pytest.approx(mean / 100)
    assert col["width_r_12"] == pytest.approx(math.sqrt((r * r * e).sum() / e.sum() - mean**2) / 100)


def test_feature_vector_keeps_the_file_incident_energy_through_pooling():
    v = np.zeros((2, PIONS.n_voxels))
    v[:, 0] = 50.0
    parts = [shower_features("pions", np.array([1024.0]), v[:1]), shower_features("pions", np.array([4096.0]), v[1:])]
    x = pd.feature_vector(pool_features(parts))
    # The momentum (the file's incident_energies), not the pion's kinetic energy.
    assert x[:, 0] == pytest.approx(np.log10([1024.0, 4096.0]))
    with pytest.raises(ValueError, match="incident energies"):
        bare = high_level_features(PIONS, v, np.array([1.0, 2.0]))
        pd.feature_vector(type(bare)(bare.names, bare.groups, bare.values, None))


def test_normalisation_divides_by_the_reference_max_abs():
    ref = np.array([[-4.0, 0.0, 1.0], [2.0, 0.0, 0.5]])
    gen = np.array([[8.0, 3.0, 2.0]])
    r, g = pd.normalise_by_reference(ref, gen)
    assert r.tolist() == [[-1.0, 0.0, 1.0], [0.5, 0.0, 0.5]]
    assert g.tolist() == [[2.0, 3.0, 2.0]]          # an all-zero reference feature is left alone


# ----------------------------------------------------------------------- Fréchet and FPD

def test_frechet_gaussian_closed_form():
    # Diagonal covariances: |dmu|^2 + sum (sqrt(a) - sqrt(b))^2 = 1 + 4 + (1 - 2)^2 + (2 - 3)^2.
    assert pd.frechet_gaussian(np.zeros(2), np.diag([1.0, 4.0]), np.array([1.0, 2.0]),
                               np.diag([4.0, 9.0])) == pytest.approx(7.0)
    # Non-commuting covariances against an independent evaluation of the definition.
    a = np.array([[2.0, 0.5], [0.5, 1.0]])
    b = np.array([[1.0, -0.3], [-0.3, 3.0]])
    ra = scipy.linalg.sqrtm(a)
    expected = np.trace(a) + np.trace(b) - 2 * np.trace(scipy.linalg.sqrtm(ra @ b @ ra)).real
    assert pd.frechet_gaussian(np.zeros(2), a, np.zeros(2), b) == pytest.approx(expected, rel=1e-9)


def test_batch_sizes_are_evenly_spaced_in_inverse_n():
    sizes = pd.fpd_batch_sizes()
    assert len(sizes) == pd.FPD_POINTS and sizes[0] == 10_000 and abs(int(sizes[-1]) - 50_000) <= 1
    steps = np.diff(1.0 / sizes)
    assert np.allclose(steps, steps[0], rtol=1e-3) and (steps < 0).all()


def test_extrapolation_recovers_a_planted_intercept():
    sizes = pd.fpd_batch_sizes()
    value, err = pd.extrapolate_to_infinite_n(sizes, 0.042 + 37.0 / sizes)
    assert value == pytest.approx(0.042, rel=1e-6) and err < 1e-6
    noise = np.random.default_rng(1).normal(scale=1e-4, size=sizes.size)
    value, err = pd.extrapolate_to_infinite_n(sizes, 0.042 + 37.0 / sizes + noise)
    assert abs(value - 0.042) < 4 * err and 0 < err < 1e-3
    # The bounds: a line heading below zero is held at intercept 0.
    value, _ = pd.extrapolate_to_infinite_n(sizes, -0.01 + 600.0 / sizes)
    assert 0.0 <= value < 1e-9


def test_fpd_of_identical_samples_is_zero():
    x = _gaussians(4000, 3, seed=2)
    value, err = pd.fpd(x, x)
    assert 0.0 <= value < 1e-4 and err < 1e-4


def test_fpd_of_a_known_mean_shift():
    x = _gaussians(4000, 3, seed=3)
    shift = np.array([0.3, -0.4, 0.0])           # |shift|^2 = 0.25
    value, err = pd.fpd(x, x + shift, normalise=False)
    assert value == pytest.approx(0.25, rel=0.02) and err < 0.01
    # Normalised by the reference's max |x|, a common rescaling of the features cancels.
    scale = np.array([1e3, 1.0, 1e-2])
    assert pd.fpd(x * scale, (x + shift) * scale)[0] == pytest.approx(pd.fpd(x, x + shift)[0], rel=1e-6)


def test_fpd_and_kpd_are_nan_for_non_finite_features():
    x = _gaussians(100, 2, seed=4)
    y = x.copy()
    y[3, 1] = np.nan
    assert all(math.isnan(v) for v in pd.fpd(x, y) + pd.kpd(x, y, batch_size=50))


# ----------------------------------------------------------------------- MMD and KPD

def _direct_mmd(x: np.ndarray, y: np.ndarray) -> float:
    """The estimator written out with full kernel matrices, as jetnet computes it."""
    gamma = 1.0 / x.shape[1]
    kxx, kyy, kxy = ((a @ b.T * gamma + 1.0) ** 4 for a, b in ((x, x), (y, y), (x, y)))
    m, n = len(x), len(y)
    return ((kxx.sum() - np.trace(kxx)) / (m * (m - 1)) + (kyy.sum() - np.trace(kyy)) / (n * (n - 1))
            - 2 * kxy.mean())


def test_blocked_mmd_equals_the_full_kernel_matrices(monkeypatch):
    x, y = _gaussians(300, 5, seed=5), _gaussians(250, 5, seed=6) + 0.2
    monkeypatch.setattr(pd, "_KERNEL_ROWS", 64)        # several blocks, a ragged last one
    assert pd.mmd_poly_unbiased(x, y) == pytest.approx(_direct_mmd(x, y), rel=1e-9)


def test_kpd_of_identical_distributions_is_zero_and_a_shift_is_not():
    x = _gaussians(3000, 4, seed=7)
    same, same_err = pd.kpd(x, x, batch_size=1500)
    assert abs(same) < 1e-4 and abs(same) < 3 * same_err + 1e-6
    shifted, shifted_err = pd.kpd(x, x + 0.5, batch_size=1500)
    assert shifted > 10 * max(shifted_err, abs(same))


def test_kpd_median_and_error_follow_jetnet_batches():
    x, y = _gaussians(500, 3, seed=8), _gaussians(500, 3, seed=9) + 0.3
    rx, ry = pd.normalise_by_reference(x, y)
    values = []
    for i in range(pd.KPD_BATCHES):
        rng = np.random.default_rng(pd.SEED + 1000 * i)
        a, b = rx[rng.choice(len(rx), size=200)], ry[rng.choice(len(ry), size=200)]
        values.append(_direct_mmd(a, b))
    lo, hi = np.percentile(values, [16.275, 83.725])
    median, err = pd.kpd(x, y, batch_size=200)
    assert median == pytest.approx(np.median(values), rel=1e-9)
    assert err == pytest.approx((hi - lo) / 2, rel=1e-9)


def test_physics_distances_are_reported_times_1e3():
    x = _gaussians(3000, 3, seed=10)
    d = pd.physics_distances(x, x + np.array([0.5, 0.0, 0.0]))
    f, f_err = pd.fpd(x, x + np.array([0.5, 0.0, 0.0]))
    assert d.fpd_x1e3 == pytest.approx(1e3 * f, rel=1e-12) and d.fpd_err_x1e3 == pytest.approx(1e3 * f_err)
    assert d.kpd_x1e3 > 0
