"""launch.study: configuration, mpirun command lines, run ids, skip/resume, failure handling.

The processes are a fake interpreter (tests/helpers/launch_fake_python.sh) so these tests take
seconds; the real trainer is exercised by the slurm test and by `make study`.
"""
from __future__ import annotations

import dataclasses
import io
import json
import os
import shlex
from pathlib import Path

import pytest

from common.settings import load_toml, resolve_sections
from common.vocab import PLACEMENT_ENV
from launch import study as st
from launch.runargs import RunSettings

HELPERS = Path(__file__).parent / "helpers"
FAKE_PY = str(HELPERS / "launch_fake_python.sh")


pytestmark = pytest.mark.usefixtures("frozen_code_version")


def _settings(tmp_path: Path, **study_kw) -> tuple[st.StudySettings, RunSettings]:
    """The shipped study profile (what `make study` runs), writing below ``tmp_path``."""
    resolved = resolve_sections(st.SECTIONS, None, profile=st.DEFAULT_CONFIG)
    study = dataclasses.replace(resolved["study"], out_dir=str(tmp_path), **study_kw)
    study.check()
    return study, resolved["run"]


def test_shipped_profile_lists_every_key():
    data = load_toml(st.DEFAULT_CONFIG)
    assert set(data) == set(st.SECTIONS)
    for name, cls in st.SECTIONS.items():
        assert set(data[name]) == {f.name for f in dataclasses.fields(cls)}, f"[{name}] lists every key"


def _dry_run_trainer_args(capsys, *argv: str) -> list[str]:
    assert st.main([*argv, "--dry-run", "--world-sizes", "1", "--modes", "weak", "--engines", "horovod"]) == 0
    line = next(x for x in capsys.readouterr().out.splitlines() if "scaling.run" in x)
    return shlex.split(line.split("scaling.run", 1)[1].split(" > ", 1)[0])


def test_study_runs_take_the_profile_not_the_code_defaults(tmp_path, capsys):
    # The local study's short runs are the profile's choice (study_default.toml), not a second
    # default in code: RunSettings() carries scaling.run's own defaults.
    args = _dry_run_trainer_args(capsys, "--out-dir", str(tmp_path))
    assert args[args.index("--iterations-per-epoch") + 1] == "12"
    assert args[args.index("--synthetic-events") + 1] == "4096"
    assert args[args.index("--threads") + 1] == "1"
    assert RunSettings().iterations_per_epoch != 12 and RunSettings().threads == 0


def test_a_config_file_overrides_only_what_it_names(tmp_path, capsys):
    cfg = tmp_path / "mine.toml"
    cfg.write_text("[run]\nepochs = 3\n")
    args = _dry_run_trainer_args(capsys, "--config", str(cfg), "--out-dir", str(tmp_path))
    assert args[args.index("--epochs") + 1] == "3"
    assert args[args.index("--iterations-per-epoch") + 1] == "12"      # still the profile's


def test_every_world_size_is_placed_alike_the_baseline_included():
    # N = 1 starts under mpirun with the binding of the larger runs: pinned there, its helper
    # threads share its one core like every rank's do at N > 1.
    study, run = _settings(Path("/x"))
    one, two = (st.launcher_prefix(study, run, n, cores=2, root=False) for n in (1, 2))
    assert one[0] == "mpirun" and one[one.index("-np") + 1] == "1"
    assert one[one.index("--bind-to") + 1] == two[two.index("--bind-to") + 1] == "core"
    assert [a for a in one if a != "1"] == [a for a in two if a != "2"]
    assert st.placement(study, run, cores=2) == "mpirun --bind-to core"
    # One world size that does not fit on the cores unpins every run of the study, not just it.
    wide, _ = _settings(Path("/x"), world_sizes=[1, 2, 4])
    for n in (1, 2, 4):
        argv = st.launcher_prefix(wide, run, n, cores=2, root=False)
        assert argv[argv.index("--bind-to") + 1] == "none"
    # Ranks of 2 threads are pinned to 2 cores each while every rank fits, unpinned otherwise.
    threaded = dataclasses.replace(run, threads=2)
    assert st.placement(study, threaded, cores=8) == "mpirun --map-by slot:PE=2 --bind-to core"
    assert st.binding(study, threaded, cores=2) == "none"
    assert st.binding(study, dataclasses.replace(run, threads=0), cores=8) == "none"   # threads unknown


