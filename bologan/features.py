"""CaloChallenge high-level shower features, their separation power and a standardised Fréchet distance.

Features per shower (CaloChallenge ``HighLevelFeatures`` definitions, reference: quality.md
section 3), computed after zeroing voxels below ``VOXEL_THRESHOLD_MEV`` as the CaloChallenge
evaluation does for dataset 1:

- ``e_ratio``: E_tot / E_inc, with E_inc the kinetic energy (the energy scale the generator's
  voxel fractions are relative to, ``bologan.labels``; for photons it equals the file's
  ``incident_energies``).
- ``e_layer_<l>``: energy of layer l, MeV.
- ``ec_eta_<l>``, ``ec_phi_<l>`` (layers with more than one angular bin) and ``ec_r_<l>`` (every
  layer): centre of energy, mm, in the layer's local frame eta = r cos(alpha), phi = r sin(alpha),
  with r the midpoint of the voxel's radial bin and alpha the midpoint of its angular bin.
- ``width_eta_<l>``, ``width_phi_<l>``, ``width_r_<l>``: energy-weighted standard deviation, mm.
- ``sparsity_<l>``: fraction of the layer's voxels below the threshold.

A layer without energy has centre and width 0 (the CaloChallenge's 1e-16 in the denominator).
Everything is vectorised over showers: one small matrix product per layer.
"""
from __future__ import annotations

import functools
import math
import warnings
from dataclasses import dataclass

import numpy as np
import scipy.linalg

from bologan.geometry import Particle

VOXEL_THRESHOLD_MEV = 1.0
"""Voxels below this energy count as empty (CaloChallenge dataset-1 evaluation)."""

SEPARATION_BINS = 50
"""Bins per feature for the separation power (before the underflow and overflow bins)."""

_EMPTY_LAYER_MEV = 1e-16   # keeps centre and width of an empty layer at 0 instead of 0/0

FEATURE_GROUPS: tuple[str, ...] = ("e_ratio", "e_layer", "centre", "width", "sparsity")
"""Coarse feature groups, for per-group summaries of the separation power."""


@dataclass(frozen=True)
class Features:
    """High-level features of N showers: ``values[:, j]`` is feature ``names[j]``.

    Units: ``e_layer_*`` MeV, ``ec_*`` and ``width_*`` mm, ``e_ratio`` and ``sparsity_*`` none.
    """
    names: tuple[str, ...]
    groups: tuple[str, ...]       # FEATURE_GROUPS entry of each feature
    values: np.ndarray            # (N, n_features) float64
    # The file's incident energy of each shower (CaloChallenge ``incident_energies``: the
    # momentum, MeV), which the FPD/KPD feature vector starts with (bologan.physics_distance).
    incident_energies_mev: np.ndarray | None = None

    def column(self, name: str) -> np.ndarray:
        return self.values[:, self.names.index(name)]


@dataclass(frozen=True)
class _Layout:
    """Per-particle voxel moments: a layer's voxel energies times these give its energy moments."""
    slices: tuple[slice, ...]     # voxel range of each layer
    moments: tuple[np.ndarray, ...]   # per layer (n_voxels_l, 7): 1, eta, eta^2, phi, phi^2, r, r^2
    layer_ids: tuple[int, ...]
    angular: tuple[bool, ...]     # layer has more than one angular bin



@functools.lru_cache(maxsize=None)
def _layout(part: Particle) -> _Layout:
    moments = []
    for layer in part.layers:
        r_mid, alpha_mid = voxel_coordinates(part, layer.layer_id)
        eta, phi = r_mid * np.cos(alpha_mid), r_mid * np.sin(alpha_mid)
        moments.append(np.column_stack([np.ones_like(r_mid), eta, eta**2, phi, phi**2, r_mid, r_mid**2]))
    return _Layout(slices=tuple(part.layer_slices().values()), moments=tuple(moments),
                   layer_ids=part.layer_ids, angular=tuple(ly.n_alpha > 1 for ly in part.layers))


