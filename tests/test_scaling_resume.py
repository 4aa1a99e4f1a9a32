"""A resumed run ends where an uninterrupted one does, and --timeline writes Horovod's timeline.

One rank, one thread, relu generator: a run of 2 epochs and a run stopped after 1 epoch then
resumed to 2 must end with the same checkpoint, bit for bit (weights, optimiser state, the
iteration and the noise generator's state). Before the noise state was checkpointed, the
resumed run drew its z/alpha again from the seed and ended elsewhere.
"""
from __future__ import annotations

import json

import numpy as np
import pytest

from conftest import run_module

TINY = ["--synthetic-events", "1500", "--threads", "1", "--critic-widths", "64,64,64", "--generator", "relu",
        "--n-disc", "2", "--iterations-per-epoch", "3", "--warmup-epochs", "0", "--batch-per-rank", "32",
        "--mode", "weak"]


def _run(out, *args):
    res = run_module("scaling.run", [*TINY, "--out", str(out), *args], timeout=400)
    assert res.returncode == 0, res.stderr[-3000:]
    return res


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("resume")
    _run(root / "whole", "--epochs", "2")
    _run(root / "resumed", "--epochs", "1")
    _run(root / "resumed", "--epochs", "2", "--resume", "--timeline")
    _run(root / "sparse", "--epochs", "3", "--checkpoint-every", "6")
    return root / "whole", root / "resumed"


def _checkpoint(run_dir):
    import tensorflow as tf

    reader = tf.train.load_checkpoint(str(run_dir / "checkpoints"))
    # save_counter counts this process's saves (bookkeeping, not training state).
    return {k: reader.get_tensor(k) for k in reader.get_variable_to_shape_map()
            if not k.startswith("save_counter")}


def test_resumed_run_ends_bit_for_bit_where_the_uninterrupted_one_does(runs):
    whole, resumed = (_checkpoint(r) for r in runs)
    assert whole.keys() == resumed.keys()
    noise = [k for k in whole if k.startswith("noise/")]
    assert noise, sorted(whole)             # the noise generator's state is in the checkpoint
    assert any(k.startswith("d_opt/_variables/") for k in whole) and "iteration/.ATTRIBUTES/VARIABLE_VALUE" in whole
    assert int(whole["iteration/.ATTRIBUTES/VARIABLE_VALUE"]) == 6
    for key in whole:
        np.testing.assert_array_equal(whole[key], resumed[key], err_msg=key)


def test_timeline_is_written_into_the_run_directory(runs):
    _, resumed = runs
    path = resumed / "horovod_timeline-1.json"     # attempt 1: the resumed start
    assert path.is_file()
    assert isinstance(json.loads(path.read_text()), list)
    assert not (resumed / "horovod_timeline-0.json").exists()   # the first start had no --timeline


def test_replicas_draw_different_noise_from_one_checkpointable_state():
    """Every replica's generator has the same state (so rank 0's checkpoint restores all of them);
    the replica index keys the draws, so replicas still see different numbers."""
    from bologan.config import ModelConfig, TrainConfig
    from bologan.model import Gan
    from bologan.step import Replicas, WganGpStep

    class Second(Replicas):
        def index(self):
            return 1

        def count(self):
            return 2

    model, train = ModelConfig(critic_widths=[16, 16, 16]), TrainConfig(n_disc=1)
    first_gan, second_gan = Gan(model, train), Gan(model, train)
    first = WganGpStep(first_gan, model, train)
    second = WganGpStep(second_gan, model, train, replicas=Second())
    z0, a0 = first._draw(0, 8)
    z1, a1 = second._draw(0, 8)
    assert not np.allclose(z0.numpy(), z1.numpy()) and not np.allclose(a0.numpy(), a1.numpy())
    np.testing.assert_array_equal(first_gan.noise.state.numpy(), second_gan.noise.state.numpy())
    # The stream moves on: the next draw differs from the first.
    assert not np.allclose(first._draw(0, 8)[0].numpy(), z0.numpy())


def test_the_variables_an_engine_broadcasts_include_iteration_and_noise_state():
    from bologan.config import ModelConfig, TrainConfig
    from bologan.model import Gan

    gan = Gan(ModelConfig(critic_widths=[16, 16, 16]), TrainConfig())
    names = {id(v) for v in gan.all_variables()}
    assert id(gan.iteration) in names and id(gan.noise.state) in names


def test_checkpoint_due_at_epoch_ends_only():
    from scaling.checkpoint_cost import checkpoint_due

    # 3 iterations per epoch, every 6: after epoch 1 (iteration 6) and after the last epoch
    assert [checkpoint_due(e, 3, 6, 4) for e in range(4)] == [False, True, False, True]
    assert all(checkpoint_due(e, 3, 0, 4) for e in range(4))          # 0: every epoch
    assert all(checkpoint_due(e, 3, 2, 4) for e in range(4))          # shorter than an epoch: every epoch
    assert [checkpoint_due(e, 4, 6, 3) for e in range(3)] == [False, True, True]   # 4 -> 8 crosses 6


def test_saves_and_starts_are_recorded_and_checkpoint_every_is_honoured(runs):
    _whole, resumed = runs
    meta = json.loads((resumed / "run.json").read_text())
    saves = meta["checkpoint_saves"]
    assert [(s["attempt"], s["iteration"]) for s in saves] == [(0, 3), (1, 6)]
    assert all(s["save_s"] > 0 and s["bytes"] > 0 for s in saves)
    starts = meta["starts"]
    assert [s["attempt"] for s in starts] == [0, 1]
    assert starts[0]["restore_s"] is None and starts[1]["restore_s"] > 0
    assert all(s["startup_s"] > 0 for s in starts)
    sparse = json.loads((resumed.parent / "sparse" / "run.json").read_text())
    assert [s["iteration"] for s in sparse["checkpoint_saves"]] == [6, 9]
