"""--resume refuses what would change what an epoch measures, and a damaged or foreign run.json
(also for the analysis): one line naming the file or setting, exit 2, nothing written.

scaling.run is called in-process; its checks run before TensorFlow is imported.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from test_analysis_support import make_run  # noqa: E402
from test_reliability_inputs import refused, saved_run  # noqa: E402

from analysis.__main__ import main as analysis_main  # noqa: E402
from scaling import run as scaling_run  # noqa: E402
from common.vocab import MEASUREMENT_KEYS  # noqa: E402

# One changed value per measurement setting: (flag, value given now, value the run started with).
CHANGES = {
    "train.threads": (["--threads", "4"], "4", "1"),
    "scaling.inter_op_threads": (["--inter-op-threads", "2"], "2", "1"),
    "scaling.fusion_threshold_bytes": (["--fusion-threshold-bytes", "0"], "0", "-1"),
    "scaling.cycle_time_ms": (["--cycle-time-ms", "5"], "5.0", "-1.0"),
    "scaling.global_noise": (["--global-noise"], "True", "False"),
    "scaling.comm_timing": (["--comm-timing", "off"], "'off'", "'graph'"),
    "scaling.steps_per_call": (["--steps-per-call", "2"], "2", "1"),
    "scaling.share_gpu": (["--share-gpu"], "True", "False"),
    "scaling.check_every": (["--check-every", "1"], "1", "0"),
}


def test_every_measurement_setting_has_a_case():
    assert set(CHANGES) == set(MEASUREMENT_KEYS)


@pytest.mark.parametrize("key", sorted(CHANGES))
def test_resume_refuses_a_changed_measurement_setting(tmp_path, capsys, key):
    flags, now, before = CHANGES[key]
    saved_run(tmp_path / "run")
    msg = refused(capsys, tmp_path, scaling_run.main, ["--out", str(tmp_path / "run"), "--resume", *flags])
    assert f"--resume with {key} {now}, but the run was started with {before}" in msg, msg


def test_resume_with_the_same_measurement_settings_is_not_refused_for_them(tmp_path):
    saved_run(tmp_path / "run")
    cfg = scaling_run._resolve_config(scaling_run.parse_args(["--out", str(tmp_path / "run"), "--resume",
                                                              "--threads", "1"]))
    from scaling.outdir import check_out, measurement_settings, run_shape

    sc = cfg["scaling"]
    problem = check_out(tmp_path / "run", True, scaling_run.workload_hash(cfg),
                        run_shape(sc, 1, sc.batch_per_rank), measurement_settings(cfg))
    assert problem is None


@pytest.mark.parametrize("content, words", [
    ('{"config": {"extra": {}}}', "schema_version None is not supported"),
    ("[1]", "expected a JSON object, got list"),
    ('"run"', "expected a JSON object, got str"),
    ("{not json", "unreadable"),
])
def test_resume_of_a_foreign_run_json(tmp_path, capsys, content, words):
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "run.json").write_text(content)
    msg = refused(capsys, tmp_path, scaling_run.main, ["--out", str(tmp_path / "run"), "--resume"])
    assert str(tmp_path / "run" / "run.json") in msg and words in msg, msg


def _edit_run_json(run_dir: Path, edit) -> None:
    path = run_dir / "run.json"
    meta = json.loads(path.read_text())
    edit(meta)
    path.write_text(json.dumps(meta))


@pytest.mark.parametrize("edit, words", [
    (lambda m: m["config"].update(extra={}), "config has unknown section 'extra'"),
    (lambda m: m["config"].update(train=[1, 2]), "config.train must be an object of settings"),
    (lambda m: m.update(config=[1]), "config must be an object"),
    (lambda m: m.update(restarts={}), "restarts must be a list"),
    (lambda m: m.update(world_size="2"), "world_size must be an integer"),
    (lambda m: m["config"]["train"].update(n_dsic=5), "unknown key 'n_dsic'"),
])
def test_resume_of_a_damaged_run_json(tmp_path, capsys, edit, words):
    saved_run(tmp_path / "run")
    _edit_run_json(tmp_path / "run", edit)
    msg = refused(capsys, tmp_path, scaling_run.main, ["--out", str(tmp_path / "run"), "--resume"])
    assert str(tmp_path / "run" / "run.json") in msg and words in msg, msg


@pytest.mark.parametrize("edit, words", [
    (lambda m: m["config"].update(train=[1, 2]), "config.train must be an object of settings"),
    (lambda m: m.update(config="model"), "config must be an object"),
    (lambda m: m.update(mode=3), "mode must be a string"),
])
def test_analysis_of_a_damaged_run_json(tmp_path, capsys, edit, words):
    run_dir = make_run(tmp_path / "study", "n1", n=1)
    _edit_run_json(run_dir, edit)
    msg = refused(capsys, tmp_path, analysis_main,
                  [str(tmp_path / "study"), "--out", str(tmp_path / "report"), "--quiet"])
    assert str(run_dir / "run.json") in msg and words in msg, msg
