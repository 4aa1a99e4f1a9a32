"""launch.study with [study] threads_per_rank: layouts of a node (ranks x threads per rank).

The runs are a fake interpreter (tests/helpers/launch_fake_python.sh); no MPI is started.
"""
from __future__ import annotations

import dataclasses
import io
import json
import shlex
from pathlib import Path

import pytest

from common.settings import resolve_sections
from common.vocab import PLACEMENT_ENV
from launch import study as st

HELPERS = Path(__file__).parent / "helpers"
FAKE_PY = str(HELPERS / "launch_fake_python.sh")


pytestmark = pytest.mark.usefixtures("frozen_code_version")


def _profile(profile: str, tmp_path: Path, **study_kw):
    resolved = resolve_sections(st.SECTIONS, None, profile=st.profile_path(profile))
    study = dataclasses.replace(resolved["study"], out_dir=str(tmp_path), **study_kw)
    study.check()
    return study, resolved["run"]


def _runs(steps):
    return [s for s in steps if s.kind == "run"]


def _mpirun_part(step) -> list[str]:
    return step.argv[:step.argv.index("-x")]


def _trainer_threads(step) -> str:
    args = step.argv[step.argv.index("scaling.run") + 1:]
    return args[args.index("--threads") + 1]


def test_layout_profile_on_two_cores_runs_every_layout_that_fits(tmp_path):
    study, run = _profile("layout", tmp_path)
    steps = st.plan(study, run, python="PY", cores=2, repeats=2)
    runs = _runs(steps)
    ids = [s.run_id for s in runs]
    first = ["horovod-strong-n1-t1", "horovod-ensemble-n1-t1", "horovod-strong-n1-t2", "horovod-ensemble-n1-t2",
             "horovod-strong-n2-t1", "horovod-ensemble-n2-t1"]
    assert ids == first + [f"{i}-r2" for i in first]          # repeats interleaved, -t before -r
    by_id = {s.run_id: s for s in runs}
    # 1 x 2: one rank on two cores; 1 x 1 and 2 x 1: one core per rank
    assert _mpirun_part(by_id["horovod-strong-n1-t2"])[-4:] == ["--map-by", "slot:PE=2", "--bind-to", "core"]
    assert "--map-by" not in _mpirun_part(by_id["horovod-strong-n2-t1"])
    assert _mpirun_part(by_id["horovod-strong-n2-t1"])[-2:] == ["--bind-to", "core"]
    assert by_id["horovod-strong-n1-t2"].place_now == "mpirun --map-by slot:PE=2 --bind-to core"
    assert by_id["horovod-ensemble-n2-t1"].place_now == "mpirun --bind-to core"
    assert _trainer_threads(by_id["horovod-strong-n1-t2"]) == "2" and _trainer_threads(by_id["horovod-strong-n2-t1"]) == "1"
    # every GAN of the profile trains with batch 128: strong at N=1 and the ensemble's members alike
    strong = by_id["horovod-strong-n1-t1"].argv
    ens = by_id["horovod-ensemble-n2-t1"].argv
    assert strong[strong.index("--global-batch") + 1] == ens[ens.index("--batch-per-rank") + 1] == "128"
    assert by_id["horovod-strong-n1-t2"].label == "horovod strong n=1 t=2 repeat 1/2"
    assert st.skipped_layouts(study, run, cores=2) == [
        "layout 2 rank(s) x 2 thread(s) needs 4 cores, 2 usable: not run (--oversubscribe runs it unpinned)"]
    assert not any(s.kind == "bench" for s in steps) and steps[-1].kind == "analysis"


def test_every_layout_fits_on_more_cores(tmp_path):
    study, run = _profile("layout", tmp_path)
    runs = {s.run_id: s for s in _runs(st.plan(study, run, python="PY", cores=4))}
    two = runs["horovod-strong-n2-t2"]
    assert _mpirun_part(two)[_mpirun_part(two).index("-np"):] == ["-np", "2", "--map-by", "slot:PE=2", "--bind-to", "core"]
    assert st.skipped_layouts(study, run, cores=4) == []


