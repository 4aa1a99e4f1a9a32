"""Write (and optionally submit) one Slurm batch job per sweep point, plus the analysis job.

    python -m launch.sweep --config launch/sweep_example.toml --dry-run   # print the scripts
    python -m launch.sweep --config my_sweep.toml                         # write them + submit.sh
    python -m launch.sweep --config my_sweep.toml --submit                # ... and sbatch them
    python -m launch.sweep --nodes 1,2 --engines horovod --submit --wait  # return when the report is done

A point is (nodes, mode, engine); its job runs
``srun --mpi=pmix python -m scaling.run ... --out <out_dir>/<name>/<engine>-<mode>-N<nodes>x<tasks>``
(inside ``apptainer exec`` when a container image is set). The analysis job depends on all of
them (``--dependency=afterany``) and writes ``<out_dir>/<name>/report/``.

A sweep file with a ``[campaign]`` table (launch/campaign.py describes it) writes a campaign
instead of the points: many GANs as one job array (one GAN per array task, run directories
``<out_dir>/<name>/members/<member>/``) or as one packed ``scaling.run --mode ensemble`` job.

GPU jobs give every rank one GPU (``--gpus-per-task=1``, ``srun --gpu-bind``) and, by default,
the node's cores divided by its GPUs. Before training, every job runs ``scaling.preflight`` on
the same ranks and stops (no requeue) when it fails.

Preemption and time limits: every job asks Slurm for SIGUSR1 shortly before its end
(``--signal=USR1@<s>``, delivered to the training processes), scaling.run checkpoints and exits
3, and the script requeues its own job (``--requeue``); the restarted script finds run.json and
passes ``--resume``. A failed start is requeued the same way until the job has failed the same
way (the status its run wrote, else the exit code) ``max_same_failures`` times in a row. Every value written into a script is quoted with shlex.quote; names are
restricted to letters, digits, '.', '_' and '-'.
"""
from __future__ import annotations

import argparse
import re
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

from common.atomic import atomic_write_text
from common.cli import Parser
from common.errors import EXIT_FAILURE, UserError, main_guard
from common.settings import add_section_arguments, resolve_sections
from common.vocab import ENGINES, FINISHED_STATUSES, MODES, RUN_JSON, allreduce_bench_file
from launch.common import (NAME_PATTERN, check_choices, check_name, find_executable,
                           python_executable)
from launch import campaign as cmp
from launch.runargs import RunSettings, absolute, scaling_run_args
from launch.study import read_status

_SLURM_NAME_RE = re.compile(r"^[A-Za-z0-9._-]*$")
# srun --gpu-bind values offered: 'closest' shows a rank the GPUs of its NUMA domain (one, or
# several where a domain has several: scaling.run then picks one per local rank); 'per_task'
# exactly one GPU per rank, in task order; 'none' every GPU of the node, for sites where a rank
# restricted to its own GPU loses NCCL's peer-to-peer path to the others.
GPU_BINDS = ("closest", "per_task", "none")
_TIME_RE = re.compile(r"^(?:(\d+)-)?(\d+)(?::(\d{1,2}))?(?::(\d{1,2}))?$")


