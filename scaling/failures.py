"""Known failures of a training rank turned into one line each, instead of a traceback wall.

- disk full or quota exceeded while writing the run directory or a checkpoint (ENOSPC, EDQUOT);
- out of memory: the host's (``MemoryError``) or the device's (TensorFlow's
  ``ResourceExhaustedError`` for an allocation; TensorFlow reports a full disk with the same
  class, told apart by its message);
- an engine's own collective timeout (Horovod's stall shutdown, tf.distribute's
  ``timeout_seconds``): reported as a stall by ``scaling.watchdog``, with the same line as when
  the watchdog fires first.

No TensorFlow import: exceptions are recognised by class name and errno.
"""
from __future__ import annotations

import errno
import os
import re
from dataclasses import dataclass
from typing import Iterator

KIND_DISK_FULL = "disk full"
KIND_OUT_OF_MEMORY = "out of memory"
KIND_COLLECTIVE_TIMEOUT = "collective timeout"

DISK_ERRNOS = {errno.ENOSPC: "ENOSPC", errno.EDQUOT: "EDQUOT"}
_DISK_TEXT = {"No space left on device": errno.ENOSPC, "Disk quota exceeded": errno.EDQUOT}
_ERRNO_IN_TEXT = re.compile(r"\[errno (\d+)\]", re.I)
_PATH_IN_TEXT = re.compile(r"(/[^\s:;,'\"]+)")
_TF_FUNCTION_NODE = re.compile(r"\{\{[^}]*\}\}\s*")     # TensorFlow's "{{function_node ...}}" prefix
_HOROVOD_SHUTDOWN = ("Horovod has been shut down", "stalled ranks", "Horovod detected that one or more processes exited")


@dataclass
class Failure:
    kind: str
    line: str           # the one line, without the "error: " prefix


def _chain(exc: BaseException) -> Iterator[BaseException]:
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        yield exc
        exc = exc.__cause__ or exc.__context__


def _class_names(exc: BaseException) -> set[str]:
    return {c.__name__ for c in type(exc).__mro__}


def _disk_errno(exc: BaseException) -> int | None:
    if isinstance(exc, OSError) and exc.errno in DISK_ERRNOS:
        return exc.errno
    text = str(exc)
    for m in _ERRNO_IN_TEXT.finditer(text):
        if int(m.group(1)) in DISK_ERRNOS:
            return int(m.group(1))
    for words, code in _DISK_TEXT.items():
        if words in text:
            return code
    return None


def _disk_path(exc: BaseException, out: str | None) -> str:
    """The file being written: the target an atomic write names, else the path in the error
    (TensorFlow's checkpoint errors also name devices, ``/job:localhost/...``: not files)."""
    target = getattr(exc, "target", None) or getattr(exc, "filename", None)
    if target:
        return os.fspath(target)
    text = str(exc)
    paths = [m.group(1) for m in _PATH_IN_TEXT.finditer(text) if text[m.end():m.end() + 1] != ":"]
    ours = [p for p in paths if out and p.startswith(str(out))]
    return (ours or paths or ["a file of the run directory"])[0]


def classify(exc: BaseException, *, where: str, batch: int | None, out: str | None) -> Failure | None:
    """The known failure ``exc`` is (looking through its causes), or None.

    ``where``: "rank R on NODE"; ``batch``: the per-replica batch (None before it is known);
    ``out``: the run directory (None before it exists).
    """
    resume = f"continue with --resume --out {out}" if out else "run again"
    for e in _chain(exc):
        code = _disk_errno(e)
        if code is not None:
            return Failure(KIND_DISK_FULL, (
                f"{where}: cannot write {_disk_path(e, out)}: [Errno {code}] {DISK_ERRNOS[code]} {os.strerror(code)} "
                f"(disk full or quota exceeded); every record written before is intact: free space, then {resume}"))
    for e in _chain(exc):
        names = _class_names(e)
        if isinstance(e, MemoryError) or "ResourceExhaustedError" in names:
            device = "host memory" if isinstance(e, MemoryError) else "device memory (GPU or TensorFlow allocator)"
            size = f"a per-replica batch of {batch} showers" if batch else "its batch"
            return Failure(KIND_OUT_OF_MEMORY, (
                f"{where}: out of {device} with {size}: try a smaller --batch-per-rank (weak, ensemble) or "
                f"--global-batch (strong), more ranks for the same global batch, fewer --steps-per-call, or one "
                f"rank per GPU; {resume}"))
    for e in _chain(exc):
        text = str(e)
        if ("DeadlineExceededError" in _class_names(e) and "ollective" in text) or "HorovodInternalError" in _class_names(e) \
                or any(s in text for s in _HOROVOD_SHUTDOWN):
            text = _TF_FUNCTION_NODE.sub("", text).strip()
            return Failure(KIND_COLLECTIVE_TIMEOUT, f"{type(e).__name__}: {text.splitlines()[0][:160] if text else ''}")
    return None