def test_oversubscribed_layouts_run_unpinned_when_asked(tmp_path):
    study, run = _profile("layout", tmp_path, oversubscribe=True)
    runs = _runs(st.plan(study, run, python="PY", cores=2))
    assert "horovod-strong-n2-t2" in {s.run_id for s in runs}
    # one layout does not fit: no run of the comparison is pinned, so all are placed alike
    assert {s.place_now for s in runs} == {"mpirun --bind-to none"}
    assert all("--map-by" not in s.argv for s in runs)


def test_one_value_keeps_the_plain_run_ids_and_the_empty_list_the_old_commands(tmp_path):
    study, run = _profile("default", tmp_path)
    assert study.threads_per_rank == [] and not study.oversubscribe
    old = st.plan(study, run, python="PY", cores=2)
    one = st.plan(dataclasses.replace(study, threads_per_rank=[1]), run, python="PY", cores=2)
    assert [s.run_id for s in one] == [s.run_id for s in old]
    assert [s.argv for s in one] == [s.argv for s in old]
    assert all(s.place_now == "mpirun --bind-to core" for s in old if s.kind != "analysis")
    # A world size above the cores still runs, oversubscribed and unpinned, as before.
    wide = st.plan(dataclasses.replace(study, world_sizes=[1, 2, 4]), run, python="PY", cores=2)
    four = next(s for s in wide if s.run_id == "horovod-strong-n4")
    assert "--oversubscribe" in four.argv and four.argv[four.argv.index("--bind-to") + 1] == "none"


def test_each_layout_reaches_its_ranks_and_study_json(tmp_path, monkeypatch):
    monkeypatch.setattr(st, "usable_cpus", lambda: 2)
    study, run = _profile("layout", tmp_path, name="lay", modes=["strong"], world_sizes=[1], analyse=False)
    steps = st.plan(study, run, python=FAKE_PY)
    seen: list[tuple[str, str | None, str | None]] = []
    real = st.run_step

    def spy(step, env, timeout_s, progress):
        seen.append((step.run_id, env.get("OMP_NUM_THREADS"), env.get(PLACEMENT_ENV)))
        return real(step, env, timeout_s, progress)

    monkeypatch.setattr(st, "run_step", spy)
    out = io.StringIO()
    assert st.execute(steps, study, run, {"study": study, "run": run}, stream=out) == 0
    assert seen == [("horovod-strong-n1-t1", "1", "mpirun --bind-to core"),
                    ("horovod-strong-n1-t2", "2", "mpirun --map-by slot:PE=2 --bind-to core")]
    assert "threads per rank 1, 2" in out.getvalue()
    record = {s["run_id"]: s for s in json.loads((tmp_path / "lay" / "study.json").read_text())["steps"]}
    assert record["horovod-strong-n1-t2"]["placement"] == "mpirun --map-by slot:PE=2 --bind-to core"
    # the same command again: both completed, both kept
    again = st.plan(study, run, python=FAKE_PY)
    assert [s.skip_reason for s in again] == ["completed earlier"] * 2


def test_dry_run_notes_the_layout_left_out(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(st, "usable_cpus", lambda: 2)
    assert st.main(["--profile", "layout", "--dry-run", "--out-dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0] == ("# layout 2 rank(s) x 2 thread(s) needs 4 cores, 2 usable: not run "
                                   "(--oversubscribe runs it unpinned)")
    lines = [x for x in out.splitlines() if "scaling.run" in x]
    assert len(lines) == 6
    args = shlex.split(lines[2].split("scaling.run", 1)[1].split(" > ", 1)[0])
    assert args[args.index("--threads") + 1] == "2" and args[args.index("--out") + 1].endswith("horovod-strong-n1-t2")


@pytest.mark.parametrize("argv, message", [
    (["--threads-per-rank", "0,1"], "threads_per_rank must list positive integers, got [0, 1]"),
    (["--threads-per-rank", "2,2"], "threads_per_rank lists a value twice: [2, 2]"),
    (["--threads-per-rank", "1,x"], "--threads-per-rank"),
    (["--threads-per-rank", "64", "--world-sizes", "1"], "no layout of world_sizes [1] fits on the"),
])
def test_bad_threads_per_rank_exit_2_in_one_line(argv, message, capsys, monkeypatch):
    monkeypatch.setattr(st, "usable_cpus", lambda: 2)
    assert st.main(argv + ["--dry-run"]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1
