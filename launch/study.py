"""Run a scaling study on this machine with mpirun, then its analysis.

    python -m launch.study --name local                       # the default study (make study)
    python -m launch.study --name quick --world-sizes 1,2 --engines horovod --epochs 3
    python -m launch.study --config my_study.toml --dry-run   # print the commands only
    python -m launch.study --profile quality --repeats 2      # time and energy to a quality target
    python -m launch.study --profile layout                   # ranks x threads per rank of a node

For every world size x mode x engine it starts ``python -m scaling.run`` (``mpirun -np N`` for
every N, one rank included, with one binding for the whole study) into
``<out_dir>/<name>/<engine>-<mode>-n<N>/``, runs the
all-reduce benchmark for each world size above one, then ``python -m analysis`` into
``<out_dir>/<name>/report/``. Output of every process goes to ``<out_dir>/<name>/logs/``.

``threads_per_rank = [T, ...]`` ([study]) runs every point once per T (replacing [run] threads),
into ``...-n<N>-t<T>/`` when more than one T is listed; a layout whose N x T exceeds this
machine's cores is left out with a note unless ``oversubscribe``. Pinned ranks of T > 1 threads
get ``--map-by slot:PE=T --bind-to core``; see ``binding`` for when a study is pinned.

``--repeats R`` runs every point R times, interleaved (every point once, then every point again),
repeats 2..R into ``<engine>-<mode>-n<N>-r<k>/``; the analysis pools the repeats of a point.

Re-running the same command resumes: completed runs are skipped, interrupted ones continue
(``scaling.run --resume``), failed ones and runs made with other settings or other code
(study.json keeps the arguments and the source hash of each run) start again; ``--force`` re-runs
everything, ``--reuse-stale`` keeps completed runs made by other code (said on their line).
A failed run is reported with the tail of its log and the study goes on; the exit status is
1 when any step failed, 3 when the study itself was interrupted.
"""
from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from common.atomic import atomic_write_json, atomic_write_text
from common.codeversion import code_version
from common.cli import Parser, positive_int
from common.runinfo import usable_cpus
from common.errors import EXIT_FAILURE, EXIT_INTERRUPTED, Interrupted, UserError, main_guard
from common.settings import add_section_arguments, resolve_sections, sections_to_dict
from common.vocab import (ENGINES, FINISHED_STATUSES, MODE_ENSEMBLE, MODES, PLACEMENT_ENV, RUN_MODES, RUN_JSON, STATUS_INTERRUPTED, STATUS_RUNNING, STUDY_JSON,
                          allreduce_bench_file)
from launch.common import (NAME_PATTERN, check_choices, check_name, find_executable,
                           fmt_duration, indent, is_root, python_executable, tail)
from launch.runargs import RunSettings, scaling_run_args
from launch.variants import Variant, check_variants, load_variants

PROFILE_PATTERN = "study_{profile}.toml"
DEFAULT_PROFILE = "default"
DEFAULT_CONFIG = Path(__file__).with_name(PROFILE_PATTERN.format(profile=DEFAULT_PROFILE))
# Seconds a run gets to checkpoint after SIGTERM (timeout, Ctrl-C) before it is killed.
TERM_GRACE_S = 30.0


