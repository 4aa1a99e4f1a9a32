"""Starting processes: local mpirun studies, Slurm sweeps and a local Slurm test cluster."""
