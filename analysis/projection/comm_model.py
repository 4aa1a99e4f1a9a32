"""All-reduce time model, network files, and the calibration of the model to the micro-benchmark.

One all-reduce of ``b`` bytes over ``N`` ranks (``N >= 2``; nothing is exchanged with one rank)::

    t(b, N) = c + a(N) + 2 (N-1)/N * b / B

- ``c``, the fixed per-collective software cost of the engine (Horovod's cycle and
  negotiation, tf.distribute's launch): the same for every ``N``. It is calibrated from the
  all-reduce micro-benchmark, where it dominates the smallest sizes; without a benchmark it is
  0 (a lower bound).
- ``a(N)``, the latency term of the algorithm the library runs, with ``alpha`` the per-hop
  latency of a link:

  * ``ring``: 2(N-1) steps, each as slow as the slowest hop of the ring:
    ``2 (N-1) alpha_slowest``.
  * ``tree`` (default): log-depth algorithms, first inside a node, then between nodes:
    ``2 (ceil(log2 k) alpha_intra + ceil(log2 m) alpha_inter)`` with ``k`` ranks per node and
    ``m`` nodes.

  Which one the libraries pick: MPICH runs recursive doubling for short messages and
  Rabenseifner's reduce-scatter + all-gather for long ones, both with ``2 log2 N`` latency and
  (Rabenseifner) the ring's bandwidth term (Thakur, Rabenseifner and Gropp, "Optimization of
  Collective Communication Operations in MPICH", IJHPCA 19(1), 2005). NCCL >= 2.4 chooses ring
  or double binary tree per call from its own cost model, the tree for small and medium
  messages at many nodes, whose latency grows with log2 N (NVIDIA developer blog "Massively
  Scale Your Deep Learning Training with NCCL 2.4", 2019). Open MPI's fixed decision rules
  pick a (segmented) ring for large messages: ``ring`` is the conservative choice.
  BoloGAN's gradients (0.4-2 MB for photons and pions) are medium-sized, so the default is
  ``tree``.
- the bandwidth term ``2 (N-1)/N * b / B``: every rank sends and receives ``2 (N-1)/N`` of the
  buffer (reduce-scatter + all-gather), which both the ring and the pipelined trees attain at
  large sizes. ``B`` is the bandwidth of the slowest link on the path: the intra-node link when
  all ranks share one node, else ``min(B_intra, B_inter)``. This is the flat ring through every
  rank that NCCL builds (each hop, NVLink or NIC, carries the same ``b/N`` per step, so the
  slower link sets the pace), not a sequential hierarchical all-reduce (reduce in the node,
  all-reduce between nodes, broadcast in the node), which adds the intra-node bandwidth term
  on top and is off by default in Horovod (``HOROVOD_HIERARCHICAL_ALLREDUCE``).

Intra-node and inter-node links are separate networks: a network file names the ranks per node
and both links; ranks fill nodes in order (``m = ceil(N / ranks_per_node)``).

Calibration (``fit_allreduce_model``): ``c``, ``alpha`` and ``1/B`` by non-negative least
squares on relative error over every benchmark size and world size, then ``c`` again from the
smallest sizes (where it is nearly all of the time) and the other two refitted with it. With benchmarks at a
single world size ``alpha`` is not identifiable (a constant per-call cost and ``a(N)`` are the
same number at one ``N``): it is set to 0, the constant goes into ``c``, and projections take
``alpha`` and ``B`` from a network file. This is what keeps a 1 ms software cycle from being
read as a per-hop latency and multiplied by 2(N-1).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from common.errors import UserError
from common.settings import load_toml, section_from_mapping
from common.vocab import SHIPPED_NETWORKS_SUBDIR

NETWORKS_DIR = Path(__file__).resolve().parents[2] / SHIPPED_NETWORKS_SUBDIR

ALGORITHM_RING = "ring"
ALGORITHM_TREE = "tree"
ALGORITHMS = (ALGORITHM_TREE, ALGORITHM_RING)
DEFAULT_ALGORITHM = ALGORITHM_TREE

FIXED_COST_SMALLEST_SIZES = 3
"""Benchmark sizes per world size (the smallest) from which the fixed cost c is calibrated."""

NETWORK_TABLE, INTER_NODE_TABLE, INTRA_NODE_TABLE = "network", "inter_node", "intra_node"


# ------------------------------------------------------------------------------- network files
def _positive_finite(value: float, key: str) -> None:
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"{key} must be a positive finite number, got {value!r}")


@dataclass
class NetworkSection:
    """``[network]`` table of a network TOML file."""
    name: str = field(default="", metadata={"help": "label used in plots and tables"})
    description: str = field(default="", metadata={"help": "free text for the report"})
    ranks_per_node: int = field(default=1, metadata={"help": "ranks sharing one node (and its intra-node link)"})

    def check(self) -> None:
        if not self.name:
            raise ValueError("name must be given")
        if self.ranks_per_node < 1:
            raise ValueError(f"ranks_per_node must be >= 1, got {self.ranks_per_node}")


@dataclass
class LinkSection:
    """``[inter_node]`` / ``[intra_node]`` table: one link, with where its figures come from."""
    bandwidth_bytes_per_s: float = field(default=0.0, metadata={"help": "achieved uni-directional bandwidth, bytes/s"})
    latency_s: float = field(default=0.0, metadata={"help": "per-message, per-hop latency including MPI/NCCL, s"})
    source: str = field(default="", metadata={"help": "public benchmark or vendor figure the numbers come from"})
    notes: str = field(default="", metadata={"help": "caveats"})

    def check(self) -> None:
        _positive_finite(self.bandwidth_bytes_per_s, "bandwidth_bytes_per_s")
        _positive_finite(self.latency_s, "latency_s")
        if not self.source.strip():
            raise ValueError("source must say where the figures come from")


@dataclass(frozen=True)
class Link:
    """One link of a network, SI units."""
    bandwidth_bytes_per_s: float
    latency_s: float
    source: str = ""
    notes: str = ""


@dataclass(frozen=True)
class Network:
    """A network for the model, SI units.

    ``bandwidth_bytes_per_s`` / ``latency_s`` are the inter-node link (the only link with one
    rank per node); ``intra_node`` is the link between ranks of one node (None: the inter-node
    figures are used inside the node too, a conservative choice).
    """
    name: str
    bandwidth_bytes_per_s: float
    latency_s: float
    origin: str                   # "fitted to <files>" | "shipped example <file>" | "<toml path>"
    description: str = ""
    ranks_per_node: int = 1
    intra_node: Link | None = None
    source: str = ""
    notes: str = ""

    @property
    def inter_node(self) -> Link:
        return Link(self.bandwidth_bytes_per_s, self.latency_s, self.source, self.notes)

    @property
    def link_in_node(self) -> Link:
        return self.intra_node if self.intra_node is not None else self.inter_node

    @property
    def bandwidth_gbit_s(self) -> float:
        return self.bandwidth_bytes_per_s * 8 / 1e9

    @property
    def latency_us(self) -> float:
        return self.latency_s * 1e6

    def with_links(self, bandwidth_bytes_per_s: float, latency_s: float) -> "Network":
        """The same network with other inter-node figures (for what-if comparisons)."""
        return Network(self.name, bandwidth_bytes_per_s, latency_s, self.origin, self.description,
                       self.ranks_per_node, self.intra_node, self.source, self.notes)


def load_network(path: str | Path) -> Network:
    """Read a network TOML file: ``[network]``, ``[inter_node]`` and optionally ``[intra_node]``.

    Unknown tables or keys, non-positive or non-finite figures, and links without a ``source``
    are ``UserError`` naming the file and the key.
    """
    data = load_toml(path)
    known = (NETWORK_TABLE, INTER_NODE_TABLE, INTRA_NODE_TABLE)
    for key in data:
        if key not in known:
            raise UserError(f"{path}: unknown table [{key}] (known tables: "
                            + ", ".join(f"[{k}]" for k in known) + ")")
    for key in (NETWORK_TABLE, INTER_NODE_TABLE):
        if key not in data:
            raise UserError(f"{path}: missing table [{key}]")
    net = section_from_mapping(NetworkSection, data[NETWORK_TABLE], f"{path}: [{NETWORK_TABLE}]")
    inter = section_from_mapping(LinkSection, data[INTER_NODE_TABLE], f"{path}: [{INTER_NODE_TABLE}]")
    intra = None
    if INTRA_NODE_TABLE in data:
        if net.ranks_per_node == 1:
            raise UserError(f"{path}: [{INTRA_NODE_TABLE}] given but [{NETWORK_TABLE}] ranks_per_node = 1 "
                            "(set ranks_per_node to the ranks sharing a node)")
        s = section_from_mapping(LinkSection, data[INTRA_NODE_TABLE], f"{path}: [{INTRA_NODE_TABLE}]")
        intra = Link(s.bandwidth_bytes_per_s, s.latency_s, s.source, s.notes)
    p = Path(path).resolve()
    origin = f"shipped example {p.name}" if p.parent == NETWORKS_DIR.resolve() else str(path)
    return Network(net.name, inter.bandwidth_bytes_per_s, inter.latency_s, origin, net.description,
                   net.ranks_per_node, intra, inter.source, inter.notes)


def shipped_networks() -> list[Path]:
    """Example network files shipped with the package."""
    return sorted(NETWORKS_DIR.glob("*.toml"))


# ------------------------------------------------------------------------------ the time model
def ring_allreduce_s(nbytes: float | np.ndarray, n: int | np.ndarray, bandwidth_bytes_per_s: float,
                     latency_s: float) -> np.ndarray | float:
    """Plain ring on one link, no fixed cost: t = 2(N-1)/N * bytes / B + 2(N-1) L; zero for N = 1."""
    n_arr = np.asarray(n, dtype=float)
    b = np.asarray(nbytes, dtype=float)
    t = 2 * (n_arr - 1) / n_arr * b / bandwidth_bytes_per_s + 2 * (n_arr - 1) * latency_s
    return float(t) if np.ndim(t) == 0 else t


def _ceil_log2(x: int) -> int:
    return int(math.ceil(math.log2(x))) if x > 1 else 0


def placement(n: int, ranks_per_node: int) -> tuple[int, int]:
    """(ranks per node in use k, nodes m) for ``n`` ranks filling nodes in order."""
    k = min(n, ranks_per_node)
    return k, int(math.ceil(n / k))


def latency_term_s(n: int, net: Network, algorithm: str = DEFAULT_ALGORITHM) -> float:
    """a(N) of the module docstring, seconds (0 for N = 1)."""
    if n <= 1:
        return 0.0
    k, m = placement(n, net.ranks_per_node)
    intra, inter = net.link_in_node.latency_s, net.latency_s
    if algorithm == ALGORITHM_RING:
        return 2 * (n - 1) * (max(intra, inter) if m > 1 else intra)
    if algorithm == ALGORITHM_TREE:
        return 2 * (_ceil_log2(k) * intra + _ceil_log2(m) * inter)
    raise ValueError(f"unknown all-reduce algorithm {algorithm!r} (known: {', '.join(ALGORITHMS)})")


def path_bandwidth_bytes_per_s(n: int, net: Network) -> float:
    """Bandwidth of the slowest link the all-reduce crosses at ``n`` ranks, bytes/s."""
    _, m = placement(max(n, 1), net.ranks_per_node)
    intra = net.link_in_node.bandwidth_bytes_per_s
    return intra if m == 1 else min(intra, net.bandwidth_bytes_per_s)


def _latency_unit(n: np.ndarray, algorithm: str) -> np.ndarray:
    """a(N) / alpha on a single link (used by the fit)."""
    if algorithm == ALGORITHM_RING:
        return 2 * (n - 1)
    return 2 * np.ceil(np.log2(np.maximum(n, 1)))


@dataclass(frozen=True)
class AllreduceTime:
    """One all-reduce (or a sum of them), split into the model's three terms, seconds."""
    fixed_s: float
    latency_s: float
    bandwidth_s: float

    @property
    def total_s(self) -> float:
        return self.fixed_s + self.latency_s + self.bandwidth_s

    def __add__(self, other: "AllreduceTime") -> "AllreduceTime":
        return AllreduceTime(self.fixed_s + other.fixed_s, self.latency_s + other.latency_s,
                             self.bandwidth_s + other.bandwidth_s)

    def times(self, k: float) -> "AllreduceTime":
        return AllreduceTime(k * self.fixed_s, k * self.latency_s, k * self.bandwidth_s)


