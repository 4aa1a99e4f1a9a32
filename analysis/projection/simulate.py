"""Monte Carlo simulation of synchronous data-parallel BoloGAN iterations, to check the projection.

N ranks run iterations of n_disc critic steps and one generator step. Each step of each rank
computes for a time drawn from the measured step-time distribution (its share ``w_j`` of a
per-iteration draw), then enters the step's all-reduce; the all-reduce starts when the last
rank arrives and takes ``t(b, N)`` of ``analysis.projection.comm_model``; every rank leaves it together::

    t_iteration = sum over steps j of ( max over ranks of compute_{r,j} + t_allreduce_j )

With one draw per rank per iteration (``independent_steps=False``) the sum of the per-step
maxima is the maximum of the per-iteration times, so the mean iteration time is the closed
form of ``analysis.projection.projection``: E[max over N of step time] + communication. With independent
draws per step the expectation is the same (each step's maximum scales with its share); only
the spread between iterations changes. Where the closed form applies, the simulation must
reproduce it: exactly for constant compute times, within its Monte Carlo standard error for
sampled ones (``tests/test_analysis_projection.py``).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from analysis.projection.comm_model import CommModel, Network, as_comm_model
from analysis.projection.stragglers import StepTimeDistribution

_DRAWS_PER_CHUNK = 4_000_000


@dataclass(frozen=True)
class SimulationResult:
    """Per-iteration times of a simulated run, seconds."""
    n_ranks: int
    iterations: int
    mean_iteration_time_s: float
    stderr_iteration_time_s: float      # standard error of the mean over iterations
    mean_compute_s: float               # start of iteration to last arrival, summed over steps
    comm_s: float                       # all-reduces per iteration (deterministic)


def simulate(n_ranks: int, compute: StepTimeDistribution | float, comm: CommModel | Network,
             critic_bytes: float, generator_bytes: float, n_disc: int, iterations: int = 2000,
             seed: int = 0, step_weights: Sequence[float] | None = None,
             independent_steps: bool = False) -> SimulationResult:
    """Simulate ``iterations`` iterations on ``n_ranks`` ranks.

    ``compute``: per-iteration step time of one rank (a distribution, or a constant in s).
    ``step_weights``: share of the iteration's compute in each of the n_disc + 1 steps
    (default equal shares); they are normalised to sum to 1.
    """
    if n_ranks < 1 or iterations < 1 or n_disc < 0:
        raise ValueError("n_ranks >= 1, iterations >= 1 and n_disc >= 0 are needed")
    steps = n_disc + 1
    w = np.full(steps, 1.0 / steps) if step_weights is None else np.asarray(step_weights, float)
    if w.shape != (steps,) or np.any(w < 0) or not w.sum() > 0:
        raise ValueError(f"step_weights needs {steps} non-negative shares")
    w = w / w.sum()
    model = as_comm_model(comm)
    step_bytes = [critic_bytes] * n_disc + [generator_bytes]
    coll = np.array([model.allreduce_s(b, n_ranks) for b in step_bytes])

    rng = np.random.default_rng(seed)
    draws_per_rank = steps if independent_steps else 1
    chunk = max(1, _DRAWS_PER_CHUNK // (n_ranks * draws_per_rank))     # bounds memory at large N
    parts = []
    for start in range(0, iterations, chunk):
        shape = (min(chunk, iterations - start), n_ranks, draws_per_rank)
        if isinstance(compute, StepTimeDistribution):
            draws = compute.sample_s(rng, shape)
        else:
            draws = np.full(shape, float(compute))
        per_step = draws * w                      # (iterations, ranks, steps)
        parts.append(per_step.max(axis=1).sum(axis=1))   # each all-reduce waits for the slowest rank
    compute_s = np.concatenate(parts)
    t = compute_s + coll.sum()
    stderr = float(t.std(ddof=1) / math.sqrt(iterations)) if iterations > 1 else math.nan
    return SimulationResult(n_ranks, iterations, float(t.mean()), stderr, float(compute_s.mean()),
                            float(coll.sum()))
