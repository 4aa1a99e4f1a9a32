"""One WGAN-GP iteration: ``n_disc`` critic steps, each on its own minibatch, then one
generator step. The same step runs on one replica or inside a data-parallel engine; the engine
only supplies a ``Replicas`` object (replica index, count, gradient reduction).

Loss (bologan.md): L_D = mean D(fake) - mean D(real) + lambda * mean((||grad_xhat D|| - 1)^2),
xhat = alpha * real + (1 - alpha) * fake, alpha ~ U(0, 1) per shower, gradient w.r.t. the
voxels only. L_G = -mean D(fake): the generator step needs D(fake) only, so unlike the original
code it does not recompute the critic loss and its gradient penalty.

The generator is called as the original calls it (``[model] generator_norm = "fixed_moments"``,
bologan.md "How BatchNorm behaves while training"): its BatchNorm layers in inference mode,
normalising by their initial moving statistics (0, 1), which never change, so each is a learned
scale and shift and a generated shower does not depend on the rest of its batch. Only
``batch_statistics`` calls it with ``training=True``.

Communication time is measured inside the graph: ``tf.timestamp`` after every gradient is
ready and again after the reduction, before anything may use the reduced gradients, so it
covers the all-reduce including the wait for the slowest replica, and no compute.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import tensorflow as tf

from bologan.config import ModelConfig, TrainConfig


def timed(reduce: Callable[[list[tf.Tensor]], list[tf.Tensor]],
          grads: list[tf.Tensor]) -> tuple[list[tf.Tensor], tf.Tensor]:
    """Run ``reduce(grads)`` between two in-graph timestamps: (reduced grads, seconds)."""
    with tf.control_dependencies(grads):
        t0 = tf.timestamp()
    with tf.control_dependencies([t0]):
        grads = [tf.identity(g) for g in grads]
    reduced = reduce(grads)
    with tf.control_dependencies(reduced):
        t1 = tf.timestamp()
    # Whatever uses the reduced gradients waits for t1. Otherwise the executor may run the
    # optimizer update and the next step's whole forward/backward pass before this timestamp
    # (both are ready at once when an asynchronous all-reduce finishes), and that compute
    # would be counted as communication.
    with tf.control_dependencies([t1]):
        reduced = [tf.identity(g) for g in reduced]
    return reduced, t1 - t0


class Replicas:
    """Single replica: plain gradients, no reduction. Engines subclass this."""

    def index(self) -> tf.Tensor | int:
        """This replica's index among all replicas (a tensor inside tf.distribute)."""
        return 0

    def count(self) -> int:
        return 1

    def reduce_mean(self, grads: list[tf.Tensor], group: str) -> list[tf.Tensor]:
        """Average gradients over replicas; ``group`` is 'critic' or 'generator'."""
        return grads

    def gradients(self, tape: tf.GradientTape, loss: tf.Tensor, variables: list[tf.Variable],
                  group: str) -> tuple[list[tf.Tensor], tf.Tensor]:
        """Replica-averaged gradients of ``loss`` and the seconds spent reducing them."""
        grads = tape.gradient(loss, variables)
        if self.count() == 1:
            return grads, tf.constant(0.0, tf.float64)
        return timed(lambda g: self.reduce_mean(g, group), grads)


@dataclass
class NoiseSpec:
    """Where the step's random numbers come from.

    ``global_noise`` draws the noise of the whole global batch on every replica from a
    stateless generator and keeps this replica's slice, so N replicas with batch b see exactly
    the numbers 1 replica with batch N*b sees (used to verify data parallelism; it costs a
    global-batch draw on every replica). Otherwise the draws come from the Gan's noise
    generator (seeded with ``train.seed``), keyed by the replica index so that replicas differ.
    """
    seed: int                     # of the global draw; the per-replica stream is the Gan's
    global_noise: bool = False


