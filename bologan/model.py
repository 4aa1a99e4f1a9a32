"""The conditional WGAN-GP networks (BoloGAN defaults) and checkpoint helpers.

Generator: concat(z, label) -> Dense widths (default 50/100/200) -> Dense(n_voxels), he_uniform
initialisation and zero bias. Variants:
- ``bn_swish``: BatchNorm + swish on every layer including the output (BoloGAN "High12"); the
  output can go slightly negative (swish >= -0.28).
- ``bn_relu``: BatchNorm + ReLU on hidden layers, ReLU output without BatchNorm.
- ``relu``: ReLU everywhere, no BatchNorm (BoloGAN "Pions").
The default follows the particle (``bologan.config.PARTICLE_GENERATOR``). How BatchNorm
normalises while training is ``[model] generator_norm`` (bologan.step).
Critic: concat(voxels, label) -> [Dense + ReLU] x 3 (default n_voxels wide) -> Dense(1), linear.
"""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import numpy as np
import tensorflow as tf

from bologan.config import BOLOGAN_SECTIONS, LOSS_SCALED_PRECISIONS, PRECISION_POLICIES, ModelConfig, TrainConfig
from common.errors import UserError
from bologan.geometry import particle as lookup_particle
from bologan.labels import denormalise_voxels, energy_label
from common.settings import section_from_mapping
from common.vocab import CHECKPOINT_PREFIX, CHECKPOINT_SUBDIR, TRAIN_CONFIG_FILE


def critic_widths(cfg: ModelConfig) -> list[int]:
    n_vox = lookup_particle(cfg.particle).n_voxels
    return list(cfg.critic_widths) or [n_vox] * 3


def build_generator(cfg: ModelConfig) -> tf.keras.Model:
    """Generator model: inputs ``[z (B, latent_dim), label (B, 1)]`` -> voxel fractions (B, n_voxels)."""
    n_vox = lookup_particle(cfg.particle).n_voxels
    z = tf.keras.Input(shape=(cfg.latent_dim,), name="z")
    label = tf.keras.Input(shape=(1,), name="label")
    x = tf.keras.layers.Concatenate(name="g_concat")([z, label])
    use_bn = cfg.generator.startswith("bn_")
    act = "swish" if cfg.generator == "bn_swish" else "relu"
    dense = dict(kernel_initializer="he_uniform", bias_initializer="zeros")
    for i, width in enumerate(cfg.generator_widths):
        x = tf.keras.layers.Dense(width, name=f"g_dense{i}", **dense)(x)
        if use_bn:
            x = tf.keras.layers.BatchNormalization(name=f"g_bn{i}")(x)
        x = tf.keras.layers.Activation(act, name=f"g_act{i}")(x)
    x = tf.keras.layers.Dense(n_vox, name="g_out", **dense)(x)
    if cfg.generator == "bn_swish":
        x = tf.keras.layers.BatchNormalization(name="g_bn_out")(x)
        out_act = "swish"
    else:
        out_act = "relu"
    # float32 output under mixed precision: losses and the penalty stay in full precision.
    out = tf.keras.layers.Activation(out_act, dtype="float32", name="g_out_act")(x)
    return tf.keras.Model([z, label], out, name="generator")


def build_critic(cfg: ModelConfig) -> tf.keras.Model:
    """Critic model: inputs ``[voxels (B, n_voxels), label (B, 1)]`` -> score (B, 1), linear."""
    n_vox = lookup_particle(cfg.particle).n_voxels
    vox = tf.keras.Input(shape=(n_vox,), name="voxels")
    label = tf.keras.Input(shape=(1,), name="label")
    x = tf.keras.layers.Concatenate(name="d_concat")([vox, label])
    for i, width in enumerate(critic_widths(cfg)):
        x = tf.keras.layers.Dense(width, activation="relu", kernel_initializer="he_uniform",
                                  bias_initializer="zeros", name=f"d_dense{i}")(x)
    out = tf.keras.layers.Dense(1, dtype="float32", name="d_out")(x)
    return tf.keras.Model([vox, label], out, name="critic")


