"""CPU package and DRAM energy from the Linux powercap sysfs tree (RAPL; AMD uses the same names).

Layout (``/sys/class/powercap``, every zone listed flat)::

    intel-rapl:0      name=package-0   energy_uj  max_energy_range_uj
    intel-rapl:0:0    name=core        (inside package-0: never added)
    intel-rapl:0:1    name=uncore      (inside package-0: never added)
    intel-rapl:0:2    name=dram        (not inside the package: added to DRAM)
    intel-rapl:1      name=psys        (whole SoC on some client parts: reported, not added)

What is added: every top-level ``package-*`` zone to the CPU domain, every ``dram`` zone (sub-zone
or top-level) to the DRAM domain. A package already contains its core/uncore sub-zones, and
psys overlaps the packages, so adding those would count energy twice.

Counters are microjoules and wrap at ``max_energy_range_uj``. ``energy_uj`` is readable by root
only since Linux 5.10; an unreadable zone makes its domain ``unavailable`` with the reason and a
hint, never an exception.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from common.vocab import SOURCE_MEASURED
from energy.counters import Channel

OpenFn = Callable[[str], int]      # path -> readable file descriptor (os.open by default)

# A deliberately high power per zone, used only to decide whether the sampling interval is short
# enough to see every wrap: real sockets and DIMM sets stay well below it.
ASSUMED_MAX_ZONE_POWER_W = 1000.0
# Sample at least this many times per wrap period, so a late or skipped tick still sees each wrap.
SAMPLES_PER_WRAP = 2

_ZONE_RE = re.compile(r"^intel-rapl:(\d+)(?::(\d+))?$")
_READ_BYTES = 32

HINT_PERMISSION = ("RAPL energy_uj is root-only since Linux 5.10: run as root, or let an administrator "
                   "make it readable (udev rule or sysfs.conf 'mode class/powercap/intel-rapl:0/energy_uj = 0444')")
HINT_NO_TREE = ("no RAPL here (VM, non-x86, or driver not loaded: 'modprobe intel_rapl_msr'); in a container "
                "bind-mount /sys/devices/virtual/powercap read-only; or opt in to the estimate "
                "(estimate_energy = true, cpu_tdp_w = <W per package>)")
HINT_UNREADABLE = "check that the powercap zone is a regular sysfs file readable by this user"


@dataclass
class RaplZone:
    """One zone that is added to a domain."""
    zone_id: str                    # "intel-rapl:0:2"
    name: str                       # "package-0", "dram"
    device: str                     # "package-0", "package-0:dram", "dram"
    domain: str                     # "package" | "dram"
    path: Path
    max_energy_range_uj: int | None = None


@dataclass
class DomainProblem:
    reason: str
    hint: str


@dataclass
class RaplNode:
    """The zones found under one powercap root and why a domain is unavailable, if it is."""
    root: str
    channels: list[Channel] = field(default_factory=list)
    skipped: list[dict] = field(default_factory=list)     # {"zone", "name", "why"}
    problems: dict[str, DomainProblem] = field(default_factory=dict)   # "package"/"dram" -> problem


def default_open(path: str) -> int:
    return os.open(path, os.O_RDONLY | os.O_CLOEXEC)


def _read_text(path: Path, open_fn: OpenFn) -> str:
    fd = open_fn(str(path))
    try:
        return os.pread(fd, 256, 0).decode("ascii", "replace").strip()
    finally:
        os.close(fd)


def _hint_for(exc: BaseException) -> str:
    if isinstance(exc, PermissionError):
        return HINT_PERMISSION
    return HINT_UNREADABLE


def _describe_error(path: Path, exc: BaseException) -> str:
    kind = type(exc).__name__
    detail = getattr(exc, "strerror", None) or str(exc) or kind
    return f"{path}: {kind} ({detail})"


def wrap_period_s(max_energy_range_uj: int, max_power_w: float = ASSUMED_MAX_ZONE_POWER_W) -> float:
    """Shortest time, in seconds, in which a counter of this range can wrap at ``max_power_w``."""
    return max_energy_range_uj * 1e-6 / max_power_w


def interval_warning(channel: Channel, interval_s: float) -> str | None:
    """A warning when ``interval_s`` may miss a wrap of this RAPL channel, else ``None``."""
    if channel.max_range_uj is None:
        return None
    period = wrap_period_s(channel.max_range_uj)
    if interval_s * SAMPLES_PER_WRAP <= period:
        return None
    return (f"{channel.device}: sampling every {interval_s:g} s may miss wrap-arounds: the counter range "
            f"{channel.max_range_uj} uJ can wrap in {period:.3g} s at {ASSUMED_MAX_ZONE_POWER_W:g} W; "
            f"use sample_interval_s <= {period / SAMPLES_PER_WRAP:.3g}")


def _candidate_dirs(root: Path) -> list[Path]:
    """Zone directories: flat (class view) first, then nested (devices view), first seen wins."""
    found: dict[str, Path] = {}
    for pattern in ("intel-rapl:*", "intel-rapl/intel-rapl:*", "intel-rapl:*/intel-rapl:*",
                    "intel-rapl/intel-rapl:*/intel-rapl:*"):
        for p in sorted(root.glob(pattern)):
            found.setdefault(p.name, p)
    return [found[k] for k in sorted(found, key=_zone_sort_key)]


def _zone_sort_key(zone_id: str) -> tuple[int, int]:
    m = _ZONE_RE.match(zone_id)
    if not m:
        return (1 << 30, 0)
    return int(m.group(1)), -1 if m.group(2) is None else int(m.group(2))


def _classify(root: Path, open_fn: OpenFn, node: RaplNode) -> list[RaplZone]:
    zones: list[RaplZone] = []
    top_names: dict[str, str] = {}          # "0" -> "package-0"
    for d in _candidate_dirs(root):
        m = _ZONE_RE.match(d.name)
        if not m:
            continue
        try:
            name = _read_text(d / "name", open_fn)
        except OSError as exc:
            node.skipped.append({"zone": d.name, "name": None, "why": f"name unreadable: {_describe_error(d / 'name', exc)}"})
            continue
        parent, sub = m.group(1), m.group(2)
        if sub is None:
            top_names[parent] = name
            if name.startswith("package"):
                zones.append(RaplZone(d.name, name, name, "package", d))
            elif name.startswith("dram"):
                zones.append(RaplZone(d.name, name, name, "dram", d))
            elif name.startswith("psys"):
                node.skipped.append({"zone": d.name, "name": name,
                                     "why": "platform (psys) energy overlaps the packages; not added"})
            else:
                node.skipped.append({"zone": d.name, "name": name, "why": "unknown top-level zone; not added"})
        else:
            owner = top_names.get(parent, f"intel-rapl:{parent}")
            if name.startswith("dram"):
                zones.append(RaplZone(d.name, name, f"{owner}:{name}", "dram", d))
            else:
                node.skipped.append({"zone": d.name, "name": name,
                                     "why": f"part of {owner}, whose energy already includes it; not added"})
    return zones


def _open_zone(zone: RaplZone, open_fn: OpenFn) -> Channel:
    """Open ``energy_uj`` once and read it by ``pread`` at offset 0 (sysfs regenerates the value)."""
    range_text = _read_text(zone.path / "max_energy_range_uj", open_fn)
    zone.max_energy_range_uj = int(range_text)
    if zone.max_energy_range_uj <= 0:
        raise ValueError(f"{zone.path / 'max_energy_range_uj'}: range {zone.max_energy_range_uj} is not positive")
    energy_path = zone.path / "energy_uj"
    fd = open_fn(str(energy_path))

    def read() -> int:
        return int(os.pread(fd, _READ_BYTES, 0))

    def close() -> None:
        os.close(fd)

    try:
        read()      # probe now: an unreadable counter must be found at start, not mid-run
    except BaseException:
        close()
        raise
    return Channel(domain=zone.domain, device=zone.device, kind="counter", source=SOURCE_MEASURED,
                   method="rapl-powercap", read=read, max_range_uj=zone.max_energy_range_uj, close=close,
                   info={"zone": zone.zone_id, "name": zone.name,
                         "max_energy_range_uj": zone.max_energy_range_uj})


def open_rapl(root: str | os.PathLike, open_fn: OpenFn = default_open) -> RaplNode:
    """Find and open the node's RAPL zones; problems become ``RaplNode.problems``, never exceptions.

    A domain with one unreadable zone is unavailable as a whole: a sum that silently left out a
    socket would look measured and be wrong.
    """
    root_path = Path(root)
    node = RaplNode(root=str(root_path))
    if not root_path.is_dir():
        for domain in ("package", "dram"):
            node.problems[domain] = DomainProblem(f"no powercap tree at {root_path}", HINT_NO_TREE)
        return node
    zones = _classify(root_path, open_fn, node)
    for domain in ("package", "dram"):
        mine = [z for z in zones if z.domain == domain]
        if not mine:
            what = "RAPL package zones" if domain == "package" else \
                "DRAM RAPL zone (many AMD and client processors expose none)"
            node.problems[domain] = DomainProblem(f"no {what} under {root_path}",
                                                  HINT_NO_TREE if domain == "package" else "")
            continue
        opened: list[Channel] = []
        for zone in mine:
            try:
                opened.append(_open_zone(zone, open_fn))
            except (OSError, ValueError) as exc:
                path = zone.path / ("energy_uj" if zone.max_energy_range_uj else "max_energy_range_uj")
                node.problems[domain] = DomainProblem(
                    f"{zone.device} unreadable: {_describe_error(path, exc)}", _hint_for(exc))
                break
        if domain in node.problems:
            for ch in opened:
                if ch.close is not None:
                    ch.close()
        else:
            node.channels.extend(opened)
    return node
