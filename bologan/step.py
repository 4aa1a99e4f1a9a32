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

Communication time is measured inside the graph: ``tf.timestamp`` once every gradient's value
exists and again once every reduced gradient's value exists, before anything may use the
reduced gradients, so it covers the all-reduce including the wait for the slowest replica.
"Exists" is enforced by ``host_fence``: on a GPU an op counts as done when its kernel is
queued, so a timestamp ordered after the gradients by a control dependency alone would fire
before the backward pass has run (docs/scaling.md, "How comm_s waits for the GPU").

With ``train.xla`` the per-replica computation (forward, backward, gradient penalty, and the
optimizer update where no strategy wraps the step) is compiled with XLA, and the reduction and
its timestamps stay outside: neither Horovod's all-reduce nor ``tf.timestamp`` has an XLA kernel.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import tensorflow as tf

from bologan.config import ModelConfig, TrainConfig


def host_fence(values: list[tf.Tensor]) -> tf.Tensor:
    """A float64 scalar computed on the host from one element of every tensor in ``values``.

    TensorFlow's GPU kernels are asynchronous (an op is done once its kernel is queued on the
    device's stream), but a host op that consumes a device tensor gets it through a
    device-to-host copy that completes only after every kernel queued before it on that stream
    (and, for Horovod's asynchronous completion, after the stream waited for the collective's
    event). Host kernels run synchronously, so once this op has run, every value exists. One
    element per tensor keeps the copy to a few bytes. On a CPU it costs a few tiny ops.
    """
    probes = [tf.cast(tf.reshape(v, [-1])[:1], tf.float64) for v in values]
    with tf.device("/CPU:0"):
        return tf.reduce_sum(tf.concat(probes, 0), name="host_fence")


