"""launch.study: configuration, mpirun command lines, run ids, skip/resume, failure handling.

The processes are a fake interpreter (tests/helpers/launch_fake_python.sh) so these tests take
seconds; the real trainer is exercised by the slurm test and by `make study`.
"""
from __future__ import annotations

import dataclasses
import io
import json
import os
from pathlib import Path

import pytest

from common.settings import load_toml, resolve_sections
from launch import study as st
from launch.runargs import RunSettings

HELPERS = Path(__file__).parent / "helpers"
FAKE_PY = str(HELPERS / "launch_fake_python.sh")


def _settings(tmp_path: Path, **study_kw) -> tuple[st.StudySettings, RunSettings]:
    study = st.StudySettings(out_dir=str(tmp_path), **study_kw)
    study.check()
    run = RunSettings()
    return study, run


def test_shipped_toml_equals_code_defaults():
    data = load_toml(st.DEFAULT_CONFIG)
    assert set(data) == set(st.SECTIONS)
    resolved = resolve_sections(st.SECTIONS, st.DEFAULT_CONFIG)
    for name, cls in st.SECTIONS.items():
        assert dataclasses.asdict(resolved[name]) == dataclasses.asdict(cls()), name
        assert set(data[name]) == {f.name for f in dataclasses.fields(cls)}, f"[{name}] lists every key"


def test_single_rank_is_plain_python():
    study, run = _settings(Path("/x"))
    assert st.launcher_prefix(study, run, 1, cores=2, root=True) == []


def test_mpirun_flags_as_root_within_cores():
    study, run = _settings(Path("/x"))
    argv = st.launcher_prefix(study, run, 2, cores=2, root=True)
    assert argv[:4] == ["mpirun", "--allow-run-as-root", "-np", "2"]
    assert "--oversubscribe" not in argv
    assert argv[argv.index("--bind-to") + 1] == "core"
    for var in ("OMP_NUM_THREADS", "PYTHONUNBUFFERED"):
        assert argv[argv.index(var) - 1] == "-x"


def test_mpirun_flags_oversubscribed_user():
    study, run = _settings(Path("/x"), mpirun_args=["--mca", "btl", "tcp,self"])
    argv = st.launcher_prefix(study, run, 4, cores=2, root=False)
    assert "--allow-run-as-root" not in argv
    assert "--oversubscribe" in argv
    assert argv[argv.index("--bind-to") + 1] == "none"
    assert argv[-3:] == ["--mca", "btl", "tcp,self"]


def test_plan_order_ids_and_flags(tmp_path):
    study, run = _settings(tmp_path)
    steps = st.plan(study, run, python="PY")
    kinds = [s.kind for s in steps]
    assert kinds == ["bench"] + ["run"] * 8 + ["analysis"]
    runs = [s for s in steps if s.kind == "run"]
    assert [s.run_id for s in runs] == [
        "horovod-strong-n1", "mirrored-strong-n1", "horovod-weak-n1", "mirrored-weak-n1",
        "horovod-strong-n2", "mirrored-strong-n2", "horovod-weak-n2", "mirrored-weak-n2"]
    one, two = runs[0].argv, runs[4].argv
    assert one[:3] == ["PY", "-m", "scaling.run"]
    assert two[0] == "mpirun" and two[two.index("-np") + 1] == "2"
    assert one[one.index("--global-batch") + 1] == "256" and "--batch-per-rank" not in one
    weak = runs[2].argv
    assert weak[weak.index("--batch-per-rank") + 1] == "128" and "--global-batch" not in weak
    assert one[one.index("--out") + 1] == str(tmp_path / "local" / "horovod-strong-n1")
    assert one[one.index("--threads") + 1] == "1" and "--resume" not in one
    bench = steps[0]
    i = bench.argv.index("scaling.allreduce_bench")
    assert bench.argv[i - 1] == "-m" and bench.argv[0] == "mpirun"
    assert bench.argv[i + 1:] == ["--repeats", "10", "--budget-s", "2", "--out",
                                  str(tmp_path / "local" / "allreduce-n2.json")]
    assert steps[-1].argv == ["PY", "-m", "analysis", str(tmp_path / "local"), "--out",
                              str(tmp_path / "local" / "report")]
    assert all(s.log.parent == tmp_path / "local" / "logs" for s in steps)


def _write_status(run_dir: Path, status: str) -> None:
    run_dir.mkdir(parents=True)
    (run_dir / "run.json").write_text(json.dumps({"status": status}))