def voxel_coordinates(part: Particle, layer_id: int) -> tuple[np.ndarray, np.ndarray]:
    """(r mm, alpha rad) of each voxel of one layer, in the flattened order (radial fastest)."""
    layer = next(ly for ly in part.layers if ly.layer_id == layer_id)
    edges = np.asarray(part.radial_edges_mm(layer_id), dtype=np.float64)
    if edges.size != layer.n_radial + 1:
        raise ValueError(f"{part.name} layer {layer_id}: {edges.size} radial edges for {layer.n_radial} bins")
    r_mid = 0.5 * (edges[:-1] + edges[1:])
    alpha_edges = np.linspace(-math.pi, math.pi, layer.n_alpha + 1)
    alpha_mid = 0.5 * (alpha_edges[:-1] + alpha_edges[1:])
    # Radial index fastest: voxel k of the layer sits at radial bin k % n_radial, angle k // n_radial.
    return np.tile(r_mid, layer.n_alpha), np.repeat(alpha_mid, layer.n_radial)


def feature_names(part: Particle) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(names, groups) of the features ``high_level_features`` returns for ``part``, in order."""
    lay = _layout(part)
    ang = [lid for lid, a in zip(lay.layer_ids, lay.angular, strict=True) if a]
    blocks = [
        ("e_ratio", ["e_ratio"]),
        ("e_layer", [f"e_layer_{lid}" for lid in lay.layer_ids]),
        ("centre", [f"ec_eta_{lid}" for lid in ang] + [f"ec_phi_{lid}" for lid in ang]
         + [f"ec_r_{lid}" for lid in lay.layer_ids]),
        ("width", [f"width_eta_{lid}" for lid in ang] + [f"width_phi_{lid}" for lid in ang]
         + [f"width_r_{lid}" for lid in lay.layer_ids]),
        ("sparsity", [f"sparsity_{lid}" for lid in lay.layer_ids]),
    ]
    names = tuple(n for _, block in blocks for n in block)
    groups = tuple(g for g, block in blocks for _ in block)
    return names, groups


def high_level_features(part: Particle, voxels_mev: np.ndarray, incident_energy_mev: np.ndarray,
                        threshold_mev: float = VOXEL_THRESHOLD_MEV,
                        incident_energies_mev: np.ndarray | None = None) -> Features:
    """Features of every shower; ``voxels_mev`` (N, n_voxels) MeV, ``incident_energy_mev`` (N,) MeV
    (the E_inc of ``e_ratio``). ``incident_energies_mev`` (N,) MeV is the file's incident energy,
    kept for the FPD/KPD feature vector; by default ``incident_energy_mev``."""
    voxels = np.asarray(voxels_mev, dtype=np.float64)
    e_inc = np.asarray(incident_energy_mev, dtype=np.float64).reshape(-1)
    if voxels.ndim != 2 or voxels.shape != (e_inc.size, part.n_voxels):
        raise ValueError(f"expected voxels of shape ({e_inc.size}, {part.n_voxels}) for {part.name}, "
                         f"got {voxels.shape}")
    lay = _layout(part)
    below = voxels < threshold_mev
    kept = np.where(below, 0.0, voxels)
    # One small matrix product per layer: (N, n_voxels_l) @ (n_voxels_l, 7) -> (N, layers, 7).
    sums = np.stack([kept[:, sl] @ m for sl, m in zip(lay.slices, lay.moments, strict=True)], axis=1)
    energy = sums[:, :, 0]
    denom = energy + _EMPTY_LAYER_MEV
    mean = sums[:, :, 1::2] / denom[:, :, None]            # eta, phi, r
    second = sums[:, :, 2::2] / denom[:, :, None]
    width = np.sqrt(np.maximum(0.0, second - mean**2))
    starts = [sl.start for sl in lay.slices]
    n_per_layer = np.array([sl.stop - sl.start for sl in lay.slices], dtype=np.float64)
    sparsity = np.add.reduceat(below.view(np.uint8), starts, axis=1, dtype=np.int64) / n_per_layer
    ang = np.array(lay.angular)
    columns = [
        (energy.sum(axis=1) / e_inc)[:, None],
        energy,
        mean[:, ang, 0], mean[:, ang, 1], mean[:, :, 2],
        width[:, ang, 0], width[:, ang, 1], width[:, :, 2],
        sparsity,
    ]
    names, groups = feature_names(part)
    values = np.concatenate(columns, axis=1)
    assert values.shape[1] == len(names)
    file_e_inc = e_inc if incident_energies_mev is None else \
        np.asarray(incident_energies_mev, dtype=np.float64).reshape(-1)
    if file_e_inc.shape != e_inc.shape:
        raise ValueError(f"expected {e_inc.size} incident energies, got {file_e_inc.size}")
    return Features(names=names, groups=groups, values=values, incident_energies_mev=file_e_inc)


# ----------------------------------------------------------------------- separation power

def separation_power(counts1: np.ndarray, counts2: np.ndarray) -> float:
    """Triangular discrimination of two histograms on the same bins, each normalised to unit sum.

    0.5 * sum (h1 - h2)^2 / (h1 + h2) over bins where h1 + h2 > 0: 0 for identical shapes,
    1 for disjoint ones.
    """
    h1 = np.asarray(counts1, dtype=np.float64).ravel()
    h2 = np.asarray(counts2, dtype=np.float64).ravel()
    if h1.shape != h2.shape:
        raise ValueError(f"histograms have different bin counts: {h1.size} and {h2.size}")
    if np.any(h1 < 0) or np.any(h2 < 0) or h1.sum() == 0 or h2.sum() == 0:
        raise ValueError("separation power needs two non-empty histograms of non-negative counts")
    h1, h2 = h1 / h1.sum(), h2 / h2.sum()
    used = (h1 + h2) > 0
    return float(0.5 * np.sum((h1[used] - h2[used]) ** 2 / (h1[used] + h2[used])))


def reference_bin_edges(reference: np.ndarray, bins: int = SEPARATION_BINS) -> np.ndarray:
    """Common bin edges for one feature, from the reference sample alone.

    Equal-population (quantile) bins, so features spanning decades (layer energies over
    256 MeV .. 4 TeV) are resolved everywhere; a feature with at most ``bins`` distinct values
    (sparsity, empty layers) gets one bin per value instead. Values beyond the edges go to the
    underflow and overflow bins of ``flow_histogram``.
    """
    x = np.asarray(reference, dtype=np.float64).ravel()
    x = x[np.isfinite(x)]
    if x.size == 0:
        raise ValueError("no finite reference value to bin")
    distinct = np.unique(x)
    if distinct.size == 1:
        v = float(distinct[0])
        half = max(abs(v) * 1e-9, 1e-12)
        return np.array([v - half, v + half])
    if distinct.size <= bins:
        return np.concatenate([distinct[:1], 0.5 * (distinct[:-1] + distinct[1:]), distinct[-1:]])
    return np.unique(np.quantile(x, np.linspace(0.0, 1.0, bins + 1)))


def flow_histogram(values: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Counts in [underflow, bins..., overflow]; non-finite values count as overflow."""
    x = np.asarray(values, dtype=np.float64).ravel()
    finite = np.isfinite(x)
    inside, _ = np.histogram(x[finite], bins=edges)
    under = int(np.sum(x[finite] < edges[0]))
    over = int(np.sum(x[finite] > edges[-1])) + int(np.sum(~finite))
    return np.concatenate([[under], inside, [over]])


