"""Generate showers from a trained BoloGAN generator, in the project's Parquet shower format.

Example::

    python -m bologan.generate --checkpoint runs/pions --energies all --events-per-energy 1000 \\
        --out pions_gan.parquet
    python -m bologan.generate --checkpoint runs/pions/eval/best_checkpoint --energies 1024,65536 \\
        --events-per-energy 5000 --seed 7 --out pions_best.parquet

The output is read by ``bologan.dataio.read_showers`` exactly like converted Geant4 data: one
row per shower, ``momentum_mev`` (the requested momentum) and ``voxels_mev`` (MeV per voxel,
denormalised with the kinetic energy, dataset-1 voxel order). An ``--out`` ending in ``.hdf5`` or
``.h5`` is written as CaloChallenge HDF5 instead (``incident_energies`` (N, 1) and ``showers``
(N, voxels), MeV; needs the hdf5 extra), which the challenge's own evaluation scripts read.

Which checkpoint (``--checkpoint PATH``):

- a training directory (holds ``checkpoints/``): its newest checkpoint, or ``--iteration N``;
- a directory of ``ckpt-<it>.*`` files, such as ``bologan.evaluate``'s ``best_checkpoint/`` or
  a training run's ``checkpoints/``: the one named by its ``checkpoint`` state file (else the
  highest iteration), or ``--iteration N``;
- a checkpoint prefix ``.../ckpt-<it>`` (with or without ``.index``).

Where the settings come from (needed to rebuild the network): a ``bologan.train`` directory's
``config.json``, a ``scaling.run`` directory's ``run.json`` or, for an ensemble member's folder
``RUN/members/<k>``, the run's ``run.json`` (``bologan.trained_config``). ``--config-from DIR``
when given; otherwise the first of the checkpoint directory itself, the training directory named
by a ``best.json`` beside it (what ``bologan.evaluate`` writes next to ``best_checkpoint/``), its
parent (``TRAIN_DIR/checkpoints``) and its grandparent (``TRAIN_DIR/eval/best_checkpoint``) that
holds one.

Voxels the generator makes negative are set to 0 MeV, because a deposited energy cannot be
negative. Only the bn_swish generator makes them: its output layer ends in swish, x*sigmoid(x),
whose minimum is about -0.28 (at x = -1.28), so a voxel can come out as down to -0.28 x Ekin; a
voxel the real showers leave empty is then as often slightly negative as slightly positive, and
half of all voxels clipped is usual for a young generator. The count and fraction are printed
and stored in the output (Parquet ``source``; HDF5 attributes ``clipped_negative_voxels`` and
``clipped_negative_fraction``). Exit codes: 0 ok, 2 bad input (nothing written).
"""
from __future__ import annotations

import argparse
import json
import math
import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np

from common.cli import Parser, comma_list
from common.errors import UserError, main_guard
from common.vocab import BEST_JSON, CHECKPOINT_PREFIX, CHECKPOINT_SUBDIR, MEMBERS_SUBDIR, RUN_JSON, TRAIN_CONFIG_FILE
from bologan.config import PRECISIONS
from bologan.momenta import SYNTAX, MomentumRange, momenta_argument, parse_momentum_range
from bologan.trained_config import config_file
from bologan.geometry import MOMENTA_MEV, is_grid_momentum
from bologan.importers import HDF5_SUFFIXES, require_h5py

if TYPE_CHECKING:
    from bologan.dataio import Showers

STATE_FILE = "checkpoint"
_PREFIX_RE = re.compile(rf"^{CHECKPOINT_PREFIX}-(\d+)$")


# --------------------------------------------------------------------------- checkpoints

@dataclass(frozen=True)
class CheckpointRef:
    """One generator checkpoint and the training directory whose ``config.json`` describes it."""

    prefix: Path          # .../ckpt-<iteration>, the name tf.train.Checkpoint.restore takes
    iteration: int
    config_dir: Path      # holds the settings (bologan.trained_config.config_file)
    config_found_by: str  # how config_dir was chosen, for messages and the benchmark JSON


