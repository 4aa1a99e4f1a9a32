"""FPD and KPD as the CaloChallenge publishes them (numpy/scipy only; reference: quality.md §3).

The community's numbers come from CaloChallenge ``code/evaluate.py`` (modes ``fpd``/``kpd``),
which builds one feature vector per shower and hands reference and generated vectors to jetnet
0.2.5 (``jetnet.evaluation.fpd(ref, gen, min_samples=10000)`` and
``kpd(ref, gen, batch_size=10000)``). This module reproduces that chain without jetnet (which
pulls in torch), step for step:

1. Feature vector (``feature_vector``), after voxels below 1 MeV are set to 0 in both samples
   (``bologan.features.VOXEL_THRESHOLD_MEV``), in this order: log10 E_inc; log10(E_layer + 1e-8)
   per layer; EC_eta/100, then EC_phi/100, width_eta/100, width_phi/100 per angle-binned layer;
   log10(E_tot + 1e-8); sparsity per layer; EC_r/100 and width_r/100 per layer. E_inc is the
   file's ``incident_energies`` (the momentum, ``bologan.dataio``); lengths are in mm, so /100
   gives decimetres.
2. Both samples divided by the reference's per-feature max |x|; a feature that is 0 throughout
   the reference is left as it is.
3. FPD: at ``FPD_POINTS`` batch sizes evenly spaced in 1/N between ``FPD_MIN_SAMPLES`` and
   ``FPD_MAX_SAMPLES`` (truncated to integers), ``FPD_BATCHES`` batches each, every batch drawn
   with replacement from both samples by one ``numpy.random.default_rng(SEED)`` (reference
   first, then generated, as jetnet draws); the Fréchet distance of the two batches' Gaussian
   fits, averaged per batch size; a straight line fitted to those means against 1/N with
   ``scipy.optimize.curve_fit`` bounded to intercept >= 0 and slope >= 0. FPD is the intercept
   (the distance extrapolated to infinitely many showers), its error the intercept's standard
   error from the fit's covariance.
4. KPD: ``KPD_BATCHES`` batches of ``KPD_BATCH_SIZE``, batch i drawn with replacement by
   ``default_rng(SEED + 1000 i)``; the unbiased MMD^2 estimate with the polynomial kernel
   (x.y / d + 1)^4 (d features). KPD is the median over batches, its error half the
   16.275-83.725 percentile range (about +-1 sigma). KPD can be slightly negative.
5. Both are reported x 10^3, as in the published table.

Because the draws are with replacement, FPD and KPD can be computed from fewer showers than a
batch holds; jetnet does exactly that (it only warns below 50,000). The result then measures
the distance between the two finite samples, which includes a finite-sample floor: two samples
of one distribution do not score 0 (docs/quality.md gives the floor for the sizes used here).
"""
from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import numpy as np
import scipy.linalg
from scipy.optimize import curve_fit
from scipy.stats import iqr

from bologan.features import Features, feature_names
from bologan.geometry import Particle

SEED = 42
FPD_MIN_SAMPLES = 10_000     # CaloChallenge passes min_samples=10000 (jetnet's default is 20,000)
FPD_MAX_SAMPLES = 50_000
FPD_POINTS = 10
FPD_BATCHES = 20
KPD_BATCHES = 10
KPD_BATCH_SIZE = 10_000
KPD_SEED_STRIDE = 1000
KPD_DEGREE = 4
KPD_PERCENTILES = (16.275, 83.725)
FRECHET_EPS = 1e-6           # added to both covariances' diagonals when S1 S2 has no finite square root
LOG_OFFSET_MEV = 1e-8        # CaloChallenge's log10(E + 1e-8) for layer and total energies
LENGTH_SCALE_MM = 100.0      # CaloChallenge divides centres and widths (mm) by 100
PUBLISHED_SCALE = 1e3        # FPD and KPD are published x 10^3

