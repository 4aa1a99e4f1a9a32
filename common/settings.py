"""Validated configuration: dataclass sections, TOML files and CLI flags of the same names.

Precedence: defaults in code < TOML file (``--config``) < command-line flags. Every field of
every section is also a flag (``train.batch_size`` <-> ``--batch-size``), so field names are
unique across the sections an entry point uses. Unknown or ill-typed keys are ``UserError``.

A field may carry ``metadata={"help": ..., "choices": (...), "range": Range(...)}``; a section
may define ``check(self) -> None`` raising ``ValueError`` for cross-field rules. Every float
(TOML value or flag) must be finite, and every number within its field's ``range``: a NaN
learning rate would otherwise train a run of NaNs without a word.
"""
from __future__ import annotations

import argparse
import dataclasses
import math
import tomllib
import typing
from pathlib import Path
from typing import Any, Mapping

from common.cli import comma_list
from common.errors import UserError

MISSING = object()


@dataclasses.dataclass(frozen=True)
class Range:
    """The values a number field allows (its ``metadata["range"]``); a bound of None is none.

    ``Range(0, 1, high_open=True)`` is [0, 1); ``Range(0, low_open=True)`` is > 0.
    """
    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False

    def __contains__(self, value: float) -> bool:
        if self.low is not None and (value <= self.low if self.low_open else value < self.low):
            return False
        return not (self.high is not None and (value >= self.high if self.high_open else value > self.high))

    def __str__(self) -> str:
        if self.high is None:
            return "any number" if self.low is None else f"{'>' if self.low_open else '>='} {self.low:g}"
        if self.low is None:
            return f"{'<' if self.high_open else '<='} {self.high:g}"
        return (f"in {'(' if self.low_open else '['}{self.low:g}, {self.high:g}"
                f"{')' if self.high_open else ']'}")


POSITIVE = Range(0, low_open=True)
NON_NEGATIVE = Range(0)


