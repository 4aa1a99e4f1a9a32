"""Trainable-parameter counts of the BoloGAN generator and critic: analysis's name for
``bologan.model_size``, which owns them (the all-reduce benchmark in scaling needs them too, and
scaling may not import analysis)."""
from __future__ import annotations

from bologan.model_size import BYTES_PER_PARAMETER, ModelSize, as_model_config, dense_params, model_size

__all__ = ["BYTES_PER_PARAMETER", "ModelSize", "as_model_config", "dense_params", "model_size"]
