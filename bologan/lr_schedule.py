"""Learning rate for large global batches: scaling rule and warm-up (Goyal et al., arXiv 1706.02677).

Data-parallel training with N replicas averages the gradients of N per-replica batches, so a
step sees a global batch N times a per-replica batch. The base learning rate (``[train]
learning_rate``) is the one tuned for the *reference batch*: the per-replica batch of a 1-rank
run of the same series (``ScalingConfig.per_replica_batch(1)``: the per-rank batch in weak
scaling, the global batch in strong scaling). With the batch ratio k = global batch / reference
batch the rules are

- ``none``:   lr = base (the default; BoloGAN's own setting)
- ``linear``: lr = k x base (Goyal et al.'s linear scaling rule)
- ``sqrt``:   lr = sqrt(k) x base (keeps the gradient-noise variance per step; often safer for Adam)

so in strong scaling k = 1 at every N and the rules change nothing, as they should: the global
batch is fixed. A warm-up of K iterations ramps the rate linearly from base at iteration 0 to
the scaled rate at iteration K (Goyal et al.'s gradual warm-up), after which it stays there:

    lr(t) = base x (1 + (s - 1) x min(t, K) / K),   s = the rule's factor, t the iteration (0-based)

An iteration is n_disc critic steps and one generator step; both optimisers follow the same
lr(t) during iteration t. No TensorFlow here: the Keras schedule that applies it lives in
``bologan.model``.
"""
from __future__ import annotations

import math

from common.vocab import LR_LINEAR, LR_NONE, LR_SCALINGS, LR_SQRT

__all__ = ["LR_LINEAR", "LR_NONE", "LR_SCALINGS", "LR_SQRT", "lr_scale_factor", "learning_rate",
           "warmup_learning_rate"]


def lr_scale_factor(rule: str, global_batch: int, reference_batch: int) -> float:
    """The rule's factor s for a batch ratio global_batch / reference_batch (showers per critic step)."""
    if rule not in LR_SCALINGS:
        raise ValueError(f"lr_scaling must be one of {', '.join(LR_SCALINGS)}, got {rule!r}")
    if global_batch < 1 or reference_batch < 1:
        raise ValueError(f"batches must be >= 1, got global {global_batch} and reference {reference_batch}")
    ratio = global_batch / reference_batch
    if rule == LR_LINEAR:
        return ratio
    if rule == LR_SQRT:
        return math.sqrt(ratio)
    return 1.0


def warmup_learning_rate(iteration: int, base_lr: float, scale: float, warmup_iterations: int = 0) -> float:
    """lr(t) for a scale factor already chosen (``lr_scale_factor``); see the module docstring."""
    if warmup_iterations < 0 or iteration < 0:
        raise ValueError("iteration and warmup_iterations must be >= 0")
    if warmup_iterations == 0:
        return base_lr * scale
    done = min(iteration, warmup_iterations) / warmup_iterations
    return base_lr * (1.0 + (scale - 1.0) * done)


def learning_rate(iteration: int, base_lr: float, global_batch: int, reference_batch: int,
                  rule: str = LR_NONE, warmup_iterations: int = 0) -> float:
    """The learning rate at ``iteration`` for ``rule`` and the batch ratio global / reference."""
    return warmup_learning_rate(iteration, base_lr, lr_scale_factor(rule, global_batch, reference_batch),
                                warmup_iterations)
