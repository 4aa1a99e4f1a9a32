"""A study's ``[variants]``: named overrides of the training settings, each run as its own series.

    [variants]
    b32 = { batch_size = 32 }
    b128-xla = { batch_size = 128, xla = true }
    b128-bf16 = { batch_size = 128, precision = "bf16" }

Every variant runs at every (N, mode, engine) point of the study, interleaved with the repeats
(repeat 1 of every variant, then repeat 2, ...), into ``<point>-<name>/``; scaling.run records
the name (``--variant``) and the analysis labels the variant's series with it. A variant may
set any ``[run]`` key, ``batch_size`` (both the strong-scaling global batch and the weak-scaling
per-rank batch, which coincide on one rank), or these scaling.run settings: ``xla``,
``precision``, ``prefetch``, ``steps_per_call``, ``inter_op_threads``. Anything else is an error
naming the variant and the key, found when the study file is read.
"""
from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass, field
from typing import Any, Mapping

from common.errors import UserError
from common.vocab import PRECISIONS
from launch.common import NAME_PATTERN, check_name
from launch.runargs import RunSettings

# scaling.run settings a variant may change beyond [run]: key -> (type, flag, allowed values).
EXTRA_KEYS: dict[str, tuple[type, str, tuple[Any, ...]]] = {
    "xla": (bool, "--xla", ()),
    "precision": (str, "--precision", PRECISIONS),
    "prefetch": (int, "--prefetch", ()),
    "steps_per_call": (int, "--steps-per-call", ()),
    "inter_op_threads": (int, "--inter-op-threads", ()),
}
BATCH_KEY = "batch_size"


@dataclass(frozen=True)
class Variant:
    """One named variant: its [run] overrides and the extra scaling.run settings."""
    name: str
    run_overrides: dict[str, Any] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)

    def run_settings(self, base: RunSettings) -> RunSettings:
        """``base`` with this variant's [run] keys replaced (checked again as a whole)."""
        run = dataclasses.replace(base, **self.run_overrides)
        try:
            run.check()
        except ValueError as exc:
            raise UserError(f"[variants] {self.name}: {exc}") from None
        return run

    def extra_args(self) -> list[str]:
        """scaling.run flags of the extra settings, then ``--variant NAME``."""
        args: list[str] = []
        for key, value in self.extra.items():
            _tp, flag, _choices = EXTRA_KEYS[key]
            if isinstance(value, bool):
                args.append(flag if value else "--no-" + flag[2:])
            else:
                args += [flag, str(value)]
        return args + ["--variant", self.name]

    def describe(self) -> str:
        items = {**self.run_overrides, **self.extra}
        return ", ".join(f"{k}={v}" for k, v in items.items()) or "study settings unchanged"


def _run_types() -> dict[str, Any]:
    return typing.get_type_hints(RunSettings)


def _typed(name: str, key: str, value: Any, tp: Any) -> Any:
    if tp is bool:
        ok = isinstance(value, bool)
    elif tp is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif tp is float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    else:
        ok = isinstance(value, tp)
    if not ok:
        raise UserError(f"[variants] {name}: {key} must be {getattr(tp, '__name__', tp)}, got {value!r}")
    return float(value) if tp is float else value


def parse_variants(table: Any, where: str) -> list[Variant]:
    """The variants of a ``[variants]`` table, in file order; ``where`` names the file in errors."""
    if table is None:
        return []
    if not isinstance(table, Mapping):
        raise UserError(f"{where}: [variants] must be a table of named variants, e.g. b32 = {{ batch_size = 32 }}")
    types = _run_types()
    allowed = sorted([BATCH_KEY, *EXTRA_KEYS, *(k for k in types if k != "threads")] + ["threads"])
    out = []
    for name, overrides in table.items():
        try:
            check_name(name, "variant name")
        except UserError as exc:
            raise UserError(f"{where}: [variants] {exc} ({NAME_PATTERN})") from None
        if not isinstance(overrides, Mapping):
            raise UserError(f"{where}: [variants] {name} must be a table of settings, e.g. {name} = {{ xla = true }}")
        run_over: dict[str, Any] = {}
        extra: dict[str, Any] = {}
        for key, value in overrides.items():
            if key == BATCH_KEY:
                batch = _typed(name, key, value, int)
                run_over.update(global_batch=batch, batch_per_rank=batch)
            elif key in EXTRA_KEYS:
                tp, _flag, choices = EXTRA_KEYS[key]
                extra[key] = _typed(name, key, value, tp)
                if choices and value not in choices:
                    raise UserError(f"{where}: [variants] {name}: {key} {value!r} is not one of {', '.join(choices)}")
                if tp is int and value < (1 if key in ("steps_per_call", "inter_op_threads") else 0):
                    raise UserError(f"{where}: [variants] {name}: {key} must be >= "
                                    f"{1 if key != 'prefetch' else 0}, got {value}")
            elif key in types:
                run_over[key] = _typed(name, key, value, types[key])
            else:
                raise UserError(f"{where}: [variants] {name}: unknown key {key!r} (allowed: {', '.join(allowed)})")
        out.append(Variant(name, run_over, extra))
    return out


def check_variants(variants: list[Variant], base: RunSettings) -> None:
    """Every variant's settings are valid as a whole (e.g. its batch splits over the ranks)."""
    for v in variants:
        v.run_settings(base)


def load_variants(profile: str | None, config: str | None) -> list[Variant]:
    """The ``[variants]`` of the study's files: the --config file's table when it has one, else
    the profile's (a file naming variants replaces the profile's list, it does not add to it)."""
    from common.settings import load_toml

    found: list[Variant] = []
    for path in (profile, config):
        if path is None:
            continue
        data = load_toml(path)
        if "variants" in data:
            found = parse_variants(data["variants"], str(path))
    return found
