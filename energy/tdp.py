"""The TDP the CPU energy estimate uses when the user gives none: a shipped table by CPU model.

``energy/data/cpu_tdp.csv`` lists common server and laptop CPUs with the vendor's TDP per
package, its cores and threads, and the spec page each figure comes from. It is consulted only
when ``estimate_energy`` is on and ``cpu_tdp_w`` is 0 (not given): a TDP the user gives always
wins. The estimate then charges the TDP per hardware thread for every busy logical CPU this
machine shows, so a virtual machine that sees 2 threads of a 128-thread package is charged
2/128 of its TDP, not all of it.
"""
from __future__ import annotations

import csv
import re
from dataclasses import dataclass
from pathlib import Path

TABLE = Path(__file__).with_name("data") / "cpu_tdp.csv"
USER_SOURCE = "given by the user (cpu_tdp_w / --cpu-tdp-w)"


@dataclass(frozen=True)
class CpuTdp:
    """One row of the table: a product's TDP of one package, W, and where it comes from."""
    product: str
    match: str          # regular expression searched in the CPU model string
    tdp_w: float
    cores: int
    threads: int
    kind: str           # server | laptop | family (a stand-in for a model string naming no product)
    source: str

    @property
    def tdp_per_thread_w(self) -> float:
        return self.tdp_w / self.threads


def load_table(path: str | Path = TABLE) -> list[CpuTdp]:
    """Every row of the TDP table; raises ValueError naming the file and row when one is malformed."""
    rows: list[CpuTdp] = []
    with open(path, newline="", encoding="utf-8") as fh:
        lines = [line for line in fh if not line.startswith("#")]
    for i, rec in enumerate(csv.DictReader(lines), start=2):
        try:
            row = CpuTdp(rec["product"], rec["match"], float(rec["tdp_w"]), int(rec["cores"]), int(rec["threads"]),
                         rec["kind"], rec["source"])
            re.compile(row.match)
        except (KeyError, TypeError, ValueError, re.error) as exc:
            raise ValueError(f"{path}: data row {i - 1}: {exc}") from None
        if row.tdp_w <= 0 or row.threads < row.cores or row.cores < 1 or not row.source.strip():
            raise ValueError(f"{path}: data row {i - 1} ({row.product}): needs tdp_w > 0, threads >= cores >= 1 "
                             "and a source")
        rows.append(row)
    return rows


def lookup(cpu_model: str, table: list[CpuTdp] | None = None) -> CpuTdp | None:
    """The row whose pattern matches ``cpu_model`` (the longest product name when several do)."""
    rows = load_table() if table is None else table
    hits = [r for r in rows if re.search(r.match, cpu_model, flags=re.IGNORECASE)]
    return max(hits, key=lambda r: len(r.product)) if hits else None


@dataclass(frozen=True)
class TdpChoice:
    """The TDP per package the estimate uses and a sentence saying where it came from."""
    package_tdp_w: float
    source: str


def estimate_tdp(cpu_model: str, user_tdp_w: float, logical_cpus: int, packages: int,
                 table: list[CpuTdp] | None = None) -> TdpChoice | None:
    """The per-package TDP for ``energy.estimate`` (power = TDP x packages x busy CPUs / logical CPUs).

    The user's ``user_tdp_w`` when > 0. Otherwise the table's row for ``cpu_model``, charged per
    hardware thread: the package TDP becomes TDP / threads x (logical CPUs / packages), so a VM
    showing fewer threads than the product has is not charged the whole package. None when no
    row matches (no estimate is better than a made-up one).
    """
    if user_tdp_w > 0:
        return TdpChoice(user_tdp_w, USER_SOURCE)
    row = lookup(cpu_model, table)
    if row is None:
        return None
    visible_per_package = max(1, logical_cpus) / max(1, packages)
    share = min(1.0, visible_per_package / row.threads)
    note = (f"{row.product}, TDP {row.tdp_w:g} W per package of {row.threads} threads"
            + (f", charged for the {visible_per_package:g} threads visible here" if share < 1 else "")
            + (" (the CPU model names no product: this row stands in for it)" if row.kind == "family" else "")
            + f"; source: {row.source}")
    return TdpChoice(row.tdp_w * share, f"table energy/data/cpu_tdp.csv: {note}")
