"""The all-reduce model, network files, stragglers, projection, simulator and out-of-sample check."""
from __future__ import annotations

import math
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from analysis.projection.comm_model import (ALGORITHM_RING, ALGORITHM_TREE, ALGORITHMS, CommModel, Link, Network,
                                 fit_allreduce_model, latency_term_s, load_network, ring_allreduce_s,
                                 shipped_networks)
from analysis.projection.projection import (ComputeModel, MeasuredScalingPoint, build_projection, fit_strong_compute,
                                 measured_efficiency, project, validate_out_of_sample)
from analysis.projection.simulate import simulate
from analysis.projection.stragglers import STEP_TIME_QUANTILE_COLUMNS, StepTimeDistribution, expected_max_step_time_s
from common.errors import UserError

sys.path.insert(0, str(Path(__file__).parent))
from test_analysis_support import strong_study, write_bench  # noqa: E402

KIB, MIB = 1024, 1024 * 1024
SIZES = [2**k for k in range(10, 27)]           # 1 KiB .. 64 MiB, the benchmark's default range
WORLD = [1, 2, 3, 4, 8, 16, 64, 256, 1024]
PHOTON_CRITIC_B, PHOTON_GEN_B, N_DISC = 1_630_000, 410_000, 5


def shipped() -> dict[str, Network]:
    return {p.stem: load_network(p) for p in shipped_networks()}


def flat(name: str = "flat", bw: float = 10e9, lat: float = 2e-6) -> Network:
    return Network(name, bw, lat, "test", source="test")


# ------------------------------------------------------------------------------- network files
def test_shipped_networks_cover_the_usual_fabrics_with_sources():
    nets = shipped()
    assert {"infiniband_100g", "infiniband_hdr", "infiniband_ndr", "slingshot11", "ethernet_25g",
            "ethernet_100g_roce", "dgx_h100_nvlink4_ndr"} <= set(nets)
    for stem, net in nets.items():
        for link in (net.inter_node, net.link_in_node):
            assert math.isfinite(link.bandwidth_bytes_per_s) and link.bandwidth_bytes_per_s > 0, stem
            assert math.isfinite(link.latency_s) and link.latency_s > 0, stem
            assert "http" in link.source or "IEEE" in link.source, stem
    assert nets["infiniband_ndr"].bandwidth_bytes_per_s > nets["infiniband_hdr"].bandwidth_bytes_per_s \
        > nets["infiniband_100g"].bandwidth_bytes_per_s > nets["ethernet_25g"].bandwidth_bytes_per_s
    assert nets["ethernet_25g"].latency_s > 10 * nets["infiniband_hdr"].latency_s      # TCP vs RDMA
    nvl = nets["dgx_h100_nvlink4_ndr"]
    assert nvl.ranks_per_node == 8 and nvl.intra_node is not None
    assert nvl.intra_node.bandwidth_bytes_per_s > nvl.bandwidth_bytes_per_s


GOOD_LINK = 'bandwidth_bytes_per_s = 1e9\nlatency_s = 1e-6\nsource = "a benchmark"\n'


@pytest.mark.parametrize("text, message", [
    ('[network]\nname = "x"\n[inter_node]\n' + GOOD_LINK + 'speed = 3\n', "unknown key 'speed'"),
    ('[network]\nname = "x"\n[inter_node]\n' + GOOD_LINK + '[switch]\nports = 64\n', r"unknown table \[switch\]"),
    ('[network]\nname = "x"\n', r"missing table \[inter_node\]"),
    ('[network]\nname = "x"\n[inter_node]\nbandwidth_bytes_per_s = 0\nlatency_s = 1e-6\nsource = "s"\n',
     "bandwidth_bytes_per_s must be a positive finite number"),
    ('[network]\nname = "x"\n[inter_node]\nbandwidth_bytes_per_s = 1e9\nlatency_s = inf\nsource = "s"\n',
     r"latency_s.*finite"),
    ('[network]\nname = "x"\n[inter_node]\nbandwidth_bytes_per_s = 1e9\nlatency_s = 1e-6\n', "source must say"),
    ('[network]\nname = "x"\n[inter_node]\n' + GOOD_LINK + '[intra_node]\n' + GOOD_LINK,
     "ranks_per_node = 1"),
    ('[network]\nname = "x"\nranks_per_node = 0\n[inter_node]\n' + GOOD_LINK, "ranks_per_node must be >= 1"),
])
def test_bad_network_files_are_user_errors_naming_the_file_and_key(tmp_path, text, message):
    bad = tmp_path / "bad.toml"
    bad.write_text(text)
    with pytest.raises(UserError, match=message) as info:
        load_network(bad)
    assert "bad.toml" in str(info.value)


