"""Score every checkpoint of a training run against Geant4 showers and keep the best one.

For each checkpoint: restore the generator once, generate showers at every momentum present in
the reference file and score them against the reference with ``bologan.metrics``: chi2/NDF of
the total energy (BoloGAN's rule and the overflow variant), W1, KS, and the CaloChallenge
high-level-feature separation powers, CaloChallenge's FPD and KPD (x 10^3). The checkpoint with the lowest
``bologan.metrics.SELECTION_METRIC`` (ties: the later one) is copied to ``EVAL_DIR/best_checkpoint/``.

Outputs in EVAL_DIR (default TRAIN_DIR/eval), each replaced atomically:
    eval.parquet      one row per checkpoint (common.rundir.EVAL_SCHEMA), rewritten after each
    per_energy.csv    one row per (checkpoint, momentum)
    chi2_ndf.png/.pdf the selecting chi2/NDF (with overflow bins) against iteration, best starred
    best.json         the best iteration and its scores
    best_checkpoint/  ckpt-<best>.* copied from TRAIN_DIR/checkpoints

The generation step is injected (``GenerateFn``) so the evaluation logic runs without
TensorFlow; ``main`` wires it to ``bologan.model``.
"""
from __future__ import annotations

import argparse
import csv
import io
import math
import shutil
import sys
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Protocol, Sequence

import numpy as np

from common.atomic import atomic_write_json, atomic_write_text
from common.cli import Parser, comma_list
from common.errors import UserError, main_guard
from common.vocab import BEST_JSON, CHECKPOINT_PREFIX, CHECKPOINT_SUBDIR, EVAL_FILE
from bologan import compare_files
from bologan.selection_plot import plot_chi2_ndf
from bologan.momenta import SYNTAX, momenta_argument, parse_momentum_range, restrict
from bologan.metrics import (DEFAULT_BINS, SELECTION_METRIC, CheckpointScore, EnergyScore, Reference,
                             best_iteration, score_showers)

if TYPE_CHECKING:
    from common.rundir import EvalRecord

GenerateFn = Callable[[int, np.ndarray], np.ndarray]
"""(iteration, momentum_mev of shape (N,)) -> voxel energies in MeV of shape (N, n_voxels).
Called once per checkpoint with every momentum to generate, so the generator is restored once."""

EVAL_SUBDIR = "eval"
BEST_DIR = "best_checkpoint"
MAX_DISTINCT_MOMENTA = 100    # more than this means a continuous spectrum, not a grid


class ReferenceShowers(Protocol):
    """What the evaluation needs from ``bologan.dataio.Showers``."""
    momentum_mev: np.ndarray      # (N,) MeV
    voxels_mev: np.ndarray        # (N, n_voxels) MeV


@dataclass
class CheckpointResult:
    record: "EvalRecord"
    per_energy: list[EnergyScore]
    score: CheckpointScore | None = None      # everything, incl. per-feature separation powers


@dataclass
class EvaluationResult:
    results: list[CheckpointResult] = field(default_factory=list)

    @property
    def records(self) -> list["EvalRecord"]:
        return [r.record for r in self.results]

    @property
    def best_iteration(self) -> int:
        return best_iteration(self.records)

    def best(self) -> CheckpointResult:
        it = self.best_iteration
        return next(r for r in self.results if r.record.iteration == it)


def evaluate_checkpoints(reference: ReferenceShowers, iterations: Sequence[int], generate_fn: GenerateFn,
                         particle: str, events_per_energy: int | None = None, bins: int = DEFAULT_BINS,
                         on_checkpoint: Callable[[CheckpointResult], None] | None = None,
                         fpd_kpd: bool = True) -> EvaluationResult:
    """Generate and score every iteration in ``iterations`` (in the order given).

    ``events_per_energy`` showers are generated per reference momentum; by default as many as
    the reference holds at that momentum. ``on_checkpoint`` sees each result as it is ready.
    ``fpd_kpd`` False leaves FPD and KPD NaN (they cost seconds per checkpoint).
    """
    from common.rundir import EvalRecord  # pyarrow is only needed once there is something to score

    if np.asarray(reference.momentum_mev).size == 0:
        raise UserError("the reference holds no showers")
    scoring = Reference.from_showers(particle, reference.momentum_mev, reference.voxels_mev)
    ref = scoring.etot_by_momentum
    if len(ref) > MAX_DISTINCT_MOMENTA:
        raise UserError(f"the reference has {len(ref)} distinct momenta; evaluation needs showers "
                        f"on a momentum grid (at most {MAX_DISTINCT_MOMENTA} values)")
    momenta = np.array(sorted(ref), dtype=np.float64)
    counts = np.array([events_per_energy or ref[p].size for p in momenta], dtype=np.int64)
    requested = np.repeat(momenta, counts)

    out = EvaluationResult()
    for it in iterations:
        voxels = np.asarray(generate_fn(int(it), requested))
        if voxels.ndim != 2 or voxels.shape[0] != requested.size:
            raise RuntimeError(f"iteration {it}: generator returned shape {voxels.shape}, "
                               f"expected ({requested.size}, n_voxels)")
        per_energy, total = score_showers(scoring, requested, voxels, bins, fpd_kpd)
        result = CheckpointResult(record=EvalRecord(**total.eval_fields(int(it))), per_energy=per_energy,
                                  score=total)
        out.results.append(result)
        if on_checkpoint is not None:
            on_checkpoint(result)
    return out