@dataclass
class StudySettings:
    """Which runs a local study makes and how they are started."""
    name: str = field(default="local", metadata={"help": f"study name ({NAME_PATTERN}); results go to <out_dir>/<name>/"})
    out_dir: str = field(default="results", metadata={"help": "folder holding the studies"})
    world_sizes: list[int] = field(default_factory=lambda: [1, 2], metadata={"help": "ranks per run"})
    modes: list[str] = field(default_factory=lambda: list(MODES), metadata={
        "help": "strong, weak and/or ensemble (every rank trains its own GAN: scaling.run --mode ensemble)"})
    engines: list[str] = field(default_factory=lambda: list(ENGINES), metadata={"help": "horovod and/or mirrored"})
    timeout_s: float = field(default=600.0, metadata={"help": "seconds one run may take before it is stopped"})
    allreduce_bench: bool = field(default=True, metadata={"help": "run the all-reduce benchmark for each world size > 1"})
    analyse: bool = field(default=True, metadata={"help": "run the analysis into <study>/report at the end"})
    python: str = field(default="", metadata={"help": "interpreter of the runs (default: the one running the study)"})
    mpirun: str = field(default="mpirun", metadata={"help": "the mpirun command"})
    mpirun_args: list[str] = field(default_factory=list, metadata={"help": "extra mpirun arguments, comma separated"})
    allreduce_args: list[str] = field(default_factory=lambda: ["--repeats", "10", "--budget-s", "2"], metadata={
        "help": "arguments of scaling.allreduce_bench (kept short: the study only needs a rough fit)"})
    threads_per_rank: list[int] = field(default_factory=list, metadata={
        "help": "layouts of the node: every (N, mode, engine) point runs once per value, replacing [run] "
                "threads; run ids get -t<T> when more than one is listed (empty = [run] threads)"})
    oversubscribe: bool = field(default=False, metadata={
        "help": "with threads_per_rank: also run layouts needing more cores (N x threads) than this machine "
                "has, unpinned, instead of skipping them"})

    def check(self) -> None:
        try:
            check_name(self.name, "study name")
        except UserError as exc:
            raise ValueError(str(exc)) from None
        if not self.world_sizes or min(self.world_sizes) < 1:
            raise ValueError("world_sizes must list positive integers")
        if len(set(self.world_sizes)) != len(self.world_sizes):
            raise ValueError(f"world_sizes lists a value twice: {self.world_sizes}")
        check_choices(self.modes, RUN_MODES, "modes")
        check_choices(self.engines, ENGINES, "engines")
        if self.timeout_s <= 0:
            raise ValueError("timeout_s must be > 0")
        if any(t < 1 for t in self.threads_per_rank):
            raise ValueError(f"threads_per_rank must list positive integers, got {self.threads_per_rank}")
        if len(set(self.threads_per_rank)) != len(self.threads_per_rank):
            raise ValueError(f"threads_per_rank lists a value twice: {self.threads_per_rank}")


SECTIONS = {"study": StudySettings, "run": RunSettings}
# Variables every rank needs; mpirun passes them on with -x (needed once ranks span hosts).
FORWARD_ENV = ("OMP_NUM_THREADS", "PYTHONUNBUFFERED", "TF_CPP_MIN_LOG_LEVEL", PLACEMENT_ENV)


@dataclass
class Step:
    """One process the study starts: a training run, a benchmark or the analysis."""
    kind: str                     # "run" | "bench" | "analysis"
    label: str                    # what the progress line says
    argv: list[str]
    log: Path
    out: Path                     # run directory, benchmark file or report folder
    run_id: str = ""
    world: int = 1
    repeat: int = 1               # which measurement of its (engine, mode, N) point this run is
    threads: int | None = None    # threads per rank of its layout (None: [run] threads)
    variant: str = ""             # the [variants] entry this run measures ("" = none)
    resume: bool = False
    skip_reason: str = ""
    note: str = ""                # said on the progress line (e.g. why a run starts again)
    made_with: list[str] | None = None   # scaling.run arguments that produced the run directory
    made_by: dict[str, Any] | None = None    # code version (common.codeversion) that produced it
    code_now: dict[str, Any] | None = None   # code version this study would run it with
    placed_as: str | None = None  # placement (see ``placement``) of the ranks that produced it
    place_now: str | None = None  # placement this study starts it with
    stale: str = ""               # why the code that made the run directory is not today's
    status: str = "pending"       # pending | skipped | completed | failed | timeout | interrupted
    exit_code: int | None = None
    duration_s: float | None = None


def run_id(engine: str, mode: str, world: int, repeat: int = 1, threads: int | None = None,
           variant: str = "") -> str:
    """'horovod-weak-n2' for the first run of a point, 'horovod-weak-n2-r3' for its third repeat
    (the first keeps the plain name, so raising --repeats keeps the runs made already);
    'horovod-weak-n2-t4-r3' with ``threads`` (a study of several threads per rank);
    'horovod-weak-n1-b32-r2' for variant 'b32' (a study with [variants])."""
    return (f"{engine}-{mode}-n{world}" + (f"-t{threads}" if threads is not None else "")
            + (f"-{variant}" if variant else "")
            + (f"-r{repeat}" if repeat > 1 else ""))


def study_engines(study: StudySettings, mode: str) -> list[str]:
    """The engines a mode runs with: all, except for an ensemble. Its one-rank members reduce
    nothing, so every engine would train and time it the same way: it runs with the first only."""
    return study.engines[:1] if mode == MODE_ENSEMBLE else list(study.engines)


def study_dir(study: StudySettings) -> Path:
    return Path(study.out_dir).expanduser().absolute() / study.name


def study_threads(study: StudySettings, run: RunSettings) -> list[int]:
    """Threads per rank of the study's layouts: ``threads_per_rank``, else [run] ``threads``."""
    return list(study.threads_per_rank) or [run.threads]


