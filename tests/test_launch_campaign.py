"""launch.sweep campaigns ([campaign] table): the job array and the packed ensemble job, the member
selection executed by bash against fake srun/scontrol/python, per-member resume and requeue, and
the validation of the table (one line, exit 2). Also: launch.study accepts the ensemble mode."""
from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from bologan.config import TrainConfig
from launch import campaign as cmp
from launch import study as st
from launch import sweep as sw

HELPERS = Path(__file__).parent / "helpers"
FAKE_PY = str(HELPERS / "launch_fake_python.sh")



def _config(tmp_path: Path, campaign: str, members: list[dict] | None = None, sweep: str = "") -> Path:
    members = [{"name": n} for n in ("a", "b", "c")] if members is None else members
    text = [f'[sweep]\nname = "camp"\nout_dir = "{tmp_path}"\npython = "{FAKE_PY}"\n{sweep}',
            "[campaign]", campaign]
    for m in members:
        text.append("[[campaign.members]]\n" + "\n".join(f"{k} = {json.dumps(v)}" for k, v in m.items()))
    path = tmp_path / "campaign.toml"
    path.write_text("\n".join(text) + "\n")
    return path


def _dry_run(capsys, path: Path) -> str:
    assert sw.main(["--config", str(path), "--dry-run"]) == 0
    return capsys.readouterr().out


