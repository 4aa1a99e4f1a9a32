"""launch.sweep: the sbatch text (directives, quoting, requeue, dependency chain) and submission.

Scripts are also executed with bash against fake srun/scontrol/sbatch and a fake interpreter
(tests/helpers/launch_fake_*.sh), so quoting is checked by a real shell, not by reading text.
"""
from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
from pathlib import Path

import pytest

from launch import sweep as sw

HELPERS = Path(__file__).parent / "helpers"
FAKE_PY = str(HELPERS / "launch_fake_python.sh")


def _resolve(tmp_path: Path, **kw):
    sweep_kw = {k: v for k, v in kw.items() if k in {f for f in sw.SweepSettings.__dataclass_fields__}}
    run_kw = {k: v for k, v in kw.items() if k not in sweep_kw}
    sweep = sw.SweepSettings(out_dir=str(tmp_path), **sweep_kw)
    sweep.check()
    run = sw.SweepRunSettings(**run_kw)
    run.check()
    return sweep, run


def _directives(text: str) -> dict[str, str]:
    """'#SBATCH --key=value' lines parsed the way sbatch does (shell-like quotes)."""
    found = {}
    for line in text.splitlines():
        if line.startswith("#SBATCH "):
            (opt,) = shlex.split(line[len("#SBATCH "):])
            key, _, value = opt.partition("=")
            found[key] = value
    return found



def test_directives_of_a_gpu_point(tmp_path):
    sweep, run = _resolve(tmp_path, name="a100", nodes=[2], tasks_per_node=4, gpus_per_node=4, cpus_per_task=8,
                          partition="gpu", account="proj_1", qos="normal", time_limit="01:30:00",
                          sbatch_options=["--constraint=a100"], exclusive=True, engines=["horovod"],
                          modes=["strong"])
    (job, analysis) = sw.build_jobs(sweep, run)
    d = _directives(job.text)
    assert d["--job-name"] == "a100-horovod-strong-N2x4"
    assert (d["--nodes"], d["--ntasks-per-node"], d["--cpus-per-task"], d["--gpus-per-task"]) == ("2", "4", "8", "1")
    assert "--gpus-per-node" not in d  # one GPU per rank, not the node's count
    assert (d["--partition"], d["--account"], d["--qos"], d["--time"]) == ("gpu", "proj_1", "normal", "01:30:00")
    assert d["--output"] == f"{tmp_path}/a100/logs/%x-%j.out"
    assert d["--signal"] == "USR1@180" and "--requeue" in d and "--exclusive" in d
    assert d["--constraint"] == "a100"
    assert ("srun --mpi=pmix --nodes=2 --ntasks-per-node=4 --cpus-per-task=8 --gpus-per-task=1 --gpu-bind=closest "
            "--kill-on-bad-exit=1") in job.text
    assert "-m scaling.run --engine horovod --mode strong --global-batch 1024" in job.text
    assert "--threads" not in job.text  # threads = 0: scaling.run follows --cpus-per-task
    ad = _directives(analysis.text)
    assert "--gpus-per-task" not in ad and "--requeue" not in ad and ad["--nodes"] == "1"


def test_cpu_point_has_no_gpu_directive_and_defaults_unset(tmp_path):
    sweep, run = _resolve(tmp_path, nodes=[1], engines=["mirrored"], modes=["weak"])
    (job, _) = sw.build_jobs(sweep, run)
    d = _directives(job.text)
    assert not {"--gpus-per-task", "--partition", "--account", "--qos", "--exclusive"} & set(d)
    assert d["--cpus-per-task"] == "1" and "--gpu-bind" not in job.text


def test_points_and_run_ids(tmp_path):
    sweep, run = _resolve(tmp_path, nodes=[4, 1], tasks_per_node=2)
    ids = [p.run_id for p in sw.points(sweep, run)]
    assert ids == ["horovod-strong-N1x2", "mirrored-strong-N1x2", "horovod-weak-N1x2", "mirrored-weak-N1x2",
                   "horovod-strong-N4x2", "mirrored-strong-N4x2", "horovod-weak-N4x2", "mirrored-weak-N4x2"]
    jobs = sw.build_jobs(sweep, run)
    benches = [j.name for j in jobs if "scaling.allreduce_bench" in j.text]
    assert benches == ["horovod-strong-N1x2", "horovod-strong-N4x2"]  # once per world size > 1


@pytest.mark.parametrize("flag, value", [
    ("--name", "my study"), ("--name", "x;touch /tmp/pwned"), ("--name", "$(id)"), ("--name", "../up"),
    ("--partition", "gpu;reboot"), ("--account", "a b"), ("--qos", "`id`"),
    ("--time-limit", "1h"), ("--sbatch-options=-x", None), ("--mpi", "pmix --x"),
])
def test_unsafe_values_are_refused(tmp_path, flag, value, capsys):
    assert sw.main([flag] + ([value] if value is not None else []) + ["--out-dir", str(tmp_path), "--dry-run"]) == 2
    assert "error:" in capsys.readouterr().err
    assert not any(tmp_path.iterdir())


