"""Learning-rate scaling and warm-up: the arithmetic, the Keras schedule that applies it, and the
settings (a [train] key, so in the workload hash and run.json)."""
from __future__ import annotations

import math

import pytest

from bologan.lr_schedule import learning_rate, lr_scale_factor, warmup_learning_rate


@pytest.mark.parametrize("rule, global_batch, reference, factor", [
    ("none", 512, 128, 1.0),
    ("linear", 512, 128, 4.0),         # weak scaling, 4 ranks of 128: k = 4
    ("sqrt", 512, 128, 2.0),
    ("linear", 256, 256, 1.0),         # strong scaling: the global batch is the 1-rank batch at every N
    ("sqrt", 256, 128, math.sqrt(2.0)),
])
def test_scale_factor(rule, global_batch, reference, factor):
    assert lr_scale_factor(rule, global_batch, reference) == pytest.approx(factor)


def test_warmup_ramps_linearly_from_base_to_scaled_rate_then_holds():
    # base 1e-4, factor 4, K = 10: lr(t) = 1e-4 (1 + 3 t / 10)
    assert warmup_learning_rate(0, 1e-4, 4.0, 10) == pytest.approx(1e-4)
    assert warmup_learning_rate(5, 1e-4, 4.0, 10) == pytest.approx(2.5e-4)
    assert warmup_learning_rate(10, 1e-4, 4.0, 10) == pytest.approx(4e-4)
    assert warmup_learning_rate(1000, 1e-4, 4.0, 10) == pytest.approx(4e-4)
    assert warmup_learning_rate(3, 1e-4, 4.0, 0) == pytest.approx(4e-4)       # no warm-up: scaled at once
    assert learning_rate(5, 1e-4, 512, 128, "sqrt", 10) == pytest.approx(1.5e-4)   # 1e-4 (1 + 1 x 5/10)
    assert learning_rate(5, 1e-4, 512, 128, "none", 10) == pytest.approx(1e-4)


@pytest.mark.parametrize("call", [
    lambda: lr_scale_factor("cubic", 2, 1),
    lambda: lr_scale_factor("linear", 0, 1),
    lambda: warmup_learning_rate(-1, 1e-4, 2.0, 5),
    lambda: warmup_learning_rate(1, 1e-4, 2.0, -5),
])
def test_bad_arguments(call):
    with pytest.raises(ValueError):
        call()


def test_keras_schedule_follows_the_arithmetic_per_iteration():
    import tensorflow as tf

    from bologan.config import ModelConfig, TrainConfig
    from bologan.model import Gan

    def rate_used_at(opt, variables, step: int) -> float:
        # Keras evaluates the schedule when it applies gradients, at the step count before it
        opt.iterations.assign(step)
        opt.apply_gradients([(tf.zeros_like(v), v) for v in variables])
        return float(opt.learning_rate)

    train = TrainConfig(n_disc=5, learning_rate=1e-4, lr_warmup_iterations=10)
    gan = Gan(ModelConfig(generator_widths=[4], critic_widths=[4]), train, lr_scale=4.0)
    critic, generator = gan.critic.trainable_variables, gan.generator.trainable_variables
    for it in (0, 3, 10, 50):
        expected = warmup_learning_rate(it, 1e-4, 4.0, 10)
        for step in range(5):   # the n_disc critic steps of iteration `it` share its rate
            assert rate_used_at(gan.d_opt, critic, 5 * it + step) == pytest.approx(expected, rel=1e-6)
        assert rate_used_at(gan.g_opt, generator, it) == pytest.approx(expected, rel=1e-6)
    plain = Gan(ModelConfig(generator_widths=[4], critic_widths=[4]), TrainConfig(learning_rate=1e-4), lr_scale=2.0)
    assert float(plain.d_opt.learning_rate) == pytest.approx(2e-4)
    assert not isinstance(plain.d_opt._learning_rate, tf.keras.optimizers.schedules.LearningRateSchedule)


def test_lr_settings_are_train_keys_in_the_workload_hash_and_scaling_run_flags():
    from common.settings import resolve_sections
    from scaling import run as scaling_run

    base = scaling_run.workload_hash(resolve_sections(scaling_run.SECTIONS, None))
    args = scaling_run.parse_args(["--lr-scaling", "sqrt", "--lr-warmup-iterations", "100"])
    cfg = resolve_sections(scaling_run.SECTIONS, None, args)
    assert (cfg["train"].lr_scaling, cfg["train"].lr_warmup_iterations) == ("sqrt", 100)
    assert scaling_run.workload_hash(cfg) != base
    warm_only = resolve_sections(scaling_run.SECTIONS, None, scaling_run.parse_args(["--lr-warmup-iterations", "5"]))
    assert scaling_run.workload_hash(warm_only) not in (base, scaling_run.workload_hash(cfg))


@pytest.mark.parametrize("argv, says", [
    (["--lr-scaling", "cubic"], "--lr-scaling"),
    (["--lr-warmup-iterations", "-3"], "lr-warmup-iterations"),
])
def test_bad_lr_flags_are_user_errors(argv, says):
    from common.errors import UserError
    from common.settings import resolve_sections
    from scaling import run as scaling_run

    with pytest.raises(UserError, match=says):
        resolve_sections(scaling_run.SECTIONS, None, scaling_run.parse_args(argv))


# Keys whose default changed when they were added: hashed at the new default, hidden at the
# value older runs trained with (bologan.config).
CHANGED_DEFAULTS = {"model.generator_norm"}


def test_hash_neutral_values_are_the_defaults():
    # A key is left out of the hash only at the value that reproduces older runs: its default,
    # unless the default changed with the key.
    from bologan.config import BOLOGAN_SECTIONS, HASHED_UNLESS_DEFAULT

    for key, value in HASHED_UNLESS_DEFAULT.items():
        section, name = key.split(".")
        default = getattr(BOLOGAN_SECTIONS[section](), name)
        assert (default != value) == (key in CHANGED_DEFAULTS), key