def test_placement_reaches_every_rank_and_study_json(tmp_path):
    study, run = _settings(tmp_path, name="p", world_sizes=[1], engines=["horovod"], modes=["weak"],
                           allreduce_bench=False, analyse=False)
    env = st.child_env(run, base={}, where=st.placement(study, run))
    assert env[PLACEMENT_ENV] == st.placement(study, run)
    steps = st.plan(study, run, python=FAKE_PY)
    argv = steps[0].argv
    assert argv[argv.index(PLACEMENT_ENV) - 1] == "-x"
    assert st.execute(steps, study, run, {"study": study, "run": run}, stream=io.StringIO()) == 0
    record = json.loads((tmp_path / "p" / "study.json").read_text())["steps"][0]
    assert record["placement"] == st.placement(study, run)
    assert record["argv"][:1] == ["mpirun"]


def test_mpirun_flags_as_root_within_cores():
    study, run = _settings(Path("/x"))
    argv = st.launcher_prefix(study, run, 2, cores=2, root=True)
    assert argv[:4] == ["mpirun", "--allow-run-as-root", "-np", "2"]
    assert "--oversubscribe" not in argv
    assert argv[argv.index("--bind-to") + 1] == "core"
    for var in ("OMP_NUM_THREADS", "PYTHONUNBUFFERED"):
        assert argv[argv.index(var) - 1] == "-x"


def test_mpirun_flags_oversubscribed_user():
    study, run = _settings(Path("/x"), world_sizes=[1, 2, 4], mpirun_args=["--mca", "btl", "tcp,self"])
    argv = st.launcher_prefix(study, run, 4, cores=2, root=False)
    assert "--allow-run-as-root" not in argv
    assert "--oversubscribe" in argv
    assert argv[argv.index("--bind-to") + 1] == "none"
    assert argv[-3:] == ["--mca", "btl", "tcp,self"]


def test_plan_order_ids_and_flags(tmp_path):
    study, run = _settings(tmp_path)
    steps = st.plan(study, run, python="PY")
    kinds = [s.kind for s in steps]
    assert kinds == ["bench"] + ["run"] * 10 + ["analysis"]
    runs = [s for s in steps if s.kind == "run"]
    assert [s.run_id for s in runs] == [
        "horovod-strong-n1", "mirrored-strong-n1", "horovod-weak-n1", "mirrored-weak-n1", "horovod-ensemble-n1",
        "horovod-strong-n2", "mirrored-strong-n2", "horovod-weak-n2", "mirrored-weak-n2", "horovod-ensemble-n2"]
    one, two = runs[0].argv, runs[5].argv
    assert one[0] == "mpirun" and one[one.index("-np") + 1] == "1"
    assert one[one.index("PY"):one.index("PY") + 3] == ["PY", "-m", "scaling.run"]
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


def _record_as_made_by_today(study: st.StudySettings, run: RunSettings) -> None:
    """A study.json saying today's settings, code and placement made every run directory."""
    steps = st.plan(study, run, python="PY")
    for s in steps:
        s.made_with, s.made_by, s.placed_as = st._trainer_args(s.argv), s.code_now, s.place_now
    st.write_summary(st.study_dir(study), steps, {"study": study, "run": run})


def test_completed_runs_are_skipped_and_interrupted_ones_resume(tmp_path):
    study, run = _settings(tmp_path, world_sizes=[1], engines=["horovod"], allreduce_bench=False)
    root = tmp_path / "local"
    _write_status(root / "horovod-strong-n1", "completed")
    _write_status(root / "horovod-weak-n1", "interrupted")
    _record_as_made_by_today(study, run)
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


