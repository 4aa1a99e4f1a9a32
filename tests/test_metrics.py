"""bologan.metrics: chi2 test (both variants), histogram range, W1/KS, feature scores, checkpoint
score and best iteration."""
from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pytest

from bologan.features import FEATURE_GROUPS
from bologan.geometry import PHOTONS
from bologan.metrics import (
    RANGE_RMS_FACTORS,
    SELECTION_METRIC,
    Reference,
    best_iteration,
    chi2_ww,
    combine_scores,
    ks_statistic,
    reference_range,
    score_checkpoint,
    score_energy,
    score_showers,
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


def _rec(iteration, score, metric=SELECTION_METRIC):
    return SimpleNamespace(iteration=iteration, **{metric: score})


def test_best_iteration_minimum_and_ties_go_later():
    assert best_iteration([_rec(100, 3.0), _rec(200, 1.2), _rec(300, 2.0)]) == 200
    # equal scores: the later checkpoint wins, whatever the order of the records
    assert best_iteration([_rec(100, 3.0), _rec(200, 1.5), _rec(300, 2.0), _rec(400, 1.5)]) == 400
    assert best_iteration([_rec(400, 1.5), _rec(200, 1.5), _rec(100, 3.0)]) == 400


def test_best_iteration_never_picks_nan_and_rejects_empty():
    assert best_iteration([_rec(100, math.nan), _rec(200, 7.0), _rec(300, math.inf)]) == 200
    with pytest.raises(ValueError):
        best_iteration([])


def test_best_iteration_picks_by_the_overflow_variant():
    assert SELECTION_METRIC == "chi2_ndf_overflow"
    # BoloGAN's chi2/NDF is inf at every checkpoint; the overflow variant still ranks them.
    recs = [SimpleNamespace(iteration=i, chi2_ndf=math.inf, chi2_ndf_overflow=v)
            for i, v in ((250, 90.0), (500, 12.0), (750, 30.0))]
    assert best_iteration(recs) == 500
    # where the two disagree the default follows the overflow variant; BoloGAN's on request
    recs = [SimpleNamespace(iteration=100, chi2_ndf=1.0, chi2_ndf_overflow=40.0),
            SimpleNamespace(iteration=200, chi2_ndf=2.0, chi2_ndf_overflow=2.5)]
    assert best_iteration(recs) == 200
    assert best_iteration(recs, metric="chi2_ndf") == 100


# ------------------------------------------------------------------ chi2 with under/overflow bins

# Photons at 1000 MeV: the peak window [0, 2] GeV has bins of 0.02 GeV. Values sit at bin
# centres 0.95, 0.97, 0.99 GeV; the reference (weights 1:3:1) peaks at 0.97 GeV with RMS
# sqrt(2/5) * 0.02 GeV, so its range 0.97 -+ 0.038 GeV holds every value of both samples.
P_MEV = 1000.0
IN_RANGE_MEV = np.array([951.0, 971.0, 991.0])


def _sample(weights, scale=100):
    return np.repeat(IN_RANGE_MEV, np.asarray(weights) * scale)


def test_overflow_variant_equals_bologan_when_everything_is_in_range():
    s = score_energy(_sample([1, 3, 1]), _sample([2, 2, 1]), P_MEV, "photons")
    assert s.gen_out_of_range_fraction == 0.0 and s.ref_out_of_range_fraction == 0.0
    assert s.chi2 > 10.0
    assert s.chi2_overflow == s.chi2 and s.ndf_overflow == s.ndf


def test_overflow_variant_is_finite_when_every_generated_shower_is_out_of_range():
    ref = _sample([1, 3, 1])
    for far in (5000.0, -30.0, math.nan):        # above, below (negative energy), broken
        s = score_energy(ref, np.full(400, far), P_MEV, "photons")
        assert math.isinf(s.chi2)
        assert math.isfinite(s.chi2_overflow) and s.chi2_overflow > 0
        assert s.gen_out_of_range_fraction == 1.0
    # farther is not better: nothing in range scores worse than a shower set that overlaps
    partly = score_energy(ref, np.concatenate([_sample([1, 3, 1]), np.full(500, 5000.0)]), P_MEV, "photons")
    nothing = score_energy(ref, np.full(1000, 5000.0), P_MEV, "photons")
    assert partly.chi2_overflow < nothing.chi2_overflow
    # BoloGAN's rule does not see the half that misses: same shape inside the range, chi2 0
    assert partly.chi2 == 0.0 and partly.gen_out_of_range_fraction == 0.5


def test_combined_overflow_scores_and_pooled_out_of_range_fraction():
    ref = {P_MEV: _sample([1, 3, 1]), 4 * P_MEV: 4 * _sample([1, 3, 1])}
    gen = {P_MEV: np.concatenate([_sample([1, 3, 1], 300), np.full(100, 9e3)]),   # 100 of 1600 out
           4 * P_MEV: 4 * _sample([2, 2, 1])}                                      # 0 of 500 out
    per_energy, total = score_checkpoint(ref, gen, "photons")
    assert total.chi2_ndf_overflow == pytest.approx(sum(s.chi2_overflow for s in per_energy)
                                                    / sum(s.ndf_overflow for s in per_energy))
    assert total.out_of_range_fraction == pytest.approx(100 / 2100)
    assert combine_scores(per_energy).chi2_ndf_overflow == total.chi2_ndf_overflow


# ------------------------------------------------------------------ the whole checkpoint score

def _photon_showers(rng, n_per_momentum, momenta=(1024.0, 65536.0), scale=1.0):
    momentum = np.repeat(np.array(momenta), n_per_momentum)
    profile = rng.dirichlet(np.ones(PHOTONS.n_voxels), momentum.size)
    etot = rng.normal(0.97, 0.04, momentum.size) * momentum * scale
    return momentum, (profile * etot[:, None]).astype(np.float32)


def test_score_showers_fills_every_eval_column():
    from common.rundir import EVAL_CONTEXT_FIELDS, EvalRecord

    rng = np.random.default_rng(5)
    momentum, voxels = _photon_showers(rng, 1000)
    ref = Reference.from_showers("photons", momentum, voxels)
    _, same = score_showers(ref, momentum, voxels)
    assert same.chi2 == 0.0 and same.chi2_overflow == 0.0
    # only the reference's own tails lie outside its peak -+ 3 RMS range
    assert 0.0 < same.out_of_range_fraction < 0.01
    assert same.features.frechet_hlf_std == pytest.approx(0.0, abs=1e-9) and same.features.sep_power_max == 0.0
    # FPD x 10^3 of a sample against itself: batches drawn independently, so only near 0
    assert 0.0 <= same.features.fpd < 0.5 and abs(same.features.distances.kpd_x1e3) < 0.5

    gen_momentum, gen_voxels = _photon_showers(rng, 1000, scale=1.3)
    _, worse = score_showers(ref, gen_momentum, gen_voxels)
    fields = worse.eval_fields(1000)
    record = EvalRecord(**fields)
    # every EvalRecord score column is filled from the metrics (the context columns are the
    # caller's), the group columns follow FEATURE_GROUPS
    assert set(fields) == {f.name for f in EvalRecord.__dataclass_fields__.values()} - set(EVAL_CONTEXT_FIELDS)
    assert {f"sep_{g}" for g in FEATURE_GROUPS} <= set(fields)
    assert record.fpd > 10 * (same.features.fpd + record.fpd_err) and record.kpd > 3 * record.kpd_err
    assert record.frechet_hlf_std > 0.1 and record.sep_e_ratio > 0.5 and record.out_of_range_fraction > 0.5
    assert record.sep_power_max >= record.sep_power_mean > 0
    assert record.sep_power_max == worse.features.separation[record.sep_power_max_feature]
    assert math.isinf(record.chi2_ndf) or record.chi2_ndf > 0
    assert math.isfinite(record.chi2_ndf_overflow) and record.chi2_ndf_overflow > same.chi2_ndf_overflow
