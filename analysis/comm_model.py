"""Communication model (ring all-reduce), its fit to the micro-benchmark, and scaling projections.

Ring all-reduce of ``b`` bytes over ``N`` ranks (reduce-scatter + all-gather, 2(N-1) steps,
each moving b/N bytes)::

    t(b, N) = 2 (N-1)/N * b / B  +  2 (N-1) * L        (B: bandwidth, bytes/s; L: latency, s)

One BoloGAN iteration all-reduces the critic gradients ``n_disc`` times and the generator
gradients once (4 bytes per trainable parameter, ``analysis.model_size``); communication is
assumed not to overlap computation (an upper bound on its cost).

Projection of the time per iteration, t_it(N) = t_nc(N) + t_comm(N), where t_nc is all the
non-communication time (compute, input wait, bookkeeping) measured per iteration:

- strong scaling (global batch fixed): t_nc(N) = a / N + b, with ``a`` (the part that shrinks
  with the per-rank batch) and ``b >= 0`` (the part that does not) fitted to the measured
  strong-scaling points; with one measured N, b = 0 (perfect compute scaling assumed).
  Efficiency E(N) = t_it(1) / (N t_it(N)).
- weak scaling (per-rank batch fixed): t_nc(N) = t_nc(N0), constant; E(N) = t_it(1) / t_it(N).
- another particle's model: t_nc scaled by the ratio of trainable parameters (dense-layer
  FLOPs per shower are proportional to the parameter count).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from common.errors import UserError
from common.settings import load_toml, section_from_mapping

NETWORKS_DIR = Path(__file__).with_name("networks")


@dataclass
class NetworkConfig:
    """``[network]`` table of a network TOML file."""
    name: str = field(default="", metadata={"help": "label used in plots and tables"})
    bandwidth_gbit_s: float = field(default=0.0, metadata={"help": "per-link bandwidth, Gbit/s"})
    latency_us: float = field(default=0.0, metadata={"help": "per-message latency, microseconds"})
    description: str = field(default="", metadata={"help": "free text for the report"})

    def check(self) -> None:
        if not self.name:
            raise ValueError("name must be given")
        if not self.bandwidth_gbit_s > 0:
            raise ValueError("bandwidth_gbit_s must be > 0")
        if self.latency_us < 0:
            raise ValueError("latency_us must be >= 0")


@dataclass(frozen=True)
class Network:
    """A network for the model, in SI units."""
    name: str
    bandwidth_bytes_per_s: float
    latency_s: float
    origin: str                   # "fitted to <files>" | "<toml path>"
    description: str = ""

    @property
    def bandwidth_gbit_s(self) -> float:
        return self.bandwidth_bytes_per_s * 8 / 1e9

    @property
    def latency_us(self) -> float:
        return self.latency_s * 1e6


def load_network(path: str | Path) -> Network:
    """Read a network TOML file (only a ``[network]`` table; unknown keys are errors)."""
    data = load_toml(path)
    unknown = [k for k in data if k != "network"]
    if unknown or "network" not in data:
        raise UserError(f"{path}: expected exactly one [network] table"
                        + (f" (unknown section [{unknown[0]}])" if unknown else ""))
    cfg = section_from_mapping(NetworkConfig, data["network"], f"{path}: [network]")
    p = Path(path).resolve()
    origin = f"shipped example {p.name}" if p.parent == NETWORKS_DIR.resolve() else str(path)
    return Network(cfg.name, cfg.bandwidth_gbit_s * 1e9 / 8, cfg.latency_us * 1e-6, origin, cfg.description)


def shipped_networks() -> list[Path]:
    """Example network files shipped with the package."""
    return sorted(NETWORKS_DIR.glob("*.toml"))


def ring_allreduce_s(nbytes: float | np.ndarray, n: int | np.ndarray, bandwidth_bytes_per_s: float,
                     latency_s: float) -> np.ndarray | float:
    """t = 2(N-1)/N * bytes / B + 2(N-1) L; zero for N = 1."""
    n_arr = np.asarray(n, dtype=float)
    b = np.asarray(nbytes, dtype=float)
    t = 2 * (n_arr - 1) / n_arr * b / bandwidth_bytes_per_s + 2 * (n_arr - 1) * latency_s
    return float(t) if np.ndim(t) == 0 else t


@dataclass(frozen=True)
class CommFit:
    """Least-squares fit of the ring model to benchmark timings."""
    bandwidth_bytes_per_s: float
    latency_s: float
    points: int
    world_sizes: tuple[int, ...]
    rms_relative_residual: float  # root-mean-square of (model - measured) / measured

    def network(self, name: str, origin: str) -> Network:
        return Network(name, self.bandwidth_bytes_per_s, self.latency_s, origin,
                       f"fitted: {self.bandwidth_bytes_per_s * 8 / 1e9:.3g} Gbit/s, "
                       f"{self.latency_s * 1e6:.3g} us, rms relative residual {self.rms_relative_residual:.1%}")


def fit_ring_model(world_sizes: Sequence[int], nbytes: Sequence[float], times_s: Sequence[float]) -> CommFit | None:
    """Fit 1/B and L of ``ring_allreduce_s`` by non-negative least squares on relative error.

    Each point is weighted by 1/t so that small messages (which carry the latency) count as
    much as large ones (which carry the bandwidth). N = 1 points carry no information (t = 0 in
    the model) and are skipped. None when fewer than two usable points remain or the fit
    degenerates (no bandwidth term).
    """
    from scipy.optimize import nnls

    n = np.asarray(world_sizes, dtype=float)
    b = np.asarray(nbytes, dtype=float)
    t = np.asarray(times_s, dtype=float)
    ok = (n > 1) & np.isfinite(t) & (t > 0) & np.isfinite(b) & (b >= 0)
    n, b, t = n[ok], b[ok], t[ok]
    if t.size < 2:
        return None
    design = np.column_stack([2 * (n - 1) / n * b, 2 * (n - 1)]) / t[:, None]
    coef, _ = nnls(design, np.ones_like(t))
    inv_bw, lat = float(coef[0]), float(coef[1])
    if inv_bw <= 0:
        return None
    model = ring_allreduce_s(b, n, 1.0 / inv_bw, lat)
    rms = float(np.sqrt(np.mean(((model - t) / t) ** 2)))
    return CommFit(1.0 / inv_bw, lat, int(t.size), tuple(sorted({int(x) for x in n})), rms)


def fit_bench_files(benches: Iterable) -> CommFit | None:
    """Fit the ring model jointly to every benchmark file given (``analysis.load.BenchFile``)."""
    ns, bs, ts = [], [], []
    for bench in benches:
        for nbytes, t in zip(bench.bytes, bench.time_s_median):
            ns.append(bench.world_size)
            bs.append(nbytes)
            ts.append(t)
    return fit_ring_model(ns, bs, ts)


@dataclass(frozen=True)
class ComputeModel:
    """Non-communication time per iteration: t_nc(N) = parallel_s / N + serial_s (strong)
    or constant weak_s (weak), for one particle's model; seconds per iteration."""
    particle: str
    parallel_s: float
    serial_s: float
    weak_s: float
    basis: str                    # which measurement it comes from, for the report

    def scaled(self, particle: str, factor: float, note: str) -> "ComputeModel":
        return ComputeModel(particle, self.parallel_s * factor, self.serial_s * factor, self.weak_s * factor,
                            f"{self.basis}; scaled x{factor:.3g} ({note})")


