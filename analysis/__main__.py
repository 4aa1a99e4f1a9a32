"""python -m analysis RUN_OR_STUDY_DIR... --out REPORT_DIR: scaling, energy, projection, plots, report."""
from __future__ import annotations

import argparse
import sys

from common.cli import Parser, positive_int
from common.errors import UserError, main_guard
from common.target import target_argument

EXAMPLE = """\
example:
  python -m analysis results/local --out results/local/report
  python -m analysis results/cluster-a results/cluster-b --out report \\
      --network infiniband_100g --network ethernet_25g
  python -m analysis results/local --out results/local/report --campaign-gans 8 --campaign-ranks 2

Run directories (folders with run.json) are found at any depth; all-reduce benchmark files
(allreduce*.json) beside them are used for the communication model. --network takes a
shipped network's name (analysis/projection/networks/), `all` for every shipped one, or a TOML file with
[network], [inter_node] and optionally [intra_node] tables (bandwidth, latency and a source for
each link; see docs/analysis.md).
"""


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        "python -m analysis",
        description="Turn run directories into strong/weak scaling, energy per epoch, a Pareto front, "
                    "projections to many ranks, plots (PNG and PDF), summary.csv/.parquet and "
                    "report.md/report.html.",
        epilog=EXAMPLE)
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
    parser.add_argument("--target", type=target_argument(), metavar="METRIC<=VALUE", default=None,
                        help="quality target for time and energy to target (e.g. chi2_ndf_overflow<=5); default: "
                             "the target the runs were trained with (run.json), if any")
    camp = parser.add_argument_group("campaigns (many GANs: ensembles, job arrays, a plan for M GANs on P ranks)")
    camp.add_argument("--campaign-gans", type=positive_int, metavar="M", default=None,
                      help="plan a campaign of M GANs: makespan and energy of every way to split the ranks")
    camp.add_argument("--campaign-ranks", type=positive_int, metavar="P", default=None,
                      help="ranks of the planned campaign (default: the largest world size measured)")
    camp.add_argument("--gan-iterations", type=positive_int, metavar="B", default=None,
                      help="iterations per trained GAN, the budget of energy per GAN and of the plan "
                           "(default: BoloGAN's 1,000,000)")
    cost = parser.add_argument_group("carbon, cost and checkpoints")
    cost.add_argument("--carbon-intensity-g-per-kwh", type=float, metavar="G", default=None,
                      help="grid carbon intensity, gCO2e/kWh (default: 230, perun's)")
    cost.add_argument("--pue", type=float, metavar="PUE", default=None,
                      help="power usage effectiveness of the site, facility / IT energy (default: 1.0, the machine alone)")
    cost.add_argument("--price-per-kwh", type=float, metavar="PRICE", default=None,
                      help="electricity price per kWh (default: none, no cost column)")
    cost.add_argument("--currency", default="EUR", help="currency of --price-per-kwh (default: %(default)s)")
    cost.add_argument("--mtbf-h", type=float, metavar="HOURS", default=None,
                      help="mean time between failures of a job, hours: the optimal checkpoint interval (Young/Daly)")
    return parser


def carbon_request(args: argparse.Namespace):
    """The CarbonRequest of the flags (defaults where not given); a bad value is a UserError."""
    from analysis.energy.carbon import DEFAULT_CARBON_G_PER_KWH, DEFAULT_PUE, CarbonRequest

    given = tuple(name for name, v in (("carbon", args.carbon_intensity_g_per_kwh), ("pue", args.pue),
                                        ("price", args.price_per_kwh)) if v is not None)
    req = CarbonRequest(
        carbon_intensity_g_per_kwh=DEFAULT_CARBON_G_PER_KWH if args.carbon_intensity_g_per_kwh is None
        else args.carbon_intensity_g_per_kwh,
        pue=DEFAULT_PUE if args.pue is None else args.pue, price_per_kwh=args.price_per_kwh,
        currency=args.currency, given=given)
    try:
        req.check()
    except ValueError as exc:
        raise UserError(str(exc)) from None
    if args.mtbf_h is not None and not (args.mtbf_h > 0 and args.mtbf_h < float("inf")):
        raise UserError(f"--mtbf-h must be > 0 hours, got {args.mtbf_h}")
    return req


@main_guard
def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from analysis.campaign.campaign import BOLOGAN_ITERATIONS, CampaignRequest
    from analysis.pipeline import analyse, check_out, write_report
    from analysis.projection.comm_model import shipped_networks
    from analysis.projection.projection import resolve_network_arg

    def progress(msg: str) -> None:
        if not args.quiet:
            print(f"analysis: {msg}", flush=True)

    check_out(args.out)
    carbon = carbon_request(args)
    networks = [p for n in args.network for p in (shipped_networks() if n == "all" else [resolve_network_arg(n)])]
    if args.campaign_ranks is not None and args.campaign_gans is None:
        raise UserError("--campaign-ranks needs --campaign-gans (the number of GANs to plan for)")
    campaign = CampaignRequest(gans=args.campaign_gans, ranks=args.campaign_ranks,
                               gan_iterations=args.gan_iterations or BOLOGAN_ITERATIONS, target=args.target)
    result = analyse(args.paths, networks, progress, campaign=campaign, target=args.target, carbon=carbon,
                     mtbf_h=args.mtbf_h)
    write_report(result, args.out, args.power_run, progress)
    return 0


if __name__ == "__main__":
    sys.exit(main())
