"""Fakes for the energy tests: a powercap sysfs tree on disk and an NVML module object.

The powercap fake writes counters zero-padded to a fixed width and in place (same inode), so a
file descriptor the meter keeps open sees every new value, and a concurrent read never sees a
half-written (shorter) number.
"""
from __future__ import annotations

import os
import types
from pathlib import Path

WIDTH = 20


class FakePowercap:
    """``root/intel-rapl:N[:M]/{name,energy_uj,max_energy_range_uj}`` like /sys/class/powercap."""

    def __init__(self, root: Path):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)

    def zone(self, zone_id: str, name: str, energy_uj: int, max_range_uj: int = 262143328850) -> Path:
        d = self.root / zone_id
        d.mkdir(parents=True, exist_ok=True)
        (d / "name").write_text(name + "\n")
        (d / "max_energy_range_uj").write_text(f"{max_range_uj}\n")
        (d / "energy_uj").write_text(f"{energy_uj:0{WIDTH}d}\n")
        return d

    def set(self, zone_id: str, energy_uj: int) -> None:
        fd = os.open(self.root / zone_id / "energy_uj", os.O_WRONLY)
        try:
            os.pwrite(fd, f"{energy_uj:0{WIDTH}d}\n".encode(), 0)
        finally:
            os.close(fd)

    def add(self, zone_id: str, delta_uj: int) -> int:
        value = int((self.root / zone_id / "energy_uj").read_text()) + delta_uj
        self.set(zone_id, value)
        return value


def two_socket_tree(root: Path) -> FakePowercap:
    """Two packages with core/uncore/dram sub-zones and a psys zone: the usual server layout."""
    tree = FakePowercap(root)
    tree.zone("intel-rapl:0", "package-0", 1_000_000)
    tree.zone("intel-rapl:0:0", "core", 500_000)
    tree.zone("intel-rapl:0:1", "dram", 2_000_000)
    tree.zone("intel-rapl:1", "package-1", 3_000_000)
    tree.zone("intel-rapl:1:0", "core", 700_000)
    tree.zone("intel-rapl:1:1", "dram", 4_000_000)
    tree.zone("intel-rapl:2", "psys", 9_000_000)
    return tree


NVML_ERROR_UNINITIALIZED = 1
NVML_ERROR_INVALID_ARGUMENT = 2
NVML_ERROR_NOT_SUPPORTED = 3
NVML_ERROR_NOT_FOUND = 6
NVML_ERROR_LIBRARY_NOT_FOUND = 12
NVML_CLOCK_SM = 1            # nvml.h values: the reader must pass these, not guess
NVML_TEMPERATURE_GPU = 0


def bus_id_of_slot(i: int) -> str:
    """NVML's bus id format for the i-th GPU of a fake node (upper-case hex, 8-digit domain)."""
    return f"00000000:{0x1B + 0x20 * i:02X}:00.0"


class NVMLError(Exception):
    """Like pynvml's: ``value`` carries the NVML return code, ``str()`` its text."""

    _TEXT = {1: "Uninitialized", 2: "Invalid Argument", 3: "Not Supported", 6: "Not Found",
             12: "NVML Shared Library Not Found"}

    def __init__(self, value: int):
        super().__init__(value)
        self.value = value

    def __str__(self) -> str:
        return self._TEXT.get(self.value, f"NVML error {self.value}")


class FakeGpu:
    def __init__(self, name="NVIDIA H200", uuid="GPU-00000000-1111-2222-3333-444444444444",
                 energy_mj: int | None = 0, power_mw: int | None = 100_000, util_pct: int | None = 50,
                 mem_util_pct: int = 20, mem_used_bytes: int | None = 2 << 30, mem_total_bytes: int = 141 << 30,
                 sm_clock_mhz: int | None = 1980, temp_c: int | None = 41, clock_event_mask: int | None = 0,
                 bus_id: str | None = None, mig_uuids: tuple[str, ...] = ()):
        self.name, self.uuid = name, uuid
        self.bus_id = bus_id                    # NVML's format; None: fake_nvml numbers the GPUs' slots
        self.mig_uuids = tuple(mig_uuids)       # MIG mode on with these instances
        self.energy_mj, self.power_mw, self.util_pct = energy_mj, power_mw, util_pct
        # Telemetry (energy.telemetry); None makes that query NOT_SUPPORTED.
        self.mem_util_pct, self.mem_used_bytes, self.mem_total_bytes = mem_util_pct, mem_used_bytes, mem_total_bytes
        self.sm_clock_mhz, self.temp_c, self.clock_event_mask = sm_clock_mhz, temp_c, clock_event_mask


