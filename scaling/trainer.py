"""The epoch loop every rank runs: step, time, measure energy, gather on rank 0, checkpoint.

Per rank and epoch: ``time_s`` wall time; ``data_wait_s`` time blocked on the next batch;
``comm_s`` time inside the gradient all-reduces (in-graph timestamps, includes waiting for
the slowest replica); ``compute_s`` the rest of the step calls. What is left of ``time_s``
(stop-flag checks, energy windows) is overhead the analysis shows as "other".

With ``steps_per_call`` K > 1 every step call runs K iterations and returns K values of each
result. Results stay on the device until a check, every ``check_every`` iterations (a whole
number of calls; default once per call): only then are they read back (one wait for the
device), the losses checked for NaN and the stop flag agreed (one collective), and a stop ends
the epoch there. Step-time quantiles are of per-iteration times taken in the graph (the
step's ``step_s``, from an iteration's start until its values exist) less its ``comm_s``.
"""
from __future__ import annotations

import math
import signal
import time
from dataclasses import dataclass
from typing import Callable

import numpy as np

from energy.records import EnergyWindow
from common.rundir import STEP_TIME_QUANTILES, EpochRecord, RunWriter, power_table
from common.telemetry_parts import telemetry_table, write_telemetry_part
from common.vocab import ENERGY_DOMAINS, SOURCE_ESTIMATED, SOURCES_WITH_VALUE
from scaling import watchdog
from scaling.world import World


class StopFlag:
    """Set by SIGTERM/SIGUSR1 (Slurm time limit, preemption); checked between iterations.

    Installed before anything slow starts, so a signal that arrives while TensorFlow is still
    importing is remembered instead of killing the rank before it can stop cleanly.
    """

    SIGNALS = (signal.SIGTERM, signal.SIGUSR1)

    def __init__(self):
        self.signal: int | None = None

    def install(self) -> dict:
        """Catch the stop signals; returns the previous handlers for ``restore``."""
        return {sig: signal.signal(sig, self._handle) for sig in self.SIGNALS}

    @staticmethod
    def restore(previous: dict) -> None:
        for sig, handler in previous.items():
            signal.signal(sig, handler)

    @classmethod
    def ignore(cls) -> None:
        """Ignore the stop signals from now on: for a process that is about to exit.

        Interpreter shutdown puts every Python-level handler back to the default action, which
        for SIGTERM is death. A late SIGTERM (the second rank's copy of a Slurm time limit, or
        the launcher ending the job once a peer exited with 3) would then kill the rank inside
        MPI_Finalize and turn its exit code 3 into 143. SIG_IGN survives the shutdown.
        """
        for sig in cls.SIGNALS:
            signal.signal(sig, signal.SIG_IGN)

    def _handle(self, signum, frame) -> None:  # noqa: ARG002 - signal handler signature
        self.signal = signum

    @property
    def raised(self) -> bool:
        return self.signal is not None


@dataclass
class EpochPlan:
    epochs: int
    iterations_per_epoch: int
    warmup_epochs: int
    attempt: int
    showers_per_iteration: int   # this rank's showers per iteration (all its local replicas)
    member: int = 0              # the ensemble member this rank trains (0: one GAN)
    steps_per_call: int = 1      # iterations per step call (divides iterations_per_epoch)
    check_every: int = 0         # iterations between read-backs and stop checks (0: every call)


def _fmt_eta(seconds: float) -> str:
    seconds = max(0, int(seconds))
    return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


