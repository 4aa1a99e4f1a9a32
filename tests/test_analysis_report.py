"""End to end: python -m analysis on a small study -> plots, tables and report; no TensorFlow."""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

sys.path.insert(0, str(Path(__file__).parent))
from test_analysis_support import make_run, strong_study, write_bench  # noqa: E402

from analysis.__main__ import main  # noqa: E402
from analysis.summary import COLUMNS  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
PLOTS = ("speedup", "efficiency", "time_breakdown", "energy_breakdown", "energy_efficiency", "power_timeline",
         "pareto", "chi2", "allreduce_fit", "projection", "projection_breakdown")
UNIT_SUFFIXES = ("_s", "_j", "_w", "_j_s", "_j_s2", "_per_s", "_per_j", "_count", "_ratio", "_fraction",
                 "_ranks", "_showers")

RUNNER = """
import sys
from analysis.__main__ import main
rc = main(sys.argv[1:])
heavy = sorted(m for m in sys.modules if m.split('.')[0] in ('tensorflow', 'keras', 'horovod'))
if heavy:
    print('heavy modules imported: ' + ', '.join(heavy[:5]), file=sys.stderr)
    sys.exit(99)
sys.exit(rc)
"""


@pytest.fixture(scope="module")
def report(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("study")
    strong_study(root, {1: 100.0, 2: 55.0, 4: 30.0}, power=True, evals=True)
    for n, t in {1: 10.0, 2: 10.5, 4: 11.5}.items():
        make_run(root / "weak", f"weak-n{n}", n=n, mode="weak", time_fn=t, nodes=2 if n == 4 else 1,
                 cpu_source="estimated" if n == 4 else "measured")
    for n in (2, 4):
        write_bench(root, n, 5e-6, 10e9)
    out = root.parent / "report"
    env = dict(os.environ, PYTHONPATH=str(REPO), MPLBACKEND="Agg")
    res = subprocess.run([sys.executable, "-c", RUNNER, str(root), "--out", str(out), "--network", "ethernet_25g"],
                         cwd=REPO, env=env, capture_output=True, text=True, timeout=240)
    assert res.returncode == 0, res.stderr[-2000:]
    assert "analysis: report written" in res.stdout
    return out


def test_every_plot_written_as_png_and_pdf(report):
    for name in PLOTS:
        png, pdf = report / "plots" / f"{name}.png", report / "plots" / f"{name}.pdf"
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name
        assert png.stat().st_size > 10_000, name
        assert pdf.read_bytes()[:5] == b"%PDF-", name
        assert pdf.stat().st_size > 5_000, name


def test_report_mentions_every_plot_and_how_it_was_measured(report):
    md = (report / "report.md").read_text()
    html = (report / "report.html").read_text()
    for name in PLOTS:
        assert f"plots/{name}.png" in md, name
    assert html.count("data:image/png;base64,") == len(PLOTS)
    for phrase in ("slowest rank", "warm-up", "NVML", "RAPL", "counted once", "includes estimates",
                   "t(b, N) = c + a(N) + 2(N-1)/N * b / B", "Out-of-sample validation", "intra-node",
                   "straggler", "Recommended strong photons configuration",
                   "Recommended weak photons configuration", "projection",
                   "Karp-Flatt", "Amdahl", "Gustafson"):
        assert phrase in md, phrase
    assert "Columns of summary.csv" in md and "Columns of summary.csv" in html


def test_summary_tables_carry_units(report):
    csv = pd.read_csv(report / "summary.csv")
    parquet = pd.read_parquet(report / "summary.parquet")
    assert list(csv.columns) == [c.name for c in COLUMNS] == list(parquet.columns)
    for c in COLUMNS:
        if c.unit != "text":
            assert c.name.endswith(UNIT_SUFFIXES), c.name
    assert len(csv) == 6
    weak4 = csv[(csv["mode"] == "weak") & (csv["world_size_ranks"] == 4)].iloc[0]
    assert weak4["total_energy_source"] == "includes estimates"
    assert (report / "pareto.csv").exists() and (report / "projection.csv").exists()
    proj = pd.read_csv(report / "projection.csv")
    assert {"measured (horovod all-reduce)", "Ethernet 25 Gb/s"} == set(proj["network"])


def key_results(md: str) -> list[str]:
    section = md.split("## Key results", 1)[1].split("\n## ", 1)[0]
    return [line for line in section.splitlines() if line.startswith("- ")]


def test_key_results_quote_projections_with_network_assumptions_and_validation(report):
    md = (report / "report.md").read_text()
    quoted = [line for line in key_results(md) if "Projection" in line]
    assert len(quoted) == 4                                 # photons and pions, strong and weak
    for line in quoted:
        assert "Ethernet 25 Gb/s" in line and "Assumes" in line
        assert "validation error" in line or "not validated" in line
        assert "measured (horovod all-reduce)" not in line  # network files given: the local link is not quoted
    photons = [line for line in quoted if "of photons" in line]
    assert all("validation error" in line and "held-out N = 2, 4" in line for line in photons)
    assert all("not validated (pions not measured)" in line for line in quoted if "of pions" in line)
    # Global batch 256: the strong projection is quoted at N = 256, the last point with one shower per rank.
    assert any("strong efficiency at N = 256 (the largest N before" in line for line in photons)
    assert any("weak efficiency at N = 1024" in line for line in photons)


def test_strong_rows_of_the_projection_stop_at_the_batch_cutoff(report):
    proj = pd.read_csv(report / "projection.csv")
    strong = proj[proj["mode"] == "strong"]
    assert strong["world_size_ranks"].max() == 256 and (strong["per_rank_batch_showers"] >= 1).all()
    md = (report / "report.md").read_text()
    header = next(line for line in md.splitlines() if line.startswith("| network | particle | mode | N=8"))
    cells = [c.strip() for c in header.strip("|").split("|")]
    row = next(line for line in md.splitlines() if line.startswith("| Ethernet 25 Gb/s | photons | strong | "))
    values = dict(zip(cells, [c.strip() for c in row.strip("|").split("|")]))
    assert values["N=512"] == values["N=1024"] == "-" and values["N=256"] not in ("-", "n/a")


def test_only_n1_measured_is_shown_as_not_validated(tmp_path):
    make_run(tmp_path / "s", "only", n=1)
    assert main([str(tmp_path / "s"), "--out", str(tmp_path / "rep"), "--quiet", "--network", "infiniband_hdr"]) == 0
    quoted = [line for line in key_results((tmp_path / "rep" / "report.md").read_text()) if "Projection" in line]
    assert quoted and all("InfiniBand HDR 200 Gb/s" in line for line in quoted)
    assert any("not validated (only N = 1 measured)" in line for line in quoted)
    assert not any("validation error" in line for line in quoted)


def test_report_dir_is_replaced_whole_and_foreign_dirs_are_refused(report, tmp_path, capsys):
    before = set(os.listdir(report.parent))
    study = next(p for p in report.parent.iterdir() if p.name.startswith("study"))
    small = study / "weak" / "weak-n1"          # no power, no eval: few plots, quick
    assert main([str(small), "--out", str(report), "--quiet"]) == 0
    assert not (report / "plots" / "speedup.png").exists()      # stale plots went with the old report
    assert (report / "report.md").exists()
    assert set(os.listdir(report.parent)) == before             # no temporary folder left behind
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "thesis.tex").write_text("keep me")
    assert main([str(small), "--out", str(foreign), "--quiet"]) == 2
    assert "not an analysis report" in capsys.readouterr().err
    assert (foreign / "thesis.tex").read_text() == "keep me"


def test_single_run_report_explains_missing_curves(tmp_path):
    make_run(tmp_path / "s", "only", n=1, gpu_w=None, gpu_source="unavailable")
    assert main([str(tmp_path / "s"), "--out", str(tmp_path / "rep"), "--quiet"]) == 0
    md = (tmp_path / "rep" / "report.md").read_text()
    assert "only one world size" in md
    assert "projection unavailable" in md
    assert re.search(r"speedup: no strong-scaling series", md)


def test_help_shows_an_example(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert "example:" in out and "python -m analysis" in out and "--network" in out