@dataclass(frozen=True)
class CommModel:
    """The all-reduce model for one engine on one network: ``t(b, N) = c + a(N) + 2(N-1)/N b/B``."""
    network: Network
    fixed_cost_s: float = 0.0
    algorithm: str = DEFAULT_ALGORITHM
    fixed_cost_origin: str = "no all-reduce benchmark: c = 0 (lower bound)"

    @property
    def name(self) -> str:
        return self.network.name

    def allreduce(self, nbytes: float, n: int) -> AllreduceTime:
        """One all-reduce of ``nbytes`` over ``n`` ranks; all zero for one rank."""
        if n <= 1:
            return AllreduceTime(0.0, 0.0, 0.0)
        bw = path_bandwidth_bytes_per_s(n, self.network)
        bw_s = 2 * (n - 1) / n * float(nbytes) / bw if math.isfinite(bw) else 0.0
        return AllreduceTime(self.fixed_cost_s, latency_term_s(n, self.network, self.algorithm), bw_s)

    def allreduce_s(self, nbytes: float, n: int) -> float:
        return self.allreduce(nbytes, n).total_s

    def per_iteration(self, critic_bytes: float, generator_bytes: float, n_disc: int, n: int) -> AllreduceTime:
        """n_disc critic all-reduces + 1 generator all-reduce (one BoloGAN iteration)."""
        return self.allreduce(critic_bytes, n).times(n_disc) + self.allreduce(generator_bytes, n)


