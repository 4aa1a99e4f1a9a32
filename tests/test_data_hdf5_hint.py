"""An HDF5 file given where Parquet showers are expected: say so, and give the conversion line."""
from __future__ import annotations

import shlex
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from test_reliability_inputs import train  # noqa: E402

from bologan.data import main as data_main  # noqa: E402
from bologan.dataio import HDF5_SIGNATURE, is_hdf5, read_showers  # noqa: E402
from common.errors import UserError  # noqa: E402


def _hdf5(path: Path, user_block: int = 0) -> Path:
    path.write_bytes(b"\0" * user_block + HDF5_SIGNATURE + bytes(range(256)) * 4)
    return path


def _conversion(message: str) -> list[str]:
    return shlex.split(message.split("convert it first: ", 1)[1])


def test_scaling_run_names_hdf5_and_the_conversion(tmp_path, capsys):
    data = _hdf5(tmp_path / "dataset_1_pions_1.hdf5")
    msg = train(capsys, tmp_path, "--data", str(data), "--out", str(tmp_path / "run"))
    assert f"{data}: an HDF5 file, not a Parquet shower file" in msg
    assert "not a Parquet file or truncated" not in msg
    assert _conversion(msg) == ["python", "-m", "bologan.data", "convert", "--from", "hdf5", "--particle", "pions",
                                str(data), "--out", str(tmp_path / "dataset_1_pions_1.parquet")]


def test_the_conversion_line_is_a_valid_command(tmp_path, capsys):
    # The suggested command parses and reaches the HDF5 importer (which then finds the garbage).
    data = _hdf5(tmp_path / "photons showers.h5")
    with pytest.raises(UserError) as info:
        read_showers(data, "photons")
    argv = _conversion(str(info.value))
    assert argv[:3] == ["python", "-m", "bologan.data"] and "--particle" in argv
    assert argv[argv.index("--particle") + 1] == "photons"
    assert data_main(argv[3:]) == 2
    assert "not an HDF5 file or truncated" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["photons showers.h5"]


def test_hdf5_signature_after_a_user_block_and_renamed_files(tmp_path):
    assert is_hdf5(_hdf5(tmp_path / "a.hdf5", user_block=1024))
    assert not is_hdf5(_hdf5(tmp_path / "b.hdf5", user_block=100))     # not a user-block boundary
    (tmp_path / "c.parquet").write_text("momentum,voxels\n1,2\n")
    assert not is_hdf5(tmp_path / "c.parquet")
    renamed = _hdf5(tmp_path / "d.parquet")
    with pytest.raises(UserError) as info:
        read_showers(renamed)
    argv = _conversion(str(info.value))
    assert argv[argv.index("--out") + 1] == str(tmp_path / "d-showers.parquet")   # not the input itself
    assert argv[argv.index("--particle") + 1] == "photons|pions"


def test_bologan_train_says_the_same(tmp_path, capsys):
    from bologan.train import main as train_main

    data = _hdf5(tmp_path / "dataset_1_photons_1.hdf5")
    pytest.importorskip("tensorflow")
    assert train_main(["--data", str(data), "--out", str(tmp_path / "t")]) == 2
    assert "an HDF5 file, not a Parquet shower file" in capsys.readouterr().err
    assert not (tmp_path / "t").exists(), "bad input must leave nothing behind, not even an empty --out"
