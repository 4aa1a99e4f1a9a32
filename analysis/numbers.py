"""Numbers written for people: every number of the report goes through one of these.

- counts and large values keep every integer digit, with thousands separators: ``10,860``;
- other values get a few significant digits and never an exponent between 1e-3 and 1e15;
- ratios (efficiencies, speedups, fractions) get two significant digits: ``0.85``, ``1.7``;
- times, energies and powers carry the unit that keeps them readable: ``52.3 ms``, ``4.5 min``,
  ``12.3 kJ``, ``1.2 kW``.

Missing values (None, NaN) read ``n/a``. The tables (CSV/Parquet) keep full precision.
"""
from __future__ import annotations

import math
from typing import Any, Callable

MISSING = "n/a"
RATIO_DIGITS = 2
DIGITS = 3

# (limit, divisor, unit): the first row whose limit exceeds |value| is used.
_TIME_UNITS = ((1e-3, 1e-6, "µs"), (1.0, 1e-3, "ms"), (120.0, 1.0, "s"), (7200.0, 60.0, "min"),
               (math.inf, 3600.0, "h"))
_ENERGY_UNITS = ((1e3, 1.0, "J"), (1e6, 1e3, "kJ"), (1e9, 1e6, "MJ"), (math.inf, 1e9, "GJ"))
_POWER_UNITS = ((1e3, 1.0, "W"), (1e6, 1e3, "kW"), (math.inf, 1e6, "MW"))


def is_finite(value: Any) -> bool:
    """Whether ``value`` is a finite number (NaN, None, text and infinities are not)."""
    return _finite(value) is not None


def _finite(value: Any) -> float | None:
    """``value`` as a float, None when it is missing or not a finite number."""
    if value is None or isinstance(value, bool):
        return None
    try:
        f = float(value)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


def significant(value: Any, digits: int = DIGITS) -> str:
    """At least ``digits`` significant digits, every integer digit kept, separators, no trailing
    zeros: 0.0523 -> '0.0523', 1.818 -> '1.82', 10860.4 -> '10,860'; below 1e-3: '2.61e-05'."""
    f = _finite(value)
    if f is None:
        return MISSING
    if f == 0:
        return "0"
    if abs(f) < 1e-3:
        return f"{f:.{digits - 1}e}"
    decimals = max(digits - 1 - math.floor(math.log10(abs(f))), 0)
    text = f"{f:,.{decimals}f}"
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return "0" if text in ("-0", "") else text


def count(value: Any) -> str:
    """A whole number with thousands separators: 1000000 -> '1,000,000'."""
    f = _finite(value)
    return MISSING if f is None else f"{round(f):,}"


def ratio(value: Any, digits: int = RATIO_DIGITS) -> str:
    """An efficiency, speedup or fraction: 0.8512 -> '0.85', 1.818 -> '1.8'."""
    return significant(value, digits)


def percent(fraction: Any) -> str:
    """A fraction as a percentage, two significant digits: 0.2049 -> '20 %', 0.0451 -> '4.5 %'."""
    f = _finite(fraction)
    return MISSING if f is None else f"{significant(100 * f, RATIO_DIGITS)} %"


def _scaled(value: Any, units: tuple, digits: int) -> str:
    f = _finite(value)
    if f is None:
        return MISSING
    for limit, divisor, unit in units:
        if abs(f) < limit:
            return f"{significant(f / divisor, digits)} {unit}"
    raise AssertionError("the last unit has an infinite limit")


def duration(seconds: Any, digits: int = DIGITS) -> str:
    """A time in the unit that reads best: 0.0523 -> '52.3 ms', 55 -> '55 s', 600 -> '10 min'."""
    return _scaled(seconds, _TIME_UNITS, digits)


def energy(joules: Any, digits: int = DIGITS) -> str:
    """An energy: 850 -> '850 J', 12345 -> '12.3 kJ', 4.5e6 -> '4.5 MJ'."""
    return _scaled(joules, _ENERGY_UNITS, digits)


def power(watts: Any, digits: int = DIGITS) -> str:
    """A power: 160 -> '160 W', 1234 -> '1.23 kW'."""
    return _scaled(watts, _POWER_UNITS, digits)


def rate(value: Any, unit: str, digits: int = DIGITS) -> str:
    """A rate with its unit: 10860.4 showers/s -> '10,860 showers/s', 2.613 -> '2.61 showers/J'."""
    f = _finite(value)
    return MISSING if f is None else f"{significant(f, digits)} {unit}"


def interval(low: Any, high: Any, how: Callable[[Any], str] = ratio) -> str:
    """A confidence interval written with ``how``: '[0.8, 0.9]'; 'n/a' when a bound is missing."""
    if _finite(low) is None or _finite(high) is None:
        return MISSING
    return f"[{how(low)}, {how(high)}]"


def number(value: Any, digits: int = DIGITS) -> str:
    """Any table cell: None/NaN 'n/a', booleans 'yes'/'no', integers with separators, other
    numbers with ``significant``; text as it is."""
    if value is None:
        return MISSING
    kind = getattr(getattr(value, "dtype", None), "kind", "")
    if isinstance(value, bool) or kind == "b":
        return "yes" if bool(value) else "no"
    if isinstance(value, int) or kind in ("i", "u"):
        return f"{int(value):,}"
    if isinstance(value, float) or kind == "f":
        return significant(value, digits)
    return str(value)
