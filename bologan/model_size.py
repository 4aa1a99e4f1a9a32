"""Trainable-parameter counts of the BoloGAN generator and critic, from the model config alone.

Used by the communication projection (analysis) and the all-reduce benchmark's training sizes
(scaling): every critic step all-reduces the critic's gradients and every generator step the
generator's, 4 bytes per trainable float32 parameter.

Layer shapes (dense layers, ``in * out`` weights + ``out`` biases each):

- generator: ``latent_dim + 1`` (noise + energy label) -> ``generator_widths`` -> ``n_voxels``;
  the ``bn_*`` variants add a BatchNormalization after every hidden layer, whose trainable
  parameters are gamma and beta (2 per hidden unit; the moving statistics are not trained and
  are not all-reduced).
- critic: ``n_voxels + 1`` (shower + label) -> ``critic_widths`` (empty = ``[n_voxels] * 3``)
  -> 1.

Pure Python: no TensorFlow, so analysis stays light (tests/test_bologan_core.py checks the counts
against the Keras models).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Mapping

from bologan.config import ModelConfig
from bologan.geometry import particle as lookup_particle
from common.settings import section_from_mapping

BYTES_PER_PARAMETER = 4
"""float32 gradients (mixed precision keeps float32 master weights and gradients)."""


@dataclass(frozen=True)
class ModelSize:
    """Trainable parameters of one BoloGAN model (counts) and their gradient sizes (bytes)."""
    particle: str
    n_voxels: int
    generator_params: int
    critic_params: int

    @property
    def total_params(self) -> int:
        return self.generator_params + self.critic_params

    @property
    def generator_grad_bytes(self) -> int:
        return self.generator_params * BYTES_PER_PARAMETER

    @property
    def critic_grad_bytes(self) -> int:
        return self.critic_params * BYTES_PER_PARAMETER


def dense_params(widths: list[int]) -> int:
    """Weights + biases of a chain of dense layers with the given layer widths (input first)."""
    return sum(a * b + b for a, b in zip(widths[:-1], widths[1:]))


def as_model_config(model: ModelConfig | Mapping[str, Any] | None) -> ModelConfig:
    """Accept a ``ModelConfig``, a run.json ``config["model"]`` table, or None (the defaults)."""
    if model is None:
        return ModelConfig()
    if isinstance(model, ModelConfig):
        return model
    # Keys this version does not know (a newer writer) do not change the layer sizes read here.
    known = {f.name for f in dataclasses.fields(ModelConfig)}
    return section_from_mapping(ModelConfig, {k: v for k, v in dict(model).items() if k in known},
                                "run.json: config.model")


def model_size(model: ModelConfig | Mapping[str, Any] | None = None,
               particle: str | None = None) -> ModelSize:
    """Parameter counts for ``model`` (``particle`` overrides the config's particle)."""
    cfg = as_model_config(model)
    name = particle or cfg.particle
    n_voxels = lookup_particle(name).n_voxels
    hidden = list(cfg.generator_widths)
    generator = dense_params([cfg.latent_dim + 1, *hidden, n_voxels])
    if cfg.generator.startswith("bn_"):
        generator += 2 * sum(hidden)  # trainable gamma and beta per normalised unit
    if cfg.generator == "bn_swish":
        generator += 2 * n_voxels  # BoloGAN's High12 also normalises the output layer
    critic_hidden = list(cfg.critic_widths) or [n_voxels] * 3
    critic = dense_params([n_voxels + 1, *critic_hidden, 1])
    return ModelSize(particle=name, n_voxels=n_voxels, generator_params=generator, critic_params=critic)
