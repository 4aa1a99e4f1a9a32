"""The ``[energy]`` configuration section (TOML table and CLI flags of the same names)."""
from __future__ import annotations

from dataclasses import dataclass, field

from common.settings import NON_NEGATIVE, Range, check_ranges

# Below 1 ms the sampler would mostly measure itself; above a minute a fast RAPL counter can
# wrap more than once between two samples (see rapl.wrap_period_s).
MIN_INTERVAL_S = 0.001
MAX_INTERVAL_S = 60.0
INTERVAL_RANGE_S = Range(MIN_INTERVAL_S, MAX_INTERVAL_S)
# Idle power: a few seconds hold tens of samples at 10 Hz and cost little next to an epoch; a
# GPU's idle power settles within about a second once its clocks drop.
DEFAULT_BASELINE_S = 2.0
BASELINE_RANGE_S = Range(0, 600)


@dataclass
class EnergyConfig:
    sample_interval_s: float = field(default=0.1, metadata={
        "help": "seconds between background counter samples (0.1 = 10 Hz)", "range": INTERVAL_RANGE_S})
    estimate_energy: bool = field(default=False, metadata={
        "help": "where no counter exists, estimate CPU energy as utilisation x cpu_tdp_w (flagged 'estimated')"})
    cpu_tdp_w: float = field(default=0.0, metadata={
        "help": "TDP of one CPU package in W, for the estimate (0 = unknown: no estimate)", "range": NON_NEGATIVE})
    gpu_tdp_w: float = field(default=0.0, metadata={
        "help": "GPU TDP in W, for the estimate when NVML reports neither energy nor power (0 = no estimate)",
        "range": NON_NEGATIVE})
    baseline_s: float = field(default=DEFAULT_BASELINE_S, metadata={
        "help": "seconds of idle power measured on every rank before the first epoch (run.json idle_power_w; "
                "0 = skip)", "range": BASELINE_RANGE_S})
    baseline_after: bool = field(default=False, metadata={
        "help": "measure the idle power again after the last epoch (baseline_s seconds)"})
    powercap_root: str = field(default="/sys/class/powercap", metadata={
        "help": "powercap sysfs directory holding the intel-rapl:N zones (AMD uses the same names)"})

    def check(self) -> None:
        """Raise ``ValueError`` naming the first bad value (the meter is also built without
        the settings loader, so the field ranges are checked here too)."""
        check_ranges(self)
        if not self.powercap_root.strip():
            raise ValueError("powercap_root must not be empty")


ENERGY_SECTIONS: dict[str, type] = {"energy": EnergyConfig}
