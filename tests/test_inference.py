"""bologan.inference: result fields, timing budget, energy provenance, plot, CLI
(``python -m bologan.bench --inference``) and its errors."""
from __future__ import annotations

import itertools
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from bologan import bench, comparison
from bologan.inference import inference, inference_energy, inference_timing
from common.errors import UserError
from energy.config import EnergyConfig
from energy.records import EnergyWindow

sys.path.insert(0, str(Path(__file__).parent / "helpers"))
from energy_fakes import FakePowercap  # noqa: E402

TINY = dict(batch_sizes=[1, 8], on_demand_calls=5, warmup_calls=1, min_time_s=0.01, min_calls=2, max_time_s=5.0)
TOP_KEYS = {"schema_version", "kind", "particle", "n_voxels", "weights", "checkpoint", "model", "label", "settings",
            "call_definition", "on_demand", "batches", "peak", "energy", "versions", "hardware", "git_commit",
            "started_at", "wall_s", "notes"}
ENERGY_KEYS = {"energy_j", "energy_per_1000_showers_j", "energy_source", "energy_domains", "energy_reason",
               "energy_by_domain"}
ON_DEMAND_KEYS = {"calls", "time_s", "latency_median_ms", "latency_p99_ms", "latency_mean_ms", "latency_min_ms",
                  "latency_max_ms", "throughput_showers_per_s"} | ENERGY_KEYS
BATCH_KEYS = {"batch_size", "calls", "showers", "time_s", "call_median_ms", "call_p99_ms", "time_per_shower_ms",
              "throughput_showers_per_s"} | ENERGY_KEYS
SETTINGS_KEYS = {"particle", "batch_sizes", "on_demand_calls", "warmup_calls", "min_time_s", "min_calls",
                 "max_time_s", "momentum_mev", "xla", "precision", "threads", "seed", "precision_policy"}


def no_counters(tmp_path: Path, **kw) -> EnergyConfig:
    empty = tmp_path / "no-powercap"
    empty.mkdir(exist_ok=True)
    return EnergyConfig(powercap_root=str(empty), **kw)


@pytest.fixture(scope="module")
def photons_result(tmp_path_factory):
    cfg = no_counters(tmp_path_factory.mktemp("e"))
    return inference.run_benchmark(inference.InferenceSettings(particle="photons", **TINY), cfg)


def test_result_has_every_field(photons_result):
    r = photons_result
    assert TOP_KEYS <= set(r)
    assert r["kind"] == inference.RESULT_KIND and r["schema_version"] == inference.SCHEMA_VERSION
    assert r["particle"] == "photons" and r["n_voxels"] == 368 and r["weights"] == "random"
    assert r["checkpoint"] is None and r["label"] == "maxe"
    assert SETTINGS_KEYS <= set(r["settings"]) and r["settings"]["precision_policy"] == "float32"
    assert ON_DEMAND_KEYS <= set(r["on_demand"]) and r["on_demand"]["calls"] == 5
    od = r["on_demand"]
    assert 0 < od["latency_min_ms"] <= od["latency_median_ms"] <= od["latency_p99_ms"] <= od["latency_max_ms"]
    assert [b["batch_size"] for b in r["batches"]] == [1, 8]
    for b in r["batches"]:
        assert BATCH_KEYS <= set(b)
        assert b["calls"] >= 2 and b["showers"] == b["calls"] * b["batch_size"]
        assert math.isclose(b["throughput_showers_per_s"], b["showers"] / b["time_s"])
        assert math.isclose(b["time_per_shower_ms"], 1e3 / b["throughput_showers_per_s"])
    best = max(r["batches"], key=lambda b: b["throughput_showers_per_s"])
    assert r["peak"]["batch_size"] == best["batch_size"]
    assert {"cpu_model", "device", "device_kind", "device_name", "gpus"} <= set(r["hardware"])
    assert r["versions"]["tensorflow"] and r["versions"]["numpy"]
    json.dumps(r)   # JSON-ready as it is


