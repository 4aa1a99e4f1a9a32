"""bologan.generate: checkpoint lookup, energies, generated files that validate, and bad input."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from bologan import generate
from bologan.dataio import read_showers
from common.errors import UserError
from bologan.geometry import MOMENTA_MEV, PIONS

REPO = Path(__file__).resolve().parents[1]
ITERATIONS = (5, 10)


def make_train_dir(root: Path, particle: str = "pions", generator: str = "relu",
                   iterations: tuple[int, ...] = ITERATIONS) -> Path:
    """A real (tiny) training directory: config.json and ckpt-<it> of a randomly initialised GAN."""
    from bologan.config import DataConfig, ModelConfig, TrainConfig
    from bologan.model import Gan, checkpoint_manager, save_train_config
    from common.settings import sections_to_dict

    out = root / "train"
    cfg = {"model": ModelConfig(particle=particle, generator=generator, generator_widths=[8, 16],
                                critic_widths=[16]),
           "train": TrainConfig(), "data": DataConfig()}
    gan = Gan(cfg["model"], cfg["train"])
    save_train_config(out, sections_to_dict(cfg))
    manager = checkpoint_manager(gan, out, 0)
    for it in iterations:
        gan.generator.get_layer("g_out").bias.assign_add(np.full(PIONS.n_voxels if particle == "pions" else 368,
                                                                 0.01 * it, np.float32))
        manager.save(checkpoint_number=it)
    return out


@pytest.fixture(scope="module")
def train_dir(tmp_path_factory) -> Path:
    return make_train_dir(tmp_path_factory.mktemp("gen"))


def run(argv: list[str], capsys) -> tuple[int, str, str]:
    rc = generate.main(argv)
    captured = capsys.readouterr()
    return rc, captured.out, captured.err


def test_generated_file_validates_against_the_geometry(train_dir, tmp_path, capsys):
    out = tmp_path / "gan.parquet"
    rc, stdout, err = run(["--checkpoint", str(train_dir), "--energies", "1024,65536",
                           "--events-per-energy", "30", "--seed", "3", "--out", str(out)], capsys)
    assert rc == 0, err
    showers = read_showers(out, particle="pions")      # validates layout, voxel count, values
    assert showers.particle is PIONS
    assert showers.voxels_mev.shape == (60, PIONS.n_voxels)
    assert np.array_equal(showers.momentum_mev, np.repeat([1024.0, 65536.0], 30))
    assert (showers.voxels_mev >= 0).all() and showers.voxels_mev.sum() > 0
    assert "ckpt-10" in showers.source and "seed 3" in showers.source    # newest checkpoint by default
    assert "wrote 60 pions showers" in stdout and err == ""


def test_same_seed_same_showers_other_seed_differs(train_dir, tmp_path, capsys):
    paths = []
    for name, seed in (("a", 1), ("b", 1), ("c", 2)):
        paths.append(tmp_path / f"{name}.parquet")
        assert run(["--checkpoint", str(train_dir), "--iteration", "5", "--energies", "4096",
                    "--events-per-energy", "8", "--seed", str(seed), "--out", str(paths[-1])], capsys)[0] == 0
    a, b, c = (read_showers(p).voxels_mev for p in paths)
    assert np.array_equal(a, b)
    assert not np.array_equal(a, c)


def test_iterations_give_different_generators(train_dir, tmp_path, capsys):
    means = []
    for it in ITERATIONS:
        out = tmp_path / f"it{it}.parquet"
        assert run(["--checkpoint", str(train_dir), "--iteration", str(it), "--energies", "65536",
                    "--events-per-energy", "4", "--out", str(out)], capsys)[0] == 0
        means.append(read_showers(out).voxels_mev.mean())
    assert means[1] > means[0]      # the output bias grew between the two checkpoints


def test_all_energies_and_warnings(train_dir, tmp_path, capsys):
    out = tmp_path / "all.parquet"
    rc, _, err = run(["--checkpoint", str(train_dir), "--energies", "all", "--events-per-energy", "2",
                      "--out", str(out)], capsys)
    assert rc == 0 and err == ""
    assert sorted(set(read_showers(out).momentum_mev)) == list(MOMENTA_MEV)
    rc, _, err = run(["--checkpoint", str(train_dir), "--energies", "3000,100", "--events-per-energy", "2",
                      "--out", str(tmp_path / "off.parquet")], capsys)
    assert rc == 0
    assert "3000 MeV is not one of the 15 dataset-1 momenta" in err
    assert "100 MeV is outside the trained range" in err


def test_parse_energies():
    assert generate.parse_energies("all") == list(MOMENTA_MEV)
    assert generate.parse_energies(" 256, 1e3 ,") == [256.0, 1000.0]
    for bad, match in (("abc", "not a number"), ("-5", "positive"), ("nan", "positive"), ("", "empty"),
                       ("256,256", "twice")):
        with pytest.raises(UserError, match=match):
            generate.parse_energies(bad)


def test_best_checkpoint_dir_finds_its_training_config(train_dir, tmp_path):
    from bologan.evaluate import copy_checkpoint

    # Default evaluate layout: TRAIN_DIR/eval/best_checkpoint -> the grandparent holds config.json.
    work = tmp_path / "run"
    shutil.copytree(train_dir, work)
    best = work / "eval" / "best_checkpoint"
    copy_checkpoint(work / "checkpoints", 5, best)
    ref = generate.resolve_checkpoint(best)
    assert ref.iteration == 5 and ref.config_dir == work and ref.prefix == best / "ckpt-5"

    # Evaluation written elsewhere: best.json beside best_checkpoint names the training directory.
    elsewhere = tmp_path / "evals" / "pions"
    copy_checkpoint(work / "checkpoints", 10, elsewhere / "best_checkpoint")
    (elsewhere / "best.json").write_text(json.dumps({"train_dir": str(work), "iteration": 10}))
    ref = generate.resolve_checkpoint(elsewhere / "best_checkpoint")
    assert ref.iteration == 10 and ref.config_dir == work and "best.json" in ref.config_found_by

    # Nothing to find: the message says how to fix it; --config-from fixes it.
    lone = tmp_path / "lone" / "a" / "best_checkpoint"
    copy_checkpoint(work / "checkpoints", 10, lone)
    with pytest.raises(UserError, match="--config-from TRAIN_DIR"):
        generate.resolve_checkpoint(lone)
    assert generate.resolve_checkpoint(lone, config_from=work).config_dir == work


def test_checkpoint_forms_and_iteration_choice(train_dir):
    ckpts = train_dir / "checkpoints"
    assert generate.resolve_checkpoint(train_dir).iteration == 10
    assert generate.resolve_checkpoint(train_dir, iteration=5).iteration == 5
    assert generate.resolve_checkpoint(ckpts).config_dir == train_dir
    assert generate.resolve_checkpoint(ckpts / "ckpt-5").iteration == 5
    assert generate.resolve_checkpoint(ckpts / "ckpt-5.index").iteration == 5
    with pytest.raises(UserError, match=r"no checkpoint for iteration 7 \(available: 5, 10\)"):
        generate.resolve_checkpoint(train_dir, iteration=7)
    with pytest.raises(UserError, match="names iteration 5 but --iteration says 10"):
        generate.resolve_checkpoint(ckpts / "ckpt-5", iteration=10)


def test_state_file_names_the_default_checkpoint(train_dir, tmp_path):
    d = tmp_path / "ck"
    d.mkdir()
    for f in (train_dir / "checkpoints").glob("ckpt-*"):
        shutil.copy2(f, d / f.name)
    (d / "checkpoint").write_text('model_checkpoint_path: "ckpt-5"\n')
    assert generate.resolve_checkpoint(d, config_from=train_dir).iteration == 5
    (d / "checkpoint").unlink()
    assert generate.resolve_checkpoint(d, config_from=train_dir).iteration == 10


def test_negative_voxels_are_clipped_and_counted(tmp_path):
    from bologan.model import load_train_config

    train = make_train_dir(tmp_path, particle="photons", generator="bn_swish", iterations=(1,))
    ref = generate.resolve_checkpoint(train)
    gen, sections = generate.load_generator(ref)
    assert load_train_config(train)["model"].generator == "bn_swish"
    showers, clipped = generate.generate_showers(gen, sections, [1024.0], 50, seed=0)
    assert clipped > 0       # swish reaches about -0.28: a random generator goes negative
    assert (showers.voxels_mev >= 0).all()
    assert f"{clipped} negative voxel values set to 0" in showers.source


@pytest.mark.parametrize("args, match", [
    (["--events-per-energy", "0"], "--events-per-energy must be >= 1"),
    (["--energies", "x"], "not a number"),
    (["--checkpoint", "/nonexistent/run"], "not found"),
    (["--iteration", "99"], "no checkpoint for iteration 99"),
    (["--batch-size", "0"], "--batch-size must be >= 1"),
])
def test_bad_input_is_one_line_exit_2_nothing_written(train_dir, tmp_path, capsys, args, match):
    out = tmp_path / "never.parquet"
    base = {"--checkpoint": str(train_dir), "--energies": "1024", "--events-per-energy": "3",
            "--out": str(out)}
    for i in range(0, len(args), 2):
        base[args[i]] = args[i + 1]
    argv = [x for kv in base.items() for x in kv]
    rc, _, err = run(argv, capsys)
    assert rc == 2
    assert err.count("\n") == 1 and err.startswith("error: ") and match in err
    assert not out.exists() and not list(tmp_path.iterdir())


def test_existing_output_needs_force(train_dir, tmp_path, capsys):
    out = tmp_path / "x.parquet"
    out.write_bytes(b"keep me")
    argv = ["--checkpoint", str(train_dir), "--energies", "1024", "--events-per-energy", "2",
            "--out", str(out)]
    rc, _, err = run(argv, capsys)
    assert rc == 2 and "already exists" in err and out.read_bytes() == b"keep me"
    assert run(argv + ["--force"], capsys)[0] == 0
    assert len(read_showers(out)) == 2


def test_checkpoint_that_does_not_match_the_config(train_dir, tmp_path, capsys):
    bad = tmp_path / "bad"
    shutil.copytree(train_dir, bad)
    cfg = json.loads((bad / "config.json").read_text())
    cfg["model"]["generator_widths"] = [8, 32]
    (bad / "config.json").write_text(json.dumps(cfg))
    out = tmp_path / "o.parquet"
    rc, _, err = run(["--checkpoint", str(bad), "--energies", "1024", "--events-per-energy", "2",
                      "--out", str(out)], capsys)
    assert rc == 2 and "does not hold a generator matching" in err and err.count("\n") == 1
    assert not out.exists()


def test_earlier_flag_spelling_n_still_works():
    # --events-per-energy is bologan.evaluate's name for the same count; scripts may still say --n.
    base = ["--checkpoint", "run", "--energies", "1024", "--out", "o.parquet"]
    parser = generate.build_parser()
    assert parser.parse_args([*base, "--n", "7"]).events_per_energy == 7
    assert parser.parse_args([*base, "--events-per-energy", "9"]).events_per_energy == 9


def test_help_runs_without_tensorflow():
    res = subprocess.run([sys.executable, "-c",
                          "import sys, bologan.generate as g\n"
                          "try:\n    g.main(['--help'])\nexcept SystemExit:\n    pass\n"
                          "print('tensorflow' in sys.modules)"],
                         cwd=REPO, capture_output=True, text=True, timeout=60)
    assert res.returncode == 0
    assert "--energies" in res.stdout and res.stdout.strip().endswith("False")


def test_hdf5_out_is_calochallenge_format_and_round_trips(train_dir, tmp_path, capsys):
    import h5py

    from bologan.importers import import_calochallenge_hdf5

    args = ["--checkpoint", str(train_dir), "--energies", "1024,65536", "--events-per-energy", "12",
            "--seed", "4"]
    h5, pq_out = tmp_path / "gan.hdf5", tmp_path / "gan.parquet"
    assert run(args + ["--out", str(h5)], capsys)[0] == 0
    assert run(args + ["--out", str(pq_out)], capsys)[0] == 0
    with h5py.File(h5, "r") as fh:
        assert fh["incident_energies"].shape == (24, 1)
        assert fh["showers"].shape == (24, PIONS.n_voxels)
        assert fh.attrs["units"] == "MeV" and fh.attrs["particle"] == "pions"
    back = import_calochallenge_hdf5(h5, "pions")
    same = read_showers(pq_out)
    assert np.array_equal(back.momentum_mev, np.repeat([1024.0, 65536.0], 12))
    assert np.array_equal(back.voxels_mev, same.voxels_mev)     # the same showers as the Parquet file


def test_hdf5_writer_refuses_bad_showers_and_missing_h5py(train_dir, tmp_path, capsys, monkeypatch):
    from bologan.dataio import Showers
    from bologan.importers import write_calochallenge_hdf5

    bad = Showers(PIONS, np.array([1024.0]), -np.ones((1, PIONS.n_voxels), np.float32), "test")
    with pytest.raises(UserError, match="negative voxel energies"):
        write_calochallenge_hdf5(tmp_path / "bad.hdf5", bad)
    assert list(tmp_path.iterdir()) == []                      # nothing half-written
    monkeypatch.setitem(sys.modules, "h5py", None)             # import h5py -> ImportError
    rc, _, err = run(["--checkpoint", str(train_dir), "--energies", "1024", "--events-per-energy", "2",
                      "--out", str(tmp_path / "x.h5")], capsys)
    assert rc == 2 and "writing HDF5 needs h5py" in err and err.count("\n") == 1
    assert not (tmp_path / "x.h5").exists()


def _as_scaling_run(train: Path, run: Path, member: int | None = None) -> Path:
    """``train``'s checkpoints laid out as scaling.run leaves them: run.json with the resolved
    config (no config.json); with ``member``, as ensemble member ``member`` (its own seed)."""
    tables = json.loads((train / "config.json").read_text())
    meta = {"config": {**tables, "scaling": {"mode": "ensemble" if member is not None else "weak"}}}
    where = run
    if member is not None:
        meta |= {"member_seeds": [10 + k for k in range(member + 1)], "member_data": ["synthetic"] * (member + 1)}
        where = run / "members" / str(member)
    shutil.copytree(train / "checkpoints", where / "checkpoints")
    run.mkdir(parents=True, exist_ok=True)
    (run / "run.json").write_text(json.dumps(meta))
    return where


def test_a_scaling_run_directory_and_an_ensemble_member_generate(train_dir, tmp_path, capsys):
    from bologan.model import load_train_config

    run = tmp_path / "run"
    _as_scaling_run(train_dir, run)
    rc, out, err = run_(["--checkpoint", str(run), "--energies", "1024,65536", "--n", "5",
                         "--out", str(tmp_path / "a.parquet")], capsys)
    assert rc == 0, err
    ens = tmp_path / "ens"
    member = _as_scaling_run(train_dir, ens, member=1)
    assert load_train_config(member)["train"].seed == 11
    rc, out, err = run_(["--checkpoint", str(member), "--energies", "1024", "--n", "5",
                         "--out", str(tmp_path / "b.parquet")], capsys)
    assert rc == 0, err
    same = read_showers(tmp_path / "a.parquet").voxels_mev[:5]
    assert np.array_equal(read_showers(tmp_path / "b.parquet").voxels_mev, same)   # the same weights
    rc, out, err = run_(["--checkpoint", str(ens), "--energies", "1024", "--n", "5",
                         "--out", str(tmp_path / "c.parquet")], capsys)
    assert rc == 2 and "give one member's folder" in err and len(err.strip().splitlines()) == 1


def test_an_older_run_is_read_as_it_trained_and_said_in_one_line(train_dir, tmp_path, capsys):
    from bologan.model import load_train_config

    run = tmp_path / "old"
    _as_scaling_run(train_dir, run)
    meta = json.loads((run / "run.json").read_text())
    del meta["config"]["model"]["generator_norm"]
    (run / "run.json").write_text(json.dumps(meta))
    assert load_train_config(run)["model"].generator_norm == "batch_statistics"
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "generator_norm" in err and "batch_statistics" in err


def test_momenta_range_and_the_trained_range_warning(tmp_path, capsys):
    train = make_train_dir(tmp_path, particle="pions", iterations=(1,))
    tables = json.loads((train / "config.json").read_text())
    tables["data"]["momenta"] = "256..4096"
    (train / "config.json").write_text(json.dumps(tables))
    rc, out, err = run_(["--checkpoint", str(train), "--momenta", "2^10..2^13", "--n", "2",
                         "--out", str(tmp_path / "a.parquet")], capsys)
    assert rc == 0, err
    assert set(read_showers(tmp_path / "a.parquet").momentum_mev) == {1024.0, 2048.0, 4096.0, 8192.0}
    assert "8192 MeV is outside the momenta this GAN was trained on (256..4096 MeV)" in err
    rc, out, err = run_(["--checkpoint", str(train), "--momenta", "5..6", "--n", "2",
                         "--out", str(tmp_path / "b.parquet")], capsys)
    assert rc == 2 and "holds none of the dataset-1 momenta" in err


def test_the_clipped_fraction_is_in_the_files_metadata(tmp_path, capsys):
    import h5py

    train = make_train_dir(tmp_path, particle="photons", generator="bn_swish", iterations=(1,))
    rc, out, err = run_(["--checkpoint", str(train), "--energies", "1024", "--n", "20",
                         "--out", str(tmp_path / "g.hdf5")], capsys)
    assert rc == 0, err
    with h5py.File(tmp_path / "g.hdf5", "r") as fh:
        clipped, fraction = int(fh.attrs["clipped_negative_voxels"]), float(fh.attrs["clipped_negative_fraction"])
        zeros = int((fh["showers"][()] == 0).sum())
    assert 0 < clipped <= zeros and fraction == pytest.approx(clipped / (20 * 368))
    assert f"{clipped} negative voxel values" in out


def run_(argv: list[str], capsys) -> tuple[int, str, str]:
    """``run`` that also catches argparse's exit (mutually exclusive or bad flags)."""
    try:
        return run(argv, capsys)
    except SystemExit as exc:
        captured = capsys.readouterr()
        return int(exc.code), captured.out, captured.err
