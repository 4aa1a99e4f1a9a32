"""The voxel layout the data layer relies on (bologan.geometry)."""
from __future__ import annotations

import numpy as np
import pytest

from common.errors import UserError
from bologan.geometry import MOMENTA_MEV, PHOTONS, PIONS, particle


def test_voxel_counts_and_layer_sums():
    assert PHOTONS.n_voxels == 368
    assert PIONS.n_voxels == 533
    assert [ly.n_voxels for ly in PHOTONS.layers] == [8, 160, 190, 5, 5]
    assert [ly.n_voxels for ly in PIONS.layers] == [8, 100, 100, 5, 150, 160, 10]
    assert PHOTONS.layer_ids == (0, 1, 2, 3, 12)
    assert PIONS.layer_ids == (0, 1, 2, 3, 12, 13, 14)


@pytest.mark.parametrize("part", [PHOTONS, PIONS])
def test_layer_slices_tile_the_vector(part):
    slices = list(part.layer_slices().values())
    assert slices[0].start == 0 and slices[-1].stop == part.n_voxels
    assert all(a.stop == b.start for a, b in zip(slices, slices[1:]))


def test_momenta_and_ekin():
    assert MOMENTA_MEV[0] == 256.0 and MOMENTA_MEV[-1] == 2.0**22 and len(MOMENTA_MEV) == 15
    assert PHOTONS.ekin_mev(1024.0) == 1024.0
    ekin = PIONS.ekin_mev(np.array([256.0]))
    assert ekin[0] == pytest.approx(np.hypot(256.0, 139.57) - 139.57)


def test_lookup_by_name_and_pid():
    assert particle("pions") is PIONS and particle(22) is PHOTONS
    with pytest.raises(UserError, match="unknown particle"):
        particle("muons")


# n_alpha per layer as listed with the dataset-1 radial edges in the CaloChallenge binning files
BINNING_N_ALPHA = {"photons": {0: 1, 1: 10, 2: 10, 3: 1, 12: 1},
                   "pions": {0: 1, 1: 10, 2: 10, 3: 1, 12: 10, 13: 10, 14: 1}}


@pytest.mark.parametrize("part", [PHOTONS, PIONS])
def test_radial_edges_agree_with_voxel_counts(part):
    assert {ly.layer_id: ly.n_alpha for ly in part.layers} == BINNING_N_ALPHA[part.name]
    for ly in part.layers:
        edges = part.radial_edges_mm(ly.layer_id)
        assert len(edges) - 1 == ly.n_radial, ly.layer_id
        assert edges[0] == 0 and all(a < b for a, b in zip(edges, edges[1:]))
    assert sum((len(part.radial_edges_mm(lid)) - 1) * BINNING_N_ALPHA[part.name][lid]
               for lid in part.layer_ids) == part.n_voxels
