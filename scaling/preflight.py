"""Check an allocation before spending it: does every measurement scaling.run will make rest on
the hardware it should? Run it as the training will run, on the same nodes and ranks::

    srun -N4 --ntasks-per-node=4 --gpus-per-task=1 --gpu-bind=closest python -m scaling.preflight --network infiniband_hdr
    mpirun -np 2 python -m scaling.preflight --json
    python -m scaling.preflight

Every rank checks: the device it will train on (the one rule of common.gpu_binding; GPUs
distinct within a node by PCI bus id); TensorFlow built with CUDA and the GPU running a small
op; Horovod built with what the engine needs (NCCL on GPUs, MPI or Gloo); the comm-timing fence
(a timed all-reduce right after a long kernel measures the all-reduce, not the kernel); NVML's
energy counter on the rank's GPU, opened by the same bus id; RAPL on the node's reader rank;
with several nodes, an all-reduce between them at the training's message sizes against
``--network`` (a shipped name from analysis/projection/networks or a TOML file).

A measurement that will be unavailable (no counter here) is a warning with its reason; one that
would be wrong (a shared GPU, CPU TensorFlow on a GPU node, Horovod without NCCL on GPUs, a
fence that times the kernel, an inter-node all-reduce far slower than the fabric) is a failure.
Rank 0 prints one table (or, with --json, a JSON list with one object per rank).

Exit codes: 0 every planned measurement will be right (warnings allowed), 1 a failure on some
rank (each named), 2 bad input (arguments, network file).
"""
from __future__ import annotations

import json
import math
import os
import sys
import time
import tomllib
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from common.cli import Parser, add_json_flag, positive_int
from common.errors import EXIT_FAILURE, EXIT_OK, EXIT_USER_ERROR, UserError
from common.gpu_binding import RankGpu, node_sharing
from common.vocab import ENGINE_HOROVOD, ENGINES, PARTICLE_NAMES, SHIPPED_NETWORKS_SUBDIR, SOURCE_MEASURED
from scaling.collectives import for_world, prefer_yielding_mpi
from scaling.world import World, discover

NETWORKS_DIR = Path(__file__).resolve().parents[1] / SHIPPED_NETWORKS_SUBDIR
# The fence check's kernel must take much longer than a small all-reduce: matmul chain sizes.
FENCE_MATMUL_N_GPU, FENCE_MATMUL_N_CPU, FENCE_CHAIN = 4096, 384, 24
# A timed all-reduce that holds more than this fraction of the kernel before it timed the kernel.
FENCE_MAX_KERNEL_FRACTION = 0.5
# An inter-node all-reduce this many times slower than the network file's model is a failure
# (a TCP fallback on InfiniBand is 10x and more; MPI's own overheads stay well inside it).
NETWORK_SLOWDOWN_LIMIT = 5.0
NETWORK_REPEATS = 10


@dataclass
class RankReport:
    """One rank's findings (the --json object)."""
    rank: int
    local_rank: int
    host: str
    world: int
    device: str = "unknown"
    gpu_pci_bus_id: str | None = None
    nvml_energy: str = "n/a"
    rapl: str = "n/a"
    ok: bool = True
    problems: list[str] = field(default_factory=list)     # failures: a measurement would be wrong
    warnings: list[str] = field(default_factory=list)     # unavailable measurements, with reasons
    checks: dict[str, Any] = field(default_factory=dict)  # numbers behind the verdicts

    def fail(self, text: str) -> None:
        self.problems.append(text)
        self.ok = False

    def warn(self, text: str) -> None:
        self.warnings.append(text)


@dataclass(frozen=True)
class Network:
    name: str
    bandwidth_bytes_per_s: float
    latency_s: float


