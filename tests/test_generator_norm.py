"""[model] generator_norm (BatchNorm as BoloGAN trains it), per-particle generators, and runs
from before the setting existed: read, resumed and compared as they trained, said in one line."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from test_reliability_inputs import saved_run  # noqa: E402

from bologan.config import (BOLOGAN_SECTIONS, HASHED_UNLESS_DEFAULT, DataConfig, ModelConfig,  # noqa: E402
                            TrainConfig, config_hash, with_legacy_values)
from common.settings import resolve_sections, sections_to_dict  # noqa: E402
from common.vocab import NOT_WORKLOAD_KEYS  # noqa: E402
from scaling import run as scaling_run  # noqa: E402


def _tiny(norm: str) -> tuple[ModelConfig, TrainConfig]:
    model = ModelConfig(particle="photons", generator="bn_swish", generator_norm=norm,
                        generator_widths=[8, 8, 8], critic_widths=[16], latent_dim=4)
    return model, TrainConfig(batch_size=16, n_disc=2, seed=3)


def _one_iteration(norm: str):
    import tensorflow as tf

    from bologan.model import Gan
    from bologan.step import WganGpStep

    model, train = _tiny(norm)
    gan = Gan(model, train)
    rng = np.random.default_rng(0)
    real = tf.constant(rng.uniform(0, 0.01, (2, 16, 368)).astype(np.float32))
    label = tf.constant(rng.uniform(0, 1, (2, 16, 1)).astype(np.float32))
    WganGpStep(gan, model, train).compile()(real, label)
    return gan


def _moving_statistics(gan) -> list[np.ndarray]:
    return [w.numpy() for w in gan.generator.weights if "moving_" in w.name]


def test_fixed_moments_train_the_generator_with_moving_statistics_0_and_1():
    # As the original: BatchNorm in inference mode, whose moving mean/variance never change.
    gan = _one_iteration("fixed_moments")
    stats = _moving_statistics(gan)
    assert len(stats) == 8   # 4 BatchNorm layers x (mean, variance)
    for w in stats:
        assert np.all((w == 0.0) | (w == 1.0))
    z = np.random.default_rng(1).normal(0.5, 0.5, (6, 4)).astype(np.float32)
    y = np.full((6, 1), 0.5, np.float32)
    # A shower does not depend on the others in its batch (what makes strong scaling exact).
    whole = gan.generator([z, y], training=False).numpy()
    alone = np.concatenate([gan.generator([z[i:i + 1], y[i:i + 1]], training=False).numpy() for i in range(6)])
    np.testing.assert_allclose(whole, alone, rtol=1e-6, atol=1e-7)


def test_batch_statistics_update_the_moving_statistics():
    stats = _moving_statistics(_one_iteration("batch_statistics"))
    assert any(np.any((w != 0.0) & (w != 1.0)) for w in stats)


def test_each_particle_gets_the_generator_bologan_trains_it_with():
    cfg = resolve_sections(BOLOGAN_SECTIONS, None, overrides={"model": {"particle": "pions"}})
    assert cfg["model"].generator == "relu"
    assert sections_to_dict(cfg)["model"]["generator"] == "relu"     # recorded resolved
    assert ModelConfig(particle="photons").generator == "bn_swish"
    assert ModelConfig(particle="pions", generator="bn_relu").generator == "bn_relu"
    assert ModelConfig().generator_norm == "fixed_moments"


def _hash(model: dict) -> str:
    tables = sections_to_dict({"model": ModelConfig(**model), "train": TrainConfig(), "data": DataConfig()})
    return config_hash(tables, NOT_WORKLOAD_KEYS)


def test_the_new_default_is_hashed_and_batch_statistics_hash_as_older_runs():
    old = sections_to_dict({"model": ModelConfig(), "train": TrainConfig(), "data": DataConfig()})
    del old["model"]["generator_norm"]
    del old["data"]["momenta"]
    older_run = config_hash(old, NOT_WORKLOAD_KEYS)
    assert _hash({"generator_norm": "batch_statistics"}) == older_run
    assert _hash({}) != older_run
    assert HASHED_UNLESS_DEFAULT["model.generator_norm"] == "batch_statistics"


def test_a_stored_config_without_the_key_is_read_as_it_trained():
    tables, changed = with_legacy_values({"model": {"particle": "photons"}, "train": {}, "data": {}})
    assert tables["model"]["generator_norm"] == "batch_statistics"
    assert changed == ["model.generator_norm = 'batch_statistics'"]     # momenta '' is today's default
    tables, changed = with_legacy_values({"model": {"generator_norm": "fixed_moments"}, "data": {"momenta": ""}})
    assert tables["model"]["generator_norm"] == "fixed_moments" and changed == []


def _legacy_run(out: Path) -> None:
    """A run directory as scaling.run wrote it before generator_norm existed."""
    saved_run(out)
    meta = json.loads((out / "run.json").read_text())
    del meta["config"]["model"]["generator_norm"]
    del meta["config"]["data"]["momenta"]
    meta["config_hash"] = config_hash({s: meta["config"][s] for s in ("model", "train", "data")}, NOT_WORKLOAD_KEYS)
    (out / "run.json").write_text(json.dumps(meta))


def test_scaling_run_resumes_an_older_run_with_batch_statistics_and_says_so(tmp_path):
    from scaling.outdir import check_out, measurement_settings, run_shape

    out = tmp_path / "run"
    _legacy_run(out)
    args = scaling_run.parse_args(["--out", str(out), "--resume"])
    cfg = scaling_run._resolve_config(args)
    assert cfg["model"].generator_norm == "batch_statistics"
    assert len(args.legacy_notes) == 1 and "generator_norm" in args.legacy_notes[0]
    sc = cfg["scaling"]
    shape = run_shape(sc, 1, sc.batch_per_rank)
    assert check_out(out, True, scaling_run.workload_hash(cfg), shape, measurement_settings(cfg)) is None
    # Switching it to fixed moments on resume would mix two models: refused.
    cfg = scaling_run._resolve_config(scaling_run.parse_args(["--out", str(out), "--resume",
                                                              "--generator-norm", "fixed_moments"]))
    problem = check_out(out, True, scaling_run.workload_hash(cfg), shape, measurement_settings(cfg))
    assert problem and "change the workload" in problem


def test_analysis_compares_an_older_run_as_it_trained():
    from analysis.load import config_differences

    new = sections_to_dict({"model": ModelConfig(generator_norm="batch_statistics"), "train": TrainConfig(),
                            "data": DataConfig()})
    old = json.loads(json.dumps(new))
    del old["model"]["generator_norm"]
    assert config_differences([old, new]) == []
    new["model"]["generator_norm"] = "fixed_moments"
    assert config_differences([old, new]) == ["model.generator_norm"]


def test_bologan_train_resumes_an_older_directory_as_it_trained(tmp_path):
    # In subprocesses: bologan.train sets TensorFlow's thread pools, fixed once TF has started.
    from conftest import run_module

    out = tmp_path / "train"
    tiny = ["--out", str(out), "--synthetic-events", "200", "--batch-size", "8", "--n-disc", "1", "--threads", "1",
            "--generator-widths", "8,8,8", "--critic-widths", "8", "--checkpoint-every", "1"]
    res = run_module("bologan.train", [*tiny, "--iterations", "1"], timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    tables = json.loads((out / "config.json").read_text())
    del tables["model"]["generator_norm"]                    # as written before the setting existed
    (out / "config.json").write_text(json.dumps(tables))
    res = run_module("bologan.train", ["--out", str(out), "--resume", "--iterations", "2"], timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    assert "generator_norm" in res.stderr and "batch_statistics" in res.stderr
    assert json.loads((out / "config.json").read_text())["model"]["generator_norm"] == "batch_statistics"
    # Switching how it normalises on resume would mix two models in one set of weights.
    res = run_module("bologan.train", ["--out", str(out), "--resume", "--iterations", "3",
                                       "--generator-norm", "fixed_moments"], timeout=300)
    err = [line for line in res.stderr.strip().splitlines() if line.startswith("error: ")]
    assert res.returncode == 2 and len(err) == 1 and "trained with generator_norm 'batch_statistics'" in err[0], \
        res.stderr[-2000:]
