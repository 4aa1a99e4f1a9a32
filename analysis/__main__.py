"""python -m analysis RUN_OR_STUDY_DIR... --out REPORT_DIR: scaling, energy, projection, plots, report."""
from __future__ import annotations

import argparse
import sys

from common.errors import main_guard

EXAMPLE = """\
example:
  python -m analysis results/local --out results/local/report
  python -m analysis results/cluster-a results/cluster-b --out report \\
      --network infiniband_100g --network ethernet_25g

Run directories (folders with run.json) are found at any depth; all-reduce benchmark files
(allreduce*.json) beside them are used for the communication model. Shipped networks:
infiniband_100g, ethernet_25g (or give a TOML file with a [network] table:
name, bandwidth_gbit_s, latency_us).
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m analysis",
        description="Turn run directories into strong/weak scaling, energy per epoch, a Pareto front, "
                    "projections to many ranks, plots (PNG and PDF), summary.csv/.parquet and "
                    "report.md/report.html.",
        epilog=EXAMPLE, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("paths", nargs="+", metavar="RUN_OR_STUDY_DIR",
                        help="run directories or folders holding them (any depth)")
    parser.add_argument("--out", required=True, metavar="REPORT_DIR",
                        help="report directory (created; a previous report there is replaced)")
    parser.add_argument("--network", action="append", default=[], metavar="FILE_OR_NAME",
                        help="network TOML file (or shipped name) to project to; repeatable. Default: only the "
                             "network fitted to the measured all-reduce benchmark")
    parser.add_argument("--power-run", metavar="RUN_ID", default=None,
                        help="run whose per-rank power timeline is drawn (default: the largest-N run with power)")
    parser.add_argument("--quiet", action="store_true", help="no progress lines")
    return parser


@main_guard
def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from analysis.pipeline import analyse, check_out, write_report
    from analysis.projection import resolve_network_arg

    def progress(msg: str) -> None:
        if not args.quiet:
            print(f"analysis: {msg}", flush=True)

    check_out(args.out)
    networks = [resolve_network_arg(n) for n in args.network]
    result = analyse(args.paths, networks, progress)
    write_report(result, args.out, args.power_run, progress)
    return 0


if __name__ == "__main__":
    sys.exit(main())