def select_iterations(available: Sequence[int], iterations: Sequence[int] | None = None,
                      every: int | None = None) -> list[int]:
    """Checkpoints to evaluate: all, the listed ones, or those at multiples of ``every``."""
    available = sorted(set(int(i) for i in available))
    if iterations:
        missing = sorted(set(iterations) - set(available))
        if missing:
            raise UserError(f"no checkpoint for iteration(s) {', '.join(map(str, missing))} "
                            f"(available: {_short_list(available)})")
        return sorted(set(int(i) for i in iterations))
    if every is not None:
        if every < 1:
            raise UserError("--every must be >= 1")
        chosen = [i for i in available if i % every == 0]
        if not chosen:
            raise UserError(f"no checkpoint at a multiple of {every} (available: {_short_list(available)})")
        return chosen
    return available


def _short_list(values: Sequence[int], head: int = 8) -> str:
    if len(values) <= head:
        return ", ".join(map(str, values))
    return ", ".join(map(str, values[:head])) + f", ... ({len(values)} in all)"


def checkpoint_files(checkpoint_dir: Path, iteration: int) -> list[Path]:
    """The files of checkpoint ``ckpt-<iteration>`` (index and data shards)."""
    # "ckpt-30.*" cannot match "ckpt-300.index": the dot must follow the number directly.
    return sorted(p for p in checkpoint_dir.glob(f"{CHECKPOINT_PREFIX}-{iteration}.*") if p.is_file())


def copy_checkpoint(checkpoint_dir: Path, iteration: int, dest: Path) -> list[Path]:
    """Copy ``ckpt-<iteration>.*`` into ``dest`` (replaced as a whole); returns the copies.

    A ``checkpoint`` state file naming it is written too, so ``tf.train.latest_checkpoint(dest)``
    finds it.
    """
    files = checkpoint_files(checkpoint_dir, iteration)
    if not files:
        raise UserError(f"{checkpoint_dir}: no files for {CHECKPOINT_PREFIX}-{iteration}")
    dest.parent.mkdir(parents=True, exist_ok=True)
    # Build the new directory beside the old one, then swap, so a crash never leaves a half copy
    # under the final name.
    staging = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", dir=dest.parent))
    try:
        for f in files:
            shutil.copy2(f, staging / f.name)
        name = f"{CHECKPOINT_PREFIX}-{iteration}"
        (staging / "checkpoint").write_text(
            f'model_checkpoint_path: "{name}"\nall_model_checkpoint_paths: "{name}"\n')
        old = None
        if dest.exists():
            old = dest.parent / f".{dest.name}.old"
            if old.exists():
                shutil.rmtree(old)
            dest.rename(old)
        staging.rename(dest)
        if old is not None:
            shutil.rmtree(old)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return [dest / f.name for f in files]


def write_eval_parquet(path: Path, records: Sequence["EvalRecord"]) -> None:
    from common.atomic import atomic_write_parquet
    from common.rundir import EVAL_SCHEMA, records_table

    atomic_write_parquet(path, records_table(records, EVAL_SCHEMA))


PER_ENERGY_COLUMNS = ("iteration",) + tuple(EnergyScore.__dataclass_fields__)


