"""Checkpoint quality from the total shower energy (reference: bologan.md section 3). No TensorFlow.

Per incident momentum, the generated total energy Etot = sum of voxels is compared with the
Geant4 reference:

- range: BoloGAN's rule. A 100-bin histogram of the reference Etot on [0, 2*Ekin] gives the
  peak bin; the range is [max(0, peak - a*RMS), peak + b*RMS] with per-particle a, b
  (``RANGE_RMS_FACTORS``).
- chi2: 30 bins in GeV over that range, the two-histogram test for weighted histograms
  (ROOT ``Chi2TestX`` option "WW"), evaluated on raw counts. Normalising both histograms to unit
  area first, as BoloGAN does, does not change the value (the test is scale-invariant when the
  bin errors scale with the contents), so counts are used directly.
- chi2 with overflow: the same 30 bins plus an underflow and an overflow bin, filled from both
  samples, so showers outside the range count against the checkpoint instead of vanishing. It is
  finite whenever both samples are non-empty, and equals the BoloGAN value when every shower of
  both samples lies inside the range (the two extra bins are then empty in both and skipped).
  Reported with the fraction of generated showers outside the range.
- W1 (GeV) and KS distance on the unbinned Etot samples, as extra diagnostics.

A checkpoint's chi2/NDF is sum(chi2) / sum(NDF) over the momenta (either variant). The best
checkpoint has the lowest ``SELECTION_METRIC``, ties going to the later iteration (as in
BoloGAN). That metric is the overflow variant: BoloGAN's rule is +inf for every checkpoint at
which some momentum has no generated shower inside the range, so early in training it cannot
rank checkpoints at all, and later it ignores how many showers miss the range; the overflow
variant ranks every checkpoint and coincides with BoloGAN's once the showers fall inside.

``score_showers`` adds the CaloChallenge high-level-feature metrics (``bologan.features``):
per-feature separation powers, FPD and KPD exactly as CaloChallenge publishes them (x 10^3,
with errors; ``bologan.physics_distance``), and the package's earlier Fréchet distance over the
reference-standardised features under the name ``frechet_hlf_std`` (comparable only with itself).
This module is the one place evaluation scores come from (``bologan.evaluate``, training-time
evaluation, tests).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Iterable, Mapping

import numpy as np
from scipy.stats import wasserstein_distance

from bologan import features as hlf
from bologan.geometry import particle as lookup_particle
from bologan.physics_distance import PhysicsDistances, feature_physics_distances

MEV_PER_GEV = 1000.0

RANGE_RMS_FACTORS: dict[str, tuple[float, float]] = {
    "photons": (3.0, 3.0),
    "pions": (4.0, 3.5),
}
"""(a, b) of the histogram range [peak - a*RMS, peak + b*RMS], per particle name (BoloGAN)."""

PEAK_BINS = 100
"""Bins of the [0, 2*Ekin] histogram that locates the reference peak."""

DEFAULT_BINS = 30
"""Bins of the chi2 histograms over the reference range."""

SELECTION_METRIC = "chi2_ndf_overflow"
"""The score ``best_iteration`` minimises by default (see the module docstring for why)."""


def range_factors(particle: str) -> tuple[float, float]:
    """(a, b) for ``particle`` ('photons' or 'pions')."""
    try:
        return RANGE_RMS_FACTORS[particle]
    except KeyError:
        raise ValueError(f"no histogram-range factors for particle {particle!r}") from None


def reference_range(etot_ref: np.ndarray, a: float, b: float,
                    e_nominal: float | None = None) -> tuple[float, float]:
    """Histogram range [lo, hi] for one momentum, in the units of ``etot_ref``.

    ``e_nominal`` is the particle's kinetic energy in the same units; the peak is the centre of
    the fullest of ``PEAK_BINS`` bins on [0, 2*e_nominal] (the first one on ties) and RMS the
    standard deviation of the values inside that window, which is what ROOT's ``GetRMS`` gives
    for a filled histogram (under/overflow excluded). Without ``e_nominal`` the window is
    [0, max(etot_ref)].
    """
    x = np.asarray(etot_ref, dtype=np.float64).ravel()
    x = x[np.isfinite(x)]
    if x.size == 0:
        raise ValueError("empty reference sample")
    upper = 2.0 * float(e_nominal) if e_nominal is not None else float(x.max())
    if not upper > 0:
        raise ValueError(f"histogram window [0, {upper}] is empty")
    counts, edges = np.histogram(x, bins=PEAK_BINS, range=(0.0, upper))
    if counts.sum() == 0:
        raise ValueError(f"no reference value inside [0, {upper:g}]")
    k = int(np.argmax(counts))
    peak = 0.5 * (edges[k] + edges[k + 1])
    inside = x[(x >= 0.0) & (x <= upper)]
    rms = float(inside.std())
    if rms == 0.0:
        # All values equal: keep a non-empty range one peak-bin wide rather than failing.
        rms = float(edges[1] - edges[0])
    return max(0.0, peak - a * rms), peak + b * rms


def chi2_ww(counts1: np.ndarray, counts2: np.ndarray) -> tuple[float, int]:
    """Two-histogram chi2 and NDF on raw counts (ROOT Chi2TestX "WW" with unit weights).

    chi2 = sum_i (W1*y2_i - W2*y1_i)^2 / (W1^2*y2_i + W2^2*y1_i), with W the in-range totals;
    bins empty in both histograms are skipped and each removes one degree of freedom:
    NDF = bins - 1 - (bins empty in both). If one histogram is empty altogether the two cannot
    agree and chi2 is +inf (ROOT would refuse; returning inf keeps such a checkpoint from being
    chosen as the best).
    """
    y1 = np.asarray(counts1, dtype=np.float64).ravel()
    y2 = np.asarray(counts2, dtype=np.float64).ravel()
    if y1.shape != y2.shape:
        raise ValueError(f"histograms have different bin counts: {y1.size} and {y2.size}")
    if np.any(y1 < 0) or np.any(y2 < 0):
        raise ValueError("counts must be non-negative")
    both_empty = (y1 == 0) & (y2 == 0)
    ndf = int(y1.size - 1 - both_empty.sum())
    w1, w2 = y1.sum(), y2.sum()
    if w1 == 0 or w2 == 0:
        return math.inf, ndf
    used = ~both_empty
    delta = w1 * y2[used] - w2 * y1[used]
    sigma = w1 * w1 * y2[used] + w2 * w2 * y1[used]
    return float(np.sum(delta * delta / sigma)), ndf


def wasserstein1(x: np.ndarray, y: np.ndarray) -> float:
    """1-D Wasserstein-1 (earth mover's) distance of two samples, in their units."""
    return float(wasserstein_distance(np.asarray(x, dtype=np.float64).ravel(),
                                      np.asarray(y, dtype=np.float64).ravel()))


def ks_statistic(x: np.ndarray, y: np.ndarray) -> float:
    """Two-sample Kolmogorov-Smirnov distance D = max |F_x - F_y| of the empirical CDFs."""
    xs = np.sort(np.asarray(x, dtype=np.float64).ravel())
    ys = np.sort(np.asarray(y, dtype=np.float64).ravel())
    if xs.size == 0 or ys.size == 0:
        raise ValueError("KS distance needs two non-empty samples")
    # The supremum is reached at a sample point; evaluate both right-continuous CDFs there.
    points = np.concatenate([xs, ys])
    fx = np.searchsorted(xs, points, side="right") / xs.size
    fy = np.searchsorted(ys, points, side="right") / ys.size
    return float(np.max(np.abs(fx - fy)))


@dataclass
class EnergyScore:
    """Agreement of generated and reference total energy at one incident momentum."""
    momentum_mev: float
    ekin_mev: float
    chi2: float
    ndf: int
    w1_gev: float
    ks: float
    range_lo_gev: float           # chi2 histogram range, from the reference
    range_hi_gev: float
    n_ref: int                    # showers compared
    n_gen: int
    chi2_overflow: float = math.nan   # with underflow and overflow bins
    ndf_overflow: int = 0
    gen_out_of_range_fraction: float = math.nan   # generated showers outside [lo, hi]
    ref_out_of_range_fraction: float = math.nan


@dataclass
class FeatureScore:
    """High-level-feature agreement of one checkpoint, all momenta pooled (dimensionless)."""
    distances: PhysicsDistances           # CaloChallenge FPD and KPD x 10^3, with errors
    frechet_hlf_std: float                # Fréchet distance of reference-standardised features
    separation: dict[str, float]          # per feature name
    groups: dict[str, str]                # feature name -> bologan.features.FEATURE_GROUPS entry

    @property
    def fpd(self) -> float:
        """CaloChallenge FPD x 10^3."""
        return self.distances.fpd_x1e3

    @property
    def sep_power_mean(self) -> float:
        return float(np.mean(list(self.separation.values())))

    @property
    def sep_power_max(self) -> float:
        return max(self.separation.values())

    @property
    def sep_power_max_feature(self) -> str:
        return max(self.separation, key=self.separation.__getitem__)

    def group_means(self) -> dict[str, float]:
        """Mean separation power per feature group (NaN for a group with no feature)."""
        out = {}
        for group in hlf.FEATURE_GROUPS:
            vals = [v for k, v in self.separation.items() if self.groups[k] == group]
            out[group] = float(np.mean(vals)) if vals else math.nan
        return out

    def eval_fields(self) -> dict[str, Any]:
        d = self.distances
        fields: dict[str, Any] = {"fpd": d.fpd_x1e3, "fpd_err": d.fpd_err_x1e3, "kpd": d.kpd_x1e3,
                                  "kpd_err": d.kpd_err_x1e3, "frechet_hlf_std": self.frechet_hlf_std,
                                  "sep_power_mean": self.sep_power_mean,
                                  "sep_power_max": self.sep_power_max,
                                  "sep_power_max_feature": self.sep_power_max_feature}
        fields.update({f"sep_{g}": v for g, v in self.group_means().items()})
        return fields


@dataclass
class CheckpointScore:
    """One checkpoint over all momenta: chi2 and NDF summed (both variants), W1 (GeV) and KS
    averaged, the out-of-range fraction pooled, and the feature scores when computed."""
    chi2: float
    ndf: int
    chi2_ndf: float
    w1_gev: float
    ks: float
    chi2_overflow: float = math.nan
    ndf_overflow: int = 0
    chi2_ndf_overflow: float = math.nan
    out_of_range_fraction: float = math.nan   # generated showers outside the chi2 range
    features: FeatureScore | None = None

    def eval_fields(self, iteration: int) -> dict[str, Any]:
        """Keyword arguments of ``common.rundir.EvalRecord`` (whose ``w1`` is in GeV)."""
        fields = {"iteration": int(iteration), "chi2": self.chi2, "ndf": self.ndf,
                  "chi2_ndf": self.chi2_ndf, "w1": self.w1_gev, "ks": self.ks,
                  "chi2_overflow": self.chi2_overflow, "ndf_overflow": self.ndf_overflow,
                  "chi2_ndf_overflow": self.chi2_ndf_overflow,
                  "out_of_range_fraction": self.out_of_range_fraction}
        if self.features is not None:
            fields.update(self.features.eval_fields())
        return fields


def score_energy(etot_ref_mev: np.ndarray, etot_gen_mev: np.ndarray, momentum_mev: float,
                 particle: str, bins: int = DEFAULT_BINS) -> EnergyScore:
    """Score one momentum; Etot arrays in MeV, histograms in GeV."""
    part = lookup_particle(particle)
    a, b = range_factors(part.name)
    ekin_mev = float(part.ekin_mev(momentum_mev))
    ref = np.asarray(etot_ref_mev, dtype=np.float64).ravel() / MEV_PER_GEV
    gen = np.asarray(etot_gen_mev, dtype=np.float64).ravel() / MEV_PER_GEV
    if gen.size == 0:
        raise ValueError(f"no generated showers at {momentum_mev:g} MeV")
    lo, hi = reference_range(ref, a, b, e_nominal=ekin_mev / MEV_PER_GEV)
    edges = np.linspace(lo, hi, bins + 1)
    # [underflow, bins..., overflow]; BoloGAN's histograms are the in-range bins alone.
    f_ref, f_gen = hlf.flow_histogram(ref, edges), hlf.flow_histogram(gen, edges)
    chi2, ndf = chi2_ww(f_ref[1:-1], f_gen[1:-1])
    chi2_of, ndf_of = chi2_ww(f_ref, f_gen)
    out_gen, out_ref = f_gen[0] + f_gen[-1], f_ref[0] + f_ref[-1]
    return EnergyScore(momentum_mev=float(momentum_mev), ekin_mev=ekin_mev, chi2=chi2, ndf=ndf,
                       w1_gev=wasserstein1(ref, gen), ks=ks_statistic(ref, gen),
                       range_lo_gev=lo, range_hi_gev=hi, n_ref=int(ref.size), n_gen=int(gen.size),
                       chi2_overflow=chi2_of, ndf_overflow=ndf_of,
                       gen_out_of_range_fraction=float(out_gen / gen.size),
                       ref_out_of_range_fraction=float(out_ref / ref.size))


def _ratio(chi2: float, ndf: int) -> float:
    return chi2 / ndf if ndf > 0 else math.nan


def combine_scores(scores: Iterable[EnergyScore]) -> CheckpointScore:
    """Sum chi2 and NDF over momenta; chi2/NDF is NaN when no degree of freedom is left."""
    scores = list(scores)
    if not scores:
        raise ValueError("no per-energy scores to combine")
    chi2 = float(sum(s.chi2 for s in scores))
    ndf = int(sum(s.ndf for s in scores))
    chi2_of = float(sum(s.chi2_overflow for s in scores))
    ndf_of = int(sum(s.ndf_overflow for s in scores))
    n_gen = sum(s.n_gen for s in scores)
    n_out = sum(s.gen_out_of_range_fraction * s.n_gen for s in scores)
    return CheckpointScore(chi2=chi2, ndf=ndf, chi2_ndf=_ratio(chi2, ndf),
                           w1_gev=float(np.mean([s.w1_gev for s in scores])),
                           ks=float(np.mean([s.ks for s in scores])),
                           chi2_overflow=chi2_of, ndf_overflow=ndf_of,
                           chi2_ndf_overflow=_ratio(chi2_of, ndf_of),
                           out_of_range_fraction=float(n_out / n_gen) if n_gen else math.nan)


def score_checkpoint(ref_etot_by_momentum: Mapping[float, np.ndarray],
                     gen_etot_by_momentum: Mapping[float, np.ndarray], particle: str,
                     bins: int = DEFAULT_BINS) -> tuple[list[EnergyScore], CheckpointScore]:
    """Score a checkpoint at every reference momentum (MeV keys, Etot arrays in MeV)."""
    missing = [p for p in ref_etot_by_momentum if p not in gen_etot_by_momentum]
    if missing:
        raise ValueError(f"no generated showers for momenta {sorted(missing)} MeV")
    per_energy = [score_energy(ref_etot_by_momentum[p], gen_etot_by_momentum[p], p, particle, bins)
                  for p in sorted(ref_etot_by_momentum)]
    return per_energy, combine_scores(per_energy)


def etot_by_momentum(momentum_mev: np.ndarray, voxels_mev: np.ndarray) -> dict[float, np.ndarray]:
    """Total energy per shower (MeV, float64), grouped by exact incident momentum (MeV)."""
    momentum = np.asarray(momentum_mev, dtype=np.float64).ravel()
    voxels = np.asarray(voxels_mev)
    if voxels.ndim != 2 or voxels.shape[0] != momentum.size:
        raise ValueError(f"expected voxels of shape ({momentum.size}, n_voxels), got {voxels.shape}")
    etot = voxels.sum(axis=1, dtype=np.float64)
    values, inverse = np.unique(momentum, return_inverse=True)
    return {float(p): etot[inverse == i] for i, p in enumerate(values)}


def shower_features(particle: str, momentum_mev: np.ndarray, voxels_mev: np.ndarray) -> hlf.Features:
    """High-level features of showers, E_inc of ``e_ratio`` being the kinetic energy of the
    momentum (MeV); the momentum itself is kept as the file's incident energy (FPD/KPD)."""
    part = lookup_particle(particle)
    momentum = np.atleast_1d(np.asarray(momentum_mev, dtype=np.float64).ravel())
    ekin = np.atleast_1d(np.asarray(part.ekin_mev(momentum), dtype=np.float64))
    return hlf.high_level_features(part, voxels_mev, ekin, incident_energies_mev=momentum)


@dataclass
class Reference:
    """What scoring needs from the reference showers, computed once per reference sample."""
    particle: str
    etot_by_momentum: dict[float, np.ndarray]     # MeV
    features: hlf.Features
    feature_edges: list[np.ndarray]               # separation-power bins per feature

    @classmethod
    def from_showers(cls, particle: str, momentum_mev: np.ndarray, voxels_mev: np.ndarray) -> "Reference":
        feats = shower_features(particle, momentum_mev, voxels_mev)
        return cls(particle=particle, etot_by_momentum=etot_by_momentum(momentum_mev, voxels_mev),
                   features=feats, feature_edges=hlf.feature_bin_edges(feats))


def by_incident_energy(features: hlf.Features) -> hlf.Features:
    """The rows ordered by incident energy (stable). FPD and KPD draw rows by index, so row order
    enters them; ordering makes a checkpoint's scores the same however its showers were split
    into parts and pooled (momenta dealt over ranks), since each momentum's showers keep their
    own order."""
    if features.incident_energies_mev is None:
        return features
    order = np.argsort(features.incident_energies_mev, kind="stable")
    return hlf.Features(names=features.names, groups=features.groups, values=features.values[order],
                        incident_energies_mev=features.incident_energies_mev[order])


def score_features(reference: Reference, generated: hlf.Features, fpd_kpd: bool = True) -> FeatureScore:
    """Separation power per feature, FPD and KPD (NaN when not ``fpd_kpd``: they cost seconds,
    the rest milliseconds), and the standardised Fréchet distance."""
    distances = (feature_physics_distances(reference.features, by_incident_energy(generated)) if fpd_kpd
                 else PhysicsDistances(math.nan, math.nan, math.nan, math.nan))
    return FeatureScore(distances=distances,
                        frechet_hlf_std=hlf.feature_frechet_distance(reference.features, generated),
                        separation=hlf.separation_powers(reference.features, generated,
                                                         reference.feature_edges),
                        groups=dict(zip(generated.names, generated.groups, strict=True)))


def score_showers(reference: Reference, momentum_mev: np.ndarray, voxels_mev: np.ndarray,
                  bins: int = DEFAULT_BINS, fpd_kpd: bool = True) -> tuple[list[EnergyScore], CheckpointScore]:
    """Every metric of one checkpoint's generated showers (momentum MeV (N,), voxels MeV (N, n_voxels))."""
    return score_summaries(reference, etot_by_momentum(momentum_mev, voxels_mev),
                           shower_features(reference.particle, momentum_mev, voxels_mev), bins, fpd_kpd)


def score_summaries(reference: Reference, gen_etot_by_momentum: Mapping[float, np.ndarray],
                    generated: hlf.Features, bins: int = DEFAULT_BINS,
                    fpd_kpd: bool = True) -> tuple[list[EnergyScore], CheckpointScore]:
    """``score_showers`` from what it reduces the voxels to: the total energy per shower by
    momentum (MeV) and the high-level features. Every score depends on the showers only through
    these, so showers generated in parts (e.g. by many ranks, each some momenta) are scored by
    pooling the parts' summaries (``pool_features``) instead of their voxels."""
    per_energy, total = score_checkpoint(reference.etot_by_momentum, gen_etot_by_momentum, reference.particle, bins)
    total.features = score_features(reference, generated, fpd_kpd)
    return per_energy, total


def pool_features(parts: Iterable[hlf.Features]) -> hlf.Features:
    """The features of several sets of showers as one set (``score_features`` orders the rows)."""
    parts = list(parts)
    if not parts:
        raise ValueError("no features to pool")
    names, groups = parts[0].names, parts[0].groups
    if any(p.names != names for p in parts):
        raise ValueError("feature sets of different particles cannot be pooled")
    values = np.concatenate([p.values for p in parts], axis=0)
    if not all(p.incident_energies_mev is not None for p in parts):
        return hlf.Features(names=names, groups=groups, values=values)
    return hlf.Features(names=names, groups=groups, values=values,
                        incident_energies_mev=np.concatenate([p.incident_energies_mev for p in parts]))


def best_iteration(records: Iterable[Any], metric: str = SELECTION_METRIC) -> int:
    """Iteration with the lowest ``metric``; ties go to the later iteration, NaN never wins.

    ``records`` are objects with an ``iteration`` attribute and one named ``metric`` (e.g.
    EvalRecord); the default is ``SELECTION_METRIC``.
    """
    records = list(records)
    if not records:
        raise ValueError("no evaluated checkpoints")

    def key(r: Any) -> tuple[float, int]:
        value = float(getattr(r, metric))
        # Lower score first, then the higher iteration first among equal scores.
        return (math.inf if math.isnan(value) else value, -int(r.iteration))

    return int(min(records, key=key).iteration)
