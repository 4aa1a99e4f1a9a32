"""analysis.bootstrap: coverage on data with a known answer, shrinking, degenerate and repeat cases."""
from __future__ import annotations

import math
import time

import numpy as np
import pytest

from analysis.bootstrap import RESAMPLES, median_ratio_interval, resampled_medians

TRUE_RATIO = 10.0 / 12.0     # median baseline epoch / median epoch at N of the synthetic runs


def _runs(rng: np.random.Generator, epochs: int) -> tuple[np.ndarray, np.ndarray]:
    """Epoch times of a baseline (median 10 s) and a point (median 12 s), normally distributed."""
    return rng.normal(10.0, 1.0, epochs), rng.normal(12.0, 1.5, epochs)


def test_interval_covers_the_true_ratio_in_most_trials():
    t0 = time.monotonic()
    hits = 0
    trials = 200
    for trial in range(trials):
        base, point = _runs(np.random.default_rng(trial), 12)
        hits += TRUE_RATIO in median_ratio_interval([base], [point])
    # A 95 % interval: far fewer hits means too narrow, all of them too wide.
    assert 0.90 <= hits / trials <= 0.99
    assert time.monotonic() - t0 < 5.0


def test_interval_shrinks_with_more_epochs():
    rng = np.random.default_rng(7)

    def mean_width(epochs: int) -> float:
        widths = []
        for _ in range(20):
            base, point = _runs(rng, epochs)
            widths.append(median_ratio_interval([base], [point]).width)
        return float(np.mean(widths))

    assert mean_width(200) < 0.4 * mean_width(8)


def test_constant_epochs_give_a_degenerate_interval():
    iv = median_ratio_interval([[10.0] * 5, [10.0] * 3], [[12.5] * 4])
    assert iv.low == iv.high == pytest.approx(0.8)


def test_same_data_same_interval_and_seed_matters():
    base, point = _runs(np.random.default_rng(1), 10)
    assert median_ratio_interval([base], [point]) == median_ratio_interval([base], [point])
    assert median_ratio_interval([base], [point], seed=1) != median_ratio_interval([base], [point], seed=2)


def test_repeats_that_disagree_widen_the_interval():
    # Three repeats whose levels differ (a machine drifting between them), epochs tight inside
    # each: pooling them as one run would hide the spread between repeats.
    rng = np.random.default_rng(3)
    repeats = [rng.normal(level, 0.1, 10) for level in (11.0, 12.0, 13.0)]
    base = [rng.normal(10.0, 0.1, 10)]
    by_repeat = median_ratio_interval(base, repeats)
    as_one_run = median_ratio_interval(base, [np.concatenate(repeats)])
    assert by_repeat.width > 1.5 * as_one_run.width
    assert 10.0 / 12.0 in by_repeat


def test_unequal_repeats_draw_each_repeat_at_its_own_size():
    # Repeats of 1 epoch (100 s) and of 9 epochs (1 s). Drawing the short repeat twice pools two
    # epochs of 100 s (median 100, probability 1/4); any other draw has a median of 1 s. Were the
    # short repeat drawn at the long one's size, a mixed draw would pool 9 + 9 epochs (median 50.5).
    rng = np.random.default_rng(0)
    meds = resampled_medians([[100.0], [1.0] * 9], 500, rng)
    assert set(np.unique(meds)) <= {1.0, 100.0}
    assert (meds == 100.0).mean() == pytest.approx(0.25, abs=0.06)


def test_nothing_to_resample_is_nan():
    iv = median_ratio_interval([[math.nan]], [[1.0, 2.0]])
    assert math.isnan(iv.low) and math.isnan(iv.high)
    assert math.isnan(median_ratio_interval([], [[1.0]]).low)
    with pytest.raises(ValueError):
        median_ratio_interval([[1.0]], [[1.0]], confidence=1.5)
    assert RESAMPLES >= 1000