def _error(capsys, path: Path) -> str:
    assert sw.main(["--config", str(path), "--dry-run"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    return err[0]


def _jobs(tmp_path, campaign: str, members=None, sweep: str = "", force: bool = False):
    path = _config(tmp_path, campaign, members, sweep)
    resolved = sw.resolve_sections(sw.SECTIONS, path, None, read_by_caller=(cmp.TABLE,))
    c = cmp.parse_campaign(cmp.read_campaign(path), str(path), resolved["run"])
    return sw.build_campaign_jobs(resolved["sweep"], resolved["run"], c, force=force), resolved["sweep"]


def test_array_script_has_the_array_line_and_one_branch_per_member(tmp_path, capsys):
    out = _dry_run(capsys, _config(tmp_path, 'layout = "array"\nmax_concurrent = 2'))
    assert "#SBATCH --array=0-2%2" in out
    assert "#SBATCH --requeue" in out and "#SBATCH --signal=USR1@180" in out
    members = tmp_path / "camp" / "members"
    for k, name in enumerate("abc"):
        branch = next(line for line in out.splitlines() if line.startswith(f"  {k}) name={name};"))
        assert f"out={members / name};" in branch
        assert f"--seed {10 + k}" in branch and '--out "$out"' in branch and "--mode weak" in branch
    assert 'scontrol requeue "$SLURM_JOB_ID"' in out
    assert f"-m analysis {tmp_path / 'camp'} --out {tmp_path / 'camp' / 'report'} --campaign-gans 3 --campaign-ranks 2" in out


def test_default_seed_is_bologans():
    assert cmp.CampaignSettings().seed == TrainConfig().seed


def test_array_index_selects_the_member_and_requeues_only_it(tmp_path, fake_slurm):
    for eta in ("20_25", "100_105"):
        (tmp_path / f"photons_eta_{eta}.parquet").write_text("not read by the fake interpreter")
    data = tmp_path / "photons_eta_100_105.parquet"
    members = [{"name": "g20", "eta_slice": "20_25"}, {"name": "g100", "eta_slice": "100_105"}]
    (job, analysis), sweep = _jobs(tmp_path, f'data_pattern = "{tmp_path}/photons_eta_{{eta_slice}}.parquet"\n'
                                             'layout = "array"', members)
    sw.write_jobs(sweep, [job, analysis])
    env = dict(os.environ, SLURM_ARRAY_TASK_ID="1", SLURM_JOB_ID="501", FAKE_INTERRUPT="1",
               FAKE_PYTHON_LOG=str(tmp_path / "py.log"))
    first = subprocess.run(["bash", str(job.path)], env=env, capture_output=True, text=True, timeout=30)
    assert first.returncode == 0, first.stderr
    assert "scontrol requeue 501" in fake_slurm.read_text()
    second = subprocess.run(["bash", str(job.path)], env=dict(env, SLURM_RESTART_COUNT="1"),
                            capture_output=True, text=True, timeout=30)
    assert second.returncode == 0, second.stderr
    calls = [c for c in (tmp_path / "py.log").read_text().splitlines() if "scaling.run" in c]
    assert len(calls) == 2 and f"--data {data}" in calls[0] and "--seed 11" in calls[0]
    assert not calls[0].endswith("--resume") and calls[1].endswith("--resume")
    out = tmp_path / "camp" / "members" / "g100"
    assert json.loads((out / "run.json").read_text())["resumed"] == 1
    assert not (tmp_path / "camp" / "members" / "g20").exists()
    bad = subprocess.run(["bash", str(job.path)], env=dict(env, SLURM_ARRAY_TASK_ID="7"),
                         capture_output=True, text=True, timeout=30)
    assert bad.returncode == 2 and "array index 7 is no member" in bad.stderr


def test_completed_members_are_left_out_of_the_array(tmp_path):
    done = tmp_path / "camp" / "members" / "b"
    done.mkdir(parents=True)
    (done / "run.json").write_text(json.dumps({"status": "completed"}))
    (job, _), _ = _jobs(tmp_path, 'layout = "array"\nmax_concurrent = 4')
    assert "#SBATCH --array=0,2%4" in job.text and "left out of --array: b" in job.text
    assert "  1) name=b" not in job.text
    (job, _), _ = _jobs(tmp_path, 'layout = "array"', force=True)
    assert "#SBATCH --array=0-2\n" in job.text
    for name in "ac":
        (tmp_path / "camp" / "members" / name).mkdir(exist_ok=True)
        (tmp_path / "camp" / "members" / name / "run.json").write_text(json.dumps({"status": "completed"}))
    (job, _), _ = _jobs(tmp_path, 'layout = "array"')
    assert job.skip_reason == "every member completed earlier"


def test_array_task_of_two_ranks(tmp_path):
    (job, _), _ = _jobs(tmp_path, 'layout = "array"\ngroup_size = 2', sweep="tasks_per_node = 4\n")
    assert "#SBATCH --nodes=1" in job.text and "#SBATCH --ntasks-per-node=2" in job.text
    assert "srun --mpi=pmix --nodes=1 --ntasks-per-node=2" in job.text


def test_packed_script_runs_one_ensemble_of_p_ranks(tmp_path, capsys):
    files = []
    for name in "abcd":
        files.append(tmp_path / f"{name}.parquet")
        files[-1].write_text("x")
    members = [{"name": f.stem, "data": str(f)} for f in files]
    out = _dry_run(capsys, _config(tmp_path, 'layout = "packed"\nranks = 4', members, sweep="tasks_per_node = 2\n"))
    assert "#SBATCH --nodes=2" in out and "#SBATCH --ntasks-per-node=2" in out and "--array" not in out
    line = next(x for x in out.splitlines() if "-m scaling.run" in x)
    assert "srun --mpi=pmix --nodes=2 --ntasks-per-node=2" in line
    assert "--mode ensemble --batch-per-rank 128" in line
    assert f"--data {','.join(str(f) for f in files)}" in line and "--synthetic-events" not in line
    assert "--group-size 1 --seed 10 --member-names a,b,c,d" in line
    assert f'out={tmp_path / "camp" / "horovod-ensemble-P4-g1"}' in out
    assert "--campaign-gans 4 --campaign-ranks 4" in out


def test_packed_synthetic_members_default_to_members_x_group_size(tmp_path, capsys):
    out = _dry_run(capsys, _config(tmp_path, 'layout = "packed"\ngroup_size = 2', sweep="tasks_per_node = 8\n"))
    line = next(x for x in out.splitlines() if "-m scaling.run" in x)
    assert "--ntasks-per-node=6" in line and "--synthetic-events" in line and "--group-size 2" in line


@pytest.mark.parametrize("campaign, members, message", [
    ('layout = "array"', [], "no members"),
    ('layout = "array"', [{"name": "a"}, {"name": "a"}], "duplicate member name 'a'"),
    ('layout = "array"', [{"name": "a", "data": "/no/such/file.parquet"}], "data file /no/such/file.parquet not found"),
    ('layout = "array"\ndata_pattern = "/no/such/{member}.parquet"', None, "data file /no/such/a.parquet not found"),
    ('layout = "packed"\nranks = 2', None, "3 members are more than 2 ranks allow with group_size 1"),
    ('layout = "packed"\nranks = 4\ngroup_size = 2', None, "3 members are more than 4 ranks allow"),
    ('layout = "packed"\nranks = 8', None, "set ranks = 3"),
    ('layout = "packed"', [{"name": "a"}, {"name": "b", "particle": "pions"}], "a packed ensemble trains one particle"),
    ('layout = "array"', [{"name": "a", "colour": "red"}], "unknown key 'colour'"),
    ('layout = "array"', [{"name": "a/b"}], "member name 'a/b' is not allowed"),
    ('layout = "array"', [{"particle": "photons"}], "missing key 'name'"),
    ('layout = "array"', [{"name": "a", "particle": "muons"}], "'muons' is not one of"),
    ('layout = "sideways"', None, "'sideways' is not one of array, packed"),
    ('layout = "array"\nranks = 4', None, "ranks is for layout = \"packed\""),
    ('layout = "array"\ndata_pattern = "{slice}.parquet"', None, "cannot be filled"),
])
def test_bad_campaign_tables_are_one_line_exit_2(tmp_path, capsys, campaign, members, message):
    line = _error(capsys, _config(tmp_path, campaign, members))
    assert message in line and "campaign.toml" in line
    assert not (tmp_path / "camp").exists()


def test_a_sweep_without_campaign_still_refuses_unknown_tables(tmp_path, capsys):
    path = tmp_path / "s.toml"
    path.write_text(f'[sweep]\nname = "s"\nout_dir = "{tmp_path}"\n[campain]\nlayout = "array"\n')
    assert "unknown section [campain]" in _error(capsys, path)


def test_study_accepts_the_ensemble_mode_and_passes_it_to_scaling_run(tmp_path):
    study = st.StudySettings(name="e", out_dir=str(tmp_path), world_sizes=[1, 2], modes=["ensemble"],
                             engines=["horovod"], allreduce_bench=False)
    study.check()
    steps = st.plan(study, st.RunSettings(), code={"source_hash": "x"})
    runs = [s for s in steps if s.kind == "run"]
    assert [s.run_id for s in runs] == ["horovod-ensemble-n1", "horovod-ensemble-n2"]
    for s in runs:
        args = s.argv[s.argv.index("scaling.run") + 1:]
        assert args[args.index("--mode") + 1] == "ensemble" and "--batch-per-rank" in args
    with pytest.raises(ValueError, match="'sideways' is not one of strong, weak, ensemble"):
        st.StudySettings(modes=["sideways"]).check()


def test_default_study_profile_includes_the_ensemble():
    resolved = st.resolve_sections(st.SECTIONS, None, profile=st.DEFAULT_CONFIG)
    assert resolved["study"].modes == ["strong", "weak", "ensemble"]
