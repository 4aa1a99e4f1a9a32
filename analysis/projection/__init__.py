"""Projection of scaling to many ranks: model size, all-reduce model and network files,
stragglers, the projection and its out-of-sample check, the Monte Carlo check, its report part."""
