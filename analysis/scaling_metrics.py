"""Scaling metrics: pure functions of epoch times and world sizes (formulas in each docstring).

Baseline convention: the baseline is the smallest world size N0 of a series (1 when a
single-rank run exists). With N0 > 1 the speedup assumes perfect scaling up to N0:
S(N) = N0 * T(N0) / T(N), so S(N0) = N0 and the efficiencies below keep their usual meaning.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np


def speedup(t_base_s: float, t_n_s: float, n_base: int = 1) -> float:
    """S(N) = N0 * T(N0) / T(N)  (N0 = 1: the textbook T(1)/T(N))."""
    if not (t_n_s > 0) or not (t_base_s > 0):
        return math.nan
    return n_base * t_base_s / t_n_s


def strong_efficiency(t_base_s: float, t_n_s: float, n: int, n_base: int = 1) -> float:
    """E_strong(N) = S(N) / N = N0 * T(N0) / (N * T(N)); global batch fixed."""
    return speedup(t_base_s, t_n_s, n_base) / n


def weak_efficiency(t_base_s: float, t_n_s: float) -> float:
    """E_weak(N) = T(N0) / T(N); per-rank batch fixed, so the ideal epoch time is constant."""
    if not (t_n_s > 0) or not (t_base_s > 0):
        return math.nan
    return t_base_s / t_n_s


def karp_flatt(speedup_x: float, n: int) -> float:
    """Experimentally determined serial fraction e = (1/S - 1/N) / (1 - 1/N); NaN for N = 1.

    A constant e means a fixed serial part; e growing with N means overhead that grows with N
    (communication, imbalance).
    """
    if n <= 1 or not (speedup_x > 0):
        return math.nan
    return (1.0 / speedup_x - 1.0 / n) / (1.0 - 1.0 / n)


@dataclass(frozen=True)
class LawFit:
    """Least-squares fit of a scaling law: parallel fraction P (0..1), serial fraction 1 - P."""
    law: str                      # "amdahl" | "gustafson"
    parallel_fraction: float
    points: int
    rms_residual: float           # root-mean-square residual of the fitted speedups (same units as S)

    @property
    def serial_fraction(self) -> float:
        return 1.0 - self.parallel_fraction

    def predict(self, n: Sequence[float] | np.ndarray) -> np.ndarray:
        n = np.asarray(n, dtype=float)
        return amdahl_speedup(n, self.parallel_fraction) if self.law == "amdahl" \
            else gustafson_speedup(n, self.parallel_fraction)


def amdahl_speedup(n: np.ndarray | float, parallel_fraction: float) -> np.ndarray:
    """Amdahl: S(N) = 1 / ((1 - P) + P / N)."""
    n = np.asarray(n, dtype=float)
    return 1.0 / ((1.0 - parallel_fraction) + parallel_fraction / n)


def gustafson_speedup(n: np.ndarray | float, parallel_fraction: float) -> np.ndarray:
    """Gustafson (scaled speedup): S(N) = (1 - P) + N * P."""
    n = np.asarray(n, dtype=float)
    return (1.0 - parallel_fraction) + n * parallel_fraction


# Both laws have one parameter (P) and pass through the baseline by definition (S(1) = 1), so
# the baseline point carries no information: with one more world size the fit goes through
# every point whatever the scaling is. A fit is a test of the law only with a point to spare.
LAW_PARAMETERS = 1
MIN_FIT_WORLD_SIZES = LAW_PARAMETERS + 2


def fit_shortfall(n: Sequence[float]) -> str:
    """Why no scaling law is fitted to world sizes ``n`` ('' when there are enough of them)."""
    distinct = len({float(x) for x in n if math.isfinite(x) and x >= 1})
    if distinct >= MIN_FIT_WORLD_SIZES:
        return ""
    return (f"not enough points: {distinct} world size{'s' if distinct != 1 else ''} for a "
            f"{LAW_PARAMETERS}-parameter law plus the baseline (a fit needs {MIN_FIT_WORLD_SIZES})")


def _clean(n: Sequence[float], s: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    n_arr, s_arr = np.asarray(n, dtype=float), np.asarray(s, dtype=float)
    ok = np.isfinite(n_arr) & np.isfinite(s_arr) & (n_arr >= 1) & (s_arr > 0)
    return n_arr[ok], s_arr[ok]


def amdahl_fit(n: Sequence[float], speedups: Sequence[float]) -> LawFit | None:
    """Fit P in S = 1/((1-P) + P/N) by least squares on S, 0 <= P <= 1.

    None with fewer than ``MIN_FIT_WORLD_SIZES`` distinct world sizes (``fit_shortfall``: a fit
    through every point is no fit). The residual is minimised by
    a bounded scalar search (the model is monotone in P, so the optimum is unique).
    """
    from scipy.optimize import minimize_scalar

    n_arr, s_arr = _clean(n, speedups)
    if fit_shortfall(n_arr):
        return None
    res = minimize_scalar(lambda p: float(np.sum((amdahl_speedup(n_arr, p) - s_arr) ** 2)),
                          bounds=(0.0, 1.0), method="bounded", options={"xatol": 1e-10})
    p = float(res.x)
    rms = float(np.sqrt(np.mean((amdahl_speedup(n_arr, p) - s_arr) ** 2)))
    return LawFit("amdahl", p, len(n_arr), rms)


def gustafson_fit(n: Sequence[float], scaled_speedups: Sequence[float]) -> LawFit | None:
    """Fit P in S = (1-P) + N P (S = N * weak efficiency) by linear least squares, clipped to [0, 1].

    S - 1 = P (N - 1), so P = sum((S-1)(N-1)) / sum((N-1)^2). None with fewer than
    ``MIN_FIT_WORLD_SIZES`` distinct N (``fit_shortfall``).
    """
    n_arr, s_arr = _clean(n, scaled_speedups)
    if fit_shortfall(n_arr):
        return None
    x, y = n_arr - 1.0, s_arr - 1.0
    denom = float(np.sum(x * x))
    if denom <= 0:
        return None
    p = min(1.0, max(0.0, float(np.sum(x * y)) / denom))
    rms = float(np.sqrt(np.mean((gustafson_speedup(n_arr, p) - s_arr) ** 2)))
    return LawFit("gustafson", p, len(n_arr), rms)
