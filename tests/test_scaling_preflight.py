"""python -m scaling.preflight: one mpirun launch of two CPU ranks reported honestly; a GPU node
with CPU TensorFlow is a failure (exit 1); bad input exits 2; the comm-fence check catches a
timer that does not wait for the preceding kernel; the network file and its model."""
from __future__ import annotations

import json
import os
import stat
import subprocess
import sys

import pytest

from common.errors import UserError
from conftest import ROOT, run_module
from scaling.preflight import Network, RankReport, read_network, ring_allreduce_s, table

KEYS = {"rank", "local_rank", "host", "device", "gpu_pci_bus_id", "nvml_energy", "rapl", "ok", "problems"}


@pytest.mark.mpi
def test_two_cpu_ranks_under_mpirun_report_honestly():
    res = run_module("scaling.preflight", ["--json"], ranks=2, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    reports = json.loads(res.stdout)
    assert [r["rank"] for r in reports] == [0, 1] and [r["local_rank"] for r in reports] == [0, 1]
    for r in reports:
        assert KEYS <= set(r)
        assert (r["device"], r["gpu_pci_bus_id"], r["nvml_energy"], r["ok"], r["problems"]) == ("CPU", None, "n/a", True, [])
        fence = r["checks"]["fence"]
        assert fence["timed_allreduce_s"] < 0.5 * fence["kernel_s"]
        assert r["checks"]["horovod_built"]["mpi"] is True
    # RAPL is the node reader's business: rank 1 says so, rank 0 says whether it can read it
    assert reports[1]["rapl"] == "not reader" and reports[0]["rapl"] in ("readable", "unavailable")
    if reports[0]["rapl"] == "unavailable":
        assert any("RAPL" in w and "fix:" in w for w in reports[0]["warnings"])


def test_gpu_node_with_cpu_tensorflow_fails_the_preflight(tmp_path):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    smi = bin_dir / "nvidia-smi"
    smi.write_text("#!/bin/sh\necho 'GPU 0: NVIDIA H100 80GB HBM3 (UUID: GPU-aaaa1111-0000-0000-0000-000000000000)'\n")
    smi.chmod(smi.stat().st_mode | stat.S_IXUSR)
    res = run_module("scaling.preflight", ["--engine", "mirrored"], timeout=300,
                     env={"PATH": f"{bin_dir}:{os.environ['PATH']}"})
    assert res.returncode == 1, res.stderr[-2000:]
    assert "FAIL this node has an NVIDIA GPU (nvidia-smi -L) but TensorFlow sees none" in res.stdout
    assert res.stdout.strip().splitlines()[-1].startswith("preflight: FAILED on rank(s) 0")


def test_bad_network_file_exits_2_with_one_line(tmp_path):
    bad = tmp_path / "net.toml"
    bad.write_text("[inter_node]\nbandwidth_bytes_per_s = 0\nlatency_s = 1e-6\n")
    res = run_module("scaling.preflight", ["--network", str(bad)], timeout=120)
    assert res.returncode == 2
    assert res.stderr.strip() == f"error: --network {bad}: [inter_node] bandwidth_bytes_per_s must be > 0 and latency_s >= 0"


def test_network_files_and_the_ring_model(tmp_path):
    hdr = read_network("infiniband_hdr")
    assert hdr.bandwidth_bytes_per_s == 24.0e9 and hdr.latency_s == 1.0e-6
    with pytest.raises(UserError, match="shipped: .*infiniband_hdr"):
        read_network("no_such_network")
    (tmp_path / "x.toml").write_text("[network]\nname = 'x'\n")
    with pytest.raises(UserError, match="needs \\[inter_node\\]"):
        read_network(str(tmp_path / "x.toml"))
    net = Network("n", 1e9, 1e-6)
    # 2 ranks: 2 latency steps, each rank sends half the message twice = the whole message once
    assert ring_allreduce_s(1_000_000, 2, net) == pytest.approx(2e-6 + 1e-3)
    assert ring_allreduce_s(1_000_000, 1, net) == 0.0


def test_table_names_failures_and_warnings():
    r = RankReport(3, 1, "n2", 4, device="GPU 0000:3b:00.0", gpu_pci_bus_id="0000:3b:00.0", nvml_energy="nvml-energy-counter")
    r.fail("ranks 2, 3 on n2 all use GPU 0000:3b:00.0")
    r.warn("several nodes but no --network file")
    text = table([r])
    assert text.splitlines()[0].split()[:3] == ["rank", "local", "host"]
    assert "NO" in text and "FAIL ranks 2, 3" in text and "warn several nodes" in text and not r.ok


FENCE = """
import sys, types
import tensorflow as tf
import bologan.step
from scaling import preflight
from scaling.collectives import LocalCollectives

def timer_without_fence(reduce, grads):
    # as on a GPU before the fix: the opening timestamp does not wait for the kernel
    t0 = tf.timestamp()
    reduced = reduce(grads)
    with tf.control_dependencies(reduced):
        t1 = tf.timestamp()
    return reduced, t1 - t0

if sys.argv[1] == "broken":
    bologan.step.timed = timer_without_fence
hvd = types.SimpleNamespace(allreduce=lambda t, op=None: tf.identity(t), Sum=None)
report = preflight.RankReport(0, 0, "n", 1)
preflight.check_comm_fence(report, hvd, LocalCollectives(), on_gpu=False)
print(report.ok, report.checks["fence"], report.problems)
"""


@pytest.mark.parametrize("timer", ["bologan", "broken"])
def test_comm_fence_check_catches_a_timer_that_holds_the_kernel(timer):
    res = subprocess.run([sys.executable, "-c", FENCE, timer], cwd=ROOT, capture_output=True, text=True, timeout=300,
                         env={**os.environ, "PYTHONPATH": str(ROOT), "TF_CPP_MIN_LOG_LEVEL": "2"})
    assert res.returncode == 0, res.stderr[-2000:]
    if timer == "bologan":
        assert res.stdout.startswith("True"), res.stdout
    else:
        assert res.stdout.startswith("False") and "comm timing holds the preceding compute" in res.stdout, res.stdout


def test_settings_come_from_the_training_config_unless_flags_say_otherwise(tmp_path):
    from scaling.preflight import parse_args

    cfg = tmp_path / "run.toml"
    cfg.write_text('[scaling]\nengine = "mirrored"\nshare_gpu = true\n[model]\nparticle = "pions"\n[train]\nn_disc = 3\n')
    args = parse_args(["--config", str(cfg)])
    assert (args.engine, args.share_gpu, args.particle, args.n_disc) == ("mirrored", True, "pions", 3)
    args = parse_args(["--config", str(cfg), "--engine", "horovod", "--n-disc", "7"])
    assert (args.engine, args.n_disc) == ("horovod", 7)
    args = parse_args([])
    assert (args.engine, args.share_gpu, args.powercap_root) == ("horovod", False, "/sys/class/powercap")
    cfg.write_text("[scaling]\nshare_gpus = true\n")
    with pytest.raises(UserError, match="share_gpus"):
        parse_args(["--config", str(cfg)])
