"""The flags of ``python -m bologan.bench --inference`` and what they run (``bologan.inference.inference``)."""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Sequence

from bologan.inference import inference
from bologan.inference.inference import InferenceSettings, run_benchmark
from bologan.inference.inference_report import format_summary, plot_result
from common.atomic import atomic_write_json
from common.cli import Parser, add_json_flag, comma_list
from common.errors import UserError
from common.vocab import PARTICLE_NAMES

PROG = "python -m bologan.bench --inference"


def add_inference_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the benchmark's flags (and those of the [energy] settings) to ``parser``."""
    from bologan.generate import add_checkpoint_arguments
    from common.settings import add_section_arguments
    from energy.config import ENERGY_SECTIONS

    d = InferenceSettings()
    g = parser.add_argument_group("inference benchmark")
    g.add_argument("--inference", action="store_true", help="run this benchmark (the mode of bologan.bench)")
    g.add_argument("--particle", choices=PARTICLE_NAMES, default=d.particle,
                   help="generator to build when no checkpoint is given")
    g.add_argument("--xla", action=argparse.BooleanOptionalAction, default=d.xla,
                   help="compile the generator call with XLA (jit_compile)")
    g.add_argument("--precision", choices=inference.PRECISIONS, default=d.precision,
                   help="float32, bf16 or fp16 (the generator's compute; weights stay float32)")
    g.add_argument("--threads", type=int, default=d.threads,
                   help="TensorFlow intra-op threads (0 = TensorFlow's default)")
    g.add_argument("--seed", type=int, default=d.seed, help="noise and weight seed")
    add_checkpoint_arguments(g, required=False)
    g.add_argument("--batch-sizes", type=comma_list(int, "batch size"), metavar="B1,B2,...",
                   default=list(d.batch_sizes), help="batch sizes for throughput")
    g.add_argument("--on-demand-calls", type=int, default=d.on_demand_calls, metavar="N",
                   help="timed batch-1 calls for the latency median and p99")
    g.add_argument("--warmup-calls", type=int, default=d.warmup_calls, metavar="N",
                   help="untimed calls before each measurement")
    g.add_argument("--min-time-s", type=float, default=d.min_time_s, metavar="S",
                   help="time at least this long per batch size")
    g.add_argument("--min-calls", type=int, default=d.min_calls, metavar="N",
                   help="and at least this many calls")
    g.add_argument("--max-time-s", type=float, default=d.max_time_s, metavar="S",
                   help="stop a batch size after this long even with fewer calls")
    g.add_argument("--momentum-mev", type=float, default=d.momentum_mev, metavar="P",
                   help="incident momentum of every generated shower, MeV")
    g.add_argument("--out", metavar="FILE.json", help="write the JSON result here (default: stdout)")
    g.add_argument("--plot", metavar="STEM", help="write STEM.png and STEM.pdf (default: --out without .json)")
    g.add_argument("--no-plot", action="store_true", help="do not draw the figure")
    g.add_argument("--energy-config", metavar="TOML", help="read the [energy] table of this file")
    add_json_flag(parser, "the result (also with --out)")
    add_section_arguments(parser, ENERGY_SECTIONS)


def build_parser() -> Parser:
    parser = Parser(prog=PROG, doc=inference.__doc__)
    add_inference_arguments(parser)
    return parser


def settings_from_args(args: argparse.Namespace) -> InferenceSettings:
    return InferenceSettings(
        particle=args.particle, batch_sizes=list(args.batch_sizes), on_demand_calls=args.on_demand_calls,
        warmup_calls=args.warmup_calls, min_time_s=args.min_time_s, min_calls=args.min_calls,
        max_time_s=args.max_time_s, momentum_mev=args.momentum_mev, xla=args.xla, precision=args.precision,
        threads=args.threads, seed=args.seed)


def _check_out(out: Path) -> None:
    """Fail now, not after minutes of benchmarking."""
    if out.is_dir():
        raise UserError(f"--out {out}: is a directory; give a file name such as inference.json")
    probe = out.parent
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    if not os.access(probe, os.W_OK):
        raise UserError(f"--out {out}: cannot write in {probe}")


def run_from_args(args: argparse.Namespace) -> int:
    """The benchmark for already-parsed flags (those of ``add_inference_arguments``)."""
    from common.settings import resolve_sections
    from energy.config import ENERGY_SECTIONS

    settings = settings_from_args(args)
    settings.check()
    energy_cfg = resolve_sections(ENERGY_SECTIONS, args.energy_config, args)["energy"]
    checkpoint = None
    if args.checkpoint is not None:
        from bologan.generate import resolve_checkpoint

        checkpoint = resolve_checkpoint(args.checkpoint, args.iteration, args.config_from)
    elif args.iteration is not None or args.config_from is not None:
        raise UserError("--iteration and --config-from need --checkpoint")
    out = Path(args.out) if args.out else None
    if out is not None:
        _check_out(out)
    stem = None
    if not args.no_plot:
        stem = Path(args.plot) if args.plot else (out.with_suffix("") if out is not None else None)

    result = run_benchmark(settings, energy_cfg, checkpoint,
                           echo=lambda line: print(line, file=sys.stderr, flush=True))
    if stem is not None:
        result["plots"] = [str(p) for p in plot_result(result, stem)]
    if out is not None:
        atomic_write_json(out, result)
    if out is None or args.json:
        print(json.dumps(result, indent=2, sort_keys=True, default=str), flush=True)
    print(format_summary(result), file=sys.stderr, flush=True)
    if out is not None:
        print(f"result: {out}" + (f"; plots: {', '.join(result['plots'])}" if stem else ""), file=sys.stderr)
    return 0


def main(argv: Sequence[str]) -> int:
    """``python -m bologan.bench --inference ...`` (``argv`` with or without ``--inference``);
    bad input raises ``UserError`` for the caller's ``main_guard``."""
    return run_from_args(build_parser().parse_args(list(argv)))
