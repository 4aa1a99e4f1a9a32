"""analysis.numbers: the report's numbers as people read them."""
from __future__ import annotations

import math

import numpy as np
import pytest

from analysis import numbers as nb
from analysis.report import fmt


@pytest.mark.parametrize("value, text", [
    (10860.4, "10,860"), (1.086e4, "10,860"), (1_000_000, "1,000,000"), (1.818, "1.82"), (0.0523, "0.0523"),
    (0.9996, "1"), (256.0, "256"), (-1234.5, "-1,234"), (0.0, "0"), (2.61e-05, "2.61e-05"),
    (math.nan, "n/a"), (None, "n/a"), (math.inf, "n/a"),
])
def test_significant(value, text):
    assert nb.significant(value) == text


@pytest.mark.parametrize("value, text", [(0.8512, "0.85"), (1.818, "1.8"), (0.909, "0.91"), (0.8, "0.8"),
                                         (12.4, "12"), (123.4, "123"), (0.0681, "0.068")])
def test_ratios_get_two_significant_digits(value, text):
    assert nb.ratio(value) == text


@pytest.mark.parametrize("seconds, text", [(35e-6, "35 µs"), (0.0523, "52.3 ms"), (55.0, "55 s"), (12.34, "12.3 s"),
                                           (600.0, "10 min"), (5400.0, "90 min"), (9000.0, "2.5 h")])
def test_durations_carry_their_unit(seconds, text):
    assert nb.duration(seconds) == text


@pytest.mark.parametrize("joules, text", [(850.0, "850 J"), (12345.0, "12.3 kJ"), (4.5e6, "4.5 MJ"), (2e9, "2 GJ")])
def test_energies_carry_their_unit(joules, text):
    assert nb.energy(joules) == text


def test_rates_percentages_powers_intervals():
    assert nb.rate(10860.4, "showers/s") == "10,860 showers/s"
    assert nb.rate(2.613, "showers/J") == "2.61 showers/J"
    assert nb.percent(0.2049) == "20 %" and nb.percent(0.0451) == "4.5 %"
    assert nb.power(160.0) == "160 W" and nb.power(1234.0) == "1.23 kW"
    assert nb.interval(0.8012, 0.9049) == "[0.8, 0.9]"
    assert nb.interval(math.nan, 1.0) == "n/a"
    assert nb.interval(55.0, 600.0, nb.duration) == "[55 s, 10 min]"
    assert nb.count(1e6) == "1,000,000" and nb.count(math.nan) == "n/a"


def test_table_cells():
    # fmt (every table cell of the report) is numbers.number.
    for value, text in [(True, "yes"), (np.bool_(False), "no"), (12800, "12,800"), (np.int64(3), "3"),
                        (np.float64(1.086e4), "10,860"), ("measured", "measured"), (math.nan, "n/a")]:
        assert nb.number(value) == text == fmt(value)
