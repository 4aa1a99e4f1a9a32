"""analysis.campaign.layout: ranks x threads of a node, one GAN or a campaign, on constructed runs."""
from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import pandas as pd
import pytest

sys.path.insert(0, str(Path(__file__).parent))
from test_analysis_support import ITERATIONS, N_DISC, base_config, make_run  # noqa: E402

from analysis.campaign import layout as lay  # noqa: E402
from analysis.__main__ import main  # noqa: E402
from analysis.load import group_series, load_runs  # noqa: E402

BATCH = 128
SHOWERS = ITERATIONS * N_DISC * BATCH      # one GAN's showers per epoch at batch 128


def _run(root: Path, run_id: str, *, n: int, threads: int, mode: str = "strong", t: float = 10.0, **kw) -> Path:
    if mode == "strong":
        kw.setdefault("global_batch", BATCH)
    else:
        kw.setdefault("per_rank_batch", BATCH)
    return make_run(root, run_id, n=n, mode=mode, time_fn=t, config=base_config(threads=threads), **kw)


def _node_study(root: Path, with_data_parallel: bool = True) -> Path:
    """2 cores: 1x2 is the fastest single GAN, the 2-member ensemble the fastest campaign."""
    _run(root, "horovod-strong-n1-t1", n=1, threads=1, t=10.0)
    _run(root, "horovod-strong-n1-t2", n=1, threads=2, t=6.0)
    _run(root, "horovod-strong-n1-t2-r2", n=1, threads=2, t=6.5)
    if with_data_parallel:
        _run(root, "horovod-strong-n2-t1", n=2, threads=1, t=7.0)
    _run(root, "horovod-ensemble-n2-t1", n=2, threads=1, mode="ensemble", t=11.0)
    return root


def _runs(root: Path):
    return load_runs(sorted(p for p in root.iterdir() if (p / "run.json").exists()))


def _row(table: pd.DataFrame, layout: str) -> pd.Series:
    rows = table[table["layout"] == layout]
    assert len(rows) == 1, (layout, list(table["layout"]))
    return rows.iloc[0]


def test_runs_of_other_threads_are_their_own_series_not_an_error(tmp_path):
    series = group_series(_runs(_node_study(tmp_path)))
    strong = {s.key.threads: s.world_sizes for s in series if s.key.mode == "strong"}
    assert strong == {1: [1, 2], 2: [1]}
    assert any("2 threads per rank" in s.key.label for s in series)


def test_layout_rates_per_run_pooled_over_repeats(tmp_path):
    table = lay.analyse_layouts(_runs(_node_study(tmp_path))).table
    one = _row(table, "1 rank x 2 threads")
    assert one["cores_per_node_count"] == 2 and one["runs_count"] == 2 and one["kind"] == lay.SINGLE
    rates = [SHOWERS / 6.0, SHOWERS / 6.5]
    assert one["one_gan_showers_per_s"] == pytest.approx(sum(rates) / 2)       # median of two runs
    assert (one["one_gan_min_showers_per_s"], one["one_gan_max_showers_per_s"]) == pytest.approx((rates[1], rates[0]))
    # one GAN at a time: its campaign rate is its one-GAN rate
    assert one["campaign_showers_per_s"] == pytest.approx(one["one_gan_showers_per_s"])
    dp = _row(table, "2 ranks x 1 thread, data parallel")
    assert dp["one_gan_showers_per_s"] == pytest.approx(SHOWERS / 7.0) and dp["gans_count"] == 1
    ens = _row(table, "2 members x 1 thread, ensemble")
    assert ens["gans_count"] == 2 and ens["group_size_ranks"] == 1
    assert ens["one_gan_showers_per_s"] == pytest.approx(SHOWERS / 11.0)       # one member
    assert ens["campaign_showers_per_s"] == pytest.approx(2 * SHOWERS / 11.0)  # both members together
    assert _row(table, "1 rank x 1 thread")["cores_per_node_count"] == 1