def read_network(arg: str) -> Network:
    """``--network``: a shipped name (analysis/projection/networks/<name>.toml) or a TOML file path."""
    path = Path(arg)
    if not path.suffix:
        path = NETWORKS_DIR / f"{arg}.toml"
    try:
        doc = tomllib.loads(path.read_text())
        inter = doc["inter_node"]
        bw, lat = float(inter["bandwidth_bytes_per_s"]), float(inter["latency_s"])
    except OSError as exc:
        shipped = ", ".join(sorted(p.stem for p in NETWORKS_DIR.glob("*.toml")))
        raise UserError(f"--network {arg}: cannot read {path} ({exc.strerror}); shipped: {shipped}") from None
    except (tomllib.TOMLDecodeError, KeyError, TypeError, ValueError) as exc:
        raise UserError(f"--network {path}: needs [inter_node] bandwidth_bytes_per_s and latency_s ({exc})") from None
    if not (bw > 0 and lat >= 0 and math.isfinite(bw) and math.isfinite(lat)):
        raise UserError(f"--network {path}: [inter_node] bandwidth_bytes_per_s must be > 0 and latency_s >= 0")
    return Network(str(doc.get("network", {}).get("name", path.stem)), bw, lat)


def ring_allreduce_s(nbytes: int, ranks: int, net: Network) -> float:
    """Ring all-reduce model: 2(p-1) steps of latency and 2(p-1)/p of the message per link."""
    if ranks < 2:
        return 0.0
    return 2 * (ranks - 1) * net.latency_s + 2 * (ranks - 1) / ranks * nbytes / net.bandwidth_bytes_per_s


def parse_args(argv: list[str] | None):
    parser = Parser("python -m scaling.preflight", __doc__)
    parser.add_argument("--config", help="the training's TOML file: engine, share_gpu, particle, n_disc and "
                                         "powercap_root come from it (flags given here win)")
    parser.add_argument("--engine", choices=ENGINES, default=None,
                        help=f"the engine the training will use (default {ENGINE_HOROVOD})")
    parser.add_argument("--share-gpu", action="store_true", default=None,
                        help="ranks may share a GPU (as scaling.run --share-gpu)")
    parser.add_argument("--network", default=None,
                        help="network file the inter-node all-reduce is compared with (name in analysis/projection/networks "
                             "or a TOML path); needed on several nodes")
    parser.add_argument("--particle", choices=PARTICLE_NAMES, default=None,
                        help="whose gradient sizes the inter-node all-reduce uses (default: the training's)")
    parser.add_argument("--n-disc", type=positive_int, default=None,
                        help="critic steps per iteration (default: the training's)")
    parser.add_argument("--powercap-root", default=None, help="where RAPL is read (default: the training's)")
    add_json_flag(parser, "one object per rank")
    args = parser.parse_args(argv)
    _fill_from_training_settings(args)
    return args


def _fill_from_training_settings(args) -> None:
    """Unset flags take the training's values: its --config file, else scaling.run's defaults."""
    from common.settings import resolve_sections
    from scaling.run import SECTIONS

    cfg = resolve_sections(SECTIONS, args.config)
    for flag, value in (("engine", cfg["scaling"].engine), ("share_gpu", cfg["scaling"].share_gpu),
                        ("particle", cfg["model"].particle), ("n_disc", cfg["train"].n_disc),
                        ("powercap_root", cfg["energy"].powercap_root)):
        if getattr(args, flag) is None:
            setattr(args, flag, value)


# -- the checks (each appends to the rank's report; none raises for a finding) -----------------

def check_device(report: RankReport, world: World, share: bool, all_local: bool = False):
    """Pin as training will; a refusal (shared GPU, CPU TensorFlow on a GPU node) is a failure."""
    from scaling.devices import pin_rank

    try:
        pin = pin_rank(world.local_rank, world.local_size, share=share, all_local=all_local)
    except UserError as exc:
        report.fail(str(exc))
        report.device = "refused"
        return None
    report.device = pin.decision.device
    report.checks["device"] = pin.describe()
    if pin.decision.gpus:
        report.gpu_pci_bus_id = pin.decision.gpus[0].pci_bus_id
    if pin.decision.warning:
        report.warn(pin.decision.warning)
    return pin


