"""Small helpers shared by the launchers: name checks, executables, durations, log tails.

Nothing here imports TensorFlow, MPI or pandas: launching must stay cheap.
"""
from __future__ import annotations

import os
import re
import shutil
import sys
from pathlib import Path

from common.errors import UserError

# Names end up in directory names, Slurm job names and log file names; a narrow alphabet keeps
# every one of those safe without quoting rules of their own.
NAME_PATTERN = r"[A-Za-z0-9._-]+"
_NAME_RE = re.compile(rf"^{NAME_PATTERN}$")

# System daemons live in sbin directories, which are not always on a user's PATH.
_SBIN_DIRS = ("/usr/sbin", "/sbin", "/usr/local/sbin")


def check_name(value: str, what: str) -> str:
    """Return ``value`` if it is a safe name (letters, digits, '.', '_', '-'), else UserError."""
    if not _NAME_RE.match(value or "") or value in (".", ".."):
        raise UserError(f"{what} {value!r} is not allowed: use only letters, digits, '.', '_' and '-'")
    return value


def check_choices(values: list[str], choices: tuple[str, ...], what: str) -> list[str]:
    """Every item of ``values`` must be one of ``choices``; the list must not be empty."""
    if not values:
        raise ValueError(f"{what} must list at least one of {', '.join(choices)}")
    for v in values:
        if v not in choices:
            raise ValueError(f"{what}: {v!r} is not one of {', '.join(choices)}")
    if len(set(values)) != len(values):
        raise ValueError(f"{what} lists a value twice: {values}")
    return values


def find_executable(name: str) -> str | None:
    """Full path of ``name`` from PATH or the usual sbin folders, or None."""
    found = shutil.which(name)
    if found:
        return found
    for d in _SBIN_DIRS:
        candidate = Path(d) / name
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    return None


def python_executable() -> str:
    """The interpreter running us: child processes must see the same installed packages."""
    return sys.executable or "python3"


def is_root() -> bool:
    return hasattr(os, "geteuid") and os.geteuid() == 0


def fmt_duration(seconds: float) -> str:
    """Seconds as ``M:SS`` or ``H:MM:SS``; negative or NaN values print as ``?``."""
    if seconds != seconds or seconds < 0:
        return "?"
    s = int(round(seconds))
    h, rem = divmod(s, 3600)
    m, sec = divmod(rem, 60)
    return f"{h}:{m:02d}:{sec:02d}" if h else f"{m}:{sec:02d}"


def tail(path: str | os.PathLike, lines: int = 20, max_bytes: int = 64 * 1024) -> str:
    """The last ``lines`` lines of a text file ('' when it does not exist)."""
    try:
        with open(path, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            size = fh.tell()
            fh.seek(max(0, size - max_bytes))
            data = fh.read()
    except OSError:
        return ""
    text = data.decode("utf-8", errors="replace")
    return "\n".join(text.splitlines()[-lines:])


def indent(text: str, prefix: str = "    ") -> str:
    return "\n".join(prefix + line for line in text.splitlines())
