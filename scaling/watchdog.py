"""Progress watchdog: a rank that stops making progress ends the whole job, with one line.

Every rank runs one daemon thread (this module; no TensorFlow, no MPI collective). The main
thread tells it when something finished: a start-up stage (``stage``), a completed step call
(``progress``, from the epoch loop), a long step between epochs (``allow``). When nothing
finished for longer than the current limit, the thread looks at every rank's heartbeat and
ends the job:

- start-up stages (imports, MPI start, input checks, engine start, model build) and the first
  step call (tracing, compiling) each get ``startup_timeout_s``; so does an evaluation;
- after that, no completed step call for max(``stall_timeout_s``, ``STALL_EPOCH_MULTIPLE`` x
  the median epoch time of this attempt) is a stall.

How a rank learns that another one is silent without a collective (which would itself hang):
each rank's thread rewrites ``<run>/heartbeat/rank-NNNNN.json`` (beat counter, last completed
iteration, node, pid) every few seconds. The run directory is on a filesystem every rank sees
(checkpoints already need that), so this works alike under mpirun, srun and on Slurm's
emulated nodes. When a rank's limit expires it reads every heartbeat twice, a few beats apart:
a rank whose counter did not move is silent (stopped, stuck in the kernel on a dead mount,
swapped out; a rank that never arrived has no file). No clocks are compared across nodes.
MPI-based alternatives were not taken: a non-blocking collective polled from this thread needs
MPI_THREAD_MULTIPLE for every MPI library and Horovod's Gloo mode has no MPI at all, and
neither names *which* rank is missing.

The lowest-numbered live rank reports (the others wait a grace period, then report too if the
job is still there): one line on stderr naming the silent ranks, their nodes and last
iterations; run.json gets ``status: stalled`` (written by the reporter: rank 0, or the first
live rank when rank 0 itself is frozen; it is rewritten atomically, completed epochs and
checkpoints are not touched); then ``MPI_Abort`` (``COMM_WORLD.Abort``, legal from this thread
under MPI_THREAD_MULTIPLE, which mpi4py asks for) or, without MPI, ``os._exit(1)``, which the
launcher (mpirun, srun --kill-on-bad-exit, horovodrun) turns into the end of the job.

Before the run directory exists (start-up) there are no heartbeats: the line then names the
stage this rank waited in. File reads and writes of the report run with a time bound, so a
dead filesystem cannot keep the job alive.
"""
from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import statistics
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

from common.errors import EXIT_FAILURE, EXIT_USER_ERROR
from common.settings import NON_NEGATIVE
from common.vocab import RUN_JSON, STATUS_STALLED

HEARTBEAT_DIR = "heartbeat"
FINISHED = "finished"               # a heartbeat's ``doing`` once its rank is done
STALL_EPOCH_MULTIPLE = 3.0          # the stall limit grows to this many median epochs
BEAT_INTERVAL_MAX_S = 10.0          # heartbeat period: limit / 8, within these bounds
BEAT_INTERVAL_MIN_S = 0.5
IO_BOUND_S = 10.0                   # longest wait for one report file operation
EXIT_STALLED = EXIT_FAILURE


@dataclass
class WatchdogConfig:
    """The [watchdog] section: when a job that makes no progress is ended (0 = never)."""
    stall_timeout_s: float = field(default=120.0, metadata={
        "range": NON_NEGATIVE,
        "help": "end the job when no iteration completes for this long, s; the limit grows to "
                f"{STALL_EPOCH_MULTIPLE:g}x the median epoch time once known (0 = no stall watchdog)"})
    startup_timeout_s: float = field(default=600.0, metadata={
        "range": NON_NEGATIVE,
        "help": "end the job when a start-up stage (imports, engine start, first collectives, model "
                "build), the first step call (tracing, compiling) or an evaluation takes longer, s "
                "(0 = no limit)"})

    def collective_timeout_s(self) -> int:
        """The engines' own collective timeouts (Horovod's stall shutdown, tf.distribute's
        ``timeout_seconds``): a backstop behind the watchdog, never before it, so a stall is
        normally reported by the watchdog; 0 when both limits are off."""
        longest = max(self.stall_timeout_s, self.startup_timeout_s)
        return int(2 * longest) if self.stall_timeout_s and self.startup_timeout_s else 0

    def set_horovod_environment(self) -> None:
        """Horovod's stall inspector, consistent with the watchdog (before ``hvd.init``): its
        warning (which names the ranks that did not submit a tensor) at the stall limit, its
        shutdown as the backstop. Values a user set in the environment are kept."""
        if self.stall_timeout_s:
            _set_unless_users("HOROVOD_STALL_CHECK_TIME_SECONDS", str(max(1, int(self.stall_timeout_s))))
        if self.collective_timeout_s():
            _set_unless_users("HOROVOD_STALL_SHUTDOWN_TIME_SECONDS", str(self.collective_timeout_s()))


