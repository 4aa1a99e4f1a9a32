"""Measure the energy of any command, like ``perf stat`` for joules.

    python -m energy.monitor [--interval S] [--out DIR] [--json] -- CMD ARGS...

Samples this node's RAPL package/DRAM counters and every GPU the command can see while it
runs, then prints energy per domain (J), average power (W), duration (s) and where each number
comes from. The summary goes to stderr (the command keeps stdout), or as one JSON line to
stdout with ``--json``. With ``--out``, ``power.parquet`` (PowerSample rows) and
``summary.json`` are written there. Exits with the command's exit code (128 + N when a signal
N killed it); bad usage exits 2 with one line.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import shlex
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Sequence

from common.atomic import atomic_write_json, atomic_write_parquet
from common.cli import Parser
from common.errors import UserError, main_guard
from common.settings import add_section_arguments, resolve_sections
from energy.config import ENERGY_SECTIONS, EnergyConfig
from common.vocab import ENERGY_DOMAINS
from energy.meter import EnergyMeter
from energy.nvml import all_visible_indices
from energy.output import SampleColumns

WINDOW = "command"
DRAIN_EVERY_S = 5.0

EPILOG = """\
example:
  python -m energy.monitor --interval 0.05 --out results/infer-1 -- python infer.py --batch 512

  prints, on stderr once the command ends:
     Energy of 'python infer.py --batch 512':
        812.400 J  gpu   avg 203.1 W  measured (nvml-energy-counter: gpu0)
        301.115 J  cpu   avg  75.3 W  measured (rapl-powercap: package-0, package-1)
         40.020 J  dram  avg  10.0 W  measured (rapl-powercap: package-0:dram, package-1:dram)
        4.000 s elapsed, exit code 0