def fit_strong_compute(world_sizes: Sequence[int], t_nc_s: Sequence[float]) -> tuple[float, float]:
    """Fit t_nc(N) = a/N + b (a, b >= 0) to measured non-comm time per iteration.

    With one distinct N: b = 0 and a = N t_nc(N).
    """
    from scipy.optimize import nnls

    n = np.asarray(world_sizes, dtype=float)
    t = np.asarray(t_nc_s, dtype=float)
    ok = np.isfinite(t) & (t > 0) & (n >= 1)
    n, t = n[ok], t[ok]
    if not t.size:
        return math.nan, math.nan
    if len(np.unique(n)) < 2:
        return float(np.median(n * t)), 0.0
    coef, _ = nnls(np.column_stack([1 / n, np.ones_like(n)]) / t[:, None], np.ones_like(t))
    return float(coef[0]), float(coef[1])


@dataclass(frozen=True)
class ProjectionPoint:
    network: str
    particle: str
    mode: str
    world_size_ranks: int
    compute_per_iteration_s: float
    comm_per_iteration_s: float
    iteration_time_s: float
    efficiency_ratio: float


def comm_per_iteration_s(n: int, critic_bytes: int, generator_bytes: int, n_disc: int, net: Network) -> float:
    """n_disc critic all-reduces + 1 generator all-reduce per iteration, s."""
    return float(n_disc * ring_allreduce_s(critic_bytes, n, net.bandwidth_bytes_per_s, net.latency_s)
                 + ring_allreduce_s(generator_bytes, n, net.bandwidth_bytes_per_s, net.latency_s))


def project(compute: ComputeModel, critic_bytes: int, generator_bytes: int, n_disc: int, net: Network,
            world_sizes: Sequence[int]) -> list[ProjectionPoint]:
    """Strong and weak efficiency projected to each N (see the module docstring)."""
    out = []
    strong_t1 = compute.parallel_s + compute.serial_s
    weak_t1 = compute.weak_s
    for n in world_sizes:
        comm = comm_per_iteration_s(n, critic_bytes, generator_bytes, n_disc, net)
        if math.isfinite(strong_t1):
            nc = compute.parallel_s / n + compute.serial_s
            out.append(ProjectionPoint(net.name, compute.particle, "strong", n, nc, comm, nc + comm,
                                       strong_t1 / (n * (nc + comm))))
        if math.isfinite(weak_t1):
            out.append(ProjectionPoint(net.name, compute.particle, "weak", n, weak_t1, comm, weak_t1 + comm,
                                       weak_t1 / (weak_t1 + comm)))
    return out
