"""Time an asynchronous all-reduce with ``bologan.step.timed`` while compute follows it.

Each of the STEPS steps: ~40 ms of matmuls for a gradient, a Horovod all-reduce of it (an
asynchronous kernel, even at one rank), then the update that the next step's compute waits
for. Prints one JSON line: wall seconds of the call and the summed in-graph comm window.
"""
import json
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
import horovod.tensorflow as hvd  # noqa: E402
import tensorflow as tf  # noqa: E402

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", ".."))
from bologan.step import timed  # noqa: E402

STEPS = 5
hvd.init()
tf.config.threading.set_intra_op_parallelism_threads(1)
tf.config.threading.set_inter_op_parallelism_threads(1)
w = tf.Variable(tf.random.normal((600, 600), stddev=0.04, seed=1))


@tf.function
def steps(x):
    total = tf.constant(0.0, tf.float64)
    for _ in range(STEPS):
        with tf.GradientTape() as tape:
            y = x
            for _ in range(10):
                y = tf.tanh(tf.matmul(y, w))
            loss = tf.reduce_sum(y)
        grads = tape.gradient(loss, [w])
        reduced, dt = timed(lambda g: [hvd.allreduce(t, op=hvd.Average) for t in g], grads)
        total += dt
        w.assign_sub(1e-6 * reduced[0])
    return total


x = tf.random.normal((256, 600), seed=2)
steps(x)                                   # trace and warm up
t0 = time.perf_counter()
comm_s = float(steps(x))
print(json.dumps({"wall_s": time.perf_counter() - t0, "comm_s": comm_s, "steps": STEPS}))
