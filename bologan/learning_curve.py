"""Learning-curve check: does the GAN learn as BoloGAN does? (prints numbers; asserts nothing).

Trains one GAN on a fixed synthetic set on one replica and scores its generator at fixed
iterations against a held-out synthetic reference, with the package's own scoring
(``bologan.metrics.score_showers``): total-energy W1 (GeV, mean over momenta), the fraction of
generated showers outside the chi2 range, BoloGAN's chi2/NDF, and the feature Fréchet number.

Example (the check of docs/measured.md, BoloGAN's photon settings; about 11 iterations/s on one
quiet core)::

    python -m bologan.bench learning-curve --iterations 4000 --at 1000,2000,4000
    python -m bologan.bench learning-curve --iterations 1000 --generator-norm batch_statistics --json

Defaults: 30,000 photons (synthetic, seed 10) to train on, 7,500 (seed 99) as the reference,
one thread, [model]/[train] defaults (bn_swish, batch 128, n_disc 5, lambda 10, Adam 1e-4 /
beta1 0.55, label Ekin/Ekin_max, voxels / Ekin). As many showers are generated per momentum as
the reference holds there, with noise seed 0 at every scored iteration; negative voxels are
scored as generated (as bologan.evaluate does).
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import time
from typing import Any

import numpy as np

from bologan.config import GENERATOR_NORMS, GENERATOR_PARTICLE_DEFAULT, GENERATOR_VARIANTS, ModelConfig
from bologan.momenta import MOMENTA_HELP, momenta_argument
from common.cli import Parser, add_json_flag, comma_list
from common.errors import UserError, main_guard
from common.vocab import PARTICLE_NAMES, PARTICLE_PHOTONS

MODE = "learning-curve"


def build_parser() -> Parser:
    p = Parser(prog=f"python -m bologan.bench {MODE}", doc=__doc__)
    p.add_argument("--iterations", type=int, default=1000, help="iterations to train")
    p.add_argument("--at", type=comma_list(int, "iteration"), metavar="I1,I2,...",
                   help="iterations to score at (default: the last one)")
    p.add_argument("--particle", choices=PARTICLE_NAMES, default=PARTICLE_PHOTONS)
    p.add_argument("--generator", choices=(GENERATOR_PARTICLE_DEFAULT, *GENERATOR_VARIANTS),
                   default=GENERATOR_PARTICLE_DEFAULT, help="generator layers ([model] generator)")
    p.add_argument("--generator-norm", choices=GENERATOR_NORMS, default=ModelConfig.generator_norm,
                   help="BatchNorm while training ([model] generator_norm)")
    p.add_argument("--events", type=int, default=30000, help="synthetic showers to train on")
    p.add_argument("--seed", type=int, default=10, help="seed of the training showers and of the training")
    p.add_argument("--reference-events", type=int, default=7500, help="synthetic reference showers")
    p.add_argument("--reference-seed", type=int, default=99, help="seed of the reference showers")
    p.add_argument("--momenta", type=momenta_argument(), default=None, metavar="LO..HI", help=MOMENTA_HELP)
    p.add_argument("--threads", type=int, default=1, help="TensorFlow intra-op threads")
    p.add_argument("--noise-seed", type=int, default=0, help="generation noise seed at every scored iteration")
    add_json_flag(p, "one JSON line per scored iteration instead of text")
    return p


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = build_parser()
    args = p.parse_args(argv)
    if args.iterations < 1 or args.events < 1 or args.reference_events < 1 or args.threads < 0:
        p.error("--iterations, --events and --reference-events must be >= 1, --threads >= 0")
    args.at = sorted(set(args.at or [args.iterations]))
    if args.at[0] < 1 or args.at[-1] > args.iterations:
        p.error(f"--at: iterations must lie in 1..{args.iterations} (--iterations)")
    return args


def quality_figures(reference: Any, momentum_mev: np.ndarray, voxels_mev: np.ndarray) -> dict[str, float]:
    """The figures this check prints, from ``bologan.metrics.score_showers``: the one place that
    says which score is which. ``fpd_x1e3``/``kpd_x1e3`` are CaloChallenge's FPD and KPD (x 10^3,
    bologan.physics_distance); ``frechet_hlf_std`` the package's earlier standardised distance."""
    from bologan.metrics import score_showers

    _, total = score_showers(reference, momentum_mev, voxels_mev)
    return {"w1_gev": total.w1_gev, "out_of_range_fraction": total.out_of_range_fraction,
            "chi2_ndf": total.chi2_ndf,
            "fpd_x1e3": total.features.distances.fpd_x1e3 if total.features else math.nan,
            "fpd_err_x1e3": total.features.distances.fpd_err_x1e3 if total.features else math.nan,
            "kpd_x1e3": total.features.distances.kpd_x1e3 if total.features else math.nan,
            "kpd_err_x1e3": total.features.distances.kpd_err_x1e3 if total.features else math.nan,
            "frechet_hlf_std": total.features.frechet_hlf_std if total.features else math.nan}


