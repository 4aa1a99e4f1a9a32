"""Process-wide TensorFlow set-up that must happen before the first op runs."""
from __future__ import annotations

import os
import random

import numpy as np


def quiet_tensorflow() -> None:
    """Hide TensorFlow's C++ info lines (set before importing tensorflow)."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def configure(threads: int, seed: int, inter_op_threads: int = 1) -> None:
    """Thread pools (0 = TensorFlow's default) and seeds of Python, numpy and TensorFlow."""
    import tensorflow as tf

    # Only changes are applied: the pools are fixed once TensorFlow's runtime has started, and
    # a caller may have set them earlier (e.g. before collectives that run TensorFlow ops).
    if threads and tf.config.threading.get_intra_op_parallelism_threads() != threads:
        tf.config.threading.set_intra_op_parallelism_threads(threads)
    if threads and tf.config.threading.get_inter_op_parallelism_threads() != inter_op_threads:
        tf.config.threading.set_inter_op_parallelism_threads(inter_op_threads)
    random.seed(seed)
    np.random.seed(seed % 2**32)
    tf.random.set_seed(seed)


def gpus() -> list:
    import tensorflow as tf

    return tf.config.list_physical_devices("GPU")
