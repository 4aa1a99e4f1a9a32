"""Momentum ranges (--momenta LO..HI): one syntax, validated, used by data, train, run, evaluate
and generate."""
from __future__ import annotations

import re

import numpy as np
import pytest

from bologan.config import DataConfig
from bologan.geometry import MOMENTA_MEV
from bologan.momenta import MomentumRange, canonical, parse_momentum_range, restrict
from common.errors import UserError
from common.settings import section_from_mapping


@pytest.mark.parametrize("text, lo, hi", [
    ("2^8..2^12", 256.0, 4096.0),
    ("4096..4194304", 4096.0, 4194304.0),
    (" 2^12 .. 4.2e6 ", 4096.0, 4.2e6),
    ("1024..1024", 1024.0, 1024.0),
])
def test_ranges_parse(text, lo, hi):
    assert parse_momentum_range(text) == MomentumRange(lo, hi)


@pytest.mark.parametrize("text, says", [
    ("4096", "not of the form LO..HI"),
    ("1..2..3", "not of the form"),
    ("a..2^4", "'a' is not a number or 2^K"),
    ("0..10", "not a positive finite momentum"),
    ("inf..inf", "not a positive finite momentum"),
    ("2^12..2^8", "the low end 4096 MeV is above the high end 256 MeV"),
])
def test_bad_ranges_say_why(text, says):
    with pytest.raises(ValueError, match=re.escape(says)):
        parse_momentum_range(text)


def test_the_photon_split_shares_4_gev_and_covers_the_grid():
    low, high = parse_momentum_range("2^8..2^12"), parse_momentum_range("2^12..2^22")
    assert low.select(MOMENTA_MEV) == [2.0 ** k for k in range(8, 13)]
    assert high.select(MOMENTA_MEV) == [2.0 ** k for k in range(12, 23)]
    assert bool(low.contains(4096.000001))      # a converted file's rounding stays in


def test_config_key_is_stored_in_mev_and_bad_values_name_the_key():
    assert section_from_mapping(DataConfig, {"momenta": "2^12..2^22"}, "x").momenta == "4096..4194304"
    assert canonical("") == "" and section_from_mapping(DataConfig, {}, "x").momenta == ""
    with pytest.raises(UserError, match=r"run.toml: \[data\]: momenta: '2\^12\.\.2\^8'"):
        section_from_mapping(DataConfig, {"momenta": "2^12..2^8"}, "run.toml: [data]")


def test_training_showers_are_restricted(tmp_path):
    from bologan.dataio import write_showers
    from bologan.pipeline import load_showers
    from bologan.synthetic import generate_showers

    synthetic = load_showers(DataConfig(synthetic_events=300, momenta="2^8..2^12"), "photons", 1)
    assert len(synthetic) == 300 and set(np.unique(synthetic.momentum_mev)) == {2.0 ** k for k in range(8, 13)}
    path = tmp_path / "all.parquet"
    write_showers(path, generate_showers("photons", 300, 2))
    high = load_showers(DataConfig(data=str(path), momenta="2^12..2^22"), "photons", 1)
    assert high.momentum_mev.min() == 4096.0 and len(high) < 300
    with pytest.raises(UserError, match=r"--momenta 5\.\.6: .*no shower with a momentum in 5\.\.6 MeV"):
        load_showers(DataConfig(data=str(path), momenta="5..6"), "photons", 1)
    with pytest.raises(UserError, match="holds none of the dataset-1 momenta"):
        load_showers(DataConfig(momenta="5..6"), "photons", 1)


def test_restrict_keeps_everything_without_a_range():
    class S:
        momentum_mev = np.array([256.0])
    s = S()
    assert restrict(s, None, "x") is s


def test_scaling_run_records_the_range_in_the_workload_hash():
    from scaling import run as scaling_run

    def workload(*argv):
        return scaling_run.workload_hash(scaling_run._resolve_config(scaling_run.parse_args(list(argv))))

    assert workload("--momenta", "2^12..2^22") == workload("--momenta", "4096..4194304")
    assert workload("--momenta", "2^12..2^22") != workload()
    assert workload("--momenta", "") == workload()


def test_a_run_scores_its_reference_file_on_its_momenta(tmp_path):
    from bologan.dataio import write_showers
    from bologan.synthetic import generate_showers
    from scaling.eval_config import EvalConfig
    from scaling.evaluation import training_and_reference

    path = tmp_path / "ref.parquet"
    write_showers(path, generate_showers("photons", 300, 2))
    cfg = EvalConfig(eval_every=1, reference=str(path))
    _, reference = training_and_reference(cfg, None, "photons", 1, "4096..4194304")
    assert reference.momentum_mev.min() == 4096.0
    _, everything = training_and_reference(cfg, None, "photons", 1)
    assert everything.momentum_mev.min() == 256.0
    with pytest.raises(UserError, match="no shower with a momentum in 5..6 MeV"):
        training_and_reference(cfg, None, "photons", 1, "5..6")