_KERNEL_ROWS = 64            # rows of a kernel block: 64 x 10,000 x 8 bytes = 5 MB



# ----------------------------------------------------------------------- feature vector

def feature_vector_names(part: Particle) -> tuple[str, ...]:
    """Names of ``feature_vector``'s columns for ``part``, in CaloChallenge's order."""
    return feature_vector_names_from(feature_names(part)[0])


def feature_vector(features: Features) -> np.ndarray:
    """(N, d) CaloChallenge feature vectors from ``bologan.features.high_level_features``.

    Needs the features' ``incident_energies_mev`` (the file's E_inc). E_tot is the sum of the
    layer energies, i.e. of the voxels kept by the threshold, as CaloChallenge sums them.
    """
    if features.incident_energies_mev is None:
        raise ValueError("the features carry no incident energies (pass incident_energies_mev)")
    col = {name: features.values[:, j] for j, name in enumerate(features.names)}
    layer_names = [n for n in features.names if n.startswith("e_layer_")]
    e_layers = np.column_stack([col[n] for n in layer_names])
    out = []
    for name in feature_vector_names_from(features.names):
        if name == "log10_e_inc":
            out.append(np.log10(np.asarray(features.incident_energies_mev, dtype=np.float64)))
        elif name == "log10_e_tot":
            out.append(np.log10(e_layers.sum(axis=1) + LOG_OFFSET_MEV))
        elif name.startswith("log10_e_layer_"):
            out.append(np.log10(col[name.removeprefix("log10_")] + LOG_OFFSET_MEV))
        elif name.startswith(("ec_", "width_")):
            out.append(col[name] / LENGTH_SCALE_MM)
        else:
            out.append(col[name])
    return np.column_stack(out)


def feature_vector_names_from(names: tuple[str, ...]) -> tuple[str, ...]:
    """``feature_vector_names`` from the names of a ``Features`` (no particle needed)."""
    layers = [n.removeprefix("e_layer_") for n in names if n.startswith("e_layer_")]
    angular = [n.removeprefix("ec_eta_") for n in names if n.startswith("ec_eta_")]
    return tuple(
        ["log10_e_inc"]
        + [f"log10_e_layer_{lid}" for lid in layers]
        + [f"ec_eta_{lid}" for lid in angular] + [f"ec_phi_{lid}" for lid in angular]
        + [f"width_eta_{lid}" for lid in angular] + [f"width_phi_{lid}" for lid in angular]
        + ["log10_e_tot"]
        + [f"sparsity_{lid}" for lid in layers]
        + [f"ec_r_{lid}" for lid in layers] + [f"width_r_{lid}" for lid in layers])


