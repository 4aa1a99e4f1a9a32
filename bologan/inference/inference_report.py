"""What a person reads of an inference-benchmark result: the figure (latency, throughput and
energy per 1000 showers against batch size) and the text summary."""
from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

from common.plotting import new_figure, save_figure
from common.vocab import SOURCE_UNAVAILABLE


def plot_result(result: dict[str, Any], stem: str | Path) -> list[Path]:
    """Latency, throughput and energy per 1000 showers against batch size; writes STEM.png/.pdf."""
    batches = result["batches"]
    x = [b["batch_size"] for b in batches]
    fig, axes = new_figure(6.4, 8.4, nrows=3, sharex=True)
    ax_lat, ax_thr, ax_en = axes[:, 0]
    ax_lat.plot(x, [b["call_median_ms"] for b in batches], marker="o", label="per call, median")
    ax_lat.plot(x, [b["call_p99_ms"] for b in batches], marker=".", linestyle=":", label="per call, p99")
    ax_lat.plot(x, [b["time_per_shower_ms"] for b in batches], marker="s", linestyle="--", label="per shower")
    od = result["on_demand"]
    ax_lat.errorbar([1], [od["latency_median_ms"]], yerr=[[0], [od["latency_p99_ms"] - od["latency_median_ms"]]],
                    marker="*", markersize=12, color="tab:red", linestyle="none", capsize=4,
                    label=f"on-demand ({od['calls']} calls): median, bar to p99")
    ax_lat.set_yscale("log")
    ax_lat.set_ylabel("latency [ms]")
    ax_lat.legend(fontsize="small")
    ax_thr.plot(x, [b["throughput_showers_per_s"] for b in batches], marker="o")
    pk = result["peak"]
    ax_thr.plot([pk["batch_size"]], [pk["throughput_showers_per_s"]], marker="*", markersize=14,
                color="tab:red", linestyle="none", label=f"peak: {pk['throughput_showers_per_s']:.3g} showers/s")
    ax_thr.set_yscale("log")
    ax_thr.set_ylabel("throughput [showers/s]")
    ax_thr.legend(fontsize="small")
    pts = [(b["batch_size"], b["energy_per_1000_showers_j"], b["energy_source"]) for b in batches
           if b["energy_per_1000_showers_j"] is not None]
    if pts:
        src = sorted({s for _, _, s in pts})
        ax_en.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=f"{', '.join(src)}")
        if all(p[1] > 0 for p in pts):
            ax_en.set_yscale("log")
        ax_en.legend(fontsize="small")
    else:
        reason = result["energy"]["reason"] or "no counter"
        ax_en.text(0.5, 0.5, "energy unavailable:\n" + textwrap.fill(reason, 70, break_long_words=False,
                                                                      break_on_hyphens=False),
                   transform=ax_en.transAxes, ha="center", va="center", fontsize="small")
        ax_en.set_yticks([])
    ax_en.set_ylabel("energy per 1000 showers [J]")
    ax_en.set_xlabel("batch size [showers per call]")
    ax_en.set_xscale("log", base=2)
    ax_en.set_xticks(x)
    ax_en.set_xticklabels([str(v) for v in x])
    for ax in (ax_lat, ax_thr, ax_en):
        ax.grid(True, which="both", alpha=0.3)
    s = result["settings"]
    hw = result["hardware"]
    fig.suptitle(f"BoloGAN {result['particle']} generator inference: {s['precision_policy']}"
                 f"{', XLA' if s['xla'] else ''}, {result['weights']} weights\n{hw['device_kind']}: "
                 f"{hw['device_name']}", fontsize="medium")
    return save_figure(fig, stem)


def format_summary(result: dict[str, Any]) -> str:
    """A few lines for the terminal: on-demand latency, peak throughput, one row per batch size."""
    od, pk = result["on_demand"], result["peak"]
    lines = [f"{result['particle']} ({result['settings']['precision_policy']}"
             f"{', XLA' if result['settings']['xla'] else ''}, {result['weights']} weights) on "
             f"{result['hardware']['device_kind']} {result['hardware']['device_name']}",
             f"  on-demand batch 1: median {od['latency_median_ms']:.3f} ms, p99 {od['latency_p99_ms']:.3f} ms "
             f"({od['calls']} calls)",
             f"  peak throughput: {pk['throughput_showers_per_s']:.1f} showers/s at batch {pk['batch_size']}",
             f"  {'batch':>6} {'showers/s':>12} {'ms/call':>10} {'ms/shower':>10} {'J/1000 showers':>16}"]
    for b in result["batches"]:
        e = b["energy_per_1000_showers_j"]
        energy = "n/a" if e is None else f"{e:.4g} ({b['energy_source'][:4]})"
        lines.append(f"  {b['batch_size']:>6d} {b['throughput_showers_per_s']:>12.1f} {b['call_median_ms']:>10.3f} "
                     f"{b['time_per_shower_ms']:>10.4f} {energy:>16}")
    if result["energy"]["source"] == SOURCE_UNAVAILABLE:
        lines.append(f"  energy unavailable: {result['energy']['reason']}")
    load = [v for v in (result["hardware"].get("load_average_1m") or {}).values() if v is not None]
    cpus = result["hardware"].get("logical_cpus") or 1
    if load and max(load) > cpus:
        lines.append(f"  note: 1-minute load average up to {max(load):.1f} on {cpus} CPUs: other work shared "
                     f"the machine, so latencies are inflated and throughputs deflated")
    return "\n".join(lines)
