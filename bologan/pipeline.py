"""Showers -> per-iteration training batches -> tf.data.

Every pass over the data is a fresh permutation drawn from (seed, pass), identical on every
rank. An iteration consumes ``n_disc x global_batch`` showers of that permutation; replica r of
R takes the r-th slice of each critic step's global batch. So the R replicas read disjoint
shards of every pass, and R replicas with batch b see exactly the showers one replica with
batch R*b sees (the basis of the data-parallel equivalence tests). Incomplete global batches
at the end of a pass are dropped.
"""
from __future__ import annotations

from typing import Iterator

import numpy as np

from bologan.config import DataConfig
from common.errors import UserError
from bologan.labels import energy_label, normalise_voxels


class IterationBatches:
    """Training batches of one replica: ``(real (n_disc, b, n_voxels), label (n_disc, b, 1))``."""

    def __init__(self, showers, data: DataConfig, n_disc: int, batch_per_replica: int, seed: int):
        self.particle = showers.particle
        self.x = normalise_voxels(showers.particle, showers.momentum_mev, showers.voxels_mev)
        self.y = energy_label(showers.particle, showers.momentum_mev, data.label)
        self.n_disc = n_disc
        self.batch = batch_per_replica
        self.seed = seed
        self.prefetch = data.prefetch
        self.rank, self.size = 0, 1
        self._check()

    def shard(self, rank: int, size: int) -> "IterationBatches":
        """Read only replica ``rank`` of ``size``'s slice of every global batch."""
        if not 0 <= rank < size:
            raise ValueError(f"rank {rank} outside 0..{size - 1}")
        self.rank, self.size = rank, size
        self._check()
        return self

    @property
    def showers_per_iteration(self) -> int:
        """Showers this replica consumes per iteration."""
        return self.n_disc * self.batch

    @property
    def iterations_per_pass(self) -> int:
        return len(self.x) // (self.n_disc * self.batch * self.size)

    def _check(self) -> None:
        need = self.n_disc * self.batch * self.size
        if len(self.x) < need:
            raise UserError(f"dataset has {len(self.x)} showers but one iteration needs {need} "
                            f"(n_disc {self.n_disc} x batch {self.batch} x {self.size} replicas)")

    def batches(self, start_iteration: int = 0) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Endless batches from ``start_iteration`` on (resuming continues the same order)."""
        it = start_iteration
        perm_pass, perm = -1, None
        per_pass = self.iterations_per_pass
        g = self.n_disc * self.batch * self.size
        while True:
            pass_no, j = divmod(it, per_pass)
            if pass_no != perm_pass:  # one permutation per pass, not per iteration
                perm = np.random.default_rng([self.seed, pass_no]).permutation(len(self.x))
                perm_pass = pass_no
            idx = perm[j * g:(j + 1) * g].reshape(self.n_disc, self.size, self.batch)[:, self.rank, :]
            yield self.x[idx], self.y[idx]
            it += 1

    def dataset(self, start_iteration: int = 0, steps_per_call: int = 1):
        """The batches as a prefetching ``tf.data.Dataset``; ``steps_per_call`` K > 1 stacks K
        iterations' batches into one element (K, n_disc, b, ...) for a K-iteration step call."""
        import tensorflow as tf

        n_vox = self.x.shape[1]
        sig = (tf.TensorSpec((self.n_disc, self.batch, n_vox), tf.float32),
               tf.TensorSpec((self.n_disc, self.batch, 1), tf.float32))
        ds = tf.data.Dataset.from_generator(lambda: self.batches(start_iteration), output_signature=sig)
        prefetch = self.prefetch
        if steps_per_call > 1:
            ds = ds.batch(steps_per_call, drop_remainder=True)   # endless: only fixes the shape
            prefetch = -(-prefetch // steps_per_call)            # about as many iterations ahead
        return ds.prefetch(prefetch) if prefetch else ds


# The held-out split draws from its own stream of (seed, HOLDOUT_STREAM), apart from the
# per-pass training permutations (seed, pass), so holding out never reorders training passes
# by accident of sharing a draw.
HOLDOUT_STREAM = 0x4E1D


def split_holdout(showers, fraction: float, seed: int):
    """(training showers, held-out showers): ``fraction`` of the showers of every momentum,
    chosen from ``seed`` alone, so every rank makes the same split and no held-out shower is
    ever trained on. Each momentum with at least two showers keeps one or more on each side."""
    from bologan.dataio import Showers

    if not 0.0 < fraction < 1.0:
        raise ValueError(f"holdout fraction must be in (0, 1), got {fraction!r}")
    rng = np.random.default_rng([seed, HOLDOUT_STREAM])
    held = np.zeros(len(showers), dtype=bool)
    momenta = np.asarray(showers.momentum_mev)
    for p in np.unique(momenta):
        rows = np.flatnonzero(momenta == p)
        if rows.size < 2:
            continue
        k = min(rows.size - 1, max(1, int(round(fraction * rows.size))))
        held[rng.permutation(rows)[:k]] = True

    def part(mask: np.ndarray, what: str) -> Showers:
        return Showers(particle=showers.particle, momentum_mev=showers.momentum_mev[mask],
                       voxels_mev=showers.voxels_mev[mask], source=f"{showers.source} ({what})")

    return part(~held, "training part"), part(held, f"held-out {fraction:g} per momentum")


def load_showers(data: DataConfig, particle: str, seed: int):
    """The training showers: the Parquet file in ``data.data``, else synthetic ones; only the
    momenta in ``data.momenta`` (synthetic: ``synthetic_events`` showers over the dataset-1
    momenta in that range)."""
    from bologan.momenta import parse_momentum_range, restrict

    momenta = parse_momentum_range(data.momenta)
    if data.data:
        from bologan.dataio import read_showers

        try:
            return restrict(read_showers(data.data, particle), momenta, data.data)
        except ValueError as exc:
            raise UserError(f"--momenta {data.momenta}: {exc}") from None
    from bologan.geometry import MOMENTA_MEV
    from bologan.synthetic import generate_showers

    grid = None
    if momenta is not None:
        grid = momenta.select(MOMENTA_MEV)
        if not grid:
            raise UserError(f"--momenta {data.momenta}: holds none of the dataset-1 momenta "
                            f"{MOMENTA_MEV[0]:g}..{MOMENTA_MEV[-1]:g} MeV to synthesise")
    return generate_showers(particle, data.synthetic_events, seed, grid)