def _iterations_in(directory: Path) -> list[int]:
    its = []
    for index in directory.glob(f"{CHECKPOINT_PREFIX}-*.index"):
        m = _PREFIX_RE.match(index.name[:-len(".index")])
        if m:
            its.append(int(m.group(1)))
    return sorted(its)


def _state_file_iteration(directory: Path) -> int | None:
    """Iteration named by the ``checkpoint`` state file (model_checkpoint_path), if readable."""
    try:
        text = (directory / STATE_FILE).read_text()
    except OSError:
        return None
    m = re.search(r'^model_checkpoint_path:\s*"([^"]+)"', text, re.MULTILINE)
    if not m:
        return None
    hit = _PREFIX_RE.match(Path(m.group(1)).name)
    return int(hit.group(1)) if hit else None


def _short(values: Sequence[int], head: int = 8) -> str:
    shown = ", ".join(map(str, values[:head]))
    return shown + (f", ... ({len(values)} in all)" if len(values) > head else "")


def _pick_iteration(directory: Path, wanted: int | None, label: str) -> int:
    available = _iterations_in(directory)
    if not available:
        raise UserError(f"{label}: no {CHECKPOINT_PREFIX}-<iteration>.index files in {directory}")
    if wanted is not None:
        if wanted not in available:
            raise UserError(f"{label}: no checkpoint for iteration {wanted} (available: {_short(available)})")
        return wanted
    named = _state_file_iteration(directory)
    return named if named in available else available[-1]


def _config_dir(ckpt_dir: Path, config_from: str | Path | None) -> tuple[Path, str]:
    """The directory holding the training ``config.json`` (rule in the module docstring)."""
    if config_from is not None:
        d = Path(config_from)
        if config_file(d) is None:
            raise UserError(f"--config-from {d}: no {TRAIN_CONFIG_FILE} or {RUN_JSON} there (give the training "
                            f"or run directory)")
        return d, "--config-from"
    looked: list[Path] = []
    candidates: list[tuple[Path, str]] = [(ckpt_dir, "checkpoint directory")]
    best = ckpt_dir.parent / BEST_JSON
    if best.is_file():
        try:
            named = json.loads(best.read_text()).get("train_dir")
        except (OSError, ValueError, AttributeError):
            named = None
        if isinstance(named, str) and named:
            candidates.append((Path(named), f"train_dir in {best.name}"))
    candidates += [(ckpt_dir.parent, "parent directory"), (ckpt_dir.parent.parent, "grandparent directory")]
    for d, how in candidates:
        looked.append(d)
        if config_file(d) is not None:
            return d, how
    where = ", ".join(str(p) for p in dict.fromkeys(looked))
    raise UserError(f"{ckpt_dir}: cannot find the training {TRAIN_CONFIG_FILE} or {RUN_JSON} (looked in {where}); "
                    f"pass --config-from TRAIN_DIR")


def resolve_checkpoint(path: str | Path, iteration: int | None = None,
                       config_from: str | Path | None = None) -> CheckpointRef:
    """Find the checkpoint and its training config from ``--checkpoint`` (see module docstring)."""
    p = Path(path)
    label = f"--checkpoint {p}"
    if iteration is not None and iteration < 0:
        raise UserError("--iteration must be >= 0")
    if p.name.endswith(".index"):
        p = p.with_name(p.name[:-len(".index")])
    m = _PREFIX_RE.match(p.name)
    if m and Path(str(p) + ".index").is_file():
        it = int(m.group(1))
        if iteration is not None and iteration != it:
            raise UserError(f"{label} names iteration {it} but --iteration says {iteration}")
        ckpt_dir = p.parent
    elif p.is_dir():
        if not (p / CHECKPOINT_SUBDIR).is_dir() and (p / MEMBERS_SUBDIR).is_dir() and not _iterations_in(p):
            raise UserError(f"{label}: an ensemble run (one GAN per member); give one member's folder, "
                            f"e.g. {p / MEMBERS_SUBDIR / '0'}")
        if (p / CHECKPOINT_SUBDIR).is_dir():
            ckpt_dir = p / CHECKPOINT_SUBDIR
        else:
            ckpt_dir = p
        it = _pick_iteration(ckpt_dir, iteration, label)
    elif p.exists():
        raise UserError(f"{label}: not a checkpoint (give a training directory, a checkpoint "
                        f"directory or a {CHECKPOINT_PREFIX}-<iteration> prefix)")
    else:
        raise UserError(f"{label}: not found")
    if config_from is None and ckpt_dir.name == CHECKPOINT_SUBDIR and config_file(ckpt_dir.parent) is not None:
        config_dir, how = ckpt_dir.parent, "training directory"
    else:
        config_dir, how = _config_dir(ckpt_dir, config_from)
    return CheckpointRef(prefix=ckpt_dir / f"{CHECKPOINT_PREFIX}-{it}", iteration=it,
                         config_dir=config_dir, config_found_by=how)


