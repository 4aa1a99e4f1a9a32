"""Stragglers: the expected slowest of N ranks, from a measured distribution of step times.

Every all-reduce waits for the slowest rank, so an iteration over N ranks costs the maximum of
N per-rank step times, not their median. With the ranks' step times independent draws from
one distribution F, the expected maximum is

    E[max of N] = x_lo + integral over [x_lo, x_hi] of (1 - F(x)^N) dx,

evaluated here exactly for a piecewise-linear F (a vertical segment is a jump: an empirical
CDF of samples is such an F, so resampling from the samples is covered by the same formula).

F comes from either
- samples of per-iteration step times (``from_samples``), or
- per-(rank, epoch) quantile rows as the run directory records them (``from_quantile_rows``:
  columns ``step_time_p10_s``, ``..._p50_s``, ``..._p90_s``, ``..._p99_s``, ``step_time_max_s``),
  each row a CDF interpolated linearly between its quantiles, all rows pooled as a mixture
  (weighted by their iteration count when a column ``iterations`` is present). Below p10 the
  p10-p50 slope is extended down to F = 0; the recorded maximum is F = 1, so no projected draw
  exceeds the slowest iteration ever recorded: at N beyond the number of iterations recorded,
  the straggler cost is a lower bound.

The quantiles should be of each rank's time outside the collectives (its compute and input
wait): time inside an all-reduce already includes waiting for the others.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import pandas as pd

from common.rundir import STEP_TIME_QUANTILES

STEP_TIME_QUANTILE_COLUMNS: tuple[tuple[float, str], ...] = STEP_TIME_QUANTILES
"""(CDF level, column) of the per-(rank, epoch) step-time quantiles (epochs.parquet, written by
scaling.trainer); the maximum is level 1."""
ITERATIONS_COLUMN = "iterations"


@dataclass(frozen=True)
class StepTimeDistribution:
    """A CDF of step time: knots ``x_s`` (non-decreasing, s) with ``cdf`` values (non-decreasing,
    0 at the first knot, 1 at the last), linear in between."""
    x_s: np.ndarray
    cdf: np.ndarray

    def __post_init__(self) -> None:
        x, f = np.asarray(self.x_s, float), np.asarray(self.cdf, float)
        if x.ndim != 1 or x.shape != f.shape or x.size < 2:
            raise ValueError("a step-time CDF needs two or more knots")
        if not (np.all(np.isfinite(x)) and np.all(np.diff(x) >= 0) and np.all(np.diff(f) >= -1e-12)):
            raise ValueError("step-time CDF knots must be finite and non-decreasing")
        if abs(f[0]) > 1e-9 or abs(f[-1] - 1) > 1e-9:
            raise ValueError("a step-time CDF must run from 0 to 1")
        object.__setattr__(self, "x_s", x)
        object.__setattr__(self, "cdf", np.clip(f, 0.0, 1.0))

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_samples(cls, samples_s: Sequence[float]) -> "StepTimeDistribution":
        """The empirical distribution of ``samples_s`` (a step function: resampling)."""
        x = np.sort(np.asarray(samples_s, float))
        x = x[np.isfinite(x)]
        if not x.size:
            raise ValueError("no finite step-time sample")
        n = x.size
        levels = np.arange(n + 1) / n
        # Knots (x1, 0), (x1, 1/n), (x2, 1/n), (x2, 2/n), ...: vertical segments are the jumps.
        xs = np.repeat(x, 2)
        fs = np.empty(2 * n)
        fs[0::2], fs[1::2] = levels[:-1], levels[1:]
        return cls(xs, fs)

    @classmethod
    def from_quantile_rows(cls, rows: pd.DataFrame) -> "StepTimeDistribution":
        """Mixture of the per-(rank, epoch) quantile rows (see the module docstring)."""
        cols = [c for _, c in STEP_TIME_QUANTILE_COLUMNS]
        missing = [c for c in cols if c not in rows.columns]
        if missing:
            raise ValueError(f"step-time quantile columns missing: {', '.join(missing)}")
        q = rows[cols].to_numpy(float)
        keep = np.all(np.isfinite(q), axis=1) & np.all(q > 0, axis=1)
        if not keep.any():
            raise ValueError("no row with finite, positive step-time quantiles")
        q = q[keep]
        if np.any(np.diff(q, axis=1) < 0):
            bad = int(np.argmax(np.any(np.diff(q, axis=1) < 0, axis=1)))
            raise ValueError(f"step-time quantiles decrease in row {bad}: {q[bad].tolist()}")
        if ITERATIONS_COLUMN in rows.columns:
            w = rows.loc[keep, ITERATIONS_COLUMN].to_numpy(float)
            w = np.where(np.isfinite(w) & (w > 0), w, 0.0)
        else:
            w = np.ones(len(q))
        if not w.sum() > 0:
            w = np.ones(len(q))
        w = w / w.sum()
        levels = np.array([lvl for lvl, _ in STEP_TIME_QUANTILE_COLUMNS])
        row_knots = [_row_cdf(row, levels) for row in q]
        xs = np.unique(np.concatenate([k[0] for k in row_knots]))
        fs = np.zeros_like(xs)
        for wi, (rx, rf) in zip(w, row_knots):
            fs += wi * np.interp(xs, rx, rf, left=0.0, right=1.0)
        fs[0], fs[-1] = 0.0, 1.0
        if xs.size == 1:                      # every row a single constant time
            xs, fs = np.array([xs[0], xs[0]]), np.array([0.0, 1.0])
        return cls(xs, fs)

    @classmethod
    def constant(cls, time_s: float) -> "StepTimeDistribution":
        return cls(np.array([time_s, time_s]), np.array([0.0, 1.0]))

    # ------------------------------------------------------------------ statistics
    def expected_max_s(self, n: int) -> float:
        """E[max of n independent draws], s (n = 1: the mean)."""
        if n < 1:
            raise ValueError(f"n must be >= 1, got {n}")
        x0, x1 = self.x_s[:-1], self.x_s[1:]
        f0, f1 = self.cdf[:-1], self.cdf[1:]
        dx, df = x1 - x0, f1 - f0
        flat = df <= 1e-15
        # integral of F^n over a segment where F is linear from f0 to f1.
        with np.errstate(divide="ignore", invalid="ignore"):
            sloped = dx * (f1 ** (n + 1) - f0 ** (n + 1)) / ((n + 1) * df)
        integral = np.where(flat, dx * f0 ** n, np.where(dx > 0, sloped, 0.0))
        return float(self.x_s[-1] - integral.sum())

    def mean_s(self) -> float:
        return self.expected_max_s(1)

    def straggler_factor(self, n: int) -> float:
        """E[max of n] / mean: how much slower a synchronised step is than an average one."""
        return self.expected_max_s(n) / self.mean_s()

    def quantile_s(self, u: float | np.ndarray) -> np.ndarray | float:
        """Inverse CDF (inverse-transform sampling uses it)."""
        uu = np.clip(np.asarray(u, float), 0.0, 1.0)
        f, x = self.cdf, self.x_s
        j = np.clip(np.searchsorted(f, uu, side="right"), 1, len(f) - 1)
        # side="right" gives f[j-1] <= u < f[j]: a rising segment, never a flat gap.
        f0, f1, x0, x1 = f[j - 1], f[j], x[j - 1], x[j]
        with np.errstate(divide="ignore", invalid="ignore"):
            out = np.where(f1 > f0, x0 + (uu - f0) / (f1 - f0) * (x1 - x0), x1)
        return float(out) if np.ndim(out) == 0 else out

    def sample_s(self, rng: np.random.Generator, size: int | tuple[int, ...]) -> np.ndarray:
        return np.asarray(self.quantile_s(rng.random(size)))

    def scaled(self, factor: float) -> "StepTimeDistribution":
        """Every step time times ``factor`` (same relative spread)."""
        return StepTimeDistribution(self.x_s * factor, self.cdf)


def _row_cdf(q: np.ndarray, levels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Knots of one row's CDF, strictly increasing in x (ties keep the highest level)."""
    p10, p50 = q[0], q[1]
    lo = max(0.0, p10 - (p50 - p10) * levels[0] / (levels[1] - levels[0]))
    xs = np.concatenate([[lo], q])
    fs = np.concatenate([[0.0], levels])
    ux, idx = np.unique(xs[::-1], return_index=True)      # last occurrence = highest level
    uf = fs[::-1][idx]
    if ux.size == 1:                                      # a constant row: a tiny ramp to keep it a CDF
        ux = np.array([ux[0] * (1 - 1e-9), ux[0]])
        uf = np.array([0.0, 1.0])
    return ux, uf


def expected_max_step_time_s(data: StepTimeDistribution | pd.DataFrame | Sequence[float], n: int) -> float:
    """Expected maximum over ``n`` ranks of a per-iteration step time, s.

    ``data``: a ``StepTimeDistribution``, a table of per-(rank, epoch) quantile rows
    (``STEP_TIME_QUANTILE_COLUMNS``), or samples of step times.
    """
    if isinstance(data, StepTimeDistribution):
        dist = data
    elif isinstance(data, pd.DataFrame):
        dist = StepTimeDistribution.from_quantile_rows(data)
    else:
        dist = StepTimeDistribution.from_samples(data)
    return dist.expected_max_s(n)


def has_step_time_quantiles(frame: pd.DataFrame | None) -> bool:
    return frame is not None and all(c in frame.columns for _, c in STEP_TIME_QUANTILE_COLUMNS)


def straggler_factor(dist: StepTimeDistribution | None, n: int) -> float:
    """E[max of n] / mean of ``dist``; 1 when no distribution was measured."""
    if dist is None:
        return 1.0
    f = dist.straggler_factor(n)
    return f if math.isfinite(f) else 1.0
