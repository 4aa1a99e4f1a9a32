"""--steps-per-call K: K iterations in one compiled call (an in-graph loop).

What is checked: K = 8 gives the weights of K = 1 after the same 16 iterations (in-process with
the single-replica step, and through scaling.run with its one-rank Horovod engine and with
tf.distribute on two logical devices); the epoch loop counts the same iterations and showers per
epoch, reads results back and agrees on the stop flag once per call, or once per --check-every
iterations; a K or a check interval that is 0/negative or does not fit the epoch is refused in
one line (exit 2); both are measurement settings, outside the workload hash; the benchmark
reports K.
"""
from __future__ import annotations

import itertools
import json
import signal

import numpy as np
import pytest

from conftest import FakeEngine, FakeMeter, run_module
from test_reliability_inputs import refused, saved_run

from common.rundir import RunWriter, load_run
from common.vocab import MEASUREMENT_KEYS, NOT_WORKLOAD_KEYS
from scaling import run as scaling_run
from scaling.collectives import LocalCollectives
from scaling.trainer import EpochPlan, StopFlag, run_epochs
from scaling.world import World

ITERATIONS = 16
TINY_STEP = {"critic_widths": [32, 32], "generator": "relu", "generator_widths": [16, 32], "n_disc": 2,
             "batch": 8}


