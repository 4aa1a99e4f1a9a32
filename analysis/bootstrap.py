"""Bootstrap confidence intervals for a ratio of median epoch times (efficiencies, speedups).

Every efficiency and speedup of the summary is a constant times T(N0) / T(N), with T the
median epoch time of the runs at that world size. Its interval comes from resampling those
runs the way they were measured, at two levels: the repeats of a point (its run directories)
are drawn with replacement, then the epochs inside each drawn repeat; the statistic is the
median of every epoch drawn. With one repeat this is the ordinary bootstrap over epochs. A
machine that drifts between repeats makes the repeats differ more than their epochs do, and
the first level carries that into the interval. Baseline and point are different runs, so they
are resampled independently. The interval is the percentile interval of the resampled ratios.

The generator is seeded with a constant, so the same run directories always give the same
interval (a report regenerated from them does not change).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np

RESAMPLES = 2000
CONFIDENCE = 0.95
SEED = 1234               # any constant: it only has to be the same on every invocation


@dataclass(frozen=True)
class Interval:
    """A confidence interval [low, high] (NaN, NaN when there was nothing to resample)."""
    low: float
    high: float

    @property
    def width(self) -> float:
        return self.high - self.low

    def scaled(self, factor: float) -> "Interval":
        """The interval of ``factor`` x the statistic (factor > 0)."""
        return Interval(self.low * factor, self.high * factor)

    def __contains__(self, value: float) -> bool:
        return self.low <= value <= self.high


NO_INTERVAL = Interval(math.nan, math.nan)


def _clean(groups: Sequence[Sequence[float]]) -> list[np.ndarray]:
    """Finite values of each group; groups left empty are dropped."""
    out = []
    for g in groups:
        a = np.asarray(g, dtype=float).ravel()
        a = a[np.isfinite(a)]
        if a.size:
            out.append(a)
    return out


def resampled_medians(groups: Sequence[Sequence[float]], resamples: int, rng: np.random.Generator) -> np.ndarray:
    """``resamples`` bootstrap medians of the pooled ``groups`` (repeats, then epochs within each).

    One row of draws per resample, all at once: ``k`` repeat indices with replacement, then for
    the j-th drawn repeat as many epoch indices as it has epochs. Unequal repeats are padded with
    NaN and the padding is left out of the median.
    """
    clean = _clean(groups)
    if not clean:
        return np.full(resamples, math.nan)
    k = len(clean)
    sizes = np.array([g.size for g in clean])
    width = int(sizes.max())
    padded = np.full((k, width), math.nan)
    for i, g in enumerate(clean):
        padded[i, :g.size] = g
    picked = rng.integers(0, k, size=(resamples, k))                      # which repeats
    n_picked = sizes[picked][..., None]                                   # their epoch counts
    epochs = (rng.random((resamples, k, width)) * n_picked).astype(np.int64)  # uniform in [0, n_j)
    values = padded[picked[..., None], epochs]
    if (sizes == width).all():
        return np.median(values.reshape(resamples, k * width), axis=1)
    values[np.arange(width)[None, None, :] >= n_picked] = math.nan       # draw n_j, not width, epochs
    return np.nanmedian(values.reshape(resamples, k * width), axis=1)


def median_ratio_interval(numerator: Sequence[Sequence[float]], denominator: Sequence[Sequence[float]], *,
                          resamples: int = RESAMPLES, confidence: float = CONFIDENCE,
                          seed: int = SEED) -> Interval:
    """Percentile interval of median(numerator) / median(denominator).

    ``numerator`` and ``denominator``: one sequence of epoch times (or any positive values) per
    repeat. For an efficiency T(N0) / T(N) the numerator is the baseline's epochs. NaN, NaN
    when either side has no finite value.
    """
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    if resamples < 1:
        raise ValueError(f"resamples must be >= 1, got {resamples}")
    if not _clean(numerator) or not _clean(denominator):
        return NO_INTERVAL
    rng = np.random.default_rng(seed)
    ratios = resampled_medians(numerator, resamples, rng) / resampled_medians(denominator, resamples, rng)
    ratios = ratios[np.isfinite(ratios)]
    if not ratios.size:
        return NO_INTERVAL
    tail = 100 * (1 - confidence) / 2
    low, high = np.percentile(ratios, [tail, 100 - tail])
    return Interval(float(low), float(high))


def median_interval(groups: Sequence[Sequence[float]], *, resamples: int = RESAMPLES,
                    confidence: float = CONFIDENCE, seed: int = SEED) -> Interval:
    """Percentile interval of the median of ``groups`` (one sequence of epoch values per repeat),
    resampled like ``median_ratio_interval``: repeats, then epochs within each. NaN, NaN when
    there is no finite value."""
    if not _clean(groups):
        return NO_INTERVAL
    medians = resampled_medians(groups, resamples, np.random.default_rng(seed))
    medians = medians[np.isfinite(medians)]
    if not medians.size:
        return NO_INTERVAL
    tail = 100 * (1 - confidence) / 2
    low, high = np.percentile(medians, [tail, 100 - tail])
    return Interval(float(low), float(high))
