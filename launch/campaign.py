"""Campaigns for ``launch.sweep``: many GANs (one per particle and |eta| slice), listed in a
``[campaign]`` table of the sweep file, trained as a Slurm job array or as one packed ensemble job.

    [campaign]
    layout = "array"            # array: one GAN per array task; packed: one srun of P ranks, --mode ensemble
    max_concurrent = 4          # array: at most K tasks at once (--array=0-(M-1)%K); 0 = no limit
    group_size = 1              # ranks per GAN (data parallel inside the group)
    data_pattern = "/data/photons_eta_{eta_slice}.parquet"   # a member without data: this, filled in

    [[campaign.members]]
    name = "photons-eta20"      # letters, digits, '.', '_', '-'; its run directory's name
    particle = "photons"        # default: [run] particle
    eta_slice = "20_25"         # or data = "/data/file.parquet"

Array: task k trains member k into ``<study>/members/<name>/``; the array index selects the
member's arguments (a ``case`` over the indices), members completed earlier are left out of the
``--array`` list, and every task requeues itself after an interruption and resumes its own run
directory, exactly as a sweep point does. Packed: ``srun -n P python -m scaling.run --mode
ensemble --group-size G --data LIST`` into ``<study>/<engine>-ensemble-P<P>-g<G>/``; scaling.run
resumes every member. Member k trains with seed + k either way. Problems with the table are one
line naming the file and the key (exit 2).
"""
from __future__ import annotations

import dataclasses
import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from common.errors import UserError
from common.settings import load_toml, section_from_mapping
from common.vocab import ENGINE_HOROVOD, ENGINES, MEMBERS_SUBDIR, MODE_ENSEMBLE, MODE_WEAK, MODES, PARTICLE_NAMES
from launch.common import check_name
from launch.runargs import RunSettings, absolute, scaling_run_args

TABLE = "campaign"
LAYOUT_ARRAY = "array"
LAYOUT_PACKED = "packed"
LAYOUTS = (LAYOUT_ARRAY, LAYOUT_PACKED)
PATTERN_FIELDS = ("member", "eta_slice", "particle")
MEMBER_NAMES_FLAG = "--member-names"
"""scaling.run's flag naming an ensemble's members (run.json member_names), in member order."""


@dataclass
class CampaignSettings:
    """The scalar keys of ``[campaign]`` (the members are ``[[campaign.members]]`` tables)."""
    layout: str = field(default=LAYOUT_ARRAY, metadata={"choices": LAYOUTS, "help": "array or packed"})
    engine: str = field(default=ENGINE_HOROVOD, metadata={"choices": ENGINES, "help": "engine of every GAN"})
    mode: str = field(default=MODE_WEAK, metadata={
        "choices": MODES, "help": "array: scaling mode inside a member's group (weak keeps [run] batch_per_rank)"})
    group_size: int = field(default=1, metadata={"help": "ranks per GAN (data parallel inside the group)"})
    max_concurrent: int = field(default=0, metadata={"help": "array: array tasks running at once (0 = no limit)"})
    ranks: int = field(default=0, metadata={"help": "packed: ranks of the job, P (0 = members x group_size)"})
    seed: int = field(default=10, metadata={"help": "member k trains with seed + k (10: BoloGAN's seed)"})
    data_pattern: str = field(default="", metadata={
        "help": "data file of a member without 'data': {member}, {eta_slice} and {particle} are filled in"})

    def check(self) -> None:
        if self.group_size < 1:
            raise ValueError(f"group_size must be >= 1, got {self.group_size}")
        if self.max_concurrent < 0 or self.ranks < 0:
            raise ValueError("max_concurrent and ranks must be >= 0")


@dataclass
class Member:
    """One GAN of the campaign: its name (run directory), particle and data file ('' = synthetic)."""
    name: str
    particle: str = ""
    data: str = ""
    eta_slice: str = ""


@dataclass
class Campaign:
    settings: CampaignSettings
    members: list[Member]
    source: str = ""               # the file it was read from, for messages

    @property
    def ranks(self) -> int:
        """Packed: P, the ranks of the ensemble job."""
        return self.settings.ranks or len(self.members) * self.settings.group_size

    def seed(self, index: int) -> int:
        return self.settings.seed + index


