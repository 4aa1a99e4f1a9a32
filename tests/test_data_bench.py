"""python -m bologan.data bench: the same showers in every format, loaded by the package's readers."""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parent))
from test_analysis_support import make_run  # noqa: E402

from bologan.data import main  # noqa: E402
from bologan.data_bench import bench_loads, training_rate  # noqa: E402
from bologan.dataio import write_showers  # noqa: E402
from bologan.synthetic import generate_showers  # noqa: E402


@pytest.fixture(scope="module")
def showers():
    return generate_showers("photons", 400, 3)


def test_every_format_holds_the_same_showers(showers, tmp_path):
    results = {r.format: r for r in bench_loads(showers, 1, tmp_path)}
    assert {"csv", "parquet-snappy", "parquet-none", "parquet-zstd"} <= set(results)
    assert all(r.showers == len(showers) for r in results.values())
    assert results["parquet-snappy"].written_by_package and not results["parquet-zstd"].written_by_package
    assert all(r.size_bytes > 0 and r.load_median_s > 0 and r.peak_memory_bytes >= 0 for r in results.values())
    # the voxels alone are 400 x 368 float32: an uncompressed Parquet file cannot be smaller
    assert results["parquet-none"].size_bytes >= 400 * 368 * 4


def test_training_rate_from_a_run_directory(tmp_path):
    run = make_run(tmp_path, "r", time_fn=2.0, global_batch=256)
    rate, where = training_rate(str(run), None)
    assert rate == pytest.approx(10 * 5 * 256 / 2.0) and str(run) in where
    two = make_run(tmp_path, "r2", n=2, time_fn=2.0, global_batch=256)     # 128 per rank
    assert training_rate(str(two), None)[0] == pytest.approx(10 * 5 * 128 / 2.0)
    assert training_rate(None, 123.0)[0] == 123.0
    assert training_rate(None, None)[0] is None


@pytest.mark.parametrize("flag", [["--repeats", "0"], ["--prefetch", "-1"], ["--batch", "100000"]])
def test_bad_bench_arguments_are_user_errors(showers, tmp_path, capsys, flag):
    path = tmp_path / "s.parquet"
    write_showers(path, showers)
    assert main(["bench", str(path), *flag]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1


def test_input_rate_cases(showers):
    pytest.importorskip("tensorflow")
    from bologan.data_bench import bench_input_rate

    rates = bench_input_rate(showers, batch=16, n_disc=5, prefetch=2, iterations=5)
    assert [r.pipeline for r in rates] == ["prefetch 0", "prefetch 2", "prefetch 0 + cache", "prefetch 2 + cache"]
    assert all(np.isfinite(r.showers_per_s) and r.showers_per_s > 0 for r in rates)
