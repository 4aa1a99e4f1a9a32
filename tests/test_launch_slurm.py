"""On a real Slurm cluster started on this machine (python -m launch.testcluster).

- the full flow: `srun -N4 python -m scaling.run` (4 ranks on 4 emulated nodes), then a 2-point
  sweep through `launch.sweep --submit --wait`, the run directories and the report;
- preemption: SIGUSR1 delivered by Slurm to a run, the job requeues itself and resumes, once
  with the fake interpreter (seconds) and once with the real scaling.run (about a minute);
- a campaign of 4 GANs as a job array through `launch.sweep --submit --wait`, one member
  preempted (SIGUSR1), requeued and resumed, all 4 completed, the report written (minutes).
Every test starts its own cluster and stops it, checking that no daemon is left behind.
"""
from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from common.vocab import MEMBERS_SUBDIR
from launch import testcluster as tc
from launch.common import find_executable, is_root
from launch.runargs import RunSettings, scaling_run_args

pytestmark = pytest.mark.slurm
ROOT = Path(__file__).resolve().parents[1]
FAKE_PY = str(Path(__file__).parent / "helpers" / "launch_fake_python.sh")


def _skip_reason() -> str | None:
    missing = [c for c in tc.DAEMONS + tc.CLIENTS if find_executable(c) is None]
    if missing:
        return (f"Slurm/munge not installed ({', '.join(missing)}): as root, apt-get install "
                f"{' '.join(tc.APT_PACKAGES)} (make test does this)")
    if not is_root():
        return "the one-machine test cluster runs slurmd, which must be root to start jobs"
    return None


class Cluster:
    def __init__(self, scratch: Path, conf: str):
        self.scratch = scratch
        self.env = dict(os.environ, SLURM_CONF=conf, PYTHONUNBUFFERED="1", TF_CPP_MIN_LOG_LEVEL="2")

    def run(self, argv: list[str], timeout: float, **env: str) -> subprocess.CompletedProcess:
        return subprocess.run(argv, cwd=ROOT, env={**self.env, **env}, capture_output=True, text=True,
                              timeout=timeout)


def _testcluster(action: str, scratch: Path, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "launch.testcluster", action, "--dir", str(scratch), *extra],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)


def _stop_and_check(scratch: Path) -> None:
    res = _testcluster("stop", scratch)
    left = tc.leftover_processes(scratch)
    assert res.returncode == 0, res.stderr
    assert not left, f"daemons left behind: {left}"


@pytest.fixture
def cluster():
    reason = _skip_reason()
    if reason:
        pytest.skip(reason)
    # A short folder: the munge socket path must fit in a unix socket address.
    scratch = Path(tempfile.mkdtemp(prefix="blg-slurm-"))
    try:
        res = _testcluster("start", scratch, "--nodes", "4")
        assert res.returncode == 0, f"testcluster start failed:\n{res.stderr}"
        (line,) = [x for x in res.stdout.splitlines() if x.startswith("export SLURM_CONF=")]
        status = _testcluster("status", scratch)
        assert status.returncode == 0 and status.stdout.count(" idle ") == 4, status.stdout
        yield Cluster(scratch, line.split("=", 1)[1])
    finally:
        _stop_and_check(scratch)
        shutil.rmtree(scratch, ignore_errors=True)


def _squeue(cluster: Cluster) -> str:
    return cluster.run(["squeue", "-h", "-o", "%i %j %T"], 10).stdout.strip()


def _wait_until(pred, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not pred():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.5)


@pytest.mark.timeout(120)
def test_slurm_signal_requeues_and_resumes(cluster, tmp_path):
    """Slurm's SIGUSR1 reaches the run; it exits 3, the job requeues itself and resumes."""
    out_dir = tmp_path / "sweep out"
    res = cluster.run([sys.executable, "-m", "launch.sweep", "--name", "pre", "--out-dir", str(out_dir),
                       "--nodes", "2", "--engines", "horovod", "--modes", "weak", "--python", FAKE_PY,
                       "--submit"], 60, FAKE_WAIT_SIGNAL="1")
    assert res.returncode == 0, res.stderr
    ids = dict(line.split(": job ") for line in res.stdout.splitlines() if ": job " in line)
    run_job = ids["horovod-weak-N2x1"]
    run_json = out_dir / "pre" / "horovod-weak-N2x1" / "run.json"
    _wait_until(lambda: run_json.exists() and "running" in run_json.read_text(), 60, "the run to start")
    # What --signal=USR1@<s> does near the time limit: signal the tasks of the job's steps.
    sig = cluster.run(["scancel", "--signal=USR1", run_job], 10)
    assert sig.returncode == 0, sig.stderr
    report = out_dir / "pre" / "report" / "report.md"
    _wait_until(report.exists, 90, "the requeued run and the analysis job")
    assert json.loads(run_json.read_text()) == {"status": "completed", "resumed": 1}
    log = next((out_dir / "pre" / "logs").glob("pre-horovod-weak-N2x1-*.out")).read_text()
    assert "requeueing job" in log and "--resume" in log