def _trained_weights(steps_per_call: int) -> list[np.ndarray]:
    """Every variable after ITERATIONS iterations from seed 10, K iterations per call."""
    import tensorflow as tf

    from bologan.config import ModelConfig, TrainConfig
    from bologan.geometry import particle
    from bologan.model import Gan
    from bologan.step import WganGpStep

    tf.random.set_seed(10)
    t = TINY_STEP
    model = ModelConfig(critic_widths=t["critic_widths"], generator=t["generator"],
                        generator_widths=t["generator_widths"])
    train = TrainConfig(batch_size=t["batch"], n_disc=t["n_disc"], seed=10)
    gan = Gan(model, train)
    rng = np.random.default_rng(0)
    # Keras draws initial weights from a process-wide stream: both runs start from these instead.
    for v in gan.generator.trainable_variables + gan.critic.trainable_variables:
        v.assign(rng.normal(0.0, 0.1, v.shape).astype(v.dtype.as_numpy_dtype))
    step = WganGpStep(gan, model, train).compile(steps_per_call=steps_per_call)
    n_vox = particle(model.particle).n_voxels
    real = rng.random((ITERATIONS, t["n_disc"], t["batch"], n_vox), dtype=np.float32) / n_vox
    label = rng.random((ITERATIONS, t["n_disc"], t["batch"], 1), dtype=np.float32)
    losses = []
    for c in range(ITERATIONS // steps_per_call):
        part = slice(c * steps_per_call, (c + 1) * steps_per_call)
        if steps_per_call == 1:
            out = step(real[c], label[c])
        else:
            out = step(real[part], label[part])
        losses.extend(np.asarray(out["d_loss"]).reshape(-1))
    assert int(gan.iteration.numpy()) == ITERATIONS
    return [v.numpy() for v in gan.all_variables()] + [np.asarray(losses)]


def test_eight_iterations_per_call_give_the_weights_of_one_per_call():
    one, eight = _trained_weights(1), _trained_weights(8)
    assert len(one) == len(eight)
    # The loop body runs the same kernels on the same inputs in the same order: bit for bit.
    for a, b in zip(one, eight):
        np.testing.assert_array_equal(a, b)


def test_step_refuses_a_bad_k():
    from bologan.config import ModelConfig, TrainConfig
    from bologan.model import Gan
    from bologan.step import WganGpStep

    model, train = ModelConfig(critic_widths=[8]), TrainConfig(batch_size=2, n_disc=1)
    step = WganGpStep(Gan(model, train), model, train)
    with pytest.raises(ValueError, match="steps_per_call must be >= 1"):
        step.compile(steps_per_call=0)


# ------------------------------------------------------------------ the epoch loop, fake step

WORLD = World(rank=0, size=1, local_rank=0, local_size=1, node="n1", hostname="n1", launcher="python", cores=1)


class _CountingCollectives(LocalCollectives):
    def __init__(self):
        super().__init__()
        self.stop_checks = 0

    def any(self, flag: bool) -> bool:
        self.stop_checks += 1
        return super().any(flag)


class _CountingEngine(FakeEngine):
    """Counts the step results read back to the host."""

    def __init__(self):
        self.reads = 0

    def local_values(self, value):
        self.reads += 1
        return [value]


def _fake_loop(tmp_path, k: int, stop_at_call: int | None = None, check_every: int = 0, reads: list | None = None):
    """run_epochs over 2 epochs of 8 iterations with a fake K-iteration step."""
    stop, coll, calls, engine = StopFlag(), _CountingCollectives(), [], _CountingEngine()

    def step(*args):
        calls.append(args)
        if stop_at_call is not None and len(calls) >= stop_at_call:
            stop.signal = signal.SIGTERM
        first = (len(calls) - 1) * k
        losses = np.arange(first, first + k, dtype=np.float32)   # iteration i's d_loss is i
        if k == 1:
            return {"comm_s": 0.001, "d_loss": losses[0], "g_loss": -losses[0], "step_s": 0.004}
        return {"comm_s": np.full(k, 0.001), "d_loss": losses, "g_loss": -losses, "step_s": np.full(k, 0.004)}

    writer = RunWriter(tmp_path / f"k{k}-c{check_every}", {"run_id": "t"})
    plan = EpochPlan(epochs=2, iterations_per_epoch=8, warmup_epochs=0, attempt=0, showers_per_iteration=10,
                     steps_per_call=k, check_every=check_every)
    run_epochs(world=WORLD, plan=plan, start_epoch=0, step=step, engine=engine,
               iterators=[itertools.repeat((None, None))], meter=FakeMeter(), coll=coll, writer=writer,
               save_checkpoint=lambda epoch: None, stop=stop, log=lambda msg: None)
    if reads is not None:
        reads.append(engine.reads)
    return writer.epochs, len(calls), coll.stop_checks


@pytest.mark.parametrize("k", [2, 4, 8])
def test_epoch_rows_count_the_same_iterations_and_showers_for_any_k(tmp_path, k):
    rows_1, calls_1, checks_1 = _fake_loop(tmp_path, 1)
    rows_k, calls_k, checks_k = _fake_loop(tmp_path, k)
    assert [(r.epoch, r.iterations, r.showers) for r in rows_k] == [(0, 8, 80), (1, 8, 80)]
    assert [(r.iterations, r.showers, r.d_loss, r.g_loss) for r in rows_k] == \
        [(r.iterations, r.showers, r.d_loss, r.g_loss) for r in rows_1]
    assert calls_1 == 16 and calls_k == 16 // k
    # The stop flag is agreed once per call (plus once before the first epoch).
    assert checks_1 == 16 + 1 and checks_k == 16 // k + 1
    assert [r.comm_s for r in rows_k] == pytest.approx([r.comm_s for r in rows_1])
    # Step times are the step's own (in-graph) per-iteration times less their all-reduce time.
    assert [r.step_time_p50_s for r in rows_k] == pytest.approx([0.003, 0.003])


@pytest.mark.parametrize("k, every", [(1, 8), (1, 4), (2, 4), (4, 8)])
def test_results_are_read_back_and_the_stop_agreed_once_per_check(tmp_path, k, every):
    reads: list[int] = []
    rows_1, _, _ = _fake_loop(tmp_path, 1)
    rows, calls, checks = _fake_loop(tmp_path, k, check_every=every, reads=reads)
    assert calls == 16 // k
    assert checks == 16 // every + 1
    # Every result of every call is read (4 keys), but only at the checks: the device is waited for
    # there, so on a GPU the host queues the calls in between without waiting.
    assert reads == [4 * calls]
    assert [(r.iterations, r.showers, r.d_loss, r.g_loss) for r in rows] == \
        [(r.iterations, r.showers, r.d_loss, r.g_loss) for r in rows_1]


def test_a_stop_ends_the_epoch_at_the_next_check(tmp_path):
    rows, calls, _ = _fake_loop(tmp_path, 1, stop_at_call=1, check_every=4)
    assert calls == 4
    assert [(r.epoch, r.iterations, r.interrupted) for r in rows] == [(0, 4, True)]


def test_a_nan_loss_is_found_at_the_check_that_reads_it(tmp_path):
    stop, coll = StopFlag(), _CountingCollectives()
    losses = iter([1.0, float("nan")] + [1.0] * 20)

    def step(*args):
        d = next(losses)
        return {"comm_s": 0.0, "d_loss": d, "g_loss": -d, "step_s": 0.001}

    plan = EpochPlan(epochs=1, iterations_per_epoch=8, warmup_epochs=0, attempt=0, showers_per_iteration=10,
                     check_every=4)
    with pytest.raises(RuntimeError, match="non-finite loss in epoch 0"):
        run_epochs(world=WORLD, plan=plan, start_epoch=0, step=step, engine=FakeEngine(),
                   iterators=[itertools.repeat((None, None))], meter=FakeMeter(), coll=coll, writer=None,
                   save_checkpoint=lambda epoch: None, stop=stop, log=lambda msg: None)
    assert coll.stop_checks == 1    # the start-up check only: the NaN stopped the first check


def test_a_stop_ends_the_epoch_after_the_call_in_flight(tmp_path):
    rows, calls, _ = _fake_loop(tmp_path, 4, stop_at_call=1)
    assert calls == 1
    assert [(r.epoch, r.iterations, r.showers, r.interrupted) for r in rows] == [(0, 4, 40, True)]


# ------------------------------------------------------------------ configuration and refusals

@pytest.mark.parametrize("argv, words", [
    (["--steps-per-call", "0"], "steps_per_call (--steps-per-call) must be >= 1"),
    (["--steps-per-call", "3", "--iterations-per-epoch", "20"],
     "steps_per_call (--steps-per-call) 3 does not divide iterations_per_epoch 20"),
    (["--check-every", "-1"], "check_every (--check-every) must be >= 0"),
    (["--steps-per-call", "2", "--check-every", "3", "--iterations-per-epoch", "12"],
     "check_every (--check-every) 3 must be a multiple of steps_per_call 2"),
    (["--check-every", "5", "--iterations-per-epoch", "20"], None),
    (["--check-every", "8", "--iterations-per-epoch", "20"], "that divides iterations_per_epoch 20"),
])
def test_bad_steps_per_call_is_one_line_exit_2(tmp_path, capsys, argv, words):
    if words is None:   # a valid interval passes the check
        cfg = scaling_run._resolve_config(scaling_run.parse_args(argv))
        assert cfg["scaling"].check_every == int(argv[1])
        return
    msg = refused(capsys, tmp_path, scaling_run.main, ["--out", str(tmp_path / "run"), *argv])
    assert words in msg, msg


def test_steps_per_call_is_a_measurement_setting_outside_the_workload_hash():
    def cfg(k: str):
        return scaling_run._resolve_config(scaling_run.parse_args(["--steps-per-call", k,
                                                                   "--iterations-per-epoch", "16"]))

    from scaling.outdir import measurement_settings

    assert scaling_run.workload_hash(cfg("1")) == scaling_run.workload_hash(cfg("8"))
    assert "scaling.steps_per_call" in MEASUREMENT_KEYS and "scaling.steps_per_call" not in NOT_WORKLOAD_KEYS
    assert "scaling.check_every" in MEASUREMENT_KEYS and "scaling.check_every" not in NOT_WORKLOAD_KEYS
    assert measurement_settings(cfg("1"))["scaling.steps_per_call"] == 1
    assert measurement_settings(cfg("8"))["scaling.steps_per_call"] == 8


def test_resume_refuses_another_k(tmp_path, capsys):
    saved_run(tmp_path / "run")
    msg = refused(capsys, tmp_path, scaling_run.main,
                  ["--out", str(tmp_path / "run"), "--resume", "--steps-per-call", "2"])
    assert "--resume with scaling.steps_per_call 2, but the run was started with 1" in msg, msg


def test_config_check_names_the_flag():
    from scaling.config import ScalingConfig

    with pytest.raises(ValueError, match=r"--steps-per-call"):
        ScalingConfig(iterations_per_epoch=10, steps_per_call=4).check()
    ScalingConfig(iterations_per_epoch=12, steps_per_call=4).check()


# ------------------------------------------------------------------ scaling.run, one Horovod rank

TINY_RUN = ["--synthetic-events", "600", "--threads", "1", "--critic-widths", "32,32", "--generator", "relu",
            "--generator-widths", "16,32", "--n-disc", "2", "--batch-per-rank", "8", "--epochs", "2",
            "--iterations-per-epoch", "8", "--warmup-epochs", "0", "--engine", "horovod"]


def _run_weights(run_dir):
    import tensorflow as tf

    reader = tf.train.load_checkpoint(str(run_dir / "checkpoints"))
    return {k: reader.get_tensor(k) for k in reader.get_variable_to_shape_map() if "save_counter" not in k}


def test_scaling_run_with_eight_iterations_per_call_matches_one(tmp_path):
    runs = {}
    for k in (1, 8):
        out = tmp_path / f"k{k}"
        res = run_module("scaling.run", [*TINY_RUN, "--steps-per-call", str(k), "--out", str(out)], timeout=500)
        assert res.returncode == 0, res.stderr[-3000:]
        runs[k] = out
    a, b = _run_weights(runs[1]), _run_weights(runs[8])
    assert sorted(a) == sorted(b) and any("iteration" in key for key in a)
    for key in a:
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)
    ea, eb = load_run(runs[1]).epochs, load_run(runs[8]).epochs
    assert list(eb.iterations) == list(ea.iterations) == [8, 8]
    assert list(eb.showers) == list(ea.showers) == [8 * 2 * 8] * 2
    np.testing.assert_allclose(eb.d_loss, ea.d_loss, rtol=0, atol=0)
    meta = json.loads((runs[8] / "run.json").read_text())
    assert meta["config"]["scaling"]["steps_per_call"] == 8


