"""scaling.run's idle-power windows: every rank idle at once, entries gathered into run.json."""
from __future__ import annotations

from typing import Any

from energy.baseline import AFTER_LAST_EPOCH, BEFORE_FIRST_EPOCH, measure_idle_power

IDLE_POWER_KEY = "idle_power_w"   # run.json: list of energy.baseline entries, one per rank and window


def record_idle_power(ctx: Any, meter: Any, attempt: int, *, after: bool = False) -> None:
    """Measure the idle power on every rank (``[energy] baseline_s``; ``after``: only with
    ``baseline_after``) and add the entries to run.json (rank 0). Ranks wait for each other
    before and after, so no rank's work lands in another's idle window."""
    cfg = ctx.cfg["energy"]
    if cfg.baseline_s <= 0 or (after and not cfg.baseline_after):
        return
    ctx.coll.barrier()
    entry = measure_idle_power(meter, cfg.baseline_s, when=AFTER_LAST_EPOCH if after else BEFORE_FIRST_EPOCH,
                               attempt=attempt)
    entries = ctx.coll.gather(entry)
    if ctx.writer is not None:
        ctx.writer.write_meta(**{IDLE_POWER_KEY: list(ctx.writer.meta.get(IDLE_POWER_KEY) or []) + list(entries)})
    ctx.coll.barrier()