@pytest.mark.parametrize("text, seconds", [("30", 1800), ("05:00", 300), ("01:30:00", 5400), ("2-0", 172800),
                                           ("1-02:03", 93780), ("1-00:00:10", 86410)])
def test_time_limit_parsing(text, seconds):
    assert sw.time_limit_s(text, "t") == seconds


def test_signal_must_come_before_the_time_limit(tmp_path, capsys):
    assert sw.main(["--time-limit", "2", "--signal-before-s", "180", "--out-dir", str(tmp_path), "--dry-run"]) == 2
    assert "signal_before_s" in capsys.readouterr().err


def test_paths_with_spaces_and_shell_characters_stay_literal(tmp_path, fake_slurm, monkeypatch):
    """A study folder named like an injection is passed to the trainer verbatim by a real bash."""
    sentinel = tmp_path / "pwned"
    weird = tmp_path / f"res 'q' $(touch {sentinel}) `touch {sentinel}` %j"
    data = tmp_path / "my data; echo hi.parquet"
    sweep, run = _resolve(weird, name="s", nodes=[1], engines=["horovod"], modes=["weak"], data=str(data),
                          python=FAKE_PY)
    jobs = sw.build_jobs(sweep, run)
    sw.write_jobs(sweep, jobs)
    d = _directives(jobs[0].text)
    assert d["--output"] == str(weird / "s" / "logs").replace("%", "%%") + "/%x-%j.out"
    monkeypatch.setenv("FAKE_PYTHON_LOG", str(tmp_path / "py.log"))
    res = subprocess.run(["bash", str(jobs[0].path)], capture_output=True, text=True, timeout=30)
    assert res.returncode == 0, res.stderr
    assert not sentinel.exists()
    calls = (tmp_path / "py.log").read_text().splitlines()
    assert calls[0] == "-m scaling.preflight --engine horovod"
    args = calls[1]
    assert f"--data {data} " in args and f"--out {weird}/s/horovod-weak-N1x1" in args
    assert json.loads((weird / "s" / "horovod-weak-N1x1" / "run.json").read_text())["status"] == "completed"
    res = subprocess.run(["bash", str(jobs[-1].path)], capture_output=True, text=True, timeout=30)
    assert res.returncode == 0 and (weird / "s" / "report" / "report.md").exists()
    assert not sentinel.exists()


def test_interrupted_job_requeues_itself_and_resumes(tmp_path, fake_slurm, monkeypatch):
    sweep, run = _resolve(tmp_path, name="r", nodes=[2], engines=["mirrored"], modes=["weak"], python=FAKE_PY,
                          max_requeues=2)
    jobs = sw.build_jobs(sweep, run)
    sw.write_jobs(sweep, jobs)
    env = dict(os.environ, FAKE_INTERRUPT="1", SLURM_JOB_ID="77", FAKE_PYTHON_LOG=str(tmp_path / "py.log"))
    first = subprocess.run(["bash", str(jobs[0].path)], env=env, capture_output=True, text=True, timeout=30)
    assert first.returncode == 0, first.stderr
    calls = fake_slurm.read_text()
    assert "scontrol requeue 77" in calls
    assert "srun --mpi=pmix --nodes=2 --ntasks-per-node=1 --cpus-per-task=1 --kill-on-bad-exit=1" in calls
    second = subprocess.run(["bash", str(jobs[0].path)], env=dict(env, SLURM_RESTART_COUNT="1"),
                            capture_output=True, text=True, timeout=30)
    assert second.returncode == 0
    py_calls = (tmp_path / "py.log").read_text().splitlines()
    run_calls = [c for c in py_calls if "scaling.run" in c]
    assert not run_calls[0].endswith("--resume") and run_calls[1].endswith("--resume")
    assert [c for c in py_calls if "allreduce_bench" in c], "world size 2 measures the all-reduce"
    assert json.loads((tmp_path / "r" / "mirrored-weak-N2x1" / "run.json").read_text())["resumed"] == 1


def test_requeue_limit(tmp_path, fake_slurm):
    sweep, run = _resolve(tmp_path, name="l", nodes=[1], engines=["horovod"], modes=["weak"], python=FAKE_PY,
                          max_requeues=1)
    jobs = sw.build_jobs(sweep, run)
    sw.write_jobs(sweep, jobs)
    env = dict(os.environ, FAKE_INTERRUPT="1", SLURM_JOB_ID="5", SLURM_RESTART_COUNT="1")
    res = subprocess.run(["bash", str(jobs[0].path)], env=env, capture_output=True, text=True, timeout=30)
    assert res.returncode == 3
    assert "scontrol" not in fake_slurm.read_text()


