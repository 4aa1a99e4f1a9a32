"""scaling.run --mode ensemble --group-size G > 1: every group of G ranks trains its own GAN,
data parallel inside the group (Horovod process sets), nothing reduced between groups."""
from __future__ import annotations

import json
import os
import shutil

import numpy as np
import pytest

from conftest import ROOT, run_module
from common.errors import UserError
from common.rundir import load_run

TINY = ["--threads", "1", "--critic-widths", "64,64,64", "--generator", "relu", "--n-disc", "2",
        "--epochs", "2", "--iterations-per-epoch", "2", "--warmup-epochs", "0", "--batch-per-rank", "16",
        "--synthetic-events", "1024"]
SEED = 31
GROUP = ["--mode", "ensemble", "--group-size", "2", "--seed", str(SEED)]

# Runs scaling.run and then saves every rank's variables (checkpoints hold only a group's first
# rank's), so that a test can see what each rank of a group holds at the end.
DUMP_MODULE = '''
import os, sys
import numpy as np
import scaling.run as run

_train = run._train

def _train_and_dump(ctx, model, *args, **kwargs):
    code = _train(ctx, model, *args, **kwargs)
    values = {f"v{i}": np.asarray(v.numpy()) for i, v in enumerate(model.gan.all_variables())}
    np.savez(os.path.join(os.environ["GROUP_TEST_DUMP"], f"rank{ctx.world.rank}.npz"), **values)
    return code

run._train = _train_and_dump
sys.exit(run.main(sys.argv[1:], restore_signals=False))
'''


def _weights(checkpoint_dir):
    """Float variables of the newest checkpoint in ``checkpoint_dir``, by name."""
    import tensorflow as tf

    reader = tf.train.load_checkpoint(str(checkpoint_dir))
    values = {k: reader.get_tensor(k) for k in reader.get_variable_to_shape_map()
              if "OPTIMIZER" not in k and "save_counter" not in k}
    return {k: v for k, v in values.items() if isinstance(v, np.ndarray) and v.dtype.kind == "f"}


def _assert_same_weights(ours, theirs):
    assert ours.keys() == theirs.keys() and len(ours) > 8
    for k in ours:
        np.testing.assert_array_equal(ours[k], theirs[k], err_msg=k)


def _run_dumping(tmp, args, ranks):
    """scaling.run ``args`` on ``ranks`` ranks; returns the folder of every rank's variables."""
    (tmp / "group_dump_run.py").write_text(DUMP_MODULE)
    dump = tmp / "dump"
    dump.mkdir()
    res = run_module("group_dump_run", args, ranks=ranks, timeout=600,
                     env={"PYTHONPATH": os.pathsep.join([str(ROOT), str(tmp)]), "GROUP_TEST_DUMP": str(dump)})
    assert res.returncode == 0, res.stderr[-3000:]
    return dump


def _rank_values(dump, rank):
    with np.load(dump / f"rank{rank}.npz") as f:
        return [f[f"v{i}"] for i in range(len(f.files))]


