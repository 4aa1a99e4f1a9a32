"""The project's vocabulary: every name that more than one module writes or reads, defined once.

Values are plain strings because they end up in run.json, Parquet columns and command lines.
"""
from __future__ import annotations

# Engines and scaling modes (``scaling.run --engine/--mode``, run.json, launch sweeps).
ENGINE_HOROVOD = "horovod"
ENGINE_MIRRORED = "mirrored"
ENGINES = (ENGINE_HOROVOD, ENGINE_MIRRORED)

MODE_STRONG = "strong"
MODE_WEAK = "weak"
MODES = (MODE_STRONG, MODE_WEAK)

# Energy domains of epochs.parquet (``<domain>_energy_j`` and ``<domain>_energy_source``).
DOMAIN_GPU = "gpu"
DOMAIN_CPU = "cpu"
DOMAIN_DRAM = "dram"
ENERGY_DOMAINS = (DOMAIN_GPU, DOMAIN_CPU, DOMAIN_DRAM)

# Where an energy number comes from.
SOURCE_MEASURED = "measured"        # read from a hardware counter
SOURCE_ESTIMATED = "estimated"      # modelled (opt-in CPU estimate)
SOURCE_UNAVAILABLE = "unavailable"  # no counter could be read
SOURCE_NOT_READER = "not_reader"    # node counters are read by another rank of this node
ENERGY_SOURCES = (SOURCE_MEASURED, SOURCE_ESTIMATED, SOURCE_UNAVAILABLE, SOURCE_NOT_READER)

# Checkpoints: <train or run dir>/checkpoints/ckpt-<iteration>.*
CHECKPOINT_SUBDIR = "checkpoints"
CHECKPOINT_PREFIX = "ckpt"

# Config keys (dotted, ``section.key``) that do not change what an epoch measures, so they are
# left out of the workload hash; the analysis compares the rest between the runs of a series.
NOT_WORKLOAD_KEYS = ("train.batch_size", "train.iterations", "train.checkpoint_every", "train.keep_checkpoints",
                     "train.log_every", "train.threads")
