"""Scaling and energy analysis of run directories (never imports TensorFlow).

    python -m analysis RUN_OR_STUDY_DIR... --out REPORT_DIR [--network FILE_OR_NAME ...]

Modules, one job each. The base, which every room below may use:

- ``load``: find run directories and all-reduce benchmark files, group runs into series,
  refuse series whose configurations differ (naming the keys).
- ``epochs``: per-rank rows -> per-epoch rows (slowest rank = epoch time, energy per domain).
- ``scaling_metrics``: speedup, strong/weak efficiency, Karp-Flatt, Amdahl/Gustafson fits.
- ``energy_metrics``: node-once energy sums, provenance labels, EDP, showers per joule.
- ``summary``: the summary table, one row per (series, N), units in the column names.
- ``bootstrap`` / ``compare``: bootstrap intervals; whether two configurations really differ.
- ``sites``: where runs ran (a part of the series key) and the sites table.
- ``checkpoints``: checkpoint cost and the checkpoint interval a failure rate calls for.
- ``variants``: variants of one workload compared (time, energy, energy-delay product).
- ``numbers`` / ``plots`` / ``report`` / ``pipeline``: numbers for people, figures (PNG + PDF),
  report.md/report.html, writing the report directory.

Rooms, one subpackage per job:

- ``projection``: ``model_size`` (trainable parameters), ``comm_model`` (all-reduce time
  t = c + a(N) + 2(N-1)/N b/B, its calibration on the micro-benchmark, network files
  ``projection/networks/*.toml``, each figure with its source), ``stragglers`` / ``projection`` /
  ``simulate`` (the expected slowest of N ranks; strong and weak efficiency projected to 1024
  ranks with the out-of-sample check; a Monte Carlo check of the closed form),
  ``projection_report`` (its report section and the one form in which key results quote it).
- ``quality``: ``time_to_target`` (time and energy to a quality target), ``quality_report`` and
  ``quality_plots`` (its report section and figures).
- ``campaign``: ``campaign`` / ``campaign_report`` (many GANs: ensemble efficiency, GANs per
  node-hour, energy per trained GAN, campaign makespan, the plan for M GANs on P ranks; its
  section), ``layout`` (ranks x threads of a node, one GAN or many).
- ``energy``: ``power_report`` / ``power_sections`` (idle, gross/net and peak power, telemetry),
  ``energy_intervals`` (bootstrap intervals of energy), ``carbon`` (CO2e and cost), ``pareto``
  (energy vs time fronts for equal work).
"""
