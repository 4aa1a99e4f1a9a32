"""bologan.metrics: chi2 test, histogram range, W1/KS, checkpoint score and best iteration."""
from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pytest

from bologan.metrics import (
    RANGE_RMS_FACTORS,
    best_iteration,
    chi2_ww,
    ks_statistic,
    reference_range,
    score_checkpoint,
    wasserstein1,
)


def test_chi2_hand_computed():
    # y1 = [10, 20, 0, 30, 0]  W1 = 60
    # y2 = [12, 18, 0,  5, 5]  W2 = 40
    # term_i = (W1*y2 - W2*y1)^2 / (W1^2*y2 + W2^2*y1)
    #   bin 0: (720 - 400)^2  / (43200 + 16000) = 102400 / 59200 = 64/37
    #   bin 1: (1080 - 800)^2 / (64800 + 32000) =  78400 / 96800 = 98/121
    #   bin 2: empty in both -> skipped, one degree of freedom fewer
    #   bin 3: (300 - 1200)^2 / (18000 + 48000) = 810000 / 66000 = 135/11
    #   bin 4: (300 - 0)^2    / (18000 + 0)     =  90000 / 18000 = 5
    # NDF = 5 bins - 1 - 1 empty-in-both = 3
    chi2, ndf = chi2_ww([10, 20, 0, 30, 0], [12, 18, 0, 5, 5])
    assert chi2 == pytest.approx(64 / 37 + 98 / 121 + 135 / 11 + 5, rel=1e-12)
    assert ndf == 3


def test_chi2_is_symmetric_and_ndf_skips_only_bins_empty_in_both():
    a, b = [0, 4, 0, 7, 1, 0], [0, 0, 3, 9, 2, 0]
    chi_ab, ndf_ab = chi2_ww(a, b)
    chi_ba, ndf_ba = chi2_ww(b, a)
    assert chi_ab == pytest.approx(chi_ba)
    # bins 0 and 5 are empty in both; bins 1 and 2 are empty in one only and still count
    assert ndf_ab == ndf_ba == 6 - 1 - 2


def test_chi2_identical_histograms_is_zero():
    chi2, ndf = chi2_ww([5, 0, 12, 3], [5, 0, 12, 3])
    assert chi2 == 0.0
    assert ndf == 2


def test_chi2_same_shape_different_totals_is_zero():
    # The test compares shapes: twice the statistics in the same proportions agrees perfectly.
    chi2, _ = chi2_ww([5, 10, 20], [10, 20, 40])
    assert chi2 == pytest.approx(0.0, abs=1e-12)


def test_chi2_empty_histogram_is_infinite():
    chi2, ndf = chi2_ww([3, 4, 5], [0, 0, 0])
    assert math.isinf(chi2)
    assert ndf == 2


def test_chi2_rejects_mismatched_bins():
    with pytest.raises(ValueError):
        chi2_ww([1, 2], [1, 2, 3])


def test_reference_range_uses_histogram_peak_and_in_window_rms():
    # Window [0, 2*100] in 100 bins of width 2. 1000 values at 50.5 (bin [50, 52), centre 51)
    # and 600 at 60.5; one value at 250 lies outside the window and must not enter the RMS.
    etot = np.concatenate([np.full(1000, 50.5), np.full(600, 60.5), [250.0]])
    # in-window: mean = 54.25 (so the peak is NOT the mean), variance = p(1-p)*10^2, p = 1000/1600
    rms = math.sqrt(0.625 * 0.375 * 10.0**2)
    lo, hi = reference_range(etot, 3.0, 3.0, e_nominal=100.0)
    assert lo == pytest.approx(51.0 - 3 * rms)
    assert hi == pytest.approx(51.0 + 3 * rms)
    a, b = RANGE_RMS_FACTORS["pions"]
    assert (a, b) == (4.0, 3.5)
    lo, hi = reference_range(etot, a, b, e_nominal=100.0)
    assert lo == pytest.approx(51.0 - 4 * rms)
    assert hi == pytest.approx(51.0 + 3.5 * rms)


