"""Per-rank GPU (NVML) and CPU/DRAM (RAPL powercap) energy, sampled in the background.

Modules: ``config`` ([energy] settings), ``rapl`` and ``nvml`` (devices), ``estimate`` (opt-in
model), ``counters`` (wrap-safe accumulators), ``sampler`` (the thread), ``meter`` (the window
API the trainer uses), ``records`` (EnergyWindow, PowerSample), ``output`` (power.parquet),
``monitor`` (``python -m energy.monitor -- CMD``), ``overhead`` (cost benchmark).
Importing this package imports nothing heavy.
"""