RAPL counters are root-only since Linux 5.10: run as root or make energy_uj readable; a domain
that cannot be read is reported 'unavailable' with the reason, never guessed (see --estimate-energy).
"""


def build_parser() -> argparse.ArgumentParser:
    parser = Parser("python -m energy.monitor", __doc__, epilog=EPILOG)
    parser.add_argument("--interval", dest="energy.sample_interval_s", type=float, default=argparse.SUPPRESS,
                        metavar="S", help="seconds between samples (same as --sample-interval-s; "
                                          f"default: {EnergyConfig().sample_interval_s})")
    parser.add_argument("--out", metavar="DIR", help="write power.parquet and summary.json here")
    parser.add_argument("--json", action="store_true", help="print the summary as one JSON line on stdout")
    parser.add_argument("--config", metavar="TOML", help="read the [energy] table of this file")
    add_section_arguments(parser, ENERGY_SECTIONS)
    parser.add_argument("command", nargs=argparse.REMAINDER, help="the command to measure, after --")
    return parser


def _check_out_dir(out: str) -> Path:
    """Create ``out`` and prove it writable before the command runs, not after an hour of it."""
    path = Path(out)
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path, prefix=".write-test-"):
            pass
    except OSError as exc:
        raise UserError(f"--out {out}: cannot write there ({exc.strerror or exc})") from None
    return path


def _exit_code(returncode: int) -> int:
    return 128 - returncode if returncode < 0 else returncode


def _run_command(command: list[str], meter: EnergyMeter, columns: SampleColumns) -> int:
    """Run ``command`` to its end, draining samples meanwhile; returns its raw return code."""
    try:
        proc = subprocess.Popen(command)
    except OSError as exc:
        raise UserError(f"cannot run {command[0]!r}: {exc.strerror or exc}") from None

    def forward(signum, _frame):
        try:
            proc.send_signal(signum)
        except OSError:
            pass    # already gone

    # Ctrl-C reaches the whole foreground group, the child included: the monitor must survive it
    # to report. SIGTERM/SIGHUP may be sent to the monitor alone (schedulers, kill): pass them on.
    previous = {signal.SIGINT: signal.signal(signal.SIGINT, signal.SIG_IGN),
                signal.SIGTERM: signal.signal(signal.SIGTERM, forward),
                signal.SIGHUP: signal.signal(signal.SIGHUP, forward)}
    try:
        while True:
            try:
                return proc.wait(timeout=DRAIN_EVERY_S)
            except subprocess.TimeoutExpired:
                columns.extend(meter.drain_samples())
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def summarise(command: list[str], window, describe: dict, returncode: int) -> dict[str, Any]:
    """The JSON summary: per domain joules, average watts, source and method; seconds."""
    duration = window.time_s
    domains: dict[str, Any] = {}
    for name in ENERGY_DOMAINS:
        energy = getattr(window, f"{name}_energy_j")
        info = describe["domains"][name]
        entry: dict[str, Any] = {
            "energy_j": None if math.isnan(energy) else energy,
            "avg_power_w": None if math.isnan(energy) or duration <= 0 else energy / duration,
            "source": getattr(window, f"{name}_energy_source"),
            "method": info.get("method"), "devices": info.get("devices", [])}
        for key in ("reason", "hint"):
            if key in info:
                entry[key] = info[key]
        domains[name] = entry
    return {"command": command, "duration_s": duration, "exit_code": _exit_code(returncode),
            "domains": domains, "warnings": describe.get("warnings", []),
            "skipped_zones": describe.get("skipped_zones", []), "sampler": describe.get("sampler", {}),
            "node": describe.get("node")}


def format_summary(summary: dict[str, Any]) -> str:
    shown = shlex.join(summary["command"]).replace("\n", "\\n")
    if len(shown) > 120:
        shown = shown[:117] + "..."
    lines = ["", f" Energy of {shown}:", ""]
    for name, d in summary["domains"].items():
        if d["energy_j"] is None:
            lines.append(f"   {'n/a':>12}    {name:<5} {d['source']}: {d.get('reason', '')}")
            if d.get("hint"):  # how to get the number next time
                lines.append(f"   {'':>12}    {'':<5} hint: {d['hint']}")
        else:
            devices = ", ".join(d["devices"])
            power = "" if d["avg_power_w"] is None else f"avg {d['avg_power_w']:9.3f} W"
            lines.append(f"   {d['energy_j']:12.3f} J  {name:<5} {power}  {d['source']} ({d['method']}: {devices})")
    for warning in summary["warnings"]:
        lines.append(f"   warning: {warning}")
    lines += ["", f"   {summary['duration_s']:12.3f} s  elapsed, exit code {summary['exit_code']}", ""]
    return "\n".join(lines)


@main_guard
def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(list(sys.argv[1:] if argv is None else argv))
    command = list(args.command)
    if command and command[0] == "--":
        command = command[1:]
    if not command:
        raise UserError("no command given: python -m energy.monitor [options] -- CMD ARGS")
    config: EnergyConfig = resolve_sections(ENERGY_SECTIONS, args.config, args)["energy"]
    out = _check_out_dir(args.out) if args.out else None

    t0 = time.monotonic()
    gpus, no_gpu_reason, no_gpu_hint = all_visible_indices(os.environ)
    meter = EnergyMeter(config, rank=0, local_rank=0, node=socket.gethostname(), read_node_counters=True,
                        gpu_index=None, gpu_indices=gpus, t0=t0)
    columns = SampleColumns()
    try:
        meter.start()
        meter.begin(WINDOW)
        returncode = _run_command(command, meter, columns)
        meter.sample_now()      # a last power sample, so even a short command has a series
        window = meter.end(WINDOW)
    finally:
        meter.stop()
        columns.extend(meter.drain_samples())
    # After stop: the sampler's cost figures are final. Without GPUs: why the node has none,
    # not the per-rank wording of the meter.
    describe = meter.describe() if gpus else meter.describe(no_gpu_reason, no_gpu_hint)
    summary = summarise(command, window, describe, returncode)
    summary["samples"] = len(columns)
    if out is not None:
        atomic_write_parquet(out / "power.parquet", columns.to_table())
        atomic_write_json(out / "summary.json", {**summary, "meter": describe})
    if args.json:
        print(json.dumps(summary, sort_keys=True), flush=True)
    else:
        print(format_summary(summary), file=sys.stderr, flush=True)
    return summary["exit_code"]


if __name__ == "__main__":
    sys.exit(main())
