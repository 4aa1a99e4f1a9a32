"""BoloGAN configuration sections with the original defaults (reference: bologan.md section 1).

TOML layout::

    [model]  particle, generator, widths, latent size ...
    [train]  batch, n_disc, optimiser, iterations, checkpoints, precision ...
    [data]   path, label, shuffle, prefetch ...
"""
from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any

from bologan.lr_schedule import LR_NONE, LR_SCALINGS
from common.settings import NON_NEGATIVE, POSITIVE, Range
from bologan.momenta import MOMENTA_HELP, canonical
from common.vocab import (PRECISIONS, DEFAULT_SYNTHETIC_EVENTS, DEFAULT_THREADS, PARTICLE_NAMES, PARTICLE_PHOTONS,
                          PARTICLE_PIONS)

GENERATOR_VARIANTS = ("bn_swish", "bn_relu", "relu")
# The generator BoloGAN trains for each particle (bologan.md section 1): photons BatchNorm+swish
# ("High12"), pions ReLU without BatchNorm ("Pions"; the FastCaloChallenge rewrite's noBN).
PARTICLE_GENERATOR = {PARTICLE_PHOTONS: "bn_swish", PARTICLE_PIONS: "relu"}
GENERATOR_PARTICLE_DEFAULT = "particle_default"
# How the generator's BatchNorm layers normalise while training (bologan.step).
GENERATOR_NORM_FIXED = "fixed_moments"
GENERATOR_NORM_BATCH = "batch_statistics"
GENERATOR_NORMS = (GENERATOR_NORM_FIXED, GENERATOR_NORM_BATCH)
LABELS = ("maxe", "loge")
# Training precision -> Keras dtype policy. bf16: bfloat16 compute, float32 weights, no loss
# scaling (bfloat16 has float32's exponent range). fp16: float16 compute with dynamic loss
# scaling (bologan.model.Gan), without which small gradients underflow to zero.
PRECISION_POLICIES = dict(zip(PRECISIONS, ("float32", "mixed_bfloat16", "mixed_float16")))
LOSS_SCALED_PRECISIONS = ("fp16",)
# "mixed" meant bfloat16 on CPUs and float16 on GPUs: a stored config cannot say which it got.
RETIRED_PRECISIONS = {"mixed": "it meant bf16 on CPUs and fp16 on GPUs; write bf16 or fp16 "
                               "(or float32); every run made without a GPU used bf16"}
# bologan.train's checkpoint interval when [train] checkpoint_every is 0 (its default).
TRAIN_CHECKPOINT_EVERY = 100
# Adam's moment decay rates: 1 or more would never forget (or grow) the moments.
ADAM_BETA = Range(0, 1, high_open=True)