def as_comm_model(net_or_model: Network | CommModel) -> CommModel:
    """A ``Network`` alone is modelled with c = 0."""
    return net_or_model if isinstance(net_or_model, CommModel) else CommModel(net_or_model)


# ------------------------------------------------------------------------------- calibration
@dataclass(frozen=True)
class CommFit:
    """The model fitted to benchmark timings on the measured (local) link."""
    fixed_cost_s: float                  # c
    latency_s: float                     # alpha; 0 when not identifiable (one world size)
    bandwidth_bytes_per_s: float         # B; inf when no size was large enough to show it
    points: int
    world_sizes: tuple[int, ...]
    rms_relative_residual: float         # root-mean-square of (model - measured) / measured
    algorithm: str = DEFAULT_ALGORITHM

    @property
    def latency_fitted(self) -> bool:
        """alpha needs benchmarks at two or more world sizes > 1."""
        return len(self.world_sizes) >= 2

    @property
    def bandwidth_resolved(self) -> bool:
        return math.isfinite(self.bandwidth_bytes_per_s)

    def describe(self) -> str:
        parts = [f"c = {self.fixed_cost_s * 1e6:.3g} us per all-reduce"]
        if self.latency_fitted:
            parts.append(f"alpha = {self.latency_s * 1e6:.3g} us per hop")
        else:
            parts.append("alpha not fitted (one world size; inside c)")
        parts.append(f"B = {self.bandwidth_bytes_per_s * 8 / 1e9:.3g} Gbit/s" if self.bandwidth_resolved
                     else "B not resolved (no size large enough)")
        parts.append(f"rms relative residual {self.rms_relative_residual:.1%}")
        return ", ".join(parts)

    def network(self, name: str, origin: str) -> Network:
        return Network(name, self.bandwidth_bytes_per_s, self.latency_s, origin, f"fitted: {self.describe()}",
                       source="all-reduce micro-benchmark", notes=self.describe())

    def model(self, network: Network | None = None, origin: str = "all-reduce micro-benchmark") -> CommModel:
        """This engine's fixed cost ``c`` on ``network`` (default: the measured link itself)."""
        net = network if network is not None else self.network("measured", origin)
        return CommModel(net, self.fixed_cost_s, self.algorithm, f"c fitted to the {origin}")

    def predict_s(self, nbytes: float | np.ndarray, n: int) -> np.ndarray | float:
        """The fitted curve at ``n`` ranks (for plots next to the benchmark points)."""
        b = np.asarray(nbytes, dtype=float)
        if n <= 1:
            t = np.zeros_like(b)
        else:
            inv_bw = 0.0 if not self.bandwidth_resolved else 1.0 / self.bandwidth_bytes_per_s
            unit = float(_latency_unit(np.asarray([n], dtype=float), self.algorithm)[0])
            t = self.fixed_cost_s + unit * self.latency_s + 2 * (n - 1) / n * b * inv_bw
        return float(t) if np.ndim(t) == 0 else t


