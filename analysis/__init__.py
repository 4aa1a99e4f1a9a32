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
- ``comm_model``: all-reduce time t = c + a(N) + 2(N-1)/N b/B (engine fixed cost, latency of the
  algorithm, bandwidth; intra- and inter-node links), its calibration on the micro-benchmark,
  network files (``networks/*.toml``, each figure with its source).
- ``stragglers`` / ``projection`` / ``simulate``: the expected slowest of N ranks; strong and weak
  efficiency projected to 1024 ranks, the out-of-sample check at the measured N; a Monte Carlo
  check of the closed form.
- ``projection_report``: the projection's report section, and the one form in which the key
  results quote a projection (network, assumptions, validation error or 'not validated').
- ``pareto``: energy vs time fronts for equal work (showers processed), one per mode and particle.
- ``campaign`` / ``campaign_report``: many GANs: ensemble efficiency, GANs per node-hour, energy
  per trained GAN, campaign makespan (TTTa), the plan for M GANs on P ranks; its report section.
- ``plots`` / ``report`` / ``pipeline``: figures (PNG + PDF), report.md/report.html, writing.
"""
