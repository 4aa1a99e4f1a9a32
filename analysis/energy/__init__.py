"""Energy beyond the per-epoch sums: idle/gross/net/peak power and telemetry, energy intervals,
carbon and cost, energy-vs-time Pareto fronts."""
