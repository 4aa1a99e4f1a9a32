"""BoloGAN generation against Geant4: speed-up and energy ratio from literature and measured figures.

Example::

    python -m bologan.bench --inference --particle pions --out results/infer/pions.json
    python -m bologan.comparison results/infer/pions.json --csv cmp.csv --markdown cmp.md

Inputs: the literature figures in ``bologan/geant4_reference.toml`` (or ``--reference FILE``),
each with its source, and one or more inference-benchmark JSON files (``bologan.inference``).

Rows (one per measured GAN figure and Geant4 literature time, plus literature-only rows):

- ``on-demand``: GAN time per shower = median batch-1 latency;
- ``batch``: GAN time per shower = 1 / peak throughput (at the batch size that reached it);
- ``literature``: a study's own GAN figure against its own Geant4 figure, for context.

``speedup`` = Geant4 time per shower / GAN time per shower. ``energy_ratio`` = Geant4 energy per
shower / GAN energy per shower (how many times less energy the GAN needs), computed only when
both exist; otherwise it is empty and ``energy_note`` says why. Every row says which side is
``measured`` and which is ``literature``: literature Geant4 figures come from other detectors and
machines, so the ratios are indicative, not like-for-like. Exit codes: 0 ok, 2 bad input.
"""
from __future__ import annotations

import argparse
import csv
import io
import json
import math
import sys
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, Sequence

from common.atomic import atomic_write_text
from common.settings import load_toml
from common.cli import Parser
from common.errors import UserError, main_guard
from common.vocab import SOURCE_MEASURED, SOURCE_UNAVAILABLE

DEFAULT_REFERENCE = Path(__file__).with_name("geant4_reference.toml")
REFERENCE_SCHEMA_VERSION = 1
SYSTEMS = ("geant4", "gan")
QUANTITIES = ("time_per_shower", "energy_per_shower")
KINDS = ("literature",)
# Factors to SI: seconds for times, joules for energies.
UNITS: dict[str, dict[str, float]] = {
    "time_per_shower": {"s": 1.0, "ms": 1e-3, "us": 1e-6},
    "energy_per_shower": {"J": 1.0, "kJ": 1e3, "mJ": 1e-3, "Wh": 3600.0},
}
_REQUIRED = ("id", "study", "system", "quantity", "value", "unit", "hardware", "source", "kind")
_OPTIONAL = ("note",)


@dataclass(frozen=True)
class Figure:
    """One literature figure; ``si_value`` is in s (time) or J (energy) per shower."""

    id: str
    study: str
    system: str
    quantity: str
    value: float
    unit: str
    hardware: str
    source: str
    kind: str
    note: str = ""

    @property
    def si_value(self) -> float:
        return self.value * UNITS[self.quantity][self.unit]


def _figure(entry: Any, where: str) -> Figure:
    if not isinstance(entry, dict):
        raise UserError(f"{where}: expected a table of keys")
    unknown = sorted(set(entry) - set(_REQUIRED) - set(_OPTIONAL))
    if unknown:
        raise UserError(f"{where}: unknown key '{unknown[0]}' (known keys: {', '.join(_REQUIRED + _OPTIONAL)})")
    missing = [k for k in _REQUIRED if k not in entry]
    if missing:
        raise UserError(f"{where}: missing key '{missing[0]}'")
    for key in _REQUIRED + _OPTIONAL:
        if key != "value" and key in entry and not isinstance(entry[key], str):
            raise UserError(f"{where}.{key}: expected a string, got {entry[key]!r}")
    for key, allowed in (("system", SYSTEMS), ("quantity", QUANTITIES), ("kind", KINDS)):
        if entry[key] not in allowed:
            raise UserError(f"{where}.{key}: {entry[key]!r} is not one of {', '.join(allowed)}")
    units = UNITS[entry["quantity"]]
    if entry["unit"] not in units:
        raise UserError(f"{where}.unit: {entry['unit']!r} is not a unit of {entry['quantity']} "
                        f"({', '.join(units)})")
    value = entry["value"]
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not (math.isfinite(value) and value > 0):
        raise UserError(f"{where}.value: expected a positive number, got {value!r}")
    for key in ("id", "study", "source", "hardware"):
        if not entry[key].strip():
            raise UserError(f"{where}.{key}: must not be empty")
    return Figure(**{**entry, "value": float(value)})


def load_reference(path: str | Path = DEFAULT_REFERENCE) -> list[Figure]:
    """Read and validate the literature figures; any problem is a one-line ``UserError``."""
    p = Path(path)
    data = load_toml(p)
    unknown = sorted(set(data) - {"schema_version", "figure"})
    if unknown:
        raise UserError(f"{p}: unknown key '{unknown[0]}' (known: schema_version, figure)")
    if data.get("schema_version") != REFERENCE_SCHEMA_VERSION:
        raise UserError(f"{p}: schema_version must be {REFERENCE_SCHEMA_VERSION}, got {data.get('schema_version')!r}")
    entries = data.get("figure", [])
    if not isinstance(entries, list) or not entries:
        raise UserError(f"{p}: no [[figure]] entries")
    figures = [_figure(e, f"{p}: figure[{i}]") for i, e in enumerate(entries)]
    seen: set[str] = set()
    for f in figures:
        if f.id in seen:
            raise UserError(f"{p}: figure id '{f.id}' appears twice")
        seen.add(f.id)
    return figures


