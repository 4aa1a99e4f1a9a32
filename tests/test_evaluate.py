"""bologan.evaluate with an injected generator: best-checkpoint choice, outputs, CLI errors."""
from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
import types
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

import bologan
import common.errors
from bologan import evaluate
from bologan.geometry import PHOTONS, PIONS, Particle

REPO = Path(__file__).resolve().parents[1]
MOMENTA_MEV = (1024.0, 65536.0)
EVENTS = 2000
# How each shower's energy splits over the photon voxels (the feature metrics need the real
# geometry): falling linearly along the voxel vector, every voxel above the 1 MeV threshold.
FRACTIONS = np.linspace(2.0, 1.0, PHOTONS.n_voxels) / np.linspace(2.0, 1.0, PHOTONS.n_voxels).sum()
BEST = 300


@dataclass
class FakeShowers:
    particle: Particle
    momentum_mev: np.ndarray
    voxels_mev: np.ndarray
    source: str = "fake"


def _showers(momentum_mev: np.ndarray, rng: np.random.Generator, shift_sigma: float = 0.0,
             widen: float = 1.0) -> np.ndarray:
    """Etot ~ Normal(0.97 p (1 + 0.04 shift), 0.04 p widen), spread over the voxels, MeV."""
    p = np.asarray(momentum_mev, dtype=np.float64)
    sigma = 0.04 * p
    etot = rng.normal(0.97 * p + shift_sigma * sigma, widen * sigma)
    return (etot[:, None] * FRACTIONS[None, :]).astype(np.float32)


def _reference(particle: Particle = PHOTONS) -> FakeShowers:
    momentum = np.repeat(np.array(MOMENTA_MEV), EVENTS)
    return FakeShowers(particle, momentum, _showers(momentum, np.random.default_rng(0)))


# Iteration BEST reproduces the reference distribution; the others are shifted or broadened.
DISTORTION = {100: (1.0, 1.0), 200: (0.5, 1.0), BEST: (0.0, 1.0), 400: (0.0, 1.4), 500: (-0.5, 1.0)}


class FakeGenerator:
    """Stands in for restore + sample; counts how often each iteration is restored."""

    def __init__(self):
        self.calls: Counter[int] = Counter()

    def __call__(self, iteration: int, momentum_mev: np.ndarray) -> np.ndarray:
        self.calls[iteration] += 1
        shift, widen = DISTORTION[iteration]
        return _showers(momentum_mev, np.random.default_rng(1000 + iteration), shift, widen)


def _train_dir(tmp_path: Path, iterations=tuple(DISTORTION)) -> Path:
    ckpt = tmp_path / "train" / "checkpoints"
    ckpt.mkdir(parents=True)
    for it in (*iterations, 3000):   # ckpt-3000 must not be mistaken for ckpt-300
        (ckpt / f"ckpt-{it}.index").write_bytes(b"index %d" % it)
        (ckpt / f"ckpt-{it}.data-00000-of-00001").write_bytes(b"data %d" % it)
    (ckpt / "checkpoint").write_text('model_checkpoint_path: "ckpt-3000"\n')
    return tmp_path / "train"


def test_picks_the_checkpoint_that_reproduces_the_reference():
    gen = FakeGenerator()
    result = evaluate.evaluate_checkpoints(_reference(), list(DISTORTION), gen, "photons", fpd_kpd=False)
    scores = {r.iteration: r.chi2_ndf for r in result.records}
    assert result.best_iteration == BEST
    assert scores[BEST] < 3.0 < min(v for k, v in scores.items() if k != BEST)
    # one generator restore per checkpoint, covering every momentum at once
    assert gen.calls == Counter({it: 1 for it in DISTORTION})
    per_energy = result.best().per_energy
    assert [s.momentum_mev for s in per_energy] == list(MOMENTA_MEV)
    assert all(s.n_ref == s.n_gen == EVENTS for s in per_energy)


def test_events_per_energy_sets_generated_count():
    result = evaluate.evaluate_checkpoints(_reference(), [BEST], FakeGenerator(), "photons",
                                           events_per_energy=500)
    assert [s.n_gen for s in result.best().per_energy] == [500, 500]
    rec = result.best().record        # FPD and KPD are on by default
    assert rec.fpd >= 0 and rec.fpd_err >= 0 and rec.kpd_err >= 0 and rec.frechet_hlf_std >= 0


