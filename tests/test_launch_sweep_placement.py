"""launch.sweep jobs on GPU nodes and their guards: one GPU per rank (--gpus-per-task=1,
--gpu-bind), cores per rank from the node's cores, the preflight before training, and the cap on
requeueing a job that fails the same way.

The scripts run under bash against fake srun/scontrol and the fake interpreter
(tests/helpers/launch_fake_*.sh), whose scaling.preflight exits FAKE_PREFLIGHT_RC.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from test_launch_sweep import FAKE_PY, _directives, _resolve  # noqa: E402
from test_launch_sweep_sigterm import _end, _start, _wait_for  # noqa: E402

from launch import campaign as cmp  # noqa: E402
from launch import sweep as sw  # noqa: E402
from common.settings import resolve_sections  # noqa: E402


def _point(tmp_path: Path, **kw) -> sw.Job:
    base = dict(name="g", nodes=[1], engines=["horovod"], modes=["weak"], python=FAKE_PY)
    sweep, run = _resolve(tmp_path, **{**base, **kw})
    jobs = sw.build_jobs(sweep, run)
    sw.write_jobs(sweep, jobs)
    return jobs[0]


def _bash(script: Path, tmp_path: Path, **env: str) -> subprocess.CompletedProcess:
    full = dict(os.environ, SLURM_JOB_ID="40", FAKE_PYTHON_LOG=str(tmp_path / "py.log"), **env)
    return subprocess.run(["bash", str(script)], env=full, capture_output=True, text=True, timeout=30)


def _py_calls(tmp_path: Path) -> list[str]:
    log = tmp_path / "py.log"
    return log.read_text().splitlines() if log.exists() else []


# ----------------------------------------------------------------------------- GPU placement
@pytest.mark.parametrize("gpus, cores, cpus, expected", [
    (4, 32, 0, 8),      # the node's cores shared by its GPUs
    (4, 48, 0, 12),
    (4, 32, 6, 6),      # given explicitly
    (0, 32, 0, 16),     # CPU nodes: the cores shared by the ranks (2 per node below)
    (0, 0, 0, 1),       # CPU nodes, cores not given: one core per rank, as before
])
def test_cores_per_rank(tmp_path, gpus, cores, cpus, expected):
    job = _point(tmp_path, tasks_per_node=2, gpus_per_node=gpus, cores_per_node=cores, cpus_per_task=cpus)
    d = _directives(job.text)
    assert d["--cpus-per-task"] == str(expected)
    assert f"--ntasks-per-node=2 --cpus-per-task={expected} " in job.text   # srun repeats it


@pytest.mark.parametrize("gpu_bind, option", [("none", "--gpu-bind=none"), ("per_task", "--gpu-bind=per_task:1")])
def test_gpu_bind_is_passed_to_every_step(tmp_path, gpu_bind, option):
    job = _point(tmp_path, nodes=[2], tasks_per_node=4, gpus_per_node=4, cores_per_node=32, gpu_bind=gpu_bind)
    steps = [line for line in job.text.splitlines() if "srun --mpi" in line]
    assert len(steps) == 3  # preflight, all-reduce benchmark, training
    assert all(f"--gpus-per-task=1 {option} " in s for s in steps)


def test_array_member_of_one_rank_asks_for_one_gpu(tmp_path):
    """A campaign member of one rank on 4-GPU nodes: one GPU and a quarter of the cores, not the node."""
    config = tmp_path / "camp.toml"
    config.write_text(f'[sweep]\nname = "camp"\nout_dir = "{tmp_path}"\npython = "{FAKE_PY}"\n'
                      'tasks_per_node = 4\ngpus_per_node = 4\ncores_per_node = 32\n'
                      '[campaign]\nlayout = "array"\ngroup_size = 1\n'
                      '[[campaign.members]]\nname = "m0"\n[[campaign.members]]\nname = "m1"\n')
    resolved = resolve_sections(sw.SECTIONS, config, None, read_by_caller=(cmp.TABLE,))
    c = cmp.parse_campaign(cmp.read_campaign(config), str(config), resolved["run"])
    (job, _) = sw.build_campaign_jobs(resolved["sweep"], resolved["run"], c)
    d = _directives(job.text)
    assert (d["--nodes"], d["--ntasks-per-node"], d["--gpus-per-task"], d["--cpus-per-task"]) == ("1", "1", "1", "8")
    assert "--gpus-per-node" not in job.text
    assert "--gpus-per-task=1 --gpu-bind=closest --kill-on-bad-exit=1 " in job.text
    assert job.text.index("-m scaling.preflight --engine horovod") < job.text.index("-m scaling.run")


@pytest.mark.parametrize("kw, message", [
    (dict(tasks_per_node=8, gpus_per_node=4, cores_per_node=64), "every rank needs a GPU of its own"),
    (dict(gpus_per_node=4), "needs cores_per_node"),
    (dict(tasks_per_node=4, cpus_per_task=16, cores_per_node=32), "> cores_per_node (32)"),
    (dict(gpus_per_node=1, cores_per_node=8, gpu_bind="map_gpu:0"), "gpu_bind"),
    (dict(max_same_failures=0), "max_same_failures"),
])
def test_placement_that_cannot_work_is_refused(tmp_path, kw, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        _resolve(tmp_path, **kw)


def test_config_file_errors_name_the_key_and_exit_2(tmp_path, capsys):
    bad = tmp_path / "s.toml"
    bad.write_text('[sweep]\ngpus_per_node = 4\ncores_per_node = 32\ngpus_per_tsak = 1\n')
    assert sw.main(["--config", str(bad), "--out-dir", str(tmp_path), "--dry-run"]) == 2
    assert "gpus_per_tsak" in capsys.readouterr().err
    bad.write_text('[sweep]\ngpus_per_node = 4\ncores_per_node = 32\ngpu_bind = "nearest"\n')
    assert sw.main(["--config", str(bad), "--out-dir", str(tmp_path), "--dry-run"]) == 2
    assert "gpu_bind" in capsys.readouterr().err


# ----------------------------------------------------------------------------- preflight
def test_preflight_runs_first_on_every_rank_of_the_job(tmp_path, fake_slurm):
    job = _point(tmp_path, nodes=[2], tasks_per_node=4, gpus_per_node=4, cores_per_node=32,
                 preflight_args=["--network", "my net.toml"])
    res = _bash(job.path, tmp_path)
    assert res.returncode == 0, res.stderr
    calls = _py_calls(tmp_path)
    assert calls[0] == "-m scaling.preflight --engine horovod --network my net.toml"
    assert [c.split()[1] for c in calls] == ["scaling.preflight", "scaling.allreduce_bench", "scaling.run"]
    sruns = fake_slurm.read_text().splitlines()
    assert sruns[0].split(" -m ")[0] == sruns[-1].split(" -m ")[0]   # the same ranks and GPUs as training


@pytest.mark.parametrize("rc, why", [(1, "a measurement on this allocation would be wrong"),
                                     (2, "bad input to the preflight")])
def test_failed_preflight_stops_the_job_before_training(tmp_path, fake_slurm, rc, why):
    job = _point(tmp_path)
    res = _bash(job.path, tmp_path, FAKE_PREFLIGHT_RC=str(rc))
    assert res.returncode == rc
    assert f"preflight failed (exit {rc}): {why}" in res.stderr
    assert "job 40 stops before training and is not requeued (preflight = false in [sweep] skips" in res.stderr
    assert [c.split()[1] for c in _py_calls(tmp_path)] == ["scaling.preflight"]
    assert "scontrol" not in fake_slurm.read_text()


def test_sigterm_during_the_preflight_skips_training_and_requeues(tmp_path, fake_slurm):
    """A preemption while the preflight runs is an interruption (requeue), not a failed preflight."""
    job = _point(tmp_path)
    log = tmp_path / "py.log"
    proc = _start(job.path, dict(os.environ, FAKE_PREFLIGHT_SLEEP_S="30", SLURM_JOB_ID="41",
                                 FAKE_PYTHON_LOG=str(log)))
    try:
        _wait_for(lambda: log.is_file() and "scaling.preflight" in log.read_text(), "the preflight to start")
        os.kill(proc.pid, signal.SIGTERM)
    finally:
        _, err = _end(proc)
    assert proc.returncode == 0, err
    assert "preflight failed" not in err and "scaling.run" not in log.read_text()
    assert "scontrol requeue 41" in fake_slurm.read_text()


def test_preflight_can_be_skipped(tmp_path, fake_slurm):
    job = _point(tmp_path, preflight=False)
    res = _bash(job.path, tmp_path, FAKE_PREFLIGHT_RC="1")
    assert res.returncode == 0, res.stderr
    assert [c.split()[1] for c in _py_calls(tmp_path)] == ["scaling.run"]
    assert sw.main(["--out-dir", str(tmp_path / "cli"), "--nodes", "1", "--no-preflight", "--dry-run"]) == 0


# ----------------------------------------------------------------------------- requeue cap
def test_a_failure_is_requeued_until_it_repeats_the_same_way(tmp_path, fake_slurm):
    job = _point(tmp_path, max_same_failures=2, max_requeues=5)
    first = _bash(job.path, tmp_path, FAKE_RUN_RC="1", FAKE_RUN_STATUS="stalled")
    assert first.returncode == 0, first.stderr
    assert "failed (exit 1, run status stalled; 1 of 2 alike in a row): requeueing job 40" in first.stderr
    assert fake_slurm.read_text().count("scontrol requeue 40") == 1
    # The same stall with another exit code (another rank ended the step first) is the same way.
    second = _bash(job.path, tmp_path, FAKE_RUN_RC="137", FAKE_RUN_STATUS="stalled", SLURM_RESTART_COUNT="1")
    assert second.returncode == 137
    assert ("job 40 failed the same way 2 times in a row (run status stalled; this time exit 137): not requeueing "
            "(max_same_failures)") in second.stderr
    assert fake_slurm.read_text().count("scontrol requeue") == 1
    assert _py_calls(tmp_path)[-1].endswith("--resume")   # the requeued start resumed


def test_different_failures_and_interruptions_break_the_streak(tmp_path, fake_slurm):
    job = _point(tmp_path, max_same_failures=2, max_requeues=5)
    runs = [dict(FAKE_RUN_RC="1", FAKE_RUN_STATUS="stalled"), dict(FAKE_RUN_RC="1", FAKE_RUN_STATUS="failed"),
            dict(FAKE_RUN_RC="3", FAKE_RUN_STATUS="interrupted"), dict(FAKE_RUN_RC="1", FAKE_RUN_STATUS="failed"),
            dict(FAKE_RUN_RC="1", FAKE_RUN_STATUS="stalled")]
    for k, env in enumerate(runs):
        res = _bash(job.path, tmp_path, SLURM_RESTART_COUNT=str(k), **env)
        assert res.returncode == 0, (k, res.stderr)
    assert fake_slurm.read_text().count("scontrol requeue 40") == 5


def test_bad_input_is_never_requeued_and_the_requeue_limit_holds(tmp_path, fake_slurm):
    job = _point(tmp_path, max_same_failures=3, max_requeues=1)
    res = _bash(job.path, tmp_path, FAKE_RUN_RC="2")
    assert res.returncode == 2 and "scontrol" not in fake_slurm.read_text()
    res = _bash(job.path, tmp_path, FAKE_RUN_RC="1", SLURM_RESTART_COUNT="1")
    assert res.returncode == 1
    assert "requeued 1 times already (max_requeues): not requeueing" in res.stderr
    assert "scontrol" not in fake_slurm.read_text()
