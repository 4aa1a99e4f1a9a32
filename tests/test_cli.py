"""``common.cli``: one-line usage errors with exit 2, defaults and examples in ``--help``, the
comma-list parser; and every ``python -m`` entry point built on it."""
from __future__ import annotations

import argparse
import importlib

import pytest

from common.cli import Parser, add_json_flag, comma_list, positive_int
from common.errors import UserError, main_guard

DOC = """Do one thing.

example:
  python -m tool --count 3
      --wide
"""

# (module run by ``python -m``, its prog name): every entry point of the project.
ENTRY_POINTS = [
    ("bologan.data", "bologan.data"), ("bologan.train", "bologan.train"),
    ("bologan.evaluate", "bologan.evaluate"), ("bologan.generate", "bologan.generate"),
    ("bologan.export", "bologan.export"), ("bologan.comparison", "bologan.comparison"),
    ("bologan.bench", "bologan.bench"),
    ("energy.monitor", "energy.monitor"), ("energy.overhead", "energy.overhead"),
    ("analysis.__main__", "analysis"), ("launch.study", "launch.study"), ("launch.sweep", "launch.sweep"),
    ("launch.testcluster", "launch.testcluster"), ("scaling.allreduce_bench", "scaling.allreduce_bench"),
    ("scaling.run", "scaling.run"),
]


def _parser() -> Parser:
    p = Parser("python -m tool", DOC)
    p.add_argument("--count", type=positive_int, default=3, help="how many")
    p.add_argument("--name", help="a name")
    p.add_argument("--wide", action="store_true", help="wide output")
    p.add_argument("--sizes", type=comma_list(int, "integer"), default=[1, 2, 4], help="sizes")
    p.add_argument("--tags", action="append", default=[], help="a tag; repeatable")
    p.add_argument("--out", default="x", help="output (default: next to the input)")
    add_json_flag(p)
    return p


def test_help_shows_informative_defaults_and_the_example(capsys):
    with pytest.raises(SystemExit) as exc:
        _parser().parse_args(["--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert "how many (default: 3)" in out
    assert "sizes (default: 1,2,4)" in out                     # as it is typed on the command line
    assert "(default: None)" not in out and "(default: False)" not in out and "(default: [])" not in out
    assert "output (default: next to the input)" in out and "(default: x)" not in out   # said in words
    assert out.index("Do one thing.") < out.index("options:") < out.index("example:")
    assert "  python -m tool --count 3\n      --wide\n" in out     # the example's own line breaks


def test_usage_error_is_a_one_line_user_error():
    with pytest.raises(UserError) as exc:
        _parser().parse_args(["--count", "0"])
    message = str(exc.value)
    assert message.startswith("python -m tool: argument --count:") and message.endswith("(see --help)")
    assert "\n" not in message


def test_usage_error_through_main_guard_is_exit_2_with_one_line(capsys):
    @main_guard
    def main(argv):
        _parser().parse_args(argv)

    assert main(["--no-such-flag"]) == 2
    err = capsys.readouterr().err
    assert err == "error: python -m tool: unrecognized arguments: --no-such-flag (see --help)\n"


def test_sub_commands_are_parsers_too():
    p = Parser("python -m tool")
    sub = p.add_subparsers(dest="command", required=True)
    sub.add_parser("go", description="go somewhere").add_argument("--far", type=int)
    with pytest.raises(UserError, match=r"^python -m tool go: argument --far: invalid int value"):
        p.parse_args(["go", "--far", "x"])


@pytest.mark.parametrize("text, expected", [
    ("1,2,4", [1, 2, 4]), (" 1 , 2 ", [1, 2]), ("8", [8]), ("1,2,", [1, 2]), ("1,,2", [1, 2]),
])
def test_comma_list_reads_items(text, expected):
    assert comma_list(int, "integer")(text) == expected


@pytest.mark.parametrize("text, words", [
    ("1,x", "'x' is not an integer"), ("", "empty list"), (" , ", "empty list"),
])
def test_comma_list_refuses_bad_items_and_empty_lists(text, words):
    with pytest.raises(argparse.ArgumentTypeError, match=words):
        comma_list(int, "integer")(text)


def test_comma_list_may_allow_an_empty_list():
    assert comma_list(str, "argument", allow_empty=True)("") == []
    assert comma_list(str, "argument", allow_empty=True)("-x, -y") == ["-x", "-y"]


def test_comma_list_keeps_the_items_own_message():
    def even(text: str) -> int:
        if int(text) % 2:
            raise argparse.ArgumentTypeError(f"{text} is odd")
        return int(text)

    with pytest.raises(argparse.ArgumentTypeError, match="^3 is odd$"):
        comma_list(even, "even number")("2,3")


def test_positive_int():
    assert positive_int("5") == 5
    for bad in ("0", "-1", "2.5", "x"):
        with pytest.raises(argparse.ArgumentTypeError, match="integer >= 1"):
            positive_int(bad)


def test_json_flag():
    p = Parser("python -m tool")
    add_json_flag(p, "the timings")
    assert p.parse_args(["--json"]).json is True and p.parse_args([]).json is False


@pytest.mark.parametrize("module, name", ENTRY_POINTS)
def test_every_entry_point_help_shows_defaults_and_an_example(module, name, capsys):
    main = importlib.import_module(module).main
    # bologan.data's options belong to its sub-commands
    argv = ["generate", "--help"] if module == "bologan.data" else ["--help"]
    try:
        rc = main(argv)
    except SystemExit as exc:
        rc = exc.code
    assert rc in (0, None)
    out = capsys.readouterr().out
    assert "(default: " in " ".join(out.split()), f"{name}: no default shown"   # lines are wrapped
    lines = out.splitlines()
    examples = [line for line in lines if f"python -m {name}" in line and not line.startswith("usage:")]
    assert examples, f"{name}: --help shows no example command"


@pytest.mark.parametrize("module, name", ENTRY_POINTS)
def test_every_entry_point_refuses_bad_usage_in_one_line_with_exit_2(module, name, capsys):
    main = importlib.import_module(module).main
    assert main(["--no-such-flag"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"error: python -m {name}: "), err


def test_settings_list_flags_use_the_comma_list(capsys):
    from dataclasses import dataclass, field

    from common.settings import add_section_arguments, resolve_sections

    @dataclass
    class Section:
        sizes: list[int] = field(default_factory=lambda: [1, 2], metadata={"help": "sizes"})
        extra: list[str] = field(default_factory=list, metadata={"help": "extra arguments"})

    p = Parser("python -m tool")
    add_section_arguments(p, {"s": Section})
    s = resolve_sections({"s": Section}, None, p.parse_args(["--sizes", "4, 8,", "--extra", ""]))["s"]
    assert s.sizes == [4, 8] and s.extra == []
    with pytest.raises(UserError, match="argument --sizes: .*'x' is not a valid int"):
        p.parse_args(["--sizes", "4,x"])
    with pytest.raises(SystemExit):
        p.parse_args(["--help"])
    out = " ".join(capsys.readouterr().out.split())
    assert "sizes (default: 1,2)" in out and "extra arguments (default: empty)" in out
