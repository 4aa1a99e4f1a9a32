"""Make, import, inspect and benchmark shower files: ``python -m bologan.data generate|convert|describe|bench``.

Every output is a Parquet shower file (``bologan.dataio``), written atomically and only after
the input has been read and validated, so a failed command leaves any previous file intact.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

from bologan.dataio import Showers, describe_showers, read_showers, write_showers
from common.cli import Parser, comma_list
from common.errors import UserError, main_guard
from bologan.geometry import MOMENTA_MEV, PARTICLE_NAMES
from bologan.momenta import SEPARATOR, momenta_argument, restrict

EPILOG = """examples:
  python -m bologan.data generate --particle photons --events 20000 --seed 10 --out photons.parquet
  python -m bologan.data convert --from hdf5 --particle pions dataset_1_pions_1.hdf5 --out pions.parquet
  python -m bologan.data convert --from hdf5 --particle photons --momenta 2^12..2^22 dataset_1_photons_1.hdf5 --out high.parquet
  python -m bologan.data convert --from csv --particle pions --eta 20_25 csvFiles/ --out pions.parquet
  python -m bologan.data describe photons.parquet --json
  python -m bologan.data bench photons.parquet --run results/local/horovod-weak-n1
"""


def _parser() -> argparse.ArgumentParser:
    parser = Parser("python -m bologan.data", epilog=EPILOG,
                    description="Generate synthetic showers, import CaloChallenge HDF5 or FastCaloGAN "
                                "CSV files, and describe Parquet shower files (energies in MeV).")
    sub = parser.add_subparsers(dest="command", metavar="{generate,convert,describe,bench}")
    sub.required = True

    gen = sub.add_parser("generate", help="write physics-inspired synthetic showers", epilog=EPILOG,
                         description="Write synthetic showers (see bologan.synthetic for the model).")
    gen.add_argument("--particle", required=True, choices=PARTICLE_NAMES)
    gen.add_argument("--events", type=int, default=20000, help="number of showers")
    gen.add_argument("--seed", type=int, default=10, help="random seed")
    gen.add_argument("--momenta", type=_momenta, default=None, metavar="P1,P2,...|LO..HI",
                     help="momenta in MeV, or the dataset-1 momenta in a range LO..HI (MeV, each end a "
                          "number or 2^K, both included; e.g. 2^8..2^12) (default: the 15 dataset-1 "
                          "momenta 2^8..2^22 MeV)")
    gen.add_argument("--out", required=True, type=Path, help="output Parquet file")

    conv = sub.add_parser("convert", help="import CaloChallenge HDF5 or FastCaloGAN CSV files", epilog=EPILOG,
                          description="Convert a CaloChallenge dataset-1 HDF5 file, or FastCaloGAN "
                                      "per-momentum CSV files (a directory or a list of files), to Parquet.")
    conv.add_argument("--from", dest="fmt", required=True, choices=("hdf5", "csv"))
    conv.add_argument("--particle", required=True, choices=PARTICLE_NAMES)
    conv.add_argument("--eta", type=_eta, default=(20, 25), metavar="A_B",
                      help="CSV eta slice in the file names, in units of 0.01 (default: 20_25)")
    conv.add_argument("--momenta", type=momenta_argument(), default=None, metavar="LO..HI",
                      help="keep only the showers of these momenta (MeV, each end a number or 2^K, both "
                           "included; e.g. 2^12..2^22) (default: all)")
    conv.add_argument("inputs", nargs="+", type=Path, metavar="INPUT",
                      help="HDF5 file, or CSV directory / files")
    conv.add_argument("--out", required=True, type=Path, help="output Parquet file")

    desc = sub.add_parser("describe", help="summarise a Parquet shower file", epilog=EPILOG,
                          description="Counts, mean total energy, sparsity and layer fractions per momentum.")
    desc.add_argument("file", type=Path)
    desc.add_argument("--particle", choices=PARTICLE_NAMES, default=None,
                      help="fail unless the file holds this particle")
    desc.add_argument("--json", action="store_true", help="print JSON instead of a table")

    from bologan.data_bench import add_arguments

    bench = sub.add_parser("bench", help="load time and memory per file format; tf.data input rate vs training",
                           epilog=EPILOG, description="Write FILE's showers as CSV, HDF5 and Parquet, time and "
                           "meter loading each, and measure the input pipeline's showers/s (bologan.data_bench).")
    add_arguments(bench)
    return parser


def _momenta(text: str) -> list[float]:
    """``--momenta``: a comma list of momenta, or a range (bologan.momenta) of grid momenta."""
    if SEPARATOR not in text:
        return comma_list(float, "momentum in MeV")(text)
    grid = momenta_argument()(text)
    selected = grid.select(MOMENTA_MEV) if grid is not None else list(MOMENTA_MEV)
    if not selected:
        raise argparse.ArgumentTypeError(f"--momenta: {text!r} holds none of the dataset-1 momenta "
                                         f"{MOMENTA_MEV[0]:g}..{MOMENTA_MEV[-1]:g} MeV")
    return selected


def _eta(text: str) -> tuple[int, int]:
    parts = text.split("_")
    if len(parts) != 2 or not all(p.isdigit() for p in parts):
        raise argparse.ArgumentTypeError(f"--eta: {text!r} is not of the form A_B, e.g. 20_25")
    return int(parts[0]), int(parts[1])


def _check_out(out: Path) -> None:
    if out.is_dir():
        raise UserError(f"{out}: is a directory; give a file name for --out")


def _summary(out: Path, showers: Showers, seconds: float) -> str:
    momenta = sorted(set(showers.momentum_mev.tolist()))
    size = out.stat().st_size
    return (f"wrote {out}: {len(showers)} {showers.particle.name} showers, {showers.particle.n_voxels} voxels, "
            f"{len(momenta)} momenta {_fmt_mev(momenta[0])}..{_fmt_mev(momenta[-1])}, "
            f"{size / 1e6:.1f} MB, {seconds:.1f} s; source: {showers.source}")


def _fmt_mev(mev: float) -> str:
    for unit, scale in (("TeV", 1e6), ("GeV", 1e3)):
        if mev >= scale:
            return f"{mev / scale:.3g} {unit}"
    return f"{mev:.3g} MeV"


def _generate(args: argparse.Namespace) -> int:
    from bologan.synthetic import generate_showers

    _check_out(args.out)
    t0 = time.perf_counter()
    showers = generate_showers(args.particle, args.events, args.seed, args.momenta)
    write_showers(args.out, showers)
    print(_summary(args.out, showers, time.perf_counter() - t0), flush=True)
    return 0


def _convert(args: argparse.Namespace) -> int:
    from bologan import importers

    _check_out(args.out)
    if any(args.out.resolve() == Path(i).resolve() for i in args.inputs):
        raise UserError(f"{args.out}: --out would overwrite the input")
    t0 = time.perf_counter()
    if args.fmt == "hdf5":
        if len(args.inputs) != 1:
            raise UserError(f"convert --from hdf5 takes one input file, got {len(args.inputs)}")
        showers = importers.import_calochallenge_hdf5(args.inputs[0], args.particle)
    else:
        src = args.inputs[0] if len(args.inputs) == 1 else args.inputs
        showers = importers.import_fastcalogan_csv(src, args.particle, eta=args.eta)
    try:
        showers = restrict(showers, args.momenta, str(args.inputs[0]))
    except ValueError as exc:
        raise UserError(f"--momenta {args.momenta}: {exc}") from None
    write_showers(args.out, showers)
    print(_summary(args.out, showers, time.perf_counter() - t0), flush=True)
    return 0


def format_description(name: str, info: dict) -> str:
    """Human-readable table of ``describe_showers`` output."""
    layer_ids = [str(layer[0]) for layer in info["layers"]]
    lines = [
        f"{name}: {info['showers']} {info['particle']} showers (pid {info['pid']}), "
        f"{info['n_voxels']} voxels in {len(layer_ids)} layers",
        f"source: {info['source']}",
        f"zero voxels: {100 * info['zero_fraction']:.1f}%   mean total energy: {info['mean_total_mev']:.1f} MeV",
        "",
    ]
    head = (f"{'p [MeV]':>10} {'Ekin [MeV]':>11} {'showers':>8} {'<Etot> [MeV]':>13} {'Etot/Ekin':>9} "
            f"{'rms/mean':>8} {'zeros':>6}  layer fractions " + " ".join(f"L{lid:>4}" for lid in layer_ids))
    lines.append(head)
    for m in info["momenta"]:
        rel = m["std_total_mev"] / m["mean_total_mev"] if m["mean_total_mev"] > 0 else float("nan")
        fr = " ".join(f"{m['layer_fractions'][lid]:5.3f}" for lid in layer_ids)
        lines.append(f"{m['momentum_mev']:>10.0f} {m['ekin_mev']:>11.1f} {m['showers']:>8d} "
                     f"{m['mean_total_mev']:>13.1f} {m['mean_total_over_ekin']:>9.3f} {rel:>8.3f} "
                     f"{100 * m['zero_fraction']:>5.1f}%  {'':16}{fr}")
    fr = " ".join(f"{info['layer_fractions'][lid]:5.3f}" for lid in layer_ids)
    lines.append(f"{'all':>10} {'':>11} {info['showers']:>8d} {info['mean_total_mev']:>13.1f} "
                 f"{'':>9} {'':>8} {100 * info['zero_fraction']:>5.1f}%  {'':16}{fr}")
    return "\n".join(lines)


def _describe(args: argparse.Namespace) -> int:
    showers = read_showers(args.file, args.particle)
    info = describe_showers(showers)
    if args.json:
        print(json.dumps(info, indent=2))
    else:
        print(format_description(str(args.file), info))
    return 0


@main_guard
def main(argv: list[str] | None = None) -> int:
    try:
        args = _parser().parse_args(argv)
    except SystemExit as exc:  # --help
        return int(exc.code or 0)
    from bologan.data_bench import run_bench

    command = {"generate": _generate, "convert": _convert, "describe": _describe, "bench": run_bench}[args.command]
    try:
        return command(args)
    except BrokenPipeError:
        # `describe ... | head` closed our stdout: not an error, and no traceback at exit.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


if __name__ == "__main__":
    sys.exit(main())