# ---------------------------------------------------------------------------------- the model
def test_allreduce_terms_by_hand():
    net = flat(bw=10e9, lat=2e-6)
    tree, ring = CommModel(net, 1e-3, ALGORITHM_TREE), CommModel(net, 1e-3, ALGORITHM_RING)
    assert tree.allreduce_s(MIB, 1) == 0.0                    # one rank: no collective at all
    t = tree.allreduce(MIB, 8)
    assert (t.fixed_s, t.latency_s) == (1e-3, pytest.approx(2 * 3 * 2e-6))
    assert t.bandwidth_s == pytest.approx(2 * 7 / 8 * MIB / 10e9)
    assert ring.allreduce(MIB, 8).latency_s == pytest.approx(2 * 7 * 2e-6)
    assert ring_allreduce_s(MIB, 8, 10e9, 2e-6) == pytest.approx(ring.allreduce_s(MIB, 8) - 1e-3)
    # Two links: 4 ranks per node, fast inside; N = 4 stays on the node, N = 16 crosses 4 nodes.
    two = Network("two", 10e9, 2e-6, "test", ranks_per_node=4, intra_node=Link(100e9, 0.5e-6, "s"))
    m = CommModel(two, 0.0, ALGORITHM_TREE)
    assert m.allreduce(MIB, 4).bandwidth_s == pytest.approx(2 * 3 / 4 * MIB / 100e9)
    assert m.allreduce(MIB, 4).latency_s == pytest.approx(2 * 2 * 0.5e-6)
    assert m.allreduce(MIB, 16).bandwidth_s == pytest.approx(2 * 15 / 16 * MIB / 10e9)   # the NIC bounds the ring
    assert m.allreduce(MIB, 16).latency_s == pytest.approx(2 * (2 * 0.5e-6 + 2 * 2e-6))
    assert latency_term_s(16, two, ALGORITHM_RING) == pytest.approx(2 * 15 * 2e-6)


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_more_ranks_never_lower_the_allreduce_time_and_c_never_scales(algorithm):
    for stem, net in shipped().items():
        model = CommModel(net, 1.06e-3, algorithm)
        for b in (4 * KIB, PHOTON_CRITIC_B, 64 * MIB):
            times = [model.allreduce_s(b, n) for n in range(1, 1100, 7)]
            assert all(later >= earlier for earlier, later in zip(times, times[1:])), (stem, b)
            assert {model.allreduce(b, n).fixed_s for n in (2, 8, 64, 1024)} == {1.06e-3}, stem


# ------------------------------------------------------------------------------------ the fit
@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_fit_recovers_c_alpha_and_bandwidth_from_two_or_more_world_sizes(algorithm):
    truth = CommModel(flat(bw=5e9, lat=4e-6), 30e-6, algorithm)
    ns, bs, ts = [], [], []
    for n in (2, 4, 8):
        for b in SIZES:
            ns.append(n), bs.append(b), ts.append(truth.allreduce_s(b, n))
    fit = fit_allreduce_model(ns, bs, ts, algorithm)
    assert fit.latency_fitted and fit.world_sizes == (2, 4, 8)
    assert fit.fixed_cost_s == pytest.approx(30e-6, rel=1e-3)
    assert fit.latency_s == pytest.approx(4e-6, rel=1e-3)
    assert fit.bandwidth_bytes_per_s == pytest.approx(5e9, rel=1e-3)
    assert fit.rms_relative_residual < 1e-6
    assert fit_allreduce_model([1, 1], [8, 16], [1e-6, 2e-6]) is None      # one rank: nothing to fit


