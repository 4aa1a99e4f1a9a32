"""CaloChallenge dataset-1 geometry: the one source of truth for layers, voxels and energies.

Voxels are flattened as in the CaloChallenge files: radial index fastest, then angular bin,
then layer (in increasing layer id). Momenta are 2^8 .. 2^22 MeV; the GAN's condition uses the
kinetic energy Ekin = sqrt(p^2 + m^2) - m (BoloGAN common/VoxInputParameters.py).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from common.errors import UserError
from common.vocab import PARTICLE_NAMES, PARTICLE_PHOTONS, PARTICLE_PIONS  # noqa: F401 (PARTICLE_NAMES re-exported)

MOMENTA_MEV: tuple[float, ...] = tuple(float(2**i) for i in range(8, 23))
"""The 15 incident momenta of dataset 1, MeV."""

ETA_SLICE = (0.20, 0.25)
"""|eta| range of dataset 1."""


@dataclass(frozen=True)
class Layer:
    layer_id: int
    n_radial: int
    n_alpha: int

    @property
    def n_voxels(self) -> int:
        return self.n_radial * self.n_alpha


@dataclass(frozen=True)
class Particle:
    name: str          # "photons" | "pions"
    pid: int           # PDG id
    mass_mev: float
    layers: tuple[Layer, ...]

    @property
    def n_voxels(self) -> int:
        return sum(layer.n_voxels for layer in self.layers)

    @property
    def layer_ids(self) -> tuple[int, ...]:
        return tuple(layer.layer_id for layer in self.layers)

    def layer_slices(self) -> dict[int, slice]:
        """Voxel index range of each layer in the flattened vector."""
        out, start = {}, 0
        for layer in self.layers:
            out[layer.layer_id] = slice(start, start + layer.n_voxels)
            start += layer.n_voxels
        return out

    def ekin_mev(self, momentum_mev: float | np.ndarray) -> float | np.ndarray:
        """Kinetic energy, MeV, for momentum ``p`` in MeV."""
        p = np.asarray(momentum_mev, dtype=np.float64)
        ekin = np.sqrt(p * p + self.mass_mev**2) - self.mass_mev
        return float(ekin) if ekin.ndim == 0 else ekin

    @property
    def ekin_min_mev(self) -> float:
        return float(self.ekin_mev(MOMENTA_MEV[0]))

    @property
    def ekin_max_mev(self) -> float:
        return float(self.ekin_mev(MOMENTA_MEV[-1]))

    def radial_edges_mm(self, layer_id: int) -> tuple[float, ...]:
        """Radial bin edges of layer ``layer_id``, mm (``RADIAL_EDGES_MM``)."""
        return RADIAL_EDGES_MM[self.name][layer_id]


PHOTONS = Particle(
    name=PARTICLE_PHOTONS, pid=22, mass_mev=0.0,
    layers=(Layer(0, 8, 1), Layer(1, 16, 10), Layer(2, 19, 10), Layer(3, 5, 1), Layer(12, 5, 1)),
)
PIONS = Particle(
    name=PARTICLE_PIONS, pid=211, mass_mev=139.57,
    layers=(Layer(0, 8, 1), Layer(1, 10, 10), Layer(2, 10, 10), Layer(3, 5, 1),
            Layer(12, 15, 10), Layer(13, 16, 10), Layer(14, 10, 1)),
)
RADIAL_EDGES_MM: dict[str, dict[int, tuple[float, ...]]] = {
    "photons": {
        0: (0, 5, 10, 30, 50, 100, 200, 400, 600),
        1: (0, 2, 4, 6, 8, 10, 12, 15, 20, 30, 40, 50, 70, 90, 120, 150, 200),
        2: (0, 2, 5, 10, 15, 20, 25, 30, 40, 50, 60, 80, 100, 130, 160, 200, 250, 300, 350, 400),
        3: (0, 50, 100, 200, 400, 600),
        12: (0, 100, 200, 400, 1000, 2000),
    },
    "pions": {
        0: (0, 5, 10, 30, 50, 100, 200, 400, 600),
        1: (0, 1, 4, 7, 10, 15, 30, 50, 90, 150, 200),
        2: (0, 5, 10, 20, 30, 50, 80, 130, 200, 300, 400),
        3: (0, 50, 100, 200, 400, 600),
        12: (0, 10, 20, 30, 50, 80, 100, 130, 160, 200, 250, 300, 350, 400, 1000, 2000),
        13: (0, 10, 20, 30, 50, 80, 100, 130, 160, 200, 250, 300, 350, 400, 600, 1000, 2000),
        14: (0, 50, 100, 150, 200, 250, 300, 400, 600, 1000, 2000),
    },
}
"""Radial bin edges (mm, local frame) per particle and layer id, from the CaloChallenge
dataset-1 binning files; each layer's angular bins (``Layer.n_alpha``) divide [-pi, pi]
uniformly. len(edges) - 1 == ``Layer.n_radial`` (tested)."""

PARTICLES: dict[str, Particle] = {p.name: p for p in (PHOTONS, PIONS)}
_BY_PID = {p.pid: p for p in PARTICLES.values()}


def particle(name_or_pid: str | int) -> Particle:
    """Look a particle up by name ('photons', 'pions') or PDG id (22, 211)."""
    if isinstance(name_or_pid, int) and name_or_pid in _BY_PID:
        return _BY_PID[name_or_pid]
    if isinstance(name_or_pid, str) and name_or_pid in PARTICLES:
        return PARTICLES[name_or_pid]
    raise UserError(f"unknown particle {name_or_pid!r} (known: {', '.join(PARTICLES)}, or pid 22/211)")


def is_grid_momentum(momentum_mev: float) -> bool:
    return any(math.isclose(momentum_mev, p, rel_tol=1e-6) for p in MOMENTA_MEV)
