"""scaling.run --mode ensemble: every rank trains its own GAN, one run directory for all."""
from __future__ import annotations

import json

import numpy as np
import pytest

from conftest import run_module
from common.rundir import load_run

TINY = ["--threads", "1", "--critic-widths", "64,64,64", "--generator", "relu", "--n-disc", "2",
        "--epochs", "2", "--iterations-per-epoch", "3", "--warmup-epochs", "0", "--batch-per-rank", "32"]
SEED = 21


def _weights(checkpoint_dir):
    """Float variables of the newest checkpoint in ``checkpoint_dir``, by name."""
    import tensorflow as tf

    reader = tf.train.load_checkpoint(str(checkpoint_dir))
    values = {k: reader.get_tensor(k) for k in reader.get_variable_to_shape_map()
              if "OPTIMIZER" not in k and "save_counter" not in k}
    return {k: v for k, v in values.items() if isinstance(v, np.ndarray) and v.dtype.kind == "f"}


@pytest.fixture(scope="module")
def data_files(tmp_path_factory):
    """Two different shower files, one per member."""
    from bologan.dataio import write_showers
    from bologan.synthetic import generate_showers

    folder = tmp_path_factory.mktemp("data")
    files = []
    for k in range(2):
        path = folder / f"eta_{k}.parquet"
        write_showers(path, generate_showers("photons", 800, seed=100 + k))
        files.append(path)
    return files


def _refused(args, tmp_path, ranks=1):
    out = tmp_path / "run"
    res = run_module("scaling.run", [*TINY, "--mode", "ensemble", "--out", str(out), *args], ranks=ranks,
                     timeout=300)
    lines = [line for line in res.stderr.splitlines() if line.startswith("error:")]
    assert res.returncode == 2, res.stderr[-2000:]
    assert len(lines) == 1 and "Traceback" not in res.stderr, res.stderr[-2000:]
    assert not out.exists(), "a refused run must write nothing"
    return lines[0]


@pytest.mark.parametrize("args, says", [
    (["--group-size", "2"], "1 rank(s) do not split into groups of 2"),
    (["--member-names", "a,b"], "more than the 1 rank(s) allow"),
    (["--member-names", "a,a"], "'a' is listed twice"),
    (["--data", ","], "empty"),
    (["--data", "DATA0,DATA1"], "lists 2 files for 1 member(s)"),
    (["--data", "NOPE"], "member 0 (m0): data file"),
])
def test_bad_member_lists_are_one_line_exit_2(tmp_path, data_files, args, says):
    args = [a.replace("DATA0", str(data_files[0])).replace("DATA1", str(data_files[1]))
            .replace("NOPE", str(tmp_path / "missing.parquet")) for a in args]
    assert says in _refused(args, tmp_path)


def test_ensemble_flags_outside_ensemble_mode_are_refused(tmp_path):
    res = run_module("scaling.run", [*TINY, "--mode", "weak", "--group-size", "2", "--out", str(tmp_path / "r")])
    assert res.returncode == 2 and "--group-size: only for --mode ensemble" in res.stderr


def test_data_pattern_fills_member_names(tmp_path, data_files):
    """A pattern names each member's file; two members may not share one."""
    from common.settings import resolve_sections
    from scaling.ensemble import ensemble_layout
    from scaling.run import SECTIONS, parse_args
    from scaling.world import World

    pattern = str(data_files[0]).replace("eta_0", "eta_{member}")
    world = World(rank=1, size=2, local_rank=1, local_size=2, node="n", hostname="n", launcher="mpirun", cores=1)

    def layout(*flags):
        return ensemble_layout(resolve_sections(SECTIONS, None, parse_args(["--mode", "ensemble", *flags])), world)

    by_index = layout("--data", pattern, "--seed", "5")
    assert by_index.data == tuple(str(f) for f in data_files) and by_index.seeds == (5, 6)
    assert by_index.member == 1 and by_index.member_dir(tmp_path).parts[-2:] == ("members", "1")
    cfg = by_index.member_config(resolve_sections(SECTIONS, None, parse_args(["--mode", "ensemble", "--seed", "5"])))
    assert cfg["train"].seed == 6 and cfg["data"].data == str(data_files[1])
    by_name = layout("--data", pattern.replace("eta_{member}", "{member}"), "--member-names", "eta_0,eta_1")
    assert by_name.data == tuple(str(f) for f in data_files) and by_name.names == ("eta_0", "eta_1")
    with pytest.raises(Exception, match="would share"):
        layout("--data", f"{data_files[0]},{data_files[0]}")


