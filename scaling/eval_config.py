"""The [eval] section: quality evaluation while training, the quality target, TensorBoard.

With ``eval_every`` > 0, scaling.run evaluates the model at the end of every epoch in which the
iteration count crossed a multiple of ``eval_every`` (an epoch is never cut for it). The
reference is ``reference`` (a Parquet or CaloChallenge HDF5 shower file), or else a held-out
``holdout_fraction`` of the training showers, split off per momentum before training and never
trained on. In an ensemble every member evaluates its own GAN against its own reference (the
held-out part of its own data, or the shared ``reference``) and ``target`` applies to every member.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from common.errors import UserError
from common.settings import Range
from common.target import Target, parse_target

DEFAULT_HOLDOUT_FRACTION = 0.1
DEFAULT_SHOWERS_PER_MOMENTUM = 500


@dataclass
class EvalConfig:
    eval_every: int = field(default=0, metadata={
        "help": "evaluate at the end of each epoch in which the iteration count crossed a multiple of this "
                "(0 = never)"})
    reference: str = field(default="", metadata={
        "help": "reference showers (Parquet or CaloChallenge HDF5); empty = a held-out part of the training data"})
    holdout_fraction: float = field(default=DEFAULT_HOLDOUT_FRACTION, metadata={
        "help": "without --reference: fraction of the training showers (per momentum) held out as the reference, "
                "never trained on", "range": Range(0, 1, low_open=True, high_open=True)})
    showers_per_momentum: int = field(default=DEFAULT_SHOWERS_PER_MOMENTUM, metadata={
        "help": "showers generated per reference momentum at each evaluation"})
    fpd_kpd: bool = field(default=True, metadata={
        "help": "compute CaloChallenge's FPD and KPD at each evaluation: seconds of one core whatever the "
                "number of showers (fixed batches of 10,000-50,000 drawn with replacement); "
                "--no-fpd-kpd leaves them NaN"})
    target: str = field(default="", metadata={
        "help": "quality target METRIC<=VALUE, e.g. chi2_ndf_overflow<=5 or fpd<=150 (FPD x 10^3, as "
                "CaloChallenge publishes it) (empty = none)"})
    stop_at_target: bool = field(default=False, metadata={
        "help": "end the run (exit 0, status target_reached) at the first evaluation that meets --target "
                "(--mode ensemble: once every member has met it; until then all members train on)"})
    tensorboard: bool = field(default=True, metadata={
        "help": "write TensorBoard scalars (losses, showers/s, every metric) to <run>/tensorboard/ on rank 0"})

    def check(self) -> None:
        if self.eval_every < 0:
            raise ValueError("eval_every must be >= 0 (0 = never)")
        if self.showers_per_momentum < 1:
            raise ValueError("showers_per_momentum must be >= 1")
        if self.target:
            try:
                parse_target(self.target, "target")
            except UserError as exc:
                raise ValueError(str(exc)) from None
            if not self.fpd_kpd and self.quality_target.metric in ("fpd", "kpd"):
                raise ValueError(f"target {self.target!r} needs FPD/KPD, which fpd_kpd = false turns off")
        if self.stop_at_target and not self.target:
            raise ValueError("stop_at_target needs a target (--target METRIC<=VALUE)")
        if self.stop_at_target and self.eval_every < 1:
            raise ValueError("stop_at_target needs evaluations (--eval-every ITERATIONS)")

    @property
    def enabled(self) -> bool:
        return self.eval_every > 0

    @property
    def quality_target(self) -> Target | None:
        return parse_target(self.target, "target") if self.target else None

    def due(self, iterations_before: int, iterations_after: int) -> bool:
        """Whether an epoch that took the count from ``iterations_before`` to ``iterations_after``
        crossed (or reached) a multiple of ``eval_every``."""
        return self.enabled and iterations_after // self.eval_every > iterations_before // self.eval_every