def fit_allreduce_model(world_sizes: Sequence[int], nbytes: Sequence[float], times_s: Sequence[float],
                        algorithm: str = DEFAULT_ALGORITHM) -> CommFit | None:
    """Fit ``c``, ``alpha`` and ``1/B`` (all >= 0) to benchmark timings, on relative error.

    Each point is weighted by 1/t so that the smallest sizes, where t is c + a(N), count as much
    as the large ones, which carry the bandwidth. After a joint fit, ``c`` is re-calibrated as
    the median residual of the ``FIXED_COST_SMALLEST_SIZES`` smallest sizes of each world size,
    and alpha and 1/B are refitted with it. N = 1 points carry no information and are skipped.
    With one distinct world size alpha is fixed at 0 (see the module docstring). None with fewer
    than two usable points.
    """
    from scipy.optimize import nnls

    n = np.asarray(world_sizes, dtype=float)
    b = np.asarray(nbytes, dtype=float)
    t = np.asarray(times_s, dtype=float)
    ok = (n > 1) & np.isfinite(t) & (t > 0) & np.isfinite(b) & (b >= 0)
    n, b, t = n[ok], b[ok], t[ok]
    if t.size < 2:
        return None
    several_n = len(np.unique(n)) >= 2
    volume = 2 * (n - 1) / n * b
    unit = _latency_unit(n, algorithm)
    columns = [np.ones_like(t), volume] + ([unit] if several_n else [])
    coef, _ = nnls(np.column_stack(columns) / t[:, None], np.ones_like(t))
    inv_bw, alpha = float(coef[1]), (float(coef[2]) if several_n else 0.0)
    # c from the smallest sizes of each world size (where it dominates), then alpha and 1/B
    # again with c held: a benchmark whose floor is a max(cycle, transfer) rather than a sum
    # would otherwise pull c below the measured floor.
    small = np.zeros(t.size, dtype=bool)
    for world in np.unique(n):
        idx = np.flatnonzero(n == world)
        small[idx[np.argsort(b[idx], kind="stable")[:FIXED_COST_SMALLEST_SIZES]]] = True
    c = max(0.0, float(np.median((t - alpha * unit - inv_bw * volume)[small])))
    rest = [volume] + ([unit] if several_n else [])
    coef, _ = nnls(np.column_stack(rest) / t[:, None], (t - c) / t)
    inv_bw, alpha = float(coef[0]), (float(coef[1]) if several_n else 0.0)
    bw = 1.0 / inv_bw if inv_bw > 0 else math.inf
    fit = CommFit(c, alpha, bw, int(t.size), tuple(sorted({int(x) for x in n})), math.nan, algorithm)
    model = np.array([fit.predict_s(bi, int(ni)) for bi, ni in zip(b, n)])
    rms = float(np.sqrt(np.mean(((model - t) / t) ** 2)))
    return CommFit(c, alpha, bw, fit.points, fit.world_sizes, rms, algorithm)


def fit_bench_files(benches: Iterable, algorithm: str = DEFAULT_ALGORITHM) -> CommFit | None:
    """Fit the model jointly to every benchmark file given (``analysis.load.BenchFile``)."""
    ns, bs, ts = [], [], []
    for bench in benches:
        for nbytes, t in zip(bench.bytes, bench.time_s_median):
            ns.append(bench.world_size)
            bs.append(nbytes)
            ts.append(t)
    return fit_allreduce_model(ns, bs, ts, algorithm)