def test_runs_made_by_other_code_start_again_or_are_reused_loudly(tmp_path, capsys):
    study, run = _settings(tmp_path, name="v", world_sizes=[1], engines=["horovod"], modes=["weak", "strong"],
                           allreduce_bench=False, analyse=False)
    old, new = {"source_hash": "a" * 64, "git_commit": None, "git_dirty": None}, {**st.code_version().to_dict()}
    assert new["source_hash"] != old["source_hash"]
    resolved = {"study": study, "run": run}
    assert st.execute(st.plan(study, run, python=FAKE_PY, code=old), study, run, resolved,
                      stream=io.StringIO()) == 0
    made = json.loads((tmp_path / "v" / "study.json").read_text())["steps"]
    assert [s["code_version"] for s in made] == [old, old]
    assert all(s.skip_reason == "completed earlier" for s in st.plan(study, run, python=FAKE_PY, code=old))

    # Default: both completed runs were made by other code, so both run again, one line each.
    again = st.plan(study, run, python=FAKE_PY, code=new)
    assert not any(s.skip_reason or s.resume for s in again)
    out = io.StringIO()
    assert st.execute(again, study, run, resolved, stream=out) == 0
    lines = [x for x in out.getvalue().splitlines() if "made by other code" in x and x.endswith("starting again")]
    assert len(lines) == 2 and "sources aaaaaaaaaaaa, now " + new["source_hash"][:12] in lines[0]
    made = json.loads((tmp_path / "v" / "study.json").read_text())["steps"]
    assert [s["code_version"] for s in made] == [new, new]

    # --reuse-stale keeps them and says so on every affected run's line.
    reused = st.plan(study, run, python=FAKE_PY, code=old, reuse_stale=True)
    assert all("STALE" in s.skip_reason and "reuse-stale" in s.skip_reason for s in reused)
    out = io.StringIO()
    assert st.execute(reused, study, run, resolved, stream=out) == 0
    assert out.getvalue().count("REUSED as it is (--reuse-stale)") == 2
    # ...and the record still names the code that made them, so the next run sees them as stale too.
    made = json.loads((tmp_path / "v" / "study.json").read_text())["steps"]
    assert [s["code_version"] for s in made] == [new, new]

    # An interrupted run of other code is never resumed, not even with --reuse-stale.
    (tmp_path / "v" / "horovod-weak-n1" / "run.json").write_text('{"status": "interrupted"}')
    step = st.plan(study, run, python=FAKE_PY, code=old, reuse_stale=True)[0]
    assert not step.resume and "starting again" in step.note

    # A study.json without code versions (older launcher): the version is unknown, so it runs again.
    assert st.main(["--dry-run", "--out-dir", str(tmp_path), "--name", "v", "--world-sizes", "1",
                    "--engines", "horovod", "--modes", "strong", "--no-analyse", "--no-allreduce-bench"]) == 0
    assert "# skipped: completed earlier" in capsys.readouterr().out
    legacy = json.loads((tmp_path / "v" / "study.json").read_text())
    for s in legacy["steps"]:
        del s["code_version"]
    (tmp_path / "v" / "study.json").write_text(json.dumps(legacy))
    assert st.main(["--dry-run", "--out-dir", str(tmp_path), "--name", "v", "--world-sizes", "1",
                    "--engines", "horovod", "--modes", "strong", "--no-analyse", "--no-allreduce-bench"]) == 0
    assert "# made by code of unknown version: starting again" in capsys.readouterr().out


def test_make_study_runs_the_ensemble_at_one_and_two_ranks_with_one_engine(tmp_path):
    # One-rank members reduce nothing: a second engine would train and time them the same way.
    study, run = _settings(tmp_path)
    runs = [s for s in st.plan(study, run, python=FAKE_PY) if s.kind == "run"]
    ensembles = [s for s in runs if "-ensemble-" in s.run_id]
    assert [s.run_id for s in ensembles] == ["horovod-ensemble-n1", "horovod-ensemble-n2"]
    for s in ensembles:
        args = s.argv[s.argv.index("scaling.run") + 1:]
        assert args[args.index("--mode") + 1] == "ensemble"
        assert args[args.index("--batch-per-rank") + 1] == str(run.batch_per_rank)
    assert {s.run_id for s in runs} >= {"mirrored-weak-n2", "horovod-strong-n1"}


@pytest.mark.parametrize("name", sorted(st.profiles()))
def test_every_shipped_profile_lists_every_key_and_is_valid(name):
    data = load_toml(st.profile_path(name))
    # [variants] (launch.variants) is read by the study itself, not a section of flags.
    assert set(data) - {"variants"} == set(st.SECTIONS)
    for section, cls in st.SECTIONS.items():
        assert set(data[section]) == {f.name for f in dataclasses.fields(cls)}, f"{name}: [{section}] lists every key"
    resolved = resolve_sections(st.SECTIONS, None, profile=st.profile_path(name), read_by_caller=("variants",))
    resolved["study"].check()
    resolved["run"].check()


