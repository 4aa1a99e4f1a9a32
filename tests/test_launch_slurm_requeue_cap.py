"""On the real Slurm test cluster: a sweep job whose run fails the same way twice is requeued once,
resumes, then stops requeueing and says so in its log; the preflight ran before every start.

The fake interpreter (tests/helpers/launch_fake_python.sh) stands in for the trainer: with
FAKE_RUN_RC=1 FAKE_RUN_STATUS=stalled its scaling.run writes run.json as a stalled run and exits 1.
"""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from test_launch_slurm import FAKE_PY, cluster  # noqa: E402,F401  (the fixture)

pytestmark = pytest.mark.slurm


@pytest.mark.timeout(240)
def test_job_failing_the_same_way_twice_is_requeued_once_then_stops(cluster, tmp_path):  # noqa: F811
    out_dir = tmp_path / "cap out"
    res = cluster.run([sys.executable, "-m", "launch.sweep", "--name", "cap", "--out-dir", str(out_dir),
                       "--nodes", "2", "--engines", "horovod", "--modes", "weak", "--python", FAKE_PY,
                       "--max-same-failures", "2", "--submit", "--wait"], 200,
                      FAKE_RUN_RC="1", FAKE_RUN_STATUS="stalled")
    assert res.returncode == 0, res.stderr     # the analysis job ran (afterany) and ended well
    log = next((out_dir / "cap" / "logs").glob("cap-horovod-weak-N2x1-*.out")).read_text()
    job = log.split("requeueing job ")[1].split()[0]
    assert "failed (exit 1, run status stalled; 1 of 2 alike in a row): requeueing job" in log
    assert (f"job {job} failed the same way 2 times in a row (run status stalled; this time exit 1): "
            "not requeueing (max_same_failures)") in log
    assert log.count("requeueing job") == 1 and log.count("fake-python: -m scaling.preflight --engine horovod") == 4
    assert "--resume" in log.split("requeueing job")[1]   # the second start resumed
