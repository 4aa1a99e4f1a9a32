"""The one command-line helper every entry point uses.

- ``Parser``: argparse whose usage errors are one line, ``error: PROG: MESSAGE (see --help)``, and
  exit code 2 (through ``common.errors.main_guard``, or any caller that catches ``UserError``),
  never a usage dump; ``--help`` shows each option's default and the module's example.
- ``comma_list``: the one parser for comma-separated values (``--nodes 1,2,4``).
- ``positive_int``: an integer >= 1.
- ``add_json_flag``: the same ``--json`` flag on every benchmark mode.
"""
from __future__ import annotations

import argparse
from typing import Callable, TypeVar

from common.errors import UserError

T = TypeVar("T")


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Keeps the hand-made line breaks of descriptions and examples, and appends
    ``(default: X)`` to an option's help.

    Unlike ``argparse.ArgumentDefaultsHelpFormatter`` it says nothing where a default carries no
    information (``None``, ``False`` of an on/off flag, an empty list, a suppressed default) and
    leaves alone a help text that already states its default in words.
    """

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        default = action.default
        if "(default" in text.lower() or "%(default)" in text:
            return text
        if default is None or default is False or default is argparse.SUPPRESS or default == []:
            return text
        if not (action.option_strings or action.nargs in (argparse.OPTIONAL, argparse.ZERO_OR_MORE)):
            return text
        if isinstance(default, (list, tuple)):   # shown as it is typed: 1,2,4
            shown = ",".join(map(str, default)).replace("%", "%%")
            return f"{text} (default: {shown})".strip()
        return f"{text} (default: %(default)s)".strip()


class Parser(argparse.ArgumentParser):
    """argparse for every ``python -m ...`` entry point.

    ``doc`` is the module docstring: its first paragraph is the description, the rest (usually
    the example) is printed after the options. An explicit ``description`` or ``epilog`` wins.
    Sub-commands made with ``add_subparsers`` are ``Parser`` too.
    """

    def __init__(self, prog: str | None = None, doc: str | None = None, *,
                 description: str | None = None, epilog: str | None = None, **kwargs):
        first, _, rest = (doc or "").strip().partition("\n\n")
        kwargs.setdefault("formatter_class", HelpFormatter)
        super().__init__(prog=prog,
                         description=description if description is not None else (first or None),
                         epilog=epilog if epilog is not None else (rest or None), **kwargs)

    def error(self, message: str):  # type: ignore[override]
        one_line = " ".join(message.split())
        raise UserError(f"{self.prog}: {one_line} (see --help)")


def _a(word: str) -> str:
    return f"an {word}" if word[:1].lower() in "aeiou" else f"a {word}"


def comma_list(item: Callable[[str], T], what: str = "value", *,
               allow_empty: bool = False) -> Callable[[str], list[T]]:
    """An argparse ``type`` for ``A,B,C``: each item stripped and converted by ``item``.

    Empty items are skipped (``"1,2,"`` is ``[1, 2]``); a list with no item at all is refused
    unless ``allow_empty`` (then ``""`` is ``[]``, for settings where an empty list means
    "none"). An item that ``item`` refuses with ``ValueError`` is reported as ``'x' is not a
    WHAT``; an ``argparse.ArgumentTypeError`` from ``item`` keeps its own message.
    """

    def parse(text: str) -> list[T]:
        parts = [p.strip() for p in text.split(",")]
        parts = [p for p in parts if p]
        if not parts:
            if allow_empty:
                return []
            raise argparse.ArgumentTypeError(
                f"empty list {text!r}: expected comma-separated items, each {_a(what)}")
        out = []
        for p in parts:
            try:
                out.append(item(p))
            except argparse.ArgumentTypeError:
                raise
            except (ValueError, TypeError):
                raise argparse.ArgumentTypeError(f"{p!r} is not {_a(what)}") from None
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
