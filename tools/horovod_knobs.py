"""Which Horovod settings bring a 2-rank training's all-reduce towards the raw-MPI floor: short
weak-scaling runs per setting (each alone and chosen combinations), interleaved with repeats.

    .venv/bin/python tools/horovod_knobs.py --repeats 3 --out results/horovod-knobs
    .venv/bin/python tools/horovod_knobs.py --settings baseline,cycle_time,cycle_time+fusion_fit --dry-run

Every repeat runs, in this order: one 1-rank training (the weak-scaling reference), the raw-MPI
all-reduce of exactly the messages one iteration reduces (``scaling.allreduce_bench --engine mpi
--training-sizes``), then one training per setting: A B C ... A B C ... Per setting the table
gives the median and min..max over repeats of the time per iteration (slowest rank, warm-up
epochs excluded, as the analysis reads run directories), comm_s per iteration, their ratio to
the MPI floor of the same repeat (target: within 1.5x) and the weak efficiency against the
1-rank run of the same repeat. A setting that cannot run (Gloo without horovodrun's rendezvous,
say) gets a row that says why; the others still run. Written to ``--out``: horovod_knobs.md,
horovod_knobs.json and the run directories. Say the machine's load when quoting the numbers.
"""
from __future__ import annotations

import math
import os
import shlex
import shutil
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))  # the sibling tool, also when imported

from ab_comm_timing import RUN_SHAPE, mpirun_command  # noqa: E402
from analysis.epochs import epoch_table, used_epochs  # noqa: E402
from bologan.config import TrainConfig  # noqa: E402
from bologan.model_size import model_size  # noqa: E402
from common.atomic import atomic_write_json, atomic_write_text  # noqa: E402
from common.cli import Parser, comma_list, positive_int  # noqa: E402
from common.errors import EXIT_FAILURE, EXIT_OK, EXIT_USER_ERROR, UserError  # noqa: E402
from common.rundir import load_run  # noqa: E402
from common.vocab import PARTICLE_NAMES, PARTICLE_PHOTONS  # noqa: E402
from scaling.allreduce_bench import read_per_iteration_s  # noqa: E402

SCHEMA = "horovod-knobs/1"
TABLE_FILE, JSON_FILE, RUNS_DIR = "horovod_knobs.md", "horovod_knobs.json", "runs"
BASELINE = "baseline"
FLOOR_TARGET_RATIO = 1.5       # issue target: comm per iteration within 1.5x of raw MPI
CYCLE_TIME_SHORT_MS = 0.1      # the cycle time that halved the micro-benchmark's small sizes here
OMPI_ALLREDUCE_ALGORITHMS = {"recursive_doubling": 3, "ring": 4, "segmented_ring": 5, "rabenseifner": 6}
COMBINE = "+"
DEFAULT_COMBINATIONS = ("cycle_time+fusion_fit", "cycle_time+mpi_threads_disable",
                        "cycle_time+fusion_fit+mpi_threads_disable")
REASON_CHARS = 200             # of a failed run's last error line, in the table


@dataclass(frozen=True)
class Setting:
    """One Horovod/MPI setting, or a combination: environment variables (exported to every rank
    with ``-x``), Open MPI MCA parameters, and ``scaling.run`` flags."""
    name: str
    what: str
    env: dict[str, str] = field(default_factory=dict)
    mca: dict[str, str] = field(default_factory=dict)
    run_flags: dict[str, str] = field(default_factory=dict)
    note: str = ""             # said in the table when the setting could not run


def fusion_fit_bytes(particle: str) -> int:
    """Smallest power of two holding the critic's gradients: one fused buffer per critic step."""
    return 1 << (model_size(None, particle).critic_grad_bytes - 1).bit_length()