def _epoch_rows(run_dir: Path) -> list[dict]:
    """The rows of epochs.parquet so far (the file is replaced atomically, so a read is whole)."""
    import pyarrow.parquet as pq

    path = run_dir / "epochs.parquet"
    return pq.read_table(path).to_pylist() if path.exists() else []


@pytest.mark.timeout(360)
def test_real_run_signal_requeues_and_resumes_with_clean_epochs(cluster, tmp_path):
    """The fake-interpreter test above with the real trainer (70 s on 2 idle cores, up to 3 min
    on busy ones): the sweep's script for 2 ranks on 2 nodes; SIGUSR1 from Slurm once the first
    epoch is recorded -> scaling.run checkpoints and exits 3 -> the job requeues itself -> the
    restart runs --resume -> completed, one clean row per rank and epoch."""
    if importlib.util.find_spec("scaling.run") is None:
        pytest.skip("scaling.run is not there yet")
    study, name, rid = tmp_path / "real", "pre-real", "horovod-weak-N2x1"
    epochs, iterations, world = 3, 60, 2
    # Epoch 0 holds the start-up and tracing (~10 s); the others must last long enough for the
    # signal, sent once epoch 0 is recorded, to arrive before the run would have completed.
    flags = ["--epochs", str(epochs), "--iterations-per-epoch", str(iterations), "--warmup-epochs", "1",
             "--batch-per-rank", "8", "--synthetic-events", "256", "--threads", "1"]
    # The sweep's own script, sbatch-ed directly: the analysis job (--submit --wait) is covered
    # by the full-flow test and would only add its minute here.
    res = cluster.run([sys.executable, "-m", "launch.sweep", "--name", name, "--out-dir", str(study),
                       "--nodes", str(world), "--engines", "horovod", "--modes", "weak",
                       "--no-allreduce-bench", *flags], 60)
    assert res.returncode == 0, res.stderr
    sub = cluster.run(["sbatch", "--parsable", str(study / name / "sbatch" / f"{rid}.sbatch")], 20)
    assert sub.returncode == 0, sub.stderr
    job = sub.stdout.strip().split(";")[0]
    run_dir = study / name / rid
    logs = study / name / "logs"

    def job_log() -> str:
        return "\n".join(p.read_text() for p in logs.glob(f"{name}-{rid}-*.out"))

    def first_epoch_recorded() -> bool:
        assert _squeue(cluster), f"the job ended before its first epoch:\n{job_log()[-3000:]}"
        return len([r for r in _epoch_rows(run_dir) if r["epoch"] == 0]) == world

    def wait_with_log(pred, timeout_s: float, what: str) -> None:
        try:
            _wait_until(pred, timeout_s, what)
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n{job_log()[-3000:]}") from None

    wait_with_log(first_epoch_recorded, 150, "the first epoch of the run")
    # What --signal=USR1@<s> does near the time limit: signal the tasks of the job's steps.
    sig = cluster.run(["scancel", "--signal=USR1", job], 10)
    assert sig.returncode == 0, sig.stderr

    def finished() -> bool:
        return _squeue(cluster) == "" and json.loads((run_dir / "run.json").read_text())["status"] != "running"

    wait_with_log(finished, 150, "the interrupted run, its requeue and the resumed run")
    log = job_log()
    meta = json.loads((run_dir / "run.json").read_text())
    assert meta["status"] == "completed" and meta["exit_status"] == 0, log[-3000:]
    assert "interrupted by SIGUSR1" in log and f"requeueing job {job} (restart 0)" in log, log[-3000:]
    # run.json records the one restart, from the epoch after the last checkpointed one.
    (restart,) = meta["restarts"]
    assert restart["attempt"] == 1 and 1 <= restart["from_epoch"] < epochs, restart
    resumed_from = restart["from_epoch"]

    rows = _epoch_rows(run_dir)
    clean = [r for r in rows if not r["interrupted"]]
    assert sorted((r["rank"], r["epoch"]) for r in clean) == [(k, e) for k in range(world) for e in range(epochs)]
    # Epochs before the checkpoint come from the first start, the rest from the resumed one,
    # whose first epoch is warm-up again (a new process traces the step anew).
    for r in clean:
        assert r["attempt"] == (0 if r["epoch"] < resumed_from else 1), r
        assert r["iterations"] == iterations, r
        assert r["warmup"] == (r["epoch"] == 0 or r["epoch"] == resumed_from), r
    # At most the epoch in flight when the signal came, on each rank, from the first start.
    cut = [r for r in rows if r["interrupted"]]
    assert len(cut) in (0, world), cut
    assert all(r["attempt"] == 0 and r["epoch"] == resumed_from and r["iterations"] < iterations for r in cut), cut


