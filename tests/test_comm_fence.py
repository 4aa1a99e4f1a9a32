"""The communication timestamps wait for the gradients' values, not only for their ops.

On a GPU an op is done once its kernel is queued, so a timestamp ordered after the gradients by
a control dependency alone fires before the backward pass has run. ``bologan.step.host_fence``
makes each timestamp wait for a host op whose data inputs are every (reduced) gradient. What is
checked here: the graph holds that dependency (and the unfenced graph does not), and the fence
changes no number: losses and weights (which follow from the reduced gradients) are bit-identical
with and without it.
That it really waits on a GPU only a GPU run can show (the last test here, skipped without one).
"""
from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from bologan.config import ModelConfig, TrainConfig
from bologan.geometry import particle
from bologan.model import Gan
from bologan.step import Replicas, WganGpStep, timed

N_GRADS = 3


def _timestamps_and_graph(fence: bool):
    """The graph of one timed reduction of N_GRADS gradients, named grad<i> and reduced<i>."""
    ws = [tf.Variable(tf.ones((4, 4)) * (i + 1)) for i in range(N_GRADS)]

    @tf.function
    def fn(x):
        with tf.GradientTape() as tape:
            loss = tf.add_n([tf.reduce_sum(tf.matmul(x, w)) for w in ws])
        grads = [tf.identity(g, name=f"grad{i}") for i, g in enumerate(tape.gradient(loss, ws))]
        reduced, dt = timed(lambda gs: [tf.multiply(g, 0.5, name=f"reduced{i}") for i, g in enumerate(gs)],
                            grads, fence=fence)
        return reduced, dt

    graph = fn.get_concrete_function(tf.TensorSpec((2, 4))).graph
    stamps = [op for op in graph.get_operations() if op.type == "Timestamp"]
    assert len(stamps) == 2
    return stamps, graph


def _data_ancestors(op) -> set[str]:
    """Names of every op that ``op`` reads a value from, directly or through other values."""
    seen, todo = set(), [t.op for t in op.inputs]
    while todo:
        a = todo.pop()
        if a.name not in seen:
            seen.add(a.name)
            todo.extend(t.op for t in a.inputs)
    return seen


def _value_waits(stamp, prefix: str) -> bool:
    """Whether ``stamp`` waits for a host op that reads the value of every ``prefix<i>``."""
    for ctrl in stamp.control_inputs:
        if "CPU" in ctrl.device and all(f"{prefix}{i}" in _data_ancestors(ctrl) for i in range(N_GRADS)):
            return True
    return False


def test_both_timestamps_wait_for_a_host_value_of_every_gradient():
    (opening, closing), _ = _timestamps_and_graph(fence=True)
    # tf.timestamp takes no inputs: the value dependency is a host op's data inputs, which a GPU
    # delivers only through a device-to-host copy that completes after the producing kernels.
    assert _value_waits(opening, "grad")
    assert _value_waits(closing, "reduced")


def test_unfenced_timestamps_wait_for_ops_only():
    (opening, closing), _ = _timestamps_and_graph(fence=False)
    assert not _value_waits(opening, "grad") and not _value_waits(closing, "reduced")


class _TwoReplicas(Replicas):
    """Two replicas that reduce by an exact operation (x2 then /2), so timing code runs."""

    def __init__(self, fence: bool):
        self.comm_fence = fence

    def count(self) -> int:
        return 2

    def reduce_mean(self, grads, group):
        return [(g * 2.0) / 2.0 for g in grads]


def _train(fence: bool, xla: bool = False, iterations: int = 4):
    tf.random.set_seed(3)
    model = ModelConfig(critic_widths=[16, 16], generator="relu", generator_widths=[8, 16])
    train = TrainConfig(batch_size=4, n_disc=2, seed=3, xla=xla)
    gan = Gan(model, train)
    rng = np.random.default_rng(1)
    for v in gan.generator.trainable_variables + gan.critic.trainable_variables:
        v.assign(rng.normal(0.0, 0.1, v.shape).astype(v.dtype.as_numpy_dtype))
    step = WganGpStep(gan, model, train, replicas=_TwoReplicas(fence)).compile()
    n_vox = particle(model.particle).n_voxels
    losses = []
    for _ in range(iterations):
        real = rng.random((2, 4, n_vox), dtype=np.float32) / n_vox
        label = rng.random((2, 4, 1), dtype=np.float32)
        out = step(real, label)
        losses.append([float(out["d_loss"]), float(out["g_loss"]), float(out["gp"])])
        assert float(out["comm_s"]) >= 0.0
    return np.asarray(losses), [v.numpy() for v in gan.all_variables()]


def test_the_fence_changes_no_number():
    (la, wa), (lb, wb) = _train(fence=True), _train(fence=False)
    np.testing.assert_array_equal(la, lb)
    assert len(wa) == len(wb)
    for a, b in zip(wa, wb):   # weights follow from the reduced gradients: equal means those were
        np.testing.assert_array_equal(a, b)


def test_xla_compiles_the_replica_computation_around_the_timed_reduction():
    # Before: jit_compile over the whole iteration failed on tf.timestamp ("tf2xla conversion failed").
    (lx, _), (lp, _) = _train(True, xla=True), _train(True, xla=False)
    # XLA fuses and reorders float operations: the same losses up to rounding.
    np.testing.assert_allclose(lx, lp, rtol=1e-4, atol=1e-5)


def _gpu_comm_window(fence: bool) -> tuple[float, float]:
    """(wall s, comm_s) of a call whose forward and backward pass are ~25 TFLOP of GPU matmuls
    (tens of ms on an A100/H100, queued by the host in a few ms), its gradient then "reduced"
    through a copy to the host: like a collective, that waits for the value it reduces."""
    import time

    with tf.device("/GPU:0"):
        w = tf.Variable(tf.random.normal((4096, 4096), stddev=0.01, seed=1))
        x = tf.random.normal((4096, 4096), seed=2)

    def to_host(grads):
        with tf.device("/CPU:0"):
            return [tf.identity(g) for g in grads]

    @tf.function
    def call():
        with tf.GradientTape() as tape:
            y = x
            for _ in range(60):
                y = tf.tanh(tf.matmul(y, w))
            loss = tf.reduce_sum(y)
        _, dt = timed(to_host, tape.gradient(loss, [w]), fence=fence)
        return dt

    call()   # trace and warm up
    t0 = time.perf_counter()
    comm = float(call())
    return time.perf_counter() - t0, comm


@pytest.mark.gpu
@pytest.mark.skipif(not tf.config.list_physical_devices("GPU"), reason="TensorFlow sees no GPU here")
def test_on_a_gpu_the_fenced_window_holds_no_backward_pass():
    # Fenced: the window holds the 64 MiB copy only (a few ms).
    wall, comm = _gpu_comm_window(fence=True)
    assert comm < 0.15 * wall, (wall, comm)
    # Unfenced: the opening timestamp fires once the backward kernels are queued, so the window
    # holds most of the pass (what every GPU comm_s measured before the fix would have held).
    wall_u, comm_u = _gpu_comm_window(fence=False)
    assert comm_u > 0.5 * wall_u, (wall_u, comm_u)


def test_comm_timing_modes_choose_timing_and_fence():
    from scaling.config import ScalingConfig

    modes = {m: (ScalingConfig(comm_timing=m).comm_timed, ScalingConfig(comm_timing=m).comm_fenced)
             for m in ("graph", "graph-unfenced", "off")}
    assert modes == {"graph": (True, True), "graph-unfenced": (True, False), "off": (False, True)}