def single_settings(particle: str) -> dict[str, Setting]:
    """Every setting the tool knows, by name (each changes one thing against Horovod's defaults)."""
    fit = fusion_fit_bytes(particle)
    out = [
        Setting(BASELINE, "Horovod and Open MPI defaults"),
        Setting("cycle_time", f"HOROVOD_CYCLE_TIME={CYCLE_TIME_SHORT_MS} ms",
                run_flags={"--cycle-time-ms": str(CYCLE_TIME_SHORT_MS)}),
        Setting("fusion_off", "HOROVOD_FUSION_THRESHOLD=0 (every gradient alone)",
                run_flags={"--fusion-threshold-bytes": "0"}),
        Setting("fusion_fit", f"HOROVOD_FUSION_THRESHOLD={fit} B (all critic gradients in one buffer)",
                run_flags={"--fusion-threshold-bytes": str(fit)}),
        Setting("gloo", "HOROVOD_CPU_OPERATIONS=gloo", env={"HOROVOD_CPU_OPERATIONS": "gloo"},
                note="Gloo may need horovodrun's rendezvous (horovodrun --gloo -np 2 python -m scaling.run ...)"),
        # mpi4py initialises MPI before Horovod does, so its thread level is the one that counts.
        Setting("mpi_threads_disable", "HOROVOD_MPI_THREADS_DISABLE=1, MPI thread level serialized",
                env={"HOROVOD_MPI_THREADS_DISABLE": "1", "MPI4PY_RC_THREAD_LEVEL": "serialized"}),
        Setting("cache_off", "HOROVOD_CACHE_CAPACITY=0 (response cache off)", env={"HOROVOD_CACHE_CAPACITY": "0"}),
    ]
    for algo, number in OMPI_ALLREDUCE_ALGORITHMS.items():
        out.append(Setting(f"ompi_{algo}", f"Open MPI allreduce algorithm {number} ({algo.replace('_', ' ')})",
                           mca={"coll_tuned_use_dynamic_rules": "1", "coll_tuned_allreduce_algorithm": str(number)}))
    return {s.name: s for s in out}


def default_names(particle: str) -> list[str]:
    return [*single_settings(particle), *DEFAULT_COMBINATIONS]


def resolve_setting(name: str, known: dict[str, Setting]) -> Setting:
    """A known name, or known names joined by ``+`` (a combination); a ``UserError`` naming
    ``--settings`` otherwise, or when two parts set the same thing differently."""
    parts = name.split(COMBINE)
    for part in parts:
        if part not in known:
            raise UserError(f"--settings: unknown setting {part!r} (known: {', '.join(known)}; "
                            f"combine with {COMBINE})")
    if len(set(parts)) != len(parts):
        raise UserError(f"--settings: {name!r} names a setting twice")
    if len(parts) == 1:
        return known[name]
    merged: dict[str, dict[str, str]] = {"env": {}, "mca": {}, "run_flags": {}}
    for part in parts:
        for kind, table in merged.items():
            for key, value in getattr(known[part], kind).items():
                if table.get(key, value) != value:
                    raise UserError(f"--settings: {name!r} sets {key} twice, differently")
                table[key] = value
    return Setting(name, "; ".join(known[p].what for p in parts if p != BASELINE) or known[BASELINE].what,
                   **merged, note=" ".join(known[p].note for p in parts if known[p].note))


@dataclass(frozen=True)
class Job:
    """One process of the plan: what it is (``kind``: one_rank | floor | setting), its repeat,
    its command, the environment it adds, and where it writes."""
    kind: str
    name: str
    repeat: int
    cmd: list[str]
    env: dict[str, str]
    out: Path

    def shell(self) -> str:
        env = " ".join(f"{k}={shlex.quote(v)}" for k, v in self.env.items())
        return f"{env} {shlex.join(self.cmd)}".strip()


@dataclass(frozen=True)
class Plan:
    particle: str
    ranks: int
    repeats: int
    epochs: int
    iterations_per_epoch: int
    settings: list[Setting]
    out: Path


def training_args(plan: Plan, setting: Setting, out: Path) -> list[str]:
    flags = [x for kv in setting.run_flags.items() for x in kv]
    return [*RUN_SHAPE, "--particle", plan.particle, "--epochs", str(plan.epochs),
            "--iterations-per-epoch", str(plan.iterations_per_epoch), "--study", "horovod-knobs",
            *flags, "--out", str(out)]


def setting_mpirun_args(setting: Setting) -> list[str]:
    args: list[str] = []
    for key in setting.env:
        args += ["-x", key]
    for key, value in setting.mca.items():
        args += ["--mca", key, value]
    return args