def test_best_layout_ensemble_for_a_campaign_one_rank_of_two_threads_for_one_gan(tmp_path):
    result = lay.analyse_layouts(_runs(_node_study(tmp_path)))
    assert [(b.cores, b.nodes) for b in result.best] == [(2, 1)]     # one layout of 1 core: no choice
    best = result.best[0]
    assert best.one_gan["layout"] == "1 rank x 2 threads"
    assert best.campaign["layout"] == "2 members x 1 thread, ensemble"
    assert best.not_measured == ()
    t = result.table
    assert list(t.loc[t["best_one_gan"], "layout"]) == ["1 rank x 2 threads"]
    assert list(t.loc[t["best_campaign"], "layout"]) == ["2 members x 1 thread, ensemble"]
    [line] = lay.key_result_items(result)
    assert line.startswith("Best layout of 2 cores per node (photons, batch 128 per GAN [abc123]): for one GAN "
                           "1 rank x 2 threads (horovod strong)")
    assert "(2 runs, " in line and "for a campaign 2 members x 1 thread, ensemble (horovod ensemble)" in line


def test_a_layout_no_run_measured_reads_not_measured(tmp_path):
    result = lay.analyse_layouts(_runs(_node_study(tmp_path, with_data_parallel=False)))
    assert result.best[0].not_measured == ("2 ranks x 1 thread, data parallel",)
    missing = _row(result.table, "2 ranks x 1 thread, data parallel")
    assert missing["runs_count"] == 0 and missing["notes"] == "not measured"
    assert math.isnan(missing["one_gan_showers_per_s"]) and not missing["best_one_gan"]
    assert "not measured: 2 ranks x 1 thread, data parallel" in lay.key_result_items(result)[0]


def test_threads_from_the_cores_a_rank_was_given_else_unknown(tmp_path):
    auto = _run(tmp_path, "auto", n=1, threads=0)
    meta = json.loads((auto / "run.json").read_text())
    meta["hardware"]["cores_per_rank"] = 2
    (auto / "run.json").write_text(json.dumps(meta))
    _run(tmp_path, "unknown", n=1, threads=0, config_hash="fedcba987654")
    table = lay.analyse_layouts(_runs(tmp_path)).table
    assert _row(table, "1 rank x 2 threads")["run_ids"] == "auto"
    unknown = table[table["run_ids"] == "unknown"].iloc[0]
    assert pd.isna(unknown["cores_per_node_count"]) and "unknown" in unknown["notes"]


def test_only_the_same_gan_is_compared(tmp_path):
    # A strong run of batch 256 trains another GAN than the batch-128 ones: its own comparison.
    _node_study(tmp_path)
    _run(tmp_path, "big", n=1, threads=2, t=1.0, global_batch=256)
    result = lay.analyse_layouts(_runs(tmp_path))
    assert [b.one_gan["layout"] for b in result.best] == ["1 rank x 2 threads"]
    assert result.best[0].one_gan["run_ids"] != "big"


def test_report_has_the_layout_section_csv_and_key_result(tmp_path):
    _node_study(tmp_path / "s")
    assert main([str(tmp_path / "s"), "--out", str(tmp_path / "rep"), "--quiet"]) == 0
    csv = pd.read_csv(tmp_path / "rep" / lay.CSV_NAME)
    assert list(csv.columns) == list(lay.LAYOUT_COLUMN_NAMES)
    assert csv["best_campaign"].sum() == 1
    md = (tmp_path / "rep" / "report.md").read_text()
    assert "## Layouts of a node" in md
    keys = md.split("## Key results", 1)[1].split("\n## ", 1)[0]
    assert "Best layout of 2 cores per node" in keys


def test_a_study_without_a_choice_has_no_layout_section(tmp_path):
    _run(tmp_path / "s", "one", n=1, threads=1)
    _run(tmp_path / "s", "two", n=2, threads=1)
    assert main([str(tmp_path / "s"), "--out", str(tmp_path / "rep"), "--quiet"]) == 0
    assert "Layouts of a node" not in (tmp_path / "rep" / "report.md").read_text()
    assert (tmp_path / "rep" / lay.CSV_NAME).exists()
