"""The one command-line helper every entry point uses.

- ``Parser``: argparse whose usage errors are one line, ``error: PROG: MESSAGE (see --help)``, and
  exit code 2 (through ``common.errors.main_guard``, or any caller that catches ``UserError``),
  never a usage dump; ``--help`` shows each option's default and the module's example.
- ``comma_list``: the one parser for comma-separated values (``--nodes 1,2,4``).
- ``add_json_flag``: the same ``--json`` flag on every benchmark mode.
"""
from __future__ import annotations

import argparse
from typing import Callable, Sequence, TypeVar

from common.errors import UserError

T = TypeVar("T")


class HelpFormatter(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    """Keeps the hand-made line breaks of descriptions and examples, and shows defaults."""


class Parser(argparse.ArgumentParser):
    """argparse for every ``python -m ...`` entry point.

    ``doc`` is the module docstring: its first paragraph is the description, the rest (usually
    the example) is printed after the options.
    """

    def __init__(self, prog: str, doc: str | None = None, epilog: str | None = None, **kwargs):
        text = (doc or "").strip()
        description, _, rest = text.partition("\n\n")
        kwargs.setdefault("formatter_class", HelpFormatter)
        super().__init__(prog=prog, description=description or None,
                         epilog=epilog if epilog is not None else (rest or None), **kwargs)

    def error(self, message: str):  # type: ignore[override]
        raise UserError(f"{self.prog}: {message} (see --help)")


def comma_list(item: Callable[[str], T], what: str = "value") -> Callable[[str], list[T]]:
    """An argparse ``type`` for ``A,B,C``: each item converted by ``item``; empty items and an
    empty list are refused with a message naming ``what`` and the bad item."""

    def parse(text: str) -> list[T]:
        parts = [p.strip() for p in text.split(",")]
        if not text.strip() or any(not p for p in parts):
            raise argparse.ArgumentTypeError(f"expected a comma-separated list of {what}s, got {text!r}")
        out = []
        for p in parts:
            try:
                out.append(item(p))
            except (ValueError, argparse.ArgumentTypeError) as exc:
                detail = str(exc) if isinstance(exc, argparse.ArgumentTypeError) else f"not a {what}"
                raise argparse.ArgumentTypeError(f"{p!r} in {text!r}: {detail}") from None
        return out

    parse.__name__ = f"{what} list"   # argparse names the type in its own messages
    return parse


def positive_int(text: str) -> int:
    """An argparse ``type``: an integer >= 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {text!r}")
    return value


def add_json_flag(parser: argparse.ArgumentParser, what: str = "the result") -> None:
    """``--json``: print ``what`` as one JSON object on stdout instead of text."""
    parser.add_argument("--json", action="store_true", help=f"print {what} as JSON on stdout")