def check_tensorflow_gpu(report: RankReport, pin) -> None:
    """TensorFlow built with CUDA, a small op placed on the GPU, and the GPU TensorFlow created
    being the one the rule chose (its bus id, as TensorFlow's device list reports it)."""
    import tensorflow as tf

    report.checks["tf_built_with_cuda"] = bool(tf.test.is_built_with_cuda())
    if pin is None or not pin.on_gpu:
        return
    with tf.device("/GPU:0"):
        x = tf.linalg.matmul(tf.ones((64, 64)), tf.ones((64, 64)))
    report.checks["tiny_op_device"] = x.device
    if "GPU:0" not in x.device or float(x[0, 0]) != 64.0:
        report.fail(f"a small op did not run on the GPU (ran on {x.device})")
    from tensorflow.python.client import device_lib   # the only API that states a GPU's bus id

    descs = [d.physical_device_desc for d in device_lib.list_local_devices() if d.device_type == "GPU"]
    from common.gpu_binding import normalise_bus_id

    seen = [normalise_bus_id(part.split("pci bus id:")[1].split(",")[0])
            for part in descs if "pci bus id:" in part]
    report.checks["tf_gpu_bus_ids"] = seen
    want = report.gpu_pci_bus_id
    if want and seen and seen[0] != want:
        report.fail(f"TensorFlow trains on GPU {seen[0]} but the rule chose {want} (metered != trained)")


def check_horovod(report: RankReport, engine: str, on_gpu: bool):
    """Horovod's build (NCCL on GPUs, MPI or Gloo) and its initialisation; returns hvd or None."""
    if engine != ENGINE_HOROVOD:
        return None
    try:
        import horovod.tensorflow as hvd
    except ImportError as exc:
        report.fail(f"horovod not importable ({exc}): --engine horovod cannot run")
        return None
    built = {"mpi": bool(hvd.mpi_built()), "gloo": bool(hvd.gloo_built()), "nccl": bool(hvd.nccl_built())}
    report.checks["horovod_built"] = built
    if not (built["mpi"] or built["gloo"]):
        report.fail("Horovod was built without MPI and Gloo: no controller to run on")
    if on_gpu and not built["nccl"]:
        report.fail("Horovod was built without NCCL on a GPU node: gradients would go through host memory "
                    "(reinstall with HOROVOD_GPU_OPERATIONS=NCCL: make install TF_BUILD=gpu)")
    hvd.init()
    return hvd


def check_comm_fence(report: RankReport, hvd, coll, on_gpu: bool) -> None:
    """A timed all-reduce (bologan.step.timed, as training times it) right after a long kernel:
    its time must not hold the kernel. The smallest over ranks and repeats is judged: the last
    rank to finish its kernel waits for nobody, so its time is the all-reduce alone unless the
    fence lets the timer start before the kernel is done."""
    import tensorflow as tf

    from bologan.step import timed

    n = FENCE_MATMUL_N_GPU if on_gpu else FENCE_MATMUL_N_CPU
    x = tf.random.stateless_normal((n, n), seed=(1, 2)) / math.sqrt(n)

    def kernel(a):
        y = a
        for _ in range(FENCE_CHAIN):
            y = tf.linalg.matmul(y, a)
        return y

    @tf.function
    def kernel_only(a):
        return tf.reduce_sum(kernel(a)[:1, :1])

    @tf.function
    def kernel_then_timed_allreduce(a):
        y = kernel(a)
        small = y[:1, :8]          # a small message: its all-reduce takes far less than the kernel
        reduced, dt = timed(lambda g: [hvd.allreduce(g[0], op=hvd.Sum)], [small])
        return reduced[0], dt

    kernel_only(x).numpy()
    kernel_then_timed_allreduce(x)[1].numpy()         # compile both before timing
    kernel_s, comm_s = [], []
    for _ in range(3):
        coll.barrier()
        t = time.perf_counter()
        kernel_only(x).numpy()
        kernel_s.append(time.perf_counter() - t)
        coll.barrier()
        comm_s.append(float(kernel_then_timed_allreduce(x)[1].numpy()))
    kernel_min = min(coll.allgather(min(kernel_s)))
    comm_min = min(coll.allgather(min(comm_s)))
    report.checks["fence"] = {"kernel_s": kernel_min, "timed_allreduce_s": comm_min}
    if comm_min > FENCE_MAX_KERNEL_FRACTION * kernel_min:
        report.fail(f"comm timing holds the preceding compute: a timed all-reduce after a {1e3 * kernel_min:.1f} ms "
                    f"kernel took {1e3 * comm_min:.1f} ms (bologan.step.timed's fence does not wait for the kernel)")


