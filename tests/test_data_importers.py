"""CaloChallenge HDF5 and FastCaloGAN CSV importers, on small files written here."""
from __future__ import annotations

import gzip
import sys

import h5py
import numpy as np
import pytest

from common.errors import UserError
from bologan.geometry import PHOTONS, PIONS
from bologan.importers import import_calochallenge_hdf5, import_fastcalogan_csv


def _showers(nvox, n, seed=0):
    rng = np.random.default_rng(seed)
    v = rng.exponential(5.0, size=(n, nvox))
    v[v < 3.0] = 0.0
    return v


def _h5(path, energies, showers, compression=None):
    with h5py.File(path, "w") as fh:
        if energies is not None:
            fh.create_dataset("incident_energies", data=energies)
        if showers is not None:
            fh.create_dataset("showers", data=showers, compression=compression)
    return path


def _one_line_error(fn, *args, **kwargs) -> str:
    with pytest.raises(UserError) as info:
        fn(*args, **kwargs)
    msg = str(info.value)
    assert "\n" not in msg
    return msg


# ---- HDF5 -----------------------------------------------------------------------------------

@pytest.mark.parametrize("compression", [None, "gzip"])
def test_hdf5_import(tmp_path, compression):
    energies = np.array([[256.0], [1024.0], [4096.0]])
    vox = _showers(368, 3)
    path = _h5(tmp_path / "dataset_1_photons_1.hdf5", energies, vox, compression)
    s = import_calochallenge_hdf5(path, "photons")
    assert s.particle is PHOTONS and len(s) == 3
    assert s.voxels_mev.dtype == np.float32 and s.momentum_mev.dtype == np.float64
    assert np.array_equal(s.voxels_mev, vox.astype(np.float32))
    assert s.momentum_mev.tolist() == [256.0, 1024.0, 4096.0]
    assert s.source == "imported from dataset_1_photons_1.hdf5"


def test_hdf5_whole_file_gzip(tmp_path):
    path = _h5(tmp_path / "d.hdf5", np.ones((2, 1)), _showers(368, 2))
    gz = tmp_path / "d.hdf5.gz"
    gz.write_bytes(gzip.compress(path.read_bytes()))
    assert "gunzip" in _one_line_error(import_calochallenge_hdf5, gz, "photons")


def test_hdf5_bad_files(tmp_path):
    assert "file not found" in _one_line_error(import_calochallenge_hdf5, tmp_path / "x.hdf5", "pions")
    text = tmp_path / "t.hdf5"
    text.write_text("not hdf5 at all")
    assert "not an HDF5 file" in _one_line_error(import_calochallenge_hdf5, text, "pions")
    good = _h5(tmp_path / "g.hdf5", np.ones((2, 1)) * 512, _showers(533, 2))
    cut = tmp_path / "cut.hdf5"
    cut.write_bytes(good.read_bytes()[:1500])
    msg = _one_line_error(import_calochallenge_hdf5, cut, "pions")
    assert "truncated" in msg or "damaged" in msg


def test_hdf5_keys_and_shapes(tmp_path):
    e, v = np.ones((2, 1)) * 512, _showers(533, 2)
    msg = _one_line_error(import_calochallenge_hdf5, _h5(tmp_path / "a.h5", None, v), "pions")
    assert "no dataset 'incident_energies'" in msg and "showers" in msg
    msg = _one_line_error(import_calochallenge_hdf5, _h5(tmp_path / "b.h5", e, None), "pions")
    assert "no dataset 'showers'" in msg
    msg = _one_line_error(import_calochallenge_hdf5, _h5(tmp_path / "c.h5", e, v), "photons")
    assert "'showers' has 533 voxels per shower, photons need 368" in msg
    msg = _one_line_error(import_calochallenge_hdf5, _h5(tmp_path / "d.h5", np.ones((3, 1)), v), "pions")
    assert "'showers' has 2 rows but 'incident_energies' has 3" in msg
    msg = _one_line_error(import_calochallenge_hdf5, _h5(tmp_path / "e.h5", np.ones((2, 2)), v), "pions")
    assert "'incident_energies' has shape (2, 2)" in msg
    msg = _one_line_error(import_calochallenge_hdf5, _h5(tmp_path / "f.h5", e, v.reshape(-1)), "pions")
    assert "'showers' has shape" in msg


def test_hdf5_bad_values(tmp_path):
    v = _showers(533, 3)
    v[1, 4] = np.nan
    msg = _one_line_error(import_calochallenge_hdf5, _h5(tmp_path / "n.h5", np.ones((3, 1)), v), "pions")
    assert "1 of 3 showers have NaN" in msg
    msg = _one_line_error(import_calochallenge_hdf5, _h5(tmp_path / "z.h5", np.zeros((3, 1)), _showers(533, 3)),
                          "pions")
    assert "non-positive" in msg


def test_hdf5_without_h5py(tmp_path, monkeypatch):
    path = _h5(tmp_path / "a.h5", np.ones((2, 1)), _showers(368, 2))
    monkeypatch.setitem(sys.modules, "h5py", None)  # import h5py -> ImportError
    assert "install the hdf5 extra" in _one_line_error(import_calochallenge_hdf5, path, "photons")


