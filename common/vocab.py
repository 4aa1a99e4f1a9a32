"""The project's vocabulary: every name that more than one module writes or reads, defined once.

Values are plain strings because they end up in run.json, Parquet columns and command lines.
This module imports nothing (not even the rest of ``common``): the launchers read it too.
"""
from __future__ import annotations

# Engines and scaling modes (``scaling.run --engine/--mode``, run.json, launch sweeps).
ENGINE_HOROVOD = "horovod"
ENGINE_MIRRORED = "mirrored"
ENGINES = (ENGINE_HOROVOD, ENGINE_MIRRORED)

# How the gradient all-reduce is timed (``scaling.run --comm-timing``).
COMM_TIMING_GRAPH = "graph"   # between in-graph timestamps: comm_s measured, no overlap with backprop
COMM_TIMING_OFF = "off"       # untimed: Horovod may overlap; comm_s is NaN
# Timestamps ordered by control dependencies only: right on CPUs, holds queued compute on GPUs;
# only to measure what the fence costs (tools/ab_comm_timing.py).
COMM_TIMING_UNFENCED = "graph-unfenced"
COMM_TIMING_MODES = (COMM_TIMING_GRAPH, COMM_TIMING_OFF, COMM_TIMING_UNFENCED)

MODE_STRONG = "strong"
MODE_WEAK = "weak"
MODES = (MODE_STRONG, MODE_WEAK)            # data parallel: one GAN over all ranks
# Ensemble: every rank (or group of ranks) trains its own GAN, no reduction between groups.
# Kept out of MODES, which are the data-parallel modes; scaling.run, analysis and the launchers accept RUN_MODES.
MODE_ENSEMBLE = "ensemble"
RUN_MODES = MODES + (MODE_ENSEMBLE,)

# Particles with a calorimeter geometry (bologan.geometry describes each one).
PARTICLE_PHOTONS = "photons"
PARTICLE_PIONS = "pions"
PARTICLE_NAMES = (PARTICLE_PHOTONS, PARTICLE_PIONS)

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
SOURCE_PARTIAL = "partial"          # of a sum only: some GPUs/nodes unread, or not one reader per node
ENERGY_SOURCES = (SOURCE_MEASURED, SOURCE_ESTIMATED, SOURCE_UNAVAILABLE, SOURCE_NOT_READER)
SOURCES_WITH_VALUE = (SOURCE_MEASURED, SOURCE_ESTIMATED)   # the sources that carry a number

# run.json ``status``.
STATUS_RUNNING = "running"
STATUS_COMPLETED = "completed"
STATUS_INTERRUPTED = "interrupted"    # stopped by a signal; resumable
STATUS_FAILED = "failed"
STATUS_TARGET_REACHED = "target_reached"   # ended early: an evaluation met --target (--stop-at-target)
STATUS_STALLED = "stalled"            # ended by the progress watchdog (scaling.watchdog); resumable
RUN_STATUSES = (STATUS_RUNNING, STATUS_COMPLETED, STATUS_INTERRUPTED, STATUS_FAILED, STATUS_TARGET_REACHED,
                STATUS_STALLED)
# A run with one of these statuses is done: nothing to resume or run again.
FINISHED_STATUSES = (STATUS_COMPLETED, STATUS_TARGET_REACHED)

# File names of a run directory (see common.rundir for their schemas).
RUN_JSON = "run.json"
EPOCHS_FILE = "epochs.parquet"
POWER_FILE = "power.parquet"
EVAL_FILE = "eval.parquet"

# Many GANs: an ensemble run keeps member k under <run>/members/<k>/; a job-array campaign
# (launch.sweep [campaign]) writes one run directory per GAN, <campaign>/members/<name>/.
MEMBERS_SUBDIR = "members"

# Checkpoints: <train or run dir>/checkpoints/ckpt-<iteration>.*
CHECKPOINT_SUBDIR = "checkpoints"
CHECKPOINT_PREFIX = "ckpt"

# A bologan training directory's resolved settings, and bologan.evaluate's choice of checkpoint.
TRAIN_CONFIG_FILE = "config.json"
BEST_JSON = "best.json"

# eval.parquet scores a quality target may name (``--target METRIC<=VALUE``), each with the
# comparison that reads "good enough". Every score so far is lower-is-better (chi2 per degree of
# freedom, distances, separation powers, a fraction of showers outside the range); a
# higher-is-better score would be listed with ">=". The raw chi2 sums and NDF are left out: they
# grow with the number of momenta compared, so a threshold on them means nothing by itself.
# fpd and kpd are CaloChallenge's FPD and KPD x 10^3, the published table's numbers (fpd<=150).
EVAL_TARGET_METRICS = {
    "chi2_ndf": "<=", "chi2_ndf_overflow": "<=", "out_of_range_fraction": "<=", "w1": "<=", "ks": "<=",
    "fpd": "<=", "kpd": "<=", "frechet_hlf_std": "<=", "sep_power_mean": "<=", "sep_power_max": "<=", "sep_e_ratio": "<=", "sep_e_layer": "<=",
    "sep_centre": "<=", "sep_width": "<=", "sep_sparsity": "<=",
}

