"""Export a trained BoloGAN generator as a TensorFlow SavedModel (and ONNX when tf2onnx exists).

Example::

    python -m bologan.export --checkpoint runs/pions/eval/best_checkpoint --out export/pions
    python -m bologan.export --checkpoint runs/photons --iteration 5000 --out export/photons --onnx no

The SavedModel (``OUT/saved_model``) has two signatures, both float32 and batched:

``serving_default`` -- the bare network, for callers that prepare their own inputs:
    inputs  ``z`` (B, latent_dim): noise, Normal(latent_mean, latent_std) as in training;
            ``label`` (B, 1): energy label (see ``bologan.labels``: maxe or loge of the kinetic energy)
    output  ``voxel_fractions`` (B, n_voxels): voxel energy / kinetic energy, as the network gives it.

``generate_mev`` -- showers ready to use:
    inputs  ``momentum_mev`` (B,) float64: incident momentum in MeV;
            ``seed`` () int64: noise seed (same seed and inputs -> same showers)
    output  ``voxels_mev`` (B, n_voxels): energy per voxel in MeV, dataset-1 voxel order,
            negative values set to 0 (as ``bologan.generate`` does).
    The noise is ``tf.random.stateless_normal`` with seed ``[seed, 0]``: shower i depends on the
    seed and on the batch it is generated in.

``OUT/export.json`` records the particle, shapes, label kind, latent parameters, source
checkpoint and versions. Layers are exported in float32 whatever precision was used in training.

ONNX (``--onnx auto``, default): ``OUT/generator.onnx`` holds the bare network (the
``serving_default`` computation) when the ``tf2onnx`` package imports; otherwise a message says so
and only the SavedModel is written. ``--onnx yes`` makes a missing tf2onnx an error, ``--onnx no``
skips it. Exit codes: 0 ok, 2 bad input.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import math
import platform
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any, Sequence

from common.cli import Parser
from common.errors import UserError, main_guard
from bologan.trained_config import config_file
from bologan.generate import add_checkpoint_arguments, resolve_checkpoint

SAVED_MODEL_DIR = "saved_model"
ONNX_FILE = "generator.onnx"
META_FILE = "export.json"
ONNX_OPSET = 15   # tf2onnx's default and tested range is 14-18
ONNX_MISSING = ("ONNX export skipped: the tf2onnx package is not installed (install it, or convert "
                "later with: python -m tf2onnx.convert --saved-model OUT/saved_model --output generator.onnx)")


def onnx_available() -> bool:
    return importlib.util.find_spec("tf2onnx") is not None


def make_export_module(generator: Any, model_cfg: Any, label_kind: str) -> Any:
    """A ``tf.Module`` holding the generator and the two signature functions (module docstring)."""
    import tensorflow as tf

    from bologan.geometry import particle as lookup_particle

    part = lookup_particle(model_cfg.particle)
    latent = int(model_cfg.latent_dim)
    mass = float(part.mass_mev)
    ekin_min, ekin_max = part.ekin_min_mev, part.ekin_max_mev
    mean, std = float(model_cfg.latent_mean), float(model_cfg.latent_std)
    if label_kind not in ("maxe", "loge"):
        raise UserError(f"unknown energy label kind {label_kind!r} in the training config")

    class GeneratorExport(tf.Module):
        def __init__(self):
            super().__init__(name="bologan_generator")
            self.generator = generator

        @tf.function(input_signature=[tf.TensorSpec((None, latent), tf.float32, name="z"),
                                      tf.TensorSpec((None, 1), tf.float32, name="label")])
        def fractions(self, z, label):
            return {"voxel_fractions": self.generator([z, label], training=False)}

        @tf.function(input_signature=[tf.TensorSpec((None,), tf.float64, name="momentum_mev"),
                                      tf.TensorSpec((), tf.int64, name="seed")])
        def generate_mev(self, momentum_mev, seed):
            # Same arithmetic as bologan.geometry / bologan.labels, in float64 like numpy there.
            ekin = tf.sqrt(momentum_mev * momentum_mev + mass * mass) - mass
            if label_kind == "maxe":
                label = ekin / ekin_max
            else:
                label = tf.math.log(ekin / ekin_min) / math.log(ekin_max / ekin_min)
            label = tf.reshape(tf.cast(label, tf.float32), (-1, 1))
            z = tf.random.stateless_normal((tf.shape(momentum_mev)[0], latent),
                                           seed=tf.stack([seed, tf.constant(0, tf.int64)]),
                                           mean=mean, stddev=std, dtype=tf.float32)
            frac = tf.cast(self.generator([z, label], training=False), tf.float64)
            voxels = tf.cast(frac * ekin[:, None], tf.float32)
            return {"voxels_mev": tf.maximum(voxels, 0.0)}

    return GeneratorExport()


def export_metadata(model_cfg: Any, label_kind: str, source: dict[str, Any]) -> dict[str, Any]:
    import tensorflow as tf

    from bologan.geometry import particle as lookup_particle

    part = lookup_particle(model_cfg.particle)
    return {
        "format": "bologan-generator-export", "version": 1,
        "particle": part.name, "pid": part.pid, "n_voxels": part.n_voxels, "mass_mev": part.mass_mev,
        "layers": [[ly.layer_id, ly.n_radial, ly.n_alpha] for ly in part.layers],
        "latent_dim": model_cfg.latent_dim, "latent_mean": model_cfg.latent_mean,
        "latent_std": model_cfg.latent_std, "label": label_kind,
        "label_range_ekin_mev": [part.ekin_min_mev, part.ekin_max_mev],
        "generator": model_cfg.generator, "generator_widths": list(model_cfg.generator_widths),
        "signatures": {
            "serving_default": {"inputs": {"z": ["B", model_cfg.latent_dim], "label": ["B", 1]},
                                "outputs": {"voxel_fractions": ["B", part.n_voxels]},
                                "units": "fractions of the kinetic energy"},
            "generate_mev": {"inputs": {"momentum_mev": ["B"], "seed": []},
                             "outputs": {"voxels_mev": ["B", part.n_voxels]}, "units": "MeV"},
        },
        "source": source,
        "versions": {"python": platform.python_version(), "tensorflow": tf.__version__},
    }


def save_generator(generator: Any, model_cfg: Any, label_kind: str, out_dir: str | Path,
                   source: dict[str, Any] | None = None) -> Path:
    """Write ``out_dir/saved_model`` and ``out_dir/export.json``; returns the SavedModel path.

    The SavedModel is built in a temporary directory beside its final place and moved there, so
    an interrupted export never leaves a half-written model under the final name.
    """
    import tensorflow as tf

    from common.atomic import atomic_write_json

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    module = make_export_module(generator, model_cfg, label_kind)
    final = out / SAVED_MODEL_DIR
    staging = Path(tempfile.mkdtemp(prefix=f".{SAVED_MODEL_DIR}.", dir=out))
    try:
        tf.saved_model.save(module, str(staging / "model"), signatures={
            "serving_default": module.fractions, "generate_mev": module.generate_mev})
        if final.exists():
            shutil.rmtree(final)
        (staging / "model").rename(final)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    atomic_write_json(out / META_FILE, export_metadata(model_cfg, label_kind, source or {}))
    return final


def save_onnx(generator: Any, model_cfg: Any, path: str | Path) -> Path:
    """The bare network (z, label) -> voxel fractions as ONNX; needs the tf2onnx package."""
    import tensorflow as tf
    import tf2onnx  # optional dependency: only reached when onnx_available()

    spec = (tf.TensorSpec((None, model_cfg.latent_dim), tf.float32, name="z"),
            tf.TensorSpec((None, 1), tf.float32, name="label"))
    target = Path(path)
    tmp = target.with_name(f".{target.name}.tmp")
    tf2onnx.convert.from_keras(generator, input_signature=spec, opset=ONNX_OPSET, output_path=str(tmp))
    tmp.replace(target)
    return target


def build_parser() -> argparse.ArgumentParser:
    parser = Parser("python -m bologan.export", __doc__)
    add_checkpoint_arguments(parser, required=True)
    parser.add_argument("--out", required=True, metavar="DIR", help="output directory")
    parser.add_argument("--onnx", choices=("auto", "yes", "no"), default="auto",
                        help="also write generator.onnx: auto = when tf2onnx is installed (default), "
                             "yes = required, no = never")
    return parser


@main_guard
def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out}: exists and is not a directory")
    has_onnx = onnx_available()
    if args.onnx == "yes" and not has_onnx:
        raise UserError("--onnx yes: the tf2onnx package is not installed (nothing written)")
    ref = resolve_checkpoint(args.checkpoint, args.iteration, args.config_from)

    from bologan.tfsetup import quiet_tensorflow

    quiet_tensorflow()
    import tensorflow as tf

    from bologan.generate import load_generator

    # Exported layers are float32 whatever the training precision (variables are float32 anyway).
    tf.keras.mixed_precision.set_global_policy("float32")
    generator, sections = load_generator(ref)
    model_cfg, label_kind = sections["model"], sections["data"].label
    source = {"checkpoint": ref.prefix.name, "iteration": ref.iteration,
              "config": str(config_file(ref.config_dir))}
    saved = save_generator(generator, model_cfg, label_kind, out, source)
    print(f"SavedModel: {saved} (signatures serving_default(z, label), generate_mev(momentum_mev, seed))")
    if args.onnx != "no":
        if has_onnx:
            print(f"ONNX: {save_onnx(generator, model_cfg, out / ONNX_FILE)} (inputs z, label)")
        else:
            print(ONNX_MISSING, file=sys.stderr)
    print(f"metadata: {out / META_FILE}")
    meta = json.loads((out / META_FILE).read_text())
    print(f"{meta['particle']}: latent {meta['latent_dim']} + label ({label_kind}) -> {meta['n_voxels']} voxels")
    return 0


if __name__ == "__main__":
    sys.exit(main())