def gradient_penalty(critic: tf.keras.Model, real: tf.Tensor, fake: tf.Tensor, label: tf.Tensor,
                     alpha: tf.Tensor) -> tf.Tensor:
    """mean over showers of (||d critic / d xhat||_2 - 1)^2 at xhat = alpha*real + (1-alpha)*fake."""
    xhat = alpha * real + (1.0 - alpha) * fake
    with tf.GradientTape() as tape:
        tape.watch(xhat)
        score = critic([xhat, label], training=True)
    grad = tape.gradient(score, xhat)
    norm = tf.sqrt(tf.reduce_sum(tf.square(grad), axis=1) + 1e-12)
    return tf.reduce_mean(tf.square(norm - 1.0))


class WganGpStep:
    """Builds the compiled iteration for a ``bologan.model.Gan`` and a ``Replicas`` engine."""

    def __init__(self, gan, model: ModelConfig, train: TrainConfig, replicas: Replicas | None = None,
                 noise: NoiseSpec | None = None, loss_scale: bool = False):
        self.gan = gan
        self.model = model
        self.train = train
        self.replicas = replicas or Replicas()
        self.noise = noise or NoiseSpec(seed=train.seed)
        self.loss_scale = loss_scale

    def _draw(self, step: int, batch: int) -> tuple[tf.Tensor, tf.Tensor]:
        """(z (batch, latent), alpha (batch, 1)) for critic step ``step`` of this iteration."""
        m = self.model
        if not self.noise.global_noise:
            # Two seeds from the checkpointed generator, whose state advances alike on every
            # replica; the replica index keys them, so replicas draw different numbers (under
            # tf.distribute the generator also mixes in the replica id itself).
            seeds = tf.transpose(self.gan.noise.make_seeds(2))
            index = tf.cast(self.replicas.index(), tf.int32)
            z_seed = tf.random.experimental.stateless_fold_in(seeds[0], index)
            a_seed = tf.random.experimental.stateless_fold_in(seeds[1], index)
            z = tf.random.stateless_normal((batch, m.latent_dim), seed=z_seed, mean=m.latent_mean,
                                           stddev=m.latent_std)
            alpha = tf.random.stateless_uniform((batch, 1), seed=a_seed)
            return z, alpha
        n = self.replicas.count()
        seed = tf.stack([tf.constant(self.noise.seed, tf.int64), self.gan.iteration * 64 + step])
        z_all = tf.random.stateless_normal((n * batch, m.latent_dim), seed=seed,
                                           mean=m.latent_mean, stddev=m.latent_std)
        a_all = tf.random.stateless_uniform((n * batch, 1), seed=seed + tf.constant([0, 31], tf.int64))
        start = tf.cast(self.replicas.index(), tf.int32) * batch
        return z_all[start:start + batch], a_all[start:start + batch]

    # ---- the iteration ---------------------------------------------------------------------
    def replica_iteration(self, real: tf.Tensor, label: tf.Tensor) -> dict[str, tf.Tensor]:
        """One iteration on this replica. ``real``: (n_disc, b, n_voxels) voxel fractions;
        ``label``: (n_disc, b, 1). Returns d_loss, g_loss, gp (this replica's) and comm_s."""
        gan, t = self.gan, self.train
        gen, critic = gan.generator, gan.critic
        gen_training = self.model.generator_trains_batch_statistics
        batch = tf.shape(real)[1] if real.shape[1] is None else real.shape[1]
        comm = tf.constant(0.0, tf.float64)
        d_loss = gp = tf.constant(0.0)
        for k in range(t.n_disc):
            x, y = real[k], label[k]
            z, alpha = self._draw(k, batch)
            with tf.GradientTape() as tape:
                fake = gen([z, y], training=gen_training)
                # Real and fake in one critic call: the small dense layers are dispatch-bound,
                # and the critic has no batch statistics, so rows stay independent.
                scores = critic([tf.concat([x, fake], 0), tf.concat([y, y], 0)], training=True)
                d_real, d_fake = scores[:batch], scores[batch:]
                gp = gradient_penalty(critic, x, fake, y, alpha)
                d_loss = tf.reduce_mean(d_fake) - tf.reduce_mean(d_real) + t.gp_lambda * gp
                scaled = self._scale(gan.d_opt, d_loss)
            grads, dt = self.replicas.gradients(tape, scaled, critic.trainable_variables, "critic")
            grads = self._unscale(gan.d_opt, grads)
            comm += dt
            # Gradients are already averaged over replicas: tf.distribute must not sum them again.
            gan.d_opt.apply_gradients(zip(grads, critic.trainable_variables), skip_gradients_aggregation=True)
        z, _ = self._draw(t.n_disc, batch)
        y = label[t.n_disc - 1]
        with tf.GradientTape() as tape:
            fake = gen([z, y], training=gen_training)
            g_loss = -tf.reduce_mean(critic([fake, y], training=True))
            scaled = self._scale(gan.g_opt, g_loss)
        grads, dt = self.replicas.gradients(tape, scaled, gen.trainable_variables, "generator")
        grads = self._unscale(gan.g_opt, grads)
        comm += dt
        gan.g_opt.apply_gradients(zip(grads, gen.trainable_variables), skip_gradients_aggregation=True)
        return {"d_loss": tf.cast(d_loss, tf.float32), "g_loss": tf.cast(g_loss, tf.float32),
                "gp": tf.cast(gp, tf.float32), "comm_s": comm}

    def _scale(self, opt, loss):
        return opt.get_scaled_loss(loss) if self.loss_scale else loss

    def _unscale(self, opt, grads):
        return opt.get_unscaled_gradients(grads) if self.loss_scale else grads

    def compile(self, wrap: Callable | None = None, steps_per_call: int = 1) -> Callable:
        """The iteration as a tf.function. ``wrap(fn)`` lets an engine run ``fn`` per replica
        (tf.distribute's ``strategy.run``); the iteration counter advances once per iteration.

        ``steps_per_call`` K > 1: K iterations in one call, looped inside the graph, on K stacked
        batches (``real`` (K, n_disc, b, n_voxels), ``label`` (K, n_disc, b, 1)); every result
        is then a (K,) vector of per-iteration values, read back once. K = 1 is one iteration
        per call with scalar results."""
        if steps_per_call < 1:
            raise ValueError(f"steps_per_call must be >= 1, got {steps_per_call}")
        if steps_per_call > 1 and wrap is not None:
            # The loop carries plain tensors, not tf.distribute's per-replica results: engines
            # that wrap the step per replica run one iteration per call (scaling.config refuses).
            raise ValueError("steps_per_call > 1 needs an engine that does not wrap the step per replica")
        inner = wrap(self.replica_iteration) if wrap else self.replica_iteration

        def iteration(real, label):
            out = inner(real, label)
            self.gan.iteration.assign_add(1)
            return out

        if steps_per_call == 1:
            return tf.function(iteration, jit_compile=self.train.xla or None)
        return tf.function(self._in_graph_loop(iteration, steps_per_call), jit_compile=self.train.xla or None)

    @staticmethod
    def _in_graph_loop(iteration: Callable, k: int) -> Callable:
        """``iteration`` run ``k`` times in a ``tf.while_loop``, its results stacked on the
        device. Every iteration's variable reads follow the previous one's updates (TensorFlow
        orders a loop body's stateful operations), so the numbers are those of k calls."""
        dtypes = {"d_loss": tf.float32, "g_loss": tf.float32, "gp": tf.float32, "comm_s": tf.float64}

        def calls(real, label):
            acc = {key: tf.TensorArray(dtype, size=k, element_shape=()) for key, dtype in dtypes.items()}
            for i in tf.range(k):
                out = iteration(real[i], label[i])
                acc = {key: acc[key].write(i, out[key]) for key in dtypes}
            return {key: acc[key].stack() for key in dtypes}

        return calls
