"""Per-rank telemetry (energy.telemetry) on fake /proc, /sys and NVML; idle power (energy.baseline)."""
from __future__ import annotations

import math
import os
import sys
import threading
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent / "helpers"))
from energy_fakes import FakeGpu, FakePowercap, fake_nvml  # noqa: E402

from common.telemetry_parts import read_telemetry, telemetry_table, write_telemetry_part  # noqa: E402
from energy.baseline import measure_idle_power  # noqa: E402
from energy.config import EnergyConfig  # noqa: E402
from energy.meter import EnergyMeter  # noqa: E402
from energy.telemetry import TelemetryReader, decode_throttle_reasons, is_throttling  # noqa: E402

TICKS = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")
CPUS = sorted(os.sched_getaffinity(0))


class Clock:
    def __init__(self):
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def fake_proc(root: Path, utime: int, stime: int, rss_pages: int, cpuinfo_mhz: list[float] | None = None) -> Path:
    (root / "self").mkdir(parents=True, exist_ok=True)
    # A command name with spaces and parentheses: the fields are counted after its closing one.
    fields = ["S", "1", "1", "1", "0", "-1", "4194560", "10", "0", "0", "0", str(utime), str(stime)] + ["0"] * 30
    (root / "self/stat").write_text(f"4242 (py (worker) 1) {' '.join(fields)}\n")
    (root / "self/statm").write_text(f"99999 {rss_pages} 300 4 0 500 0\n")
    if cpuinfo_mhz is not None:
        (root / "cpuinfo").write_text("".join(f"processor\t: {i}\ncpu MHz\t\t: {m}\n\n" for i, m in enumerate(cpuinfo_mhz)))
    return root


def fake_cpufreq(root: Path, khz_by_cpu: dict[int, int]) -> Path:
    for cpu, khz in khz_by_cpu.items():
        d = root / f"devices/system/cpu/cpu{cpu}/cpufreq"
        d.mkdir(parents=True, exist_ok=True)
        (d / "scaling_cur_freq").write_text(f"{khz}\n")
    return root


def reader(tmp_path, clock, **kwargs) -> TelemetryReader:
    return TelemetryReader(rank=3, node="n7", clock=clock, phase=lambda: "epoch-1",
                           proc_root=str(tmp_path / "proc"), sys_root=str(tmp_path / "sys"), **kwargs)


def test_process_cpu_share_rss_and_frequency_come_from_proc_and_sys(tmp_path):
    clock = Clock()
    fake_proc(tmp_path / "proc", utime=100, stime=50, rss_pages=2560)
    khz = {cpu: 1_200_000 + 1_200_000 * (i % 2) for i, cpu in enumerate(CPUS)}
    fake_cpufreq(tmp_path / "sys", khz)
    r = reader(tmp_path, clock)
    clock.t = 2.0
    fake_proc(tmp_path / "proc", utime=100 + 2 * TICKS, stime=50 + TICKS, rss_pages=5120)   # 3 CPU-seconds in 2 s
    fake_cpufreq(tmp_path / "sys", khz)
    r.sample()
    (row,) = r.drain()
    assert (row.rank, row.node, row.t_s, row.phase) == (3, "n7", 2.0, "epoch-1")
    assert row.cpu_util_ratio == pytest.approx(1.5)
    assert row.rss_bytes == 5120 * PAGE
    assert row.cpu_freq_mhz == pytest.approx(sum(khz.values()) / len(khz) / 1000)
    assert r.describe()["fields"]["cpu_freq_mhz"] == "read"
    assert r.drain() == []                                  # drained rows are gone


