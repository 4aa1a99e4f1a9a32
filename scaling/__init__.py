"""Data-parallel BoloGAN training (Horovod or tf.distribute) with per-rank timings and a run directory."""
