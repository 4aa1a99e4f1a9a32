"""Atomic file replacement: write a temp file beside the target, fsync, rename.

A crash at any point leaves either the previous complete file or the new complete file.
"""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any, Callable


def _read_umask() -> int:
    """The process umask, read without changing it (os.umask sets it, racing other threads)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    return 0o022


# mkstemp creates files readable by the owner only; results are meant to be shared (a study
# directory read by colleagues, an analysis job under another account), so the finished file
# gets the mode a plain open() would have given it.
_FILE_MODE = 0o666 & ~_read_umask()


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass  # some filesystems refuse fsync on directories; the rename is still atomic
    finally:
        os.close(fd)


class WriteFailed(OSError):
    """An atomic write failed (disk full, quota, I/O error); ``target`` is the file it was
    replacing (the error itself may name only the temp file, or no file at all)."""

    def __init__(self, exc: OSError, target: Path):
        super().__init__(exc.errno, exc.strerror or str(exc), str(target))
        self.target = target


def atomic_write(path: str | os.PathLike, write: Callable[[str], None]) -> None:
    """Call ``write(tmp_path)`` then move the finished file onto ``path`` atomically.

    An ``OSError`` is raised as ``WriteFailed`` naming ``path``; the old file stays as it was."""
    target = Path(path)
    try:
        _atomic_write(target, write)
    except WriteFailed:
        raise
    except OSError as exc:
        raise WriteFailed(exc, target) from exc


def _atomic_write(target: Path, write: Callable[[str], None]) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    try:
        write(tmp)
        with open(tmp, "rb+") as fh:
            os.fchmod(fh.fileno(), _FILE_MODE)
            os.fsync(fh.fileno())
        os.replace(tmp, target)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    _fsync_dir(target.parent)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    def write(tmp: str) -> None:
        with open(tmp, "wb") as fh:
            fh.write(data)

    atomic_write(path, write)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")


def atomic_write_parquet(path: str | os.PathLike, table: "Any") -> None:
    """Write a ``pyarrow.Table`` atomically (imports pyarrow lazily)."""
    import pyarrow.parquet as pq

    atomic_write(path, lambda tmp: pq.write_table(table, tmp))
