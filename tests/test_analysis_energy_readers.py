"""A run whose node-counter readers are not one per node is ``partial``, never ``measured``.

The run directory is what a PMI launcher without a local-rank variable used to leave: two ranks
on two nodes, each thinking local rank = rank, so only rank 0 read its node's RAPL counters.
"""
from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from test_analysis_support import make_run  # noqa: E402

from analysis import energy_metrics as em  # noqa: E402
from analysis.epochs import epoch_table  # noqa: E402
from analysis.pipeline import analyse  # noqa: E402
from common.rundir import load_run  # noqa: E402
from common.vocab import SOURCE_PARTIAL  # noqa: E402


def _one_reader_on_two_nodes(root: Path) -> Path:
    run = make_run(root, "guessed-local-rank", n=2, nodes=1, time_fn=10.0)   # rank 1 is not_reader
    meta_path = run / "run.json"
    meta = json.loads(meta_path.read_text())
    meta.update(nodes=2, ranks_per_node=1)                                    # but they ran on 2 nodes
    meta_path.write_text(json.dumps(meta))
    return run


def test_partial_is_in_the_vocabulary():
    assert SOURCE_PARTIAL == em.PARTIAL == "partial"


def test_fewer_readers_than_nodes_is_partial(tmp_path):
    table = epoch_table(load_run(_one_reader_on_two_nodes(tmp_path)))
    assert set(table["cpu_energy_source"]) == set(table["dram_energy_source"]) == {"partial"}
    assert set(table["gpu_energy_source"]) == {"measured"}       # every rank reads its GPU
    assert set(table["total_energy_source"]) == {"partial"}
    assert table["cpu_energy_j"].iloc[0] == pytest.approx(500.0)  # what was read: a lower bound
    summary = analyse([tmp_path]).summary.iloc[0]
    assert summary.cpu_energy_source == "partial" and summary.total_energy_source == "partial"


def test_one_reader_per_node_stays_measured(tmp_path):
    for nodes in (1, 2):
        table = epoch_table(load_run(make_run(tmp_path, f"n{nodes}", n=2, nodes=nodes, time_fn=10.0)))
        assert set(table["cpu_energy_source"]) == set(table["total_energy_source"]) == {"measured"}


def test_reader_count_rule():
    assert em.domain_energy([5.0, 6.0], ["measured", "measured"], expected_readers=1).source == "partial"
    assert em.domain_energy([5.0, math.nan], ["measured", "not_reader"], expected_readers=1).source == "measured"
    nothing = em.domain_energy([math.nan], ["unavailable"], expected_readers=2)
    assert nothing.source == "unavailable" and math.isnan(nothing.energy_j)