def test_dependency_chain_text(tmp_path):
    assert sw.dependency_option(["11", "12", "13"]) == ["--dependency=afterany:11:12:13"]
    assert sw.dependency_option([]) == []
    sweep, run = _resolve(tmp_path, nodes=[1, 2], engines=["horovod"], modes=["weak"])
    text = sw.render_submit_script(sw.build_jobs(sweep, run))
    assert text.count("sbatch --parsable") == 3
    assert "--dependency=afterany:$(IFS=:; echo \"${ids[*]}\")" in text


def test_submit_script_chains_the_ids(tmp_path, fake_slurm):
    sweep, run = _resolve(tmp_path / "a b", nodes=[1, 2], engines=["horovod"], modes=["weak"])
    submit = sw.write_jobs(sweep, sw.build_jobs(sweep, run))
    res = subprocess.run([str(submit)], capture_output=True, text=True, timeout=30)
    assert res.returncode == 0, res.stderr
    assert "analysis: job 103" in res.stdout
    calls = fake_slurm.read_text().splitlines()
    assert calls[-1].startswith("sbatch --parsable --dependency=afterany:101:102 ")
    assert calls[-1].endswith("/a b/sweep/sbatch/analysis.sbatch")


def test_submit_prints_ids_and_waits(tmp_path, fake_slurm, capsys):
    rc = sw.main(["--out-dir", str(tmp_path), "--nodes", "1,2", "--engines", "horovod", "--modes", "strong",
                  "--global-batch", "64", "--submit", "--wait"])
    assert rc == 0
    out = capsys.readouterr().out
    assert re.search(r"horovod-strong-N1x1: job 101\nhorovod-strong-N2x1: job 102\n", out)
    last = fake_slurm.read_text().splitlines()[-1]
    assert "--dependency=afterany:101:102" in last and "--wait" in last
    assert (tmp_path / "sweep" / "logs").is_dir()  # Slurm needs the --output folder to exist


def test_failed_analysis_job_fails_the_command(tmp_path, fake_slurm, monkeypatch, capsys):
    monkeypatch.setenv("FAKE_SBATCH_RC", "1")
    rc = sw.main(["--out-dir", str(tmp_path), "--nodes", "1", "--submit", "--wait"])
    assert rc == 1 and "exit code 1" in capsys.readouterr().out


def test_completed_points_are_not_resubmitted(tmp_path, fake_slurm, capsys):
    done = tmp_path / "sweep" / "horovod-weak-N1x1"
    done.mkdir(parents=True)
    (done / "run.json").write_text('{"status": "completed"}')
    assert sw.main(["--out-dir", str(tmp_path), "--nodes", "1", "--modes", "weak", "--submit"]) == 0
    out = capsys.readouterr().out
    assert "horovod-weak-N1x1: skipped (completed earlier)" in out
    assert "mirrored-weak-N1x1: job 101" in out


def test_dry_run_prints_and_writes_nothing(tmp_path, capsys):
    assert sw.main(["--out-dir", str(tmp_path), "--nodes", "1", "--dry-run", "--container", "/img/b.sif",
                    "--gpus-per-node", "1", "--cores-per-node", "8", "--binds", "/sys/class/powercap,/data"]) == 0
    out = capsys.readouterr().out
    assert out.count("#!/bin/bash") == 6  # 4 points + analysis + submit.sh
    assert "apptainer exec --nv --bind /sys/class/powercap --bind /data /img/b.sif python3 -m scaling.run" in out
    assert "apptainer exec --bind /sys/class/powercap --bind /data /img/b.sif python3 -m analysis" in out
    assert not any(tmp_path.iterdir())


def test_wait_needs_submit(capsys):
    assert sw.main(["--wait"]) == 2


def test_example_config_is_valid(capsys):
    example = Path(sw.__file__).with_name("sweep_example.toml")
    assert sw.main(["--config", str(example), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "#SBATCH --gpus-per-task=1" in out and "#SBATCH --cpus-per-task=8" in out  # 32 cores / 4 GPUs
    assert "-m scaling.preflight" in out


def test_force_replaces_completed_points(tmp_path, fake_slurm, capsys):
    done = tmp_path / "sweep" / "horovod-weak-N1x1"
    done.mkdir(parents=True)
    (done / "run.json").write_text('{"status": "completed"}')
    assert sw.main(["--out-dir", str(tmp_path), "--nodes", "1", "--modes", "weak", "--engines", "horovod",
                    "--force", "--submit"]) == 0
    out = capsys.readouterr().out
    assert "removed the earlier run directory" in out and "horovod-weak-N1x1: job 101" in out
    assert not done.exists()