_OURS: dict[str, str] = {}     # environment values this process set (a later run in it may change them)


def _set_unless_users(name: str, value: str) -> None:
    if name not in os.environ or os.environ[name] == _OURS.get(name):
        os.environ[name] = _OURS[name] = value


def startup_timeout_from_argv(argv: list[str] | None, default: float) -> float:
    """--startup-timeout-s as given on the command line, read before anything is parsed (the
    watchdog starts before the config is read, so that MPI's start-up is covered too)."""
    args = sys.argv[1:] if argv is None else argv
    for i, a in enumerate(args):
        text = a.split("=", 1)[1] if a.startswith("--startup-timeout-s=") else (
            args[i + 1] if a == "--startup-timeout-s" and i + 1 < len(args) else None)
        if text is not None:
            try:
                return max(0.0, float(text))
            except ValueError:
                return default      # the parser reports it
    return default


@dataclass
class Beat:
    """One rank's heartbeat file."""
    rank: int
    node: str
    pid: int
    beat: int                 # counter, advanced by the watchdog thread every interval
    iteration: int            # last completed iteration (-1: none yet in this attempt)
    doing: str                # what the main thread is in: a stage, "training", an allowance


def heartbeat_path(out: Path, rank: int) -> Path:
    return Path(out) / HEARTBEAT_DIR / f"rank-{rank:05d}.json"


def write_beat(out: Path, beat: Beat) -> None:
    """Replace this rank's heartbeat (temp file + rename; no fsync: it is read within seconds
    or never, and an fsync per beat per rank would load a shared filesystem)."""
    path = heartbeat_path(out, beat.rank)
    tmp = path.with_name(f".{path.name}.{beat.pid}.tmp")
    tmp.write_text(json.dumps(beat.__dict__))
    os.replace(tmp, path)


def read_beats(out: Path, size: int) -> dict[int, Beat]:
    """Every readable heartbeat of ranks 0..size-1 (a missing or half-seen file is left out)."""
    beats = {}
    for rank in range(size):
        try:
            beats[rank] = Beat(**json.loads(heartbeat_path(out, rank).read_text()))
        except (OSError, ValueError, TypeError):
            continue
    return beats


def silent_ranks(first: dict[int, Beat], second: dict[int, Beat], size: int) -> list[int]:
    """Ranks whose beat counter did not move between two reads (or that have no heartbeat);
    a rank whose last beat says it finished is not silent."""
    return [r for r in range(size) if r not in second or (
        r in first and first[r].beat == second[r].beat and not second[r].doing.startswith(FINISHED))]


def _bounded(fn: Callable[[], Any], timeout_s: float = IO_BOUND_S) -> Any:
    """``fn()`` in a helper thread; its result, or None when it raised or did not finish in
    time (a read on a dead mount must not keep the job alive)."""
    box: list[Any] = []

    def run() -> None:
        with contextlib.suppress(Exception):
            box.append(fn())

    t = threading.Thread(target=run, daemon=True, name="watchdog-io")
    t.start()
    t.join(timeout_s)
    return box[0] if box else None