def timed(reduce: Callable[[list[tf.Tensor]], list[tf.Tensor]],
          grads: list[tf.Tensor], fence: bool = True) -> tuple[list[tf.Tensor], tf.Tensor]:
    """Run ``reduce(grads)`` between two in-graph timestamps: (reduced grads, seconds).

    ``fence=False`` orders the timestamps by control dependencies only: right on a CPU, wrong
    on a GPU (it exists to measure what the fence costs: tools/ab_comm_timing.py)."""
    # tf.timestamp takes no inputs: it waits for a host op whose inputs are the values.
    with tf.control_dependencies([host_fence(grads)] if fence else grads):
        t0 = tf.timestamp()
    with tf.control_dependencies([t0]):
        grads = [tf.identity(g) for g in grads]
    reduced = reduce(grads)
    with tf.control_dependencies([host_fence(reduced)] if fence else reduced):
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

    comm_fence = True   # timestamps wait for the values (host_fence); False only to measure its cost

    def index(self) -> tf.Tensor | int:
        """This replica's index among all replicas (a tensor inside tf.distribute)."""
        return 0

    def count(self) -> int:
        return 1

    def has_collectives(self) -> bool:
        """Whether ``reduce`` runs a collective (which XLA cannot compile)."""
        return self.count() > 1

    def reduce_mean(self, grads: list[tf.Tensor], group: str) -> list[tf.Tensor]:
        """Average gradients over replicas; ``group`` is 'critic' or 'generator'."""
        return grads

    def reduce(self, grads: list[tf.Tensor], variables: list[tf.Variable],
               group: str) -> tuple[list[tf.Tensor], tf.Tensor]:
        """Replica-averaged ``grads`` (of ``variables``) and the seconds spent reducing them."""
        if self.count() == 1:
            return grads, tf.constant(0.0, tf.float64)
        return timed(lambda g: self.reduce_mean(g, group), grads, self.comm_fence)

    def gradients(self, tape: tf.GradientTape, loss: tf.Tensor, variables: list[tf.Variable],
                  group: str) -> tuple[list[tf.Tensor], tf.Tensor]:
        """Replica-averaged gradients of ``loss`` and the seconds spent reducing them."""
        return self.reduce(tape.gradient(loss, variables), variables, group)


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
        self._compiled = self._pieces(False, False)   # compile() decides what XLA compiles

    def _draw(self, step: int, batch: int, offset: int = 0) -> tuple[tf.Tensor, tf.Tensor]:
        """(z (batch, latent), alpha (batch, 1)) for critic step ``step`` of this iteration
        (``offset`` iterations after the counter: the iterations one per-replica call runs)."""
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
        seed = tf.stack([tf.constant(self.noise.seed, tf.int64), (self.gan.iteration + offset) * 64 + step])
        z_all = tf.random.stateless_normal((n * batch, m.latent_dim), seed=seed,
                                           mean=m.latent_mean, stddev=m.latent_std)
        a_all = tf.random.stateless_uniform((n * batch, 1), seed=seed + tf.constant([0, 31], tf.int64))
        start = tf.cast(self.replicas.index(), tf.int32) * batch
        return z_all[start:start + batch], a_all[start:start + batch]

    # ---- the per-replica computation (what XLA compiles) -----------------------------------
    def _critic_grads(self, x: tf.Tensor, y: tf.Tensor, z: tf.Tensor, alpha: tf.Tensor):
        """One critic step's forward and backward pass on this replica: (gradients of the
        (scaled) loss, d_loss, gp)."""
        gan, t = self.gan, self.train
        batch = tf.shape(x)[0] if x.shape[0] is None else x.shape[0]
        with tf.GradientTape() as tape:
            fake = gan.generator([z, y], training=self.model.generator_trains_batch_statistics)
            # Real and fake in one critic call: the small dense layers are dispatch-bound,
            # and the critic has no batch statistics, so rows stay independent.
            scores = gan.critic([tf.concat([x, fake], 0), tf.concat([y, y], 0)], training=True)
            d_real, d_fake = scores[:batch], scores[batch:]
            gp = gradient_penalty(gan.critic, x, fake, y, alpha)
            d_loss = tf.reduce_mean(d_fake) - tf.reduce_mean(d_real) + t.gp_lambda * gp
            scaled = self._scale(gan.d_opt, d_loss)
        return tape.gradient(scaled, gan.critic.trainable_variables), d_loss, gp

    def _generator_grads(self, z: tf.Tensor, y: tf.Tensor):
        """The generator step's forward and backward pass: (gradients of the (scaled) loss, g_loss)."""
        gan = self.gan
        with tf.GradientTape() as tape:
            fake = gan.generator([z, y], training=self.model.generator_trains_batch_statistics)
            g_loss = -tf.reduce_mean(gan.critic([fake, y], training=True))
            scaled = self._scale(gan.g_opt, g_loss)
        return tape.gradient(scaled, gan.generator.trainable_variables), g_loss

    def _apply(self, opt, grads: list[tf.Tensor], variables: list[tf.Variable]) -> None:
        # Gradients are already averaged over replicas: tf.distribute must not sum them again.
        opt.apply_gradients(zip(self._unscale(opt, grads), variables), skip_gradients_aggregation=True)

    def _pieces(self, xla: bool, apply_in_xla: bool) -> tuple[Callable, Callable, Callable]:
        """(critic grads, generator grads, apply): compiled with XLA when ``xla``; the update
        only when ``apply_in_xla`` (not under tf.distribute, whose update is a cross-replica call)."""
        if not xla:
            return self._critic_grads, self._generator_grads, self._apply
        apply = tf.function(self._apply, jit_compile=True) if apply_in_xla else self._apply
        return (tf.function(self._critic_grads, jit_compile=True),
                tf.function(self._generator_grads, jit_compile=True), apply)

    # ---- the iteration ---------------------------------------------------------------------
    def replica_iteration(self, real: tf.Tensor, label: tf.Tensor, offset: int = 0) -> dict[str, tf.Tensor]:
        """One iteration on this replica. ``real``: (n_disc, b, n_voxels) voxel fractions;
        ``label``: (n_disc, b, 1). Returns d_loss, g_loss, gp (this replica's) and comm_s."""
        gan, t = self.gan, self.train
        critic_grads, generator_grads, apply = self._compiled
        batch = tf.shape(real)[1] if real.shape[1] is None else real.shape[1]
        comm = tf.constant(0.0, tf.float64)
        d_loss = gp = tf.constant(0.0)
        for k in range(t.n_disc):
            z, alpha = self._draw(k, batch, offset)
            grads, d_loss, gp = critic_grads(real[k], label[k], z, alpha)
            variables = gan.critic.trainable_variables
            grads, dt = self.replicas.reduce(list(grads), variables, "critic")
            comm += dt
            apply(gan.d_opt, grads, variables)
        z, _ = self._draw(t.n_disc, batch, offset)
        grads, g_loss = generator_grads(z, label[t.n_disc - 1])
        variables = gan.generator.trainable_variables
        grads, dt = self.replicas.reduce(list(grads), variables, "generator")
        comm += dt
        apply(gan.g_opt, grads, variables)
        return {"d_loss": tf.cast(d_loss, tf.float32), "g_loss": tf.cast(g_loss, tf.float32),
                "gp": tf.cast(gp, tf.float32), "comm_s": comm}

    def _scale(self, opt, loss):
        return opt.get_scaled_loss(loss) if self.loss_scale else loss

    def _unscale(self, opt, grads):
        return opt.get_unscaled_gradients(grads) if self.loss_scale else grads

    def _timed_iteration(self, body: Callable) -> Callable:
        """``body`` (one replica iteration) between two timestamps; adds ``step_s``, the
        seconds from the iteration's start until its losses and generator update exist."""

        def timed_body(real, label, offset=0):
            t_start = tf.timestamp()
            with tf.control_dependencies([t_start]):
                real, label = tf.identity(real), tf.identity(label)
            out = body(real, label, offset)
            # The last generator variable, read after the update (ordered by its resource): the
            # iteration ends when that value exists, not when its kernels are queued.
            updated = self.gan.generator.trainable_variables[-1].read_value()
            with tf.control_dependencies([host_fence([*out.values(), updated])]):
                t_end = tf.timestamp()
            return {**out, "step_s": t_end - t_start}

        return timed_body

    def compile(self, wrap: Callable | None = None, steps_per_call: int = 1) -> Callable:
        """The iteration as a tf.function. ``wrap(fn)`` lets an engine run ``fn`` per replica
        (tf.distribute's ``strategy.run``); the iteration counter advances once per iteration.
        Every result holds ``step_s`` too: the iteration's seconds, timed in the graph.

        ``steps_per_call`` K > 1: K iterations in one call, on K stacked batches (``real``
        (K, n_disc, b, n_voxels), ``label`` (K, n_disc, b, 1)); every result is then a (K,)
        vector of per-iteration values, read back once. Without ``wrap`` the K iterations are
        a loop inside the graph; with it, K iterations unrolled in each replica's function (a
        cross-replica reduction may not run inside a graph loop). K = 1 is one iteration per
        call with scalar results."""
        if steps_per_call < 1:
            raise ValueError(f"steps_per_call must be >= 1, got {steps_per_call}")
        # XLA compiles the whole iteration only where it holds no collective (one replica, no
        # strategy); otherwise the per-replica pieces, with the reduction and its timestamps
        # between them. Timestamps have no XLA kernel, so the iteration's own stay outside too.
        xla = bool(self.train.xla)
        whole = xla and wrap is None and not self.replicas.has_collectives()
        self._compiled = self._pieces(xla and not whole, apply_in_xla=wrap is None)
        body = tf.function(self.replica_iteration, jit_compile=True) if whole else self.replica_iteration
        timed_body = self._timed_iteration(body)
        counter = self.gan.iteration
        if wrap is not None:
            k = steps_per_call
            per_replica = timed_body if k == 1 else self._unrolled(timed_body, k)

            def wrapped(real, label):
                out = wrap(per_replica)(real, label)
                counter.assign_add(k)   # outside the replicas: tf.distribute's counter is mirrored
                return out

            return tf.function(wrapped)

        def iteration(real, label):
            out = timed_body(real, label)
            counter.assign_add(1)
            return out

        if steps_per_call == 1:
            return tf.function(iteration)
        return tf.function(self._in_graph_loop(iteration, steps_per_call))

    @staticmethod
    def _unrolled(timed_body: Callable, k: int) -> Callable:
        """``k`` iterations unrolled in one per-replica function, their results stacked."""

        def calls(real, label):
            outs = [timed_body(real[i], label[i], i) for i in range(k)]
            return {key: tf.stack([o[key] for o in outs]) for key in outs[0]}

        return calls

    @staticmethod
    def _in_graph_loop(iteration: Callable, k: int) -> Callable:
        """``iteration`` run ``k`` times in a ``tf.while_loop``, its results stacked on the
        device. Every iteration's variable reads follow the previous one's updates (TensorFlow
        orders a loop body's stateful operations), so the numbers are those of k calls."""
        dtypes = {"d_loss": tf.float32, "g_loss": tf.float32, "gp": tf.float32, "comm_s": tf.float64,
                  "step_s": tf.float64}

        def calls(real, label):
            acc = {key: tf.TensorArray(dtype, size=k, element_shape=()) for key, dtype in dtypes.items()}
            for i in tf.range(k):
                out = iteration(real[i], label[i])
                acc = {key: acc[key].write(i, out[key]) for key in dtypes}
            return {key: acc[key].stack() for key in dtypes}

        return calls
