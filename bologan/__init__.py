"""BoloGAN: conditional WGAN-GP for CaloChallenge dataset-1 showers (no MPI, Slurm or energy here).

Importing this package is cheap; TensorFlow is imported only by the modules that train.
"""