def load_generator(ref: CheckpointRef) -> tuple[Any, dict[str, Any]]:
    """Rebuild the generator from the training config and restore its weights.

    Returns ``(keras_model, sections)`` with sections as from ``bologan.model.load_train_config``.
    The layers follow the global Keras dtype policy in force (set it first for mixed precision).
    A checkpoint that does not match the configuration is a ``UserError``.
    """
    import tensorflow as tf

    from bologan.model import build_generator, load_train_config

    cfg = load_train_config(ref.config_dir)
    generator = build_generator(cfg["model"])
    where = f"{ref.prefix}"
    try:
        status = tf.train.Checkpoint(generator=generator).restore(str(ref.prefix))
        status.assert_existing_objects_matched()
    except (AssertionError, ValueError, tf.errors.OpError) as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
        raise UserError(f"{where}: does not hold a generator matching {config_file(ref.config_dir)} "
                        f"({first})") from None
    status.expect_partial()   # the critic and optimisers are in the file but not wanted here
    return generator, cfg


# --------------------------------------------------------------------------- energies

def _momentum_mev(item: str) -> float:
    try:
        value = float(item)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{item!r} is not a number (momenta in MeV, or 'all')") from None
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"{item} MeV is not a positive finite momentum")
    return value


def parse_energies(text: str) -> list[float]:
    """Momenta in MeV from ``all`` (the 15 dataset-1 grid points) or a comma list."""
    if text.strip().lower() == "all":
        return list(MOMENTA_MEV)
    try:
        values = comma_list(_momentum_mev, "momentum in MeV")(text)
    except argparse.ArgumentTypeError as exc:
        raise UserError(f"--energies: {exc}") from None
    for i, value in enumerate(values):
        if value in values[:i]:
            raise UserError(f"--energies: {value:g} MeV is listed twice")
    return values


def energy_warnings(momenta_mev: Sequence[float]) -> list[str]:
    """Warnings for momenta off the training grid; the label is continuous, so they are allowed."""
    lo, hi = MOMENTA_MEV[0], MOMENTA_MEV[-1]
    out = []
    for p in momenta_mev:
        if is_grid_momentum(p):
            continue
        if p < lo * (1 - 1e-9) or p > hi * (1 + 1e-9):
            out.append(f"{p:g} MeV is outside the trained range {lo:g}..{hi:g} MeV: the generator "
                       f"extrapolates its energy label and the showers are not validated")
        else:
            out.append(f"{p:g} MeV is not one of the 15 dataset-1 momenta: the generator interpolates "
                       f"its continuous energy label")
    return out


def momenta_in_range(momenta: "MomentumRange | None") -> list[float]:
    """``--momenta``: the dataset-1 grid momenta (MeV) in the range."""
    if momenta is None:
        return list(MOMENTA_MEV)
    grid = momenta.select(MOMENTA_MEV)
    if not grid:
        raise UserError(f"--momenta {momenta}: holds none of the dataset-1 momenta "
                        f"{MOMENTA_MEV[0]:g}..{MOMENTA_MEV[-1]:g} MeV")
    return grid