def mark_run_stalled(out: Path, details: dict[str, Any]) -> bool:
    """run.json ``status: stalled`` with ``details`` under ``stall`` (atomic rewrite of the file
    as it is on disk: the reporter may not be rank 0). False when there is no run.json."""
    from common.atomic import atomic_write_json

    path = Path(out) / RUN_JSON
    if not path.is_file():
        return False
    meta = json.loads(path.read_text())
    meta.update(status=STATUS_STALLED, exit_status=EXIT_STALLED, stall=details,
                end_time=dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"))
    atomic_write_json(path, meta)
    return True


class Watchdog:
    """This rank's watchdog thread (see the module docstring)."""

    def __init__(self, *, rank: int, size: int, node: str, startup_timeout_s: float,
                 stall_timeout_s: float = 120.0, end_job: Callable[[int], None] | None = None,
                 clock: Callable[[], float] = time.monotonic):
        self.rank, self.size, self.node = rank, size, node
        self.startup_timeout_s, self.stall_timeout_s = startup_timeout_s, stall_timeout_s
        self._clock = clock
        self._end_job = end_job or (lambda code: os._exit(code))
        self._lock = threading.Lock()
        self._doing, self._since, self._limit_s = "start-up", clock(), startup_timeout_s
        self._iteration = -1
        self._out: Path | None = None
        self._batch: int | None = None
        self._iterations_per_epoch = 0
        self._epoch_t0: float | None = None
        self._paused_s = 0.0
        self._epoch_times: list[float] = []
        self._stall_limit_s = self.stall_timeout_s    # recomputed once per epoch, not per step call
        self._beat = 0
        self._stopped = threading.Event()
        self._fired = threading.Event()
        self._thread: threading.Thread | None = None
        self.abort: Callable[[int], None] | None = None   # MPI's abort, once MPI runs

    # -- what the main thread tells it ----------------------------------------------------------
    def start(self) -> "Watchdog":
        self._thread = threading.Thread(target=self._loop, daemon=True, name="watchdog")
        self._thread.start()
        return self

    def stop(self, code: int | None = None) -> None:
        """Stop the thread; the last heartbeat says this rank finished (with exit ``code``), so
        that a peer still waiting does not take it for a silent rank."""
        self._stopped.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=2 * self._interval())
        with self._lock:
            self._doing = f"{FINISHED} (exit {code})" if code is not None else FINISHED
        if code == EXIT_USER_ERROR and self._out is not None:
            # A refused run (bad input found late, e.g. a checkpoint of another model) leaves
            # the directory as it found it.
            with contextlib.suppress(OSError):
                heartbeat_path(self._out, self.rank).unlink()
            with contextlib.suppress(OSError):
                (self._out / HEARTBEAT_DIR).rmdir()
            return
        _bounded(self._write_beat)

    def use_mpi(self, comm) -> None:
        """MPI is up: end the job with ``comm.Abort`` (needs MPI_THREAD_MULTIPLE; else exit).
        ``comm`` None: no MPI in this job."""
        if comm is None:
            return
        from mpi4py import MPI

        if MPI.Query_thread() == MPI.THREAD_MULTIPLE:
            self.abort = comm.Abort

    def stage(self, doing: str) -> None:
        """A start-up stage begins: it gets the start-up allowance."""
        self._mark(doing, self.startup_timeout_s)

    def open_run(self, out: Path, *, batch: int, iterations_per_epoch: int) -> None:
        """The run directory exists (on every rank's view): heartbeats start."""
        with self._lock:
            self._out, self._batch, self._iterations_per_epoch = Path(out), batch, iterations_per_epoch
        with contextlib.suppress(OSError):
            (self._out / HEARTBEAT_DIR).mkdir(exist_ok=True)
        self._write_beat()

    def progress(self, iteration: int) -> None:
        """A step call completed; ``iteration``: iterations completed in the run so far."""
        now = self._clock()
        with self._lock:
            ipe = self._iterations_per_epoch
            if ipe and iteration % ipe == 0:
                if self._epoch_t0 is not None:
                    self._epoch_times.append(now - self._epoch_t0 - self._paused_s)
                    if self.stall_timeout_s:
                        self._stall_limit_s = max(self.stall_timeout_s,
                                                  STALL_EPOCH_MULTIPLE * statistics.median(self._epoch_times))
                # The first epoch of an attempt (tracing, compiling) starts no sample.
                self._epoch_t0, self._paused_s = now, 0.0
            self._iteration = iteration
            warming_up = self._epoch_t0 is None
        # Until the attempt's first epoch is complete (tracing, compiling, warm-up): the start-up allowance.
        self._mark("training", max(self.stall_limit_s(), self.startup_timeout_s) if warming_up and self.stall_timeout_s
                   else self.stall_limit_s())

    @contextlib.contextmanager
    def allow(self, doing: str) -> Iterator[None]:
        """A long step between epochs (evaluation): the start-up allowance, not the stall
        limit; its time does not count as epoch time."""
        t0 = self._clock()
        self._mark(doing, self.startup_timeout_s)
        try:
            yield
        finally:
            with self._lock:
                self._paused_s += self._clock() - t0
            self._mark("training", self.stall_limit_s())

    def stall_limit_s(self) -> float:
        """No completed iteration for this long is a stall (0: never)."""
        if not self.stall_timeout_s:
            return 0.0
        with self._lock:
            return self._stall_limit_s

    @property
    def batch(self) -> int | None:
        return self._batch

    @property
    def out(self) -> Path | None:
        return self._out

    def _mark(self, doing: str, limit_s: float) -> None:
        with self._lock:
            self._doing, self._since, self._limit_s = doing, self._clock(), limit_s

    # -- the thread -----------------------------------------------------------------------------
    def _interval(self) -> float:
        limit = min(x for x in (self.stall_timeout_s, self.startup_timeout_s, 80.0) if x) if (
            self.stall_timeout_s or self.startup_timeout_s) else 80.0
        return min(BEAT_INTERVAL_MAX_S, max(BEAT_INTERVAL_MIN_S, limit / 8))

    def _write_beat(self) -> None:
        with self._lock:
            out = self._out
            self._beat += 1
            beat = Beat(self.rank, self.node, os.getpid(), self._beat, self._iteration, self._doing)
        if out is not None:
            with contextlib.suppress(OSError):
                write_beat(out, beat)

    def _beat_for(self, seconds: float) -> None:
        """Wait ``seconds``, beating on: a rank that inspects or waits is not silent."""
        end = time.monotonic() + seconds
        while (left := end - time.monotonic()) > 0:
            time.sleep(min(left, self._interval()))
            _bounded(self._write_beat)

    def _loop(self) -> None:
        while not self._stopped.wait(self._interval()):
            # Bounded: when the shared filesystem hangs, every rank's write may hang, and the
            # limits must still be checked.
            _bounded(self._write_beat, self._interval())
            with self._lock:
                waited, limit, doing = self._clock() - self._since, self._limit_s, self._doing
            if limit and waited > limit:
                self.report(f"no progress for {waited:.3g} s in {doing} (limit {limit:.3g} s)")
                return

    # -- the report -----------------------------------------------------------------------------
    def report(self, why: str) -> None:
        """Name the silent ranks, mark the run stalled, end the job (does not return)."""
        if self._fired.is_set():
            return
        self._fired.set()
        line, details, reporter = self._inspect(why)
        if reporter != self.rank:
            # The reporter ends the job; if it cannot (stuck too), this rank does.
            self._beat_for(4 * self._interval() + 5.0)
        print(f"error: {line}", file=sys.stderr, flush=True)
        if self._out is not None:
            _bounded(lambda: mark_run_stalled(self._out, details))
        sys.stdout.flush()
        if self.abort is not None:
            self.abort(EXIT_STALLED)
        self._end_job(EXIT_STALLED)

    def _inspect(self, why: str) -> tuple[str, dict[str, Any], int]:
        """(the line, run.json's ``stall`` details, the rank that reports)."""
        out = self._out
        me = f"rank {self.rank} on {self.node}"
        details: dict[str, Any] = {"noticed_by": self.rank, "why": why, "silent_ranks": []}
        if out is None:
            # Start-up, before the run directory exists: no heartbeats to read.
            line = (f"start-up stalled: {me}: {why}; another rank did not start or hangs (see the launcher's "
                    f"log; if start-up is only slow, raise --startup-timeout-s)")
            return line, details, self.rank
        first = _bounded(lambda: read_beats(out, self.size)) or {}
        self._beat_for(2 * self._interval() + 0.2)
        second = _bounded(lambda: read_beats(out, self.size)) or {}
        # This rank is alive (its thread runs); the others beat on while they inspect too.
        silent = [r for r in silent_ranks(first, second, self.size) if r != self.rank]
        alive = [r for r in range(self.size) if r not in silent]
        reporter = min(alive) if alive else self.rank
        behind = []
        if not silent and second:
            newest = max(b.iteration for b in second.values())
            behind = [r for r, b in sorted(second.items()) if b.iteration < newest]

        def who(r: int) -> str:
            b = second.get(r) or first.get(r)
            if b is None:
                return f"rank {r} (no heartbeat: never arrived)"
            done = f"last iteration {b.iteration}" if b.iteration >= 0 else "no iteration yet"
            return f"rank {r} on {b.node} ({done}, in {b.doing})"

        details.update(silent_ranks=[{"rank": r, "node": (second.get(r) or first.get(r) or Beat(r, "", 0, 0, -1, "")).node,
                                      "iteration": (second.get(r) or first.get(r) or Beat(r, "", 0, 0, -1, "")).iteration}
                                     for r in silent])
        if silent:
            named = "silent: " + ", ".join(who(r) for r in silent)
        elif behind:
            named = "every rank is alive; behind the others: " + ", ".join(who(r) for r in behind)
        else:
            named = "every rank is alive and waits (a hung device or collective); " + ", ".join(
                who(r) for r in sorted(second)[:8]) + (" ..." if len(second) > 8 else "")
        line = (f"stalled: {why}, noticed by {me}; {named}; run.json marked {STATUS_STALLED}; completed "
                f"epochs and the last checkpoint are kept: continue with --resume --out {out}")
        return line, details, reporter


