"""Carbon and cost of the measured energy: per epoch, per 1000 showers, per trained GAN, per campaign.

Facility energy = measured (or estimated) energy x PUE; CO2-equivalent = facility kWh x the
grid's carbon intensity; cost = facility kWh x the price per kWh. The defaults are perun's
(Helmholtz-AI-Energy/perun): PUE 1.0 (the machine alone, no cooling or distribution losses) and
230 gCO2e/kWh; there is no default price, since prices differ by site and contract (perun's
example is 0.2678 EUR/kWh). Every figure keeps the source of the energy it comes from: an
estimate (e.g. CPU energy from a TDP) stays labelled ``estimated`` and is never added to
measured figures here.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Sequence

import pandas as pd

from analysis import energy_metrics as em
from analysis.numbers import count, energy, significant
from analysis.report import Document
from analysis.summary import Column

J_PER_KWH = 3.6e6
DEFAULT_CARBON_G_PER_KWH = 230.0
DEFAULT_PUE = 1.0
DEFAULT_CURRENCY = "EUR"
DEFAULTS_SOURCE = ("perun's post-processing defaults (Helmholtz-AI-Energy/perun documentation: PUE 1.0, "
                   "230 gCO2e/kWh; its example price 0.2678 EUR/kWh is not assumed here)")


@dataclass(frozen=True)
class CarbonRequest:
    """What turns joules into grams and money (``python -m analysis --carbon-intensity-g-per-kwh
    --pue --price-per-kwh --currency``); ``price_per_kwh`` None: no cost column."""
    carbon_intensity_g_per_kwh: float = DEFAULT_CARBON_G_PER_KWH
    pue: float = DEFAULT_PUE
    price_per_kwh: float | None = None
    currency: str = DEFAULT_CURRENCY
    given: tuple[str, ...] = ()          # which of the values the user gave (the rest are defaults)

    def check(self) -> None:
        if not (math.isfinite(self.carbon_intensity_g_per_kwh) and self.carbon_intensity_g_per_kwh >= 0):
            raise ValueError(f"--carbon-intensity-g-per-kwh must be >= 0, got {self.carbon_intensity_g_per_kwh}")
        if not (math.isfinite(self.pue) and self.pue >= 1.0):
            raise ValueError(f"--pue must be >= 1 (facility energy / IT energy), got {self.pue}")
        if self.price_per_kwh is not None and not (math.isfinite(self.price_per_kwh) and self.price_per_kwh >= 0):
            raise ValueError(f"--price-per-kwh must be >= 0, got {self.price_per_kwh}")

    def facility_kwh(self, energy_j: float) -> float:
        return energy_j * self.pue / J_PER_KWH

    def co2e_g(self, energy_j: float) -> float:
        """Grams of CO2-equivalent of ``energy_j`` joules drawn by the machine."""
        return self.facility_kwh(energy_j) * self.carbon_intensity_g_per_kwh

    def cost(self, energy_j: float) -> float:
        """Cost in ``currency`` of ``energy_j`` joules (NaN without a price)."""
        return self.facility_kwh(energy_j) * self.price_per_kwh if self.price_per_kwh is not None else math.nan

    def describe(self) -> str:
        def said(name: str, text: str) -> str:
            return text + ("" if name in self.given else " (default)")
        price = ("no price given: no cost" if self.price_per_kwh is None
                 else said("price", f"{significant(self.price_per_kwh)} {self.currency}/kWh"))
        return (f"carbon intensity {said('carbon', f'{significant(self.carbon_intensity_g_per_kwh)} gCO2e/kWh')}, "
                f"PUE {said('pue', significant(self.pue))}, {price}; defaults from {DEFAULTS_SOURCE}")


COLUMNS: tuple[Column, ...] = (
    Column("scope", "text", "what the energy is of: 'epoch', '1000 showers', 'trained GAN' (B iterations), "
                            "'trained GAN (ensemble member)' or 'campaign plan' (M GANs, one row per layout)"),
    Column("series", "text", "the summary series, or the campaign layout"),
    Column("world_size_ranks", "ranks", "N (P for a campaign plan)"),
    Column("energy_j", "J", "energy the machine drew (summary / campaign plan)"),
    Column("energy_source", "text", "measured / estimated / includes estimates / partial: carried over unchanged"),
    Column("facility_energy_kwh", "kWh", "energy_j x PUE / 3.6e6"),
    Column("co2e_g", "g", "facility_energy_kwh x carbon intensity"),
    Column("cost", "currency", "facility_energy_kwh x price per kWh (empty without --price-per-kwh)"),
)
COLUMN_NAMES = tuple(c.name for c in COLUMNS)


@dataclass
class CarbonResult:
    request: CarbonRequest
    table: pd.DataFrame          # COLUMN_NAMES
    gan_iterations: int
    estimates: list[str] = field(default_factory=list)   # the TDPs estimates used, with their sources


def estimate_sources(runs: Sequence[Any]) -> list[str]:
    """One line per distinct CPU TDP that the runs' estimates used (run.json ``energy`` details)."""
    seen: dict[str, list[str]] = {}
    for run in runs:
        items = run.meta.get("energy")
        items = items if isinstance(items, list) else list(items.values()) if isinstance(items, dict) else []
        for item in items:
            domains = item.get("domains") if isinstance(item, dict) else None
            cpu = domains.get("cpu") if isinstance(domains, dict) else None
            for d in (cpu or {}).get("details") or []:
                if isinstance(d, dict) and d.get("method") == "estimate" and "cpu_tdp_w" in d:
                    text = (f"CPU energy estimated with TDP {significant(d['cpu_tdp_w'])} W per package "
                            f"({d.get('cpu_tdp_source') or 'source not recorded'})")
                    seen.setdefault(text, []).append(str(run.meta.get("run_id")))
    return [f"{text}: runs {', '.join(sorted(set(ids)))}." for text, ids in seen.items()]


