"""Many GANs at once: ensembles, campaigns and node layouts (ranks x threads), and their report parts."""
