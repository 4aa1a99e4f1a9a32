"""launch.testcluster without daemons: slurm.conf text, task prolog, path and install checks."""
from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from common.errors import UserError
from launch import testcluster as tc


def _layout(scratch: Path, nodes: int = 4) -> tc.Layout:
    return tc.Layout(scratch=scratch, nodes=nodes, hostname="hostA", user="alice", cpus_per_node=2,
                     ctld_port=17000, node_ports=[17001 + i for i in range(nodes)])


def _conf(text: str) -> dict[str, str]:
    """Top-level key=value settings (NodeName/PartitionName lines are checked separately)."""
    out = {}
    for line in text.splitlines():
        if line and not line.startswith(("#", "NodeName=", "PartitionName=")):
            key, _, value = line.partition("=")
            out[key] = value
    return out


def test_conf_has_what_a_one_host_cluster_needs(tmp_path):
    lay = _layout(tmp_path)
    text = tc.render_slurm_conf(lay)
    c = _conf(text)
    assert c["SlurmctldHost"] == "hostA(127.0.0.1)" and c["SlurmctldPort"] == "17000"
    assert c["SlurmUser"] == "alice"
    assert c["AuthInfo"].startswith(f"socket={tmp_path}/munge/munge.socket")
    assert c["ProctrackType"] == "proctrack/linuxproc" and c["TaskPlugin"] == "task/none"
    assert c["SelectType"] == "select/cons_tres" and c["MpiDefault"] == "pmix"
    assert c["SlurmdParameters"] == "config_overrides" and c["MinJobAge"] == "4"
    assert c["TmpFS"] == f"{tmp_path}/tmp/%n"
    assert c["TaskProlog"] == f"{tmp_path}/taskprolog.sh"
    for key in ("StateSaveLocation", "SlurmdSpoolDir", "SlurmctldPidFile", "SlurmdPidFile",
                "SlurmctldLogFile", "SlurmdLogFile"):
        assert c[key].startswith(f"{tmp_path}/"), key
    nodes = [line for line in text.splitlines() if line.startswith("NodeName=")]
    assert [n.split()[0] for n in nodes] == ["NodeName=n1", "NodeName=n2", "NodeName=n3", "NodeName=n4"]
    assert all("NodeHostname=hostA NodeAddr=127.0.0.1" in n for n in nodes)
    assert [n.split("Port=")[1].split()[0] for n in nodes] == ["17001", "17002", "17003", "17004"]
    (part,) = [line for line in text.splitlines() if line.startswith("PartitionName=")]
    assert "Nodes=n1,n2,n3,n4" in part and "OverSubscribe=FORCE:4" in part and "Default=YES" in part


def test_task_prolog_turns_off_shared_memory_unless_chosen(tmp_path):
    script = tmp_path / "p.sh"
    script.write_text(tc.render_task_prolog())
    env = {k: v for k, v in os.environ.items() if not k.startswith("OMPI_MCA_")}
    out = subprocess.run(["sh", str(script)], env=env, capture_output=True, text=True, check=True).stdout
    assert "export OMPI_MCA_btl=^vader" in out.splitlines()
    out = subprocess.run(["sh", str(script)], env=dict(env, OMPI_MCA_btl="self,tcp"), capture_output=True,
                         text=True, check=True).stdout
    assert "OMPI_MCA_btl" not in out


@pytest.mark.parametrize("bad", ["/tmp/with space", "/tmp/a#b", "/tmp/x=y", "/tmp/" + "d" * 120])
def test_scratch_paths_slurm_conf_cannot_hold(bad):
    with pytest.raises(UserError):
        tc.check_scratch(Path(bad))


def test_free_ports_are_distinct_and_bindable():
    ports = tc.free_ports(5)
    assert len(set(ports)) == 5 and all(17000 <= p < 29000 for p in ports)


def test_missing_packages_explained_when_not_root(monkeypatch):
    monkeypatch.setattr(tc, "find_executable", lambda name: None)
    monkeypatch.setattr(tc, "is_root", lambda: False)
    with pytest.raises(UserError, match="apt-get install --no-install-recommends slurmctld slurmd slurm-client munge"):
        tc.ensure_installed()


def test_status_and_stop_without_a_cluster(tmp_path, capsys):
    assert tc.main(["status", "--dir", str(tmp_path / "none")]) == 1
    assert "not running" in capsys.readouterr().out
    assert tc.main(["stop", "--dir", str(tmp_path / "none")]) == 0


def test_layout_round_trips_through_json(tmp_path):
    lay = _layout(tmp_path, nodes=2)
    lay.pids = {"munged": 12}
    again = tc.Layout.from_json(lay.to_json())
    assert again == lay and again.node_names() == ["n1", "n2"]