@pytest.mark.timeout(600)
def test_full_flow_srun_four_nodes_then_sweep_and_report(cluster, tmp_path):
    for module in ("scaling.run", "analysis"):
        if importlib.util.find_spec(module) is None:
            pytest.skip(f"{module} is not there yet")
    study = tmp_path / "slurm results"          # a space: quoting is exercised end to end
    name = "slurm-e2e"
    run = RunSettings(epochs=2, iterations_per_epoch=2, warmup_epochs=1, batch_per_rank=16,
                      synthetic_events=1024, threads=1)
    # 1. srun -N4: four ranks, one per emulated node, the same flags the sweep uses.
    out4 = study / name / "horovod-weak-N4x1"
    args = scaling_run_args(run, engine="horovod", mode="weak", out=str(out4), study=name)
    res = cluster.run(["srun", "-N4", "-n4", sys.executable, "-m", "scaling.run", *args], 300)
    assert res.returncode == 0, f"srun -N4 failed:\n{res.stdout[-3000:]}\n{res.stderr[-3000:]}"
    meta = json.loads((out4 / "run.json").read_text())
    assert meta["status"] == "completed" and meta["world_size"] == 4 and meta["launcher"] == "srun"
    assert meta["nodes"] == 4 and sorted(meta["node_names"]) == ["n1", "n2", "n3", "n4"]

    # 2. a 2-point sweep (1 and 2 nodes) submitted with sbatch; --wait returns after the report.
    flags = ["--epochs", "2", "--iterations-per-epoch", "2", "--warmup-epochs", "1", "--batch-per-rank", "16",
             "--synthetic-events", "1024", "--threads", "1"]
    res = cluster.run([sys.executable, "-m", "launch.sweep", "--name", name, "--out-dir", str(study),
                       "--nodes", "1,2", "--engines", "horovod", "--modes", "weak", "--time-limit", "10",
                       *flags, "--submit", "--wait"], 420)
    logs = study / name / "logs"
    log_text = "\n".join(f"--- {p.name}\n{p.read_text()[-2000:]}" for p in sorted(logs.glob("*.out")))
    assert res.returncode == 0, f"sweep failed:\n{res.stdout}\n{res.stderr}\n{log_text}"
    assert "horovod-weak-N1x1: job" in res.stdout and "horovod-weak-N2x1: job" in res.stdout
    for rid, world in (("horovod-weak-N1x1", 1), ("horovod-weak-N2x1", 2)):
        m = json.loads((study / name / rid / "run.json").read_text())
        assert m["status"] == "completed" and m["world_size"] == world, rid
        assert (study / name / rid / "epochs.parquet").exists()
    assert _squeue(cluster) == "", "jobs left in the queue"

    # 3. the report covers all three runs (N = 1, 2, 4) of the one weak-scaling series.
    report = study / name / "report"
    assert (report / "report.md").exists() and (report / "report.html").exists()
    summary = (report / "summary.csv").read_text()
    assert "horovod" in summary
    assert list(report.rglob("*.png")), "the report has plots"
    assert "1, 2, 4" in (report / "report.md").read_text()

    # 4. stopping leaves nothing behind (the fixture checks again).
    _stop_and_check(cluster.scratch)