# -- this process's watchdog ----------------------------------------------------------------------
_current: Watchdog | None = None
_config = WatchdogConfig()


def start(*, rank: int, size: int, node: str, startup_timeout_s: float) -> Watchdog:
    """Start this process's watchdog (one per process; replaces a stopped earlier one)."""
    global _current
    stop()
    _current = Watchdog(rank=rank, size=size, node=node, startup_timeout_s=startup_timeout_s).start()
    return _current


def current() -> Watchdog | None:
    return _current


def configure(cfg: WatchdogConfig) -> None:
    """The limits from the resolved config (the watchdog started with the flag's or default)."""
    global _config
    _config = cfg
    cfg.set_horovod_environment()
    if _current is not None:
        _current.startup_timeout_s, _current.stall_timeout_s = cfg.startup_timeout_s, cfg.stall_timeout_s
        _current.stage("start-up")


def collective_timeout_s() -> float | None:
    """tf.distribute's ``CommunicationOptions(timeout_seconds=...)`` for this run (None: none)."""
    return float(_config.collective_timeout_s()) or None


def stage(doing: str) -> None:
    if _current is not None:
        _current.stage(doing)


def progress(iteration: int) -> None:
    """The epoch loop's call after every completed step call (cheap: a clock read and a lock)."""
    if _current is not None:
        _current.progress(iteration)


def open_run(out: Path, *, batch: int, iterations_per_epoch: int) -> None:
    if _current is not None:
        _current.open_run(out, batch=batch, iterations_per_epoch=iterations_per_epoch)


def allow(doing: str):
    """``with allow("evaluation"):`` a long step between epochs (see ``Watchdog.allow``)."""
    return _current.allow(doing) if _current is not None else contextlib.nullcontext()


def allowing(doing: str, fn: Callable[..., Any]) -> Callable[..., Any]:
    """``fn`` run inside ``allow(doing)`` each time it is called."""
    def wrapped(*args: Any, **kwargs: Any) -> Any:
        with allow(doing):
            return fn(*args, **kwargs)

    return wrapped


def stop(code: int | None = None) -> None:
    global _current
    if _current is not None:
        _current.stop(code)
        _current = None
