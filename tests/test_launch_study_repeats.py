"""launch.study --repeats: interleaved order, one run directory per repeat, skip/resume per repeat."""
from __future__ import annotations

import dataclasses
import io
import json
from pathlib import Path

import pytest

from common.codeversion import CodeVersion
from common.settings import resolve_sections
from launch import study as st

FAKE_PY = str(Path(__file__).parent / "helpers" / "launch_fake_python.sh")
TODAY = CodeVersion("0123456789abcdef" * 4, None, None)


@pytest.fixture(autouse=True)
def _fixed_code_version(monkeypatch):
    monkeypatch.setattr(st, "code_version", lambda: TODAY)


def _settings(tmp_path: Path, **study_kw):
    resolved = resolve_sections(st.SECTIONS, None, profile=st.DEFAULT_CONFIG)
    study = dataclasses.replace(resolved["study"], out_dir=str(tmp_path), **study_kw)
    study.check()
    return study, resolved["run"]


def _runs(steps):
    return [s for s in steps if s.kind == "run"]


def test_repeats_are_interleaved_each_in_its_own_directory(tmp_path):
    study, run = _settings(tmp_path, engines=["horovod"], modes=["weak"])
    runs = _runs(st.plan(study, run, python="PY", repeats=3))
    # The outer loop is the repeat: every point once, then every point again.
    assert [(s.world, s.repeat) for s in runs] == [(1, 1), (2, 1), (1, 2), (2, 2), (1, 3), (2, 3)]
    assert [s.run_id for s in runs] == ["horovod-weak-n1", "horovod-weak-n2", "horovod-weak-n1-r2",
                                        "horovod-weak-n2-r2", "horovod-weak-n1-r3", "horovod-weak-n2-r3"]
    assert len({s.out for s in runs}) == 6 and len({s.log for s in runs}) == 6
    for s in runs:
        assert s.argv[s.argv.index("--out") + 1] == str(tmp_path / "local" / s.run_id)
    assert runs[2].label == "horovod weak n=1 repeat 2/3"
    # One repeat: the run ids and labels of a study without the flag.
    single = _runs(st.plan(study, run, python="PY"))
    assert [s.run_id for s in single] == ["horovod-weak-n1", "horovod-weak-n2"]
    assert single[0].label == "horovod weak n=1"


def test_each_repeat_is_skipped_resumed_or_rerun_on_its_own(tmp_path):
    study, run = _settings(tmp_path, name="rep", world_sizes=[1], engines=["horovod"], modes=["weak"],
                           allreduce_bench=False, analyse=False)
    resolved = {"study": study, "run": run}
    assert st.execute(st.plan(study, run, python=FAKE_PY, repeats=2), study, run, resolved,
                      stream=io.StringIO()) == 0
    record = json.loads((tmp_path / "rep" / "study.json").read_text())
    assert record["repeats"] == 2
    assert [(s["run_id"], s["repeat"], s["status"]) for s in record["steps"]] == [
        ("horovod-weak-n1", 1, "completed"), ("horovod-weak-n1-r2", 2, "completed")]

    # Raising the count keeps both completed repeats and adds the third.
    more = _runs(st.plan(study, run, python=FAKE_PY, repeats=3))
    assert [bool(s.skip_reason) for s in more] == [True, True, False]

    # Only the interrupted repeat resumes.
    (tmp_path / "rep" / "horovod-weak-n1-r2" / "run.json").write_text('{"status": "interrupted"}')
    again = _runs(st.plan(study, run, python=FAKE_PY, repeats=2))
    assert again[0].skip_reason == "completed earlier" and not again[0].resume
    assert again[1].resume and again[1].argv[-1] == "--resume"

    # Code staleness is judged per repeat: a repeat recorded as made by other code runs again.
    record = json.loads((tmp_path / "rep" / "study.json").read_text())
    record["steps"][0]["code_version"] = {"source_hash": "a" * 64}
    (tmp_path / "rep" / "study.json").write_text(json.dumps(record))
    (tmp_path / "rep" / "horovod-weak-n1-r2" / "run.json").write_text('{"status": "completed"}')
    stale = _runs(st.plan(study, run, python=FAKE_PY, repeats=2))
    assert not stale[0].skip_reason and "made by other code" in stale[0].note
    assert stale[1].skip_reason == "completed earlier"


def test_repeats_flag(tmp_path, capsys):
    assert st.main(["--dry-run", "--out-dir", str(tmp_path), "--world-sizes", "1", "--engines", "horovod",
                    "--modes", "strong", "--no-analyse", "--repeats", "2"]) == 0
    out = capsys.readouterr().out
    assert "horovod strong n=1 repeat 2/2" in out and str(tmp_path / "local" / "horovod-strong-n1-r2") in out
    assert st.main(["--dry-run", "--repeats", "0"]) == 2
    assert "--repeats" in capsys.readouterr().err
