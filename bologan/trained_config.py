"""Where a trained GAN's settings are stored, for every kind of directory that holds checkpoints.

- a ``bologan.train`` directory: ``config.json`` (the resolved [model] [train] [data] tables);
- a ``scaling.run`` directory: ``run.json``, whose ``config`` holds the resolved tables;
- an ensemble member's folder ``RUN/members/<k>``: the run's ``run.json`` with member k's seed
  and data file (``member_seeds``, ``member_data``), as the member trained.

A stored config older than a setting gets the value it trained with
(``bologan.config.with_legacy_values``); TensorFlow-free.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bologan.config import BOLOGAN_SECTIONS, with_legacy_values
from common.errors import UserError
from common.vocab import MEMBERS_SUBDIR, RUN_JSON, TRAIN_CONFIG_FILE

# run.json's member_data says "synthetic" where the member trained on synthetic showers (data "").
SYNTHETIC_MEMBER_DATA = "synthetic"


@dataclass(frozen=True)
class StoredConfig:
    """The [model] [train] [data] tables of a trained GAN and the file they were read from."""
    path: Path
    tables: dict[str, dict[str, Any]]
    legacy: list[str] = field(default_factory=list)   # settings filled in as an older run trained

    def note(self) -> str | None:
        """One line for the user when the run predates a setting whose default changed since."""
        if not self.legacy:
            return None
        return (f"{self.path}: written before {', '.join(k.split(' = ')[0] for k in self.legacy)} existed; "
                f"it trained with {', '.join(self.legacy)} and is read (and resumed) so")


def legacy_filled(config: dict[str, Any], path: Path) -> tuple[dict[str, Any], list[str]]:
    """A stored run config (every section) with the [model] [train] [data] keys it predates set
    as it trained; returns (config, one line per changed behaviour, to show the user)."""
    tables, legacy = with_legacy_values({k: v for k, v in config.items() if k in BOLOGAN_SECTIONS})
    notes = [StoredConfig(path, tables, legacy).note()] if legacy else []
    return {**config, **tables}, [n for n in notes if n]


def config_file(directory: str | Path) -> Path | None:
    """The file holding ``directory``'s training settings (rules in the module docstring), or None."""
    d = Path(directory)
    for path in (d / TRAIN_CONFIG_FILE, d / RUN_JSON):
        if path.is_file():
            return path
    if d.parent.name == MEMBERS_SUBDIR and (d.parent.parent / RUN_JSON).is_file():
        return d.parent.parent / RUN_JSON
    return None


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise UserError(f"{path}: missing (not a training directory)") from None
    except (OSError, ValueError) as exc:
        raise UserError(f"{path}: unreadable ({exc})") from None
    if not isinstance(data, dict):
        raise UserError(f"{path}: expected a JSON object")
    return data


def _member_tables(meta: dict[str, Any], tables: dict[str, dict[str, Any]], member_dir: Path,
                   path: Path) -> dict[str, dict[str, Any]]:
    """An ensemble run's tables with member ``member_dir.name``'s seed and data file."""
    seeds, data = meta.get("member_seeds"), meta.get("member_data")
    try:
        k = int(member_dir.name)
        seed, source = seeds[k], data[k]
    except (ValueError, TypeError, IndexError):
        raise UserError(f"{path}: no member {member_dir.name!r} in member_seeds/member_data") from None
    out = {name: dict(table) for name, table in tables.items()}
    out.setdefault("train", {})["seed"] = seed
    out.setdefault("data", {})["data"] = "" if source == SYNTHETIC_MEMBER_DATA else source
    return out


def read_stored_config(directory: str | Path) -> StoredConfig:
    """The training tables of ``directory`` (a training, run or ensemble member directory)."""
    d = Path(directory)
    path = config_file(d)
    if path is None:
        raise UserError(f"{d}: no {TRAIN_CONFIG_FILE} (bologan.train) or {RUN_JSON} (scaling.run) here "
                        f"(not a training directory)")
    data = _read_json(path)
    if path.name == RUN_JSON:
        config = data.get("config")
        if not isinstance(config, dict):
            raise UserError(f"{path}: has no config table (not written by scaling.run)")
        tables = {name: config.get(name, {}) for name in BOLOGAN_SECTIONS}
        if path.parent != d:
            tables = _member_tables(data, tables, d, path)
    else:
        tables = {name: data.get(name, {}) for name in BOLOGAN_SECTIONS}
    tables, legacy = with_legacy_values(tables)
    return StoredConfig(path, tables, legacy)
