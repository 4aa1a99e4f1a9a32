"""A steady GPU load for the NVML cross-check: float32 matmuls on the GPU this process is
pinned to by the training's rule (scaling.devices.pin_rank, local rank 0 of 1).

Prints ``ready <PCI bus id>`` once warmed up, then keeps the GPU busy until killed (or
``SECONDS`` elapse). Exits 3 when TensorFlow sees no GPU.
"""
from __future__ import annotations

import sys
import time

import tensorflow as tf

from scaling.devices import pin_rank

SECONDS = float(sys.argv[1]) if len(sys.argv) > 1 else 120.0


def main() -> int:
    pin = pin_rank(0, 1)
    if not pin.on_gpu:
        print("no-gpu", flush=True)
        return 3
    with tf.device("/GPU:0"):
        a = tf.random.normal((4096, 4096))
        b = tf.random.normal((4096, 4096))

        @tf.function
        def step(x):
            for _ in range(10):
                x = tf.matmul(x, b) * 1e-3
            return x

        x = step(a)
        _ = x.numpy()
        warm_end = time.monotonic() + 5.0          # let clocks and power settle before measuring
        while time.monotonic() < warm_end:
            x = step(a)
        _ = x.numpy()
        print(f"ready {pin.decision.gpus[0].pci_bus_id}", flush=True)
        end = time.monotonic() + SECONDS
        while time.monotonic() < end:
            x = step(a)
            _ = x[0, 0].numpy()                     # keep the queue short: steady, not bursty
    return 0


if __name__ == "__main__":
    sys.exit(main())