def write_per_energy_csv(path: Path, result: EvaluationResult) -> None:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(PER_ENERGY_COLUMNS)
    for r in result.results:
        for s in r.per_energy:
            row = asdict(s)
            writer.writerow([r.record.iteration] + [row[c] for c in PER_ENERGY_COLUMNS[1:]])
    atomic_write_text(path, buf.getvalue())


def _format_row(rec: "EvalRecord") -> str:
    return (f"{rec.iteration:>10d}  {rec.chi2_ndf:>10.4g}  {rec.chi2_ndf_overflow:>10.4g}  "
            f"{100 * rec.out_of_range_fraction:>8.2f}  {rec.w1:>10.4g}  {rec.ks:>6.4f}  "
            f"{rec.fpd:>9.4g}  {rec.kpd:>9.3g}  {rec.sep_power_max:>7.4f}")


TABLE_HEADER = (f"{'iteration':>10}  {'chi2/NDF':>10}  {'+overflow':>10}  {'out [%]':>8}  "
                f"{'W1 [GeV]':>10}  {'KS':>6}  {'FPD x1e3':>9}  {'KPD x1e3':>9}  {'sep max':>7}")


def run_evaluation(train_dir: str | Path, reference: ReferenceShowers, iterations: Sequence[int],
                   generate_fn: GenerateFn, particle: str, out_dir: str | Path | None = None,
                   events_per_energy: int | None = None, seed: int | None = None,
                   reference_path: str | None = None, bins: int = DEFAULT_BINS,
                   echo: Callable[[str], None] | None = print, fpd_kpd: bool = True) -> EvaluationResult:
    """Evaluate ``iterations``, write every output, copy the best checkpoint; return the scores."""
    train_dir = Path(train_dir)
    out = Path(out_dir) if out_dir is not None else train_dir / EVAL_SUBDIR
    say = echo or (lambda _line: None)
    done: list[EvalRecord] = []

    def progress(result: CheckpointResult) -> None:
        done.append(result.record)
        # Rewritten after every checkpoint so an interrupted scan keeps what it scored.
        write_eval_parquet(out / EVAL_FILE, done)
        say(_format_row(result.record))

    say(TABLE_HEADER)
    result = evaluate_checkpoints(reference, iterations, generate_fn, particle, events_per_energy,
                                  bins, on_checkpoint=progress, fpd_kpd=fpd_kpd)
    best = result.best()
    write_per_energy_csv(out / "per_energy.csv", result)
    plot_chi2_ndf(result.records, best.record.iteration, out / "chi2_ndf",
                  title=f"{particle}: total-energy agreement per checkpoint")
    copied = copy_checkpoint(train_dir / CHECKPOINT_SUBDIR, best.record.iteration, out / BEST_DIR)
    atomic_write_json(out / BEST_JSON, {
        **asdict(best.record),
        "particle": particle,
        "checkpoint": f"{BEST_DIR}/{CHECKPOINT_PREFIX}-{best.record.iteration}",
        "files": [p.name for p in copied],
        "evaluated_iterations": [r.iteration for r in result.records],
        "events_per_energy": events_per_energy,
        "bins": bins,
        "seed": seed,
        "train_dir": str(train_dir),
        "reference": reference_path,
    })
    b = best.record
    if not math.isfinite(b.chi2_ndf):
        say(f"note: BoloGAN's chi2/NDF is {b.chi2_ndf} at the best checkpoint (at some momentum no "
            f"generated shower falls in the reference range); {SELECTION_METRIC} chose it")
    say(f"best: iteration {b.iteration} (lowest {SELECTION_METRIC})  chi2/NDF with overflow "
        f"{b.chi2_ndf_overflow:.4g} ({100 * b.out_of_range_fraction:.2f} % of showers outside the range)  "
        f"BoloGAN chi2/NDF {b.chi2_ndf:.4g} (chi2 {b.chi2:.4g} / NDF {b.ndf})  W1 {b.w1:.4g} GeV  "
        f"KS {b.ks:.4f}  FPD x1e3 {b.fpd:.4g} +- {b.fpd_err:.2g}  KPD x1e3 {b.kpd:.3g} +- {b.kpd_err:.2g}  "
        f"-> {out / BEST_DIR}")
    return result


# --------------------------------------------------------------------------- command line

