"""Ensemble mode: every group of ranks trains its own GAN, measured like data parallelism.

A world of P ranks with ``--group-size G`` holds M = P / G members; member k is ranks
k*G .. k*G+G-1 (contiguous, so that a group shares a node where the launcher fills nodes in
order). Member k trains with seed + k, on its own data (``--data`` lists M files, or a pattern
with ``{member}``; synthetic showers come from seed + k) and keeps its checkpoints under
``<run>/members/<k>/checkpoints``. With G > 1 the member trains data parallel over its G ranks
(a Horovod process set, scaling.ensemble_engine): its data sharded over them as a data-parallel
run shards over replicas, --batch-per-rank showers per rank, its first rank saving its
checkpoints. Nothing is reduced between members; the epoch loop, its
world-wide barrier, the energy windows and rank 0's gathering stay the data-parallel ones, so
epochs line up and node counters are read once per node.

This module needs no TensorFlow: the layout is checked before TensorFlow is imported.
"""
from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from common.errors import UserError
from common.settings import sections_to_dict
from common.vocab import CHECKPOINT_PREFIX, ENGINE_HOROVOD, MEMBERS_SUBDIR, MODE_ENSEMBLE
from scaling.world import World

MEMBER_FIELD = "{member}"
"""In a ``--data`` pattern: the member's name when --member-names is given, else its index."""
DEFAULT_NAME = "m{index}"
NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")


@dataclass(frozen=True)
class EnsembleLayout:
    """The members of an ensemble run and this rank's place in it."""
    world_size: int               # P: ranks of the run
    group_size: int               # G: ranks per member
    member: int                   # k: the member this rank trains
    rank_in_group: int
    names: tuple[str, ...]        # member names, in member order
    seeds: tuple[int, ...]        # train.seed of each member
    data: tuple[str, ...]         # data file of each member ("" = synthetic showers from its seed)
    config: dict[str, Any]        # the run's resolved settings (run.json config; base seed, --data as given)

    @property
    def members(self) -> int:
        return len(self.names)

    def member_dir(self, out: Path, member: int | None = None) -> Path:
        """``<run>/members/<k>``: member k's own folder (its checkpoints live below it)."""
        return Path(out) / MEMBERS_SUBDIR / str(self.member if member is None else member)

    def member_config(self, cfg: dict[str, Any]) -> dict[str, Any]:
        """``cfg`` for this rank's GAN: its seed and its data file, every other setting kept."""
        k = self.member
        out = dict(cfg)
        out["train"] = dataclasses.replace(cfg["train"], seed=self.seeds[k])
        out["data"] = dataclasses.replace(cfg["data"], data=self.data[k])
        return out

    def run_json_fields(self) -> dict[str, Any]:
        """run.json keys of an ensemble run (``world_size`` is the ranks of the run, P)."""
        return {"world_size": self.world_size, "group_size": self.group_size, "members": self.members,
                "member_names": list(self.names), "member_seeds": list(self.seeds),
                "member_data": [d or "synthetic" for d in self.data]}

    def describe(self, out: Path) -> str:
        return (f"ensemble: {self.members} members of {self.group_size} rank(s) each "
                f"({', '.join(self.names)}), seeds {self.seeds[0]}..{self.seeds[-1]}, checkpoints in "
                f"{Path(out) / MEMBERS_SUBDIR}/<k>/")


