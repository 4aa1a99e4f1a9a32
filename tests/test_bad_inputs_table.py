"""Every row of docs/bad_inputs.md, run: exit code 2, one error line holding the row's message,
no traceback, and nothing created or changed on disk.

Commands run in-process (the module's ``main``) from a folder holding the small example files
the rows name (made by ``example_files``); none of them trains or starts TensorFlow.
"""
from __future__ import annotations

import importlib
import re
import shlex
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parent))
from test_analysis_support import base_config, make_run  # noqa: E402
from test_reliability_inputs import saved_run, showers, snapshot, write_unchecked  # noqa: E402

from bologan.dataio import HDF5_SIGNATURE, Showers, write_showers  # noqa: E402
from bologan.geometry import particle  # noqa: E402

TABLE = Path(__file__).resolve().parents[1] / "docs" / "bad_inputs.md"
ROW = re.compile(r"^\| `(?P<command>[^`]+)` \| (?P<input>[^|]+?) \| `(?P<message>[^`]+)` \|$")


def table_rows() -> list[tuple[str, str, str]]:
    """(command, input, message) of every row of the table."""
    rows = [(m["command"], m["input"], m["message"])
            for m in map(ROW.match, TABLE.read_text().splitlines()) if m]
    assert rows, f"no rows found in {TABLE}"
    return rows


def example_files(root: Path) -> None:
    """The files and folders that the table's commands name, relative to ``root``."""
    good = root / "photons.parquet"
    write_showers(good, showers())
    data = good.read_bytes()
    (root / "truncated.parquet").write_bytes(data[: len(data) // 2])
    (root / "folder.parquet").mkdir()
    sh = showers()
    voxels = np.array(sh.voxels_mev)
    voxels[7, 11] = np.nan
    write_unchecked(root / "nan_voxels.parquet", Showers(sh.particle, sh.momentum_mev, voxels, "test"))
    photons = particle("photons")
    write_unchecked(root / "empty.parquet", Showers(photons, np.zeros(0), np.zeros((0, photons.n_voxels)), "test"))
    (root / "dataset_1_pions_1.hdf5").write_bytes(HDF5_SIGNATURE + bytes(range(256)) * 4)
    (root / "unknown_key.toml").write_text("[scaling]\nepochz = 3\n")
    (root / "ill_typed.toml").write_text('[train]\nn_disc = "five"\n')
    (root / "nan_rate.toml").write_text("[train]\nlearning_rate = nan\n")
    (root / "beta_one.toml").write_text("[train]\nbeta1 = 1.0\n")
    (root / "bad_variant.toml").write_text("[variants]\nx = { batchsize = 16 }\n")
    (root / "file.txt").write_text("a file, not a folder")
    (root / "empty_dir").mkdir()
    saved_run(root / "saved")
    saved_run(root / "damaged")
    (root / "damaged" / "epochs.parquet").write_bytes(b"PAR1 not really")
    (root / "notes").mkdir()
    (root / "notes" / "todo.txt").write_text("nothing here")
    make_run(root / "mixed", "n1", n=1)
    make_run(root / "mixed", "n2", n=2, config=base_config(learning_rate=3e-4))


def run_command(command: str) -> int:
    """``python -m MODULE ARGS`` through the module's ``main(ARGS)``; its exit code."""
    argv = shlex.split(command)
    assert argv[:2] == ["python", "-m"], command
    module = importlib.import_module(f"{argv[2]}.__main__" if argv[2] == "analysis" else argv[2])
    try:
        return module.main(argv[3:])
    except SystemExit as exc:    # an entry point that exits instead of returning
        return exc.code if isinstance(exc.code, int) else 1


@pytest.fixture(scope="module")
def examples(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("bad-inputs")
    example_files(root)
    return root


@pytest.mark.parametrize("command, what, message", table_rows(), ids=[r[0][len("python -m "):] for r in table_rows()])
def test_row(examples, monkeypatch, capsys, command, what, message):
    monkeypatch.chdir(examples)
    before = snapshot(examples)
    rc = run_command(command)
    captured = capsys.readouterr()
    lines = [line for line in captured.err.splitlines() if line.strip()]
    assert rc == 2, captured.err
    assert len(lines) == 1 and lines[0].startswith("error: "), captured.err
    assert "Traceback" not in captured.err + captured.out
    assert message in lines[0], f"{what}: {lines[0]}"
    assert snapshot(examples) == before, "the refused command changed files on disk"


def test_the_table_has_the_reviewed_cases():
    commands = " ".join(r[0] for r in table_rows())
    for words in ("--learning-rate nan", "--gp-lambda nan", "--latent-std nan", "--beta1 2.0", "--beta2 nan",
                  "--sizes 0..1KiB", "--data dataset_1_pions_1.hdf5"):
        assert words in commands, words