def normalise_by_reference(reference: np.ndarray, generated: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Both samples divided by the reference's per-feature max |x| (1 where that is 0)."""
    ref = np.asarray(reference, dtype=np.float64)
    gen = np.asarray(generated, dtype=np.float64)
    scale = np.max(np.abs(ref), axis=0)
    scale = np.where(scale == 0, 1.0, scale)
    return ref / scale, gen / scale


# ----------------------------------------------------------------------- Fréchet distance

def frechet_gaussian(mu1: np.ndarray, cov1: np.ndarray, mu2: np.ndarray, cov2: np.ndarray) -> float:
    """|mu1 - mu2|^2 + Tr(S1 + S2 - 2 (S1 S2)^(1/2)), as jetnet computes it.

    When the square root of S1 S2 is not finite, ``FRECHET_EPS`` is added to both diagonals and
    it is taken again; the real part is kept (rounding leaves small imaginary parts). Not
    clipped at 0: identical inputs can give a tiny negative number, as in jetnet.
    """
    mu1, mu2 = np.atleast_1d(mu1), np.atleast_1d(mu2)
    s1, s2 = np.atleast_2d(cov1), np.atleast_2d(cov2)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")     # scipy warns on singular products; checked below
        root = scipy.linalg.sqrtm(s1 @ s2)
        if not np.isfinite(root).all():
            offset = np.eye(s1.shape[0]) * FRECHET_EPS
            root = scipy.linalg.sqrtm((s1 + offset) @ (s2 + offset))
    diff = mu1 - mu2
    return float(diff @ diff + np.trace(s1) + np.trace(s2) - 2.0 * np.trace(np.real(root)))


def _gaussian_fit(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return x.mean(axis=0), np.cov(x, rowvar=False)


def fpd_batch_sizes(min_samples: int = FPD_MIN_SAMPLES, max_samples: int = FPD_MAX_SAMPLES,
                    points: int = FPD_POINTS) -> np.ndarray:
    """Batch sizes evenly spaced in 1/N from ``min_samples`` to ``max_samples``, truncated."""
    return (1.0 / np.linspace(1.0 / min_samples, 1.0 / max_samples, points)).astype(np.int32)


def _line(x: np.ndarray, intercept: float, slope: float) -> np.ndarray:
    return intercept + slope * x


def extrapolate_to_infinite_n(batch_sizes: np.ndarray, values: np.ndarray) -> tuple[float, float]:
    """(intercept, its standard error) of a line fitted to ``values`` against 1/N, both
    parameters bounded below by 0 (``curve_fit`` with bounds, as jetnet fits)."""
    x = 1.0 / np.asarray(batch_sizes, dtype=np.float64)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")     # a perfect fit has an undefined covariance scale
        params, cov = curve_fit(_line, x, np.asarray(values, dtype=np.float64),
                                bounds=([0.0, 0.0], [np.inf, np.inf]))
    return float(params[0]), float(np.sqrt(np.diag(cov)[0]))


def _check_samples(reference: np.ndarray, generated: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    ref = np.asarray(reference, dtype=np.float64)
    gen = np.asarray(generated, dtype=np.float64)
    if ref.ndim != 2 or gen.ndim != 2 or ref.shape[1] != gen.shape[1] or len(ref) < 2 or len(gen) < 2:
        raise ValueError(f"need two samples of shape (N >= 2, d) with the same d, got {ref.shape} and {gen.shape}")
    return ref, gen


def fpd(reference: np.ndarray, generated: np.ndarray, *, min_samples: int = FPD_MIN_SAMPLES,
        max_samples: int = FPD_MAX_SAMPLES, points: int = FPD_POINTS, batches: int = FPD_BATCHES,
        seed: int = SEED, normalise: bool = True) -> tuple[float, float]:
    """(FPD, error) of two feature samples (rows: showers), not yet x 10^3.

    NaN when either sample holds a non-finite value (a diverged generator)."""
    ref, gen = _check_samples(reference, generated)
    if not (np.isfinite(ref).all() and np.isfinite(gen).all()):
        return math.nan, math.nan
    if normalise:
        ref, gen = normalise_by_reference(ref, gen)
    sizes = fpd_batch_sizes(min_samples, max_samples, points)
    rng = np.random.default_rng(seed)
    means = []
    for size in sizes:
        values = []
        for _ in range(batches):
            a = ref[rng.choice(len(ref), size=size)]
            b = gen[rng.choice(len(gen), size=size)]
            values.append(frechet_gaussian(*_gaussian_fit(a), *_gaussian_fit(b)))
        means.append(np.mean(values))
    return extrapolate_to_infinite_n(sizes, np.array(means))


# ----------------------------------------------------------------------- kernel distance

def _sum_fourth_power(k: np.ndarray) -> float:
    """sum (k + 1)^4 of a block of gamma-scaled dot products (overwrites it): one in-place pass
    and one BLAS dot, the block staying in cache."""
    k += 1.0
    np.square(k, out=k)
    flat = k.ravel()
    return float(flat @ flat)


def _kernel_sum(x: np.ndarray, y: np.ndarray | None, gamma: float) -> float:
    """sum_ij (gamma x_i . y_j + 1)^4 over all pairs, a block of rows of x at a time (memory
    stays at _KERNEL_ROWS x len(y) numbers instead of a full kernel matrix).

    ``y`` None means y = x: the matrix is symmetric, so each row block is paired with itself
    and with the rows after it, and those off-diagonal blocks count twice."""
    total = 0.0
    for start in range(0, len(x), _KERNEL_ROWS):
        stop = start + _KERNEL_ROWS
        rows = x[start:stop] * gamma
        if y is None:
            total += _sum_fourth_power(rows @ x[start:stop].T) + 2.0 * _sum_fourth_power(rows @ x[stop:].T)
        else:
            total += _sum_fourth_power(rows @ y.T)
    return total


def mmd_poly_unbiased(x: np.ndarray, y: np.ndarray) -> float:
    """Unbiased MMD^2 of two samples with the kernel (x.y / d + 1)^4, d = number of features:
    the mean of k over distinct pairs within x, plus the same within y, minus twice the mean
    over all cross pairs."""
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    m, n = len(x), len(y)
    gamma = 1.0 / x.shape[-1]
    diag_x = float(np.sum((np.einsum("ij,ij->i", x, x) * gamma + 1.0) ** KPD_DEGREE))
    diag_y = float(np.sum((np.einsum("ij,ij->i", y, y) * gamma + 1.0) ** KPD_DEGREE))
    xx = (_kernel_sum(x, None, gamma) - diag_x) / (m * (m - 1))
    yy = (_kernel_sum(y, None, gamma) - diag_y) / (n * (n - 1))
    xy = _kernel_sum(x, y, gamma) / (m * n)
    return xx + yy - 2.0 * xy


def kpd(reference: np.ndarray, generated: np.ndarray, *, batches: int = KPD_BATCHES,
        batch_size: int = KPD_BATCH_SIZE, seed: int = SEED, normalise: bool = True) -> tuple[float, float]:
    """(KPD median, error = half the 16.275-83.725 percentile range), not yet x 10^3.

    NaN when either sample holds a non-finite value."""
    ref, gen = _check_samples(reference, generated)
    if not (np.isfinite(ref).all() and np.isfinite(gen).all()):
        return math.nan, math.nan
    if normalise:
        ref, gen = normalise_by_reference(ref, gen)
    values = []
    for i in range(batches):
        rng = np.random.default_rng(seed + i * KPD_SEED_STRIDE)
        a = ref[rng.choice(len(ref), size=batch_size)]
        b = gen[rng.choice(len(gen), size=batch_size)]
        values.append(mmd_poly_unbiased(a, b))
    return float(np.median(values)), float(iqr(values, rng=KPD_PERCENTILES) / 2.0)


# ----------------------------------------------------------------------- both, as published

@dataclass(frozen=True)
class PhysicsDistances:
    """FPD and KPD with their errors, x 10^3 (the published table's units, dimensionless)."""
    fpd_x1e3: float
    fpd_err_x1e3: float
    kpd_x1e3: float
    kpd_err_x1e3: float


def physics_distances(reference: np.ndarray, generated: np.ndarray) -> PhysicsDistances:
    """FPD and KPD of two feature-vector samples (``feature_vector``), CaloChallenge settings."""
    f, f_err = fpd(reference, generated)
    k, k_err = kpd(reference, generated)
    return PhysicsDistances(fpd_x1e3=f * PUBLISHED_SCALE, fpd_err_x1e3=f_err * PUBLISHED_SCALE,
                            kpd_x1e3=k * PUBLISHED_SCALE, kpd_err_x1e3=k_err * PUBLISHED_SCALE)


def feature_physics_distances(reference: Features, generated: Features) -> PhysicsDistances:
    """``physics_distances`` of two sets of high-level features (same particle)."""
    if reference.names != generated.names:
        raise ValueError("reference and generated features differ in their names")
    return physics_distances(feature_vector(reference), feature_vector(generated))