def layout_fits(world: int, threads: int, cores: int) -> bool:
    """Whether N ranks of ``threads`` threads each get a core per thread (0 threads: unknown)."""
    return threads >= 1 and world * threads <= cores


def layouts(study: StudySettings, run: RunSettings, cores: int | None = None) -> list[tuple[int, int]]:
    """(N, threads per rank) of every layout the study runs, in order. With ``threads_per_rank``
    a layout needing more cores than there are is left out (it would not be that layout), unless
    ``oversubscribe``; without it every N runs, oversubscribed above the core count, as always."""
    cores = usable_cpus() if cores is None else cores
    every = [(w, t) for w in sorted(study.world_sizes) for t in study_threads(study, run)]
    if not study.threads_per_rank or study.oversubscribe:
        return every
    return [(w, t) for w, t in every if layout_fits(w, t, cores)]


def skipped_layouts(study: StudySettings, run: RunSettings, cores: int | None = None) -> list[str]:
    """One line per layout of ``threads_per_rank`` left out for want of cores."""
    cores = usable_cpus() if cores is None else cores
    run_now = set(layouts(study, run, cores))
    return [f"layout {w} rank(s) x {t} thread(s) needs {w * t} cores, {cores} usable: not run "
            "(--oversubscribe runs it unpinned)"
            for w in sorted(study.world_sizes) for t in study_threads(study, run) if (w, t) not in run_now]


def binding(study: StudySettings, run: RunSettings, cores: int | None = None) -> str:
    """mpirun's ``--bind-to`` for every run of the study: "core" or "none".

    One policy for every layout the study runs, decided by all of them: a pinned rank keeps its
    helper threads (input pipeline, energy sampler, TensorFlow's inter-op pool) on its own
    cores, so the single-rank baseline cannot borrow idle cores that the ranks of a larger run do
    not have. Pinning needs every layout to have a known thread count and a core per thread
    (N x threads <= cores); otherwise no run is pinned.
    """
    cores = usable_cpus() if cores is None else cores
    return "core" if all(layout_fits(w, t, cores) for w, t in layouts(study, run, cores)) else "none"


def _placement_args(study: StudySettings, run: RunSettings, cores: int, threads: int | None) -> list[str]:
    """mpirun's placement flags of one layout: pinned ranks of T > 1 threads get T cores each."""
    threads = run.threads if threads is None else threads
    bind = binding(study, run, cores)
    spread = ["--map-by", f"slot:PE={threads}"] if bind == "core" and threads > 1 else []
    return [*spread, "--bind-to", bind]


def placement(study: StudySettings, run: RunSettings, cores: int | None = None,
              threads: int | None = None) -> str:
    """How the ranks of a layout (``threads`` per rank; default [run] threads) are placed, as
    recorded in PLACEMENT_ENV and study.json: e.g. 'mpirun --map-by slot:PE=2 --bind-to core'."""
    cores = usable_cpus() if cores is None else cores
    return " ".join(["mpirun", *_placement_args(study, run, cores, threads)])


def launcher_prefix(study: StudySettings, run: RunSettings, world: int,
                    cores: int | None = None, root: bool | None = None, threads: int | None = None) -> list[str]:
    """The mpirun part of a command: every N, one rank included, starts the same way."""
    cores = usable_cpus() if cores is None else cores
    root = is_root() if root is None else root
    argv = [study.mpirun]
    if root:
        argv.append("--allow-run-as-root")
    argv += ["-np", str(world)]
    if world > cores:
        argv.append("--oversubscribe")
    # Always explicit: Open MPI's own default binds small jobs to cores and larger ones to sockets.
    argv += _placement_args(study, run, cores, threads)
    for var in FORWARD_ENV:
        argv += ["-x", var]
    return argv + list(study.mpirun_args)


def with_threads(run: RunSettings, threads: int | None) -> RunSettings:
    """``run`` with the threads per rank of a layout (None: unchanged)."""
    return run if threads is None or threads == run.threads else dataclasses.replace(run, threads=threads)


def child_env(run: RunSettings, base: dict[str, str] | None = None, where: str = "") -> dict[str, str]:
    """The environment of every step; ``where`` is the study's placement (PLACEMENT_ENV)."""
    env = dict(os.environ if base is None else base)
    if where:
        env[PLACEMENT_ENV] = where
    if run.threads > 0:
        env["OMP_NUM_THREADS"] = str(run.threads)
    else:
        env.setdefault("OMP_NUM_THREADS", "1")
    env["PYTHONUNBUFFERED"] = "1"
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")
    return env