# ---- CSV ------------------------------------------------------------------------------------

def _csv(directory, pid, p, rows, header=False, eta="20_25"):
    path = directory / f"pid{pid}_E{p}_eta_{eta}_voxalisation.csv"
    lines = []
    if header:
        lines.append(",".join(f"v{i}" for i in range(rows.shape[1])))
    lines += [",".join("" if np.isnan(x) else repr(float(x)) for x in row) for row in rows]
    path.write_text("\n".join(lines) + "\n")
    return path


def test_csv_directory_import_with_header_extras_and_nan(tmp_path):
    a = _showers(533, 4, seed=1)
    b = np.hstack([_showers(533, 3, seed=2), np.full((3, 2), 7.0)])  # two trailing extra columns
    b[0, 10] = np.nan
    b[2, 0] = np.nan
    _csv(tmp_path, 211, 1024, a)
    _csv(tmp_path, 211, 256, b, header=True)
    _csv(tmp_path, 211, 512, a, eta="100_105")  # another eta slice: ignored
    (tmp_path / "notes.txt").write_text("ignored")
    s = import_fastcalogan_csv(tmp_path, "pions")
    assert s.particle is PIONS and len(s) == 7
    assert s.momentum_mev.tolist() == [256.0] * 3 + [1024.0] * 4  # sorted by momentum
    expected_b = np.nan_to_num(b[:, :533]).astype(np.float32)
    assert np.array_equal(s.voxels_mev[:3], expected_b)
    assert np.array_equal(s.voxels_mev[3:], a.astype(np.float32))
    assert "2 NaN voxels set to 0" in s.source
    assert "extra columns dropped in 1 files" in s.source


def test_csv_file_list_and_nested_layout(tmp_path):
    nested = tmp_path / "csvFiles" / "pid22" / "eta_20_25"
    nested.mkdir(parents=True)
    f1 = _csv(nested, 22, 2048, _showers(368, 2))
    f2 = _csv(nested, 22, 4096, _showers(368, 5))
    s = import_fastcalogan_csv(tmp_path / "csvFiles", "photons")
    assert len(s) == 7 and sorted(set(s.momentum_mev.tolist())) == [2048.0, 4096.0]
    assert len(import_fastcalogan_csv([f2, f1], PHOTONS)) == 7
    one = import_fastcalogan_csv(f1, "photons")
    assert len(one) == 2 and one.source == f"imported from {f1.name}"


def test_csv_pandas_numeric_header(tmp_path):
    rows = _showers(368, 2)
    path = tmp_path / "pid22_E512_eta_20_25_voxalisation.csv"
    path.write_text(",".join(str(i) for i in range(368)) + "\n"
                    + "\n".join(",".join(repr(float(x)) for x in r) for r in rows) + "\n")
    assert len(import_fastcalogan_csv(path, "photons")) == 2


def test_csv_naming_errors(tmp_path):
    good = _csv(tmp_path, 22, 512, _showers(368, 2))
    wrong = tmp_path / "photons_512.csv"
    wrong.write_text(good.read_text())
    assert "does not follow pid{pid}_E" in _one_line_error(import_fastcalogan_csv, [wrong], "photons")
    assert "pid 22, but pions have pid 211" in _one_line_error(import_fastcalogan_csv, [good], "pions")
    assert "eta slice 20_25, expected 100_105" in _one_line_error(
        import_fastcalogan_csv, [good], "photons", eta=(100, 105))
    assert "no files named pid211_E*_eta_20_25_voxalisation.csv" in _one_line_error(
        import_fastcalogan_csv, tmp_path, "pions")
    assert "not found" in _one_line_error(import_fastcalogan_csv, tmp_path / "nothing", "pions")
    assert "given twice" in _one_line_error(import_fastcalogan_csv, [good, good], "photons")


def test_csv_content_errors(tmp_path):
    bad_cols = _csv(tmp_path, 22, 256, _showers(370 + 1, 2))
    assert "371 columns per row, photons need 368 (or 370" in _one_line_error(
        import_fastcalogan_csv, bad_cols, "photons")
    empty = tmp_path / "pid22_E512_eta_20_25_voxalisation.csv"
    empty.write_text("")
    assert "empty file" in _one_line_error(import_fastcalogan_csv, empty, "photons")
    words = tmp_path / "pid22_E1024_eta_20_25_voxalisation.csv"
    words.write_text("1.0," * 367 + "1.0\n" + "abc," * 367 + "2.0\n")
    assert "not a numeric CSV" in _one_line_error(import_fastcalogan_csv, words, "photons")
    neg = _showers(368, 3)
    neg[2, 5] = -4.0
    neg_file = _csv(tmp_path, 22, 2048, neg)
    msg = _one_line_error(import_fastcalogan_csv, neg_file, "photons")
    assert "1 of 3 showers have negative voxel energies" in msg and neg_file.name in msg