@pytest.fixture(scope="module")
def ensemble_of_two(tmp_path_factory, data_files):
    out = tmp_path_factory.mktemp("ens") / "ens"
    res = run_module("scaling.run", [*TINY, "--mode", "ensemble", "--seed", str(SEED), "--out", str(out),
                                     "--data", ",".join(str(f) for f in data_files), "--member-names", "a,b"],
                     ranks=2, timeout=500)
    assert res.returncode == 0, res.stderr[-3000:]
    return out


@pytest.mark.mpi
def test_ensemble_run_directory(ensemble_of_two, data_files):
    run = load_run(ensemble_of_two)
    meta = run.meta
    assert meta["mode"] == "ensemble" and meta["world_size"] == 2 and meta["group_size"] == 1
    assert meta["members"] == 2 and meta["member_names"] == ["a", "b"]
    assert meta["member_seeds"] == [SEED, SEED + 1]
    assert meta["member_data"] == [str(f) for f in data_files]
    assert meta["config"]["train"]["seed"] == SEED      # the run's settings, not one member's
    e = run.epochs
    assert sorted(zip(e["rank"], e["member"])) == [(0, 0), (0, 0), (1, 1), (1, 1)]
    assert (e.comm_s == 0).all()                       # nothing is reduced between members
    assert (e.showers == 3 * 2 * 32).all()


@pytest.mark.mpi
def test_members_never_share_checkpoints(ensemble_of_two):
    assert not (ensemble_of_two / "checkpoints").exists()
    dirs = [ensemble_of_two / "members" / str(k) / "checkpoints" for k in range(2)]
    files = [{p.name for p in d.iterdir()} for d in dirs]
    assert all("ckpt-6.index" in f for f in files)
    w0, w1 = (_weights(d) for d in dirs)
    assert w0.keys() == w1.keys()
    assert all(not np.array_equal(w0[k], w1[k]) for k in w0 if w0[k].size > 1)


@pytest.mark.mpi
@pytest.mark.parametrize("member", [0, 1])
def test_each_member_trains_what_a_solo_run_trains(tmp_path, ensemble_of_two, data_files, member):
    """No reduction between members: member k's weights are, bit for bit, those of a one-rank run
    with seed + k on member k's data."""
    solo = tmp_path / "solo"
    res = run_module("scaling.run", [*TINY, "--mode", "weak", "--seed", str(SEED + member), "--out", str(solo),
                                     "--data", str(data_files[member])], timeout=400)
    assert res.returncode == 0, res.stderr[-3000:]
    ours = _weights(ensemble_of_two / "members" / str(member) / "checkpoints")
    theirs = _weights(solo / "checkpoints")
    assert ours.keys() == theirs.keys() and len(ours) > 8
    for k in ours:
        np.testing.assert_array_equal(ours[k], theirs[k], err_msg=k)


@pytest.mark.mpi
def test_resume_continues_every_member(tmp_path, data_files):
    out = tmp_path / "ens"
    args = [*TINY, "--mode", "ensemble", "--seed", str(SEED), "--out", str(out),
            "--data", ",".join(str(f) for f in data_files)]
    first = run_module("scaling.run", args, ranks=2, timeout=500)
    assert first.returncode == 0, first.stderr[-3000:]
    more = run_module("scaling.run", ["--out", str(out), "--resume", "--epochs", "3"], ranks=2, timeout=500)
    assert more.returncode == 0, more.stderr[-3000:]
    for k in range(2):
        names = {p.name for p in (out / "members" / str(k) / "checkpoints").iterdir()}
        assert "ckpt-9.index" in names, names
    meta = json.loads((out / "run.json").read_text())
    assert meta["status"] == "completed" and len(meta["restarts"]) == 1 and meta["member_seeds"] == [SEED, SEED + 1]
    e = load_run(out).epochs
    assert sorted(e[e.epoch == 2]["member"]) == [0, 1]