def trained_range_warnings(momenta_mev: Sequence[float], trained: str) -> list[str]:
    """Momenta outside the range the GAN was trained on ([data] momenta; '' = every momentum)."""
    rng = parse_momentum_range(trained)
    if rng is None:
        return []
    return [f"{p:g} MeV is outside the momenta this GAN was trained on ({rng} MeV)"
            for p in momenta_mev if not rng.contains(p)]


# --------------------------------------------------------------------------- generation

def generate_showers(generator: Any, sections: dict[str, Any], momenta_mev: Sequence[float],
                     n_per_energy: int, seed: int, batch_size: int = 4096,
                     source: str = "bologan.generate") -> tuple["Showers", int]:
    """``n_per_energy`` showers at each momentum (MeV), grouped in the order given.

    Returns ``(showers, clipped)``: ``clipped`` counts voxels the generator made negative, set to
    0 MeV. The same seed, momenta, counts and batch size give the same showers.
    """
    from bologan.dataio import Showers
    from bologan.geometry import particle as lookup_particle
    from bologan.model import sample_showers

    model_cfg = sections["model"]
    requested = np.repeat(np.asarray(momenta_mev, dtype=np.float64), n_per_energy)
    voxels = sample_showers(generator, model_cfg, sections["data"].label, requested, seed, batch_size)
    negative = voxels < 0
    clipped = int(negative.sum())
    voxels[negative] = 0.0
    if clipped:
        source = (f"{source}; {clipped} negative voxel values set to 0 "
                  f"(clipped fraction {clipped / max(1, voxels.size):.6f})")
    showers = Showers(particle=lookup_particle(model_cfg.particle), momentum_mev=requested,
                      voxels_mev=voxels, source=source)
    return showers, clipped


# --------------------------------------------------------------------------- command line

def add_checkpoint_arguments(parser: argparse.ArgumentParser, required: bool) -> None:
    """``--checkpoint``, ``--iteration`` and ``--config-from`` (shared with the benchmark and export)."""
    parser.add_argument("--checkpoint", required=required, metavar="PATH",
                        help="training directory, checkpoint directory (e.g. eval/best_checkpoint) "
                             "or ckpt-<iteration> prefix")
    parser.add_argument("--iteration", type=int, metavar="N",
                        help="checkpoint iteration (default: the newest in the directory)")
    parser.add_argument("--config-from", metavar="TRAIN_DIR",
                        help="training directory whose config.json describes the checkpoint "
                             "(default: found next to the checkpoint)")


def build_parser() -> argparse.ArgumentParser:
    parser = Parser("python -m bologan.generate", __doc__)
    add_checkpoint_arguments(parser, required=True)
    which = parser.add_mutually_exclusive_group(required=True)
    which.add_argument("--energies", metavar="P1,P2,...|all",
                       help="incident momenta in MeV, comma-separated, or 'all' for the 15 grid points "
                            "256 .. 4194304 MeV")
    which.add_argument("--momenta", type=momenta_argument(), metavar="LO..HI",
                       help=f"the dataset-1 momenta in this range ({SYNTAX}, both ends included), e.g. "
                            f"2^12..2^22 for BoloGAN's photon GAN above 4 GeV")
    # --n: the earlier spelling, kept for scripts; bologan.evaluate calls the same thing --events-per-energy.
    parser.add_argument("--events-per-energy", "--n", dest="events_per_energy", type=int, required=True,
                        metavar="N", help="showers per momentum")
    parser.add_argument("--seed", type=int, default=0, help="noise seed")
    parser.add_argument("--out", required=True, metavar="SHOWERS.parquet",
                        help="output shower file: Parquet, or CaloChallenge HDF5 when it ends in .hdf5 or .h5")
    parser.add_argument("--force", action="store_true", help="replace --out if it exists")
    parser.add_argument("--batch-size", type=int, default=4096,
                        help="showers per generator call; changes the noise draw order")
    parser.add_argument("--threads", type=int, default=0,
                        help="TensorFlow intra-op threads (0 = TensorFlow's default)")
    parser.add_argument("--precision", choices=PRECISIONS, default="float32",
                        help="the generator's compute: float32, bf16 or fp16 (weights stay float32; "
                             "whatever precision it was trained in)")
    return parser