def test_horovod_cycle_is_a_fixed_cost_not_a_per_hop_latency():
    # The measurement that broke the old model: Horovod's 1.06 ms for every size up to 1 MiB at N = 2.
    sizes = [s for s in SIZES if s <= MIB]
    fit = fit_allreduce_model([2] * len(sizes), sizes, [1.06e-3] * len(sizes))
    assert fit.fixed_cost_s == pytest.approx(1.06e-3, rel=0.01)
    assert fit.latency_s < 1e-6 and not fit.latency_fitted
    # The same cycle at two world sizes: still a fixed cost, alpha ~ 0.
    fit2 = fit_allreduce_model([2] * len(sizes) + [4] * len(sizes), sizes * 2, [1.06e-3] * (2 * len(sizes)))
    assert fit2.fixed_cost_s == pytest.approx(1.06e-3, rel=0.01) and fit2.latency_s < 1e-7
    # Projected on HDR to 1024 ranks the cost per iteration stays ~ (n_disc + 1) c, not 6.4 s.
    hdr = CommModel(shipped()["infiniband_hdr"], fit.fixed_cost_s)
    per_it = hdr.per_iteration(PHOTON_CRITIC_B, PHOTON_GEN_B, N_DISC, 1024)
    assert per_it.fixed_s == pytest.approx(6 * 1.06e-3, rel=0.01)
    assert per_it.total_s < 10e-3
    # Horovod's real shape (flat, then rising past 1 MiB) gives the same c and a finite bandwidth.
    ts = [max(1.06e-3, 1.06e-3 + (s - MIB) / 2e9) if s > MIB else 1.06e-3 for s in SIZES]
    fit3 = fit_allreduce_model([2] * len(SIZES), SIZES, ts)
    assert fit3.fixed_cost_s == pytest.approx(1.06e-3, rel=0.05) and fit3.bandwidth_resolved


# ---------------------------------------------------------------------------------- stragglers
def test_expected_max_of_samples_is_exact_resampling():
    samples = [1.0, 2.0, 3.0, 4.0]
    for n in (1, 2, 3):
        grid = np.array(np.meshgrid(*[samples] * n)).reshape(n, -1)       # every draw with replacement
        assert expected_max_step_time_s(samples, n) == pytest.approx(grid.max(axis=0).mean(), rel=1e-12)
    assert expected_max_step_time_s([0.5] * 7, 1024) == pytest.approx(0.5)


def _quantile_rows(p: dict[float, float], **extra) -> pd.DataFrame:
    return pd.DataFrame([{col: p[lvl] for lvl, col in STEP_TIME_QUANTILE_COLUMNS} | extra])


def test_quantile_rows_interpolate_the_cdf():
    # Uniform(1, 2): the quantile knots and the extended lower tail rebuild it exactly.
    uniform = _quantile_rows({0.1: 1.1, 0.5: 1.5, 0.9: 1.9, 0.99: 1.99, 1.0: 2.0})
    for n in (1, 2, 8, 1024):
        assert expected_max_step_time_s(uniform, n) == pytest.approx(1 + n / (n + 1), rel=1e-9)
    # Two rows pooled by iteration count: the mixture's mean is the weighted mean.
    slow = _quantile_rows({0.1: 2.1, 0.5: 2.5, 0.9: 2.9, 0.99: 2.99, 1.0: 3.0}, iterations=300)
    mix = StepTimeDistribution.from_quantile_rows(pd.concat([uniform.assign(iterations=100), slow]))
    assert mix.mean_s() == pytest.approx(0.25 * 1.5 + 0.75 * 2.5, rel=1e-9)
    assert mix.expected_max_s(64) > 2.9
    with pytest.raises(ValueError, match="decrease"):
        StepTimeDistribution.from_quantile_rows(_quantile_rows({0.1: 1.1, 0.5: 1.0, 0.9: 1.9, 0.99: 2, 1.0: 2}))
    with pytest.raises(ValueError, match="missing"):
        StepTimeDistribution.from_quantile_rows(pd.DataFrame({"step_time_p50_s": [1.0]}))