def feature_bin_edges(reference: Features, bins: int = SEPARATION_BINS) -> list[np.ndarray]:
    """``reference_bin_edges`` of every feature, in order (computed once per reference)."""
    return [reference_bin_edges(reference.values[:, j], bins) for j in range(len(reference.names))]


def separation_powers(reference: Features, generated: Features,
                      edges: list[np.ndarray] | None = None) -> dict[str, float]:
    """Separation power of every feature, on bins from the reference (``feature_bin_edges``)."""
    if reference.names != generated.names:
        raise ValueError("reference and generated features differ in their names")
    edges = feature_bin_edges(reference) if edges is None else edges
    return {name: separation_power(flow_histogram(reference.values[:, j], edges[j]),
                                   flow_histogram(generated.values[:, j], edges[j]))
            for j, name in enumerate(reference.names)}


# ----------------------------------------------------------------------- Fréchet distance

def gaussian_frechet_distance(mu1: np.ndarray, cov1: np.ndarray, mu2: np.ndarray, cov2: np.ndarray) -> float:
    """|mu1 - mu2|^2 + Tr(S1 + S2 - 2 (S1 S2)^(1/2)) of two Gaussians, >= 0.

    Singular covariances (a constant or duplicated feature) are allowed: the square root of
    S1 S2 is taken with scipy and, where that is not finite, from the eigenvalues of S1 S2
    (real and non-negative for two positive semi-definite matrices, up to rounding, which is
    what the small imaginary parts are).
    """
    mu1, mu2 = np.atleast_1d(np.asarray(mu1, dtype=np.float64)), np.atleast_1d(np.asarray(mu2, dtype=np.float64))
    s1, s2 = np.atleast_2d(np.asarray(cov1, dtype=np.float64)), np.atleast_2d(np.asarray(cov2, dtype=np.float64))
    if not (mu1.shape == mu2.shape and s1.shape == s2.shape == (mu1.size, mu1.size)):
        raise ValueError(f"inconsistent shapes: means {mu1.shape}, {mu2.shape}, covariances {s1.shape}, {s2.shape}")
    if not (np.all(np.isfinite(mu1)) and np.all(np.isfinite(mu2))
            and np.all(np.isfinite(s1)) and np.all(np.isfinite(s2))):
        return math.nan
    product = s1 @ s2
    with warnings.catch_warnings():
        # scipy warns for singular input; the result is checked below instead.
        warnings.simplefilter("ignore")
        root = scipy.linalg.sqrtm(product)
    trace_root = float(np.real(np.trace(root))) if np.all(np.isfinite(root)) else math.nan
    if not math.isfinite(trace_root):
        eig = np.real(np.linalg.eigvals(product))
        trace_root = float(np.sum(np.sqrt(np.clip(eig, 0.0, None))))
    diff = mu1 - mu2
    value = float(diff @ diff + np.trace(s1) + np.trace(s2) - 2.0 * trace_root)
    # Rounding can leave a tiny negative number for identical inputs.
    return max(0.0, value)


