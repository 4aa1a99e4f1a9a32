"""bologan.comparison: the table is computed from its inputs; literature vs measured labels."""
from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path

import pytest

from bologan import comparison
from common.errors import UserError

SHIPPED = comparison.DEFAULT_REFERENCE


def inference_result(median_ms=2.0, peak_rate=50_000.0, peak_batch=4096, energy_1000=None,
                     source="unavailable") -> dict:
    """The parts of a bologan.inference result the comparison reads."""
    def energy(value):
        return {"energy_per_1000_showers_j": value, "energy_source": source if value is not None else "unavailable",
                "energy_reason": "" if value is not None else "cpu: no powercap tree"}

    return {
        "kind": "bologan-inference-benchmark", "particle": "pions", "weights": "random",
        "settings": {"precision": "float32", "xla": False},
        "hardware": {"device_kind": "CPU", "device_name": "Test CPU"},
        "on_demand": {"latency_median_ms": median_ms, **energy(energy_1000)},
        "batches": [{"batch_size": 1, "throughput_showers_per_s": 400.0, **energy(energy_1000)},
                    {"batch_size": peak_batch, "throughput_showers_per_s": peak_rate,
                     **energy(None if energy_1000 is None else energy_1000 / 10)}],
        "peak": {"batch_size": peak_batch, "throughput_showers_per_s": peak_rate},
        "energy": {"source": source, "reason": "cpu: no powercap tree"},
    }


REFERENCE_WITH_ENERGY = """
schema_version = 1
[[figure]]
id = "g4-t"
study = "S"
system = "geant4"
quantity = "time_per_shower"
value = 2.0
unit = "s"
hardware = "a CPU"
source = "test fixture, not a real figure"
kind = "literature"
[[figure]]
id = "g4-e"
study = "S"
system = "geant4"
quantity = "energy_per_shower"
value = 0.5
unit = "kJ"
hardware = "a CPU"
source = "test fixture, not a real figure"
kind = "literature"
[[figure]]
id = "gan-t"
study = "S"
system = "gan"
quantity = "time_per_shower"
value = 4.0
unit = "ms"
hardware = "a CPU"
source = "test fixture, not a real figure"
kind = "literature"
"""


def write(tmp_path: Path, text: str, name: str = "ref.toml") -> Path:
    p = tmp_path / name
    p.write_text(text)
    return p


def test_shipped_reference_is_literature_with_sources():
    figures = comparison.load_reference(SHIPPED)
    assert figures and all(f.kind == "literature" and f.source.strip() for f in figures)
    by_id = {f.id: f for f in figures}
    assert by_id["3dgan-geant4-time"].si_value == pytest.approx(17.0)
    assert by_id["3dgan-gan-time"].si_value == pytest.approx(0.007)


def test_speedup_is_geant4_time_over_measured_gan_time():
    gans = comparison.gan_figures_from_inference(inference_result(median_ms=2.0, peak_rate=50_000.0), "x.json")
    rows = comparison.compare(gans, comparison.load_reference(SHIPPED))
    measured = [r for r in rows if r.gan_kind == "measured"]
    assert [r.gan_time_per_shower_s for r in measured] == pytest.approx([0.002, 1 / 50_000.0])
    assert [r.speedup for r in measured] == pytest.approx([17.0 / 0.002, 17.0 * 50_000.0])
    assert all(r.geant4_kind == "literature" and r.geant4 == "3dgan-geant4-time" for r in measured)
    assert "batch 4096 (peak throughput)" in measured[1].gan
    # No Geant4 energy figure exists in the shipped file: the ratio is unavailable, with the reason.
    assert all(r.energy_ratio is None and r.energy_note.startswith("unavailable: no Geant4 energy") for r in rows)
    assert all("GAN energy not known" in r.energy_note for r in measured)     # both sides missing: both said
    lit = [r for r in rows if r.gan_kind == "literature"]
    assert len(lit) == 1 and lit[0].speedup == pytest.approx(17.0 / 0.007)