def build_jobs(plan: Plan) -> list[Job]:
    """The whole interleaved plan: per repeat the 1-rank run, the MPI floor, then every setting."""
    runs = plan.out / RUNS_DIR
    reference = Setting(BASELINE, "")
    jobs = []
    for r in range(plan.repeats):
        one = runs / f"one-rank-r{r}"
        jobs.append(Job("one_rank", "one-rank", r, mpirun_command(1, "scaling.run", training_args(plan, reference, one)),
                        {}, one))
        floor = runs / f"mpi-floor-r{r}.json"
        bench = ["--engine", "mpi", "--training-sizes", plan.particle, "--n-disc", str(TrainConfig().n_disc),
                 "--out", str(floor)]
        jobs.append(Job("floor", "mpi-floor", r, mpirun_command(plan.ranks, "scaling.allreduce_bench", bench), {}, floor))
        for s in plan.settings:
            out = runs / f"{s.name.replace(COMBINE, '_and_')}-r{r}"
            jobs.append(Job("setting", s.name, r, mpirun_command(plan.ranks, "scaling.run", training_args(plan, s, out),
                                                                 setting_mpirun_args(s)), dict(s.env), out))
    return jobs


# ------------------------------------------------------------------------------ measuring
@dataclass(frozen=True)
class RunFigures:
    """One training run: median over its non-warm-up epochs, s per iteration."""
    iteration_s: float
    comm_per_iteration_s: float


def run_figures(run_dir: Path) -> RunFigures:
    """Per-iteration time (slowest rank) and comm_s (mean over ranks), from epochs.parquet."""
    table = used_epochs(epoch_table(load_run(run_dir, read_power=False)))
    if table.empty:
        raise UserError(f"{run_dir}: no epoch after the warm-up (give more --epochs)")
    iterations = table["iterations_count"].to_numpy(dtype=float)
    return RunFigures(float(np.median(table["time_s"].to_numpy(dtype=float) / iterations)),
                      float(np.median(table["comm_s"].to_numpy(dtype=float) / iterations)))


def last_error_line(text: str) -> str:
    """The last line that says something: mpirun ends its reports with a rule of dashes."""
    lines = [ln.strip() for ln in text.splitlines() if sum(c.isalpha() for c in ln) >= 3]
    return (lines[-1] if lines else "no output")[:REASON_CHARS]


def run_job(job: Job, timeout_s: float) -> tuple[Any, str]:
    """Run one job: (its figures, "") or (None, why it failed)."""
    if job.out.is_dir():
        shutil.rmtree(job.out)
    elif job.out.exists():
        job.out.unlink()
    job.out.parent.mkdir(parents=True, exist_ok=True)
    try:
        res = subprocess.run(job.cmd, cwd=ROOT, env={**os.environ, **job.env}, capture_output=True, text=True,
                             timeout=timeout_s)
    except subprocess.TimeoutExpired:
        return None, f"ran past --timeout-s {timeout_s:g}"
    if res.returncode != 0:
        return None, f"exit {res.returncode}: {last_error_line(res.stderr or res.stdout)}"
    try:
        return (read_per_iteration_s(job.out) if job.kind == "floor" else run_figures(job.out)), ""
    except UserError as exc:
        return None, str(exc)


# ------------------------------------------------------------------------------ the table
@dataclass(frozen=True)
class Spread:
    """Median and range over repeats (NaN when no repeat gave a value)."""
    median: float
    low: float
    high: float
    count: int

    @classmethod
    def of(cls, values: list[float]) -> Spread:
        v = [x for x in values if x is not None and math.isfinite(x)]
        if not v:
            return cls(math.nan, math.nan, math.nan, 0)
        return cls(float(np.median(v)), float(min(v)), float(max(v)), len(v))

    def text(self, scale: float = 1.0, digits: int = 2, suffix: str = "") -> str:
        if not self.count:
            return "n/a"
        body = f"{self.median * scale:.{digits}f}{suffix}"
        return body if self.count == 1 else f"{body} ({self.low * scale:.{digits}f}..{self.high * scale:.{digits}f})"