def read_status(run_dir: Path) -> str | None:
    """The "status" in ``run_dir/run.json``; None when there is no readable run.json."""
    try:
        meta = json.loads((run_dir / RUN_JSON).read_text())
    except (OSError, ValueError):
        return None
    status = meta.get("status") if isinstance(meta, dict) else None
    return status if isinstance(status, str) else None


def _trainer_args(argv: list[str]) -> list[str]:
    """The scaling.run arguments of a command line, without --resume."""
    if "scaling.run" not in argv:
        return []
    return [a for a in argv[argv.index("scaling.run") + 1:] if a != "--resume"]


@dataclass
class EarlierRun:
    """What the last study.json in the study folder says made a run directory."""
    run_args: list[str]
    code_version: dict[str, Any] | None     # None: written before code versions were recorded
    placement: str | None


def earlier_runs(root: Path) -> dict[str, EarlierRun]:
    """The record of each run in ``root``'s study.json (empty when there is none readable)."""
    try:
        summary = json.loads((root / STUDY_JSON).read_text())
        return {s["run_id"]: EarlierRun(list(s["run_args"]), s.get("code_version") if isinstance(
                    s.get("code_version"), dict) else None, s.get("placement"))
                for s in summary["steps"] if s.get("kind") == "run" and s.get("run_args") is not None}
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return {}


def code_change(before: dict[str, Any] | None, now: dict[str, Any]) -> str:
    """Why the code that made a run is not the code of now ('' when it is the same)."""
    if before is None or not before.get("source_hash"):
        return "made by code of unknown version"
    if before["source_hash"] != now["source_hash"]:
        return f"made by other code (sources {str(before['source_hash'])[:12]}, now {now['source_hash'][:12]})"
    return ""


def plan(study: StudySettings, run: RunSettings, force: bool = False,
         python: str | None = None, reuse_stale: bool = False,
         code: dict[str, Any] | None = None, repeats: int = 1, cores: int | None = None,
         variants: list[Variant] | None = None) -> list[Step]:
    """Every step of the study in order: benchmarks, training runs, analysis.

    ``code``: the code version the runs will be made with (default: the sources beside this
    package); a completed run made by other code runs again unless ``reuse_stale``.
    ``repeats``: runs of every (engine, mode, N) point, interleaved (all points once, then all
    again, ...) so that the machine drifting during the study spreads over every point instead
    of looking like scaling. Each repeat is its own run directory, skipped or resumed on its own.
    ``cores``: the cores the layouts are fitted to (default: ``usable_cpus()``).
    ``variants``: [variants] entries; every point runs once per variant, interleaved inside each
    repeat (launch.variants), into ``<point>-<variant>/``.
    """
    if repeats < 1:
        raise UserError(f"--repeats must be >= 1, got {repeats}")
    python = python or study.python or python_executable()
    root = study_dir(study)
    logs = root / "logs"
    earlier = earlier_runs(root)
    code = code or code_version().to_dict()
    cores = usable_cpus() if cores is None else cores
    # With threads_per_rank every layout carries its own threads; without, [run] threads (None).
    listed = bool(study.threads_per_rank)
    ran = layouts(study, run, cores)
    if listed and not ran:
        raise UserError(f"threads_per_rank {study.threads_per_rank}: no layout of world_sizes {study.world_sizes} "
                        f"fits on the {cores} usable cores (N x threads <= cores); --oversubscribe runs them anyway")
    steps: list[Step] = []
    if study.allreduce_bench:
        for world in sorted({w for w, _ in ran if w > 1}):
            out = root / allreduce_bench_file(world)
            # The benchmark is single-threaded: placed like the thinnest layout of its N.
            threads = min(t for w, t in ran if w == world) if listed else None
            argv = launcher_prefix(study, run, world, cores, threads=threads) + [
                python, "-m", "scaling.allreduce_bench", *study.allreduce_args, "--out", str(out)]
            step = Step("bench", f"all-reduce benchmark n={world}", argv, logs / f"allreduce-n{world}.log",
                        out, world=world, threads=threads, place_now=placement(study, run, cores, threads))
            if out.exists() and not force:
                step.skip_reason = "measured earlier"
            steps.append(step)
    check_variants(variants or [], run)
    each_variant: list[Variant | None] = list(variants or []) or [None]
    for world in sorted(study.world_sizes):
        for mode in study.modes:
            for v in each_variant:
                try:
                    (v.run_settings(run) if v else run).check_world(world, mode)
                except ValueError as exc:
                    raise UserError((f"[variants] {v.name}: " if v else "") + str(exc)) from None
    points = [(world, threads if listed else None, mode, engine) for world, threads in ran
              for mode in study.modes for engine in study_engines(study, mode)]
    # Several threads per rank: the run id and label name them (one value: the plain names).
    suffix = len(study.threads_per_rank) > 1
    # The repeat is the outer loop: 1, 2, 1, 2, ... never 1, 1, 2, 2.
    for repeat in range(1, repeats + 1):
        for variant, (world, threads, mode, engine) in ((v, p) for v in each_variant for p in points):
            vname = variant.name if variant else ""
            vrun = variant.run_settings(run) if variant else run
            if variant and "threads" in variant.run_overrides and not listed:
                threads = vrun.threads     # the variant's threads reach its ranks (OMP_NUM_THREADS, placement)
            rid = run_id(engine, mode, world, repeat, threads if suffix else None, vname)
            out = root / rid
            status = read_status(out)
            where = placement(study, vrun, cores, threads)
            args = scaling_run_args(with_threads(vrun, threads), engine=engine, mode=mode, out=str(out),
                                    study=study.name) + (variant.extra_args() if variant else [])
            before = earlier.get(rid)
            # A run made with other settings is not reused: it would not measure these ones.
            changed = before is not None and (before.run_args != args or
                                              before.placement not in (None, where))
            reusable = status in (*FINISHED_STATUSES, STATUS_INTERRUPTED, STATUS_RUNNING)
            stale = code_change(before.code_version if before else None, code) if reusable else ""
            # Other code may measure differently: never resume it, reuse it only when asked.
            keep = not force and not changed and (not stale or (reuse_stale and status in FINISHED_STATUSES))
            resume = keep and status in (STATUS_INTERRUPTED, STATUS_RUNNING)
            argv = launcher_prefix(study, vrun, world, cores, threads=threads) + [python, "-m", "scaling.run", *args]
            if resume:
                argv.append("--resume")
            label = (f"{engine} {mode} n={world}" + (f" t={threads}" if suffix else "") + (f" [{vname}]" if vname else "")
                     + (f" repeat {repeat}/{repeats}" if repeats > 1 else ""))
            step = Step("run", label, argv, logs / f"{rid}.log", out,
                        run_id=rid, world=world, repeat=repeat, threads=threads, variant=vname, resume=resume,
                        made_with=before.run_args if status and before else None,
                        made_by=before.code_version if status and before else None, code_now=code,
                        placed_as=before.placement if status and before else None, place_now=where,
                        stale=stale if not force else "")
            if status in FINISHED_STATUSES and keep:
                step.skip_reason = (f"completed earlier; STALE, {stale}: reused (--reuse-stale)" if stale
                                    else "completed earlier")
            elif changed and status is not None:
                step.note = "settings changed: starting again"
            elif stale and not force:
                step.note = f"{stale}: starting again"
            steps.append(step)
    if study.analyse:
        report = root / "report"
        steps.append(Step("analysis", "analysis", [python, "-m", "analysis", str(root), "--out", str(report)],
                          logs / "analysis.log", report))
    return steps