def test_cpuinfo_is_the_frequency_fallback_and_no_source_is_nan_with_a_reason(tmp_path):
    fake_proc(tmp_path / "proc", 1, 1, 10, cpuinfo_mhz=[2000.0, 3000.0])
    r = reader(tmp_path, Clock())
    r.sample()
    assert r.drain()[0].cpu_freq_mhz == pytest.approx(2500.0)
    (tmp_path / "proc/cpuinfo").unlink()
    (tmp_path / "proc/self/statm").unlink()
    r = reader(tmp_path, Clock())
    r.sample()
    row = r.drain()[0]
    assert math.isnan(row.cpu_freq_mhz) and math.isnan(row.rss_bytes)
    fields = r.describe()["fields"]
    assert "no cpufreq" in fields["cpu_freq_mhz"] and "statm" in fields["rss_bytes"]
    # No GPU handle: every GPU field is NaN, with the reason the caller gave.
    assert math.isnan(row.gpu_util_ratio) and row.gpu_throttle_reasons is None
    assert fields["gpu_temp_c"] == "no GPU handle"


def test_throttle_reasons_are_decoded_and_only_power_or_heat_counts_as_throttling():
    assert decode_throttle_reasons(0) == []
    assert decode_throttle_reasons(0x4 | 0x40) == ["sw_power_cap", "hw_thermal_slowdown"]
    assert decode_throttle_reasons(0x1 | 0x1000) == ["gpu_idle", "bit_0x1000"]
    assert is_throttling("sw_power_cap,hw_thermal_slowdown") and is_throttling("hw_power_brake_slowdown")
    assert not is_throttling("gpu_idle") and not is_throttling("applications_clocks_setting")
    assert not is_throttling("") and not is_throttling(None)


def _meter(tmp_path, gpus, gpu_index, clock=None, **kwargs) -> EnergyMeter:
    fake_proc(tmp_path / "proc", 10, 10, 100, cpuinfo_mhz=[1000.0])
    return EnergyMeter(EnergyConfig(powercap_root=str(tmp_path / "powercap"), **kwargs), rank=0, local_rank=0,
                       node="n0", read_node_counters=True, gpu_index=gpu_index, t0=0.0, clock=clock or Clock(),
                       nvml_module=fake_nvml(gpus), proc_root=str(tmp_path / "proc"), sys_root=str(tmp_path / "sys"))


def test_the_meter_reads_telemetry_of_the_gpu_its_energy_domain_opened(tmp_path):
    gpus = [FakeGpu(temp_c=30, sm_clock_mhz=1000),
            FakeGpu(uuid="GPU-1", util_pct=90, mem_util_pct=40, mem_used_bytes=70 << 30, mem_total_bytes=80 << 30,
                    sm_clock_mhz=1755, temp_c=84, clock_event_mask=0x20)]
    meter = _meter(tmp_path, gpus, gpu_index=1)
    assert [r.phase for r in meter.drain_telemetry()] == [""]     # the constructor's first pass, no window
    meter.begin("epoch-0")
    meter.begin("checkpoint-0")
    meter.sample_now()
    meter.end("checkpoint-0")
    meter.sample_now()
    rows = meter.drain_telemetry()
    assert [r.phase for r in rows] == ["checkpoint-0", "epoch-0"]      # the innermost open window
    row = rows[0]
    assert (row.gpu_util_ratio, row.gpu_mem_busy_ratio) == (0.9, 0.4)
    assert (row.gpu_mem_used_bytes, row.gpu_sm_clock_mhz, row.gpu_temp_c) == (70 << 30, 1755, 84)
    assert row.gpu_throttle_reasons == "sw_thermal_slowdown"
    info = meter.describe()["telemetry"]
    assert info["gpu_mem_total_bytes"] == 80 << 30 and set(info["fields"].values()) == {"read"}
    meter.stop()


def test_an_unsupported_gpu_query_is_nan_with_nvmls_reason(tmp_path):
    meter = _meter(tmp_path, [FakeGpu(temp_c=None, clock_event_mask=None)], gpu_index=0)
    meter.sample_now()
    row = meter.drain_telemetry()[-1]
    assert math.isnan(row.gpu_temp_c) and row.gpu_throttle_reasons is None and row.gpu_util_ratio == 0.5
    fields = meter.describe()["telemetry"]["fields"]
    assert "Not Supported" in fields["gpu_temp_c"] and "Not Supported" in fields["gpu_throttle_reasons"]
    meter.stop()