@dataclass
class SettingResult:
    name: str
    what: str
    note: str
    iteration_s: Spread
    comm_per_iteration_s: Spread
    comm_over_floor_ratio: Spread
    weak_efficiency_ratio: Spread
    iteration_over_baseline_ratio: Spread
    errors: list[str]


def _no_nan(obj: Any) -> Any:
    """NaN (no value) as JSON null: strict JSON readers refuse NaN."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: _no_nan(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_no_nan(v) for v in obj]
    return obj


def _ratio(a: Any, b: Any) -> float:
    return a / b if a is not None and b is not None and b > 0 else math.nan


def summarise(plan: Plan, outcomes: dict[tuple[str, int], tuple[Any, str]]) -> tuple[list[SettingResult], dict]:
    """Per setting the spreads over repeats, each ratio taken within one repeat; and the
    references (1-rank time and MPI floor per repeat, s per iteration)."""
    reps = range(plan.repeats)
    one = [getattr(outcomes.get(("one-rank", r), (None, ""))[0], "iteration_s", None) for r in reps]
    floor = [outcomes.get(("mpi-floor", r), (None, ""))[0] for r in reps]
    base = [outcomes.get((BASELINE, r), (None, ""))[0] for r in reps]
    results = []
    for s in plan.settings:
        runs = [outcomes.get((s.name, r), (None, "not run")) for r in reps]
        figs = [value for value, _ in runs]
        errors = sorted({why for _, why in runs if why})
        it = [f.iteration_s if f else None for f in figs]
        comm = [f.comm_per_iteration_s if f else None for f in figs]
        results.append(SettingResult(
            s.name, s.what, s.note, Spread.of(it), Spread.of(comm),
            Spread.of([_ratio(c, fl) for c, fl in zip(comm, floor)]),
            Spread.of([_ratio(o, t) for o, t in zip(one, it)]),
            Spread.of([_ratio(t, b.iteration_s if b else None) for t, b in zip(it, base)]), errors))
    return results, {"one_rank_iteration_s": one, "mpi_floor_per_iteration_s": floor}


def markdown_table(plan: Plan, results: list[SettingResult], refs: dict, load: tuple[float, float]) -> str:
    ms = 1e3
    lines = [f"Horovod settings, {plan.ranks} ranks, {plan.particle}, {plan.repeats} repeat(s) of "
             f"{plan.epochs} epochs x {plan.iterations_per_epoch} iterations (medians, min..max over repeats; "
             f"load average {load[0]:.2f} at the start, {load[1]:.2f} at the end).",
             "",
             f"- raw MPI all-reduce of one iteration's messages (the floor): "
             f"{Spread.of(refs['mpi_floor_per_iteration_s']).text(ms, 3, ' ms')}",
             f"- 1-rank iteration (weak-scaling reference): {Spread.of(refs['one_rank_iteration_s']).text(ms, 1, ' ms')}",
             "",
             "| setting | what | iteration, ms | comm per iteration, ms | comm / MPI floor "
             f"(target <= {FLOOR_TARGET_RATIO:g}) | weak efficiency | iteration / baseline |",
             "|---|---|---|---|---|---|---|"]
    for r in results:
        if not r.iteration_s.count:
            why = "; ".join(r.errors) or "not run"
            lines.append(f"| {r.name} | {r.what} | could not run: {why}{(' - ' + r.note) if r.note else ''} "
                         "| | | | |")
            continue
        lines.append(f"| {r.name} | {r.what} | {r.iteration_s.text(ms, 1)} | {r.comm_per_iteration_s.text(ms, 2)} "
                     f"| {r.comm_over_floor_ratio.text(1, 2)} | {r.weak_efficiency_ratio.text(1, 3)} "
                     f"| {r.iteration_over_baseline_ratio.text(1, 3)} |")
        if r.errors:
            lines.append(f"| | failed repeats: {'; '.join(r.errors)} | | | | | |")
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------------- main
def parse_plan(argv: list[str] | None) -> tuple[Plan, bool, float]:
    parser = Parser("tools/horovod_knobs.py", __doc__)
    parser.add_argument("--settings", type=comma_list(str, "setting"), default=None,
                        help="comma list of settings, a combination joined by + (default: every setting "
                             f"and {', '.join(DEFAULT_COMBINATIONS)})")
    parser.add_argument("--repeats", type=positive_int, default=3, help="rounds of the interleaved plan")
    parser.add_argument("--epochs", type=int, default=6, help="epochs per run (the first is warm-up; >= 2)")
    parser.add_argument("--iterations-per-epoch", type=positive_int, default=12, help="iterations per epoch")
    parser.add_argument("--ranks", type=int, default=2, help="ranks of the data-parallel runs (>= 2)")
    parser.add_argument("--particle", choices=PARTICLE_NAMES, default=PARTICLE_PHOTONS, help="model trained")
    parser.add_argument("--timeout-s", type=float, default=1800.0, help="limit per run, s")
    parser.add_argument("--out", default="results/horovod-knobs", help="folder for runs, table and JSON")
    parser.add_argument("--dry-run", action="store_true", help="print the commands, run nothing")
    args = parser.parse_args(argv)
    if args.epochs < 2:
        raise UserError(f"--epochs {args.epochs}: needs >= 2 (the first epoch is warm-up)")
    if args.ranks < 2:
        raise UserError(f"--ranks {args.ranks}: needs >= 2 (one rank reduces nothing)")
    if not args.timeout_s > 0:
        raise UserError(f"--timeout-s {args.timeout_s}: needs > 0")
    known = single_settings(args.particle)
    names = args.settings if args.settings is not None else default_names(args.particle)
    if len(set(names)) != len(names):
        raise UserError(f"--settings {','.join(names)!r}: a setting is named twice")
    settings = [resolve_setting(n, known) for n in names]
    out = Path(args.out)
    plan = Plan(args.particle, args.ranks, args.repeats, args.epochs, args.iterations_per_epoch, settings,
                out if out.is_absolute() else ROOT / out)
    return plan, args.dry_run, args.timeout_s


def main(argv: list[str] | None = None) -> int:
    try:
        plan, dry_run, timeout_s = parse_plan(argv)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USER_ERROR
    jobs = build_jobs(plan)
    if dry_run:
        print("\n".join(job.shell() for job in jobs))
        return EXIT_OK
    load_start = os.getloadavg()[0]
    outcomes: dict[tuple[str, int], tuple[Any, str]] = {}
    for i, job in enumerate(jobs, 1):
        t0 = time.monotonic()
        value, why = run_job(job, timeout_s)
        outcomes[(job.name, job.repeat)] = (value, why)
        shown = why or (f"{value * 1e3:.3f} ms per iteration" if job.kind == "floor" else
                        f"{value.iteration_s * 1e3:.1f} ms per iteration, comm {value.comm_per_iteration_s * 1e3:.2f} ms")
        print(f"[{i}/{len(jobs)}] repeat {job.repeat + 1} {job.name}: {shown} "
              f"({time.monotonic() - t0:.0f} s, load {os.getloadavg()[0]:.2f})", flush=True)
    results, refs = summarise(plan, outcomes)
    table = markdown_table(plan, results, refs, (load_start, os.getloadavg()[0]))
    print(table)
    doc = {"schema": SCHEMA, "particle": plan.particle, "ranks": plan.ranks, "repeats": plan.repeats,
           "epochs": plan.epochs, "iterations_per_epoch": plan.iterations_per_epoch,
           "n_disc": TrainConfig().n_disc, "floor_target_ratio": FLOOR_TARGET_RATIO, **refs,
           "settings": [{**asdict(r), "env": s.env, "mca": s.mca, "run_flags": s.run_flags}
                        for r, s in zip(results, plan.settings)],
           "commands": [job.shell() for job in jobs]}
    plan.out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(plan.out / TABLE_FILE, table)
    atomic_write_json(plan.out / JSON_FILE, _no_nan(doc))
    print(f"wrote {plan.out / TABLE_FILE} and {plan.out / JSON_FILE}")
    references_missing = not any(refs["one_rank_iteration_s"]) or not any(refs["mpi_floor_per_iteration_s"])
    return EXIT_FAILURE if references_missing else EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
