"""``python -m energy.monitor`` and ``python -m energy.overhead`` as a user runs them."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq

sys.path.insert(0, str(Path(__file__).parent / "helpers"))
from energy_fakes import WIDTH, two_socket_tree  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


def run_module(module: str, *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", module, *args], cwd=REPO, capture_output=True, text=True,
                          timeout=timeout)


def bump_script(zone_dir: Path, delta_uj: int, exit_code: int = 0) -> str:
    """Python for the measured command: add ``delta_uj`` to a fake counter in place, then exit."""
    return (f"import os,sys,time; p={str(zone_dir / 'energy_uj')!r}; v=int(open(p).read())+{delta_uj}; "
            f"fd=os.open(p,os.O_WRONLY); os.pwrite(fd,(str(v).zfill({WIDTH})+chr(10)).encode(),0); os.close(fd); "
            f"time.sleep(0.15); print('child-output'); sys.exit({exit_code})")


def test_monitor_measures_command_and_writes_files(tmp_path):
    tree = two_socket_tree(tmp_path / "powercap")
    out = tmp_path / "out"
    proc = run_module("energy.monitor", "--interval", "0.02", "--powercap-root", str(tree.root),
                      "--out", str(out), "--", sys.executable, "-c", bump_script(tree.root / "intel-rapl:1", 3_250_000))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "child-output"          # the command keeps stdout
    assert "3.250 J  cpu" in proc.stderr and "elapsed, exit code 0" in proc.stderr
    assert "gpu   unavailable" in proc.stderr                # no GPU here: said, with the reason
    summary = json.loads((out / "summary.json").read_text())
    assert summary["domains"]["cpu"]["energy_j"] == 3.25
    assert summary["domains"]["cpu"]["source"] == "measured"
    assert summary["domains"]["dram"]["energy_j"] == 0.0
    assert summary["duration_s"] >= 0.15
    assert summary["domains"]["cpu"]["avg_power_w"] == summary["domains"]["cpu"]["energy_j"] / summary["duration_s"]
    table = pq.read_table(out / "power.parquet")
    assert table.column_names == ["rank", "node", "t_s", "domain", "device", "watts", "source", "attempt"]
    rows = table.to_pylist()
    assert {r["device"] for r in rows} == {"package-0", "package-1", "package-0:dram", "package-1:dram"}
    p1 = sorted((r["t_s"], r["watts"]) for r in rows if r["device"] == "package-1")
    assert len(p1) >= 3 and all(w >= 0 for _, w in p1) and max(w for _, w in p1) > 0
    assert {r["source"] for r in rows} == {"measured"} and {r["rank"] for r in rows} == {0}
    assert summary["samples"] == len(rows)


def test_monitor_exit_codes_and_json(tmp_path):
    tree = two_socket_tree(tmp_path / "powercap")
    proc = run_module("energy.monitor", "--json", "--powercap-root", str(tree.root), "--",
                      sys.executable, "-c", "import sys; print('x'); sys.exit(7)")
    assert proc.returncode == 7
    lines = proc.stdout.strip().splitlines()
    assert lines[0] == "x"
    summary = json.loads(lines[-1])
    assert summary["exit_code"] == 7 and summary["domains"]["cpu"]["energy_j"] == 0.0
    assert proc.stderr == ""


def test_monitor_user_errors_exit_2_with_one_line(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    cases = [
        [],                                                   # no command
        ["--interval", "abc", "--", "true"],
        ["--interval", "0", "--", "true"],
        ["--out", str(blocker / "sub"), "--", "true"],        # not writable, even as root
        ["--", str(tmp_path / "no-such-program")],
        ["--bogus", "--", "true"],
    ]
    for args in cases:
        proc = run_module("energy.monitor", *args)
        assert proc.returncode == 2, (args, proc.stderr)
        assert proc.stderr.count("\n") == 1 and proc.stderr.startswith("error: "), (args, proc.stderr)
    assert not (blocker.parent / "sub").exists()


def test_monitor_help_has_example():
    proc = run_module("energy.monitor", "--help")
    assert proc.returncode == 0
    assert "example:" in proc.stdout and "-- python" in proc.stdout and "--powercap-root" in proc.stdout


def test_overhead_prints_one_json_line():
    proc = run_module("energy.overhead", "--seconds", "0.3", "--interval", "0.05")
    assert proc.returncode == 0, proc.stderr
    [line] = proc.stdout.strip().splitlines()
    result = json.loads(line)
    fake = result["fake_powercap"]
    assert fake["channels"] == 4 and fake["samples"] >= 3
    assert fake["domains"] == {"gpu": "unavailable", "cpu": "measured", "dram": "measured"}
    assert 0 <= fake["cpu_fraction"] < 0.5
    assert "real" in result and result["interval_s"] == 0.05
    # Telemetry rides on the same passes: one row per pass, its own cost reported.
    assert fake["telemetry_rows"] == fake["samples"] and "rss_bytes" in fake["telemetry_fields_read"]
    assert result["telemetry_without_gpu"]["cpu_us_per_pass"] > 0
    assert run_module("energy.overhead", "--seconds", "0").returncode == 2


def test_throughput_hook_reports_both_modes(tmp_path):
    import time

    from energy.config import EnergyConfig
    from energy.overhead import make_meter, throughput_on_off, write_fake_powercap

    config = EnergyConfig(powercap_root=str(write_fake_powercap(tmp_path)), sample_interval_s=0.005)
    built = []

    def factory():
        built.append(make_meter(config, real=False))
        return built[-1]

    def workload() -> int:
        time.sleep(0.02)
        return 100

    result = throughput_on_off(workload, repeats=2, meter_factory=factory)
    assert len(result["runs_off"]) == len(result["runs_on"]) == 2 == len(built)
    assert 0 < result["items_per_s_on"] <= 100 / 0.02 and 0 < result["items_per_s_off"] <= 100 / 0.02
    assert {"slowdown", "within_noise", "meets_target", "off_relative_spread"} <= set(result)
    assert not any(m.describe()["sampler"]["running"] for m in built)