@dataclass
class ModelConfig:
    particle: str = field(default=PARTICLE_PHOTONS, metadata={"choices": PARTICLE_NAMES, "help": "photons (368 voxels) or pions (533)"})
    generator: str = field(default=GENERATOR_PARTICLE_DEFAULT, metadata={
        "choices": (GENERATOR_PARTICLE_DEFAULT, *GENERATOR_VARIANTS),
        "help": "generator layers: bn_swish = BatchNorm+swish (BoloGAN photons High12), bn_relu = BatchNorm+ReLU "
                "(BoloGAN photons below 4 GeV, UltraLow), relu = ReLU without BatchNorm (BoloGAN pions); "
                "particle_default = as BoloGAN trains the particle (photons bn_swish, pions relu), "
                "recorded resolved"})
    generator_norm: str = field(default=GENERATOR_NORM_FIXED, metadata={
        "choices": GENERATOR_NORMS,
        "help": "generator BatchNorm while training: fixed_moments = as BoloGAN trains (moving mean 0 and "
                "variance 1, never updated: each BatchNorm is a learned scale and shift, and a shower does "
                "not depend on the others in its batch); batch_statistics = normalise by each batch's own "
                "mean and variance (standard Keras training; the per-replica batch then changes the model)"})
    generator_widths: list[int] = field(default_factory=lambda: [50, 100, 200],
                                        metadata={"help": "generator hidden layer widths"})
    critic_widths: list[int] = field(default_factory=list,
                                     metadata={"help": "critic hidden widths; empty = [n_voxels] x 3 (BoloGAN)"})
    latent_dim: int = field(default=50, metadata={"help": "size of the noise vector z"})
    latent_mean: float = field(default=0.5, metadata={"help": "z ~ Normal(mean, std)"})
    latent_std: float = field(default=0.5, metadata={"help": "z ~ Normal(mean, std)", "range": POSITIVE})

    def __post_init__(self) -> None:
        if self.generator == GENERATOR_PARTICLE_DEFAULT and self.particle in PARTICLE_GENERATOR:
            # Resolved at once, so run.json, config.json and the workload hash hold the variant.
            self.generator = PARTICLE_GENERATOR[self.particle]

    @property
    def generator_trains_batch_statistics(self) -> bool:
        """Whether the generator's BatchNorm layers run in training mode inside the training step."""
        return self.generator_norm == GENERATOR_NORM_BATCH

    def check(self) -> None:
        if not self.generator_widths or min(self.generator_widths) < 1:
            raise ValueError("generator_widths must be a non-empty list of positive integers")
        if self.critic_widths and min(self.critic_widths) < 1:
            raise ValueError("critic_widths must hold positive integers")
        if self.latent_dim < 1:
            raise ValueError("latent_dim must be >= 1")


