"""Model, gradient penalty, pipeline, config and single-replica training."""
from __future__ import annotations

import types

import numpy as np
import pytest

from bologan.config import BOLOGAN_SECTIONS, DataConfig, ModelConfig, TrainConfig
from common.errors import UserError
from bologan.geometry import MOMENTA_MEV, PHOTONS, PIONS
from common.settings import resolve_sections
from conftest import run_module

tf = pytest.importorskip("tensorflow")


def _showers(particle, n=2000, seed=0):
    rng = np.random.default_rng(seed)
    mom = rng.choice(MOMENTA_MEV, n)
    vox = (rng.random((n, particle.n_voxels)) * mom[:, None] / particle.n_voxels).astype(np.float32)
    return types.SimpleNamespace(particle=particle, momentum_mev=mom, voxels_mev=vox)


@pytest.mark.parametrize("particle", ["photons", "pions"])
@pytest.mark.parametrize("variant", ["bn_swish", "bn_relu", "relu"])
def test_model_shapes_and_parameter_counts(particle, variant):
    from bologan.model import build_critic, build_generator

    cfg = ModelConfig(particle=particle, generator=variant)
    n_vox = {"photons": 368, "pions": 533}[particle]
    gen, critic = build_generator(cfg), build_critic(cfg)
    out = gen([tf.zeros((3, 50)), tf.zeros((3, 1))], training=True)
    assert out.shape == (3, n_vox)
    assert critic([out, tf.zeros((3, 1))]).shape == (3, 1)
    # Dense (in+1)*out per layer, independent of Keras: 51->50->100->200->n_vox, critic n_vox+1 -> n_vox x3 -> 1.
    dense = sum((a + 1) * b for a, b in zip([51, 50, 100, 200], [50, 100, 200, n_vox]))
    bn_units = {"bn_swish": 50 + 100 + 200 + n_vox, "bn_relu": 50 + 100 + 200, "relu": 0}[variant]
    assert gen.count_params() == dense + 4 * bn_units  # gamma, beta, moving mean, moving variance
    assert critic.count_params() == (n_vox + 2) * n_vox + (n_vox + 1) * n_vox * 2 + (n_vox + 1)
    # analysis computes the same counts without TensorFlow (for its projections).
    from analysis.projection.model_size import model_size

    size = model_size(cfg)
    assert size.generator_params == sum(int(np.prod(v.shape)) for v in gen.trainable_variables)
    assert size.critic_params == critic.count_params()


def test_gradient_penalty_matches_closed_form_for_linear_critic():
    """For D(x, y) = w.x + v*y + c the input gradient is w everywhere, so GP = (||w|| - 1)^2."""
    from bologan.step import gradient_penalty

    n = 6
    vox = tf.keras.Input((n,))
    lab = tf.keras.Input((1,))
    dense = tf.keras.layers.Dense(1)
    critic = tf.keras.Model([vox, lab], dense(tf.keras.layers.Concatenate()([vox, lab])))
    w = np.array([0.3, -1.2, 0.5, 2.0, 0.0, 0.7], dtype=np.float32)
    dense.set_weights([np.concatenate([w, [4.0]]).reshape(-1, 1).astype(np.float32), np.array([0.1], np.float32)])
    rng = np.random.default_rng(1)
    real, fake = rng.random((5, n), dtype=np.float32), rng.random((5, n), dtype=np.float32)
    alpha = rng.random((5, 1), dtype=np.float32)
    gp = gradient_penalty(critic, tf.constant(real), tf.constant(fake), tf.zeros((5, 1)), tf.constant(alpha))
    assert float(gp) == pytest.approx((np.linalg.norm(w) - 1.0) ** 2, rel=1e-5)


def test_gradient_penalty_matches_finite_differences_for_relu_critic():
    from bologan.step import gradient_penalty

    cfg = ModelConfig(particle="photons", critic_widths=[16, 8])
    from bologan.model import build_critic

    critic = build_critic(cfg)
    rng = np.random.default_rng(2)
    real = rng.random((3, 368), dtype=np.float32)
    fake = rng.random((3, 368), dtype=np.float32)
    alpha = rng.random((3, 1), dtype=np.float32)
    label = rng.random((3, 1), dtype=np.float32)
    gp = float(gradient_penalty(critic, tf.constant(real), tf.constant(fake), tf.constant(label), tf.constant(alpha)))
    xhat = (alpha * real + (1 - alpha) * fake).astype(np.float64)
    eps, norms = 1e-3, []

    def score(x, row):
        return float(critic([tf.constant(x, tf.float32), tf.constant(label[row:row + 1])])[0, 0])

    for i in range(3):
        grad = np.zeros(368)
        for j in range(368):
            plus, minus = xhat[i:i + 1].copy(), xhat[i:i + 1].copy()
            plus[0, j] += eps
            minus[0, j] -= eps
            grad[j] = (score(plus, i) - score(minus, i)) / (2 * eps)
        norms.append(np.linalg.norm(grad))
    assert gp == pytest.approx(np.mean((np.array(norms) - 1) ** 2), rel=2e-2)