def check_nvml(report: RankReport, world: World, pin, sharers: int, powercap_root: str) -> None:
    """NVML energy on the rank's GPU (opened by bus id, as the meter of a run does) and RAPL on
    the node's reader rank, through the same meter training uses."""
    from energy.config import EnergyConfig
    from energy.meter import EnergyMeter

    meter = EnergyMeter.for_rank(world, EnergyConfig(powercap_root=powercap_root), t0=time.monotonic(),
                                 on_gpu=bool(pin and pin.on_gpu), gpus=pin.decision.gpus if pin else None,
                                 gpu_sharers=sharers)
    try:
        d = meter.describe()["domains"]
    finally:
        meter.stop()
    gpu, cpu = d["gpu"], d["cpu"]
    if pin is not None and pin.on_gpu:
        if gpu["source"] == SOURCE_MEASURED:
            report.nvml_energy = gpu["method"]
            if gpu["method"] != "nvml-energy-counter":
                report.warn(f"GPU energy from integrated power samples ({gpu['method']}): no energy counter on "
                            "this GPU (pre-Volta), less exact")
        else:
            report.nvml_energy = "unavailable"
            report.warn(f"GPU energy unavailable: {gpu.get('reason')}" + (f" ({gpu['hint']})" if gpu.get("hint") else ""))
    if world.reads_node_counters:
        if cpu["source"] == SOURCE_MEASURED:
            report.rapl = "readable"
        else:
            report.rapl = "unavailable"
            report.warn(f"CPU energy (RAPL) unavailable: {cpu.get('reason')}" +
                        (f"; fix: {cpu['hint']}" if cpu.get("hint") else ""))
    else:
        report.rapl = "not reader"