def fake_nvml(gpus: list[FakeGpu] | None = None, *, init_error: int | None = None) -> types.SimpleNamespace:
    """A module-like object with the pynvml functions the energy package calls.

    ``energy_mj=None`` / ``power_mw=None`` / ``util_pct=None`` make that query NOT_SUPPORTED (as on
    pre-Volta GPUs); ``init_error`` makes nvmlInit raise (12 = library not found).
    """
    gpus = [FakeGpu()] if gpus is None else gpus
    state = {"init": 0, "calls": 0}
    for i, gpu in enumerate(gpus):
        if gpu.bus_id is None:
            gpu.bus_id = bus_id_of_slot(i)

    def need_init():
        state["calls"] += 1
        if state["init"] <= 0:
            raise NVMLError(NVML_ERROR_UNINITIALIZED)

    def nvmlInit():
        if init_error is not None:
            raise NVMLError(init_error)
        state["init"] += 1

    def nvmlShutdown():
        need_init()
        state["init"] -= 1

    def nvmlDeviceGetCount():
        need_init()
        return len(gpus)

    def nvmlDeviceGetHandleByIndex(i):
        need_init()
        if not 0 <= i < len(gpus):
            raise NVMLError(NVML_ERROR_INVALID_ARGUMENT)
        return gpus[i]

    def nvmlDeviceGetName(h):
        need_init()
        return h.name

    def nvmlDeviceGetUUID(h):
        need_init()
        return h.uuid

    def nvmlDeviceGetPciInfo(h):
        need_init()
        return types.SimpleNamespace(busId=h.bus_id.encode(), busIdLegacy=h.bus_id[4:].encode())

    def nvmlDeviceGetMigMode(h):
        need_init()
        return (1, 1) if h.mig_uuids else (0, 0)

    def nvmlDeviceGetMaxMigDeviceCount(h):
        need_init()
        return 7 if h.mig_uuids else 0

    def nvmlDeviceGetMigDeviceHandleByIndex(h, j):
        need_init()
        if j >= len(h.mig_uuids):
            raise NVMLError(NVML_ERROR_NOT_FOUND)
        return types.SimpleNamespace(uuid=h.mig_uuids[j], name=h.name + " MIG")

    def _value(v):
        need_init()
        if v is None:
            raise NVMLError(NVML_ERROR_NOT_SUPPORTED)
        return v

    def nvmlDeviceGetTotalEnergyConsumption(h):
        return _value(h.energy_mj)

    def nvmlDeviceGetPowerUsage(h):
        return _value(h.power_mw)

    def nvmlDeviceGetUtilizationRates(h):
        return types.SimpleNamespace(gpu=_value(h.util_pct), memory=h.mem_util_pct)

    def nvmlDeviceGetMemoryInfo(h):
        return types.SimpleNamespace(used=_value(h.mem_used_bytes), total=h.mem_total_bytes,
                                     free=h.mem_total_bytes - (h.mem_used_bytes or 0))

    def nvmlDeviceGetClockInfo(h, clock_type):
        assert clock_type == NVML_CLOCK_SM
        return _value(h.sm_clock_mhz)

    def nvmlDeviceGetTemperature(h, sensor):
        assert sensor == NVML_TEMPERATURE_GPU
        return _value(h.temp_c)

    def nvmlDeviceGetCurrentClocksEventReasons(h):
        return _value(h.clock_event_mask)

    def nvmlSystemGetDriverVersion():
        need_init()
        return "550.54.15"

    def nvmlSystemGetCudaDriverVersion():
        need_init()
        return 12040

    return types.SimpleNamespace(
        NVMLError=NVMLError, NVML_ERROR_NOT_SUPPORTED=NVML_ERROR_NOT_SUPPORTED,
        NVML_ERROR_LIBRARY_NOT_FOUND=NVML_ERROR_LIBRARY_NOT_FOUND,
        nvmlInit=nvmlInit, nvmlShutdown=nvmlShutdown, nvmlDeviceGetCount=nvmlDeviceGetCount,
        nvmlDeviceGetHandleByIndex=nvmlDeviceGetHandleByIndex, nvmlDeviceGetName=nvmlDeviceGetName,
        nvmlDeviceGetUUID=nvmlDeviceGetUUID, nvmlDeviceGetPciInfo=nvmlDeviceGetPciInfo,
        nvmlDeviceGetMigMode=nvmlDeviceGetMigMode, nvmlDeviceGetMaxMigDeviceCount=nvmlDeviceGetMaxMigDeviceCount,
        nvmlDeviceGetMigDeviceHandleByIndex=nvmlDeviceGetMigDeviceHandleByIndex,
        nvmlDeviceGetTotalEnergyConsumption=nvmlDeviceGetTotalEnergyConsumption,
        nvmlDeviceGetPowerUsage=nvmlDeviceGetPowerUsage,
        nvmlDeviceGetUtilizationRates=nvmlDeviceGetUtilizationRates, nvmlDeviceGetMemoryInfo=nvmlDeviceGetMemoryInfo,
        nvmlDeviceGetClockInfo=nvmlDeviceGetClockInfo, nvmlDeviceGetTemperature=nvmlDeviceGetTemperature,
        nvmlDeviceGetCurrentClocksEventReasons=nvmlDeviceGetCurrentClocksEventReasons,
        nvmlSystemGetDriverVersion=nvmlSystemGetDriverVersion,
        nvmlSystemGetCudaDriverVersion=nvmlSystemGetCudaDriverVersion,
        NVML_CLOCK_SM=NVML_CLOCK_SM, NVML_TEMPERATURE_GPU=NVML_TEMPERATURE_GPU, state=state)
