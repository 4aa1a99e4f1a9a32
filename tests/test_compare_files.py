"""bologan.evaluate --generated GEN.hdf5 --reference REF.hdf5: scores of two CaloChallenge files."""
from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np
import pytest

from bologan import evaluate
from bologan.synthetic import generate_showers

MOMENTA_MEV = (1024.0, 65536.0)


def _write(path: Path, showers=None, *, energies=None, voxels=None, keys=("incident_energies", "showers")) -> Path:
    if showers is not None:
        energies, voxels = showers.momentum_mev.reshape(-1, 1), showers.voxels_mev
    with h5py.File(path, "w") as fh:
        fh.create_dataset(keys[0], data=energies)
        fh.create_dataset(keys[1], data=voxels)
    return path


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("files")
    ref = generate_showers("photons", 3000, seed=1, momenta_mev=MOMENTA_MEV)
    same = generate_showers("photons", 3000, seed=2, momenta_mev=MOMENTA_MEV)
    far = generate_showers("photons", 3000, seed=3, momenta_mev=MOMENTA_MEV)
    far.voxels_mev[:] *= 1.3          # 30 % too much energy everywhere
    return {"ref": _write(d / "ref.hdf5", ref), "same": _write(d / "same.hdf5", same),
            "far": _write(d / "far.hdf5", far), "dir": d}


def _json(capsys, *args: str) -> dict:
    assert evaluate.main(["--json", *args]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 1
    return json.loads(lines[0])


def test_one_json_line_with_every_score(files, capsys):
    same = _json(capsys, "--generated", str(files["same"]), "--reference", str(files["ref"]))
    far = _json(capsys, "--generated", str(files["far"]), "--reference", str(files["ref"]))
    for key in ("fpd_x1e3", "fpd_err_x1e3", "kpd_x1e3", "kpd_err_x1e3", "chi2_ndf", "out_of_range_fraction",
                "n_generated", "n_reference"):
        assert key in same and key in far
    assert same["particle"] == "photons" and same["n_generated"] == 3000 and same["n_reference"] == 3000
    # Two samples of one distribution sit at the finite-sample floor; a 30 % energy scale is far off.
    assert far["fpd_x1e3"] > 20 * same["fpd_x1e3"] and far["kpd_x1e3"] > 20 * max(same["kpd_x1e3"], same["kpd_err_x1e3"])
    assert same["out_of_range_fraction"] < 0.05 < far["out_of_range_fraction"]
    assert same["chi2_note"] is None


def test_text_output_and_off_grid_reference(files, capsys, tmp_path):
    rng = np.random.default_rng(5)
    e = rng.uniform(1e3, 1e5, size=(400, 1))
    v = np.abs(rng.normal(size=(400, 368))) * e / 368
    spectrum = _write(tmp_path / "spectrum.hdf5", energies=e, voxels=v)
    assert evaluate.main(["--generated", str(spectrum), "--reference", str(spectrum)]) == 0
    out = capsys.readouterr().out
    assert "FPD x1e3" in out and "chi2/NDF not computed: the reference has 400 distinct incident energies" in out


@pytest.mark.parametrize("problem, message", [
    ("keys", "no dataset 'incident_energies'"),
    ("voxels", "has 100 voxels per shower; dataset 1 has 368 (photons), 533 (pions)"),
    ("particle", "has 368 voxels per shower, pions need 533"),
    ("nan", "1 of 20 showers have NaN or infinite voxels (first at row 7)"),
    ("energy", "incident energies are not positive finite numbers"),
    ("rows", "'showers' has 19 rows but 'incident_energies' has 20"),
    ("missing", "file not found"),
])
def test_bad_files_get_one_line_and_exit_2(files, capsys, tmp_path, problem, message):
    e, v = np.full((20, 1), 1024.0), np.ones((20, 368))
    kwargs: dict = {"energies": e, "voxels": v}
    extra: list[str] = []
    if problem == "keys":
        kwargs["keys"] = ("energies", "showers")
    elif problem == "voxels":
        kwargs["voxels"] = np.ones((20, 100))
    elif problem == "particle":
        extra = ["--particle", "pions"]
    elif problem == "nan":
        v[7, 3] = np.nan
    elif problem == "energy":
        e[2] = 0.0
    elif problem == "rows":
        kwargs["voxels"] = np.ones((19, 368))
    bad = tmp_path / "bad.hdf5"
    if problem != "missing":
        _write(bad, **kwargs)
    rc = evaluate.main(["--generated", str(bad), "--reference", str(files["ref"]), *extra])
    err = capsys.readouterr().err
    assert rc == 2 and len(err.strip().splitlines()) == 1 and message in err and "Traceback" not in err


def test_generated_mode_refuses_a_train_dir_and_needs_a_reference(files, capsys):
    assert evaluate.main([str(files["dir"]), "--generated", str(files["same"]), "--reference", str(files["ref"])]) == 2
    assert "give no TRAIN_DIR" in capsys.readouterr().err
    assert evaluate.main(["--reference", str(files["ref"])]) == 2
    assert "give TRAIN_DIR" in capsys.readouterr().err


def test_classifier_auc_and_jsd_in_the_json(files, capsys):
    res = _json(capsys, "--generated", str(files["far"]), "--reference", str(files["ref"]),
                "--classifier", "high", "--classifier-epochs", "3")
    # A 30 % energy scale shows in log10 E_layer against log10 E_inc: even after a few steps (1800
    # showers per class, batches of 1000) the network tells the files apart better than chance.
    assert res["classifier"] == "high" and res["classifier_auc"] > 0.6 and -0.05 < res["classifier_jsd"] <= 1.0
    assert res["classifier_epochs"] <= 3 and 1 <= res["classifier_best_epoch"] <= res["classifier_epochs"]
    assert res["classifier_train_showers_per_class"] == 1800 and res["classifier_s_per_epoch"] > 0