def test_tf_distribute_with_four_iterations_per_call_matches_one(tmp_path):
    # K iterations unrolled in each replica's function (the all-reduce may not run in a graph
    # loop): the same kernels in the same order as K = 1, so the same weights bit for bit.
    runs = {}
    mirrored = [arg if arg != "horovod" else "mirrored" for arg in TINY_RUN] + ["--cpu-replicas", "2"]
    for k in (1, 4):
        out = tmp_path / f"k{k}"
        res = run_module("scaling.run", [*mirrored, "--steps-per-call", str(k), "--check-every", "8",
                                         "--out", str(out)], timeout=500)
        assert res.returncode == 0, res.stderr[-3000:]
        runs[k] = out
    a, b = _run_weights(runs[1]), _run_weights(runs[4])
    assert sorted(a) == sorted(b) and any("iteration" in key for key in a)
    for key in a:
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)
    ea, eb = load_run(runs[1]).epochs, load_run(runs[4]).epochs
    assert list(eb.iterations) == list(ea.iterations) == [8, 8]
    np.testing.assert_array_equal(eb.d_loss, ea.d_loss)
    assert (eb.comm_s > 0).all() and (eb.step_time_p50_s > 0).all()


@pytest.mark.mpi
def test_two_horovod_ranks_with_four_iterations_per_call_match_one_per_call(tmp_path):
    # DistributedGradientTape's all-reduce inside the in-graph loop: same names on both ranks,
    # one iteration's reduction at a time, so the same sums in the same order as K = 1.
    runs = {}
    for k in (1, 4):
        out = tmp_path / f"k{k}"
        res = run_module("scaling.run", [*TINY_RUN, "--steps-per-call", str(k), "--out", str(out)], ranks=2,
                         timeout=600)
        assert res.returncode == 0, res.stderr[-3000:]
        runs[k] = out
    a, b = _run_weights(runs[1]), _run_weights(runs[4])
    for key in a:
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)
    eb = load_run(runs[4]).epochs
    assert len(eb) == 4 and (eb.iterations == 8).all() and (eb.comm_s > 0).all()


# ------------------------------------------------------------------ the benchmark

def test_bench_json_reports_k_and_what_makes_runs_comparable():
    res = run_module("bologan.bench", ["--steps-per-call", "4", "--batch-size", "4", "--iterations", "8",
                                       "--warmup", "4", "--json"], timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    r = json.loads(res.stdout.strip().splitlines()[-1])
    assert r["steps_per_call"] == 4 and r["iterations"] == 8 and r["batch"] == 4 and r["threads"] == 1
    for key in ("xla", "precision", "tensorflow", "device", "cpu_model", "seconds_per_iteration", "achieved_gflops"):
        assert key in r, key
    assert r["flops_per_iteration"] > 0 and r["seconds_per_iteration"] > 0


@pytest.mark.parametrize("argv", [["--steps-per-call", "3", "--iterations", "8"], ["--steps-per-call", "0"],
                                  ["--steps-per-call", "2", "--reference"]])
def test_bench_refuses_a_bad_k_in_one_line(capsys, argv):
    from bologan import bench

    assert bench.main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--steps-per-call" in err[0], err
