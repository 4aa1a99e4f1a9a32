"""Idle power: every domain a meter reads, measured over a window in which the rank does nothing.

Gross energy is what the counters read; net energy is gross minus idle power x time, the part
the work itself added. The idle window is an ordinary meter window (``baseline-<when>``), so
it uses the same counters, fence and accumulators as the epochs it is subtracted from.
"""
from __future__ import annotations

import math
import time
from typing import Any, Callable

from common.vocab import ENERGY_DOMAINS, SOURCES_WITH_VALUE

BEFORE_FIRST_EPOCH = "before_first_epoch"
AFTER_LAST_EPOCH = "after_last_epoch"


def measure_idle_power(meter: Any, seconds: float, *, when: str = BEFORE_FIRST_EPOCH, attempt: int = 0,
                       sleep: Callable[[float], None] = time.sleep) -> dict[str, Any]:
    """Sleep ``seconds`` inside window ``baseline-<when>`` and return one JSON-able entry of
    run.json ``idle_power_w``: rank, node, when, attempt, seconds, and per domain the mean power
    in W (``<domain>``, None when the domain has no value) and its source (``<domain>_source``).

    The caller makes every rank of a node idle at once (a barrier before), else a busy
    neighbour's work would count as this node's idle CPU power.
    """
    name = f"baseline-{when}"
    meter.begin(name)
    sleep(seconds)
    window = meter.end(name)
    entry: dict[str, Any] = {"rank": meter.rank, "node": meter.node, "when": when, "attempt": attempt,
                             "seconds": window.time_s}
    for domain in ENERGY_DOMAINS:
        joules = getattr(window, f"{domain}_energy_j")
        source = getattr(window, f"{domain}_energy_source")
        ok = source in SOURCES_WITH_VALUE and math.isfinite(joules) and window.time_s > 0
        entry[domain] = joules / window.time_s if ok else None
        entry[f"{domain}_source"] = source
    return entry