# ---------------------------------------------------------------------------------------------
# running


class _Stop(Exception):
    """SIGTERM/SIGINT reached the study: stop the current step and leave resumable."""


def _raise_stop(signum: int, _frame: Any) -> None:
    raise _Stop(signal.Signals(signum).name)


def _kill_group(proc: subprocess.Popen, grace_s: float) -> None:
    """SIGTERM the step's process group (scaling.run checkpoints), then SIGKILL after grace_s."""
    for sig, wait_s in ((signal.SIGTERM, grace_s), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=wait_s)
            return
        except subprocess.TimeoutExpired:
            continue


class Progress:
    """Progress lines: '[3/8] horovod strong n=2  ... done in 41 s (elapsed 2:10, ~4:30 left)'."""

    def __init__(self, steps: list[Step], stream=None):
        self.steps = steps
        self.stream = stream or sys.stdout
        self.t0 = time.monotonic()
        self.live = self.stream.isatty()
        self.width = max(len(s.label) for s in steps) if steps else 0

    def _prefix(self, step: Step) -> str:
        n = len(self.steps)
        return f"[{self.steps.index(step) + 1:>{len(str(n))}}/{n}] {step.label:<{self.width}}  ..."

    # Seconds guessed for a kind of step before one of them has run (runs have no guess).
    GUESS_S = {"bench": 15.0, "analysis": 15.0}

    def _estimate(self, step: Step, done: list[Step]) -> float:
        """Expected seconds of a pending step: the mean of finished steps of its kind, preferring
        those of the same world size (more ranks on few cores take longer); NaN if unknown."""
        same = [s.duration_s for s in done if s.world == step.world]
        pool = same or [s.duration_s for s in done]
        if pool:
            return sum(pool) / len(pool)
        return self.GUESS_S.get(step.kind, float("nan"))

    def remaining_s(self) -> float:
        """Expected seconds for the steps still to run (NaN until a training run has finished:
        their length depends on the settings)."""
        total = 0.0
        for step in self.steps:
            if step.status != "pending" or step.skip_reason:
                continue
            done = [s for s in self.steps if s.kind == step.kind and s.duration_s is not None
                    and s.status != "skipped"]
            total += self._estimate(step, done)
        return total

    def begin(self, step: Step) -> None:
        self.stream.write(self._prefix(step) + (" " if not self.live else ""))
        self.stream.flush()

    def tick(self, step: Step, seconds: float, detail: str = "") -> None:
        if self.live:
            extra = f", {detail}" if detail else ""
            self.stream.write(f"\r{self._prefix(step)} {seconds:.0f} s{extra}\033[K")
            self.stream.flush()

    def end(self, step: Step, what: str) -> None:
        elapsed = time.monotonic() - self.t0
        left = self.remaining_s()
        times = f"elapsed {fmt_duration(elapsed)}" + (f", ~{fmt_duration(left)} left" if left > 0 else "")
        line = f"{what} ({times})"
        if self.live:
            self.stream.write(f"\r{self._prefix(step)} {line}\033[K\n")
        else:
            self.stream.write(f"{line}\n")
        self.stream.flush()


