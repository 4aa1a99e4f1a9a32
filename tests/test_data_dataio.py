"""Parquet shower files: exact round trip, metadata, and one-line errors for bad files."""
from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from bologan.dataio import (
    SHOWER_SCHEMA_VERSION,
    Showers,
    describe_showers,
    read_showers,
    showers_to_table,
    write_showers,
)
from common.errors import UserError
from bologan.geometry import PHOTONS, PIONS
from bologan.synthetic import generate_showers


@pytest.fixture(scope="module")
def photons():
    return generate_showers("photons", 300, seed=5)


def _raw(part, n=4, value=1.0, momentum=1024.0):
    """Showers built without validation, to write broken files on purpose."""
    return Showers(particle=part, momentum_mev=np.full(n, momentum),
                   voxels_mev=np.full((n, part.n_voxels), value, dtype=np.float32), source="test")


def _write_unchecked(path, showers):
    pq.write_table(showers_to_table(showers), path)


def _error(path, particle=None) -> str:
    with pytest.raises(UserError) as info:
        read_showers(path, particle)
    msg = str(info.value)
    assert "\n" not in msg
    assert str(path) in msg
    return msg


def test_round_trip_is_exact(tmp_path, photons):
    out = tmp_path / "p.parquet"
    write_showers(out, photons)
    back = read_showers(out)
    assert back.particle is PHOTONS
    assert back.source == photons.source
    assert back.voxels_mev.dtype == np.float32 and back.momentum_mev.dtype == np.float64
    assert np.array_equal(back.voxels_mev, photons.voxels_mev)
    assert np.array_equal(back.momentum_mev, photons.momentum_mev)
    assert len(back) == 300
    assert read_showers(out, "photons").particle is PHOTONS
    assert read_showers(out, PHOTONS).particle is PHOTONS


def test_columns_and_metadata(tmp_path, photons):
    out = tmp_path / "p.parquet"
    write_showers(out, photons)
    schema = pq.read_schema(out)
    assert schema.field("momentum_mev").type == pa.float64()
    assert schema.field("voxels_mev").type == pa.list_(pa.float32(), 368)
    meta = {k.decode(): v.decode() for k, v in schema.metadata.items() if k.startswith(b"bologan.")}
    assert meta["bologan.schema_version"] == str(SHOWER_SCHEMA_VERSION)
    assert meta["bologan.particle"] == "photons" and meta["bologan.pid"] == "22"
    assert meta["bologan.n_voxels"] == "368" and meta["bologan.units"] == "MeV"
    assert json.loads(meta["bologan.layers"])[1] == [1, 16, 10]
    assert json.loads(meta["bologan.eta_slice"]) == [0.2, 0.25]
    assert meta["bologan.source"] == "synthetic seed=5"


def test_multi_chunk_and_variable_list_columns_are_read(tmp_path, photons):
    table = showers_to_table(photons)
    out = tmp_path / "chunks.parquet"
    pq.write_table(table, out, row_group_size=64)
    assert np.array_equal(read_showers(out).voxels_mev, photons.voxels_mev)
    # A plain list column (as other tools write it) without our metadata: particle from width.
    flat = pa.array(photons.voxels_mev.reshape(-1))
    offsets = pa.array(np.arange(0, len(flat) + 1, 368, dtype=np.int32))
    plain = pa.table({"momentum_mev": photons.momentum_mev,
                      "voxels_mev": pa.ListArray.from_arrays(offsets, flat)})
    out2 = tmp_path / "plain.parquet"
    pq.write_table(plain, out2)
    back = read_showers(out2)
    assert back.particle is PHOTONS and np.array_equal(back.voxels_mev, photons.voxels_mev)


def test_missing_directory_and_not_parquet(tmp_path):
    assert "file not found" in _error(tmp_path / "nope.parquet")
    assert "directory" in _error(tmp_path)
    text = tmp_path / "text.parquet"
    text.write_text("momentum,voxels\n1,2\n")
    assert "not a Parquet file" in _error(text)


def test_truncated_file(tmp_path, photons):
    good = tmp_path / "good.parquet"
    write_showers(good, photons)
    cut = tmp_path / "cut.parquet"
    cut.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    assert "truncated" in _error(cut)


def test_missing_column(tmp_path):
    out = tmp_path / "m.parquet"
    pq.write_table(pa.table({"momentum_mev": [1024.0]}), out)
    assert "missing column(s) 'voxels_mev'" in _error(out)