def _showers(particle: str, events: int, seed: int, momenta):
    from bologan.config import DataConfig
    from bologan.pipeline import load_showers

    return load_showers(DataConfig(synthetic_events=events, momenta=str(momenta or "")), particle, seed)


def _line(row: dict[str, Any]) -> str:
    return (f"iteration {row['iteration']:>6}  {row['train_time_s']:8.1f} s  W1 {row['w1_gev']:10.1f} GeV  "
            f"out of range {row['out_of_range_fraction']:.2f}  chi2/NDF {row['chi2_ndf']:8.3g}  "
            f"FPD {row['fpd_x1e3']:.4g} +- {row['fpd_err_x1e3']:.2g}  KPD {row['kpd_x1e3']:.3g} +- "
            f"{row['kpd_err_x1e3']:.2g} (x1e3)")


@main_guard
def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from bologan.config import DataConfig, TrainConfig
    from bologan.metrics import Reference

    model_cfg = ModelConfig(particle=args.particle, generator=args.generator, generator_norm=args.generator_norm)
    train_cfg = TrainConfig(iterations=args.iterations, seed=args.seed, threads=args.threads)
    data_cfg = DataConfig()
    try:
        train = _showers(args.particle, args.events, args.seed, args.momenta)
        ref = _showers(args.particle, args.reference_events, args.reference_seed, args.momenta)
    except ValueError as exc:
        raise UserError(str(exc)) from None
    scoring = Reference.from_showers(args.particle, ref.momentum_mev, ref.voxels_mev)
    momenta = np.array(sorted(scoring.etot_by_momentum), dtype=np.float64)
    requested = np.repeat(momenta, [scoring.etot_by_momentum[p].size for p in momenta])

    from bologan.tfsetup import configure, quiet_tensorflow

    quiet_tensorflow()
    configure(args.threads, args.seed)
    from bologan.model import Gan, sample_showers
    from bologan.pipeline import IterationBatches
    from bologan.step import WganGpStep

    gan = Gan(model_cfg, train_cfg)
    step = WganGpStep(gan, model_cfg, train_cfg).compile()
    batches = iter(IterationBatches(train, data_cfg, train_cfg.n_disc, train_cfg.batch_size, args.seed).dataset())
    setting = {"particle": args.particle, "generator": model_cfg.generator, "generator_norm": model_cfg.generator_norm,
               "events": args.events, "seed": args.seed, "reference_events": args.reference_events,
               "reference_seed": args.reference_seed, "momenta": str(args.momenta or "all"), "threads": args.threads,
               "batch_size": train_cfg.batch_size, "n_disc": train_cfg.n_disc}
    if not args.json:
        print("learning curve: " + ", ".join(f"{k} {v}" for k, v in setting.items()), flush=True)
    train_s = 0.0
    for i in range(1, args.iterations + 1):
        t0 = time.perf_counter()
        real, label = next(batches)
        out = step(real, label)
        float(out["d_loss"])   # wait for the iteration: the clock times training only
        train_s += time.perf_counter() - t0
        if i not in args.at:
            continue
        voxels = sample_showers(gan.generator, model_cfg, data_cfg.label, requested, args.noise_seed)
        row = {"iteration": i, "train_time_s": train_s, "iterations_per_s": i / train_s,
               **quality_figures(scoring, requested, voxels), **setting}
        print(json.dumps(row) if args.json else _line(row), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