def read_campaign(path: str | Path | None) -> dict[str, Any] | None:
    """The raw ``[campaign]`` table of the sweep file, None when there is none."""
    if path is None:
        return None
    table = load_toml(path).get(TABLE)
    if table is None:
        return None
    if not isinstance(table, dict):
        raise UserError(f"{path}: '{TABLE}' must be a table [{TABLE}]")
    return table


def _fill(pattern: str, member: Member, where: str) -> str:
    try:
        return pattern.format(member=member.name, eta_slice=member.eta_slice, particle=member.particle)
    except (KeyError, IndexError, ValueError) as exc:
        raise UserError(f"{where}: data_pattern {pattern!r} cannot be filled ({exc}); "
                        f"use only {', '.join('{' + f + '}' for f in PATTERN_FIELDS)}") from None


def parse_campaign(table: dict[str, Any], source: str, run: RunSettings) -> Campaign:
    """Validate ``[campaign]``; every problem is one ``UserError`` naming ``source`` and the key."""
    where = f"{source}: [{TABLE}]"
    table = dict(table)
    raw_members = table.pop("members", None)
    settings = section_from_mapping(CampaignSettings, table, where)
    if not isinstance(raw_members, list) or not raw_members:
        raise UserError(f"{where}: no members: list each GAN as a [[{TABLE}.members]] table with a name")
    fields = {f.name for f in dataclasses.fields(Member)}
    members: list[Member] = []
    seen: set[str] = set()
    for i, raw in enumerate(raw_members):
        at = f"{source}: [[{TABLE}.members]] #{i + 1}"
        if not isinstance(raw, dict):
            raise UserError(f"{at}: expected a table with name, particle, data or eta_slice")
        unknown = sorted(set(raw) - fields)
        if unknown:
            raise UserError(f"{at}: unknown key '{unknown[0]}' (known keys: {', '.join(sorted(fields))})")
        bad = [k for k, v in raw.items() if not isinstance(v, str)]
        if bad:
            raise UserError(f"{at}.{bad[0]}: expected a string, got {raw[bad[0]]!r}")
        if "name" not in raw:
            raise UserError(f"{at}: missing key 'name'")
        member = Member(**raw)
        check_name(member.name, f"{at}: member name")
        if member.name in seen:
            raise UserError(f"{at}: duplicate member name {member.name!r} (each GAN needs its own run directory)")
        seen.add(member.name)
        member.particle = member.particle or run.particle
        if member.particle not in PARTICLE_NAMES:
            raise UserError(f"{at}.particle: {member.particle!r} is not one of {', '.join(PARTICLE_NAMES)}")
        if not member.data and settings.data_pattern:
            member.data = _fill(settings.data_pattern, member, where)
        if not member.data and run.data:
            member.data = run.data
        if member.data:
            member.data = absolute(member.data)
            if not Path(member.data).is_file():
                raise UserError(f"{at} ({member.name}): data file {member.data} not found")
        members.append(member)
    campaign = Campaign(settings, members, source)
    _check_layout(campaign, where)
    return campaign


def _check_layout(c: Campaign, where: str) -> None:
    s, m = c.settings, len(c.members)
    if s.layout == LAYOUT_ARRAY:
        if s.ranks:
            raise UserError(f"{where}: ranks is for layout = \"{LAYOUT_PACKED}\"; an array task has group_size ranks")
        return
    if s.max_concurrent:
        raise UserError(f"{where}: max_concurrent is for layout = \"{LAYOUT_ARRAY}\" (a packed job runs every member at once)")
    if c.ranks % s.group_size:
        raise UserError(f"{where}: ranks {c.ranks} is not a multiple of group_size {s.group_size}")
    allowed = c.ranks // s.group_size
    if m > allowed:
        raise UserError(f"{where}: {m} members are more than {c.ranks} ranks allow with group_size {s.group_size} "
                        f"(at most {allowed}); raise ranks or use layout = \"{LAYOUT_ARRAY}\"")
    if m < allowed:
        raise UserError(f"{where}: {c.ranks} ranks with group_size {s.group_size} train {allowed} GANs but {m} "
                        f"members are listed; set ranks = {m * s.group_size}")
    particles = sorted({mb.particle for mb in c.members})
    if len(particles) > 1:
        raise UserError(f"{where}: a packed ensemble trains one particle, the members name {', '.join(particles)}; "
                        f"use layout = \"{LAYOUT_ARRAY}\" or one campaign per particle")
    if any(mb.data for mb in c.members) and not all(mb.data for mb in c.members):
        raise UserError(f"{where}: in a packed ensemble either every member has a data file or none (synthetic)")


