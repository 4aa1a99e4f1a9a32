"""bologan.export: the SavedModel reproduces the in-memory generator; ONNX only with tf2onnx."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

from bologan import export
from bologan.config import DataConfig, ModelConfig, TrainConfig
from bologan.geometry import PHOTONS, PIONS
from bologan.labels import energy_label
from bologan.model import Gan, build_generator, checkpoint_manager, save_train_config
from common.settings import sections_to_dict


def _noise(model_cfg: ModelConfig, n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.normal(model_cfg.latent_mean, model_cfg.latent_std, (n, model_cfg.latent_dim)).astype(np.float32)


@pytest.fixture(scope="module")
def photons_export(tmp_path_factory):
    tf.keras.mixed_precision.set_global_policy("float32")
    tf.random.set_seed(4)
    cfg = ModelConfig(particle="photons", generator="bn_swish")
    gen = build_generator(cfg)
    # Move the BatchNorm statistics off their initial values so inference mode is really exercised.
    for layer in gen.layers:
        if isinstance(layer, tf.keras.layers.BatchNormalization):
            layer.moving_mean.assign(tf.random.normal(layer.moving_mean.shape, 0.0, 0.3))
            layer.moving_variance.assign(tf.random.uniform(layer.moving_variance.shape, 0.5, 2.0))
    out = tmp_path_factory.mktemp("export") / "photons"
    saved = export.save_generator(gen, cfg, "maxe", out, {"checkpoint": "in-memory"})
    return gen, cfg, out, tf.saved_model.load(str(saved))


def test_serving_signature_reproduces_the_generator(photons_export):
    gen, cfg, _out, loaded = photons_export
    z = _noise(cfg, 64)
    label = energy_label(PHOTONS, np.geomspace(256, 4194304, 64), "maxe")
    expected = gen([z, label], training=False).numpy()
    got = loaded.signatures["serving_default"](z=tf.constant(z), label=tf.constant(label))["voxel_fractions"]
    # 1e-6 relative and absolute: eager and graph execution may round the last float32 bit apart.
    np.testing.assert_allclose(got.numpy(), expected, rtol=1e-6, atol=1e-6)
    # The same through the restored module attribute (what Python callers use).
    np.testing.assert_allclose(loaded.fractions(z, label)["voxel_fractions"].numpy(), expected,
                               rtol=1e-6, atol=1e-6)
    assert got.shape == (64, PHOTONS.n_voxels) and got.dtype == tf.float32


def test_generate_mev_signature_matches_the_numpy_path(photons_export):
    gen, cfg, _out, loaded = photons_export
    momenta = np.array([256.0, 1024.0, 65536.0, 4194304.0, 3000.0])
    seed = 12
    got = loaded.signatures["generate_mev"](momentum_mev=tf.constant(momenta), seed=tf.constant(seed, tf.int64))
    got = got["voxels_mev"].numpy()
    z = tf.random.stateless_normal((len(momenta), cfg.latent_dim), seed=[seed, 0], mean=cfg.latent_mean,
                                   stddev=cfg.latent_std)
    frac = gen([z, energy_label(PHOTONS, momenta, "maxe")], training=False).numpy()
    expected = np.maximum(frac.astype(np.float64) * PHOTONS.ekin_mev(momenta)[:, None], 0.0)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6 * momenta.max())
    assert (got >= 0).all()
    again = loaded.generate_mev(tf.constant(momenta), tf.constant(seed, tf.int64))["voxels_mev"].numpy()
    assert np.array_equal(got, again)      # same seed, same showers


def test_metadata_describes_the_interface(photons_export):
    _gen, cfg, out, _loaded = photons_export
    meta = json.loads((out / export.META_FILE).read_text())
    assert meta["particle"] == "photons" and meta["n_voxels"] == 368 and meta["latent_dim"] == cfg.latent_dim
    assert meta["label"] == "maxe" and meta["source"] == {"checkpoint": "in-memory"}
    assert set(meta["signatures"]) == {"serving_default", "generate_mev"}


def test_cli_exports_a_checkpoint_with_loge_labels(tmp_path, capsys):
    """A pions run with the log label, through the command line; ONNX is skipped with a message."""
    train = tmp_path / "train"
    cfg = {"model": ModelConfig(particle="pions", generator="relu", generator_widths=[8, 16], critic_widths=[8]),
           "train": TrainConfig(), "data": DataConfig(label="loge")}
    gan = Gan(cfg["model"], cfg["train"])
    save_train_config(train, sections_to_dict(cfg))
    checkpoint_manager(gan, train, 0).save(checkpoint_number=3)
    out = tmp_path / "exported"
    rc = export.main(["--checkpoint", str(train), "--out", str(out)])
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    if not export.onnx_available():
        assert "ONNX export skipped: the tf2onnx package is not installed" in captured.err
        assert not (out / export.ONNX_FILE).exists()
    loaded = tf.saved_model.load(str(out / export.SAVED_MODEL_DIR))
    momenta = np.array([512.0, 2.0**20])
    z = tf.random.stateless_normal((2, 50), seed=[5, 0], mean=0.5, stddev=0.5)
    frac = gan.generator([z, energy_label(PIONS, momenta, "loge")], training=False).numpy()
    got = loaded.signatures["generate_mev"](momentum_mev=tf.constant(momenta), seed=tf.constant(5, tf.int64))
    expected = np.maximum(frac * PIONS.ekin_mev(momenta)[:, None], 0.0)
    np.testing.assert_allclose(got["voxels_mev"].numpy(), expected, rtol=1e-5, atol=1e-3)
    meta = json.loads((out / export.META_FILE).read_text())
    assert meta["label"] == "loge" and meta["source"]["iteration"] == 3


@pytest.mark.skipif(export.onnx_available(), reason="tf2onnx is installed here")
def test_onnx_required_without_tf2onnx_is_a_user_error(tmp_path, capsys):
    out = tmp_path / "never"
    rc = export.main(["--checkpoint", str(tmp_path / "whatever"), "--out", str(out), "--onnx", "yes"])
    err = capsys.readouterr().err
    assert rc == 2 and "tf2onnx" in err and err.count("\n") == 1
    assert not out.exists()


def test_missing_checkpoint_is_a_user_error(tmp_path, capsys):
    rc = export.main(["--checkpoint", str(tmp_path / "nope"), "--out", str(tmp_path / "o"), "--onnx", "no"])
    assert rc == 2 and "not found" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_cli_help_mentions_both_signatures(capsys):
    with pytest.raises(SystemExit):
        export.main(["--help"])
    text = capsys.readouterr().out
    assert "serving_default" in text and "generate_mev" in text and Path(export.__file__).exists()