def test_completed_runs_are_skipped_and_interrupted_ones_resume(tmp_path):
    study, run = _settings(tmp_path, world_sizes=[1], engines=["horovod"], allreduce_bench=False)
    root = tmp_path / "local"
    _write_status(root / "horovod-strong-n1", "completed")
    _write_status(root / "horovod-weak-n1", "interrupted")
    steps = {s.run_id: s for s in st.plan(study, run, python="PY") if s.kind == "run"}
    assert steps["horovod-strong-n1"].skip_reason
    assert steps["horovod-weak-n1"].resume and steps["horovod-weak-n1"].argv[-1] == "--resume"
    forced = {s.run_id: s for s in st.plan(study, run, force=True, python="PY") if s.kind == "run"}
    assert not forced["horovod-strong-n1"].skip_reason
    assert not forced["horovod-weak-n1"].resume and "--resume" not in forced["horovod-weak-n1"].argv


@pytest.mark.parametrize("argv, message", [
    (["--name", "a b"], "study name"),
    (["--name", "x;rm -rf ~"], "study name"),
    (["--world-sizes", "1,3", "--modes", "strong"], "does not split evenly"),
    (["--engines", "torch"], "engines"),
    (["--warmup-epochs", "4"], "warmup_epochs"),
])
def test_bad_settings_exit_2(argv, message, capsys):
    assert st.main(argv + ["--dry-run"]) == 2
    assert message in capsys.readouterr().err