def frechet_distance(reference: np.ndarray, generated: np.ndarray) -> float:
    """Fréchet distance of Gaussians fitted to two samples (rows: showers, columns: features)."""
    x = np.asarray(reference, dtype=np.float64)
    y = np.asarray(generated, dtype=np.float64)
    if x.ndim != 2 or y.ndim != 2 or x.shape[1] != y.shape[1] or x.shape[0] < 2 or y.shape[0] < 2:
        raise ValueError(f"need two samples of shape (N >= 2, d) with the same d, got {x.shape} and {y.shape}")
    return gaussian_frechet_distance(x.mean(axis=0), np.cov(x, rowvar=False),
                                     y.mean(axis=0), np.cov(y, rowvar=False))


def standardisation(reference: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(mean, scale) per feature of the reference; a feature constant there keeps scale 1."""
    x = np.asarray(reference, dtype=np.float64)
    mean, std = x.mean(axis=0), x.std(axis=0)
    return mean, np.where(std > 0, std, 1.0)


def feature_frechet_distance(reference: Features, generated: Features) -> float:
    """FPD-like number: the Fréchet distance over the feature vector, both samples standardised
    by the reference's mean and standard deviation first.

    Standardising makes the features (MeV, mm, fractions) commensurate, so no layer energy
    dominates by its units, and the number reads as "in units of the reference spread". It is
    not the CaloChallenge's published FPD (``bologan.physics_distance`` computes that one); it is
    recorded as ``frechet_hlf_std`` and compares only with itself.
    """
    if reference.names != generated.names:
        raise ValueError("reference and generated features differ in their names")
    mean, scale = standardisation(reference.values)
    return frechet_distance((reference.values - mean) / scale, (generated.values - mean) / scale)