_EPOCH_LINE = re.compile(r"^epoch (\d+)/(\d+)")


def _progress_detail(step: Step) -> str:
    """How far a training run is, from the last 'epoch i/n' line scaling.run has logged."""
    if step.kind != "run":
        return ""
    for line in reversed(tail(step.log, 6).splitlines()):
        m = _EPOCH_LINE.match(line)
        if m:
            return f"epoch {m.group(1)}/{m.group(2)} done"
    return ""


def run_step(step: Step, env: dict[str, str], timeout_s: float, progress: Progress) -> None:
    """Start one step, wait for it (or its timeout), record status, exit code and duration."""
    step.log.parent.mkdir(parents=True, exist_ok=True)
    if step.kind == "run" and not step.resume and step.out.exists():
        # A failed, partial or forced run starts from an empty directory; its log keeps the history.
        shutil.rmtree(step.out)
    if step.kind == "bench" and step.out.exists():
        step.out.unlink()
    if step.kind == "run":
        step.made_with = _trainer_args(step.argv)
        step.made_by = step.code_now
    step.placed_as = step.place_now
    t0 = time.monotonic()
    with open(step.log, "ab") as log:
        log.write(f"\n=== {time.strftime('%Y-%m-%d %H:%M:%S')} {' '.join(step.argv)}\n".encode())
        log.flush()
        proc = subprocess.Popen(step.argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                env=env, start_new_session=True)
    try:
        while True:
            try:
                rc = proc.wait(timeout=1.0)
                break
            except subprocess.TimeoutExpired:
                elapsed = time.monotonic() - t0
                if elapsed > timeout_s:
                    _kill_group(proc, TERM_GRACE_S)
                    step.status, step.exit_code = "timeout", proc.returncode
                    step.duration_s = time.monotonic() - t0
                    return
                progress.tick(step, elapsed, _progress_detail(step))
    except BaseException:
        _kill_group(proc, TERM_GRACE_S)
        step.status, step.exit_code = "interrupted", proc.returncode
        step.duration_s = time.monotonic() - t0
        raise
    step.exit_code = rc
    step.duration_s = time.monotonic() - t0
    if rc == 0:
        step.status = "completed"
    elif rc == EXIT_INTERRUPTED:
        step.status = "interrupted"
    else:
        step.status = "failed"


def _describe(step: Step, timeout_s: float) -> str:
    took = f"{step.duration_s:.0f} s" if step.duration_s is not None else "?"
    if step.status == "completed":
        return f"done in {took}" + (" (resumed)" if step.resume else "") + (f" ({step.note})" if step.note else "")
    if step.status == "timeout":
        return f"TIMED OUT after {timeout_s:.0f} s (exit {step.exit_code})"
    if step.status == "interrupted":
        return f"INTERRUPTED (exit {step.exit_code}) after {took}; re-run to resume"
    return f"FAILED (exit {step.exit_code}) after {took}"