def test_pipeline_shards_are_disjoint_and_reshuffled_every_pass():
    from bologan.pipeline import IterationBatches

    sh = _showers(PHOTONS, n=640)
    data = DataConfig(prefetch=0)
    # Tag each shower by its row so batches can be traced back to rows.
    sh.voxels_mev[:, 0] = np.arange(640) * sh.particle.ekin_mev(sh.momentum_mev)

    def rows(batches):
        x, _ = batches
        return np.rint(x[..., 0]).astype(int)  # voxel 0 / Ekin is the row index

    whole = IterationBatches(sh, data, n_disc=2, batch_per_replica=64, seed=3)
    halves = [IterationBatches(sh, data, n_disc=2, batch_per_replica=32, seed=3).shard(r, 2) for r in range(2)]
    gw = whole.batches()
    gh = [h.batches() for h in halves]
    seen_pass0, seen_pass1 = [], []
    for it in range(whole.iterations_per_pass * 2):
        w = rows(next(gw))
        a, b = rows(next(gh[0])), rows(next(gh[1]))
        assert not set(a.ravel()) & set(b.ravel())                       # disjoint shards
        np.testing.assert_array_equal(np.concatenate([a, b], axis=1), w)  # same global batch
        (seen_pass0 if it < whole.iterations_per_pass else seen_pass1).append(w.ravel())
    p0, p1 = np.concatenate(seen_pass0), np.concatenate(seen_pass1)
    assert len(set(p0)) == len(p0)                                       # no repeats within a pass
    assert not np.array_equal(p0, p1)                                    # a fresh shuffle each pass
    resumed = rows(next(whole.__class__(sh, data, 2, 64, 3).batches(start_iteration=whole.iterations_per_pass)))
    np.testing.assert_array_equal(resumed.ravel(), seen_pass1[0])       # resume continues the order


def test_pipeline_refuses_too_small_dataset():
    from bologan.pipeline import IterationBatches

    with pytest.raises(UserError, match="one iteration needs 1280"):
        IterationBatches(_showers(PIONS, n=1000), DataConfig(), n_disc=5, batch_per_replica=128, seed=0).shard(1, 2)


def test_config_file_and_flags(tmp_path):
    path = tmp_path / "run.toml"
    path.write_text('[train]\nbatch_size = 64\nn_disc = 3\n[model]\nparticle = "pions"\n')
    import argparse

    from common.settings import add_section_arguments

    parser = argparse.ArgumentParser()
    add_section_arguments(parser, BOLOGAN_SECTIONS)
    cfg = resolve_sections(BOLOGAN_SECTIONS, path, parser.parse_args(["--n-disc", "4"]))
    assert (cfg["train"].batch_size, cfg["train"].n_disc, cfg["model"].particle) == (64, 4, "pions")
    path.write_text("[train]\nbatchsize = 64\n")
    with pytest.raises(UserError, match=r"unknown key 'batchsize'"):
        resolve_sections(BOLOGAN_SECTIONS, path)
    path.write_text('[train]\nn_disc = "five"\n')
    with pytest.raises(UserError, match=r"\[train\]\.n_disc: expected an integer"):
        resolve_sections(BOLOGAN_SECTIONS, path)
    path.write_text('[trian]\nn_disc = 5\n')
    with pytest.raises(UserError, match=r"unknown section \[trian\]"):
        resolve_sections(BOLOGAN_SECTIONS, path)


def test_checkpoint_restores_exact_state(tmp_path):
    from bologan.model import Gan, checkpoint_manager
    from bologan.pipeline import IterationBatches
    from bologan.step import WganGpStep

    model, train = ModelConfig(critic_widths=[32, 32, 32]), TrainConfig(batch_size=16, n_disc=2)
    sh = _showers(PHOTONS, n=200)
    it = IterationBatches(sh, DataConfig(prefetch=0), 2, 16, 0).batches()
    gan = Gan(model, train)
    step = WganGpStep(gan, model, train).compile()
    for _ in range(3):
        out = step(*next(it))
    assert np.isfinite(float(out["d_loss"])) and np.isfinite(float(out["g_loss"]))
    checkpoint_manager(gan, tmp_path, 0).save(checkpoint_number=3)
    other = Gan(model, train)
    other.checkpoint().restore(str(tmp_path / "checkpoints" / "ckpt-3")).assert_existing_objects_matched()
    assert int(other.iteration.numpy()) == 3
    for a, b in zip(gan.all_variables(), other.all_variables()):
        np.testing.assert_array_equal(a.numpy(), b.numpy())


def test_train_cli_runs_resumes_and_refuses_bad_input(tmp_path):
    out = tmp_path / "train"
    args = ["--out", str(out), "--iterations", "4", "--checkpoint-every", "2", "--log-every", "2",
            "--synthetic-events", "1500", "--batch-size", "32", "--threads", "1"]
    res = run_module("bologan.train", args, timeout=300)
    assert res.returncode == 0, res.stderr
    from bologan.model import list_checkpoints

    assert list_checkpoints(out) == [2, 4]
    import pyarrow.parquet as pq

    losses = pq.read_table(out / "losses.parquet").to_pydict()
    assert losses["iteration"] == [2, 4] and all(np.isfinite(losses["d_loss"]))
    again = run_module("bologan.train", args, timeout=120)
    assert again.returncode == 2 and "already holds a training run" in again.stderr
    assert len(again.stderr.strip().splitlines()) == 1
    more = run_module("bologan.train", ["--out", str(out), "--resume", "--iterations", "6"], timeout=300)
    assert more.returncode == 0, more.stderr
    assert list_checkpoints(out) == [2, 4, 6]
    bad = tmp_path / "bad.toml"
    bad.write_text("[train]\nlearning_rat = 1e-4\n")
    res = run_module("bologan.train", ["--config", str(bad), "--out", str(tmp_path / "x")], timeout=120)
    assert res.returncode == 2 and "learning_rat" in res.stderr and not (tmp_path / "x").exists()