def run_epochs(*, world: World, plan: EpochPlan, start_epoch: int, step: Callable, engine, iterators: list,
               meter, coll, writer: RunWriter | None, save_checkpoint: Callable[[int], None],
               stop: StopFlag, log: Callable[[str], None],
               after_epoch: Callable[[int, list[EpochRecord] | None], bool] | None = None) -> bool:
    """Run epochs ``start_epoch .. plan.epochs-1``. Returns False if a stop signal cut it short.

    ``after_epoch(epoch, records)`` runs on every rank after each complete, checkpointed epoch
    (``records``: the epoch's rows of every rank on rank 0, else None), outside every epoch clock
    (evaluation, TensorBoard), but not when a stop signal ends the run before its last epoch;
    when it returns True (the same on every rank) the run ends there, as completed.

    A stop agreed by all ranks ends the epoch in flight at the next check. If that
    leaves the epoch short, its row is kept with ``interrupted=True`` (its time and energy stay
    apart from the clean epochs) and no checkpoint is written for it: the run resumes from the
    end of the last complete epoch and runs this one again.
    """
    first_of_attempt = start_epoch
    run_t0 = time.perf_counter()
    done = 0
    # A signal that came during start-up (TensorFlow import, tracing) stops before any epoch.
    if start_epoch < plan.epochs and coll.any(stop.raised):
        return False
    for epoch in range(start_epoch, plan.epochs):
        name = f"epoch-{epoch}"
        # Every rank starts the epoch clock together. Otherwise a rank that is done with the
        # last epoch's bookkeeping first would wait for rank 0 (writing records, checkpointing)
        # inside its first all-reduce, and count that wait as this epoch's communication,
        # while a single rank's clock never includes it.
        coll.barrier()
        meter.begin(name)
        t0 = time.perf_counter()
        wait = comm = busy = 0.0
        d_losses, g_losses = [], []
        steps: list[float] = []       # per iteration, outside the all-reduce: stragglers
        iterations = 0
        stopping = False
        k = plan.steps_per_call
        calls = plan.iterations_per_epoch // k
        calls_per_check = max(1, plan.check_every // k)
        pending: list = []            # results of the calls since the last check, on the device
        t_busy, pending_wait = time.perf_counter(), 0.0
        for c in range(calls):
            ta = time.perf_counter()
            batches = [next(it) for it in iterators]
            tb = time.perf_counter()
            pending.append(step(*engine.feed(batches)))
            pending_wait += tb - ta
            if (c + 1) % calls_per_check and c + 1 < calls:
                continue
            # Reading the results waits for every pending call to finish, so busy time is complete.
            res = _read_back(engine, pending, k)
            tc = time.perf_counter()
            wait += pending_wait
            busy += tc - t_busy - pending_wait
            if not res["step_s"]:   # a step that does not time itself: the interval's share
                res["step_s"] = [(tc - t_busy - pending_wait) / len(res["d_loss"])] * len(res["d_loss"])
            comm += sum(res["comm_s"])
            d_losses.extend(res["d_loss"])
            g_losses.extend(res["g_loss"])
            steps.extend(s - (c_s if math.isfinite(c_s) else 0.0) for s, c_s in zip(res["step_s"], res["comm_s"]))
            iterations += k * len(pending)
            watchdog.progress(epoch * plan.iterations_per_epoch + iterations)
            pending = []
            if not all(map(math.isfinite, res["d_loss"] + res["g_loss"])):
                raise RuntimeError(f"rank {world.rank}: non-finite loss in epoch {epoch}")
            if coll.any(stop.raised):
                stopping = True
                break
            t_busy, pending_wait = time.perf_counter(), 0.0
        # A stop after the epoch's last iteration leaves a complete epoch: it is kept and saved.
        interrupted = iterations < plan.iterations_per_epoch
        time_s = time.perf_counter() - t0
        window: EnergyWindow = meter.end(name)
        record = EpochRecord(
            rank=world.rank, local_rank=world.local_rank, node=world.node, epoch=epoch, attempt=plan.attempt,
            time_s=time_s, compute_s=max(0.0, busy - comm) if math.isfinite(comm) else busy, comm_s=comm, data_wait_s=wait,
            iterations=iterations, showers=iterations * plan.showers_per_iteration,
            warmup=epoch < plan.warmup_epochs or (plan.attempt > 0 and epoch == first_of_attempt),
            interrupted=interrupted,
            gpu_energy_j=window.gpu_energy_j, cpu_energy_j=window.cpu_energy_j, dram_energy_j=window.dram_energy_j,
            gpu_energy_source=window.gpu_energy_source, cpu_energy_source=window.cpu_energy_source,
            dram_energy_source=window.dram_energy_source,
            d_loss=float(np.mean(d_losses)), g_loss=float(np.mean(g_losses)), member=plan.member,
            **step_time_quantiles(steps))
        records = coll.gather(record)
        # Each rank sends its samples as a table (columns, not one object per sample), and
        # rank 0 writes them as this epoch's power part and keeps none of them.
        power = coll.gather(power_table(meter.drain_samples(), plan.attempt))
        telemetry = coll.gather(telemetry_table(meter.drain_telemetry(), plan.attempt))
        # Records before the checkpoint: a crash in between leaves an epoch that is recorded and
        # run again after --resume (its old row then flagged), never a checkpointed epoch
        # without a record.
        if writer is not None:
            writer.add_epochs(records)
            writer.add_power(power, attempt=plan.attempt, label=f"{epoch:06d}")
            write_telemetry_part(writer.path, telemetry, attempt=plan.attempt, label=f"{epoch:06d}")
            done += 1
            log(_progress(records, epoch, plan, done, time.perf_counter() - run_t0))
        if not interrupted:
            save_checkpoint(epoch)
        last = epoch == plan.epochs - 1
        if stopping and not (last and not interrupted):
            return False
        # A stop after the last iteration of the run still gets the run's final evaluation.
        if (after_epoch is not None and after_epoch(epoch, records)) or stopping:
            return True
    return True


RESULT_KEYS = ("d_loss", "g_loss", "comm_s", "step_s")


def _read_back(engine, results: list[dict], k: int) -> dict[str, list[float]]:
    """The step results of several calls as one list per key, one number per iteration
    (``step_s`` empty when the step does not time its iterations)."""
    out: dict[str, list[float]] = {key: [] for key in RESULT_KEYS}
    for result in results:
        for key in RESULT_KEYS:
            if key in result:
                out[key].extend(_per_iteration(engine, result[key], k))
    return out


def _per_iteration(engine, value, k: int) -> list[float]:
    """A step result as one number per iteration, the mean over this process's replicas:
    a scalar when the call runs one iteration, a (k,) vector when it runs k."""
    local = [np.asarray(v, dtype=np.float64).reshape(-1) for v in engine.local_values(value)]
    if any(v.shape != (k,) for v in local):
        raise RuntimeError(f"step returned {[v.shape for v in local]} values for {k} iteration(s) per call")
    return [float(np.mean([v[i] for v in local])) for i in range(k)]


def step_time_quantiles(step_times_s: list[float]) -> dict[str, float]:
    """EpochRecord's ``step_time_*`` fields from one epoch's per-iteration step times (s)."""
    if not step_times_s:
        return {}
    values = np.quantile(np.asarray(step_times_s, dtype=np.float64), [q for q, _ in STEP_TIME_QUANTILES])
    return {name: float(v) for (_, name), v in zip(STEP_TIME_QUANTILES, values)}


def _progress(records: list[EpochRecord], epoch: int, plan: EpochPlan, done: int, elapsed: float) -> str:
    t = max(r.time_s for r in records)
    showers = sum(r.showers for r in records)
    comm = float(np.mean([r.comm_s / r.time_s for r in records])) if t > 0 else 0.0
    wait = float(np.mean([r.data_wait_s / r.time_s for r in records])) if t > 0 else 0.0
    left = plan.epochs - epoch - 1
    eta = elapsed / done * left if done else 0.0
    energy = _energy_text(records)
    comm_text = f"comm {100 * comm:.1f}%" if math.isfinite(comm) else "comm untimed"
    tag = " [warm-up]" if records[0].warmup else ""
    cut = " [interrupted]" if records[0].interrupted else ""
    return (f"epoch {epoch + 1}/{plan.epochs}{tag}{cut}  {t:.2f} s  {showers / t:,.0f} showers/s  "
            f"{comm_text}  data {100 * wait:.1f}%  {energy}  ETA {_fmt_eta(eta)}")


def _energy_text(records: list[EpochRecord]) -> str:
    parts = []
    for domain in ENERGY_DOMAINS:
        values = [getattr(r, f"{domain}_energy_j") for r in records
                  if getattr(r, f"{domain}_energy_source") in SOURCES_WITH_VALUE]
        if values:
            est = any(getattr(r, f"{domain}_energy_source") == SOURCE_ESTIMATED for r in records)
            parts.append(f"{domain} {sum(values):.0f} J{' (est.)' if est else ''}")
    return "energy: " + (", ".join(parts) if parts else "n/a")

