"""A quality target for training, ``METRIC<=VALUE`` (``--target chi2_ndf<=5``, ``--target fpd<=150``:
CaloChallenge's FPD x 10^3, the published table's scale).

The metric is an eval.parquet score column (``common.vocab.EVAL_TARGET_METRICS``, which also
says whether lower or higher is better); the comparison must be the one that reads "good
enough" for it, so ``chi2_ndf>=5`` (met by the worst checkpoint) is refused rather than obeyed.
A target is met at the first evaluation whose value satisfies it; NaN never does.

Imports nothing heavy: ``scaling``, ``analysis`` and the launchers parse the same flag.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any

from common.errors import UserError
from common.vocab import EVAL_TARGET_METRICS

LOWER_IS_BETTER = "<="
HIGHER_IS_BETTER = ">="
COMPARISONS = (LOWER_IS_BETTER, HIGHER_IS_BETTER)

_SYNTAX = re.compile(r"^\s*([A-Za-z_][A-Za-z0-9_]*)\s*(<=|>=)\s*(\S+)\s*$")


@dataclass(frozen=True)
class Target:
    """``metric`` must reach ``value`` in the direction ``comparison`` (``<=`` or ``>=``)."""
    metric: str
    comparison: str
    value: float

    @property
    def text(self) -> str:
        """As typed on the command line: ``chi2_ndf<=5``."""
        return f"{self.metric}{self.comparison}{self.value:g}"

    @property
    def lower_is_better(self) -> bool:
        return self.comparison == LOWER_IS_BETTER

    def met(self, value: float) -> bool:
        """Whether a score meets the target (NaN never does; +inf never meets ``<=``)."""
        v = float(value)
        if math.isnan(v):
            return False
        return v <= self.value if self.lower_is_better else v >= self.value

    def best(self, values: Any) -> float:
        """The best of ``values`` in this target's direction; NaN when none is a number."""
        finite = [float(v) for v in values if not math.isnan(float(v))]
        if not finite:
            return math.nan
        return min(finite) if self.lower_is_better else max(finite)

    def to_json(self) -> dict[str, Any]:
        """The form stored in run.json."""
        return {"metric": self.metric, "comparison": self.comparison, "value": self.value, "text": self.text}

    @classmethod
    def from_json(cls, data: Any, where: str = "target") -> "Target":
        if not isinstance(data, dict):
            raise UserError(f"{where}: expected an object with metric, comparison and value")
        try:
            return parse_target(f"{data['metric']}{data['comparison']}{data['value']}", where)
        except KeyError as exc:
            raise UserError(f"{where}: missing key {exc.args[0]!r}") from None


def _valid_metrics() -> str:
    return ", ".join(EVAL_TARGET_METRICS)


def parse_target(text: str, flag: str = "--target") -> Target:
    """``METRIC<=VALUE`` or ``METRIC>=VALUE`` -> Target; anything else is a one-line ``UserError``
    that names ``flag`` and lists the metrics."""
    m = _SYNTAX.match(text or "")
    if m is None:
        raise UserError(f"{flag} {text!r}: expected METRIC<=VALUE, e.g. chi2_ndf<=5 (metrics: {_valid_metrics()})")
    metric, comparison, raw = m.groups()
    if metric not in EVAL_TARGET_METRICS:
        raise UserError(f"{flag} {text!r}: unknown metric {metric!r} (metrics: {_valid_metrics()})")
    try:
        value = float(raw)
    except ValueError:
        raise UserError(f"{flag} {text!r}: {raw!r} is not a number") from None
    if not math.isfinite(value):
        raise UserError(f"{flag} {text!r}: the value must be a finite number")
    wanted = EVAL_TARGET_METRICS[metric]
    if comparison != wanted:
        better = "lower" if wanted == LOWER_IS_BETTER else "higher"
        raise UserError(f"{flag} {text!r}: {better} {metric} is better, write {metric}{wanted}{raw}")
    return Target(metric=metric, comparison=comparison, value=value)


def target_argument(flag: str = "--target"):
    """An argparse ``type`` for the flag (its errors are the same one line)."""
    return lambda text: parse_target(text, flag)