@dataclass
class SweepSettings:
    """The Slurm side of a sweep: which points, what each job asks for, where results go."""
    name: str = field(default="sweep", metadata={"help": f"study name ({NAME_PATTERN}); results go to <out_dir>/<name>/"})
    out_dir: str = field(default="results", metadata={"help": "folder holding the studies (on a shared filesystem)"})
    nodes: list[int] = field(default_factory=lambda: [1, 2, 4], metadata={"help": "node counts, one job each (x modes x engines)"})
    tasks_per_node: int = field(default=1, metadata={"help": "ranks per node (usually one per GPU)"})
    gpus_per_node: int = field(default=0, metadata={
        "help": "GPUs of one node (0 = CPU only); every rank gets one GPU of its own (--gpus-per-task=1)"})
    cores_per_node: int = field(default=0, metadata={
        "help": "CPU cores of one node (0 = not given); sets the default cpus_per_task"})
    cpus_per_task: int = field(default=0, metadata={
        "help": "cores per rank (0 = cores_per_node / gpus_per_node with GPUs, cores_per_node / "
                "tasks_per_node without, 1 when cores_per_node is not given on CPU nodes)"})
    gpu_bind: str = field(default="closest", metadata={
        "choices": GPU_BINDS, "help": "srun --gpu-bind of GPU jobs: closest (each rank sees the GPUs nearest its "
                "cores), per_task (exactly one GPU per rank, --gpu-bind=per_task:1) or none (each rank sees "
                "every GPU of the job on its node)"})
    modes: list[str] = field(default_factory=lambda: list(MODES), metadata={"help": "strong and/or weak"})
    engines: list[str] = field(default_factory=lambda: list(ENGINES), metadata={"help": "horovod and/or mirrored"})
    time_limit: str = field(default="00:30:00", metadata={"help": "time limit per training job ([D-]HH:MM:SS or minutes)"})
    analysis_time_limit: str = field(default="00:20:00", metadata={"help": "time limit of the analysis job"})
    partition: str = field(default="", metadata={"help": "Slurm partition (empty = the cluster's default)"})
    account: str = field(default="", metadata={"help": "Slurm account to charge"})
    qos: str = field(default="", metadata={"help": "Slurm quality of service"})
    exclusive: bool = field(default=False, metadata={"help": "ask for whole nodes (recommended for timing)"})
    sbatch_options: list[str] = field(default_factory=list, metadata={
        "help": "extra '#SBATCH' options, e.g. --constraint=gpu (each must start with --)"})
    setup: list[str] = field(default_factory=list, metadata={
        "help": "shell lines run before srun, verbatim (e.g. 'module load openmpi'); they are code, not quoted"})
    container: str = field(default="", metadata={"help": "Apptainer image; runs use 'apptainer exec' with it"})
    binds: list[str] = field(default_factory=list, metadata={
        "help": "apptainer --bind values, e.g. /scratch/data or /sys/class/powercap"})
    python: str = field(default="", metadata={"help": "interpreter in the jobs (default: this one, or python3 in the container)"})
    mpi: str = field(default="pmix", metadata={"help": "srun --mpi plugin (Open MPI needs pmix)"})
    signal_before_s: int = field(default=180, metadata={"help": "seconds before the time limit at which SIGUSR1 asks runs to checkpoint"})
    max_requeues: int = field(default=3, metadata={"help": "times a job requeues itself (after an interruption or a failure)"})
    max_same_failures: int = field(default=2, metadata={
        "help": "a failed start is requeued (and resumes) until the job has failed the same way "
                "(the status its run wrote, else the exit code) this many times in a row; 1 = never "
                "requeue a failure"})
    preflight: bool = field(default=True, metadata={
        "help": "run 'python -m scaling.preflight' on every rank before training and stop the job "
                "when it fails (false: skip it, for allocations you have checked yourself)"})
    preflight_args: list[str] = field(default_factory=list, metadata={
        "help": "extra scaling.preflight options, e.g. --network analysis/projection/networks/infiniband_hdr.toml"})
    allreduce_bench: bool = field(default=True, metadata={"help": "measure all-reduce once per node count > 1"})

    def check(self) -> None:
        try:
            check_name(self.name, "study name")
        except UserError as exc:
            raise ValueError(str(exc)) from None
        if not self.nodes or min(self.nodes) < 1 or len(set(self.nodes)) != len(self.nodes):
            raise ValueError("nodes must list distinct positive integers")
        if self.tasks_per_node < 1 or min(self.cpus_per_task, self.gpus_per_node, self.cores_per_node) < 0:
            raise ValueError("tasks_per_node must be >= 1; cpus_per_task, gpus_per_node and cores_per_node >= 0")
        if self.gpus_per_node and self.tasks_per_node > self.gpus_per_node:
            raise ValueError(f"tasks_per_node ({self.tasks_per_node}) > gpus_per_node ({self.gpus_per_node}): "
                             "every rank needs a GPU of its own (ranks sharing a GPU measure each other)")
        if self.gpus_per_node and not (self.cpus_per_task or self.cores_per_node):
            raise ValueError("gpus_per_node > 0 needs cores_per_node (cores of one node) or cpus_per_task")
        if self.cores_per_node and self.rank_cpus() * self.tasks_per_node > self.cores_per_node:
            raise ValueError(f"cpus_per_task ({self.rank_cpus()}) x tasks_per_node ({self.tasks_per_node}) "
                             f"> cores_per_node ({self.cores_per_node})")
        check_choices([self.gpu_bind], GPU_BINDS, "gpu_bind")
        if self.max_same_failures < 1:
            raise ValueError("max_same_failures must be >= 1")
        check_choices(self.modes, MODES, "modes")
        check_choices(self.engines, ENGINES, "engines")
        for key in ("partition", "account", "qos"):
            if not _SLURM_NAME_RE.match(getattr(self, key)):
                raise ValueError(f"{key} {getattr(self, key)!r}: use only letters, digits, '.', '_' and '-'")
        if not re.match(r"^[a-z0-9_]+$", self.mpi):
            raise ValueError(f"mpi {self.mpi!r} is not a Slurm MPI plugin name")
        limit = time_limit_s(self.time_limit, "time_limit")
        time_limit_s(self.analysis_time_limit, "analysis_time_limit")
        if not 0 <= self.signal_before_s < limit:
            raise ValueError(f"signal_before_s ({self.signal_before_s}) must be below the time limit ({limit} s)")
        if self.max_requeues < 0:
            raise ValueError("max_requeues must be >= 0")
        for opt in self.sbatch_options:
            if not opt.startswith("--") or any(c in opt for c in "\n\r"):
                raise ValueError(f"sbatch_options entry {opt!r}: one option per entry, starting with --")
        for line in self.setup + self.binds + self.preflight_args + [self.container, self.python, self.out_dir]:
            if any(c in line for c in "\n\r\0"):
                raise ValueError(f"{line!r}: line breaks are not allowed")

    def rank_cpus(self) -> int:
        """Cores per rank: cpus_per_task, or the node's cores shared by its GPUs (CPU nodes: by its ranks)."""
        if self.cpus_per_task:
            return self.cpus_per_task
        if not self.cores_per_node:
            return 1
        return max(1, self.cores_per_node // (self.gpus_per_node or self.tasks_per_node))


@dataclass
class SweepRunSettings(RunSettings):
    """[run] for cluster sweeps: longer runs than the local study, threads from the allocation."""
    epochs: int = field(default=6, metadata={"help": "epochs per run, warm-up included"})
    iterations_per_epoch: int = field(default=100, metadata={"help": "training iterations per epoch"})
    global_batch: int = field(default=1024, metadata={"help": "strong scaling: showers per critic step over all ranks"})
    synthetic_events: int = field(default=50000, metadata={"help": "synthetic showers generated when no data file is given"})
    threads: int = field(default=0, metadata={"help": "TensorFlow threads per rank (0 = let scaling.run decide from --cpus-per-task)"})


SECTIONS = {"sweep": SweepSettings, "run": SweepRunSettings}


def time_limit_s(text: str, key: str) -> int:
    """Slurm time ('minutes', 'MM:SS', 'HH:MM:SS', 'D-HH', 'D-HH:MM', 'D-HH:MM:SS') in seconds."""
    m = _TIME_RE.match(text.strip())
    if not m:
        raise ValueError(f"{key} {text!r}: use [D-]HH:MM:SS, MM:SS or minutes")
    days, a, b, c = m.groups()
    parts = [int(x) for x in (a, b, c) if x is not None]
    if days is not None:          # D-HH[:MM[:SS]]
        h, mi, s = (parts + [0, 0])[:3]
        seconds = ((int(days) * 24 + h) * 60 + mi) * 60 + s
    elif len(parts) == 1:         # minutes
        seconds = parts[0] * 60
    elif len(parts) == 2:         # MM:SS
        seconds = parts[0] * 60 + parts[1]
    else:                         # HH:MM:SS
        seconds = (parts[0] * 60 + parts[1]) * 60 + parts[2]
    if seconds <= 0:
        raise ValueError(f"{key} {text!r} must be longer than zero")
    return seconds


@dataclass
class Point:
    engine: str
    mode: str
    nodes: int
    tasks_per_node: int

    @property
    def world(self) -> int:
        return self.nodes * self.tasks_per_node

    @property
    def run_id(self) -> str:
        return f"{self.engine}-{self.mode}-N{self.nodes}x{self.tasks_per_node}"


def points(sweep: SweepSettings, run: RunSettings) -> list[Point]:
    pts = []
    for nodes in sorted(sweep.nodes):
        for mode in sweep.modes:
            for engine in sweep.engines:
                p = Point(engine, mode, nodes, sweep.tasks_per_node)
                try:
                    run.check_world(p.world, mode)
                except ValueError as exc:
                    raise UserError(str(exc)) from None
                pts.append(p)
    return pts


def study_dir(sweep: SweepSettings) -> Path:
    return Path(absolute(sweep.out_dir)) / sweep.name


def _slurm_filename(folder: Path, pattern: str) -> str:
    """An --output value: '%' is Slurm's pattern character, so literal ones in the folder are doubled."""
    return str(folder).replace("%", "%%") + "/" + pattern


def _directives(sweep: SweepSettings, job_name: str, nodes: int, ntasks_per_node: int, cpus: int,
                gpus: bool, time_limit: str, requeue: bool) -> list[str]:
    """``gpus``: one GPU per rank (a job of one rank asks for one GPU, not the node's)."""
    q = shlex.quote
    logs = study_dir(sweep) / "logs"
    d = [f"--job-name={q(job_name)}", f"--nodes={nodes}", f"--ntasks-per-node={ntasks_per_node}",
         f"--cpus-per-task={cpus}"]
    if gpus:
        d.append("--gpus-per-task=1")
    d += [f"--time={q(time_limit)}", f"--output={q(_slurm_filename(logs, '%x-%j.out'))}",
          f"--chdir={q(str(Path.cwd()))}"]
    for key in ("partition", "account", "qos"):
        if getattr(sweep, key):
            d.append(f"--{key}={q(getattr(sweep, key))}")
    if sweep.exclusive:
        d.append("--exclusive")
    if requeue:
        # Without 'B:' Slurm signals the job steps' tasks (the training ranks), not the shell.
        d += [f"--signal=USR1@{sweep.signal_before_s}", "--requeue", "--open-mode=append"]
    d += list(sweep.sbatch_options)
    return [f"#SBATCH {x}" for x in d]


def _python_cmd(sweep: SweepSettings, gpus: bool) -> list[str]:
    """The interpreter (inside apptainer exec when a container is set; --nv exposes the GPUs)."""
    if sweep.container:
        cmd = ["apptainer", "exec"]
        if gpus:
            cmd.append("--nv")
        for b in sweep.binds:
            cmd += ["--bind", b]
        return cmd + [absolute(sweep.container), sweep.python or "python3"]
    return [sweep.python or python_executable()]


def _srun(sweep: SweepSettings, nodes: int, tasks_per_node: int | None = None) -> list[str]:
    # cpus-per-task is repeated on srun: Slurm 22.05's srun does not inherit it from sbatch; the
    # GPU options too, so that every step places its ranks the same way.
    per_node = sweep.tasks_per_node if tasks_per_node is None else tasks_per_node
    cmd = ["srun", f"--mpi={sweep.mpi}", f"--nodes={nodes}", f"--ntasks-per-node={per_node}",
           f"--cpus-per-task={sweep.rank_cpus()}"]
    if sweep.gpus_per_node:
        bind = "per_task:1" if sweep.gpu_bind == "per_task" else sweep.gpu_bind
        cmd += ["--gpus-per-task=1", f"--gpu-bind={bind}"]
    return cmd + ["--kill-on-bad-exit=1"]


def _header(sweep: SweepSettings, what: str) -> list[str]:
    lines = ["", f"# Written by python -m launch.sweep (study {sweep.name}): {what}.",
             "set -uo pipefail", "export PYTHONUNBUFFERED=1"]
    if sweep.setup:
        lines += ["# setup lines from the sweep configuration"] + list(sweep.setup)
    return lines


# SIGTERM reaches the batch shell itself (scancel, a preemption or the time limit without the
# USR1 warning); untrapped, it ends the shell at once and the requeue never runs. bash runs a
# trap only once the foreground command is done, hence the steps in the background.
TERM_FORWARDING = r"""
# SIGTERM to this shell: pass it to the running srun step (scaling.run checkpoints and exits 3),
# then requeue as after USR1. A step is run in the background so that the trap can run at once.
step=""
term=0
got_term=0
forward_term() {
  term=1
  got_term=1
  echo "SIGTERM: passing it to the job step" >&2
  if [ -n "$step" ]; then kill -TERM "$step" 2>/dev/null; fi
}
trap forward_term TERM
# run_step CMD...: run CMD, set rc to its exit status.
run_step() {
  term=0
  "$@" &
  step=$!
  wait "$step"
  rc=$?
  # A wait cut short by the trap returns 128+15 while the step still runs: wait for its end.
  while [ "$term" -eq 1 ]; do
    term=0
    wait "$step"
    local status=$?
    if [ "$status" -eq 127 ]; then break; fi
    rc=$status
  done
  step=""
}""".splitlines()


def render_point_script(sweep: SweepSettings, run: RunSettings, point: Point, with_bench: bool) -> str:
    """The sbatch script of one sweep point."""
    q = shlex.quote
    root = study_dir(sweep)
    out = root / point.run_id
    job = f"{sweep.name}-{point.run_id}"
    lines = ["#!/bin/bash"]
    lines += _directives(sweep, job, point.nodes, sweep.tasks_per_node, sweep.rank_cpus(),
                         sweep.gpus_per_node > 0, sweep.time_limit, requeue=True)
    lines += _header(sweep, f"{point.engine}, {point.mode} scaling, {point.nodes} node(s) x "
                            f"{point.tasks_per_node} rank(s)")
    py = " ".join(q(a) for a in _python_cmd(sweep, sweep.gpus_per_node > 0))
    srun = " ".join(q(a) for a in _srun(sweep, point.nodes))
    lines += TERM_FORWARDING
    lines += preflight_lines(sweep, srun, py, point.engine)
    if with_bench:
        bench = root / allreduce_bench_file(point.world)
        lines += ["", "# All-reduce timings for this world size (once per node count; used for projections).",
                  f"bench={q(str(bench))}",
                  'if [ ! -f "$bench" ]; then',
                  f'  run_step {srun} {py} -m scaling.allreduce_bench --out "$bench"',
                  '  if [ "$rc" -ne 0 ]; then echo "warning: all-reduce benchmark failed (exit $rc); continuing" >&2; fi',
                  "fi"]
    args = scaling_run_args(run, engine=point.engine, mode=point.mode, out="OUT", study=sweep.name)
    args_text = " ".join('"$out"' if a == "OUT" else q(a) for a in args)
    lines += ["", f"out={q(str(out))}"]
    lines += resumable_run_lines(sweep, f"{srun} {py} -m scaling.run {args_text}")
    return "\n".join(lines) + "\n"


def preflight_lines(sweep: SweepSettings, srun: str, py: str, engine: str) -> list[str]:
    """Shell lines that check the allocation with scaling.preflight (for ``engine``) on every rank of the job and
    end the job (no training, no requeue) when a measurement on it would be wrong (exit 1) or the
    check was given bad input (exit 2). Empty when ``sweep.preflight`` is off."""
    if not sweep.preflight:
        return ["", "# No preflight (preflight = false in [sweep])."]
    extra = "".join(f" {shlex.quote(a)}" for a in ["--engine", engine, *sweep.preflight_args])
    return ["", "# Preflight: devices, counters and network of this allocation, on every rank, before any",
            "# training (it prints a table). preflight = false in [sweep] skips it.",
            'if [ "$got_term" -eq 0 ]; then',
            f"  run_step {srun} {py} -m scaling.preflight{extra}",
            '  if [ "$got_term" -eq 0 ] && [ "$rc" -ne 0 ]; then',
            '    if [ "$rc" -eq 2 ]; then why="bad input to the preflight (see above)"; '
            'else why="a measurement on this allocation would be wrong (see the table above)"; fi',
            '    echo "preflight failed (exit $rc): $why; job ${SLURM_JOB_ID:-} stops before training and '
            'is not requeued (preflight = false in [sweep] skips the check)" >&2',
            '    exit "$rc"',
            "  fi",
            "fi"]


def resumable_run_lines(sweep: SweepSettings, command: str) -> list[str]:
    """Shell lines that run ``command`` (a scaling.run call into "$out", which the lines before
    set) with --resume when "$out" holds a run, and requeue the job after an interruption (exit 3)
    or a failure, until it has failed the same way ``max_same_failures`` times in a row."""
    q = shlex.quote
    history = str(study_dir(sweep) / "logs")
    return ["# A requeued job finds the run directory of its first start and continues it.",
            "resume=()",
            f'if [ -f "$out/{RUN_JSON}" ]; then resume=(--resume); fi',
            "started=$(date +%s)",
            'if [ "$got_term" -eq 0 ]; then',
            f'  run_step {command} "${{resume[@]}}"',
            "else",
            "  rc=3   # SIGTERM came before the training started: requeue it like an interrupted run",
            "fi",
            "# run.json's status if this start wrote it, else 'none'.",
            "status=none",
            f'if [ -f "$out/{RUN_JSON}" ] && [ "$(stat -c %Y "$out/{RUN_JSON}")" -ge "$started" ]; then',
            f"  status=$(sed -nE 's/^  \"status\": \"([a-z_]+)\",?$/\\1/p' \"$out/{RUN_JSON}\" | head -n 1)",
            "  status=${status:-none}",
            "fi",
            "# --kill-on-bad-exit ends the step as soon as one rank has exited 3; a rank still shutting",
            "# down is then killed and srun reports 128+9. Rank 0 wrote exit_status 3 to run.json",
            "# after the checkpoint, before any rank exited: this start did end resumable.",
            'if [ "$rc" -ne 0 ] && [ "$rc" -ne 3 ] && [ "$status" != none ] \\',
            f"    && grep -Eq '^  \"exit_status\": 3,?$' \"$out/{RUN_JSON}\"; then",
            '  echo "the step ended with exit $rc after the run was interrupted and saved" >&2',
            "  rc=3",
            "fi",
            "restarts=${SLURM_RESTART_COUNT:-0}",
            "# How each failed start of this job ended, one line per start; a success or an interruption",
            "# clears it.",
            f'failures={q(history)}/.failures-"${{SLURM_JOB_ID:-none}}"',
            'if [ "$rc" -eq 0 ]; then rm -f "$failures"; fi',
            'if [ "$rc" -eq 3 ]; then',
            '  rm -f "$failures"',
            "  # Exit 3 = checkpointed after SIGUSR1/SIGTERM: requeue this job to resume.",
            f'  if [ "$restarts" -lt {sweep.max_requeues} ]; then',
            '    echo "interrupted: requeueing job $SLURM_JOB_ID (restart $restarts)" >&2',
            '    scontrol requeue "$SLURM_JOB_ID" && exit 0',
            "  else",
            f'    echo "interrupted, but job ${{SLURM_JOB_ID:-}} was requeued {sweep.max_requeues} times '
            'already (max_requeues): not requeueing; resubmit it to continue" >&2',
            "  fi",
            'elif [ "$rc" -ne 0 ] && [ "$rc" -ne 2 ]; then',
            "  # A failure (not bad input, exit 2): requeue it to resume from the last checkpoint, unless",
            "  # the job failed this same way max_same_failures times in a row (then it would again).",
            "  # The way is the status the run wrote (a stall, a crash): srun's exit code for one failure",
            "  # depends on which rank ended first. Without a status, the exit code.",
            '  if [ "$status" != none ]; then way="run status $status"; else way="exit $rc, no run status"; fi',
            '  echo "$way" >> "$failures"',
            """  same=$(tac "$failures" | awk -v w="$way" '$0 == w {n++; next} {exit} END {print n + 0}')""",
            f'  if [ "$same" -ge {sweep.max_same_failures} ]; then',
            f'    echo "job ${{SLURM_JOB_ID:-}} failed the same way {sweep.max_same_failures} times in a row '
            '($way; this time exit $rc): not requeueing (max_same_failures)" >&2',
            f'  elif [ "$restarts" -lt {sweep.max_requeues} ]; then',
            f'    echo "failed (exit $rc, $way; $same of {sweep.max_same_failures} alike in a row): requeueing job '
            '$SLURM_JOB_ID to resume (restart $restarts)" >&2',
            '    scontrol requeue "$SLURM_JOB_ID" && exit 0',
            "  else",
            f'    echo "failed (exit $rc, $way), and job ${{SLURM_JOB_ID:-}} was requeued {sweep.max_requeues} times '
            'already (max_requeues): not requeueing" >&2',
            "  fi",
            "fi",
            'exit "$rc"']


def render_analysis_script(sweep: SweepSettings, extra_args: list[str] | None = None) -> str:
    """The final job: the analysis of every run directory of the study (``extra_args``: more
    ``python -m analysis`` options)."""
    q = shlex.quote
    root = study_dir(sweep)
    lines = ["#!/bin/bash"]
    lines += _directives(sweep, f"{sweep.name}-analysis", 1, 1, 1, False, sweep.analysis_time_limit,
                         requeue=False)
    lines += _header(sweep, "analysis of all runs; submitted with --dependency=afterany:<run jobs>")
    py = " ".join(q(a) for a in _python_cmd(sweep, gpus=False))
    extra = "".join(f" {q(a)}" for a in extra_args or [])
    lines += ["", f"{py} -m analysis {q(str(root))} --out {q(str(root / 'report'))}{extra}"]
    return "\n".join(lines) + "\n"


@dataclass
class Job:
    name: str                  # run id, or "analysis"
    path: Path
    text: str
    skip_reason: str = ""


def build_jobs(sweep: SweepSettings, run: RunSettings, force: bool = False) -> list[Job]:
    """Every job script of the sweep, the analysis last."""
    root = study_dir(sweep)
    sdir = root / "sbatch"
    jobs: list[Job] = []
    benched: set[int] = set()
    for p in points(sweep, run):
        with_bench = sweep.allreduce_bench and p.world > 1 and p.world not in benched
        benched.add(p.world)
        job = Job(p.run_id, sdir / f"{p.run_id}.sbatch", render_point_script(sweep, run, p, with_bench))
        if read_status(root / p.run_id) in FINISHED_STATUSES and not force:
            job.skip_reason = "completed earlier"
        jobs.append(job)
    jobs.append(Job("analysis", sdir / "analysis.sbatch", render_analysis_script(sweep)))
    return jobs


# ----------------------------------------------------------------------------- campaigns
def _campaign_job_lines(sweep: SweepSettings, job: str, nodes: int, per_node: int) -> list[str]:
    return ["#!/bin/bash"] + _directives(sweep, job, nodes, per_node, sweep.rank_cpus(), sweep.gpus_per_node > 0,
                                         sweep.time_limit, requeue=True)


def render_array_script(sweep: SweepSettings, run: RunSettings, c: cmp.Campaign, indices: list[int],
                        left_out: list[str] | None = None) -> str:
    """The job array of a campaign: task k trains member k into <study>/members/<name>/, for the
    ``indices`` given (``left_out``: names of members completed earlier, said in a comment)."""
    q = shlex.quote
    where = f"{c.source}: [{cmp.TABLE}]"
    nodes, per_node = cmp.placement(c.settings.group_size, sweep.tasks_per_node, where)
    lines = _campaign_job_lines(sweep, f"{sweep.name}-members", nodes, per_node)
    lines.append(f"#SBATCH --array={cmp.array_spec(indices, c.settings.max_concurrent)}")
    lines += _header(sweep, cmp.describe(c))
    if left_out:
        lines.append(f"# members completed earlier, left out of --array: {', '.join(left_out)}")
    py = " ".join(q(a) for a in _python_cmd(sweep, sweep.gpus_per_node > 0))
    srun = " ".join(q(a) for a in _srun(sweep, nodes, per_node))
    lines += TERM_FORWARDING
    lines += preflight_lines(sweep, srun, py, c.settings.engine) + [""]
    lines += cmp.member_case(c, run, cmp.members_dir(study_dir(sweep)), sweep.name, indices)
    # Each array task is its own Slurm job (SLURM_JOB_ID): the requeue below restarts only this member.
    lines += resumable_run_lines(sweep, f'{srun} {py} -m scaling.run "${{args[@]}}"')
    return "\n".join(lines) + "\n"


def render_packed_script(sweep: SweepSettings, run: RunSettings, c: cmp.Campaign) -> str:
    """One ensemble job: srun of P ranks, every group of group_size ranks training its own member."""
    q = shlex.quote
    where = f"{c.source}: [{cmp.TABLE}]"
    nodes, per_node = cmp.placement(c.ranks, sweep.tasks_per_node, where)
    run_id = cmp.packed_run_id(c)
    lines = _campaign_job_lines(sweep, f"{sweep.name}-{run_id}", nodes, per_node)
    lines += _header(sweep, cmp.describe(c))
    py = " ".join(q(a) for a in _python_cmd(sweep, sweep.gpus_per_node > 0))
    srun = " ".join(q(a) for a in _srun(sweep, nodes, per_node))
    lines += TERM_FORWARDING
    lines += preflight_lines(sweep, srun, py, c.settings.engine)
    lines += ["", f"out={q(str(study_dir(sweep) / run_id))}",
              "# --resume continues every member of the ensemble from its own checkpoints."]
    args = cmp.quoted_args(cmp.packed_run_args(c, run, sweep.name))
    lines += resumable_run_lines(sweep, f"{srun} {py} -m scaling.run {args}")
    return "\n".join(lines) + "\n"


def build_campaign_jobs(sweep: SweepSettings, run: RunSettings, c: cmp.Campaign, force: bool = False) -> list[Job]:
    """The campaign's job (array or packed) and the analysis job after it. A member (array) or the
    ensemble (packed) whose run completed earlier is left out unless ``force``."""
    root = study_dir(sweep)
    sdir = root / "sbatch"
    extra = cmp.analysis_args(c)
    if c.settings.layout == cmp.LAYOUT_ARRAY:
        done = [k for k, m in enumerate(c.members)
                if not force and read_status(cmp.members_dir(root) / m.name) in FINISHED_STATUSES]
        pending = [k for k in range(len(c.members)) if k not in done]
        # The job is named after the folder it fills, so that --force --submit clears it first.
        job = Job(cmp.MEMBERS_SUBDIR, sdir / "members.sbatch",
                  render_array_script(sweep, run, c, pending or list(range(len(c.members))),
                                      [c.members[k].name for k in done] if pending else None))
        if not pending:
            job.skip_reason = "every member completed earlier"
    else:
        run_id = cmp.packed_run_id(c)
        job = Job(run_id, sdir / f"{run_id}.sbatch", render_packed_script(sweep, run, c))
        if read_status(root / run_id) in FINISHED_STATUSES and not force:
            job.skip_reason = "completed earlier"
    return [job, Job("analysis", sdir / "analysis.sbatch", render_analysis_script(sweep, extra))]


def dependency_option(job_ids: list[str]) -> list[str]:
    """sbatch option making the analysis wait for every run job, however each one ended."""
    return [f"--dependency=afterany:{':'.join(job_ids)}"] if job_ids else []


def render_submit_script(jobs: list[Job]) -> str:
    """submit.sh: submits the run jobs, then the analysis job depending on all of them."""
    q = shlex.quote
    lines = ["#!/bin/bash", "# Written by python -m launch.sweep: submits the sweep (same as --submit).",
             "set -euo pipefail", "ids=()"]
    for job in jobs[:-1]:
        if job.skip_reason:
            lines.append(f"# {job.name}: {job.skip_reason}")
            continue
        lines.append(f'id=$(sbatch --parsable {q(str(job.path))}); id=${{id%%;*}}; ids+=("$id"); '
                     f'echo "{job.name}: job $id"')
    analysis = jobs[-1]
    lines += ['dep=()', 'if [ ${#ids[@]} -gt 0 ]; then dep=(--dependency=afterany:$(IFS=:; echo "${ids[*]}")); fi',
              f'id=$(sbatch --parsable "${{dep[@]}}" {q(str(analysis.path))}); echo "analysis: job ${{id%%;*}}"']
    return "\n".join(lines) + "\n"


def write_jobs(sweep: SweepSettings, jobs: list[Job]) -> Path:
    root = study_dir(sweep)
    (root / "logs").mkdir(parents=True, exist_ok=True)   # Slurm does not create --output folders
    for job in jobs:
        atomic_write_text(job.path, job.text)
    submit = root / "sbatch" / "submit.sh"
    atomic_write_text(submit, render_submit_script(jobs))
    submit.chmod(0o755)
    return submit


def _sbatch(argv: list[str]) -> str:
    res = subprocess.run(argv, capture_output=True, text=True, check=False)
    if res.returncode != 0:
        raise UserError(f"{shlex.join(argv)} failed (exit {res.returncode}): {res.stderr.strip()}")
    return res.stdout.strip().splitlines()[-1].split(";")[0]


def submit(jobs: list[Job], wait: bool, fresh_dirs: Path | None = None) -> int:
    """sbatch every run job, then the analysis with afterany on them; print the job ids.
    With ``fresh_dirs`` (--force) each submitted point's old run directory there is removed
    first: the job script would otherwise continue it (--resume)."""
    sbatch = find_executable("sbatch")
    if sbatch is None:
        raise UserError("sbatch not found: submit on a Slurm login node, or start the local test "
                        "cluster (python -m launch.testcluster start) and export SLURM_CONF")
    ids: list[str] = []
    for job in jobs[:-1]:
        if job.skip_reason:
            print(f"{job.name}: skipped ({job.skip_reason})", flush=True)
            continue
        if fresh_dirs is not None and (fresh_dirs / job.name).exists():
            shutil.rmtree(fresh_dirs / job.name)
            print(f"{job.name}: removed the earlier run directory (--force)", flush=True)
        jid = _sbatch([sbatch, "--parsable", str(job.path)])
        ids.append(jid)
        print(f"{job.name}: job {jid}", flush=True)
    argv = [sbatch, "--parsable", *dependency_option(ids)]
    if not wait:
        jid = _sbatch(argv + [str(jobs[-1].path)])
        print(f"analysis: job {jid} (runs after {len(ids)} job(s))", flush=True)
        return 0
    # --wait: sbatch prints the id, then returns when the job ends, with the job's exit code.
    proc = subprocess.Popen(argv + ["--wait", str(jobs[-1].path)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    first = proc.stdout.readline().strip()
    print(f"analysis: job {first.split(';')[0]} (waiting for it and {len(ids)} run job(s))", flush=True)
    proc.stdout.read()
    rc = proc.wait()
    print(f"analysis job ended with exit code {rc}", flush=True)
    return 0 if rc == 0 else EXIT_FAILURE


def build_parser() -> argparse.ArgumentParser:
    p = Parser(
        "python -m launch.sweep",
        description="Write one sbatch script per sweep point (nodes x modes x engines) running "
                    "'srun python -m scaling.run', plus an analysis job that waits for all of them. "
                    "Scripts go to <out_dir>/<name>/sbatch/ with a submit.sh.",
        epilog="examples:\n  python -m launch.sweep --config launch/sweep_example.toml --dry-run\n"
               "  python -m launch.sweep --name a100 --nodes 1,2,4,8 --tasks-per-node 4 --gpus-per-node 4 "
               "--cores-per-node 32 --partition gpu --account myproject --submit")
    p.add_argument("--config", type=Path, help="sweep TOML with [sweep] and [run] tables, and optionally a "
                                               "[campaign] table of many GANs (written instead of the points)")
    act = p.add_mutually_exclusive_group()
    act.add_argument("--dry-run", action="store_true", help="print the scripts; write and submit nothing")
    act.add_argument("--submit", action="store_true", help="write the scripts and submit them with sbatch")
    p.add_argument("--wait", action="store_true", help="with --submit: return when the analysis job has ended")
    p.add_argument("--force", action="store_true",
                   help="also submit points whose run completed earlier; with --submit their run "
                        "directories are removed first (otherwise a job continues the run it finds)")
    add_section_arguments(p, SECTIONS)
    return p


@main_guard
def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.wait and not args.submit:
        raise UserError("--wait needs --submit")
    resolved = resolve_sections(SECTIONS, args.config, args, read_by_caller=(cmp.TABLE,))
    sweep: SweepSettings = resolved["sweep"]
    run: RunSettings = resolved["run"]
    table = cmp.read_campaign(args.config)
    if table is not None:
        jobs = build_campaign_jobs(sweep, run, cmp.parse_campaign(table, str(args.config), run), force=args.force)
    else:
        jobs = build_jobs(sweep, run, force=args.force)
    if args.dry_run:
        for job in jobs:
            note = f" (skipped: {job.skip_reason})" if job.skip_reason else ""
            print(f"# ===== {job.path}{note}\n{job.text}")
        print(f"# ===== {jobs[-1].path.parent / 'submit.sh'}\n{render_submit_script(jobs)}")
        return 0
    submit_sh = write_jobs(sweep, jobs)
    if not args.submit:
        print(f"wrote {len(jobs)} job scripts to {submit_sh.parent}; submit them with:\n  {shlex.quote(str(submit_sh))}")
        return 0
    return submit(jobs, wait=args.wait, fresh_dirs=study_dir(sweep) if args.force else None)


if __name__ == "__main__":
    sys.exit(main())
