"""Per-rank GPU (NVML) and CPU/DRAM (RAPL powercap) energy, sampled in the background."""
