"""Exit codes and the user-error convention shared by every entry point.

A ``UserError`` is bad input (file, key, value) that the user can fix; entry points turn it
into one line on stderr and exit code 2, never a traceback.
"""
from __future__ import annotations

import functools
import sys
from typing import Callable

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USER_ERROR = 2
EXIT_INTERRUPTED = 3


class UserError(Exception):
    """Bad input the user can fix; the message names the file or key and the problem."""


class Interrupted(Exception):
    """The run was stopped by a signal after saving its state; it can be resumed."""


def main_guard(fn: Callable[..., int | None]) -> Callable[..., int]:
    """Wrap a CLI ``main(argv)`` so user errors exit 2 with one line and interrupts exit 3."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs) -> int:
        try:
            rc = fn(*args, **kwargs)
        except UserError as exc:
            print(f"error: {exc}", file=sys.stderr, flush=True)
            return EXIT_USER_ERROR
        except Interrupted as exc:
            print(f"interrupted: {exc}", file=sys.stderr, flush=True)
            return EXIT_INTERRUPTED
        return EXIT_OK if rc is None else int(rc)

    return wrapper