def test_telemetry_rides_on_the_energy_sampler_thread_one_row_per_pass(tmp_path):
    meter = _meter(tmp_path, [FakeGpu()], gpu_index=0, sample_interval_s=0.01)
    before = threading.active_count()
    meter.start()
    assert threading.active_count() == before + 1           # the sampler, and no other thread
    deadline = time.monotonic() + 10
    while meter.sampler_stats.samples < 5 and time.monotonic() < deadline:
        time.sleep(0.01)
    meter.stop()
    # Every sampler pass (the constructor's first reading included) left exactly one row.
    assert meter.sampler_stats.samples >= 5
    assert len(meter.drain_telemetry()) == meter.sampler_stats.samples


def test_the_buffer_keeps_the_newest_rows_when_nobody_drains_it(tmp_path):
    fake_proc(tmp_path / "proc", 1, 1, 10)
    clock = Clock()
    r = reader(tmp_path, clock, max_rows=3)
    for t in range(5):
        clock.t = float(t + 1)
        r.sample()
    assert [row.t_s for row in r.drain()] == [3.0, 4.0, 5.0]
    assert r.describe()["dropped_rows"] == 2


def test_telemetry_parts_round_trip_and_an_old_run_has_none(tmp_path):
    assert read_telemetry(tmp_path) is None
    fake_proc(tmp_path / "proc", 1, 1, 10)
    r = reader(tmp_path, Clock())
    r.sample()
    r.sample()
    assert write_telemetry_part(tmp_path, [telemetry_table([], 2)], attempt=2, label="000000") is None
    assert len(read_telemetry(tmp_path)) == 0
    write_telemetry_part(tmp_path, [telemetry_table(r.drain(), 2)], attempt=2, label="000001")
    table = read_telemetry(tmp_path)
    assert len(table) == 2 and set(table["attempt"]) == {2} and set(table["phase"]) == {"epoch-1"}
    assert table["gpu_throttle_reasons"].isna().all()


def test_idle_power_is_window_energy_over_its_time_for_every_domain(tmp_path):
    clock = Clock()
    cap = FakePowercap(tmp_path / "powercap")
    cap.zone("intel-rapl:0", "package-0", 1_000_000)
    cap.zone("intel-rapl:0:0", "dram", 5_000)
    gpu = FakeGpu(energy_mj=10_000)
    meter = _meter(tmp_path, [gpu], gpu_index=0, clock=clock)

    def idle(seconds: float) -> None:      # 2 s pass: 60 J in the GPU, 80 J package, 10 J DRAM
        clock.t += seconds
        gpu.energy_mj += 60_000
        cap.add("intel-rapl:0", 80_000_000)
        cap.add("intel-rapl:0:0", 10_000_000)

    entry = measure_idle_power(meter, 2.0, attempt=1, sleep=idle)
    assert (entry["rank"], entry["node"], entry["when"], entry["attempt"], entry["seconds"]) == \
        (0, "n0", "before_first_epoch", 1, 2.0)
    assert (entry["gpu"], entry["cpu"], entry["dram"]) == (pytest.approx(30.0), pytest.approx(40.0), pytest.approx(5.0))
    assert entry["gpu_source"] == entry["cpu_source"] == "measured"
    meter.stop()


def test_idle_power_of_an_unread_domain_is_null_with_its_source(tmp_path):
    meter = EnergyMeter(EnergyConfig(powercap_root=str(tmp_path / "none")), rank=2, local_rank=1, node="n1",
                        read_node_counters=False, gpu_index=None, t0=0.0, clock=Clock())
    entry = measure_idle_power(meter, 0.0, when="after_last_epoch", sleep=lambda s: None)
    assert entry["gpu"] is entry["cpu"] is entry["dram"] is None
    assert (entry["gpu_source"], entry["cpu_source"], entry["when"]) == ("unavailable", "not_reader", "after_last_epoch")
    meter.stop()
