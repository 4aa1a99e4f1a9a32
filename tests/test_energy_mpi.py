"""Two MPI ranks on one (fake) node: the node's RAPL energy is counted exactly once."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent / "helpers"))
from energy_fakes import two_socket_tree  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
HELPER = REPO / "tests" / "helpers" / "energy_mpi_node.py"


@pytest.mark.mpi
@pytest.mark.skipif(shutil.which("mpirun") is None, reason="mpirun not found (install Open MPI to run MPI tests)")
def test_two_ranks_share_a_node_energy_counted_once(tmp_path):
    tree = two_socket_tree(tmp_path / "powercap")
    env = dict(os.environ, PYTHONPATH=str(REPO), OMPI_MCA_rmaps_base_oversubscribe="1")
    proc = subprocess.run(
        ["mpirun", "--allow-run-as-root", "--oversubscribe", "-np", "2", sys.executable, str(HELPER),
         str(tree.root)], cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["ok"], result
    assert result["cpu_sum_j"] == 7.5 and result["dram_sum_j"] == 0.75
    by_rank = {r["rank"]: r for r in result["rows"]}
    assert by_rank[0]["cpu_energy_source"] == "measured" and by_rank[0]["local_rank"] == 0
    assert by_rank[1]["cpu_energy_source"] == "not_reader" and by_rank[1]["local_rank"] == 1