class WarmupLearningRate(tf.keras.optimizers.schedules.LearningRateSchedule):
    """``bologan.lr_schedule.warmup_learning_rate`` as a Keras schedule of optimiser steps.

    The critic's optimiser takes n_disc steps per iteration and the generator's one, so step s
    belongs to iteration s // ``steps_per_iteration``; both then follow the same lr(iteration).
    The step count is optimiser state, checkpointed and broadcast with it, so a resumed run
    continues the ramp where it stopped.
    """

    def __init__(self, base_lr: float, scale: float, warmup_iterations: int, steps_per_iteration: int = 1):
        super().__init__()
        self.base_lr, self.scale = float(base_lr), float(scale)
        self.warmup_iterations, self.steps_per_iteration = int(warmup_iterations), int(steps_per_iteration)

    def __call__(self, step):
        iteration = tf.cast(tf.math.floordiv(step, self.steps_per_iteration), tf.float32)
        done = tf.minimum(iteration, float(self.warmup_iterations)) / float(self.warmup_iterations)
        return self.base_lr * (1.0 + (self.scale - 1.0) * done)

    def get_config(self) -> dict[str, Any]:
        return {"base_lr": self.base_lr, "scale": self.scale, "warmup_iterations": self.warmup_iterations,
                "steps_per_iteration": self.steps_per_iteration}


def build_optimizer(train: TrainConfig, lr_scale: float = 1.0,
                    steps_per_iteration: int = 1) -> tf.keras.optimizers.Optimizer:
    """Adam at ``learning_rate x lr_scale`` (``bologan.lr_schedule.lr_scale_factor``), reached
    through a linear warm-up of ``train.lr_warmup_iterations`` iterations when there is one;
    ``steps_per_iteration``: this optimiser's steps per iteration (n_disc for the critic)."""
    rate: Any = train.learning_rate * lr_scale
    if train.lr_warmup_iterations > 0 and lr_scale != 1.0:
        rate = WarmupLearningRate(train.learning_rate, lr_scale, train.lr_warmup_iterations, steps_per_iteration)
    return tf.keras.optimizers.Adam(learning_rate=rate, beta_1=train.beta1, beta_2=train.beta2)


def set_precision(train: TrainConfig) -> str:
    """Set the Keras dtype policy of ``train.precision`` (bologan.config.PRECISION_POLICIES);
    returns the policy's name. Weights stay float32 under every policy."""
    name = PRECISION_POLICIES[train.precision]
    tf.keras.mixed_precision.set_global_policy(name)
    return name


def uses_loss_scaling(train: TrainConfig) -> bool:
    """Whether ``train.precision`` trains with dynamic loss scaling (fp16)."""
    return train.precision in LOSS_SCALED_PRECISIONS


class Gan(tf.Module):
    """Generator, critic, both optimisers, the iteration counter and the noise generator (the
    z/alpha stream of bologan.step): everything a checkpoint holds, so that a resumed training
    continues exactly where it stopped.

    The noise generator's state is the same on every replica (one seed, the same draws each
    iteration); replicas differ because each keys its draws with its replica index. So one
    replica's checkpoint restores every replica's stream.
    """

    def __init__(self, model: ModelConfig, train: TrainConfig, lr_scale: float = 1.0,
                 loss_scale: bool = False):
        super().__init__(name="gan")
        self.model_cfg = model
        self.generator = build_generator(model)
        self.critic = build_critic(model)
        self.g_opt = build_optimizer(train, lr_scale, steps_per_iteration=1)
        self.d_opt = build_optimizer(train, lr_scale, steps_per_iteration=train.n_disc)
        if loss_scale:  # float16 gradients underflow without dynamic loss scaling
            self.g_opt = tf.keras.mixed_precision.LossScaleOptimizer(self.g_opt)
            self.d_opt = tf.keras.mixed_precision.LossScaleOptimizer(self.d_opt)
        # Slots exist before the first step so they can be broadcast and checkpointed up front.
        self.g_opt.build(self.generator.trainable_variables)
        self.d_opt.build(self.critic.trainable_variables)
        self.iteration = tf.Variable(0, dtype=tf.int64, trainable=False, name="iteration")
        # Created here (under an engine's scope, outside replica context, which tf.distribute requires).
        self.noise = tf.random.Generator.from_seed(train.seed)

    def checkpoint(self) -> tf.train.Checkpoint:
        return tf.train.Checkpoint(generator=self.generator, critic=self.critic, g_opt=self.g_opt,
                                   d_opt=self.d_opt, iteration=self.iteration, noise=self.noise)

    def all_variables(self) -> list[tf.Variable]:
        """Every variable a checkpoint holds (what an engine broadcasts from rank 0)."""
        return (list(self.generator.variables) + list(self.critic.variables)
                + list(self.g_opt.variables) + list(self.d_opt.variables) + [self.iteration, self.noise.state])