def test_quality_profile_evaluates_and_stops_at_its_target(tmp_path, capsys):
    assert {"default", "quality"} <= set(st.profiles())
    target = load_toml(st.profile_path("quality"))["run"]["target"]
    assert st.main(["--profile", "quality", "--dry-run", "--out-dir", str(tmp_path)]) == 0
    lines = [x for x in capsys.readouterr().out.splitlines() if "scaling.run" in x]
    # photons, Horovod, 1 and 2 ranks, strong and weak: four runs, each evaluating every epoch
    assert len(lines) == 4
    for line in lines:
        args = shlex.split(line.split("scaling.run", 1)[1].split(" > ", 1)[0])
        assert args[args.index("--engine") + 1] == "horovod" and args[args.index("--particle") + 1] == "photons"
        assert args[args.index("--eval-every") + 1] == args[args.index("--iterations-per-epoch") + 1]
        assert args[args.index("--target") + 1] == target and "--stop-at-target" in args


@pytest.mark.parametrize("config, points, expected", [
    ("quality_lr_scaling.toml", ["horovod-weak-n1", "horovod-weak-n2"],
     {"lr-sqrt": ("--lr-scaling", "sqrt"), "lr-linear": ("--lr-scaling", "linear")}),
    ("quality_bf16.toml", ["horovod-weak-n1"], {"bf16": ("--precision", "bf16")}),
])
def test_the_quality_studys_config_files_run_its_target_with_one_change(tmp_path, capsys, config, points, expected):
    """launch/quality_*.toml keep the quality profile's target and stopping rule and change one
    setting per variant, at the points they are about (docs/measured.md compares them)."""
    path = Path(st.__file__).with_name(config)
    target = load_toml(st.profile_path("quality"))["run"]["target"]
    assert st.main(["--profile", "quality", "--config", str(path), "--dry-run", "--out-dir", str(tmp_path)]) == 0
    lines = [x for x in capsys.readouterr().out.splitlines() if "scaling.run" in x]
    runs = [(point, variant, change) for variant, change in expected.items() for point in points]
    assert len(lines) == len(runs)
    for line, (point, variant, (flag, value)) in zip(lines, runs):
        args = shlex.split(line.split("scaling.run", 1)[1].split(" > ", 1)[0])
        assert args[args.index("--out") + 1].endswith(f"{point}-{variant}")
        assert args[args.index("--target") + 1] == target and "--stop-at-target" in args
        assert args[args.index(flag) + 1] == value and args[args.index("--variant") + 1] == variant


def test_the_default_profile_passes_no_quality_flags(tmp_path, capsys):
    args = _dry_run_trainer_args(capsys, "--out-dir", str(tmp_path))
    for flag in ("--eval-every", "--target", "--stop-at-target", "--lr-scaling", "--showers-per-momentum"):
        assert flag not in args


def test_quality_settings_reach_scaling_run_as_given(tmp_path, capsys):
    args = _dry_run_trainer_args(capsys, "--out-dir", str(tmp_path), "--eval-every", "6", "--target", "fpd<=5",
                                 "--stop-at-target", "--lr-scaling", "sqrt", "--lr-warmup-iterations", "10",
                                 "--showers-per-momentum", "50")
    assert args[args.index("--eval-every") + 1] == "6" and args[args.index("--target") + 1] == "fpd<=5"
    assert args[args.index("--lr-scaling") + 1] == "sqrt" and args[args.index("--lr-warmup-iterations") + 1] == "10"
    assert args[args.index("--showers-per-momentum") + 1] == "50" and "--stop-at-target" in args


@pytest.mark.parametrize("argv, message", [
    (["--profile", "nope"], "--profile: unknown profile 'nope' (known: default, layout, quality, variants)"),
    (["--stop-at-target"], "stop_at_target needs a target"),
    (["--target", "fpd5", "--eval-every", "5"], "is not METRIC<=VALUE"),
    (["--lr-scaling", "cubic"], "cubic"),
])
def test_bad_quality_settings_exit_2(argv, message, capsys):
    assert st.main(argv + ["--dry-run"]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1