# --------------------------------------------------------------------------------- projection
def compute_model(t_nc: float = 0.02, global_batch: int | None = 256, per_rank: int | None = 128,
                  step_time: StepTimeDistribution | None = None) -> ComputeModel:
    return ComputeModel("photons", t_nc, 0.0, t_nc, "test", global_batch, per_rank, step_time)


def test_projection_at_the_anchor_reproduces_the_measurement():
    comm = CommModel(flat(), 1.06e-3)
    pts = {(p.mode, p.world_size_ranks): p for p in
           project(compute_model(), PHOTON_CRITIC_B, PHOTON_GEN_B, N_DISC, comm, [1, 2])}
    assert pts[("weak", 1)].iteration_time_s == pytest.approx(0.02) and pts[("weak", 1)].efficiency_ratio == 1.0
    assert pts[("strong", 1)].iteration_time_s == pytest.approx(0.02)
    # Anchored on a 2-rank measurement that the comm model describes: t_it(2) is reproduced.
    comm2 = comm.per_iteration(PHOTON_CRITIC_B, PHOTON_GEN_B, N_DISC, 2).total_s
    measured = MeasuredScalingPoint(2, 0.03 + comm2, comm2)
    model = ComputeModel("photons", math.nan, 0.0, measured.non_comm_s, "test", None, 128)
    anchor = [p for p in project(model, PHOTON_CRITIC_B, PHOTON_GEN_B, N_DISC, comm, [2]) if p.mode == "weak"]
    assert anchor[0].iteration_time_s == pytest.approx(measured.iteration_time_s, rel=1e-12)


def test_faster_network_never_lowers_projected_efficiency():
    rng = np.random.default_rng(7)
    dist = StepTimeDistribution.from_samples(rng.gamma(20, 0.001, 400))
    for _ in range(40):
        bw, lat, c = 10 ** rng.uniform(8.5, 11.5), 10 ** rng.uniform(-6.5, -4), 10 ** rng.uniform(-6, -2.5)
        faster = rng.uniform(1.0, 10.0, size=2)
        slow_net = CommModel(flat(bw=bw, lat=lat), c)
        fast_net = CommModel(flat(bw=bw * faster[0], lat=lat / faster[1]), c)
        model = compute_model(rng.uniform(1e-3, 0.1), 1 << 20, step_time=dist)
        slow = project(model, PHOTON_CRITIC_B, PHOTON_GEN_B, N_DISC, slow_net, WORLD)
        fast = project(model, PHOTON_CRITIC_B, PHOTON_GEN_B, N_DISC, fast_net, WORLD)
        for s, f in zip(slow, fast):
            assert (s.mode, s.world_size_ranks) == (f.mode, f.world_size_ranks)
            assert f.efficiency_ratio >= s.efficiency_ratio - 1e-15


def test_projection_breakdown_and_fixed_cost_per_iteration():
    comm = CommModel(shipped()["infiniband_hdr"], 1e-3)
    for p in project(compute_model(), PHOTON_CRITIC_B, PHOTON_GEN_B, N_DISC, comm, [2, 64, 1024]):
        assert p.fixed_cost_per_iteration_s == pytest.approx((N_DISC + 1) * 1e-3)     # never x N
        assert (p.fixed_cost_per_iteration_s + p.latency_per_iteration_s + p.bandwidth_per_iteration_s
                == pytest.approx(p.comm_per_iteration_s))
        assert p.iteration_time_s == pytest.approx(p.compute_per_iteration_s + p.comm_per_iteration_s)


