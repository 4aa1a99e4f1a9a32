"""``python -m bologan.data``: success paths, and bad input -> exit 2, one line, nothing written."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest

from bologan.data import main
from bologan.dataio import read_showers

REPO = Path(__file__).resolve().parents[1]


def _fails(capsys, argv, words):
    rc = main(argv)
    err = capsys.readouterr().err
    assert rc == 2
    assert err.count("\n") == 1 and err.startswith("error: "), err
    assert words in err
    return err


def test_generate_then_describe(tmp_path, capsys):
    out = tmp_path / "g.parquet"
    assert main(["generate", "--particle", "pions", "--events", "300", "--seed", "7", "--out", str(out)]) == 0
    summary = capsys.readouterr().out
    assert summary.startswith(f"wrote {out}: 300 pions showers") and summary.count("\n") == 1
    s = read_showers(out, "pions")
    assert len(s) == 300 and s.source == "synthetic seed=7"

    assert main(["describe", str(out)]) == 0
    table = capsys.readouterr().out
    assert "300 pions showers" in table and "Etot/Ekin" in table and "4194304" in table

    assert main(["describe", str(out), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["showers"] == 300 and len(info["momenta"]) == 15


def test_generate_custom_momenta(tmp_path, capsys):
    out = tmp_path / "m.parquet"
    assert main(["generate", "--particle", "photons", "--events", "20", "--momenta", "1024,2048",
                 "--out", str(out)]) == 0
    assert sorted(set(read_showers(out).momentum_mev.tolist())) == [1024.0, 2048.0]


def test_momentum_ranges_on_generate_and_convert(tmp_path, capsys):
    out = tmp_path / "low.parquet"
    assert main(["generate", "--particle", "photons", "--events", "50", "--momenta", "2^8..2^12",
                 "--out", str(out)]) == 0
    assert sorted(set(read_showers(out).momentum_mev.tolist())) == [256.0, 512.0, 1024.0, 2048.0, 4096.0]
    high = tmp_path / "high.parquet"
    assert main(["convert", "--from", "hdf5", "--particle", "photons", "--momenta", "1024..2^12", str(_h5(tmp_path)),
                 "--out", str(high)]) == 0
    assert read_showers(high).momentum_mev.tolist() == [2048.0]
    _fails(capsys, ["generate", "--particle", "photons", "--momenta", "2^12..2^8", "--out", str(tmp_path / "x")],
           "above the high end")
    _fails(capsys, ["convert", "--from", "hdf5", "--particle", "photons", "--momenta", "5..6", str(_h5(tmp_path)),
                    "--out", str(tmp_path / "x")], "no shower with a momentum in 5..6 MeV")
    assert not (tmp_path / "x").exists()


def _h5(tmp_path) -> Path:
    h5 = tmp_path / "in.hdf5"
    with h5py.File(h5, "w") as fh:
        fh["incident_energies"] = np.array([[512.0], [2048.0]])
        fh["showers"] = np.random.default_rng(0).exponential(2.0, (2, 368))
    return h5


def test_convert_hdf5_and_csv(tmp_path, capsys):
    rng = np.random.default_rng(0)
    h5 = tmp_path / "in.hdf5"
    with h5py.File(h5, "w") as fh:
        fh["incident_energies"] = np.array([[512.0], [2048.0]])
        fh["showers"] = rng.exponential(2.0, (2, 368))
    out = tmp_path / "h.parquet"
    assert main(["convert", "--from", "hdf5", "--particle", "photons", str(h5), "--out", str(out)]) == 0
    assert "2 photons showers" in capsys.readouterr().out
    assert read_showers(out).source == "imported from in.hdf5"

    csv_dir = tmp_path / "csv"
    csv_dir.mkdir()
    rows = rng.exponential(2.0, (3, 533))
    (csv_dir / "pid211_E8192_eta_20_25_voxalisation.csv").write_text(
        "\n".join(",".join(f"{x:.5f}" for x in r) for r in rows) + "\n")
    out2 = tmp_path / "c.parquet"
    assert main(["convert", "--from", "csv", "--particle", "pions", str(csv_dir), "--out", str(out2)]) == 0
    assert len(read_showers(out2, "pions")) == 3


def test_bad_input_exits_2_and_writes_nothing(tmp_path, capsys):
    out = tmp_path / "out.parquet"
    _fails(capsys, ["generate", "--particle", "photons", "--events", "0", "--out", str(out)], "positive integer")
    _fails(capsys, ["generate", "--particle", "muons", "--out", str(out)], "invalid choice")
    _fails(capsys, ["generate", "--particle", "photons", "--momenta", "1,x", "--out", str(out)], "--momenta")
    _fails(capsys, ["convert", "--from", "hdf5", "--particle", "pions", str(tmp_path / "none.h5"),
                    "--out", str(out)], "file not found")
    _fails(capsys, ["convert", "--from", "csv", "--particle", "pions", str(tmp_path), "--out", str(out)],
           "no files named")
    _fails(capsys, ["convert", "--from", "csv", "--particle", "pions", "--eta", "20-25", str(tmp_path),
                    "--out", str(out)], "A_B")
    _fails(capsys, ["describe", str(tmp_path / "none.parquet")], "file not found")
    _fails(capsys, ["generate", "--particle", "photons", "--out", str(tmp_path)], "is a directory")
    _fails(capsys, [], "required")
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_failed_convert_keeps_existing_output(tmp_path, capsys):
    out = tmp_path / "keep.parquet"
    assert main(["generate", "--particle", "photons", "--events", "50", "--out", str(out)]) == 0
    before = out.read_bytes()
    bad = tmp_path / "bad.hdf5"
    with h5py.File(bad, "w") as fh:
        fh["incident_energies"] = np.ones((2, 1))
        fh["showers"] = -np.ones((2, 368))
    capsys.readouterr()
    _fails(capsys, ["convert", "--from", "hdf5", "--particle", "photons", str(bad), "--out", str(out)],
           "negative voxel energies")
    assert out.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.hdf5", "keep.parquet"]


def test_help_shows_an_example(capsys):
    assert main(["--help"]) == 0
    text = capsys.readouterr().out
    assert "examples:" in text and "generate --particle photons" in text
    assert main(["convert", "--help"]) == 0
    assert "--from" in capsys.readouterr().out


def test_subprocess_entry_point(tmp_path):
    python = REPO / ".venv" / "bin" / "python"
    exe = str(python) if python.exists() else sys.executable
    env = dict(os.environ, PYTHONPATH=str(REPO))
    ok = subprocess.run([exe, "-m", "bologan.data", "generate", "--particle", "photons", "--events", "40",
                         "--out", "s.parquet"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert ok.returncode == 0, ok.stderr
    assert (tmp_path / "s.parquet").exists()
    bad = subprocess.run([exe, "-m", "bologan.data", "describe", "missing.parquet"], cwd=tmp_path, env=env,
                         capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2
    assert bad.stderr == "error: missing.parquet: file not found\n"
    assert bad.stdout == ""


@pytest.mark.parametrize("argv", [["describe"], ["convert", "--from", "xml"]])
def test_usage_errors_are_one_line(capsys, argv):
    _fails(capsys, argv, "see --help")
