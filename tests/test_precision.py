"""--precision float32|bf16|fp16: one meaning in training, the benchmark, scaling.run and generate.

What is checked: fp16 trains with dynamic loss scaling (a LossScaleOptimizer, the loss scaled
and the gradients unscaled, float32 weights), bf16 without it; a tiny step of each runs on a
CPU. The benchmark times fp16 with the loss scaling training uses and says so. The retired
value "mixed" (bf16 on CPUs, fp16 on GPUs) is refused in one line naming the new values,
from a command line or from a stored configuration.
"""
from __future__ import annotations

import json

import numpy as np
import pytest

from conftest import run_module
from test_reliability_inputs import refused, saved_run

from scaling import run as scaling_run


@pytest.fixture
def policy_restored():
    import tensorflow as tf

    yield
    tf.keras.mixed_precision.set_global_policy("float32")


def _one_step(precision: str):
    import tensorflow as tf

    from bologan.config import ModelConfig, TrainConfig
    from bologan.geometry import particle
    from bologan.model import Gan, set_precision, uses_loss_scaling
    from bologan.step import WganGpStep

    model = ModelConfig(critic_widths=[16, 16], generator="relu", generator_widths=[8, 16])
    train = TrainConfig(batch_size=4, n_disc=2, seed=3, precision=precision)
    policy = set_precision(train)
    scaled = uses_loss_scaling(train)
    gan = Gan(model, train, loss_scale=scaled)
    before = [v.numpy().copy() for v in gan.critic.trainable_variables + gan.generator.trainable_variables]
    step = WganGpStep(gan, model, train, loss_scale=scaled).compile()
    rng = np.random.default_rng(0)
    n_vox = particle(model.particle).n_voxels
    out = step(tf.constant(rng.random((2, 4, n_vox), dtype=np.float32) / n_vox),
               tf.constant(rng.random((2, 4, 1), dtype=np.float32)))
    after = gan.critic.trainable_variables + gan.generator.trainable_variables
    return policy, gan, out, before, after


def test_fp16_trains_with_dynamic_loss_scaling(policy_restored):
    import tensorflow as tf

    policy, gan, out, before, after = _one_step("fp16")
    assert policy == "mixed_float16"
    assert isinstance(gan.d_opt, tf.keras.mixed_precision.LossScaleOptimizer)
    assert isinstance(gan.g_opt, tf.keras.mixed_precision.LossScaleOptimizer)
    assert gan.d_opt.dynamic
    assert gan.critic.get_layer("d_dense0").compute_dtype == "float16"
    assert all(v.dtype == tf.float32 for v in after)          # float32 master weights
    assert np.isfinite([float(out["d_loss"]), float(out["g_loss"])]).all()
    # Dynamic scaling at work: a step whose scaled gradients overflow float16 is skipped and the
    # scale halved (the critic's first step here, 2^15 x its gradient-penalty loss), a finite one
    # is applied and counted towards the next increase (the generator's).
    assert float(gan.g_opt.loss_scale) == 2.0 ** 15 and int(gan.g_opt.dynamic_counter) == 1
    d_scale, d_count = float(gan.d_opt.loss_scale), int(gan.d_opt.dynamic_counter)
    assert (d_scale, d_count) in ((2.0 ** 15, 2), (2.0 ** 14, 1), (2.0 ** 13, 0)), (d_scale, d_count)
    assert any(not np.array_equal(b, a.numpy()) for b, a in zip(before, after))


def test_bf16_trains_without_loss_scaling(policy_restored):
    import tensorflow as tf

    policy, gan, out, before, after = _one_step("bf16")
    assert policy == "mixed_bfloat16"
    assert not isinstance(gan.d_opt, tf.keras.mixed_precision.LossScaleOptimizer)
    assert gan.critic.get_layer("d_dense0").compute_dtype == "bfloat16"
    assert all(v.dtype == tf.float32 for v in after)
    assert np.isfinite([float(out["d_loss"]), float(out["g_loss"])]).all()
    assert any(not np.array_equal(b, a.numpy()) for b, a in zip(before, after))


def test_bench_times_fp16_with_the_loss_scaling_training_uses():
    res = run_module("bologan.bench", ["--precision", "fp16", "--batch-size", "4", "--iterations", "2",
                                       "--warmup", "1", "--json"], timeout=400)
    assert res.returncode == 0, res.stderr[-3000:]
    r = json.loads(res.stdout.strip().splitlines()[-1])
    assert (r["precision"], r["precision_policy"], r["loss_scaling"]) == ("fp16", "mixed_float16", True)


@pytest.mark.parametrize("argv", [["--precision", "mixed"], ["--precision", "half"]])
def test_an_unknown_precision_flag_is_one_line_exit_2(tmp_path, capsys, argv):
    msg = refused(capsys, tmp_path, scaling_run.main, ["--out", str(tmp_path / "run"), *argv])
    assert "bf16" in msg and "fp16" in msg, msg


def test_mixed_in_a_toml_config_is_refused_naming_the_new_values(tmp_path, capsys):
    cfg = tmp_path / "run.toml"
    cfg.write_text('[train]\nprecision = "mixed"\n')
    msg = refused(capsys, tmp_path, scaling_run.main, ["--config", str(cfg), "--out", str(tmp_path / "run")])
    assert "[train].precision: 'mixed' is no longer accepted" in msg and "write bf16 or fp16" in msg, msg


def test_a_stored_run_with_mixed_is_refused_on_resume(tmp_path, capsys):
    out = tmp_path / "run"
    saved_run(out)
    meta = json.loads((out / "run.json").read_text())
    meta["config"]["train"]["precision"] = "mixed"
    (out / "run.json").write_text(json.dumps(meta))
    msg = refused(capsys, tmp_path, scaling_run.main, ["--out", str(out), "--resume"])
    assert "'mixed' is no longer accepted" in msg and "bf16" in msg, msg


def test_a_training_directory_with_mixed_is_refused_in_one_line(tmp_path):
    from bologan.model import load_train_config
    from common.errors import UserError

    (tmp_path / "config.json").write_text(json.dumps({"train": {"precision": "mixed"}}))
    with pytest.raises(UserError, match="'mixed' is no longer accepted .*write bf16 or fp16"):
        load_train_config(tmp_path)