@pytest.fixture(scope="module")
def weak_two(tmp_path_factory):
    """The data-parallel reference: Horovod, weak scaling, 2 ranks, the same seed and settings."""
    out = tmp_path_factory.mktemp("weak") / "weak"
    res = run_module("scaling.run", [*TINY, "--engine", "horovod", "--mode", "weak", "--seed", str(SEED),
                                     "--out", str(out)], ranks=2, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    return out


@pytest.fixture(scope="module")
def four_ranks(tmp_path_factory):
    """4 ranks in groups of 2: two members; returns (run directory, every rank's variables)."""
    tmp = tmp_path_factory.mktemp("groups")
    out = tmp / "ens"
    dump = _run_dumping(tmp, [*TINY, *GROUP, "--out", str(out)], ranks=4)
    return out, dump


@pytest.mark.mpi
def test_one_group_of_two_trains_what_data_parallel_trains(tmp_path, weak_two):
    """One member of 2 ranks is the 2-rank data-parallel run: same seed, same data shards, same
    noise keys, the same all-reduce over the same two ranks, so the weights are equal bit for bit."""
    out = tmp_path / "ens"
    res = run_module("scaling.run", [*TINY, *GROUP, "--out", str(out)], ranks=2, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    _assert_same_weights(_weights(out / "members" / "0" / "checkpoints"), _weights(weak_two / "checkpoints"))
    meta = json.loads((out / "run.json").read_text())
    assert meta["members"] == 1 and meta["group_size"] == 2 and meta["world_size"] == 2


@pytest.mark.mpi
def test_groups_reduce_inside_and_never_between(four_ranks, weak_two):
    out, dump = four_ranks
    ranks = [_rank_values(dump, r) for r in range(4)]
    floats = [i for i, v in enumerate(ranks[0]) if v.dtype.kind == "f" and v.size > 1]
    assert len(floats) > 8
    # The ranks of a group hold the same variables (optimiser slots and noise state included):
    # their gradients were averaged together although each trained on its own shard.
    for a, b in ((0, 1), (2, 3)):
        for i, (x, y) in enumerate(zip(ranks[a], ranks[b])):
            np.testing.assert_array_equal(x, y, err_msg=f"variable {i} of ranks {a} and {b}")
    # The members differ in every weight: nothing was reduced or broadcast between groups.
    assert all(not np.array_equal(ranks[0][i], ranks[2][i]) for i in floats)
    # Member 0 is unaffected by member 1: it is the 2-rank data-parallel run with its seed.
    _assert_same_weights(_weights(out / "members" / "0" / "checkpoints"), _weights(weak_two / "checkpoints"))


@pytest.mark.mpi
def test_group_run_directory(four_ranks):
    out, _ = four_ranks
    assert not (out / "checkpoints").exists()
    for k in range(2):
        names = {p.name for p in (out / "members" / str(k) / "checkpoints").iterdir()}
        assert "ckpt-4.index" in names, names
    w0, w1 = (_weights(out / "members" / str(k) / "checkpoints") for k in range(2))
    assert w0.keys() == w1.keys()
    assert all(not np.array_equal(w0[k], w1[k]) for k in w0 if w0[k].size > 1)
    run = load_run(out)
    meta = run.meta
    assert meta["mode"] == "ensemble" and meta["world_size"] == 4 and meta["processes"] == 4
    assert meta["group_size"] == 2 and meta["members"] == 2 and meta["member_seeds"] == [SEED, SEED + 1]
    assert meta["per_rank_batch"] == 16
    assert meta["engine_details"]["member_ranks"] == [[0, 1], [2, 3]]
    e = run.epochs.sort_values(["epoch", "rank"])
    last = e[e.epoch == 1]
    assert list(last["rank"]) == [0, 1, 2, 3] and list(last["member"]) == [0, 0, 1, 1]
    # Every rank counts the showers it consumed: iterations x n_disc x its own batch.
    assert (e.showers == 2 * 2 * 16).all()
    # The reduction inside a group is timed like a data-parallel run's.
    assert (e.comm_s > 0).all()


@pytest.mark.mpi
def test_resume_continues_every_group(tmp_path, four_ranks):
    out = tmp_path / "ens"
    shutil.copytree(four_ranks[0], out)
    more = run_module("scaling.run", ["--out", str(out), "--resume", "--epochs", "3"], ranks=4, timeout=600)
    assert more.returncode == 0, more.stderr[-3000:]
    for k in range(2):
        names = {p.name for p in (out / "members" / str(k) / "checkpoints").iterdir()}
        assert "ckpt-6.index" in names, names
    meta = json.loads((out / "run.json").read_text())
    assert meta["status"] == "completed" and len(meta["restarts"]) == 1 and meta["group_size"] == 2
    e = load_run(out).epochs
    assert sorted(e[e.epoch == 2]["member"]) == [0, 0, 1, 1]


# -- layouts the ranks cannot train ---------------------------------------------------------------

def _layout(size, *flags, rank=0):
    from common.settings import resolve_sections
    from scaling.ensemble import ensemble_layout
    from scaling.run import SECTIONS, parse_args
    from scaling.world import World

    world = World(rank=rank, size=size, local_rank=rank, local_size=size, node="n", hostname="n",
                  launcher="mpirun", cores=1)
    args = parse_args(["--mode", "ensemble", *flags])
    return ensemble_layout(resolve_sections(SECTIONS, None, args), world, args.timeline)


def test_layout_of_groups():
    layout = _layout(6, "--group-size", "2", "--seed", "7", rank=5)
    assert layout.members == 3 and layout.member == 2 and layout.rank_in_group == 1
    assert layout.seeds == (7, 8, 9) and layout.run_json_fields()["group_size"] == 2
    from scaling.ensemble_engine import group_ranks

    assert group_ranks(6, 2) == [[0, 1], [2, 3], [4, 5]] and group_ranks(6, 3) == [[0, 1, 2], [3, 4, 5]]


@pytest.mark.parametrize("size, flags, says", [
    (4, ["--group-size", "3"], "4 rank(s) do not split into groups of 3"),
    (4, ["--group-size", "2", "--member-names", "a,b,c"], "3 members, more than the 4 rank(s) allow"),
    (4, ["--group-size", "2", "--engine", "mirrored"], "use --engine horovod"),
    (4, ["--group-size", "2", "--timeline"], "--timeline: not recorded for --mode ensemble"),
])
def test_bad_group_layouts_are_refused(size, flags, says):
    with pytest.raises(UserError, match=None) as exc:
        _layout(size, *flags)
    assert says in str(exc.value)


@pytest.mark.mpi
def test_ranks_not_a_multiple_of_the_group_size_is_one_line_exit_2(tmp_path):
    out = tmp_path / "run"
    res = run_module("scaling.run", [*TINY, *GROUP[:2], "--group-size", "3", "--out", str(out)], ranks=2,
                     timeout=300)
    lines = [line for line in res.stderr.splitlines() if line.startswith("error:")]
    assert res.returncode == 2, res.stderr[-2000:]
    assert len(lines) == 1 and "Traceback" not in res.stderr, res.stderr[-2000:]
    assert "2 rank(s) do not split into groups of 3" in lines[0]
    assert not out.exists(), "a refused run must write nothing"