@dataclass
class GanFigure:
    """A GAN time (s) and energy (J) per shower with where they come from."""

    label: str                      # e.g. "BoloGAN pions float32 on-demand (batch 1)"
    mode: str                       # on-demand | batch | literature
    kind: str                       # measured | literature
    time_per_shower_s: float
    energy_per_shower_j: float | None
    energy_source: str              # measured | estimated | unavailable | literature
    energy_reason: str
    hardware: str
    origin: str                     # the inference JSON file, or the literature figure id
    study: str = ""                 # literature figures only: compared with the same study's Geant4
    source: str = ""                # literature figures only: where the number is published


def _num(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if math.isfinite(value) else None


def gan_figures_from_inference(result: dict[str, Any], origin: str) -> list[GanFigure]:
    """The on-demand and peak-throughput figures of one ``bologan.inference`` JSON result."""
    try:
        settings = result["settings"]
        name = (f"BoloGAN {result['particle']} {settings['precision']}"
                f"{' XLA' if settings['xla'] else ''} ({result['weights']} weights)")
        hardware = result["hardware"]["device_kind"] + ": " + result["hardware"]["device_name"]
        on_demand, peak, batches = result["on_demand"], result["peak"], result["batches"]
        energy = result.get("energy", {})
    except (KeyError, TypeError) as exc:
        raise UserError(f"{origin}: not a bologan.inference result (missing {exc})") from None
    out = []
    median_ms = _num(on_demand.get("latency_median_ms"))
    if median_ms:
        out.append(_gan_figure(f"{name} on-demand (batch 1, median latency)", "on-demand", median_ms / 1e3,
                               on_demand, energy, hardware, origin))
    best = next((b for b in batches if b.get("batch_size") == peak.get("batch_size")), None)
    rate = _num(peak.get("throughput_showers_per_s"))
    if best is not None and rate:
        out.append(_gan_figure(f"{name} batch {peak['batch_size']} (peak throughput)", "batch", 1.0 / rate,
                               best, energy, hardware, origin))
    if not out:
        raise UserError(f"{origin}: holds no usable latency or throughput figure")
    return out


def _gan_figure(label: str, mode: str, time_s: float, entry: dict, energy: dict, hardware: str,
                origin: str) -> GanFigure:
    per_1000 = _num(entry.get("energy_per_1000_showers_j"))
    source = str(entry.get("energy_source", SOURCE_UNAVAILABLE))
    if per_1000 is None or source == SOURCE_UNAVAILABLE:
        reason = entry.get("energy_reason") or energy.get("reason") or "no energy counter"
        return GanFigure(label, mode, SOURCE_MEASURED, time_s, None, SOURCE_UNAVAILABLE, str(reason), hardware, origin)
    return GanFigure(label, mode, SOURCE_MEASURED, time_s, per_1000 / 1000.0, source, "", hardware, origin)


@dataclass
class ComparisonRow:
    gan: str
    gan_kind: str                   # measured | literature
    gan_time_per_shower_s: float
    gan_hardware: str
    geant4: str                     # literature figure id
    geant4_kind: str                # literature
    geant4_time_per_shower_s: float
    geant4_hardware: str
    speedup: float
    gan_energy_per_shower_j: float | None
    gan_energy_source: str
    geant4_energy_per_shower_j: float | None
    energy_ratio: float | None
    energy_note: str
    sources: str


def compare(gans: Sequence[GanFigure], figures: Sequence[Figure]) -> list[ComparisonRow]:
    """Every GAN figure against every Geant4 time figure (literature GAN figures: own study only)."""
    g4_times = [f for f in figures if f.system == "geant4" and f.quantity == "time_per_shower"]
    if not g4_times:
        raise UserError("the reference holds no Geant4 time_per_shower figure")
    g4_energy = {f.study: f for f in figures if f.system == "geant4" and f.quantity == "energy_per_shower"}
    lit_gans = [_literature_gan(f, figures) for f in figures
                if f.system == "gan" and f.quantity == "time_per_shower"]
    rows = []
    for gan in list(gans) + lit_gans:
        for g4 in g4_times:
            if gan.kind == "literature" and gan.study != g4.study:
                continue
            e4 = g4_energy.get(g4.study)
            ratio, missing = None, []
            if e4 is None:
                missing.append(f"no Geant4 energy_per_shower figure for {g4.study} in the reference file")
            if gan.energy_per_shower_j is None:
                missing.append(f"GAN energy not known ({gan.energy_reason})")
            elif gan.energy_per_shower_j <= 0:
                missing.append("the GAN energy reading is zero (window shorter than the counter update?)")
            if missing:
                note = "unavailable: " + "; ".join(missing)
            else:
                ratio = e4.si_value / gan.energy_per_shower_j
                note = f"Geant4 energy: literature ({e4.id}); GAN energy: {gan.energy_source}"
            sources = [_cite(g4)]
            if e4 is not None:
                sources.append(_cite(e4))
            sources.append(gan.source if gan.kind == "literature" else f"measured: {gan.origin}")
            rows.append(ComparisonRow(
                gan=gan.label, gan_kind=gan.kind, gan_time_per_shower_s=gan.time_per_shower_s,
                gan_hardware=gan.hardware, geant4=g4.id, geant4_kind=g4.kind,
                geant4_time_per_shower_s=g4.si_value, geant4_hardware=g4.hardware,
                speedup=g4.si_value / gan.time_per_shower_s, gan_energy_per_shower_j=gan.energy_per_shower_j,
                gan_energy_source=gan.energy_source,
                geant4_energy_per_shower_j=None if e4 is None else e4.si_value,
                energy_ratio=ratio, energy_note=note, sources=" | ".join(sources)))
    return rows


def _cite(f: Figure) -> str:
    return f"{f.id}: {f.source}" + (f" (note: {f.note})" if f.note else "")


def _literature_gan(f: Figure, figures: Sequence[Figure]) -> GanFigure:
    energy = next((e for e in figures if e.system == "gan" and e.quantity == "energy_per_shower"
                   and e.study == f.study), None)
    return GanFigure(label=f"{f.study} GAN ({f.id})", mode="literature", kind="literature",
                     time_per_shower_s=f.si_value,
                     energy_per_shower_j=None if energy is None else energy.si_value,
                     energy_source=SOURCE_UNAVAILABLE if energy is None else "literature",
                     energy_reason="" if energy is not None else f"no GAN energy_per_shower figure for {f.study}",
                     hardware=f.hardware, origin=f.id, study=f.study, source=_cite(f))


COLUMNS = tuple(f.name for f in fields(ComparisonRow))


def to_csv(rows: Sequence[ComparisonRow]) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(COLUMNS)
    for r in rows:
        writer.writerow(["" if v is None else v for v in asdict(r).values()])
    return buf.getvalue()


def _fmt_time(seconds: float) -> str:
    if seconds >= 1:
        return f"{seconds:.3g} s"
    if seconds >= 1e-3:
        return f"{seconds * 1e3:.3g} ms"
    return f"{seconds * 1e6:.3g} us"


def to_markdown(rows: Sequence[ComparisonRow]) -> str:
    lines = ["| GAN figure | GAN time/shower | Geant4 figure | Geant4 time/shower | speed-up "
             "| GAN energy/shower | energy ratio (G4/GAN) |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        e_gan = ("n/a" if r.gan_energy_per_shower_j is None
                 else f"{r.gan_energy_per_shower_j:.3g} J ({r.gan_energy_source})")
        ratio = f"{r.energy_ratio:.3g}" if r.energy_ratio is not None else r.energy_note
        lines.append(f"| {r.gan} | {_fmt_time(r.gan_time_per_shower_s)} ({r.gan_kind}) | {r.geant4} "
                     f"| {_fmt_time(r.geant4_time_per_shower_s)} ({r.geant4_kind}) | {r.speedup:,.0f}x "
                     f"| {e_gan} | {ratio} |")
    lines += ["", "Measured = this project's inference benchmark; literature = published figures from "
              "other detectors and machines (sources below), so ratios are indicative.", ""]
    for src in dict.fromkeys(s for r in rows for s in r.sources.split(" | ") if not s.startswith("measured: ")):
        lines.append(f"- {src}")
    return "\n".join(lines) + "\n"


def _read_inference(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise UserError(f"{path}: file not found") from None
    except OSError as exc:
        raise UserError(f"{path}: cannot read ({exc.strerror})") from None
    except ValueError as exc:
        raise UserError(f"{path}: not JSON ({exc})") from None
    if not isinstance(data, dict) or data.get("kind") != "bologan-inference-benchmark":
        raise UserError(f"{path}: not a bologan.inference result")
    return data


def build_parser() -> argparse.ArgumentParser:
    parser = Parser("python -m bologan.comparison", __doc__)
    parser.add_argument("inference", nargs="*", metavar="INFERENCE.json",
                        help="bologan.inference results (none: literature rows only)")
    parser.add_argument("--reference", default=str(DEFAULT_REFERENCE), metavar="TOML",
                        help="literature figures (default: the file shipped with bologan)")
    parser.add_argument("--csv", metavar="FILE", help="write the table as CSV")
    parser.add_argument("--markdown", metavar="FILE", help="write the table as Markdown (also printed)")
    return parser


@main_guard
def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    figures = load_reference(args.reference)
    gans: list[GanFigure] = []
    for name in args.inference:
        gans += gan_figures_from_inference(_read_inference(Path(name)), name)
    rows = compare(gans, figures)
    md = to_markdown(rows)
    if args.csv:
        atomic_write_text(args.csv, to_csv(rows))
    if args.markdown:
        atomic_write_text(args.markdown, md)
    print(md, end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