def ensemble_layout(cfg: dict[str, Any], world: World, timeline: bool = False) -> EnsembleLayout | None:
    """This rank's ensemble layout, or None for a data-parallel run. Raises ``UserError`` (one
    line naming the flag) for a layout the ranks cannot train; reads only file metadata."""
    sc = cfg["scaling"]
    if sc.mode != MODE_ENSEMBLE:
        if sc.group_size != 1 or sc.member_names:
            flag = "--group-size" if sc.group_size != 1 else "--member-names"
            raise UserError(f"{flag}: only for --mode {MODE_ENSEMBLE} (this run is --mode {sc.mode})")
        return None
    p, g = world.size, sc.group_size
    if p % g:
        raise UserError(f"--group-size {g}: {p} rank(s) do not split into groups of {g} "
                        f"(start a multiple of {g} ranks)")
    if g > 1 and sc.engine != ENGINE_HOROVOD:
        # A member's ranks reduce with Horovod process sets; run.json must not name another engine.
        raise UserError(f"--group-size {g}: the ranks of a member reduce with Horovod; use --engine "
                        f"{ENGINE_HOROVOD} (this run asks for --engine {sc.engine})")
    if timeline:
        raise UserError("--timeline: not recorded for --mode ensemble (one-rank members reduce nothing; "
                        "groups reduce in Horovod process sets, which one timeline file does not separate)")
    m = p // g
    names = _member_names(sc.member_names, m, p, g)
    seed = cfg["train"].seed
    return EnsembleLayout(world_size=p, group_size=g, member=world.rank // g, rank_in_group=world.rank % g,
                          names=names, seeds=tuple(seed + k for k in range(m)),
                          data=_member_data(cfg["data"].data, names, bool(sc.member_names)),
                          config=sections_to_dict(cfg))


def _too_many(what: str, n: int, m: int, p: int, g: int) -> str:
    more = "more" if n > m else "fewer"
    return (f"{what} {n} members, {more} than the {p} rank(s) allow with --group-size {g} "
            f"({m} member(s)); start {n * g} ranks or list {m}")


def _member_names(given: list[str], m: int, p: int, g: int) -> tuple[str, ...]:
    if not given:
        return tuple(DEFAULT_NAME.format(index=k) for k in range(m))
    seen: set[str] = set()
    for name in given:
        if not NAME_PATTERN.fullmatch(name):
            raise UserError(f"--member-names: {name!r} is not a name (letters, digits, '.', '_', '-')")
        if name in seen:
            raise UserError(f"--member-names: {name!r} is listed twice (every member needs its own name)")
        seen.add(name)
    if len(given) != m:
        raise UserError(_too_many("--member-names lists", len(given), m, p, g))
    return tuple(given)


def _member_data(spec: str, names: tuple[str, ...], named: bool) -> tuple[str, ...]:
    """Each member's data file from ``--data``: '' (synthetic), a list, or a ``{member}`` pattern."""
    m = len(names)
    if not spec.strip():
        return ("",) * m
    if MEMBER_FIELD in spec:
        files = [spec.replace(MEMBER_FIELD, names[k] if named else str(k)) for k in range(m)]
    else:
        files = [part.strip() for part in spec.split(",")]
        empty = [i + 1 for i, f in enumerate(files) if not f]
        if empty:
            raise UserError(f"--data: entry {empty[0]} of {spec!r} is empty (list one file per member)")
        if len(files) != m:
            more = "more" if len(files) > m else "fewer"
            raise UserError(f"--data lists {len(files)} files for {m} member(s) ({more} than the ranks "
                            f"allow): one file per member, or a pattern with {MEMBER_FIELD}")
    for k, path in enumerate(files):
        if files.index(path) != k:
            raise UserError(f"--data: members {files.index(path)} and {k} would share {path} "
                            f"(every member trains on its own data)")
        if not Path(path).is_file():
            raise UserError(f"--data: member {k} ({names[k]}): data file {path} not found")
    return tuple(files)


def common_checkpoint(manager, coll) -> str | None:
    """The newest checkpoint every member has (every rank calls this and lists its member's
    folder; the ranks of a group list the same one). A kill between two members' saves leaves
    them one epoch apart: all then resume from the older one, which each still keeps."""
    def iteration(path: str) -> int:
        return int(path.rsplit(f"{CHECKPOINT_PREFIX}-", 1)[1])

    mine = {iteration(p) for p in manager.checkpoints}
    everyone = [set(its) for its in coll.allgather(sorted(mine))]
    shared = set.intersection(*everyone)
    if not shared:
        return None
    pick = max(shared)
    return next(p for p in manager.checkpoints if iteration(p) == pick)