def write_summary(root: Path, steps: list[Step], resolved: dict[str, Any]) -> None:
    """study.json: the resolved configuration and what happened to every step; ``run_args``,
    ``code_version`` and ``placement`` say what made each run directory (compared on the next
    invocation)."""
    atomic_write_json(root / STUDY_JSON, {
        "config": sections_to_dict(resolved),
        "repeats": max((s.repeat for s in steps if s.kind == "run"), default=1),
        "steps": [{"kind": s.kind, "label": s.label, "run_id": s.run_id, "world_size": s.world,
                   "repeat": s.repeat, "variant": s.variant, "out": str(s.out), "log": str(s.log), "argv": s.argv, "status": s.status,
                   "exit_code": s.exit_code, "duration_s": s.duration_s, "resumed": s.resume,
                   "run_args": s.made_with, "code_version": s.made_by,
                   "placement": s.placed_as}
                  for s in steps],
    })


def _check_environment(study: StudySettings, steps: list[Step]) -> None:
    # Every run and benchmark starts under mpirun, one rank included (see ``binding``).
    if any(s.kind in ("run", "bench") and not s.skip_reason for s in steps) and find_executable(study.mpirun) is None:
        raise UserError(f"'{study.mpirun}' not found: install Open MPI (Debian: apt-get install openmpi-bin "
                        "libopenmpi-dev) or load an MPI module")
    # The benchmark only feeds projections: without it the study still makes sense.
    if importlib.util.find_spec("scaling.allreduce_bench") is None:
        for s in steps:
            if s.kind == "bench":
                s.skip_reason = "scaling.allreduce_bench is not installed"
    needed = {"run": "scaling.run", "analysis": "analysis"}
    for kind, module in needed.items():
        if any(s.kind == kind and not s.skip_reason for s in steps) and importlib.util.find_spec(module) is None:
            raise UserError(f"module {module} is not importable with {python_executable()}: run `make install`")


def execute(steps: list[Step], study: StudySettings, run: RunSettings,
            resolved: dict[str, Any], stream=None) -> int:
    """Run every step; report failures and continue; analysis runs on whatever completed."""
    root = study_dir(study)
    root.mkdir(parents=True, exist_ok=True)
    cores = usable_cpus()
    progress = Progress(steps, stream)
    out = progress.stream
    runs = [s for s in steps if s.kind == "run"]
    repeats = max((s.repeat for s in runs), default=1)
    each = f"{repeats} repeats, interleaved; " if repeats > 1 else ""
    threads = f"threads per rank {', '.join(map(str, study.threads_per_rank))}; " if study.threads_per_rank else ""
    named = list(dict.fromkeys(s.variant for s in runs if s.variant))
    threads += f"variants {', '.join(named)}; " if named else ""
    out.write(f"study '{study.name}': {len(runs)} runs ({each}world sizes {', '.join(map(str, study.world_sizes))}; "
              f"{threads}{', '.join(study.modes)}; {', '.join(study.engines)}; {run.epochs} epochs x "
              f"{run.iterations_per_epoch} iterations) -> {root}\n")
    for line in skipped_layouts(study, run, cores):
        out.write(f"  {line}\n")
    for s in runs:
        if s.stale:
            what = "REUSED as it is (--reuse-stale)" if s.skip_reason else "starting again"
            out.write(f"  {s.label}: {s.stale}: {what}\n")
    out.flush()
    atomic_write_text(root / "study.toml", _to_toml(sections_to_dict(resolved)))
    old = {sig: signal.signal(sig, _raise_stop) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        for step in steps:
            if step.kind == "analysis" and not any(s.kind == "run" and s.status in ("completed", "skipped")
                                                   for s in steps):
                step.status = "skipped"
                progress.begin(step)
                progress.end(step, "skipped: no run completed")
                continue
            progress.begin(step)
            if step.skip_reason:
                step.status = "skipped"
                progress.end(step, f"skipped ({step.skip_reason})")
                continue
            timeout = study.timeout_s if step.kind == "run" else max(study.timeout_s, 300.0)
            # Each layout's threads and placement reach its ranks (OMP_NUM_THREADS, PLACEMENT_ENV).
            env = child_env(with_threads(run, step.threads),
                            where=step.place_now or placement(study, run, cores, step.threads))
            run_step(step, env, timeout, progress)
            progress.end(step, _describe(step, timeout))
            if step.status != "completed":
                log_tail = tail(step.log, 15)
                out.write(f"    log: {step.log}\n{indent(log_tail, '    | ')}\n" if log_tail
                          else f"    log: {step.log} (empty)\n")
                out.flush()
            write_summary(root, steps, resolved)
    except _Stop as exc:
        out.write(f"\nstudy interrupted ({exc}); run the same command again to resume\n")
        write_summary(root, steps, resolved)
        raise Interrupted(f"study '{study.name}' stopped by {exc}") from None
    finally:
        for sig, handler in old.items():
            signal.signal(sig, handler)
    write_summary(root, steps, resolved)
    bad = [s for s in steps if s.status not in ("completed", "skipped")]
    report = root / "report"
    if any(s.kind == "analysis" and s.status == "completed" for s in steps):
        out.write(f"report: {report}/report.html ({report}/report.md, plots in {report})\n")
    if bad:
        out.write(f"{len(bad)} step(s) did not complete: {', '.join(s.label for s in bad)} (logs in {root / 'logs'})\n")
        out.flush()
        return EXIT_FAILURE
    out.flush()
    return 0


def _to_toml(tables: dict[str, dict[str, Any]]) -> str:
    """A small TOML writer for the flat tables of a resolved configuration."""
    def value(v: Any) -> str:
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, (int, float)):
            return repr(v)
        if isinstance(v, list):
            return "[" + ", ".join(value(x) for x in v) + "]"
        return json.dumps(str(v))  # a JSON string is a valid TOML basic string

    parts = ["# Resolved configuration of this study (written by python -m launch.study)."]
    for name, table in tables.items():
        parts.append(f"\n[{name}]")
        parts.extend(f"{k} = {value(v)}" for k, v in table.items())
    return "\n".join(parts) + "\n"