def test_strong_scaling_stops_below_the_minimum_per_rank_batch():
    comm = CommModel(flat(), 0.0)
    pts = project(compute_model(global_batch=256), PHOTON_CRITIC_B, PHOTON_GEN_B, N_DISC, comm,
                  [2**k for k in range(11)])
    strong = [p.world_size_ranks for p in pts if p.mode == "strong"]
    assert max(strong) == 256 and min(p.per_rank_batch_showers for p in pts if p.mode == "strong") == 1
    assert max(p.world_size_ranks for p in pts if p.mode == "weak") == 1024       # weak keeps its batch
    pts4 = project(compute_model(global_batch=256), PHOTON_CRITIC_B, PHOTON_GEN_B, N_DISC, comm,
                   [2**k for k in range(11)], min_per_rank_batch_showers=4)
    assert max(p.world_size_ranks for p in pts4 if p.mode == "strong") == 64


def test_stragglers_replace_the_mean_compute_time():
    dist = StepTimeDistribution.from_quantile_rows(_quantile_rows({0.1: 0.018, 0.5: 0.02, 0.9: 0.022,
                                                                    0.99: 0.026, 1.0: 0.03}))
    comm = CommModel(flat(), 0.0)
    with_s = {p.world_size_ranks: p for p in project(compute_model(dist.mean_s(), step_time=dist), 1, 1, N_DISC,
                                                     comm, [1, 8, 1024]) if p.mode == "weak"}
    without = {p.world_size_ranks: p for p in project(compute_model(dist.mean_s()), 1, 1, N_DISC, comm,
                                                      [1, 8, 1024]) if p.mode == "weak"}
    assert with_s[1].straggler_per_iteration_s == pytest.approx(0.0, abs=1e-15)
    assert with_s[1024].compute_per_iteration_s == pytest.approx(dist.expected_max_s(1024))
    assert with_s[8].efficiency_ratio < without[8].efficiency_ratio
    assert with_s[1024].straggler_per_iteration_s > with_s[8].straggler_per_iteration_s > 0


# ------------------------------------------------------------------------- out-of-sample check
def test_n2_is_predicted_from_n1_training_and_the_n2_benchmark():
    sizes = [s for s in SIZES if s <= 4 * MIB]
    fit = fit_allreduce_model([2] * len(sizes), sizes, [1.06e-3 + 2 * 0.5 * s / 3e9 for s in sizes])
    comm = fit.model()
    t_nc = 0.02
    comm2 = comm.per_iteration(PHOTON_CRITIC_B, PHOTON_GEN_B, N_DISC, 2).total_s
    # The N = 2 training ran 5 % slower than the model says (noise, stragglers): that is the error.
    measured2 = MeasuredScalingPoint(2, 1.05 * (t_nc + comm2), comm2)
    rows = validate_out_of_sample("photons", "weak", [MeasuredScalingPoint(1, t_nc, 0.0), measured2], comm,
                                  PHOTON_CRITIC_B, PHOTON_GEN_B, N_DISC)
    assert len(rows) == 1 and rows[0].held_out_world_size_ranks == 2 and rows[0].fitted_on_world_sizes == "1"
    assert rows[0].measured_efficiency_ratio == pytest.approx(t_nc / (1.05 * (t_nc + comm2)))
    assert rows[0].relative_error_ratio == pytest.approx(1.05 - 1, rel=1e-9)


def test_leave_one_out_over_more_world_sizes_is_exact_on_model_data():
    comm = CommModel(flat(bw=5e9, lat=3e-6), 50e-6)
    a, b = 0.08, 0.004                                  # t_nc(N) = a/N + b
    pts = []
    for n in (1, 2, 4, 8):
        c = comm.per_iteration(PHOTON_CRITIC_B, PHOTON_GEN_B, N_DISC, n).total_s
        pts.append(MeasuredScalingPoint(n, a / n + b + c, c))
    rows = validate_out_of_sample("photons", "strong", pts, comm, PHOTON_CRITIC_B, PHOTON_GEN_B, N_DISC)
    assert [r.held_out_world_size_ranks for r in rows] == [2, 4, 8]
    assert [r.fitted_on_world_sizes for r in rows] == ["1,4,8", "1,2,8", "1,2,4"]
    for r in rows:
        assert r.relative_error_ratio == pytest.approx(0.0, abs=1e-6)
        assert r.measured_efficiency_ratio == pytest.approx(
            measured_efficiency("strong", pts[0], pts[[1, 2, 4, 8].index(r.held_out_world_size_ranks)]))
    assert fit_strong_compute([1, 2, 4], [a + b, a / 2 + b, a / 4 + b]) == (pytest.approx(a), pytest.approx(b))