def placement(ranks: int, tasks_per_node: int, where: str) -> tuple[int, int]:
    """(nodes, ranks per node) for ``ranks`` ranks with at most ``tasks_per_node`` per node."""
    if ranks <= tasks_per_node:
        return 1, ranks
    if ranks % tasks_per_node:
        raise UserError(f"{where}: {ranks} ranks do not fill nodes of tasks_per_node {tasks_per_node} evenly")
    return ranks // tasks_per_node, tasks_per_node


def array_spec(indices: list[int], max_concurrent: int) -> str:
    """``--array`` value: '0-7%4', or the pending indices as ranges ('0-2,5')."""
    parts, start = [], None
    for i, k in enumerate(indices):
        if start is None:
            start = k
        if i + 1 == len(indices) or indices[i + 1] != k + 1:
            parts.append(str(start) if start == k else f"{start}-{k}")
            start = None
    return ",".join(parts) + (f"%{max_concurrent}" if max_concurrent else "")


def member_run_args(c: Campaign, run: RunSettings, index: int, study: str) -> list[str]:
    """scaling.run arguments of array task ``index`` (``OUT`` stands for its run directory)."""
    member = c.members[index]
    settings = dataclasses.replace(run, particle=member.particle, data=member.data)
    args = scaling_run_args(settings, engine=c.settings.engine, mode=c.settings.mode, out="OUT", study=study)
    return args + ["--seed", str(c.seed(index))]


def packed_run_args(c: Campaign, run: RunSettings, study: str) -> list[str]:
    """scaling.run arguments of the packed ensemble job (``OUT`` stands for its run directory)."""
    settings = dataclasses.replace(run, particle=c.members[0].particle, data="")
    args = scaling_run_args(settings, engine=c.settings.engine, mode=MODE_ENSEMBLE, out="OUT", study=study)
    if c.members[0].data:
        k = args.index("--synthetic-events")
        args[k:k + 2] = ["--data", ",".join(m.data for m in c.members)]
    return args + ["--group-size", str(c.settings.group_size), "--seed", str(c.seed(0)),
                   MEMBER_NAMES_FLAG, ",".join(m.name for m in c.members)]


def packed_run_id(c: Campaign) -> str:
    return f"{c.settings.engine}-{MODE_ENSEMBLE}-P{c.ranks}-g{c.settings.group_size}"


def planned_ranks(c: Campaign) -> int:
    """The ranks in use at once: what the analysis plans the same GANs for."""
    s = c.settings
    if s.layout == LAYOUT_PACKED:
        return c.ranks
    at_once = min(len(c.members), s.max_concurrent) if s.max_concurrent else len(c.members)
    return at_once * s.group_size


def analysis_args(c: Campaign) -> list[str]:
    return ["--campaign-gans", str(len(c.members)), "--campaign-ranks", str(planned_ranks(c))]


def quoted_args(args: list[str]) -> str:
    return " ".join('"$out"' if a == "OUT" else shlex.quote(a) for a in args)


def member_case(c: Campaign, run: RunSettings, members_dir: Path, study: str, indices: list[int]) -> list[str]:
    """A ``case`` over the array index: each branch sets ``name``, ``out`` and ``args``."""
    q = shlex.quote
    lines = ["# The array index selects the member: its name, run directory and scaling.run arguments.",
             'case "${SLURM_ARRAY_TASK_ID:-}" in']
    for k in indices:
        m = c.members[k]
        lines.append(f"  {k}) name={q(m.name)}; out={q(str(members_dir / m.name))}; "
                     f"args=({quoted_args(member_run_args(c, run, k, study))});;")
    lines += ['  *) echo "array index ${SLURM_ARRAY_TASK_ID:-unset} is no member of this campaign" >&2; exit 2;;',
              "esac",
              'echo "campaign member $name (array index $SLURM_ARRAY_TASK_ID)" >&2']
    return lines


def members_dir(root: Path) -> Path:
    return root / MEMBERS_SUBDIR


def describe(c: Campaign) -> str:
    s = c.settings
    if s.layout == LAYOUT_ARRAY:
        limit = f", at most {s.max_concurrent} at once" if s.max_concurrent else ""
        return f"campaign of {len(c.members)} GANs as a job array ({s.group_size} rank(s) per GAN{limit})"
    return f"campaign of {len(c.members)} GANs packed in one ensemble job of {c.ranks} ranks (group size {s.group_size})"