def test_energy_without_counters_is_unavailable_with_reasons(photons_result):
    r = photons_result
    assert r["energy"]["source"] == "unavailable"
    for entry in [r["on_demand"]] + r["batches"]:
        assert entry["energy_source"] == "unavailable" and entry["energy_per_1000_showers_j"] is None
        assert "cpu:" in entry["energy_reason"] and "powercap" in entry["energy_reason"]
    assert "no-powercap" in r["energy"]["reason"]


def test_measured_rapl_gives_energy_per_1000_showers(tmp_path, monkeypatch):
    """A fake powercap tree whose package counter gains exactly 0.5 J inside every window."""
    tree = FakePowercap(tmp_path / "powercap")
    tree.zone("intel-rapl:0", "package-0", 0)
    real_open = inference.open_meter

    def open_meter(cfg, on_gpu):
        meter = real_open(cfg, on_gpu)
        real_end = meter.end

        def end(name):
            tree.add("intel-rapl:0", 500_000)
            return real_end(name)

        meter.end = end
        return meter

    monkeypatch.setattr(inference, "open_meter", open_meter)
    r = inference.run_benchmark(inference.InferenceSettings(particle="pions", **TINY),
                                EnergyConfig(powercap_root=str(tmp_path / "powercap")))
    assert r["n_voxels"] == 533 and r["energy"]["source"] == "measured"
    for entry in [r["on_demand"]] + r["batches"]:
        assert entry["energy_source"] == "measured" and entry["energy_domains"] == ["cpu"]
        assert entry["energy_j"] == pytest.approx(0.5)
        showers = entry.get("showers", entry["calls"])
        assert entry["energy_per_1000_showers_j"] == pytest.approx(500.0 / showers)
        assert entry["energy_by_domain"]["dram"]["source"] == "unavailable"


def test_estimate_only_when_asked(tmp_path):
    cfg = no_counters(tmp_path, estimate_energy=True, cpu_tdp_w=100.0)
    r = inference.run_benchmark(inference.InferenceSettings(particle="photons", **{**TINY, "batch_sizes": [4]}), cfg)
    assert r["energy"]["source"] == "estimated"
    b = r["batches"][0]
    assert b["energy_source"] == "estimated" and b["energy_domains"] == ["cpu"]
    assert b["energy_per_1000_showers_j"] is not None and b["energy_per_1000_showers_j"] >= 0


def _window(**kw) -> EnergyWindow:
    return EnergyWindow(name="w", time_s=1.0, **kw)


def test_combine_energy_never_mixes_measured_and_estimated():
    w = _window(gpu_energy_j=30.0, gpu_energy_source="measured", cpu_energy_j=5.0, cpu_energy_source="estimated")
    e = inference_energy.combine_energy(w, showers=100)
    assert (e.energy_j, e.energy_source, e.energy_domains) == (30.0, "measured", ["gpu"])
    assert e.energy_per_1000_showers_j == pytest.approx(300.0)
    w = _window(cpu_energy_j=5.0, cpu_energy_source="estimated")
    e = inference_energy.combine_energy(w, showers=10)
    assert (e.energy_source, e.energy_per_1000_showers_j) == ("estimated", pytest.approx(500.0))
    w = _window(gpu_energy_j=1.0, gpu_energy_source="measured", cpu_energy_j=2.0, cpu_energy_source="measured",
                dram_energy_j=3.0, dram_energy_source="measured")
    assert inference_energy.combine_energy(w, showers=6000).energy_per_1000_showers_j == pytest.approx(1.0)
    describe = {"domains": {"gpu": {"reason": "no GPU"}, "cpu": {"reason": "RAPL root-only"}, "dram": {}}}
    e = inference_energy.combine_energy(_window(), showers=10, describe=describe)
    assert e.energy_j is None and e.energy_source == "unavailable"
    assert "gpu: no GPU" in e.energy_reason and "cpu: RAPL root-only" in e.energy_reason