EPILOG = """\
example:
  python -m bologan.evaluate results/local/photons-1 --reference data/photons_test.parquet \\
      --every 1000 --events-per-energy 5000
  python -m bologan.evaluate --generated gen.hdf5 --reference dataset_1_photons_2.hdf5 --json

TRAIN_DIR must hold checkpoints/ckpt-<iteration>.* and the training configuration; the reference
must be showers of the particle the run was trained on. With --generated, two CaloChallenge
dataset-1 files are compared (FPD, KPD, chi2/NDF; --classifier adds the AUC). Exit codes: 0 ok,
2 bad input.
"""


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        "python -m bologan.evaluate",
        description="Score the checkpoints of a training run by the chi2/NDF of the generated total "
                    "shower energy against Geant4 showers, and keep the best checkpoint.",
        epilog=EPILOG)
    parser.add_argument("train_dir", metavar="TRAIN_DIR", nargs="?",
                        help="a bologan.train or scaling.run directory, or an ensemble member's RUN/members/<k> "
                             "(not with --generated)")
    parser.add_argument("--reference", required=True, metavar="DATA.parquet",
                        help="Geant4 showers to compare with (held-out showers of the same particle); "
                             "with --generated a CaloChallenge HDF5 file")
    parser.add_argument("--out", metavar="EVAL_DIR", help="output directory (default: TRAIN_DIR/eval)")
    parser.add_argument("--events-per-energy", type=int, metavar="N",
                        help="showers generated per momentum (default: as many as the reference has there)")
    pick = parser.add_mutually_exclusive_group()
    pick.add_argument("--iterations", type=comma_list(int, "integer"), metavar="A,B,C",
                      help="evaluate only these iterations")
    pick.add_argument("--every", type=int, metavar="K", help="evaluate checkpoints at multiples of K iterations")
    parser.add_argument("--seed", type=int, default=0,
                        help="noise seed, the same for every checkpoint so their scores differ by the "
                             "model, not the draw")
    parser.add_argument("--fpd-kpd", action=argparse.BooleanOptionalAction, default=True,
                        help="CaloChallenge FPD and KPD per checkpoint (seconds each; default: on)")
    compare_files.add_arguments(parser)
    parser.add_argument("--momenta", type=momenta_argument(), metavar="LO..HI",
                        help=f"score only the reference momenta in this range ({SYNTAX}; default: the "
                             f"range the run trained on, [data] momenta)")
    return parser


def _read_reference(path: Path) -> Any:
    if not path.is_file():
        raise UserError(f"{path}: reference file not found")
    from bologan import dataio

    try:
        return dataio.read_showers(path)
    except UserError:
        raise
    except (OSError, ValueError, KeyError) as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise UserError(f"{path}: unreadable reference ({first})") from None


@main_guard
def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.generated is not None:
        return compare_files.run(args)
    if args.train_dir is None:
        raise UserError("give TRAIN_DIR (score its checkpoints) or --generated GEN.hdf5 (score a file)")
    train_dir = Path(args.train_dir)
    if not train_dir.is_dir():
        raise UserError(f"{train_dir}: training directory not found")
    if args.events_per_energy is not None and args.events_per_energy < 1:
        raise UserError("--events-per-energy must be >= 1")
    reference = _read_reference(Path(args.reference))

    from bologan.tfsetup import quiet_tensorflow

    quiet_tensorflow()
    from bologan import model  # TensorFlow: imported only once the inputs look sane

    available = model.list_checkpoints(train_dir)
    if not available:
        raise UserError(f"{train_dir}: no checkpoints in {CHECKPOINT_SUBDIR}/")
    iterations = select_iterations(available, args.iterations, args.every)
    cfg = model.load_train_config(train_dir)
    particle = cfg["model"].particle
    if reference.particle.name != particle:
        raise UserError(f"{args.reference}: showers of {reference.particle.name}, but the run in "
                        f"{train_dir} was trained on {particle}")
    label_kind = cfg["data"].label
    try:
        reference = restrict(reference, args.momenta or parse_momentum_range(cfg["data"].momenta), args.reference)
    except ValueError as exc:
        raise UserError(str(exc)) from None

    def generate(iteration: int, momentum_mev: np.ndarray) -> np.ndarray:
        generator = model.restore_generator(train_dir, iteration)
        return model.sample_showers(generator, cfg["model"], label_kind, momentum_mev, args.seed)

    run_evaluation(train_dir, reference, iterations, generate, particle, out_dir=args.out,
                   events_per_energy=args.events_per_energy, seed=args.seed,
                   reference_path=str(args.reference), fpd_kpd=args.fpd_kpd)
    return 0


if __name__ == "__main__":
    sys.exit(main())
