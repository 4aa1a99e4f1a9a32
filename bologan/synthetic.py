"""Physics-inspired synthetic showers in the CaloChallenge dataset-1 layout (no real data needed).

The showers are not Geant4, but they have the structure a conditional GAN must learn, so a
generator that ignores its energy condition scores badly against them.  Energies in MeV.

Longitudinal profile
    Each layer is an interval of depth along the particle's path (photons: radiation lengths
    X0; pions: interaction lengths lambda), with dead material in front and a cryostat gap
    before the hadronic layers.  The energy profile is a gamma distribution in depth,
    dE/dt ~ (bt)^(a-1) exp(-bt), whose maximum (a-1)/b moves deeper with ln E
    (photons: t_max = ln(E/10 MeV) - 0.5 X0; hadrons: t_max = 0.2 ln(E/GeV) + 0.7 lambda).
    A layer receives the difference of the gamma CDF at its two edges; what falls in dead
    material or behind the last layer is lost, so both the response and the layer fractions
    change with energy.  Shape parameters fluctuate per event.
Pions
    A pion first travels as a minimum-ionising track (about 120 MeV per lambda, narrow core)
    to an exponentially distributed first-interaction depth, then showers.  The shower has an
    electromagnetic part (short, narrow profile in X0 scaled to lambda) and a hadronic part
    (long, wide profile) seen with response h/e = 0.5.  The EM fraction rises with energy,
    f_em = 1 - (1 + E/GeV)^-0.2, and fluctuates per event (Beta distribution), so pions deposit
    only part of Ekin, with large event-to-event spread.
Energy resolution
    The deposited energy is smeared with a stochastic term and a constant term in quadrature:
    photons 10%/sqrt(E/GeV) (+) 0.7% (Gaussian); pions 45%/sqrt(E/GeV) (+) 4% (Gamma, so it
    stays positive even where the spread exceeds 100%).
Lateral profile
    In each layer the energy falls with the radial bin index r as a core plus halo,
    (1-h) exp(-r/rc) + h exp(-r/(3.5 rc)).  Pions have larger rc and h than photons, showers
    narrow slowly with energy, and rc fluctuates per event (much more for pions).
Angle
    Uniform on average over the angular bins, with Gamma-distributed weights whose relative
    spread falls as 1/sqrt(layer energy): larger for pions and at low energy.
Voxel noise and sparsity
    Each voxel is smeared by a Poisson-like term, sigma = sqrt(q E_voxel) (q = 0.1 MeV for
    photons, 1 MeV for pions), clipped at 0, and voxels below a threshold (0.1 / 0.5 MeV) are
    zeroed, which leaves more empty voxels at low energy.

Events per momentum follow the real pions file 1 (10,000 per momentum up to 2^18 MeV, then
5,000, 3,000, 2,000, 230), scaled to the number requested; rows are in random momentum order.
Generation is vectorised over events in chunks, so memory stays bounded.
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from scipy.special import gammainc

from bologan.dataio import Showers
from common.errors import UserError
from bologan.geometry import MOMENTA_MEV, Particle, is_grid_momentum
from bologan.geometry import particle as lookup_particle

REFERENCE_COUNTS: dict[float, int] = {p: 10_000 for p in MOMENTA_MEV[:11]}
REFERENCE_COUNTS.update({MOMENTA_MEV[11]: 5_000, MOMENTA_MEV[12]: 3_000,
                         MOMENTA_MEV[13]: 2_000, MOMENTA_MEV[14]: 230})
"""Showers per momentum (MeV) in CaloChallenge dataset-1 pions file 1 (120,230 in all)."""

MAX_EVENTS = 2_000_000
"""Upper limit on one call, to stop a typo from exhausting memory (pions: 2.1 GB at the limit)."""

_CHUNK = 8192  # events per vectorised block: bounds temporaries to tens of MB

# Layer depth intervals (start, end): photons in X0, pions in interaction lengths.
_DEPTH = {
    "photons": {0: (1.6, 2.0), 1: (2.0, 6.4), 2: (6.4, 22.5), 3: (22.5, 25.0), 12: (27.0, 60.0)},
    "pions": {0: (0.10, 0.13), 1: (0.13, 0.40), 2: (0.40, 1.25), 3: (1.25, 1.38),
              12: (1.65, 3.15), 13: (3.15, 7.25), 14: (7.25, 9.05)},
}
# Lateral core radius (radial-bin units) and halo fraction per layer.
_CORE = {
    "photons": {0: 1.5, 1: 1.0, 2: 1.3, 3: 1.0, 12: 0.9},
    "pions": {0: 2.0, 1: 1.6, 2: 1.8, 3: 1.2, 12: 2.2, 13: 2.5, 14: 1.8},
}
_HALO = {
    "photons": {0: 0.20, 1: 0.10, 2: 0.12, 3: 0.25, 12: 0.30},
    "pions": {0: 0.35, 1: 0.30, 2: 0.30, 3: 0.35, 12: 0.35, 13: 0.40, 14: 0.40},
}
_PER = {  # per-particle constants
    "photons": dict(width_jitter=0.08, angle_k0=60.0, voxel_q_mev=0.1, threshold_mev=0.1),
    "pions": dict(width_jitter=0.25, angle_k0=8.0, voxel_q_mev=1.0, threshold_mev=0.5),
}
_X0_PER_LAMBDA = 25.0      # EM sub-showers are short on the hadronic depth scale
_MIP_MEV_PER_LAMBDA = 120.0
_H_OVER_E = 0.5


def events_per_momentum(n_events: int, momenta_mev: Sequence[float]) -> np.ndarray:
    """Split ``n_events`` over ``momenta_mev`` in proportion to the real pions file.

    Momenta off the dataset-1 grid get the weight of a low-energy grid point.  Uses largest
    remainders, and gives every momentum at least one event when there are enough events.
    """
    weights = np.array([REFERENCE_COUNTS.get(_grid_key(p), 10_000) for p in momenta_mev], dtype=np.float64)
    exact = n_events * weights / weights.sum()
    counts = np.floor(exact).astype(np.int64)
    order = np.argsort(-(exact - counts), kind="stable")
    counts[order[: n_events - int(counts.sum())]] += 1
    if n_events >= len(counts):
        while (counts == 0).any():
            counts[int(np.argmax(counts))] -= 1
            counts[int(np.argmin(counts))] += 1
    return counts


def _grid_key(p: float) -> float:
    for q in MOMENTA_MEV:
        if math.isclose(p, q, rel_tol=1e-6):
            return q
    return p


def generate_showers(particle: str | Particle, n_events: int, seed: int,
                     momenta_mev: Sequence[float] | None = None) -> Showers:
    """``n_events`` synthetic showers of ``particle``; the same seed gives the same showers.

    ``momenta_mev`` defaults to the 15 dataset-1 momenta (2^8 .. 2^22 MeV).
    """
    part = particle if isinstance(particle, Particle) else lookup_particle(particle)
    if isinstance(n_events, bool) or not isinstance(n_events, (int, np.integer)) or n_events < 1:
        raise UserError(f"number of events must be a positive integer, got {n_events!r}")
    if n_events > MAX_EVENTS:
        raise UserError(f"{n_events} events requested; at most {MAX_EVENTS} per file")
    momenta = list(MOMENTA_MEV if momenta_mev is None else momenta_mev)
    if not momenta:
        raise UserError("no momenta given")
    for p in momenta:
        if not (isinstance(p, (int, float, np.number)) and math.isfinite(p) and p > 0):
            raise UserError(f"momentum {p!r} MeV is not a positive number")
    if part.name not in _DEPTH:
        raise UserError(f"no synthetic model for particle {part.name!r}")

    rng = np.random.default_rng(seed)
    counts = events_per_momentum(int(n_events), momenta)
    momentum = np.repeat(np.asarray(momenta, dtype=np.float64), counts)
    rng.shuffle(momentum)
    voxels = np.empty((len(momentum), part.n_voxels), dtype=np.float32)
    for start in range(0, len(momentum), _CHUNK):
        stop = min(start + _CHUNK, len(momentum))
        _fill_chunk(part, momentum[start:stop], voxels[start:stop], rng)
    off_grid = sum(not is_grid_momentum(p) for p in momenta)
    note = f", {off_grid} off-grid momenta" if off_grid else ""
    return Showers(particle=part, momentum_mev=momentum, voxels_mev=voxels,
                   source=f"synthetic seed={seed}{note}")


def _gamma_cdf(a: np.ndarray, b: np.ndarray, t: np.ndarray) -> np.ndarray:
    """CDF of the gamma depth profile at depth ``t`` (t < 0 -> 0)."""
    return gammainc(a, b * np.maximum(t, 0.0))


def _layer_fractions(a: np.ndarray, b: np.ndarray, lo: np.ndarray, hi: np.ndarray,
                     start: np.ndarray | float = 0.0) -> np.ndarray:
    """Fraction of a profile starting at depth ``start`` that falls in each [lo, hi): (N, L)."""
    s = np.reshape(start, (-1, 1))
    a2, b2 = a[:, None], b[:, None]
    return _gamma_cdf(a2, b2, hi[None, :] - s) - _gamma_cdf(a2, b2, lo[None, :] - s)


def _photon_layers(ekin: np.ndarray, lo: np.ndarray, hi: np.ndarray,
                   rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-layer deposited energy (N, L), core-only share 0 (N, L) and width factor (N,)."""
    n = len(ekin)
    e_gev = ekin / 1e3
    t_max = np.maximum(np.log(ekin / 10.0) - 0.5, 0.5) * rng.lognormal(0.0, 0.12, n)
    b = 0.5 * rng.lognormal(0.0, 0.06, n)
    frac = _layer_fractions(1.0 + b * t_max, b, lo, hi)
    sigma = np.sqrt(0.10**2 / e_gev + 0.007**2)
    scale = np.maximum(1.0 + sigma * rng.standard_normal(n), 0.0)
    layer_e = ekin[:, None] * scale[:, None] * frac
    width = np.ones(n)
    return layer_e, np.zeros_like(layer_e), width


