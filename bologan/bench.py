"""Training-throughput benchmark of one BoloGAN iteration (prints numbers; asserts nothing).

Examples::

    python -m bologan.bench --particle photons --batch-size 128 --threads 1 --json
    python -m bologan.bench --particle photons --batch-size 128 --threads 1 --json --reference
    python -m bologan.bench --batch-size 8 --steps-per-call 8 --json   # 8 iterations per call
    python -m bologan.bench --inference --particle pions --json     # generation benchmark instead
    python -m bologan.bench --inference --help                      # its options (bologan.inference)
    python -m bologan.bench learning-curve --iterations 1000        # quality at fixed iterations
                                                                    # (bologan.learning_curve)

``--reference`` runs what the original BoloGAN code does with the same numerics: each critic
step and the generator step are separate calls, and the generator step recomputes the whole
critic loss with its gradient penalty although only D(fake) is needed. The default is ours:
the iteration is one compiled function and the generator step evaluates D(fake) only.
FLOPs are counted from the compiled graph by TensorFlow's profiler (float operations of the
matrix products and element-wise ops), per iteration.

``--steps-per-call K`` runs K iterations inside each compiled call (scaling.run's
``--steps-per-call``): the time per iteration is the time per call / K. The JSON line records
what a run on other hardware needs to be compared with this one: K, batch, threads, XLA,
precision, TensorFlow's version, the device and the CPU model.

``--precision`` is training's: float32, bf16 (no loss scaling) or fp16, timed with the dynamic
loss scaling that training uses with it (scaled loss, unscaled gradients, overflow check).
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time

from bologan.config import GENERATOR_NORM_FIXED, GENERATOR_NORMS, LOSS_SCALED_PRECISIONS, PRECISIONS, ModelConfig, TrainConfig
from common.cli import Parser, add_json_flag
from common.errors import main_guard
from common.vocab import PARTICLE_NAMES, PARTICLE_PHOTONS

INFERENCE_FLAG = "--inference"
LEARNING_CURVE = "learning-curve"


def build_parser() -> Parser:
    """The training-throughput mode's flags (``--inference`` has its own: ``bologan.inference.inference_cli``)."""
    p = Parser(prog="python -m bologan.bench", doc=__doc__)
    p.add_argument(INFERENCE_FLAG, action="store_true",
                   help="benchmark generation instead (latency, throughput, energy per 1000 showers); "
                        "see python -m bologan.bench --inference --help")
    p.add_argument("--particle", choices=PARTICLE_NAMES, default=PARTICLE_PHOTONS)
    p.add_argument("--batch-size", type=int, default=128, help="showers per critic step")
    p.add_argument("--threads", type=int, default=1, help="TensorFlow intra-op threads")
    p.add_argument("--generator", choices=("bn_swish", "bn_relu", "relu"), default="bn_swish")
    p.add_argument("--generator-norm", choices=GENERATOR_NORMS, default=GENERATOR_NORM_FIXED,
                   help="generator BatchNorm while training ([model] generator_norm)")
    p.add_argument("--iterations", type=int, default=40, help="timed iterations")
    p.add_argument("--warmup", type=int, default=5, help="untimed iterations first")
    p.add_argument("--xla", action=argparse.BooleanOptionalAction, default=False,
                   help="compile with XLA (jit_compile)")
    p.add_argument("--precision", choices=PRECISIONS, default="float32",
                   help="float32; bf16 (no loss scaling); fp16 (with dynamic loss scaling, as training runs it)")
    p.add_argument("--reference", action="store_true", help="time the original-code variant instead")
    p.add_argument("--compare", action="store_true",
                   help="time both variants in one process, alternating blocks; report the ratio")
    p.add_argument("--rounds", type=int, default=5, help="alternating blocks per variant with --compare")
    p.add_argument("--steps-per-call", type=int, default=1,
                   help="iterations per compiled call (an in-graph loop); must divide --iterations "
                        "(per block with --compare); not with --reference")
    add_json_flag(p, "one JSON line instead of text")
    return p


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = build_parser()
    args = p.parse_args(argv)
    if args.inference:   # an abbreviation (--inf): main() picks the mode by the full flag only
        p.error(f"write {INFERENCE_FLAG} in full to run the inference benchmark")
    if args.batch_size < 1 or args.iterations < 1 or args.threads < 0 or args.warmup < 0:
        p.error("--batch-size and --iterations must be >= 1, --threads and --warmup >= 0")
    k = args.steps_per_call
    if k < 1:
        p.error("--steps-per-call must be >= 1")
    if k > 1 and args.reference:
        p.error("--steps-per-call: the reference variant runs one iteration per call")
    per_block = max(1, args.iterations // args.rounds)
    if args.iterations % k or (args.compare and per_block % k):
        p.error(f"--steps-per-call {k} must divide --iterations {args.iterations}"
                + (f" per block ({per_block} with --rounds {args.rounds})" if args.compare else ""))
    return args


def _reference_iteration(step, n_disc: int, unrolled: bool = False):
    """The original code's shape, same numerics: one compiled function looping over the critic
    steps with ``tf.range``, separate critic calls for fake and real showers, and a generator
    step that recomputes the whole critic loss with its gradient penalty to get D(fake).
    ``unrolled`` builds the same ops with a Python loop, only to count its FLOPs (the profiler
    counts a ``tf.range`` loop body once)."""
    import tensorflow as tf

    from bologan.step import gradient_penalty

    gan, model, train = step.gan, step.model, step.train
    gen, critic = gan.generator, gan.critic
    rng = tf.random.Generator.from_seed(train.seed)
    batch = train.batch_size

    def critic_loss(x, y):
        z = rng.normal((batch, model.latent_dim), model.latent_mean, model.latent_std)
        alpha = rng.uniform((batch, 1))
        fake = gen([z, y], training=model.generator_trains_batch_statistics)
        d_fake = critic([fake, y], training=True)
        d_real = critic([x, y], training=True)
        gp = gradient_penalty(critic, x, fake, y, alpha)
        return tf.reduce_mean(d_fake) - tf.reduce_mean(d_real) + train.gp_lambda * gp, d_fake

    @tf.function(jit_compile=train.xla or None)
    def iteration(real, label):
        for k in (range(n_disc) if unrolled else tf.range(n_disc)):
            with tf.GradientTape() as tape:
                d_loss, _ = critic_loss(tf.gather(real, k), tf.gather(label, k))
                scaled = step._scale(gan.d_opt, d_loss)
            grads = step._unscale(gan.d_opt, tape.gradient(scaled, critic.trainable_variables))
            gan.d_opt.apply_gradients(zip(grads, critic.trainable_variables))
        with tf.GradientTape() as tape:
            d_loss, d_fake = critic_loss(real[n_disc - 1], label[n_disc - 1])
            g_loss = -tf.reduce_mean(d_fake)
            scaled = step._scale(gan.g_opt, g_loss)
        grads = step._unscale(gan.g_opt, tape.gradient(scaled, gen.trainable_variables))
        gan.g_opt.apply_gradients(zip(grads, gen.trainable_variables))
        gan.iteration.assign_add(1)
        # The original returns (and logs) the recomputed critic loss, so it is really computed.
        return {"d_loss": d_loss, "g_loss": g_loss}

    return iteration


def _graph_flops(concrete_function) -> int:
    """Float operations in a concrete function's graph (TensorFlow's profiler)."""
    from tensorflow.python.profiler import model_analyzer, option_builder

    opts = option_builder.ProfileOptionBuilder.float_operation()
    opts["output"] = "none"
    return int(model_analyzer.profile(concrete_function.graph, options=opts).total_float_ops)


def _build(args, reference: bool):
    """(call running ``k`` iterations, FLOPs per iteration, policy, n_disc, k) for one variant."""
    import numpy as np
    import tensorflow as tf

    from bologan.geometry import particle
    from bologan.model import Gan, set_precision, uses_loss_scaling
    from bologan.step import WganGpStep

    model = ModelConfig(particle=args.particle, generator=args.generator, generator_norm=args.generator_norm)
    train = TrainConfig(batch_size=args.batch_size, xla=args.xla, precision=args.precision)
    policy = set_precision(train)
    # fp16 as training runs it: the loss scaled, the gradients unscaled, steps with overflow skipped.
    scaled = uses_loss_scaling(train)
    step = WganGpStep(Gan(model, train, loss_scale=scaled), model, train, loss_scale=scaled)
    n_vox = particle(args.particle).n_voxels
    rng = np.random.default_rng(0)
    real = tf.constant(rng.random((train.n_disc, args.batch_size, n_vox), dtype=np.float32) / n_vox)
    label = tf.constant(rng.random((train.n_disc, args.batch_size, 1), dtype=np.float32))
    k = 1 if reference else args.steps_per_call
    fn = _reference_iteration(step, train.n_disc) if reference else step.compile(steps_per_call=k)
    # Counted on one iteration's graph: the profiler counts a loop's body once, whatever K is,
    # and not inside an XLA-compiled function it calls, so the count is of the same step unjitted.
    counted = _reference_iteration(step, train.n_disc, unrolled=True) if reference else \
        WganGpStep(step.gan, model, dataclasses.replace(train, xla=False), loss_scale=scaled).compile()
    flops = _graph_flops(counted.get_concrete_function(real, label))
    if k > 1:
        real = tf.constant(rng.random((k, train.n_disc, args.batch_size, n_vox), dtype=np.float32) / n_vox)
        label = tf.constant(rng.random((k, train.n_disc, args.batch_size, 1), dtype=np.float32))

    def call() -> float:
        # Reading the (last) loss waits for every iteration of the call to finish.
        return float(tf.reshape(fn(real, label)["d_loss"], [-1])[-1])

    for _ in range(-(-args.warmup // k)):
        call()
    return call, flops, policy, train.n_disc, k


def _time(call, calls: int) -> float:
    t0 = time.perf_counter()
    for _ in range(calls):
        call()  # reading the loss waits for the call's iterations to finish
    return time.perf_counter() - t0


def _environment(tf) -> dict:
    """What a result needs beside its settings to be compared with one from another machine."""
    from common.runinfo import cpu_model

    gpus = tf.config.list_physical_devices("GPU")
    names = [tf.config.experimental.get_device_details(g).get("device_name", g.name) for g in gpus]
    return {"tensorflow": tf.__version__, "python": sys.version.split()[0],
            "device": f"gpu: {', '.join(names)}" if names else "cpu", "cpu_model": cpu_model(),
            "gpus": names, "tf_built_with_cuda": bool(tf.test.is_built_with_cuda()),
            "onednn": os.environ.get("TF_ENABLE_ONEDNN_OPTS", "default")}


@main_guard
def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == [LEARNING_CURVE]:   # a mode with its own flags (bologan.learning_curve)
        from bologan import learning_curve

        return learning_curve.main(argv[1:])
    if INFERENCE_FLAG in argv:   # the other mode has other flags (and other defaults for --threads)
        from bologan.inference import inference_cli

        return inference_cli.main(argv)
    args = parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import numpy as np
    import tensorflow as tf

    from bologan.geometry import particle
    from bologan.tfsetup import configure

    configure(args.threads, 10)
    variants = [False, True] if args.compare else [args.reference]
    built = {ref: _build(args, ref) for ref in variants}
    rounds = args.rounds if args.compare else 1
    per_block = max(1, args.iterations // rounds)
    rates: dict[bool, list[float]] = {ref: [] for ref in variants}
    for _ in range(rounds):
        for ref in variants:  # alternate so both variants see the same machine load
            k = built[ref][4]
            rates[ref].append(per_block / _time(built[ref][0], per_block // k))
    results = []
    for ref in variants:
        _, flops, policy, n_disc, k = built[ref]
        its = float(np.median(rates[ref]))
        results.append({
            "variant": "reference" if ref else "bologan-scaling",
            "particle": args.particle, "n_voxels": particle(args.particle).n_voxels, "batch": args.batch_size,
            "n_disc": n_disc, "threads": args.threads, "xla": args.xla, "precision": args.precision,
            "precision_policy": policy, "loss_scaling": args.precision in LOSS_SCALED_PRECISIONS,
            "generator": args.generator, "iterations": per_block * rounds, "rounds": rounds,
            "steps_per_call": k, "iterations_per_s": its, "iterations_per_s_blocks": rates[ref],
            "seconds_per_iteration": 1.0 / its,
            "showers_per_s": its * n_disc * args.batch_size,
            "flops_per_iteration": flops, "achieved_gflops": flops * its / 1e9,
            **_environment(tf),
        })
    if args.compare:
        ours, ref = results
        ratios = [a / b for a, b in zip(rates[False], rates[True])]
        summary = {"compare": results, "speedup_showers_per_s": float(np.median(ratios)),
                   "speedup_blocks": ratios}
        if args.json:
            print(json.dumps(summary), flush=True)
        else:
            for r in results:
                _print_text(r)
            print(f"speed-up (median of {rounds} alternating blocks): {summary['speedup_showers_per_s']:.2f}x")
        return 0
    if args.json:
        print(json.dumps(results[0]), flush=True)
    else:
        _print_text(results[0])
    return 0


def _print_text(r: dict) -> None:
    print(f"{r['variant']}: {r['iterations_per_s']:.1f} iterations/s ({1e3 * r['seconds_per_iteration']:.2f} ms "
          f"each), {r['showers_per_s']:,.0f} showers/s, "
          f"{r['flops_per_iteration'] / 1e6:.1f} MFLOP/iteration, {r['achieved_gflops']:.2f} GFLOP/s "
          f"({r['particle']}, batch {r['batch']}, {r['threads']} thread(s), {r['precision']}"
          f"{' with loss scaling' if r['loss_scaling'] else ''}, xla={r['xla']}, "
          f"{r['steps_per_call']} iteration(s) per call, {r['device']})")


_WORKLOAD: dict = {}


def training_workload(iterations: int = 30) -> int:
    """``iterations`` training iterations (photons, batch 128, one thread; built once and reused);
    returns the showers processed. For ``python -m energy.overhead --workload
    bologan.bench:training_workload``: training throughput with energy sampling on vs off."""
    if "call" not in _WORKLOAD:
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
        from bologan.tfsetup import configure

        configure(1, 10)
        args = parse_args(["--warmup", "3"])
        call, _, _, n_disc, _ = _build(args, reference=False)
        _WORKLOAD.update(call=call, showers=n_disc * args.batch_size)
    for _ in range(iterations):
        _WORKLOAD["call"]()
    return iterations * _WORKLOAD["showers"]


if __name__ == "__main__":
    sys.exit(main())
