"""Whether two configurations really differ: the spread of a difference, not only two medians.

Two configurations A and B (variants, sites, engines) each have epoch values grouped by repeat.
``compare`` gives the ratio of their medians A/B with a bootstrap interval (``analysis.bootstrap``:
repeats, then epochs, A and B independently) and a two-sided permutation test of the difference
of medians on the pooled epochs. The difference "exceeds the spread" when the interval of the
ratio excludes 1 and the permutation test rejects equal medians at ``SIGNIFICANCE``: a bootstrap
of three epochs a side can give a narrow interval that a test on so few values cannot back
(3 + 3 epochs allow no two-sided p below 0.1). With one repeat each the test treats epochs as
independent draws, which drift within a run makes optimistic: the verdict says how many runs
it rests on.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from analysis.bootstrap import CONFIDENCE, SEED, Interval, _clean, median_ratio_interval
from analysis.numbers import interval, ratio

PERMUTATIONS = 2000
SIGNIFICANCE = 0.05


@dataclass(frozen=True)
class Comparison:
    """A over B: ratio of medians, its interval, a permutation p-value and the verdict."""
    ratio: float
    interval: Interval
    p_value: float
    runs_a: int
    runs_b: int

    @property
    def interval_excludes_one(self) -> bool:
        """The interval of A/B lies wholly above or below 1."""
        return math.isfinite(self.interval.low) and (self.interval.low > 1 or self.interval.high < 1)

    @property
    def exceeds_spread(self) -> bool:
        """The interval excludes 1, and the permutation test agrees."""
        return self.interval_excludes_one and self.p_value < SIGNIFICANCE

    def verdict(self, lower_is_better: bool = True) -> str:
        """'A is 0.82x B [0.78, 0.86], p = 0.001: the difference exceeds the spread' and the like."""
        if not math.isfinite(self.ratio):
            return "not comparable (a side has no value)"
        text = (f"{ratio(self.ratio, 3)}x {interval(self.interval.low, self.interval.high, lambda v: ratio(v, 3))}, "
                f"permutation p = {self.p_value:.3g}")
        if self.exceeds_spread:
            return text + ": the difference exceeds the spread"
        few = " (one run each: more repeats may separate them)" if self.runs_a < 2 or self.runs_b < 2 else ""
        if self.interval_excludes_one:     # and so the test did not reject
            return text + f": too few values to tell (the interval excludes 1, the test does not reject){few}"
        return text + f": within the spread, not a real difference{few}"


def permutation_p_value(a: Sequence[float], b: Sequence[float], *, permutations: int = PERMUTATIONS,
                        seed: int = SEED) -> float:
    """Two-sided p-value of |median(a) - median(b)| under random relabelling of the pooled values
    (with the observed labelling counted, so never 0). NaN when a side is empty."""
    x = np.asarray(a, dtype=float)
    y = np.asarray(b, dtype=float)
    x, y = x[np.isfinite(x)], y[np.isfinite(y)]
    if not x.size or not y.size:
        return math.nan
    observed = abs(np.median(x) - np.median(y))
    pooled = np.concatenate([x, y])
    rng = np.random.default_rng(seed)
    idx = np.argsort(rng.random((permutations, pooled.size)), axis=1)
    shuffled = pooled[idx]
    diffs = np.abs(np.median(shuffled[:, :x.size], axis=1) - np.median(shuffled[:, x.size:], axis=1))
    # A tiny tolerance: equal medians reached by another labelling count as "as extreme".
    extreme = int(np.sum(diffs >= observed - 1e-12 * max(1.0, abs(observed))))
    return (extreme + 1) / (permutations + 1)


def compare(a: Sequence[Sequence[float]], b: Sequence[Sequence[float]], *,
            confidence: float = CONFIDENCE) -> Comparison:
    """Compare A and B, each given as one sequence of epoch values per repeat (run)."""
    ca, cb = _clean(a), _clean(b)
    if not ca or not cb:
        return Comparison(math.nan, Interval(math.nan, math.nan), math.nan, len(ca), len(cb))
    flat_a, flat_b = np.concatenate(ca), np.concatenate(cb)
    return Comparison(float(np.median(flat_a) / np.median(flat_b)),
                      median_ratio_interval(ca, cb, confidence=confidence),
                      permutation_p_value(flat_a, flat_b), len(ca), len(cb))