def test_energy_ratio_only_when_both_energies_exist(tmp_path):
    figures = comparison.load_reference(write(tmp_path, REFERENCE_WITH_ENERGY))
    with_energy = comparison.gan_figures_from_inference(
        inference_result(energy_1000=20.0, source="measured"), "m.json")
    rows = comparison.compare(with_energy, figures)
    on_demand = next(r for r in rows if "on-demand" in r.gan)
    assert on_demand.gan_energy_per_shower_j == pytest.approx(0.02)
    assert on_demand.energy_ratio == pytest.approx(500.0 / 0.02)
    assert on_demand.speedup == pytest.approx(2.0 / 0.002)
    assert "GAN energy: measured" in on_demand.energy_note
    batch = next(r for r in rows if "peak" in r.gan)
    assert batch.energy_ratio == pytest.approx(500.0 / 0.002)

    without = comparison.gan_figures_from_inference(inference_result(), "u.json")
    rows = comparison.compare(without, figures)
    measured = [r for r in rows if r.gan_kind == "measured"]
    assert all(r.energy_ratio is None and "GAN energy not known (cpu: no powercap tree)" in r.energy_note
               for r in measured)
    lit = next(r for r in rows if r.gan_kind == "literature")
    assert lit.energy_ratio is None and "no GAN energy_per_shower figure" in lit.energy_note


def test_estimated_energy_is_labelled(tmp_path):
    figures = comparison.load_reference(write(tmp_path, REFERENCE_WITH_ENERGY))
    gans = comparison.gan_figures_from_inference(inference_result(energy_1000=10.0, source="estimated"), "e.json")
    row = comparison.compare(gans, figures)[0]
    assert row.gan_energy_source == "estimated" and "GAN energy: estimated" in row.energy_note


def test_csv_and_markdown_outputs(tmp_path, capsys):
    inf = tmp_path / "inf.json"
    inf.write_text(json.dumps(inference_result()))
    rc = comparison.main([str(inf), "--csv", str(tmp_path / "t.csv"), "--markdown", str(tmp_path / "t.md")])
    assert rc == 0
    printed = capsys.readouterr().out
    assert printed == (tmp_path / "t.md").read_text()
    assert "(measured)" in printed and "(literature)" in printed and "17 s" in printed
    assert "3dgan-geant4-time: CERN 3DGAN" in printed and "(note: 3DGAN simulates a different" in printed
    rows = list(csv.DictReader(io.StringIO((tmp_path / "t.csv").read_text())))
    assert list(rows[0]) == list(comparison.COLUMNS) and len(rows) == 3
    assert math.isclose(float(rows[0]["speedup"]), 17.0 / 0.002)
    assert rows[0]["energy_ratio"] == ""


@pytest.mark.parametrize("edit, match", [
    (lambda t: t.replace('kind = "literature"', 'kind = "measured"', 1), "kind: 'measured' is not one of"),
    (lambda t: t.replace('unit = "s"', 'unit = "h"', 1), "unit: 'h' is not a unit of time_per_shower"),
    (lambda t: t.replace("value = 2.0", "value = -1", 1), "expected a positive number"),
    (lambda t: t.replace('source = "test fixture, not a real figure"\n', "", 1), "missing key 'source'"),
    (lambda t: t.replace('id = "g4-t"', 'id = "g4-t"\ncolour = "red"', 1), "unknown key 'colour'"),
    (lambda t: t.replace('id = "g4-e"', 'id = "g4-t"', 1), "appears twice"),
    (lambda t: t.replace("schema_version = 1", "schema_version = 9"), "schema_version"),
    (lambda t: t + "\n[[figure", "invalid TOML"),
])
def test_bad_reference_files(tmp_path, edit, match):
    with pytest.raises(UserError, match=match):
        comparison.load_reference(write(tmp_path, edit(REFERENCE_WITH_ENERGY)))


def test_bad_inference_input(tmp_path, capsys):
    bad = write(tmp_path, json.dumps({"kind": "something else"}), "bad.json")
    assert comparison.main([str(bad)]) == 2
    assert "not a bologan.inference result" in capsys.readouterr().err
    assert comparison.main([str(tmp_path / "missing.json")]) == 2
    assert "file not found" in capsys.readouterr().err
    partial = inference_result()
    del partial["on_demand"]
    with pytest.raises(UserError, match="missing 'on_demand'"):
        comparison.gan_figures_from_inference(partial, "p.json")


def test_literature_only_table(capsys):
    assert comparison.main([]) == 0
    out = capsys.readouterr().out
    assert "3DGAN GAN (3dgan-gan-time)" in out and "2,429x" in out