def test_reference_range_clamps_at_zero():
    etot = np.concatenate([np.full(100, 1.5), np.full(100, 30.5)])  # peak bin [1, 2), RMS 14.5
    lo, hi = reference_range(etot, 3.0, 3.0, e_nominal=50.0)
    assert lo == 0.0
    assert hi == pytest.approx(1.5 + 3 * 14.5)


def test_photon_and_pion_factors():
    assert RANGE_RMS_FACTORS == {"photons": (3.0, 3.0), "pions": (4.0, 3.5)}


def test_w1_and_ks_known_values():
    rng = np.random.default_rng(1)
    x = rng.normal(10.0, 2.0, 5000)
    assert wasserstein1(x, x + 0.7) == pytest.approx(0.7, rel=1e-9)
    assert wasserstein1(x, x) == 0.0
    assert ks_statistic(x, x) == 0.0
    assert ks_statistic(x, x + 100.0) == 1.0
    # F_x - F_y at 1, 2, 3, 4: 1/3, 1/3, 1/3, 0
    assert ks_statistic([1, 2, 3], [2, 3, 4]) == pytest.approx(1 / 3)
    assert wasserstein1([1, 2, 3], [2, 3, 4]) == pytest.approx(1.0)


def test_score_checkpoint_identical_is_zero_and_shift_is_worse():
    rng = np.random.default_rng(2)
    ref = {1024.0: rng.normal(1000.0, 40.0, 4000), 65536.0: rng.normal(64000.0, 900.0, 4000)}
    per_energy, total = score_checkpoint(ref, ref, "photons")
    assert [s.momentum_mev for s in per_energy] == [1024.0, 65536.0]
    assert total.chi2 == 0.0 and total.w1_gev == 0.0 and total.ks == 0.0
    assert total.ndf == sum(s.ndf for s in per_energy) > 0
    shifts_mev = {1024.0: 20.0, 65536.0: 450.0}  # about half a standard deviation each
    shifted = {p: v + shifts_mev[p] for p, v in ref.items()}
    per_energy, worse = score_checkpoint(ref, shifted, "photons")
    assert worse.chi2_ndf > 10.0
    assert worse.chi2_ndf == pytest.approx(worse.chi2 / worse.ndf)
    # W1 is reported in GeV: the shift is 0.02 GeV at 1 GeV and 0.45 GeV at 64 GeV
    assert per_energy[0].w1_gev == pytest.approx(0.02, rel=1e-6)
    assert worse.w1_gev == pytest.approx((0.02 + 0.45) / 2, rel=1e-3)


def test_score_checkpoint_missing_momentum_is_an_error():
    with pytest.raises(ValueError, match="65536"):
        score_checkpoint({1024.0: np.ones(10), 65536.0: np.ones(10)}, {1024.0: np.ones(10)}, "photons")


def _rec(iteration, chi2_ndf):
    return SimpleNamespace(iteration=iteration, chi2_ndf=chi2_ndf)


def test_best_iteration_minimum_and_ties_go_later():
    assert best_iteration([_rec(100, 3.0), _rec(200, 1.2), _rec(300, 2.0)]) == 200
    # equal scores: the later checkpoint wins, whatever the order of the records
    assert best_iteration([_rec(100, 3.0), _rec(200, 1.5), _rec(300, 2.0), _rec(400, 1.5)]) == 400
    assert best_iteration([_rec(400, 1.5), _rec(200, 1.5), _rec(100, 3.0)]) == 400


def test_best_iteration_never_picks_nan_and_rejects_empty():
    assert best_iteration([_rec(100, math.nan), _rec(200, 7.0), _rec(300, math.inf)]) == 200
    with pytest.raises(ValueError):
        best_iteration([])
