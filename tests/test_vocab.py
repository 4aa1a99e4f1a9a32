"""common.vocab: one definition of each shared name, and the places that must agree with it."""
from __future__ import annotations

import ast
import copy
import dataclasses
import fnmatch
import json
import sys
from pathlib import Path

import pytest

from common.errors import UserError

sys.path.insert(0, str(Path(__file__).parent))
from test_analysis_support import make_run  # noqa: E402

from analysis.load import group_series, load_runs, may_vary_in_series  # noqa: E402
from bologan import geometry  # noqa: E402
from bologan.config import BOLOGAN_SECTIONS, DataConfig, ModelConfig, TrainConfig  # noqa: E402
from common import rundir, vocab  # noqa: E402
from common.settings import resolve_sections, sections_to_dict  # noqa: E402
from launch.runargs import RunSettings  # noqa: E402
from scaling import run as scaling_run  # noqa: E402
from scaling.config import ScalingConfig  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("common", "bologan", "scaling", "energy", "analysis", "launch")


def _workload_keys() -> list[str]:
    return [f"{section}.{f.name}" for section, cls in BOLOGAN_SECTIONS.items() for f in dataclasses.fields(cls)]


def test_not_workload_keys_name_real_settings():
    assert set(vocab.NOT_WORKLOAD_KEYS) <= set(_workload_keys())


def test_run_hash_exclusion_and_series_tolerance_agree():
    # A key left out of config_hash puts runs that differ in it into one series, so the analysis
    # must accept that difference, unless it changes what an epoch measures (MEASUREMENT_KEYS:
    # then the series is refused, as --resume refuses it); a key inside the hash must never be
    # waved through.
    expected = {k: k in vocab.NOT_WORKLOAD_KEYS and k not in vocab.MEASUREMENT_KEYS for k in _workload_keys()}
    disagree = [k for k, ok in expected.items() if may_vary_in_series(k) != ok]
    assert disagree == []
    assert not any(may_vary_in_series(k) for k in vocab.MEASUREMENT_KEYS)


def _changed(value):
    if isinstance(value, bool):
        return not value
    if isinstance(value, (int, float)):
        return value + 1
    return value + ([1] if isinstance(value, list) else "x")


def test_scaling_run_hashes_every_workload_key_but_the_excluded_ones():
    base = resolve_sections(scaling_run.SECTIONS, None)
    before = scaling_run.workload_hash(base)
    ignored = []
    for key in _workload_keys():
        section, name = key.split(".")
        cfg = copy.deepcopy(base)
        setattr(cfg[section], name, _changed(getattr(cfg[section], name)))
        if scaling_run.workload_hash(cfg) == before:
            ignored.append(key)
    assert sorted(ignored) == sorted(vocab.NOT_WORKLOAD_KEYS)


def test_the_default_workload_hash_is_unchanged():
    # Stored runs carry these values: changing one starts new series apart from every older run.
    # The default changed once on purpose (generator BatchNorm as BoloGAN trains it); the older
    # default runs keep their hash as batch_statistics runs.
    cfg = resolve_sections(scaling_run.SECTIONS, None)
    assert scaling_run.workload_hash(cfg) == "7705d1bb9bd2"
    cfg["model"].generator_norm = "batch_statistics"
    assert scaling_run.workload_hash(cfg) == "c3abece22630"


def test_runs_differing_in_excluded_keys_form_one_series(tmp_path):
    cfg = resolve_sections(scaling_run.SECTIONS, None)
    written = scaling_run.workload_hash(cfg)
    other = json.loads(json.dumps(sections_to_dict(cfg)))
    other["train"].update(iterations=7, log_every=3, checkpoint_every=9, keep_checkpoints=1)
    make_run(tmp_path, "a", n=1, config=sections_to_dict(cfg), config_hash=written)
    # No config_hash written (an older writer): the analysis hashes it the way scaling.run does.
    make_run(tmp_path, "b", n=2, config=other, config_hash="")
    series = group_series(load_runs([tmp_path / "a", tmp_path / "b"]))
    assert len(series) == 1 and series[0].world_sizes == [1, 2]
    assert series[0].key.config_hash == written


def test_runs_differing_in_a_measurement_setting_are_refused_as_one_series(tmp_path):
    """Same workload hash, but another all-reduce cycle time at N=2 than at N=1: not one series."""
    cfg = resolve_sections(scaling_run.SECTIONS, None)
    written = scaling_run.workload_hash(cfg)
    other = json.loads(json.dumps(sections_to_dict(cfg)))
    other["scaling"]["cycle_time_ms"] = 0.1
    make_run(tmp_path, "a", n=1, config=sections_to_dict(cfg), config_hash=written)
    make_run(tmp_path, "b", n=2, config=other, config_hash=written)
    with pytest.raises(UserError, match="scaling.cycle_time_ms"):
        group_series(load_runs([tmp_path / "a", tmp_path / "b"]))