def test_unknown_config_key_exit_2(tmp_path, capsys):
    cfg = tmp_path / "s.toml"
    cfg.write_text("[study]\nworld_size = [1, 2]\n")
    assert st.main(["--config", str(cfg), "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert "world_size" in err and "world_sizes" in err


def test_dry_run_prints_commands(tmp_path, capsys):
    assert st.main(["--dry-run", "--out-dir", str(tmp_path), "--name", "d", "--world-sizes", "1",
                    "--engines", "mirrored", "--modes", "weak", "--no-analyse"]) == 0
    out = capsys.readouterr().out
    assert "[1/1] mirrored weak n=1" in out and "-m scaling.run --engine mirrored --mode weak" in out
    assert not (tmp_path / "d").exists()


def test_execute_reports_failure_continues_and_resumes(tmp_path, monkeypatch):
    """One run fails: the study goes on, shows the log tail, runs the analysis, exits 1;
    a second invocation skips what completed and re-runs the failed one."""
    study, run = _settings(tmp_path, name="t", world_sizes=[1], engines=["horovod", "mirrored"],
                           modes=["weak"], allreduce_bench=False)
    monkeypatch.setenv("FAKE_FAIL_RUN", "mirrored")
    resolved = {"study": study, "run": run}
    out = io.StringIO()
    steps = st.plan(study, run, python=FAKE_PY)
    assert st.execute(steps, study, run, resolved, stream=out) == 1
    text = out.getvalue()
    assert "[1/3] horovod weak n=1" in text and "done in" in text
    assert "FAILED (exit 1)" in text and "| fake failure for" in text
    assert "report:" in text and (tmp_path / "t" / "report" / "report.md").exists()
    summary = json.loads((tmp_path / "t" / "study.json").read_text())
    assert [s["status"] for s in summary["steps"]] == ["completed", "failed", "completed"]
    assert (tmp_path / "t" / "study.toml").exists()

    monkeypatch.delenv("FAKE_FAIL_RUN")
    out = io.StringIO()
    steps = st.plan(study, run, python=FAKE_PY)
    assert st.execute(steps, study, run, resolved, stream=out) == 0
    text = out.getvalue()
    assert "skipped (completed earlier)" in text
    assert "mirrored weak n=1  ... done in" in text


def test_interrupted_run_is_resumed_next_time(tmp_path, monkeypatch):
    study, run = _settings(tmp_path, name="i", world_sizes=[1], engines=["horovod"], modes=["strong"],
                           allreduce_bench=False, analyse=False)
    monkeypatch.setenv("FAKE_INTERRUPT", "1")
    resolved = {"study": study, "run": run}
    steps = st.plan(study, run, python=FAKE_PY)
    assert st.execute(steps, study, run, resolved, stream=io.StringIO()) == 1
    assert steps[0].status == "interrupted" and steps[0].exit_code == 3
    again = st.plan(study, run, python=FAKE_PY)
    assert again[0].resume
    assert st.execute(again, study, run, resolved, stream=io.StringIO()) == 0
    assert json.loads((tmp_path / "i" / "horovod-strong-n1" / "run.json").read_text())["resumed"] == 1


def test_timeout_stops_the_run(tmp_path, monkeypatch):
    study, run = _settings(tmp_path, name="to", world_sizes=[1], engines=["horovod"], modes=["strong"],
                           allreduce_bench=False, analyse=False, timeout_s=1.0)
    monkeypatch.setenv("FAKE_SLEEP_S", "30")
    monkeypatch.setattr(st, "TERM_GRACE_S", 2.0)
    steps = st.plan(study, run, python=FAKE_PY)
    out = io.StringIO()
    assert st.execute(steps, study, run, {"study": study, "run": run}, stream=out) == 1
    assert steps[0].status == "timeout" and steps[0].duration_s < 10
    assert "TIMED OUT" in out.getvalue()


def test_missing_mpirun_is_a_user_error(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("PATH", str(tmp_path))
    rc = st.main(["--out-dir", str(tmp_path), "--mpirun", "no-such-mpirun"])
    assert rc == 2 and "no-such-mpirun" in capsys.readouterr().err
    assert os.listdir(tmp_path) == []


def test_remaining_time_prefers_runs_of_the_same_world_size(tmp_path):
    study, run = _settings(tmp_path, engines=["horovod", "mirrored"], modes=["weak"], allreduce_bench=False)
    steps = st.plan(study, run, python="PY")
    progress = st.Progress(steps, stream=io.StringIO())
    assert progress.remaining_s() != progress.remaining_s()  # NaN: no run has finished yet
    steps[0].status, steps[0].duration_s = "completed", 30.0      # horovod weak n=1
    # mirrored n=1 ~ 30, the two n=2 runs ~ 30 each (no n=2 history yet), analysis guessed
    assert progress.remaining_s() == 30.0 * 3 + st.Progress.GUESS_S["analysis"]
    steps[2].status, steps[2].duration_s = "completed", 90.0      # horovod weak n=2
    assert progress.remaining_s() == 30.0 + 90.0 + st.Progress.GUESS_S["analysis"]


def test_sigterm_stops_the_study_resumably(tmp_path):
    """SIGTERM to the study: the running step gets SIGTERM too, the study exits 3."""
    import signal
    import subprocess
    import sys
    import time

    env = dict(os.environ, FAKE_SLEEP_S="60")
    proc = subprocess.Popen([sys.executable, "-m", "launch.study", "--name", "sig", "--out-dir", str(tmp_path),
                             "--python", FAKE_PY, "--world-sizes", "1", "--engines", "horovod", "--modes", "weak",
                             "--no-allreduce-bench", "--no-analyse"], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    log = tmp_path / "sig" / "logs" / "horovod-weak-n1.log"
    deadline = time.monotonic() + 20
    while not (log.exists() and "fake-python" in log.read_text()):
        assert time.monotonic() < deadline, "the run did not start"
        time.sleep(0.1)
    t0 = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 3, err
    assert time.monotonic() - t0 < 10
    assert "run the same command again to resume" in out and "interrupted" in err
    summary = json.loads((tmp_path / "sig" / "study.json").read_text())
    assert summary["steps"][0]["status"] == "interrupted"


def test_runs_made_with_other_settings_start_again(tmp_path):
    study, run = _settings(tmp_path, name="c", world_sizes=[1], engines=["horovod"], modes=["weak"],
                           allreduce_bench=False, analyse=False)
    resolved = {"study": study, "run": run}
    assert st.execute(st.plan(study, run, python=FAKE_PY), study, run, resolved, stream=io.StringIO()) == 0
    again = st.plan(study, run, python=FAKE_PY)
    assert again[0].skip_reason == "completed earlier"
    more = dataclasses.replace(run, epochs=6)
    changed = st.plan(study, more, python=FAKE_PY)
    assert not changed[0].skip_reason and not changed[0].resume and "settings changed" in changed[0].note
    out = io.StringIO()
    assert st.execute(changed, study, more, {"study": study, "run": more}, stream=out) == 0
    assert "settings changed" in out.getvalue()
    # an interrupted run is not resumed with other settings either
    (tmp_path / "c" / "horovod-weak-n1" / "run.json").write_text('{"status": "interrupted"}')
    assert not st.plan(study, run, python=FAKE_PY)[0].resume
    assert st.plan(study, more, python=FAKE_PY)[0].resume
