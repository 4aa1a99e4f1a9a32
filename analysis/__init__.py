"""Scaling and energy analysis of run directories (never imports TensorFlow).

    python -m analysis RUN_OR_STUDY_DIR... --out REPORT_DIR [--network FILE_OR_NAME ...]

Modules, one job each:

- ``load``: find run directories and all-reduce benchmark files, group runs into series,
  refuse series whose configurations differ (naming the keys).
- ``epochs``: per-rank rows -> per-epoch rows (slowest rank = epoch time, energy per domain).
- ``scaling_metrics``: speedup, strong/weak efficiency, Karp-Flatt, Amdahl/Gustafson fits.
- ``energy_metrics``: node-once energy sums, provenance labels, EDP, showers per joule.
- ``summary``: the summary table, one row per (series, N), units in the column names.
- ``model_size``: trainable parameters of the BoloGAN generator and critic.
- ``comm_model`` / ``projection``: ring all-reduce model, its fit, efficiency projections.
- ``pareto``: energy vs time-to-solution front and the recommended configuration.
- ``plots`` / ``report`` / ``pipeline``: figures (PNG + PDF), report.md/report.html, writing.
"""
