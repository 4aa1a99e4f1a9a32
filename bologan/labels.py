"""Condition label and voxel normalisation (BoloGAN defaults), TensorFlow-free.

- label ``maxe``: Ekin / Ekin_max (BoloGAN default ``MaxE``), in (0, 1].
- label ``loge``: ln(Ekin / Ekin_min) / ln(Ekin_max / Ekin_min), in [0, 1].
- normalisation: voxel energy / Ekin (BoloGAN ``normE``); the generator outputs that fraction.
"""
from __future__ import annotations

import numpy as np

from bologan.geometry import Particle


def energy_label(particle: Particle, momentum_mev: np.ndarray, kind: str = "maxe") -> np.ndarray:
    """Condition value per event (float32, shape (N, 1)) from the incident momentum in MeV."""
    ekin = np.asarray(particle.ekin_mev(np.asarray(momentum_mev, dtype=np.float64)), dtype=np.float64)
    if kind == "maxe":
        label = ekin / particle.ekin_max_mev
    elif kind == "loge":
        label = np.log(ekin / particle.ekin_min_mev) / np.log(particle.ekin_max_mev / particle.ekin_min_mev)
    else:
        raise ValueError(f"unknown label kind {kind!r}")
    return label.astype(np.float32).reshape(-1, 1)


def normalise_voxels(particle: Particle, momentum_mev: np.ndarray, voxels_mev: np.ndarray) -> np.ndarray:
    """Voxel energies as fractions of the kinetic energy (float32)."""
    ekin = np.asarray(particle.ekin_mev(np.asarray(momentum_mev, dtype=np.float64))).reshape(-1, 1)
    return (np.asarray(voxels_mev, dtype=np.float64) / ekin).astype(np.float32)


def denormalise_voxels(particle: Particle, momentum_mev: np.ndarray, fractions: np.ndarray) -> np.ndarray:
    """Inverse of ``normalise_voxels``: MeV per voxel (float32)."""
    ekin = np.asarray(particle.ekin_mev(np.asarray(momentum_mev, dtype=np.float64))).reshape(-1, 1)
    return (np.asarray(fractions, dtype=np.float64) * ekin).astype(np.float32)