def checkpoint_manager(gan: Gan, directory: str | Path, keep: int) -> tf.train.CheckpointManager:
    """Checkpoints named ``ckpt-<iteration>``; ``keep`` = 0 keeps every one (best-iteration search)."""
    return tf.train.CheckpointManager(gan.checkpoint(), str(Path(directory) / CHECKPOINT_SUBDIR),
                                      max_to_keep=keep or None, checkpoint_name=CHECKPOINT_PREFIX)


def list_checkpoints(train_dir: str | Path) -> list[int]:
    """Iterations that have a complete checkpoint under ``train_dir/checkpoints``, ascending."""
    ckdir = Path(train_dir) / CHECKPOINT_SUBDIR
    its = []
    for index in ckdir.glob(f"{CHECKPOINT_PREFIX}-*.index"):
        try:
            its.append(int(index.name[len(CHECKPOINT_PREFIX) + 1:-len(".index")]))
        except ValueError:
            continue
    return sorted(its)


def save_train_config(train_dir: str | Path, tables: dict[str, dict[str, Any]]) -> None:
    from common.atomic import atomic_write_json

    atomic_write_json(Path(train_dir) / TRAIN_CONFIG_FILE, tables)


def load_train_config(train_dir: str | Path, quiet: bool = False) -> dict[str, Any]:
    """The resolved sections ({"model": ModelConfig, "train": ..., "data": ...}) of a training
    directory: a ``bologan.train`` one, a ``scaling.run`` one or an ensemble member's
    (``bologan.trained_config``). A run older than a setting whose default changed is read as it
    trained, and said in one line on stderr unless ``quiet``."""
    from bologan.trained_config import read_stored_config

    stored = read_stored_config(train_dir)
    if stored.note() and not quiet:
        print(f"note: {stored.note()}", file=sys.stderr, flush=True)
    return {name: section_from_mapping(cls, stored.tables.get(name, {}), f"{stored.path}: [{name}]")
            for name, cls in BOLOGAN_SECTIONS.items()}


def restore_generator(train_dir: str | Path, iteration: int) -> tf.keras.Model:
    """Generator weights of checkpoint ``ckpt-<iteration>`` (optimisers are not restored)."""
    cfg = load_train_config(train_dir, quiet=True)
    prefix = Path(train_dir) / CHECKPOINT_SUBDIR / f"{CHECKPOINT_PREFIX}-{iteration}"
    if not Path(str(prefix) + ".index").exists():
        raise UserError(f"{prefix}: no such checkpoint")
    generator = build_generator(cfg["model"])
    tf.train.Checkpoint(generator=generator).restore(str(prefix)).expect_partial()
    return generator


def sample_showers(generator: tf.keras.Model, model_cfg: ModelConfig, label_kind: str,
                   momentum_mev: np.ndarray, seed: int, batch_size: int = 4096) -> np.ndarray:
    """Generate one shower per entry of ``momentum_mev``; returns (N, n_voxels) float32 in MeV."""
    part = lookup_particle(model_cfg.particle)
    momentum_mev = np.asarray(momentum_mev, dtype=np.float64)
    labels = energy_label(part, momentum_mev, label_kind)
    rng = tf.random.Generator.from_seed(seed)
    out = np.empty((len(momentum_mev), part.n_voxels), dtype=np.float32)
    for start in range(0, len(momentum_mev), batch_size):
        stop = min(start + batch_size, len(momentum_mev))
        z = rng.normal((stop - start, model_cfg.latent_dim), model_cfg.latent_mean, model_cfg.latent_std)
        out[start:stop] = generator([z, labels[start:stop]], training=False).numpy()
    return denormalise_voxels(part, momentum_mev, out)