def clipped_attributes(clipped: int, showers: "Showers") -> dict[str, int | float]:
    """HDF5 attributes recording the negative voxels set to 0 (count and fraction of all voxels)."""
    return {"clipped_negative_voxels": int(clipped),
            "clipped_negative_fraction": clipped / max(1, showers.voxels_mev.size)}


def write_output(out: Path, showers: "Showers", clipped: int = 0) -> None:
    """Write ``showers`` atomically: CaloChallenge HDF5 (``incident_energies`` (N, 1) and
    ``showers`` (N, voxels), MeV, and ``clipped_attributes``) when ``out`` ends in .hdf5/.h5,
    else the project's Parquet (the clipped count and fraction are in its ``source``)."""
    from bologan.importers import write_calochallenge_hdf5

    if out.suffix.lower() in HDF5_SUFFIXES:
        write_calochallenge_hdf5(out, showers, clipped_attributes(clipped, showers))
    else:
        from bologan.dataio import write_showers

        write_showers(out, showers)


def _check_out(out: Path, force: bool) -> None:
    if out.is_dir():
        raise UserError(f"--out {out}: is a directory; give a file name such as showers.parquet")
    if out.exists() and not force:
        raise UserError(f"--out {out}: already exists (use --force to replace it)")
    parent = out.parent if str(out.parent) else Path(".")
    probe = parent
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    if not probe.is_dir() or not os.access(probe, os.W_OK):
        raise UserError(f"--out {out}: cannot write in {probe}")
    if out.suffix.lower() in HDF5_SUFFIXES:
        require_h5py()   # before minutes of generation, not after


@main_guard
def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.events_per_energy < 1:
        raise UserError("--events-per-energy must be >= 1")
    if args.batch_size < 1:
        raise UserError("--batch-size must be >= 1")
    if args.threads < 0:
        raise UserError("--threads must be >= 0")
    momenta = parse_energies(args.energies) if args.energies is not None else momenta_in_range(args.momenta)
    out = Path(args.out)
    _check_out(out, args.force)
    ref = resolve_checkpoint(args.checkpoint, args.iteration, args.config_from)
    for warning in energy_warnings(momenta):
        print(f"warning: {warning}", file=sys.stderr, flush=True)

    from bologan.tfsetup import configure, quiet_tensorflow

    quiet_tensorflow()
    configure(args.threads, args.seed)
    from bologan.config import TrainConfig
    from bologan.model import set_precision

    set_precision(TrainConfig(precision=args.precision))   # before the layers are built
    generator, sections = load_generator(ref)
    for warning in trained_range_warnings(momenta, sections["data"].momenta):
        print(f"warning: {warning}", file=sys.stderr, flush=True)
    source = (f"bologan.generate: {sections['model'].particle} generator {ref.prefix.name} "
              f"({sections['model'].generator}), seed {args.seed}, {args.precision}")
    showers, clipped = generate_showers(generator, sections, momenta, args.events_per_energy, args.seed,
                                        args.batch_size, source)

    write_output(out, showers, clipped)
    part = showers.particle
    etot = showers.voxels_mev.sum(axis=1, dtype=np.float64)
    print(f"wrote {len(showers)} {part.name} showers ({part.n_voxels} voxels, MeV) from {ref.prefix.name} "
          f"(config: {ref.config_found_by}) -> {out}")
    print(f"{'momentum [MeV]':>15} {'showers':>8} {'mean Etot/Ekin':>15}")
    for i, p in enumerate(momenta):
        n = args.events_per_energy
        rows = slice(i * n, (i + 1) * n)
        print(f"{p:>15.6g} {n:>8d} {etot[rows].mean() / part.ekin_mev(p):>15.4f}")
    if clipped:
        frac = clipped / showers.voxels_mev.size
        print(f"note: {clipped} negative voxel values ({frac:.3%} of all voxels) were set to 0 MeV "
              f"(the swish output layer reaches -0.28 x Ekin; docs/generation.md)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
