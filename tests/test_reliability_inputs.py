"""Bad input: one line naming the file or key, exit code 2, and nothing created or changed.

Each test snapshots the whole temporary tree (names, sizes, contents, mtimes) before the
command and compares after it. ``scaling.run`` is called in-process: its checks run before
TensorFlow is imported, so each costs well under a second (one subprocess test proves that).
The strong-mode batch split needs two ranks and is tested under mpirun in
test_reliability_mpi.py.
"""
from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

sys.path.insert(0, str(Path(__file__).parent))
from test_analysis_support import base_config, make_run  # noqa: E402

from analysis.__main__ import main as analysis_main  # noqa: E402
from bologan.data import main as data_main  # noqa: E402
from bologan.dataio import Showers, showers_to_table, write_showers  # noqa: E402
from bologan.geometry import particle  # noqa: E402
from scaling import run as scaling_run  # noqa: E402
from common.rundir import RUN_REQUIRED_KEYS, SCHEMA_VERSION, RunWriter  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
TINY = ["--synthetic-events", "3000", "--threads", "1", "--batch-per-rank", "32", "--epochs", "2",
        "--iterations-per-epoch", "2"]
PHOTONS = particle("photons")


# ------------------------------------------------------------------------------------ helpers
def snapshot(root: Path) -> dict[str, tuple]:
    """Everything under ``root``: kind, size, content hash and mtime of each entry."""
    out: dict[str, tuple] = {}
    for p in sorted(root.rglob("*")):
        st = p.lstat()
        if p.is_dir():
            out[str(p.relative_to(root))] = ("dir", st.st_mtime_ns)
        else:
            out[str(p.relative_to(root))] = ("file", st.st_size, st.st_mtime_ns,
                                             hashlib.sha256(p.read_bytes()).hexdigest())
    return out


def one_error_line(capsys) -> str:
    captured = capsys.readouterr()
    lines = [line for line in captured.err.splitlines() if line.strip()]
    assert len(lines) == 1, captured.err
    assert lines[0].startswith("error: "), lines[0]
    assert "Traceback" not in captured.err + captured.out
    return lines[0]


def refused(capsys, root: Path, main, argv: list[str]) -> str:
    """Run ``main(argv)``; assert exit 2, one error line, and no change under ``root``."""
    before = snapshot(root)
    rc = main(argv)
    message = one_error_line(capsys)
    assert rc == 2, message
    assert snapshot(root) == before, "the failed command changed files on disk"
    return message


def train(capsys, root: Path, *argv: str) -> str:
    return refused(capsys, root, scaling_run.main, [*TINY, *argv])


def showers(n: int = 400) -> Showers:
    rng = np.random.default_rng(3)
    momentum = np.full(n, 65536.0)
    voxels = rng.exponential(5.0, size=(n, PHOTONS.n_voxels)).astype(np.float32)
    return Showers(particle=PHOTONS, momentum_mev=momentum, voxels_mev=voxels, source="test")


def write_unchecked(path: Path, sh: Showers) -> Path:
    """Write showers without write_showers' validation (to make deliberately bad files)."""
    pq.write_table(showers_to_table(sh), path)
    return path


@pytest.fixture
def good_file(tmp_path) -> Path:
    path = tmp_path / "photons.parquet"
    write_showers(path, showers())
    return path


def saved_run(out: Path, *argv: str) -> None:
    """A run directory as scaling.run leaves it after an interruption (no TensorFlow needed)."""
    cfg = scaling_run._resolve_config(scaling_run.parse_args([*TINY, *argv, "--out", str(out)]))
    sc = cfg["scaling"]
    meta = {key: None for key in RUN_REQUIRED_KEYS} | {
        "schema_version": SCHEMA_VERSION, "run_id": out.name, "status": "interrupted",
        "config": scaling_run.sections_to_dict(cfg), "config_hash": scaling_run.workload_hash(cfg),
        "engine": sc.engine, "mode": sc.mode, "particle": "photons", "world_size": 1, "nodes": 1,
        "ranks_per_node": 1, "per_rank_batch": sc.batch_per_rank, "global_batch": sc.batch_per_rank,
        "iterations_per_epoch": sc.iterations_per_epoch, "restarts": []}
    writer = RunWriter(out, meta)
    writer.write_meta()
    writer.add_epochs([])


# ----------------------------------------------------------------------------- data files
def test_missing_data_path(tmp_path, capsys):
    msg = train(capsys, tmp_path, "--data", str(tmp_path / "nope.parquet"), "--out", str(tmp_path / "run"))
    assert f"{tmp_path / 'nope.parquet'}: file not found" in msg