def test_runs_pinning_other_threads_per_rank_are_two_series(tmp_path):
    """2 threads per rank at N=2 against 1 at N=1: two series (a layout study varies threads on
    purpose), each named by its threads, never one series mixing them."""
    cfg = resolve_sections(scaling_run.SECTIONS, None)
    written = scaling_run.workload_hash(cfg)
    one, two = (json.loads(json.dumps(sections_to_dict(cfg))) for _ in range(2))
    one["train"]["threads"], two["train"]["threads"] = 1, 2
    make_run(tmp_path, "a", n=1, config=one, config_hash=written)
    make_run(tmp_path, "b", n=2, config=two, config_hash=written)
    series = group_series(load_runs([tmp_path / "a", tmp_path / "b"]))
    assert [(s.key.threads, s.world_sizes) for s in series] == [(1, [1]), (2, [2])]
    assert "1 thread per rank" in series[0].key.label and "2 threads per rank" in series[1].key.label


def test_launch_run_defaults_are_the_trainers_defaults():
    run, sc, data, train, model = RunSettings(), ScalingConfig(), DataConfig(), TrainConfig(), ModelConfig()
    assert (run.epochs, run.iterations_per_epoch, run.warmup_epochs, run.global_batch, run.batch_per_rank) == (
        sc.epochs, sc.iterations_per_epoch, sc.warmup_epochs, sc.global_batch, sc.batch_per_rank)
    assert (run.data, run.synthetic_events, run.threads, run.particle) == (
        data.data, data.synthetic_events, train.threads, model.particle)


def test_geometry_knows_exactly_the_vocabulary_particles():
    assert tuple(geometry.PARTICLES) == vocab.PARTICLE_NAMES


def test_run_directory_names_come_from_the_vocabulary():
    assert (rundir.RUN_JSON, rundir.EPOCHS_FILE, rundir.CHECKPOINT_DIR) == (
        vocab.RUN_JSON, vocab.EPOCHS_FILE, vocab.CHECKPOINT_SUBDIR)
    assert rundir.ENERGY_SOURCES is vocab.ENERGY_SOURCES and rundir.RUN_STATUSES is vocab.RUN_STATUSES
    assert rundir.EpochRecord(0, 0, "n", 0, 0, 1.0, 1.0, 0.0, 0.0, 1, 1, False).gpu_energy_source in vocab.ENERGY_SOURCES
    assert fnmatch.fnmatch(vocab.allreduce_bench_file(4), vocab.ALLREDUCE_BENCH_GLOB)


def test_vocab_imports_nothing():
    # The launchers read it, and they must stay cheap to import.
    tree = ast.parse((ROOT / "common" / "vocab.py").read_text())
    imports = [n for n in ast.walk(tree) if isinstance(n, (ast.Import, ast.ImportFrom))]
    assert [getattr(n, "module", None) for n in imports] == ["__future__"]


def _shared_values() -> dict[object, str]:
    """Tuples/sets and file names of the vocabulary, mapped to their name in common.vocab."""
    out: dict[object, str] = {}
    for name, value in vars(vocab).items():
        if name.isupper() and isinstance(value, (tuple, frozenset)) and len(value) > 1:
            out[tuple(sorted(value))] = name
        elif name.endswith(("_FILE", "_JSON", "_SUBDIR", "_PREFIX", "_GLOB")) and isinstance(value, str):
            out[value] = name
    return out


def _module_constants(path: Path):
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.Assign) and all(isinstance(t, ast.Name) for t in node.targets):
            try:
                value = ast.literal_eval(node.value)
            except ValueError:
                continue
            yield node.lineno, node.targets[0].id, value


def test_no_module_defines_the_vocabulary_again():
    shared = _shared_values()
    found = []
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            if path == ROOT / "common" / "vocab.py":
                continue
            for line, name, value in _module_constants(path):
                key = tuple(sorted(value)) if isinstance(value, (tuple, frozenset, set)) else value
                if isinstance(key, (tuple, str)) and key in shared:
                    found.append(f"{path.relative_to(ROOT)}:{line}: {name} (use common.vocab.{shared[key]})")
    assert found == []


@pytest.mark.parametrize("value", [vocab.ENGINES, vocab.ENERGY_DOMAINS, vocab.CHECKPOINT_PREFIX])
def test_the_duplicate_finder_finds_a_copy(tmp_path, value):
    copy = tmp_path / "copy.py"
    copy.write_text(f"THING = {value!r}\n")
    shared = _shared_values()
    consts = list(_module_constants(copy))
    key = tuple(sorted(consts[0][2])) if isinstance(consts[0][2], tuple) else consts[0][2]
    assert key in shared