def test_srun_four_nodes_ensemble_one_run_directory_node_energy_once(cluster, tmp_path):
    """`srun -N4 scaling.run --mode ensemble`: 4 members (one per node), one run directory, and each
    node's RAPL counters read by exactly one rank per epoch (a fake powercap tree that grows)."""
    import threading

    sys.path.insert(0, str(Path(__file__).parent / "helpers"))
    from energy_fakes import FakePowercap
    from common.rundir import load_run

    tree = FakePowercap(tmp_path / "powercap")
    tree.zone("intel-rapl:0", "package-0", 1_000_000)
    tree.zone("intel-rapl:0:0", "dram", 1_000_000)
    done = threading.Event()

    def tick() -> None:   # 1 W on the package and 0.5 W on DRAM, in 10 ms steps
        while not done.wait(0.01):
            tree.add("intel-rapl:0", 10_000)
            tree.add("intel-rapl:0:0", 5_000)

    ticker = threading.Thread(target=tick, daemon=True)
    ticker.start()
    out = tmp_path / "ens"
    run = RunSettings(epochs=2, iterations_per_epoch=2, warmup_epochs=1, batch_per_rank=16,
                      synthetic_events=1024, threads=1)
    args = scaling_run_args(run, engine="horovod", mode="ensemble", out=str(out), study="slurm-ens")
    try:
        res = cluster.run(["srun", "-N4", "-n4", sys.executable, "-m", "scaling.run", *args,
                           "--powercap-root", str(tree.root)], 300)
    finally:
        done.set()
        ticker.join()
    assert res.returncode == 0, f"srun -N4 ensemble failed:\n{res.stdout[-3000:]}\n{res.stderr[-3000:]}"
    loaded = load_run(out)
    meta, e = loaded.meta, loaded.epochs
    assert meta["mode"] == "ensemble" and meta["members"] == 4 and meta["world_size"] == 4 and meta["nodes"] == 4
    assert meta["member_seeds"] == [meta["config"]["train"]["seed"] + k for k in range(4)]
    assert sorted(set(e["member"])) == [0, 1, 2, 3] and sorted(set(e["node"])) == ["n1", "n2", "n3", "n4"]
    assert [p.name for p in sorted((out / "members").iterdir())] == ["0", "1", "2", "3"]
    assert not (out / "checkpoints").exists()
    for epoch, rows in e.groupby("epoch"):
        readers = rows[rows["cpu_energy_source"] == "measured"]
        assert sorted(readers["node"]) == ["n1", "n2", "n3", "n4"], f"epoch {epoch}: one reader per node"
        assert (readers["cpu_energy_j"] > 0).all()


def _task_job_id(cluster: Cluster, array_job: str, index: int) -> str:
    """An array task's own job id (squeue %A; %i shows <array job>_<index>): the one its log
    file and its requeue message name."""
    rows = [r.split() for r in cluster.run(["squeue", "-h", "-o", "%i %A"], 10).stdout.splitlines()]
    (own,) = [r[1] for r in rows if r and r[0] == f"{array_job}_{index}"]
    return own


def _array_step(array_job: str, index: int) -> str:
    """The training step of one array task: ``<array job>_<index>.1`` (the script's second srun;
    the first, step 0, is the preflight).

    Signalling the task as a job (``<array job>_<index>``) while two or more other tasks of the
    array still wait makes Slurm 22.05 deliver the signal and then answer 'Job can not be altered
    now'; scancel retries for about a minute and signals the task again once its requeued copy
    runs. A step signal goes to the step's tasks only, like --signal=USR1@<s> near the time limit.
    """
    return f"{array_job}_{index}.1"