def test_build_projection_uses_the_benchmark_c_and_stops_strong_scaling(tmp_path):
    strong_study(tmp_path, {1: 100.0, 2: 55.0})
    write_bench(tmp_path, 2, 0.0, 5e9, fixed_cost_s=1.06e-3)
    from analysis.pipeline import analyse

    hdr = [p for p in shipped_networks() if p.stem == "infiniband_hdr"]
    p = build_projection(analyse([tmp_path]).results, analyse([tmp_path]).benches, hdr)
    assert p.available and [n.name for n in p.networks] == ["measured (horovod all-reduce)", "InfiniBand HDR 200 Gb/s"]
    assert p.comm_fits["horovod"].fixed_cost_s == pytest.approx(1.06e-3, rel=1e-3)
    assert p.models[1].fixed_cost_s == pytest.approx(1.06e-3, rel=1e-3)
    strong = p.points[p.points["mode"] == "strong"]
    assert strong["world_size_ranks"].max() == 256          # global batch 256: no point past one shower per rank
    assert p.points[p.points["mode"] == "weak"]["world_size_ranks"].max() == 1024
    assert len(p.validation) and set(p.validation["held_out_world_size_ranks"]) == {2}
    assert any("one world size only" in n for n in p.notes)


# --------------------------------------------------------------------------------- simulator
def test_simulator_is_exact_for_constant_compute():
    comm = CommModel(shipped()["dgx_h100_nvlink4_ndr"], 1e-3)
    for n in (1, 2, 8, 64):
        sim = simulate(n, 0.02, comm, PHOTON_CRITIC_B, PHOTON_GEN_B, N_DISC, iterations=5)
        closed = [p for p in project(compute_model(0.02), PHOTON_CRITIC_B, PHOTON_GEN_B, N_DISC, comm, [n])
                  if p.mode == "weak"][0]
        assert sim.mean_iteration_time_s == pytest.approx(closed.iteration_time_s, rel=1e-12)
        assert sim.stderr_iteration_time_s == pytest.approx(0.0, abs=1e-15)


@pytest.mark.parametrize("independent_steps", [False, True])
def test_simulator_reproduces_the_expected_maximum_within_its_standard_error(independent_steps):
    # Tolerance: 4 Monte Carlo standard errors (a false alarm about once in 16 000 runs; seeded).
    dist = StepTimeDistribution.from_quantile_rows(_quantile_rows({0.1: 0.018, 0.5: 0.02, 0.9: 0.023,
                                                                    0.99: 0.03, 1.0: 0.04}))
    comm = CommModel(shipped()["slingshot11"], 1e-3)
    for n in (2, 64):
        sim = simulate(n, dist, comm, PHOTON_CRITIC_B, PHOTON_GEN_B, N_DISC, iterations=20_000, seed=n,
                       independent_steps=independent_steps)
        closed = [p for p in project(compute_model(dist.mean_s(), step_time=dist), PHOTON_CRITIC_B, PHOTON_GEN_B,
                                     N_DISC, comm, [n]) if p.mode == "weak"][0]
        assert abs(sim.mean_iteration_time_s - closed.iteration_time_s) < 4 * sim.stderr_iteration_time_s
        assert sim.comm_s == pytest.approx(closed.comm_per_iteration_s)


def test_two_world_sizes_do_not_fit_a_serial_part():
    """Two points and two parameters fit any noise exactly: a measured N=2 compute that did not
    halve (a loaded machine) must not turn into compute that never shrinks with N."""
    a, b = fit_strong_compute([1, 2], [0.080, 0.080])
    assert b == 0.0
    assert a == pytest.approx(float(np.median([0.080, 0.160])))
