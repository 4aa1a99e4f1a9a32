"""The energy/time Pareto front compares equal work (showers processed) and never mixes modes."""
from __future__ import annotations

import math
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from test_analysis_support import ITERATIONS, N_DISC, base_config, make_run  # noqa: E402

from analysis.energy.pareto import REFERENCE_SHOWERS, pareto_table  # noqa: E402
from analysis.pipeline import analyse, build_document  # noqa: E402

# Energy per epoch of make_run on one node: 100 W per GPU, 50 W CPU and 10 W DRAM per node.
def _energy_j(n: int, t: float) -> float:
    return (100.0 * n + 60.0) * t


# (mode, N) -> epoch time (s); weak runs keep 256 showers per critic step on every rank.
TIMES = {("strong", 1): 10.0, ("strong", 2): 6.0, ("weak", 1): 20.0, ("weak", 2): 21.0}


def _study(root: Path) -> None:
    for (mode, n), t in TIMES.items():
        kw = {"per_rank_batch": 256} if mode == "weak" else {}
        make_run(root / mode, f"{mode}-n{n}", n=n, mode=mode, time_fn=t, **kw)


def _showers(mode: str, n: int) -> int:
    per_rank = 256 if mode == "weak" else 256 // n
    return ITERATIONS * N_DISC * per_rank * n


@pytest.fixture
def analysis(tmp_path):
    _study(tmp_path)
    return analyse([tmp_path])


def test_time_and_energy_are_per_shower_processed(analysis):
    rows = {(r.mode, r.world_size_ranks): r for r in analysis.pareto.itertuples()}
    assert set(rows) == set(TIMES)
    for (mode, n), t in TIMES.items():
        r = rows[(mode, n)]
        showers = _showers(mode, n)
        assert r.showers_per_epoch_count == showers
        assert r.time_per_shower_s == pytest.approx(t / showers)
        assert r.energy_per_shower_j == pytest.approx(_energy_j(n, t) / showers)
        assert r.reference_showers_count == REFERENCE_SHOWERS
        assert r.time_to_solution_s == pytest.approx(t / showers * REFERENCE_SHOWERS)
        assert r.energy_to_solution_j == pytest.approx(_energy_j(n, t) / showers * REFERENCE_SHOWERS)
        assert r.edp_to_solution_j_s == pytest.approx(r.time_to_solution_s * r.energy_to_solution_j)
    # Weak N=2 takes longer per epoch than weak N=1 but processes twice the showers in it.
    assert rows[("weak", 2)].time_to_solution_s < rows[("weak", 1)].time_to_solution_s


def test_training_length_in_the_config_does_not_matter(tmp_path):
    # train.iterations is not what scaling.run runs (epochs x iterations_per_epoch is): a run
    # configured with another training length is still compared, on the same showers.
    make_run(tmp_path, "short", n=1, time_fn=10.0, config=base_config(iterations=7))
    make_run(tmp_path, "long", n=2, time_fn=6.0, config=base_config(iterations=100_000))
    table = analyse([tmp_path]).pareto
    assert list(table["world_size_ranks"]) == [1, 2]
    assert table["time_to_solution_s"].tolist() == pytest.approx(
        [10.0 / _showers("strong", 1) * REFERENCE_SHOWERS, 6.0 / _showers("strong", 2) * REFERENCE_SHOWERS])


def test_one_front_and_one_recommendation_per_mode(analysis):
    table = analysis.pareto
    assert set(table["front"]) == {"strong photons", "weak photons"}
    on = {(r.mode, r.world_size_ranks) for r in table.itertuples() if r.on_front}
    # Strong N=2 beats every weak point per shower; on one mixed front weak would vanish.
    assert on == {("strong", 2), ("weak", 2)}
    assert set(analysis.recommended) == {"strong photons", "weak photons"}
    assert analysis.recommended["weak photons"].label.endswith("N=2")
    best = table[table["recommended"]]
    assert sorted(best["mode"]) == ["strong", "weak"]
    text = build_document(analysis).markdown()
    assert f"{REFERENCE_SHOWERS:,} showers processed" in text and "one front per scaling mode" in text
    assert "Recommended weak photons configuration" in text
    assert "train.iterations" not in text.split("Energy vs time for", 1)[1].split("\n#", 1)[0]


def test_particles_are_separate_fronts(tmp_path):
    make_run(tmp_path / "p", "photons", n=1, time_fn=10.0, particle="photons")
    make_run(tmp_path / "q", "pions", n=1, time_fn=50.0, particle="pions", config_hash="fedcba987654")
    table, best = pareto_table(analyse([tmp_path]).summary)
    assert table["on_front"].all() and set(best) == {"strong photons", "strong pions"}


def test_rows_without_energy_or_showers_are_left_out(analysis):
    summary = analysis.summary.copy()
    summary.loc[0, "total_energy_per_epoch_j"] = math.nan
    summary.loc[1, "showers_per_epoch_count"] = 0
    table, _ = pareto_table(summary)
    assert len(table) == len(summary) - 2
    with pytest.raises(ValueError, match="reference_showers"):
        pareto_table(summary, reference_showers=0)
