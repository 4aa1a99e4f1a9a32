"""Which code made a result: a hash of the package sources, with the git commit beside it.

The hash is the one to compare: it works without git (an unpacked release, a container) and
changes exactly when a Python source of the measuring packages changes, while a commit that
only touches the docs leaves it alone. The commit and a dirty flag are recorded for people.
"""
from __future__ import annotations

import hashlib
import subprocess
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

# The packages whose code decides what a run measures (the launchers and the analysis do not).
MEASURING_PACKAGES = ("common", "bologan", "scaling", "energy")
SOURCE_ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class CodeVersion:
    source_hash: str              # sha256 over the .py files of MEASURING_PACKAGES (paths and contents)
    git_commit: str | None        # None outside a git checkout
    git_dirty: bool | None        # uncommitted changes under MEASURING_PACKAGES; None without git

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def source_hash(root: Path = SOURCE_ROOT, packages: tuple[str, ...] = MEASURING_PACKAGES) -> str:
    """Hex sha256 of every ``*.py`` file below ``root/<package>``, in path order."""
    digest = hashlib.sha256()
    for package in packages:
        for path in sorted((root / package).rglob("*.py")):
            name = path.relative_to(root).as_posix().encode()
            data = path.read_bytes()
            # Length prefixes: moving bytes between a name and a file cannot give the same hash.
            for part in (name, data):
                digest.update(len(part).to_bytes(8, "big"))
                digest.update(part)
    return digest.hexdigest()


def _git(root: Path, *args: str) -> str | None:
    try:
        res = subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True, timeout=5,
                             check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return res.stdout if res.returncode == 0 else None


def code_version(root: Path = SOURCE_ROOT, packages: tuple[str, ...] = MEASURING_PACKAGES) -> CodeVersion:
    """The version of the measuring code below ``root``."""
    commit = _git(root, "rev-parse", "HEAD")
    status = _git(root, "status", "--porcelain", "--", *packages) if commit else None
    return CodeVersion(source_hash(root, packages), commit.strip() if commit else None,
                       bool(status.strip()) if status is not None else None)