def check_network(report: RankReport, world: World, nodes: list[str], network: Network | None,
                  particle: str, n_disc: int) -> None:
    """With several nodes: the training's all-reduce messages between them (MPI, every rank)
    against the network file's ring model."""
    if len(set(nodes)) < 2:
        report.checks["network"] = "one node: no inter-node all-reduce"
        return
    if network is None:
        report.warn("several nodes but no --network file: the inter-node all-reduce speed is not checked")
        return
    if world.launcher == "horovodrun":
        report.warn("the inter-node all-reduce check uses MPI: run the preflight under mpirun or srun for it")
        return
    import numpy as np
    from mpi4py import MPI

    from scaling.allreduce_bench import training_messages

    comm = MPI.COMM_WORLD
    rows = []
    for message in training_messages(particle, n_disc):
        buf = np.ones(message.bytes // 4, dtype=np.float32)
        out = np.empty_like(buf)
        comm.Allreduce(buf, out, op=MPI.SUM)        # warm-up
        times = []
        for _ in range(NETWORK_REPEATS):
            comm.Barrier()
            t = time.perf_counter()
            comm.Allreduce(buf, out, op=MPI.SUM)
            times.append(time.perf_counter() - t)
        measured = max(comm.allgather(float(np.median(times))))
        model = ring_allreduce_s(message.bytes, world.size, network)
        rows.append({"message": message.name, "bytes": message.bytes, "measured_s": measured, "model_s": model})
        if measured > NETWORK_SLOWDOWN_LIMIT * model:
            report.fail(f"inter-node all-reduce of the {message.name} gradients ({message.bytes} B) took "
                        f"{1e6 * measured:.0f} us, {measured / model:.0f}x the {network.name} model "
                        f"({1e6 * model:.0f} us): a TCP fallback or the wrong interface? (NCCL_DEBUG=INFO, "
                        "UCX_NET_DEVICES, OMPI_MCA_btl)")
    report.checks["network"] = {"file": network.name, "messages": rows}


# -- running it --------------------------------------------------------------------------------

def run_checks(args, world: World, coll, network: Network | None) -> RankReport:
    """Every check on this rank. A check that crashes where no peer waits on this rank becomes
    a failure of the report; one that crashes inside collective work ends the job (exit 1),
    since its peers would otherwise wait for it forever."""
    report = RankReport(world.rank, world.local_rank, world.node, world.size)
    all_local = args.engine != ENGINE_HOROVOD and world.size == 1     # as scaling.engines.pin_devices
    pin = _local(report, "device pinning", check_device, report, world, args.share_gpu, all_local)
    rows = coll.allgather(RankGpu(world.rank, world.node, pin.identity if pin else None))
    shares, problem = node_sharing(rows, args.share_gpu)
    if problem:
        report.fail(problem)
    sharers = shares.get(world.rank, 1)
    if sharers > 1 and not problem:
        report.warn(f"{sharers} ranks share this GPU (--share-gpu): its energy is split between them")
    on_gpu = bool(pin and pin.on_gpu)
    _local(report, "TensorFlow GPU check", check_tensorflow_gpu, report, pin)
    _local(report, "NVML/RAPL check", check_nvml, report, world, pin, sharers, args.powercap_root)
    try:
        hvd = check_horovod(report, args.engine, on_gpu)
        if hvd is not None:
            check_comm_fence(report, hvd, coll, on_gpu)
        check_network(report, world, coll.allgather(world.node), network, args.particle, args.n_disc)
    except Exception as exc:  # noqa: BLE001 - peers wait in a collective: end them all
        print(f"preflight: rank {world.rank} on {world.node}: collective check failed: "
              f"{type(exc).__name__}: {exc}", file=sys.stderr, flush=True)
        coll.abort(EXIT_FAILURE)
    return report


def _local(report: RankReport, label: str, check, *args):
    """Run a check that involves no other rank; a crash is this rank's failure, not the job's."""
    try:
        return check(*args)
    except Exception as exc:  # noqa: BLE001 - named in the report, so the table still comes
        report.fail(f"{label} crashed: {type(exc).__name__}: {exc}")
        return None


def table(reports: list[RankReport]) -> str:
    head = ["rank", "local", "host", "device", "gpu_pci_bus_id", "nvml_energy", "rapl", "ok", "problems / warnings"]
    rows = [[str(r.rank), str(r.local_rank), r.host, r.device, r.gpu_pci_bus_id or "-", r.nvml_energy, r.rapl,
             "yes" if r.ok else "NO", "; ".join([f"FAIL {p}" for p in r.problems] + [f"warn {w}" for w in r.warnings])
             or "-"] for r in reports]
    widths = [max(len(x) for x in col) for col in zip(head, *rows)]
    widths[-1] = 0
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in [head, *rows])


def main(argv: list[str] | None = None) -> int:
    world = discover()
    try:
        args = parse_args(argv)
        network = read_network(args.network) if args.network else None
    except UserError as exc:
        if world.rank == 0:
            print(f"error: {exc}", file=sys.stderr, flush=True)
        return EXIT_USER_ERROR
    prefer_yielding_mpi()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    coll = for_world(world, args.engine)     # as scaling.run: Horovod's collectives under horovodrun --gloo
    report = run_checks(args, world, coll, network)
    reports = coll.gather(report)
    if world.rank == 0:
        assert reports is not None
        if args.json:
            print(json.dumps([asdict(r) for r in reports], indent=1, default=str), flush=True)
        else:
            print(table(reports), flush=True)
            failed = [r.rank for r in reports if not r.ok]
            print(f"preflight: {'FAILED on rank(s) ' + ', '.join(map(str, failed)) if failed else 'ok'} "
                  f"({len(reports)} rank(s) on {len({r.host for r in reports})} node(s))", flush=True)
    failed_anywhere = coll.bcast(any(not r.ok for r in reports) if world.rank == 0 else None)
    return EXIT_FAILURE if failed_anywhere else EXIT_OK


if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    sys.exit(main())