def test_time_budget_rules():
    calls = []

    def call(*_):
        calls.append(1)

    def fake_clock(step):
        counter = itertools.count()
        return lambda: next(counter) * step

    # Fast calls: the time budget decides (0.5 s at 0.05 s per clock read, 2 reads per call).
    s = inference.InferenceSettings(min_time_s=0.5, min_calls=3, max_time_s=10, warmup_calls=2)
    res = inference_timing.time_batch(call, (None, None), 4, s, clock=fake_clock(0.05))
    assert res.calls >= 3 and res.time_s >= 0.5 and len(calls) == res.calls + 2
    # Slow calls: the minimum number of calls decides.
    res = inference_timing.time_batch(call, (None, None), 4, s, clock=fake_clock(1.0))
    assert res.calls == 3
    # Very slow calls: max_time_s stops early, with at least one call.
    s = inference.InferenceSettings(min_time_s=0.5, min_calls=50, max_time_s=3, warmup_calls=0)
    res = inference_timing.time_batch(call, (None, None), 4, s, clock=fake_clock(1.0))
    assert 1 <= res.calls < 50


def test_latency_stats():
    st = inference_timing.latency_stats([0.001] * 99 + [0.1])
    assert st["median_ms"] == pytest.approx(1.0) and st["max_ms"] == pytest.approx(100.0)
    assert 1.0 < st["p99_ms"] <= 100.0


def test_cli_writes_json_and_plot_readable_by_comparison(tmp_path, capsys):
    out = tmp_path / "inf" / "pions.json"
    rc = bench.main(["--inference", "--particle", "pions", "--batch-sizes", "1,4",
                                   "--on-demand-calls", "4", "--warmup-calls", "1", "--min-time-s", "0.01",
                                   "--min-calls", "2", "--precision", "bf16", "--out", str(out),
                                   "--powercap-root", str(tmp_path)])
    err = capsys.readouterr().err
    assert rc == 0, err
    r = json.loads(out.read_text())
    assert r["settings"]["precision_policy"] == "mixed_bfloat16" and r["particle"] == "pions"
    # The figure (here with its "energy unavailable" panel) beside the JSON, in both formats.
    assert r["plots"] == [str(tmp_path / "inf" / "pions.png"), str(tmp_path / "inf" / "pions.pdf")]
    assert all(Path(p).stat().st_size > 0 for p in r["plots"])
    assert "peak throughput" in err and "on-demand batch 1: median" in err
    import tensorflow as tf

    assert tf.keras.mixed_precision.global_policy().name == "float32"    # restored after the run
    rows = comparison.compare(comparison.gan_figures_from_inference(r, str(out)),
                              comparison.load_reference())
    assert any(row.gan_kind == "measured" for row in rows)


def test_xla_and_a_checkpoint(tmp_path):
    sys.path.insert(0, str(Path(__file__).parent))
    from test_generate import make_train_dir

    from bologan.generate import resolve_checkpoint

    train = make_train_dir(tmp_path, particle="pions", iterations=(2,))
    r = inference.run_benchmark(inference.InferenceSettings(particle="photons", xla=True,
                                                            **{**TINY, "batch_sizes": [2]}),
                                no_counters(tmp_path), checkpoint=resolve_checkpoint(train))
    assert r["weights"] == "checkpoint" and r["checkpoint"]["iteration"] == 2
    assert r["particle"] == "pions" and r["settings"]["xla"] is True
    assert r["model"]["generator_widths"] == [8, 16]
    assert any("particle taken from the checkpoint" in n for n in r["notes"])