def _pion_layers(ekin: np.ndarray, lo: np.ndarray, hi: np.ndarray,
                 rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-layer deposited energy (N, L), its MIP-track share (N, L) and width factor (N,)."""
    n = len(ekin)
    e_gev = ekin / 1e3
    # Track to the first interaction, or to where ionisation has used up the kinetic energy.
    t0 = rng.exponential(1.0, n)
    track_end = np.minimum(t0, ekin / _MIP_MEV_PER_LAMBDA)
    overlap = np.clip(track_end[:, None], lo[None, :], hi[None, :]) - lo[None, :]
    mip = overlap * _MIP_MEV_PER_LAMBDA
    e_shower = np.maximum(ekin - track_end * _MIP_MEV_PER_LAMBDA, 0.0)

    mean_fem = np.clip(1.0 - (1.0 + e_gev) ** -0.2, 0.02, 0.98)
    kappa = 12.0  # Beta concentration: spread of f_em around its mean
    f_em = rng.beta(mean_fem * kappa, (1.0 - mean_fem) * kappa)
    sigma = np.sqrt(0.45**2 / e_gev + 0.04**2)
    shape = 1.0 / sigma**2
    smear = rng.gamma(shape, 1.0 / shape)
    vis_em = e_shower * f_em * smear
    vis_had = e_shower * (1.0 - f_em) * _H_OVER_E * smear

    t_em = np.maximum(np.log(np.maximum(vis_em, 20.0) / 10.0) - 0.5, 0.5)
    b_em = np.full(n, 0.5 * _X0_PER_LAMBDA)
    a_em = 1.0 + 0.5 * t_em * rng.lognormal(0.0, 0.15, n)
    t_had = np.maximum(0.2 * np.log(e_gev) + 0.7, 0.2) * rng.lognormal(0.0, 0.25, n)
    b_had = 0.9 * rng.lognormal(0.0, 0.1, n)
    a_had = 1.0 + b_had * t_had
    shower = (vis_em[:, None] * _layer_fractions(a_em, b_em, lo, hi, t0)
              + vis_had[:, None] * _layer_fractions(a_had, b_had, lo, hi, t0))
    layer_e = mip + shower
    with np.errstate(invalid="ignore", divide="ignore"):
        mip_share = np.where(layer_e > 0, mip / layer_e, 0.0)
    # EM-rich showers are narrower.
    width = 1.25 - 0.5 * f_em
    return layer_e, mip_share, width


def _fill_chunk(part: Particle, momentum: np.ndarray, out: np.ndarray, rng: np.random.Generator) -> None:
    """Write the voxels of one block of events into ``out`` (float32, (n, n_voxels))."""
    name = part.name
    consts = _PER[name]
    n = len(momentum)
    ekin = np.maximum(np.asarray(part.ekin_mev(momentum), dtype=np.float64), 1e-3)
    depth = _DEPTH[name]
    lo = np.array([depth[ly.layer_id][0] for ly in part.layers])
    hi = np.array([depth[ly.layer_id][1] for ly in part.layers])
    build = _photon_layers if name == "photons" else _pion_layers
    layer_e, core_share, width = build(ekin, lo, hi, rng)
    layer_e = np.maximum(layer_e, 0.0)

    energy_narrowing = (np.maximum(ekin, 100.0) / 1e4) ** -0.05
    for li, (ly, sl) in enumerate(zip(part.layers, part.layer_slices().values())):
        r = np.arange(ly.n_radial, dtype=np.float64) + 0.5
        rc = (_CORE[name][ly.layer_id] * width * energy_narrowing
              * rng.lognormal(0.0, consts["width_jitter"], n))[:, None]
        h = _HALO[name][ly.layer_id]
        prof = (1.0 - h) * np.exp(-r / rc) + h * np.exp(-r / (3.5 * rc))
        prof /= prof.sum(axis=1, keepdims=True)
        # A MIP track deposits in the innermost radial bin only.
        core = np.zeros(ly.n_radial)
        core[0] = 1.0
        share = core_share[:, li:li + 1]
        radial = layer_e[:, li:li + 1] * ((1.0 - share) * prof + share * core)
        if ly.n_alpha > 1:
            k = np.clip(consts["angle_k0"] * np.sqrt(np.maximum(layer_e[:, li] / 1e3, 1e-4)), 0.8, 400.0)
            ang = rng.gamma(np.repeat(k[:, None], ly.n_alpha, axis=1))
            ang /= np.maximum(ang.sum(axis=1, keepdims=True), 1e-300)
        else:
            ang = np.ones((n, 1))
        block = out[:, sl].reshape(n, ly.n_alpha, ly.n_radial)
        assert np.may_share_memory(block, out)  # a copy here would silently drop the layer
        np.multiply(ang[:, :, None], radial[:, None, :], out=block, casting="same_kind")

    # Poisson-like voxel smearing, then the readout threshold.
    noise = rng.standard_normal(out.shape, dtype=np.float32)
    noise *= np.sqrt(np.float32(consts["voxel_q_mev"]) * out)
    out += noise
    out[out < np.float32(consts["threshold_mev"])] = 0.0
