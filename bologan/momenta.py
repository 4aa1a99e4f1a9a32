"""Momentum ranges (``--momenta LO..HI``): which incident momenta one GAN trains and is scored on.

BoloGAN trains photons as two GANs split at 4 GeV (``2^8..2^12`` MeV with BatchNorm+ReLU,
``2^12..2^22`` MeV with BatchNorm+swish; both include the shared 2^12 MeV point) and pions as
one (``2^8..2^22``). The syntax, one place for every command that takes it:

- ``LO..HI``, both ends included, in MeV;
- each end a number (``4096``, ``4.1e3``) or a power of two ``2^K`` (MeV, as BoloGAN names them);
- the empty string: every momentum.

TensorFlow-free (numpy only).
"""
from __future__ import annotations

import argparse
import math
import re
from dataclasses import dataclass
from typing import Sequence

import numpy as np

SEPARATOR = ".."
# Momenta that differ by less than this relative amount are the same grid point (2^12 MeV is
# stored as 4096.0 or as 4096.000001 in converted files).
REL_TOL = 1e-6
SYNTAX = "LO..HI in MeV, each a number or 2^K (e.g. 2^8..2^12 or 4096..4194304)"
_POWER = re.compile(r"^2\^(-?\d+)$")


@dataclass(frozen=True)
class MomentumRange:
    """Momenta ``lo_mev <= p <= hi_mev`` (MeV, within ``REL_TOL``)."""
    lo_mev: float
    hi_mev: float

    def contains(self, momentum_mev: float | np.ndarray) -> np.ndarray:
        """Boolean mask (or bool) of the momenta inside the range."""
        p = np.asarray(momentum_mev, dtype=np.float64)
        return (p >= self.lo_mev * (1 - REL_TOL)) & (p <= self.hi_mev * (1 + REL_TOL))

    def select(self, momenta_mev: Sequence[float]) -> list[float]:
        """The given momenta that lie in the range, in their order."""
        return [float(p) for p in momenta_mev if bool(self.contains(p))]

    def __str__(self) -> str:
        return f"{_format(self.lo_mev)}{SEPARATOR}{_format(self.hi_mev)}"


def _format(mev: float) -> str:
    return str(int(mev)) if float(mev).is_integer() else repr(float(mev))


def _bound(text: str) -> float:
    text = text.strip()
    power = _POWER.match(text)
    if power:
        value = 2.0 ** int(power.group(1))
    else:
        try:
            value = float(text)
        except ValueError:
            raise ValueError(f"{text!r} is not a number or 2^K") from None
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"{text!r} is not a positive finite momentum")
    return value


def parse_momentum_range(text: str) -> MomentumRange | None:
    """``LO..HI`` as a ``MomentumRange``; '' gives None (every momentum). Raises ValueError."""
    if not text.strip():
        return None
    if text.count(SEPARATOR) != 1:
        raise ValueError(f"{text!r} is not of the form {SYNTAX}")
    lo_text, hi_text = text.split(SEPARATOR)
    lo, hi = _bound(lo_text), _bound(hi_text)
    if lo > hi:
        raise ValueError(f"{text!r}: the low end {_format(lo)} MeV is above the high end {_format(hi)} MeV")
    return MomentumRange(lo, hi)


def canonical(text: str) -> str:
    """The stored spelling of a range (MeV numbers), so that equal ranges hash alike."""
    parsed = parse_momentum_range(text)
    return "" if parsed is None else str(parsed)


def momenta_argument(flag: str = "--momenta"):
    """argparse ``type=`` for a range flag: returns the range (None for '')."""
    def parse(text: str) -> MomentumRange | None:
        try:
            return parse_momentum_range(text)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(f"{flag}: {exc}") from None
    return parse


MOMENTA_HELP = (f"train/score only incident momenta in this range: {SYNTAX}; both ends included; "
                "BoloGAN photons: 2^8..2^12 (BatchNorm+ReLU) and 2^12..2^22 (BatchNorm+swish)")


def restrict(showers, momenta: MomentumRange | None, what: str):
    """``showers`` (a ``bologan.dataio.Showers``) with only the momenta in ``momenta`` (None:
    all of them); ``what`` names them in the one-line error when none is left."""
    import dataclasses

    if momenta is None:
        return showers
    keep = momenta.contains(showers.momentum_mev)
    if not keep.any():
        found = np.unique(showers.momentum_mev)
        have = f"{_format(found[0])}..{_format(found[-1])} MeV" if found.size else "no showers"
        raise ValueError(f"{what}: no shower with a momentum in {momenta} MeV (it has {have})")
    if keep.all():
        return showers
    return dataclasses.replace(showers, momentum_mev=showers.momentum_mev[keep], voxels_mev=showers.voxels_mev[keep],
                               source=f"{showers.source} (momenta {momenta} MeV)")