def test_run_evaluation_writes_outputs_and_copies_best(tmp_path, capsys):
    from common.rundir import EVAL_SCHEMA

    train = _train_dir(tmp_path)
    out = tmp_path / "eval"
    evaluate.run_evaluation(train, _reference(), list(DISTORTION), FakeGenerator(), "photons",
                            out_dir=out, seed=0, fpd_kpd=False)

    table = pq.read_table(out / "eval.parquet")
    assert table.schema.equals(EVAL_SCHEMA)
    assert table.column("iteration").to_pylist() == list(DISTORTION)

    lines = (out / "per_energy.csv").read_text().splitlines()
    assert lines[0].split(",")[:3] == ["iteration", "momentum_mev", "ekin_mev"]
    assert len(lines) == 1 + len(DISTORTION) * len(MOMENTA_MEV)

    for name in ("chi2_ndf.png", "chi2_ndf.pdf"):
        assert (out / name).stat().st_size > 1000
    assert (out / "chi2_ndf.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    best = json.loads((out / "best.json").read_text())
    assert best["iteration"] == BEST and best["checkpoint"] == f"best_checkpoint/ckpt-{BEST}"
    copied = sorted(p.name for p in (out / "best_checkpoint").iterdir())
    assert copied == ["checkpoint", f"ckpt-{BEST}.data-00000-of-00001", f"ckpt-{BEST}.index"]
    assert (out / "best_checkpoint" / f"ckpt-{BEST}.index").read_bytes() == b"index %d" % BEST

    printed = capsys.readouterr().out
    assert "chi2/NDF" in printed and f"best: iteration {BEST}" in printed

    # A second scan without the old best replaces the copy as a whole.
    evaluate.run_evaluation(train, _reference(), [100, 200], FakeGenerator(), "photons", out_dir=out,
                            echo=None, fpd_kpd=False)
    copied = sorted(p.name for p in (out / "best_checkpoint").iterdir())
    assert copied == ["checkpoint", "ckpt-200.data-00000-of-00001", "ckpt-200.index"]
    assert not any(p.name.startswith(".") for p in out.iterdir())


def test_plot_without_finite_scores(tmp_path, recwarn):
    from common.rundir import EvalRecord

    recs = [EvalRecord(it, float("inf"), 20, float("inf"), 50.0, 1.0) for it in (10, 20)]
    paths = evaluate.plot_chi2_ndf(recs, 20, tmp_path / "chi2_ndf")
    assert [p.name for p in paths] == ["chi2_ndf.png", "chi2_ndf.pdf"]
    assert all(p.stat().st_size > 1000 for p in paths)
    assert not [w for w in recwarn if "legend" in str(w.message)]


def test_select_iterations():
    avail = [100, 200, 300, 400]
    assert evaluate.select_iterations(avail) == avail
    assert evaluate.select_iterations(avail, every=200) == [200, 400]
    assert evaluate.select_iterations(avail, iterations=[300, 100]) == [100, 300]
    with pytest.raises(common.errors.UserError, match="250"):
        evaluate.select_iterations(avail, iterations=[250])
    with pytest.raises(common.errors.UserError):
        evaluate.select_iterations(avail, every=1000)


# ----------------------------------------------------------------- CLI with fake model/dataio

@pytest.fixture
def fake_stack(tmp_path, monkeypatch):
    """Replace bologan.model and bologan.dataio by fakes so main() runs without TensorFlow."""
    train = _train_dir(tmp_path)
    ref_file = tmp_path / "ref.parquet"
    ref_file.write_bytes(b"not read by the fake")
    state = {"reference": _reference(PHOTONS), "restores": Counter()}

    model = types.ModuleType("bologan.model")
    model.list_checkpoints = lambda d: sorted(
        int(p.name[len("ckpt-"):-len(".index")]) for p in (Path(d) / "checkpoints").glob("ckpt-*.index")
        if int(p.name[len("ckpt-"):-len(".index")]) in DISTORTION)
    model.load_train_config = lambda d: {"model": types.SimpleNamespace(particle="photons"),
                                         "train": types.SimpleNamespace(),
                                         "data": types.SimpleNamespace(label="maxe", momenta="")}

    def restore_generator(d, iteration):
        state["restores"][iteration] += 1
        return iteration

    def sample_showers(generator, model_cfg, label_kind, momentum_mev, seed):
        assert label_kind == "maxe"
        shift, widen = DISTORTION[generator]
        return _showers(momentum_mev, np.random.default_rng(seed + generator), shift, widen)

    model.restore_generator = restore_generator
    model.sample_showers = sample_showers
    dataio = types.ModuleType("bologan.dataio")

    def read_showers(path, particle=None):
        if state.get("unreadable"):
            raise ValueError("Parquet magic bytes not found\nsecond line")
        return state["reference"]

    dataio.read_showers = read_showers
    for name, mod in (("model", model), ("dataio", dataio)):
        monkeypatch.setitem(sys.modules, f"bologan.{name}", mod)
        monkeypatch.setattr(bologan, name, mod, raising=False)
    return train, ref_file, state


def test_main_with_fake_model(fake_stack, capsys):
    train, ref_file, state = fake_stack
    rc = evaluate.main([str(train), "--reference", str(ref_file), "--every", "100", "--seed", "5", "--no-fpd-kpd"])
    assert rc == 0
    assert state["restores"] == Counter({it: 1 for it in DISTORTION})
    best = json.loads((train / "eval" / "best.json").read_text())
    assert best["iteration"] == BEST and best["seed"] == 5
    assert f"best: iteration {BEST}" in capsys.readouterr().out


def test_main_scores_only_the_momenta_asked_for(fake_stack, capsys):
    train, ref_file, state = fake_stack
    assert evaluate.main([str(train), "--reference", str(ref_file), "--iterations", str(BEST),
                          "--momenta", "2^12..2^22"]) == 0
    rows = list(csv.DictReader((train / "eval" / "per_energy.csv").open()))
    assert {float(r["momentum_mev"]) for r in rows} == {65536.0}      # 1024 MeV left out


@pytest.mark.parametrize("case", ["other_particle", "no_checkpoints", "unreadable", "bad_iteration"])
def test_main_bad_input_exits_2_with_one_line(fake_stack, capsys, case):
    train, ref_file, state = fake_stack
    argv = [str(train), "--reference", str(ref_file)]
    if case == "other_particle":
        state["reference"] = _reference(PIONS)
    elif case == "no_checkpoints":
        for p in (train / "checkpoints").iterdir():
            p.unlink()
    elif case == "unreadable":
        state["unreadable"] = True
    else:
        argv += ["--iterations", "100,250"]
    assert evaluate.main(argv) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and err.startswith("error: ")
    assert not (train / "eval" / "best.json").exists()


def test_cli_missing_directory_exits_2(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "bologan.evaluate", str(tmp_path / "nope"),
                           "--reference", str(tmp_path / "ref.parquet")],
                          cwd=REPO, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [f"error: {tmp_path / 'nope'}: training directory not found"]


def test_cli_help_shows_example():
    proc = subprocess.run([sys.executable, "-m", "bologan.evaluate", "--help"],
                          cwd=REPO, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0
    assert "example:" in proc.stdout and "--reference" in proc.stdout


# ----------------------------------------------------------------- end to end with real training

E2E_SCRIPT = r"""
import json, sys
from pathlib import Path
from bologan import evaluate, train
from bologan.dataio import write_showers
from bologan.synthetic import generate_showers

tmp = Path(sys.argv[1])
write_showers(tmp / "ref.parquet", generate_showers("photons", 400, seed=7, momenta_mev=[1024.0, 65536.0]))
rc = train.main(["--particle", "photons", "--out", str(tmp / "train"), "--iterations", "20",
                 "--checkpoint-every", "10", "--batch-size", "16", "--n-disc", "2",
                 "--synthetic-events", "400", "--threads", "1", "--log-every", "10"])
assert rc == 0, rc
rc = evaluate.main([str(tmp / "train"), "--reference", str(tmp / "ref.parquet"),
                    "--events-per-energy", "200", "--out", str(tmp / "eval"), "--no-fpd-kpd"])
assert rc == 0, rc

import tensorflow as tf
from bologan import model
best = json.loads((tmp / "eval" / "best.json").read_text())
latest = tf.train.latest_checkpoint(str(tmp / "eval" / "best_checkpoint"))
assert latest is not None and latest.endswith("ckpt-%d" % best["iteration"]), latest
gen = model.build_generator(model.load_train_config(tmp / "train")["model"])
tf.train.Checkpoint(generator=gen).restore(latest).expect_partial().assert_existing_objects_matched()
print("E2E-OK", best["iteration"])
"""


def test_end_to_end_with_real_training(tmp_path):
    pytest.importorskip("tensorflow")
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    proc = subprocess.run([sys.executable, "-c", E2E_SCRIPT, str(tmp_path)], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "E2E-OK" in proc.stdout
    from common.rundir import EVAL_SCHEMA

    table = pq.read_table(tmp_path / "eval" / "eval.parquet")
    assert table.schema.equals(EVAL_SCHEMA)
    assert table.column("iteration").to_pylist() == [10, 20]
    best = json.loads((tmp_path / "eval" / "best.json").read_text())
    assert best["iteration"] in (10, 20)
    assert (tmp_path / "eval" / "chi2_ndf.png").stat().st_size > 1000
