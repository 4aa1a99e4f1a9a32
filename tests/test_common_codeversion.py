"""common.codeversion: the source hash follows the measuring packages' Python files, and only them."""
from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from common.codeversion import MEASURING_PACKAGES, code_version, source_hash


def _tree(root: Path) -> Path:
    for package in MEASURING_PACKAGES:
        (root / package).mkdir(parents=True)
        (root / package / "__init__.py").write_text(f"# {package}\n")
    (root / "scaling" / "run.py").write_text("EPOCHS = 4\n")
    return root


def test_source_hash_changes_with_python_sources_only(tmp_path):
    root = _tree(tmp_path / "src")
    first = source_hash(root)
    assert source_hash(root) == first and len(first) == 64
    (root / "scaling" / "notes.txt").write_text("not code")
    (root / "launch").mkdir()
    (root / "launch" / "study.py").write_text("# the launcher does not measure anything\n")
    assert source_hash(root) == first
    (root / "scaling" / "run.py").write_text("EPOCHS = 5\n")
    assert source_hash(root) != first
    (root / "scaling" / "run.py").write_text("EPOCHS = 4\n")
    (root / "energy" / "new.py").write_text("")
    assert source_hash(root) != first, "a new (even empty) module is other code"


def test_renaming_a_file_changes_the_hash(tmp_path):
    root = _tree(tmp_path / "src")
    first = source_hash(root)
    (root / "scaling" / "run.py").rename(root / "scaling" / "main.py")
    assert source_hash(root) != first


def test_without_git_the_hash_is_still_there(tmp_path):
    root = _tree(tmp_path / "src")
    v = code_version(root)
    assert v.source_hash == source_hash(root) and v.git_commit is None and v.git_dirty is None


@pytest.mark.skipif(shutil.which("git") is None, reason="git is not installed")
def test_commit_and_dirty_flag_beside_the_hash(tmp_path):
    root = _tree(tmp_path / "src")
    git = ["git", "-C", str(root), "-c", "user.name=t", "-c", "user.email=t@t"]
    subprocess.run([*git, "init", "-q"], check=True)
    subprocess.run([*git, "add", "."], check=True)
    subprocess.run([*git, "commit", "-q", "-m", "x"], check=True)
    clean = code_version(root)
    assert clean.git_commit and len(clean.git_commit) == 40 and clean.git_dirty is False
    (root / "bologan" / "__init__.py").write_text("# changed\n")
    dirty = code_version(root)
    assert dirty.git_dirty is True and dirty.git_commit == clean.git_commit
    assert dirty.source_hash != clean.source_hash
    assert dirty.to_dict() == {"source_hash": dirty.source_hash, "git_commit": dirty.git_commit, "git_dirty": True}