def test_wrong_voxel_count_and_particle_mismatch(tmp_path, photons):
    out = tmp_path / "p.parquet"
    write_showers(out, photons)
    assert "particle mismatch" in _error(out, "pions")
    odd = tmp_path / "odd.parquet"
    flat = pa.array(np.zeros(3 * 100, dtype=np.float32))
    pq.write_table(pa.table({"momentum_mev": [1.0, 2.0, 3.0],
                             "voxels_mev": pa.FixedSizeListArray.from_arrays(flat, 100)}), odd)
    assert "100 voxels per shower matches no particle" in _error(odd)
    assert "wrong voxel count: 100 voxels per shower, pions need 533" in _error(odd, "pions")


def test_metadata_particle_disagreeing_with_width(tmp_path):
    out = tmp_path / "w.parquet"
    table = showers_to_table(_raw(PIONS))
    meta = dict(table.schema.metadata)
    meta[b"bologan.particle"] = b"photons"
    pq.write_table(table.replace_schema_metadata(meta), out)
    assert "wrong voxel count: 533 voxels per shower, photons need 368" in _error(out)


@pytest.mark.parametrize("value,words", [
    (np.nan, "2 of 4 showers have NaN or infinite voxels"),
    (np.inf, "2 of 4 showers have NaN or infinite voxels"),
    (-1.0, "2 of 4 showers have negative voxel energies"),
])
def test_bad_voxel_values(tmp_path, value, words):
    s = _raw(PHOTONS)
    s.voxels_mev[1, 7] = value
    s.voxels_mev[3, 0] = value
    out = tmp_path / "bad.parquet"
    _write_unchecked(out, s)
    assert words in _error(out)


@pytest.mark.parametrize("momentum", [0.0, -256.0, np.nan])
def test_bad_momenta(tmp_path, momentum):
    out = tmp_path / "bad.parquet"
    _write_unchecked(out, _raw(PIONS, momentum=momentum))
    assert "non-positive or non-finite momentum" in _error(out)


def test_empty_dataset(tmp_path):
    out = tmp_path / "empty.parquet"
    _write_unchecked(out, _raw(PHOTONS, n=0))
    assert "empty dataset" in _error(out)


def test_newer_schema_version_refused(tmp_path, photons):
    out = tmp_path / "new.parquet"
    table = showers_to_table(photons)
    meta = dict(table.schema.metadata)
    meta[b"bologan.schema_version"] = str(SHOWER_SCHEMA_VERSION + 1).encode()
    pq.write_table(table.replace_schema_metadata(meta), out)
    assert "schema version" in _error(out)


def test_write_refuses_bad_showers_and_keeps_previous_file(tmp_path, photons):
    out = tmp_path / "keep.parquet"
    write_showers(out, photons)
    before = out.read_bytes()
    bad = _raw(PHOTONS, value=-2.0)
    with pytest.raises(UserError, match="negative"):
        write_showers(out, bad)
    assert out.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["keep.parquet"]  # no temp file left
    with pytest.raises(UserError, match="is a directory"):
        write_showers(tmp_path, photons)


def test_showers_shape_checked():
    with pytest.raises(ValueError):
        Showers(particle=PIONS, momentum_mev=np.ones(3), voxels_mev=np.ones((3, 368)), source="x")


def test_describe(photons):
    info = describe_showers(photons)
    json.dumps(info)  # JSON-ready
    assert info["showers"] == 300 and info["particle"] == "photons"
    assert sum(m["showers"] for m in info["momenta"]) == 300
    assert len(info["momenta"]) == 15
    assert sum(info["layer_fractions"].values()) == pytest.approx(1.0)
    assert 0.0 < info["zero_fraction"] < 1.0
    means = [m["mean_total_mev"] for m in info["momenta"]]
    assert means == sorted(means)
    first = info["momenta"][0]
    assert first["momentum_mev"] == 256.0 and first["ekin_mev"] == 256.0
    assert set(first["layer_fractions"]) == {"0", "1", "2", "3", "12"}
    rows = photons.momentum_mev == 256.0
    assert first["mean_total_mev"] == pytest.approx(photons.voxels_mev[rows].sum(axis=1).mean(), rel=1e-5)


def test_ragged_list_column(tmp_path):
    flat = pa.array(np.ones(368 + 367, dtype=np.float32))
    ragged = pa.ListArray.from_arrays(pa.array([0, 368, 735], type=pa.int32()), flat)
    out = tmp_path / "ragged.parquet"
    pq.write_table(pa.table({"momentum_mev": [256.0, 512.0], "voxels_mev": ragged}), out)
    assert "different voxel counts (367 to 368)" in _error(out)
