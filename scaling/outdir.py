"""May this run write its run directory here, and may ``--resume`` continue what is there?

Every check judges without writing anything, so a refused run leaves the disk as it was;
``create_out`` is the one step that creates the directory, once every rank agreed to go on.
Problems come back as one-line messages (or None) for the ranks to agree on.
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

from common.errors import UserError
from common.rundir import RUN_JSON, read_run_meta
from common.vocab import CHECKPOINT_SUBDIR, MEASUREMENT_KEYS, MEMBERS_SUBDIR, MODE_ENSEMBLE
from scaling.config import ScalingConfig


def run_shape(sc: ScalingConfig, replicas: int | None, batch: int | None) -> dict[str, Any]:
    """The run.json keys a resumed run must keep; None is not known yet and not compared."""
    return {"engine": sc.engine, "mode": sc.mode, "world_size": replicas, "per_rank_batch": batch,
            "iterations_per_epoch": sc.iterations_per_epoch,
            "group_size": sc.group_size if sc.mode == MODE_ENSEMBLE else None}


def measurement_settings(cfg: dict[str, Any]) -> dict[str, Any]:
    """``MEASUREMENT_KEYS`` of the resolved sections ``cfg``, by dotted name."""
    return {key: getattr(cfg[key.split(".")[0]], key.split(".")[1]) for key in MEASUREMENT_KEYS}


def _saved_settings(saved: dict[str, Any]) -> dict[str, Any]:
    """``MEASUREMENT_KEYS`` found in a saved run.json's config (an older run may lack some)."""
    found = {}
    for key in MEASUREMENT_KEYS:
        section, name = key.split(".")
        table = saved["config"].get(section, {})
        if name in table:
            found[key] = table[name]
    return found


def not_writable(out: Path) -> str | None:
    """Why ``out`` could not be created or written, judged without creating anything."""
    probe = out
    while not probe.exists() and probe.parent != probe:
        probe = probe.parent
    if not probe.is_dir():
        return f"{out}: output directory not writable ({probe} is not a directory)"
    if not os.access(probe, os.W_OK | os.X_OK):
        return f"{out}: output directory not writable (no write permission on {probe})"
    return None


def resume_mismatch(saved: dict[str, Any], now: dict[str, Any]) -> str | None:
    """A setting that would make the resumed epochs measure something else than the first ones."""
    for key, value in now.items():
        if value is not None and key in saved and saved[key] != value:
            return f"--resume with {key} {value!r}, but the run was started with {saved[key]!r}"
    return None


def check_out(out: Path, resume: bool, workload_hash: str, shape: dict[str, Any],
              settings: dict[str, Any] | None = None) -> str | None:
    """Problem with the output directory, as a one-line message, or None. Writes nothing.

    ``shape``: see ``run_shape``; ``settings``: see ``measurement_settings``.
    """
    meta_path = out / RUN_JSON
    if resume:
        if not meta_path.is_file():
            return f"{out}: nothing to resume (no {RUN_JSON})"
        try:
            saved = read_run_meta(out)
        except UserError as exc:
            return str(exc)
        if saved.get("config_hash") != workload_hash:
            return f"{out}: --resume with settings that change the workload (saved config_hash " \
                   f"{saved.get('config_hash')}, now {workload_hash}); use a new --out"
        mismatch = resume_mismatch(saved, shape) or resume_mismatch(_saved_settings(saved), settings or {})
        if mismatch:
            return f"{out}: {mismatch}; use a new --out"
        return not_writable(out)
    if meta_path.exists() or (out / CHECKPOINT_SUBDIR).exists() or (out / MEMBERS_SUBDIR).exists():
        return f"{out}: already holds a run (use --resume to continue it, or choose another --out)"
    return not_writable(out)


def create_out(out: Path) -> str | None:
    """Create ``out`` and prove a file can be written there; a problem as one line, or None."""
    try:
        out.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=out, prefix=".probe"):
            pass
    except OSError as exc:
        return f"{out}: output directory not writable ({exc.strerror})"
    return None