def number_problem(value: Any, rng: Range | None) -> str | None:
    """Why ``value`` is not an allowed number ('must be ...'), or None (non-numbers: None)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    if isinstance(value, float) and not math.isfinite(value):
        return f"must be a finite number, got {value!r}"
    if rng is not None and value not in rng:
        return f"must be {rng}, got {value!r}"
    return None


def field_problems(obj: Any) -> list[tuple[str, str]]:
    """(field name, problem) for every number field of section ``obj`` (list items too) that is
    not finite or outside its ``range``."""
    out = []
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        for item in (value if isinstance(value, list) else [value]):
            problem = number_problem(item, f.metadata.get("range"))
            if problem:
                out.append((f.name, problem))
                break
    return out


def check_ranges(obj: Any) -> None:
    """Raise ``ValueError`` naming the first number field of ``obj`` that is not allowed."""
    problems = field_problems(obj)
    if problems:
        name, problem = problems[0]
        raise ValueError(f"{name} {problem}")


def _field_types(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _coerce(value: Any, tp: Any, where: str) -> Any:
    """Check ``value`` against type ``tp``; ints are accepted where floats are expected."""
    origin = typing.get_origin(tp)
    if origin is list:
        (item_tp,) = typing.get_args(tp)
        if not isinstance(value, list):
            raise UserError(f"{where}: expected a list, got {type(value).__name__}")
        return [_coerce(v, item_tp, f"{where}[{i}]") for i, v in enumerate(value)]
    if tp is bool:
        if not isinstance(value, bool):
            raise UserError(f"{where}: expected true or false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise UserError(f"{where}: expected an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise UserError(f"{where}: expected a number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise UserError(f"{where}: expected a string, got {value!r}")
        return value
    raise TypeError(f"unsupported config field type {tp!r} at {where}")


def section_from_mapping(cls: type, data: Mapping[str, Any], where: str) -> Any:
    """Build section ``cls`` from ``data``; ``where`` prefixes messages (e.g. 'run.toml: [train]')."""
    if not isinstance(data, Mapping):
        raise UserError(f"{where}: expected a table of keys")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    types = _field_types(cls)
    kwargs: dict[str, Any] = {}
    for key, value in data.items():
        if key not in fields:
            known = ", ".join(sorted(fields))
            raise UserError(f"{where}: unknown key '{key}' (known keys: {known})")
        value = _coerce(value, types[key], f"{where}.{key}")
        choices = fields[key].metadata.get("choices")
        retired = fields[key].metadata.get("retired", {})
        if isinstance(value, str) and value in retired:
            raise UserError(f"{where}.{key}: {value!r} is no longer accepted ({retired[value]})")
        if choices is not None and value not in choices:
            raise UserError(f"{where}.{key}: {value!r} is not one of {', '.join(map(str, choices))}")
        kwargs[key] = value
    obj = cls(**kwargs)
    problems = field_problems(obj)
    if problems:
        name, problem = problems[0]
        raise UserError(f"{where}.{name}: {problem}")
    check = getattr(obj, "check", None)
    if check is not None:
        try:
            check()
        except ValueError as exc:
            raise UserError(f"{where}: {exc}") from None
    return obj


def load_toml(path: str | Path) -> dict[str, Any]:
    """Read a TOML file; a missing, unreadable or malformed file is a ``UserError``."""
    p = Path(path)
    try:
        with p.open("rb") as fh:
            return tomllib.load(fh)
    except FileNotFoundError:
        raise UserError(f"{p}: file not found") from None
    except OSError as exc:
        raise UserError(f"{p}: cannot read ({exc.strerror})") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise UserError(f"{p}: invalid TOML ({exc})") from None


def flag_name(field_name: str) -> str:
    return "--" + field_name.replace("_", "-")


def add_section_arguments(parser: argparse.ArgumentParser, sections: Mapping[str, type]) -> None:
    """Add one flag per field of every section; flags default to 'not given'."""
    for section, cls in sections.items():
        group = parser.add_argument_group(f"[{section}] settings (flags override the config file)")
        types = _field_types(cls)
        for f in dataclasses.fields(cls):
            tp = types[f.name]
            default = f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[misc]
            help_text = f.metadata.get("help", "")
            if "(default" not in help_text:   # a help text may say its default in words
                if isinstance(default, list):   # shown as it is typed: 1,2,4
                    shown = ",".join(map(str, default)) or "empty"
                else:
                    shown = repr(default)
                help_text = f"{help_text} (default: {shown})".strip()
            help_text = help_text.replace("%", "%%")   # argparse %-formats help texts
            kwargs: dict[str, Any] = {"dest": f"{section}.{f.name}", "default": argparse.SUPPRESS,
                                      "help": help_text}
            if tp is bool:
                kwargs["action"] = argparse.BooleanOptionalAction
            elif typing.get_origin(tp) is list:
                kwargs["metavar"] = "A,B,..."
                kwargs["type"] = _list_parser(typing.get_args(tp)[0], flag_name(f.name))
            else:
                kwargs["type"] = _scalar_parser(tp, flag_name(f.name), f.metadata.get("range"))
                if "choices" in f.metadata:
                    kwargs["choices"] = f.metadata["choices"]
            group.add_argument(flag_name(f.name), **kwargs)


def _scalar_parser(tp: Any, flag: str, rng: Range | None = None):
    def parse(text: str):
        try:
            value = tp(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{flag}: {text!r} is not a valid {tp.__name__}") from None
        problem = number_problem(value, rng)
        if problem:
            raise argparse.ArgumentTypeError(f"{flag} {problem}")
        return value

    return parse


def _list_parser(item_tp: Any, flag: str):
    # An empty flag value is an empty list: some lists mean "none" when empty (extra mpirun arguments).
    return comma_list(_scalar_parser(item_tp, flag), item_tp.__name__, allow_empty=True)


def resolve_sections(sections: Mapping[str, type], config_path: str | Path | None,
                     args: argparse.Namespace | None = None,
                     overrides: Mapping[str, Mapping[str, Any]] | None = None,
                     profile: str | Path | None = None,
                     read_by_caller: tuple[str, ...] = ()) -> dict[str, Any]:
    """Defaults < ``profile`` < TOML file < ``overrides`` < parsed CLI flags; returns {section: instance}.

    ``profile`` is a TOML file of the same layout that a tool ships as its usual settings (the
    local study's), so a user's file needs to name only what it changes. Tables named in
    ``read_by_caller`` are allowed in the files and left to the caller (e.g. a sweep's
    ``[campaign]``, whose member list is not a section of flags).
    """
    merged: dict[str, dict[str, Any]] = {name: {} for name in sections}
    source = "config"
    for path in (profile, config_path):
        if path is None:
            continue
        source = str(path)
        data = load_toml(path)
        for name, table in data.items():
            if name in read_by_caller:
                continue
            if name not in sections:
                known = ", ".join(f"[{s}]" for s in sections)
                raise UserError(f"{source}: unknown section [{name}] (known sections: {known})")
            if not isinstance(table, dict):
                raise UserError(f"{source}: '{name}' must be a table [{name}]")
            merged[name].update(table)
    for name, table in (overrides or {}).items():
        merged[name].update(table)
    if args is not None:
        for dest, value in vars(args).items():
            if "." in dest:
                name, key = dest.split(".", 1)
                if name in merged:
                    merged[name][key] = value
    return {name: section_from_mapping(cls, merged[name], f"{source}: [{name}]")
            for name, cls in sections.items()}


def sections_to_dict(resolved: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """The resolved configuration as plain TOML/JSON-compatible tables."""
    return {name: dataclasses.asdict(obj) for name, obj in resolved.items()}