# A study directory: the launcher's record of its steps, and one all-reduce benchmark per world size.
STUDY_JSON = "study.json"
# How a launcher placed a run's ranks (e.g. "mpirun --bind-to core"), handed to every rank in this
# environment variable so that the run can record it beside its ``launcher``.
PLACEMENT_ENV = "BOLOGAN_PLACEMENT"
ALLREDUCE_BENCH_GLOB = "allreduce*.json"


def allreduce_bench_file(world_size: int) -> str:
    """Name of the all-reduce benchmark file for ``world_size`` ranks (matches ALLREDUCE_BENCH_GLOB)."""
    return f"allreduce-n{world_size}.json"


# Config keys (dotted, ``section.key``) that do not change what an epoch measures, so they are
# left out of the workload hash (run.json ``config_hash``): scaling.run sets the batch from
# [scaling] and the length from epochs x iterations_per_epoch, checkpoints once per epoch, and
# derives threads from the cores a rank owns. Runs of one series may differ in them.
NOT_WORKLOAD_KEYS = ("train.batch_size", "train.iterations", "train.checkpoint_every", "train.keep_checkpoints",
                     "train.log_every", "train.threads")

# Settings outside the workload hash that still change what an epoch measures (threads and
# thread pools, Horovod's fusion and cycle, how noise is drawn, whether the all-reduce is timed
# in the graph, iterations per compiled call and between checks, whether ranks share a GPU and
# its energy): a resumed run must keep them (scaling.outdir), and the runs of one series must
# agree on them (analysis.load), or one median would mix
# epochs of two configurations. They stay out of config_hash, whose values the analysis groups
# by and which must not change.
MEASUREMENT_KEYS = ("train.threads", "scaling.inter_op_threads", "scaling.fusion_threshold_bytes",
                    "scaling.cycle_time_ms", "scaling.global_noise", "scaling.comm_timing",
                    "scaling.steps_per_call", "scaling.check_every", "scaling.share_gpu")

# Config key names (the last dotted component, in any section) that differ between the runs of
# one series by design: world size and placement (``cpu_replicas`` sets N for the
# single-process mirrored engine, a free port differs per run), names and output paths, resume
# flags, timestamps, and the batch sizes (the one the mode keeps fixed is part of the series key,
# the other follows from N). None of them names a workload key outside NOT_WORKLOAD_KEYS.
RUN_LAYOUT_KEY_NAMES = frozenset({
    "world_size", "nodes", "ranks_per_node", "np", "hosts", "run_id", "study",
    "out", "out_dir", "output", "run_dir", "results", "checkpoint_dir", "resume",
    "batch_size", "per_rank_batch", "batch_per_rank", "global_batch", "cpu_replicas", "worker_base_port",
    "start_time", "end_time", "timestamp",
})

# Learning-rate scaling with the global batch (bologan.lr_schedule applies them).
LR_NONE = "none"
LR_LINEAR = "linear"
LR_SQRT = "sqrt"
LR_SCALINGS = (LR_NONE, LR_LINEAR, LR_SQRT)

# Training precisions (bologan.config maps each to a Keras dtype policy); here so that the
# launchers can validate them without importing bologan.
PRECISIONS = ("float32", "bf16", "fp16")

# The run plan's defaults, shared by scaling.run's [scaling]/[data] sections and the launchers'
# [run] section (which cannot import those). A launcher profile that wants other values writes
# them in its TOML file (launch/study_default.toml), not as a second default in code.
DEFAULT_EPOCHS = 4
DEFAULT_ITERATIONS_PER_EPOCH = 20
DEFAULT_WARMUP_EPOCHS = 1
DEFAULT_GLOBAL_BATCH = 256        # showers per critic step over all replicas (strong mode)
DEFAULT_BATCH_PER_RANK = 128      # showers per critic step per replica (weak mode)
DEFAULT_SYNTHETIC_EVENTS = 20000  # showers generated when no data file is given
DEFAULT_THREADS = 0               # TensorFlow intra-op threads; 0 = decide from the cores owned

# The network files shipped with the package, relative to the repository root (analysis.projection
# reads them; the preflight compares a measured all-reduce with them without importing analysis).
SHIPPED_NETWORKS_SUBDIR = "analysis/projection/networks"