def _row(req: CarbonRequest, scope: str, series: str, n: Any, energy_j: float, source: str) -> dict[str, Any]:
    return {"scope": scope, "series": series, "world_size_ranks": n, "energy_j": energy_j, "energy_source": source,
            "facility_energy_kwh": req.facility_kwh(energy_j), "co2e_g": req.co2e_g(energy_j),
            "cost": req.cost(energy_j)}


def carbon_table(summary: pd.DataFrame, plan: pd.DataFrame | None, req: CarbonRequest,
                 gan_iterations: int, runs: Sequence[Any] = (), ensembles: pd.DataFrame | None = None) -> CarbonResult:
    """Rows for every summary row with an energy, every ensemble run (per trained GAN) and every
    measured layout of the campaign plan."""
    rows = []
    for r in summary.itertuples():
        E = float(r.total_energy_per_epoch_j)
        if not math.isfinite(E):
            continue
        src = str(r.total_energy_source)
        iters = float(r.iterations_per_epoch_count)
        per_gan = E / iters * gan_iterations if iters > 0 else math.nan
        rows.append(_row(req, "epoch", r.series, r.world_size_ranks, E, src))
        rows.append(_row(req, "1000 showers", r.series, r.world_size_ranks, float(r.energy_per_1000_showers_j), src))
        rows.append(_row(req, "trained GAN", r.series, r.world_size_ranks, per_gan, src))
    if ensembles is not None and len(ensembles):
        for e in ensembles.itertuples():
            if math.isfinite(float(e.energy_per_gan_j)):
                rows.append(_row(req, "trained GAN (ensemble member)", e.series, e.world_size_ranks,
                                 float(e.energy_per_gan_j), str(e.energy_source)))
    if plan is not None and len(plan):
        for p in plan.itertuples():
            if math.isfinite(float(p.energy_j)):
                rows.append(_row(req, "campaign plan", f"{p.particle}: {p.gans_count} GANs, groups of "
                                 f"{p.group_size_ranks} rank(s)", p.ranks_count, float(p.energy_j), str(p.energy_source)))
    return CarbonResult(req, pd.DataFrame(rows, columns=list(COLUMN_NAMES)), gan_iterations, estimate_sources(runs))


def write_tables(result: CarbonResult, out) -> None:
    result.table.to_csv(out / "carbon.csv", index=False)


def _grams(g: float) -> str:
    if not math.isfinite(g):
        return "n/a"
    return f"{significant(g / 1000)} kg" if abs(g) >= 1000 else (f"{significant(g)} g" if abs(g) >= 1 else
                                                                  f"{significant(g * 1000)} mg")


def carbon_section(doc: Document, result: CarbonResult) -> None:
    doc.h(1, "Carbon and cost")
    req = result.request
    doc.p(f"Energy turned into CO2-equivalent and cost with {req.describe()}. Facility energy = energy x PUE. "
          f"A trained GAN is {count(result.gan_iterations)} iterations (`--gan-iterations`). Each figure keeps "
          "its energy's source: rows labelled `estimated` come from a model (e.g. CPU TDP x utilisation), not a "
          "counter, and are never added to measured ones. `carbon.csv` holds the full table.")
    t = result.table
    if not len(t):
        doc.p("No row has an energy figure: nothing to convert.")
        return
    cost = req.price_per_kwh is not None
    head = ["what", "series", "N", "energy (source)", "facility kWh", "CO2e"] + ([f"cost ({req.currency})"] if cost else [])
    rows = [[r.scope, r.series, r.world_size_ranks, f"{energy(r.energy_j)} ({r.energy_source})",
             significant(r.facility_energy_kwh), _grams(r.co2e_g)] + ([significant(r.cost)] if cost else [])
            for r in t.itertuples()]
    doc.table(head, rows)
    if (t["energy_source"] != em.MEASURED).any():
        doc.p("Rows whose source is not `measured` are estimates or lower bounds; say so wherever they are quoted.")
    if result.estimates:
        doc.ul(result.estimates)


def key_result_items(result: CarbonResult) -> list[str]:
    gans = result.table[result.table["scope"] == "trained GAN"]
    if not len(gans):
        return []
    best = gans.loc[gans["co2e_g"].astype(float).idxmin()]
    return [f"Least CO2e per trained GAN ({count(result.gan_iterations)} iterations): {best.series}, N = "
            f"{best.world_size_ranks}: {_grams(best.co2e_g)} ({best.energy_source} energy; "
            f"{result.request.describe().split(';')[0]})."]