@pytest.mark.timeout(900)
def test_campaign_job_array_member_preempted_requeues_and_all_complete(cluster, tmp_path):
    """A campaign of 4 GANs as a job array (at most 2 at once), through `launch.sweep --submit
    --wait`: SIGUSR1 from Slurm to one member once its first epoch is recorded -> it checkpoints,
    exits 3 and requeues only its own array task -> resumed, all 4 members complete, the analysis
    job writes the report, --wait returns 0. 2 to 3.5 min on 2 cores."""
    for module in ("scaling.run", "analysis"):
        if importlib.util.find_spec(module) is None:
            pytest.skip(f"{module} is not there yet")
    study, name = tmp_path / "campaign results", "camp4"     # a space: quoting end to end
    names = [f"slice-{k}" for k in range(4)]
    # Epochs 1 and 2 (100 iterations, ~4 s each) leave room for the signal sent once epoch 0
    # (start-up and tracing, ~30 s) is recorded; with 2 iterations the run would be done first.
    epochs, iterations = 3, 100
    config = tmp_path / "campaign.toml"
    config.write_text("\n".join([
        "[sweep]", f"name = {json.dumps(name)}", f"out_dir = {json.dumps(str(study))}",
        'time_limit = "00:15:00"', "allreduce_bench = false",
        "[run]", f"epochs = {epochs}", f"iterations_per_epoch = {iterations}", "warmup_epochs = 1",
        "batch_per_rank = 16", "synthetic_events = 1024", "threads = 1", 'particle = "photons"',
        # %2: at most two TensorFlow processes at once on the two cores.
        "[campaign]", 'layout = "array"', "max_concurrent = 2",
        *[f"[[campaign.members]]\nname = {json.dumps(n)}" for n in names]]) + "\n")
    root = study / name
    members = root / "members"
    logs = root / "logs"
    out_file, err_file = tmp_path / "sweep.out", tmp_path / "sweep.err"

    def job_logs() -> str:
        return "\n".join(f"--- {p.name}\n{p.read_text()[-2500:]}" for p in sorted(logs.glob("*.out")))

    def state() -> str:
        return f"sweep stdout:\n{out_file.read_text()}\nstderr:\n{err_file.read_text()[-2000:]}\n{job_logs()}"

    with out_file.open("w") as out, err_file.open("w") as err:
        sweep = subprocess.Popen([sys.executable, "-m", "launch.sweep", "--config", str(config), "--submit", "--wait"],
                                 cwd=ROOT, env=cluster.env, stdout=out, stderr=err, text=True)
    try:
        def array_job() -> str | None:
            ids = [line.split(": job ")[1] for line in out_file.read_text().splitlines()
                   if line.startswith(f"{MEMBERS_SUBDIR}: job ")]
            return ids[0] if ids else None

        found: list[int] = []

        def member_past_first_epoch() -> bool:
            """Notes in ``found`` a member whose run is running and has recorded its first epoch."""
            assert sweep.poll() is None, f"the sweep ended before any epoch:\n{state()}"
            for k, n in enumerate(names):
                meta_path = members / n / "run.json"
                if (meta_path.exists() and json.loads(meta_path.read_text())["status"] == "running"
                        and any(r["epoch"] == 0 and not r["interrupted"] for r in _epoch_rows(members / n))):
                    found.append(k)
                    return True
            return False

        try:
            _wait_until(member_past_first_epoch, 360, "a member's first epoch")
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n{state()}") from None
        victim = found[0]
        array = array_job()
        assert array is not None, state()
        own = _task_job_id(cluster, array, victim)
        sig = cluster.run(["scancel", "--signal=USR1", _array_step(array, victim)], 10)
        assert sig.returncode == 0, sig.stderr
        try:
            rc = sweep.wait(timeout=720)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"the sweep's --wait did not return:\n{state()}") from None
    finally:
        if sweep.poll() is None:
            sweep.kill()
            sweep.wait()
    assert rc == 0, state()
    assert "analysis job ended with exit code 0" in out_file.read_text(), state()
    assert _squeue(cluster) == "", f"jobs left in the queue: {_squeue(cluster)}"

    # Every member completed into its own run directory; only the signalled one restarted.
    for k, n in enumerate(names):
        meta = json.loads((members / n / "run.json").read_text())
        assert meta["status"] == "completed" and meta["exit_status"] == 0, (n, state())
        assert meta["config"]["train"]["seed"] == 10 + k, n
        if k != victim:
            assert meta["restarts"] == [], (n, meta["restarts"])
            assert sorted(r["epoch"] for r in _epoch_rows(members / n)) == list(range(epochs)), n
    victim_dir = members / names[victim]
    meta = json.loads((victim_dir / "run.json").read_text())
    (restart,) = meta["restarts"]
    assert restart["attempt"] == 1 and 1 <= restart["from_epoch"] < epochs, restart
    (log_path,) = logs.glob(f"{name}-members-{own}.out")
    log = log_path.read_text()
    assert f"campaign member {names[victim]} (array index {victim})" in log
    assert log.count("campaign member ") == 2, log[-3000:]        # the first start and the requeued one
    assert "interrupted by SIGUSR1" in log and f"requeueing job {own} (restart 0)" in log, log[-3000:]
    assert "restart 1" not in log, log[-3000:]

    # One clean row per epoch (the epoch cut by the signal is kept apart, flagged interrupted).
    rows = _epoch_rows(victim_dir)
    clean = [r for r in rows if not r["interrupted"]]
    assert sorted(r["epoch"] for r in clean) == list(range(epochs)), rows
    assert all(r["iterations"] == iterations for r in clean), clean
    assert all(r["attempt"] == (0 if r["epoch"] < restart["from_epoch"] else 1) for r in clean), clean
    cut = [r for r in rows if r["interrupted"]]
    assert len(cut) <= 1 and all(r["attempt"] == 0 for r in cut), cut

    # The report: the campaign's makespan row counts 4 GANs, 4 completed, 1 restart.
    report = root / "report"
    text = (report / "report.md").read_text()
    assert "## Ensembles and campaigns" in text
    assert "| array | 4 | 4 | 1 |" in text, text
    assert "4 GANs on P = 2 ranks" in text
    assert all(f"| {n} |" in text for n in names), "every member in the report's runs table"