def profiles() -> dict[str, Path]:
    """The study profiles shipped beside this module: ``launch/study_<name>.toml`` by name."""
    prefix, suffix = PROFILE_PATTERN.split("{profile}")
    return {p.name[len(prefix):-len(suffix)]: p for p in sorted(DEFAULT_CONFIG.parent.glob(PROFILE_PATTERN.format(profile="*")))}


def profile_path(name: str) -> Path:
    """The TOML file of profile ``name``; a name that is not shipped is a ``UserError``."""
    known = profiles()
    if name not in known:
        raise UserError(f"--profile: unknown profile {name!r} (known: {', '.join(known)})")
    return known[name]


def build_parser() -> argparse.ArgumentParser:
    p = Parser(
        "python -m launch.study",
        description="Run a local scaling study with mpirun (world sizes x strong/weak x engines), then "
                    "the analysis. Settings: the study profile (--profile: launch/study_<profile>.toml), then the keys "
                    "a --config file names, then flags.",
        epilog="examples:\n  python -m launch.study --name local\n"
               "  python -m launch.study --name quick --world-sizes 1,2 --engines horovod --epochs 3 "
               "--iterations-per-epoch 5\n  python -m launch.study --profile quality --repeats 2\n"
               "  python -m launch.study --config my_study.toml --dry-run")
    p.add_argument("--profile", default=DEFAULT_PROFILE, help="the shipped settings to start from: "
                   "launch/study_<profile>.toml; 'default' is the quick throughput study (make study), "
                   "'quality' the time-to-quality study, 'layout' the ranks x threads layouts of a node "
                   "(default: %(default)s)")
    p.add_argument("--config", type=Path, help="study TOML with [study] and [run] tables")
    p.add_argument("--force", action="store_true", help="re-run completed runs (their directories are replaced)")
    p.add_argument("--reuse-stale", action="store_true", help="keep completed runs made by other code (said on their line)")
    p.add_argument("--dry-run", action="store_true", help="print the commands without running them")
    p.add_argument("--repeats", type=positive_int, default=1, help="runs of every (engine, mode, N) point, interleaved: "
                   "1, 2, 1, 2, ...; repeats 2.. go to <run-id>-r<k>/ (default: 1)")
    add_section_arguments(p, SECTIONS)
    return p


@main_guard
def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    resolved = resolve_sections(SECTIONS, args.config, args, profile=profile_path(args.profile),
                                read_by_caller=("variants",))
    study: StudySettings = resolved["study"]
    run: RunSettings = resolved["run"]
    variants = load_variants(profile_path(args.profile), args.config)
    steps = plan(study, run, force=args.force, reuse_stale=args.reuse_stale, repeats=args.repeats,
                 variants=variants)
    if args.dry_run:
        import shlex

        for line in skipped_layouts(study, run):
            print(f"# {line}")
        for i, step in enumerate(steps, 1):
            note = f"  # skipped: {step.skip_reason}" if step.skip_reason else (f"  # {step.note}" if step.note else "")
            print(f"[{i}/{len(steps)}] {step.label}{note}\n    {shlex.join(step.argv)} > {shlex.quote(str(step.log))}")
        return 0
    _check_environment(study, steps)
    return execute(steps, study, run, resolved)


if __name__ == "__main__":
    sys.exit(main())
