"""Train one BoloGAN on one replica (BoloGAN's ``train <particle>``).

Example::

    python -m bologan.train --particle pions --iterations 2000 --checkpoint-every 200 --out runs/pions
    python -m bologan.train --out runs/pions --resume --iterations 4000   # continue to 4000

Writes ``OUT/config.json`` (resolved settings), ``OUT/checkpoints/ckpt-<iteration>`` and
``OUT/losses.parquet`` (iteration, d_loss, g_loss, gp, time_s per logged iteration).
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from bologan.config import BOLOGAN_SECTIONS, TRAIN_CHECKPOINT_EVERY
from common.cli import Parser
from common.errors import UserError, main_guard
from common.settings import add_section_arguments, resolve_sections, sections_to_dict
from common.vocab import TRAIN_CONFIG_FILE

LOSSES_FILE = "losses.parquet"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = Parser("python -m bologan.train", __doc__)
    parser.add_argument("--config", help="TOML file with [model], [train], [data] tables")
    parser.add_argument("--out", required=True, help="training directory (checkpoints, losses, config)")
    parser.add_argument("--resume", action="store_true", help="continue from the latest checkpoint in --out")
    add_section_arguments(parser, BOLOGAN_SECTIONS)
    return parser.parse_args(argv)


def _check_out_dir(out: Path, resume: bool) -> None:
    from bologan.model import list_checkpoints

    has_run = (out / TRAIN_CONFIG_FILE).exists() or list_checkpoints(out)
    if resume and not has_run:
        raise UserError(f"{out}: nothing to resume (no {TRAIN_CONFIG_FILE} or checkpoints)")
    if not resume and has_run:
        raise UserError(f"{out}: already holds a training run (use --resume to continue it, or another --out)")


def _check_same_model(out: Path, model_cfg) -> None:
    """A resumed training must keep how its generator normalises (and its layers): otherwise
    one set of weights would hold two models' training."""
    from bologan.config import ModelConfig
    from bologan.trained_config import read_stored_config
    from common.settings import section_from_mapping

    stored = read_stored_config(out)      # TensorFlow-free: the refusal comes in seconds
    saved = section_from_mapping(ModelConfig, stored.tables["model"], f"{stored.path}: [model]")
    for key in ("generator", "generator_norm"):
        if getattr(saved, key) != getattr(model_cfg, key):
            raise UserError(f"{out}: trained with {key} {getattr(saved, key)!r}; --resume with "
                            f"{getattr(model_cfg, key)!r} would mix two models (use another --out)")


def _create_out_dir(out: Path) -> None:
    """Called only once the inputs have been read, so that bad input leaves nothing behind."""
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"{out}: cannot create output directory ({exc.strerror})") from None


@main_guard
def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    out = Path(args.out)
    if args.resume and args.config is None and (out / TRAIN_CONFIG_FILE).exists():
        # Resuming keeps the saved settings; flags given now (e.g. more iterations) still win.
        from bologan.model import load_train_config

        saved = sections_to_dict(load_train_config(out))
        cfg = resolve_sections(BOLOGAN_SECTIONS, None, args, overrides=saved)
    else:
        cfg = resolve_sections(BOLOGAN_SECTIONS, args.config, args)
    _check_out_dir(out, args.resume)
    model_cfg, train_cfg, data_cfg = cfg["model"], cfg["train"], cfg["data"]
    if args.resume and (out / TRAIN_CONFIG_FILE).exists():
        _check_same_model(out, model_cfg)

    from bologan.tfsetup import configure, quiet_tensorflow

    quiet_tensorflow()
    from bologan.pipeline import IterationBatches, load_showers

    showers = load_showers(data_cfg, model_cfg.particle, train_cfg.seed)
    batches = IterationBatches(showers, data_cfg, train_cfg.n_disc, train_cfg.batch_size, train_cfg.seed)
    _create_out_dir(out)

    import numpy as np
    import pyarrow as pa

    from common.atomic import atomic_write_parquet
    from bologan.model import Gan, checkpoint_manager, save_train_config, set_precision, uses_loss_scaling
    from bologan.step import WganGpStep

    configure(train_cfg.threads, train_cfg.seed)
    policy = set_precision(train_cfg)
    loss_scale = uses_loss_scaling(train_cfg)
    gan = Gan(model_cfg, train_cfg, loss_scale=loss_scale)
    manager = checkpoint_manager(gan, out, train_cfg.keep_checkpoints)
    losses: dict[str, list] = {"iteration": [], "d_loss": [], "g_loss": [], "gp": [], "time_s": []}
    if args.resume and manager.latest_checkpoint:
        gan.checkpoint().restore(manager.latest_checkpoint).assert_existing_objects_matched()
        if (out / LOSSES_FILE).exists():
            import pyarrow.parquet as pq

            losses = pq.read_table(out / LOSSES_FILE).to_pydict()
    save_train_config(out, sections_to_dict(cfg))

    start = int(gan.iteration.numpy())
    if start >= train_cfg.iterations:
        print(f"already at iteration {start} >= {train_cfg.iterations}; nothing to do")
        return 0
    step = WganGpStep(gan, model_cfg, train_cfg, loss_scale=loss_scale).compile()
    it = iter(batches.dataset(start))
    print(f"training {model_cfg.particle} ({showers.particle.n_voxels} voxels, {len(showers)} showers, "
          f"{policy}) from iteration {start} to {train_cfg.iterations} -> {out}", flush=True)

    def save_losses() -> None:
        atomic_write_parquet(out / LOSSES_FILE, pa.table(losses))

    t_start = time.perf_counter()
    for i in range(start + 1, train_cfg.iterations + 1):
        t0 = time.perf_counter()
        real, label = next(it)
        res = step(real, label)
        d_loss, g_loss = float(res["d_loss"]), float(res["g_loss"])
        dt = time.perf_counter() - t0
        if not (np.isfinite(d_loss) and np.isfinite(g_loss)):
            raise RuntimeError(f"iteration {i}: non-finite loss (d_loss={d_loss}, g_loss={g_loss})")
        if i % train_cfg.log_every == 0 or i == train_cfg.iterations:
            for key, value in (("iteration", i), ("d_loss", d_loss), ("g_loss", g_loss),
                               ("gp", float(res["gp"])), ("time_s", dt)):
                losses[key].append(value)
            rate = (i - start) / (time.perf_counter() - t_start)
            print(f"iteration {i}/{train_cfg.iterations}  d_loss {d_loss:+.4f}  g_loss {g_loss:+.4f}  "
                  f"{rate:.1f} it/s", flush=True)
        if i % (train_cfg.checkpoint_every or TRAIN_CHECKPOINT_EVERY) == 0 or i == train_cfg.iterations:
            manager.save(checkpoint_number=i)
            save_losses()
    print(f"done: {train_cfg.iterations - start} iterations in {time.perf_counter() - t_start:.1f} s; "
          f"checkpoints in {out / 'checkpoints'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