@dataclass
class TrainConfig:
    batch_size: int = field(default=128, metadata={"help": "showers per critic step (per replica)"})
    n_disc: int = field(default=5, metadata={"help": "critic steps per iteration"})
    gp_lambda: float = field(default=10.0, metadata={"help": "gradient-penalty weight", "range": NON_NEGATIVE})
    learning_rate: float = field(default=1e-4, metadata={"help": "Adam learning rate (G and D)", "range": POSITIVE})
    lr_scaling: str = field(default=LR_NONE, metadata={
        "choices": LR_SCALINGS,
        "help": "learning rate x (global batch / batch of a 1-rank run): none, linear or sqrt of that ratio "
                "(bologan.lr_schedule; 1 replica: no change)"})
    lr_warmup_iterations: int = field(default=0, metadata={
        "help": "ramp the learning rate linearly from learning_rate to the scaled rate over this many iterations",
        "range": NON_NEGATIVE})
    beta1: float = field(default=0.55, metadata={"help": "Adam beta1", "range": ADAM_BETA})
    beta2: float = field(default=0.999, metadata={"help": "Adam beta2", "range": ADAM_BETA})
    iterations: int = field(default=1000, metadata={"help": "iterations to train (n_disc critic steps + 1 generator step each)"})
    checkpoint_every: int = field(default=0, metadata={
        "help": "iterations between checkpoints; 0 = the tool's default (bologan.train: every "
                f"{TRAIN_CHECKPOINT_EVERY} iterations; scaling.run: every epoch). scaling.run saves at the end of "
                "each epoch that reaches a multiple of it (never inside an epoch)"})
    keep_checkpoints: int = field(default=0, metadata={"help": "checkpoints kept on disk (0 = all, for best-iteration search)"})
    log_every: int = field(default=50, metadata={"help": "iterations between progress lines"})
    seed: int = field(default=10, metadata={"help": "random seed (BoloGAN: 10)"})
    xla: bool = field(default=False, metadata={"help": "compile the iteration with XLA (jit_compile)"})
    precision: str = field(default="float32", metadata={
        "choices": PRECISIONS, "retired": RETIRED_PRECISIONS,
        "help": "float32; bf16 (bfloat16 compute, float32 weights, no loss scaling: A100/H100, CPUs); "
                "fp16 (float16 compute with dynamic loss scaling: GPUs; slow on CPUs)"})
    threads: int = field(default=DEFAULT_THREADS, metadata={"help": "TensorFlow intra-op threads (0 = decide from the cores owned)"})

    def check(self) -> None:
        for name in ("batch_size", "n_disc", "iterations", "log_every"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1")
        if self.keep_checkpoints < 0 or self.threads < 0 or self.checkpoint_every < 0:
            raise ValueError("keep_checkpoints, threads and checkpoint_every must be >= 0")


@dataclass
class DataConfig:
    data: str = field(default="", metadata={"help": "showers Parquet file; empty = generate synthetic showers"})
    synthetic_events: int = field(default=DEFAULT_SYNTHETIC_EVENTS, metadata={"help": "events generated when no data file is given"})
    label: str = field(default="maxe", metadata={"choices": LABELS, "help": "energy label: Ekin/Ekin_max or log scale"})
    prefetch: int = field(default=2, metadata={"help": "iterations prefetched by tf.data"})
    momenta: str = field(default="", metadata={"help": MOMENTA_HELP + " (default: every momentum)"})

    def check(self) -> None:
        if self.synthetic_events < 1 or self.prefetch < 0:
            raise ValueError("synthetic_events must be >= 1 and prefetch >= 0")
        # Stored in MeV numbers, so 2^12..2^22 and 4096..4194304 are one workload.
        try:
            self.momenta = canonical(self.momenta)
        except ValueError as exc:
            raise ValueError(f"momenta: {exc}") from None


BOLOGAN_SECTIONS: dict[str, type] = {"model": ModelConfig, "train": TrainConfig, "data": DataConfig}


# Keys added after runs were first stored, with the value that gives the behaviour those runs
# had: at that value a key is left out of config_hash, so older runs and new runs with the
# default keep one workload hash (one series); any other value is hashed like every key.
# generator_norm is the exception to "at its default": its default changed with it, so it is
# hidden only at the value older runs trained with (batch statistics) and hashed at the new one.
HASHED_UNLESS_DEFAULT: dict[str, Any] = {"train.lr_scaling": LR_NONE, "train.lr_warmup_iterations": 0,
                                         "model.generator_norm": GENERATOR_NORM_BATCH, "data.momenta": ""}


def with_legacy_values(tables: dict[str, dict[str, Any]]) -> tuple[dict[str, dict[str, Any]], list[str]]:
    """A stored config (config.json, run.json) completed with the value each key of
    ``HASHED_UNLESS_DEFAULT`` had before it existed, so that resuming or reading an older run
    keeps the behaviour it trained with. Returns (tables, the 'section.key = value' filled in
    whose value is not today's default: what the caller must tell the user)."""
    # A table that is not one is left as it is, for the config's own check to name.
    out = {name: dict(table) if isinstance(table, dict) else table for name, table in tables.items()}
    changed = []
    for key, legacy in HASHED_UNLESS_DEFAULT.items():
        section, name = key.split(".")
        if not isinstance(out.get(section), dict) or name in out[section]:
            continue
        out[section][name] = legacy
        default = {f.name: f.default for f in fields(BOLOGAN_SECTIONS[section])}[name]
        if default != legacy:
            changed.append(f"{key} = {legacy!r}")
    return out, changed


def config_hash(tables: dict[str, dict[str, Any]], exclude: tuple[str, ...] = ()) -> str:
    """Short stable hash of resolved config tables (keys in ``exclude`` as 'section.key' skipped,
    and those of ``HASHED_UNLESS_DEFAULT`` while at that value)."""
    import hashlib
    import json

    def hashed(key: str, value: Any) -> bool:
        return key not in exclude and not (key in HASHED_UNLESS_DEFAULT and value == HASHED_UNLESS_DEFAULT[key])

    filtered = {s: {k: v for k, v in t.items() if hashed(f"{s}.{k}", v)} for s, t in tables.items()}
    return hashlib.sha1(json.dumps(filtered, sort_keys=True).encode()).hexdigest()[:12]