@pytest.mark.parametrize("argv, match", [
    (["--batch-sizes", "0,4"], "--batch-sizes: 0"),
    (["--batch-sizes", "4,4"], "listed twice"),
    (["--batch-sizes", "a"], "--batch-sizes: 'a' is not a batch size"),
    (["--batch-sizes", ","], "--batch-sizes: empty list"),
    (["--precision", "half"], "invalid choice"),
    (["--on-demand-calls", "0"], "--on-demand-calls must be >= 1"),
    (["--min-time-s", "2", "--max-time-s", "1"], "--max-time-s must be >= --min-time-s"),
    (["--iteration", "3"], "need --checkpoint"),
    (["--checkpoint", "/nonexistent/run"], "not found"),
])
def test_bad_input_is_one_line_exit_2(tmp_path, capsys, argv, match):
    out = tmp_path / "r.json"
    rc = bench.main(["--inference"] + argv + ["--out", str(out)])
    err = capsys.readouterr().err
    assert rc == 2 and err.startswith("error: ") and err.count("\n") == 1 and match in err
    assert not out.exists()


def test_settings_check_directly():
    with pytest.raises(UserError, match="empty"):
        inference.InferenceSettings(batch_sizes=[]).check()
    inference.InferenceSettings().check()
    assert inference.DEFAULT_BATCH_SIZES[-1] == 16384 and np.all(np.diff(inference.DEFAULT_BATCH_SIZES) > 0)


def test_json_flag_prints_the_result_also_with_out(tmp_path, capsys):
    out = tmp_path / "r.json"
    rc = bench.main(["--inference", "--json", "--batch-sizes", "2", "--on-demand-calls", "2", "--warmup-calls", "0",
                     "--min-time-s", "0", "--min-calls", "1", "--no-plot", "--out", str(out),
                     "--powercap-root", str(tmp_path)])
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    printed = json.loads(captured.out)
    assert printed == json.loads(out.read_text()) and "plots" not in printed
    assert [b["batch_size"] for b in printed["batches"]] == [2] and printed["on_demand"]["calls"] == 2
    assert "peak throughput" in captured.err       # the summary stays on stderr


def test_python_m_bologan_bench_inference_json(tmp_path):
    """The one command-line way into the benchmark, as a user types it."""
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "TF_CPP_MIN_LOG_LEVEL": "3"}
    proc = subprocess.run([sys.executable, "-m", "bologan.bench", "--inference", "--json", "--particle", "pions",
                           "--batch-sizes", "1,2", "--on-demand-calls", "2", "--warmup-calls", "0",
                           "--min-time-s", "0", "--min-calls", "1", "--powercap-root", str(tmp_path)],
                          cwd=Path(__file__).resolve().parents[1], env=env, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr
    r = json.loads(proc.stdout)
    assert r["kind"] == inference.RESULT_KIND and r["particle"] == "pions"
    assert [b["batch_size"] for b in r["batches"]] == [1, 2]


def test_help_of_both_modes_shows_defaults(capsys):
    with pytest.raises(SystemExit) as exc:
        bench.main(["--inference", "--help"])
    text = " ".join(capsys.readouterr().out.split())     # argparse wraps lines at the terminal width
    assert exc.value.code == 0 and "python -m bologan.bench --inference" in text
    assert "(default: 1,4,16,64,256,1024,4096,16384)" in text and "--json" in text
    with pytest.raises(SystemExit) as exc:
        bench.main(["--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert exc.value.code == 0 and "--batch-size" in text and "(default: 128)" in text and "--inference" in text


def test_training_bench_refuses_bad_values_in_one_line(capsys):
    assert bench.main(["--batch-size", "0"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: python -m bologan.bench: --batch-size") and err.count("\n") == 1
    assert bench.main(["--inf", "--json"]) == 2      # never the training benchmark by mistake
    assert "write --inference in full" in capsys.readouterr().err


def test_python_m_bologan_inference_points_to_the_one_command():
    proc = subprocess.run([sys.executable, "-m", "bologan.inference", "--particle", "pions"],
                          cwd=Path(__file__).resolve().parents[1], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr == "error: the inference benchmark runs as: python -m bologan.bench --inference ...\n"
