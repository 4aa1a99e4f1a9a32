"""Opt-in CPU energy estimate for machines without RAPL (VMs, laptops, masked containers).

Model: power = node CPU utilisation x ``cpu_tdp_w`` x packages. Integrated over time this is

    E [J] = cpu_tdp_w x packages x busy CPU-seconds / logical CPUs

read from the first line of ``/proc/stat`` (all CPUs of the node). It is a cumulative counter,
so windows are plain differences and need no sampling to be exact *for the model*. The model
ignores idle power (an idle node counts 0 W) and assumes power scales linearly with busy time;
it is a rough figure, always flagged ``estimated`` and never added to measured values.
"""
from __future__ import annotations

import os
from pathlib import Path

from common.runinfo import cpu_model
from common.vocab import SOURCE_ESTIMATED
from energy.counters import Channel
from energy.tdp import USER_SOURCE, TdpChoice, estimate_tdp

# /proc/stat "cpu" fields: user nice system idle iowait irq softirq steal (guest time is already
# inside user/nice, so it is not added again).
_IDLE_FIELDS = (3, 4)
_SUMMED_FIELDS = 8


def count_packages(sys_cpu: str = "/sys/devices/system/cpu") -> int:
    """Number of physical CPU packages (sockets); 1 when the topology is not visible."""
    ids = set()
    for p in Path(sys_cpu).glob("cpu[0-9]*/topology/physical_package_id"):
        try:
            ids.add(p.read_text().strip())
        except OSError:
            continue
    return max(1, len(ids))


def _read_proc_stat(path: str) -> tuple[float, int]:
    """(busy jiffies summed over CPUs, number of logical CPUs listed)."""
    with open(path, "rb") as fh:
        text = fh.read().decode("ascii", "replace")
    busy = None
    cpus = 0
    for line in text.splitlines():
        if line.startswith("cpu "):
            values = [int(v) for v in line.split()[1:1 + _SUMMED_FIELDS]]
            busy = sum(v for i, v in enumerate(values) if i not in _IDLE_FIELDS)
        elif line.startswith("cpu") and line[3:4].isdigit():
            cpus += 1
    if busy is None:
        raise ValueError(f"{path}: no aggregate 'cpu' line")
    return busy, max(cpus, 1)


def choose_cpu_tdp(user_tdp_w: float, packages: int | None = None, proc_stat: str = "/proc/stat",
                   model: str | None = None) -> TdpChoice | None:
    """The TDP per package the estimate uses: ``user_tdp_w`` when > 0, else the shipped table's
    row for this CPU model (``energy.tdp``), charged per visible thread; None when neither."""
    try:
        _busy, n_cpus = _read_proc_stat(proc_stat)
    except (OSError, ValueError):
        n_cpus = os.cpu_count() or 1
    n_packages = packages if packages is not None else count_packages()
    return estimate_tdp(cpu_model() if model is None else model, user_tdp_w, n_cpus, n_packages)


def open_cpu_estimate(tdp_w: float, *, packages: int | None = None,
                      proc_stat: str = "/proc/stat", tdp_source: str = USER_SOURCE) -> Channel:
    """A counter channel (microjoules) following the model above; raises if /proc/stat is unusable."""
    ticks_per_s = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
    n_packages = packages if packages is not None else count_packages()
    _busy, n_cpus = _read_proc_stat(proc_stat)
    scale_uj_per_tick = tdp_w * n_packages / n_cpus / ticks_per_s * 1e6

    def read() -> float:
        busy, _ = _read_proc_stat(proc_stat)
        return busy * scale_uj_per_tick

    return Channel("estimate", "cpu", "counter", SOURCE_ESTIMATED, "estimate", read,
                   info={"model": "cpu utilisation x cpu_tdp_w x packages", "cpu_tdp_w": tdp_w,
                         "packages": n_packages, "logical_cpus": n_cpus, "proc_stat": proc_stat,
                         "cpu_tdp_source": tdp_source})