def test_unreadable_data_path_directory(tmp_path, capsys):
    (tmp_path / "data.parquet").mkdir()
    msg = train(capsys, tmp_path, "--data", str(tmp_path / "data.parquet"), "--out", str(tmp_path / "run"))
    assert str(tmp_path / "data.parquet") in msg and "is a directory" in msg


def test_truncated_parquet(tmp_path, capsys, good_file):
    data = good_file.read_bytes()
    good_file.write_bytes(data[: len(data) // 2])
    msg = train(capsys, tmp_path, "--data", str(good_file), "--out", str(tmp_path / "run"))
    assert str(good_file) in msg and "truncated" in msg


def test_corrupt_hdf5_convert_keeps_existing_output(tmp_path, capsys, good_file):
    bad = tmp_path / "dataset_1_photons_1.hdf5"
    bad.write_bytes(b"\x89HDF\r\n\x1a\n" + bytes(range(256)) * 4)   # HDF5 signature, then garbage
    msg = refused(capsys, tmp_path, data_main,
                  ["convert", "--from", "hdf5", "--particle", "photons", str(bad), "--out", str(good_file)])
    assert str(bad) in msg and "not an HDF5 file or truncated" in msg


def test_wrong_voxel_count_for_the_particle(tmp_path, capsys):
    # A foreign file (no bologan metadata) with 100 voxels per shower, trained as photons (368).
    path = tmp_path / "foreign.parquet"
    flat = pa.array(np.ones(50 * 100, dtype=np.float32))
    pq.write_table(pa.table({"momentum_mev": pa.array(np.full(50, 65536.0)),
                             "voxels_mev": pa.FixedSizeListArray.from_arrays(flat, 100)}), path)
    msg = train(capsys, tmp_path, "--data", str(path), "--particle", "photons", "--out", str(tmp_path / "run"))
    assert str(path) in msg and "wrong voxel count" in msg and "368" in msg


@pytest.mark.parametrize("bad_value, words", [(np.nan, "NaN or infinite"), (np.inf, "NaN or infinite"),
                                              (-1.0, "negative voxel energies")], ids=["nan", "inf", "negative"])
def test_non_finite_or_negative_voxels(tmp_path, capsys, bad_value, words):
    sh = showers()
    voxels = np.array(sh.voxels_mev)
    voxels[7, 11] = bad_value
    path = write_unchecked(tmp_path / "bad.parquet", Showers(PHOTONS, sh.momentum_mev, voxels, "test"))
    msg = train(capsys, tmp_path, "--data", str(path), "--out", str(tmp_path / "run"))
    assert str(path) in msg and words in msg


def test_empty_dataset(tmp_path, capsys):
    path = write_unchecked(tmp_path / "empty.parquet", Showers(PHOTONS, np.zeros(0),
                                                               np.zeros((0, PHOTONS.n_voxels)), "test"))
    msg = train(capsys, tmp_path, "--data", str(path), "--out", str(tmp_path / "run"))
    assert str(path) in msg and "empty dataset" in msg


def test_dataset_too_small_for_one_iteration(tmp_path, capsys):
    path = tmp_path / "small.parquet"
    write_showers(path, showers(n=100))          # n_disc 5 x batch 32 = 160 needed
    msg = train(capsys, tmp_path, "--data", str(path), "--out", str(tmp_path / "run"))
    assert str(path) in msg and "one iteration needs 160" in msg


# ---------------------------------------------------------------------------------- config
def test_unknown_config_key(tmp_path, capsys):
    cfg = tmp_path / "study.toml"
    cfg.write_text("[scaling]\nepochz = 3\n")
    msg = train(capsys, tmp_path, "--config", str(cfg), "--out", str(tmp_path / "run"))
    assert str(cfg) in msg and "unknown key 'epochz'" in msg


def test_ill_typed_config_key(tmp_path, capsys):
    cfg = tmp_path / "study.toml"
    cfg.write_text('[train]\nn_disc = "five"\n')
    msg = train(capsys, tmp_path, "--config", str(cfg), "--out", str(tmp_path / "run"))
    assert str(cfg) in msg and "n_disc" in msg and "expected an integer" in msg


def test_ill_typed_flag(tmp_path, capsys):
    msg = train(capsys, tmp_path, "--epochs", "four", "--out", str(tmp_path / "run"))
    assert "--epochs" in msg and "'four'" in msg


def test_unknown_engine(tmp_path, capsys):
    msg = train(capsys, tmp_path, "--engine", "mxnet", "--out", str(tmp_path / "run"))
    assert "--engine" in msg and "'mxnet'" in msg


def test_unknown_engine_in_config_file(tmp_path, capsys):
    cfg = tmp_path / "study.toml"
    cfg.write_text('[scaling]\nengine = "mxnet"\n')
    msg = train(capsys, tmp_path, "--config", str(cfg), "--out", str(tmp_path / "run"))
    assert str(cfg) in msg and "engine" in msg and "'mxnet'" in msg


def test_unknown_mode(tmp_path, capsys):
    msg = train(capsys, tmp_path, "--mode", "diagonal", "--out", str(tmp_path / "run"))
    assert "--mode" in msg and "'diagonal'" in msg


# ------------------------------------------------------------------------- output directory
def test_output_directory_not_writable(tmp_path, capsys):
    # Root may write anywhere, so "not writable" is a path below a regular file.
    (tmp_path / "file.txt").write_text("a file, not a folder")
    msg = train(capsys, tmp_path, "--out", str(tmp_path / "file.txt" / "run"))
    assert str(tmp_path / "file.txt" / "run") in msg and "not writable" in msg


def test_output_directory_holding_a_run_without_resume(tmp_path, capsys):
    saved_run(tmp_path / "run")
    msg = train(capsys, tmp_path, "--out", str(tmp_path / "run"))
    assert str(tmp_path / "run") in msg and "already holds a run" in msg and "--resume" in msg


def test_resume_without_a_run(tmp_path, capsys):
    (tmp_path / "run").mkdir()
    msg = train(capsys, tmp_path, "--out", str(tmp_path / "run"), "--resume")
    assert str(tmp_path / "run") in msg and "nothing to resume" in msg


def test_resume_with_a_different_epoch_length(tmp_path, capsys):
    saved_run(tmp_path / "run")
    msg = refused(capsys, tmp_path, scaling_run.main,
                  ["--out", str(tmp_path / "run"), "--resume", "--iterations-per-epoch", "3"])
    assert "iterations_per_epoch 3" in msg and "started with 2" in msg


def test_resume_with_a_different_workload(tmp_path, capsys):
    saved_run(tmp_path / "run")
    msg = refused(capsys, tmp_path, scaling_run.main, ["--out", str(tmp_path / "run"), "--resume", "--n-disc", "3"])
    assert str(tmp_path / "run") in msg and "change the workload" in msg


def test_resume_of_a_damaged_run(tmp_path, capsys):
    saved_run(tmp_path / "run")
    (tmp_path / "run" / "epochs.parquet").write_bytes(b"PAR1 not really")
    msg = refused(capsys, tmp_path, scaling_run.main, ["--out", str(tmp_path / "run"), "--resume"])
    assert str(tmp_path / "run" / "epochs.parquet") in msg


# --------------------------------------------------------------------------------- analysis
def test_analysis_of_a_non_run_directory(tmp_path, capsys):
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "todo.txt").write_text("nothing here")
    msg = refused(capsys, tmp_path, analysis_main, [str(tmp_path / "notes"), "--out", str(tmp_path / "report")])
    assert str(tmp_path / "notes") in msg and "no run directory" in msg


def test_analysis_of_runs_with_mixed_configurations(tmp_path, capsys):
    make_run(tmp_path / "study", "n1", n=1)
    make_run(tmp_path / "study", "n2", n=2, config=base_config(learning_rate=3e-4))
    msg = refused(capsys, tmp_path, analysis_main,
                  [str(tmp_path / "study"), "--out", str(tmp_path / "report"), "--quiet"])
    assert "train.learning_rate" in msg and "different configurations" in msg


# ---------------------------------------------------------------------------- fast failures
def test_bad_input_fails_before_tensorflow_is_imported(tmp_path, good_file):
    """The checks come first: seconds, not the minute a TensorFlow start costs on a busy node."""
    (tmp_path / "file.txt").write_text("x")
    cases = [["--data", str(tmp_path / "nope.parquet")], ["--engine", "mxnet"], ["--epochs", "0"],
             ["--out", str(tmp_path / "file.txt" / "run")]]
    script = (
        "import json, sys\n"
        "from scaling.run import main\n"
        "codes = [main(json.loads(a) + ['--out', sys.argv[1]] if '--out' not in a else json.loads(a))"
        " for a in sys.argv[2:]]\n"
        "print(json.dumps({'codes': codes, 'tf': 'tensorflow' in sys.modules}))\n")
    env = dict(os.environ, PYTHONPATH=str(REPO))
    t0 = time.monotonic()
    proc = subprocess.run([sys.executable, "-c", script, str(tmp_path / "run"), *map(json.dumps, cases)],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    elapsed = time.monotonic() - t0
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout.splitlines()[-1])
    assert result == {"codes": [2, 2, 2, 2], "tf": False}, proc.stderr
    assert len(proc.stderr.strip().splitlines()) == len(cases)
    assert not (tmp_path / "run").exists()
    assert elapsed < 30, f"bad input took {elapsed:.1f} s to report"
