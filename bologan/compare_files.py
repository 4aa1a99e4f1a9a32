"""Score one CaloChallenge dataset-1 HDF5 file against another (``bologan.evaluate --generated``).

Any file of the challenge's format works: the package's own ``bologan.generate`` output, another
model's submission, or Geant4 against Geant4. Each file holds ``incident_energies`` (N, 1) MeV
and ``showers`` (N, n_voxels) MeV, with n_voxels 368 (photons) or 533 (pions); the particle is
taken from the voxel count unless ``--particle`` names it.

Scores (one JSON line with ``--json``):

- ``fpd_x1e3``, ``fpd_err_x1e3``, ``kpd_x1e3``, ``kpd_err_x1e3``: CaloChallenge's FPD and KPD
  (``bologan.physics_distance``), comparable with the published table;
- ``chi2_ndf`` (BoloGAN's rule), ``chi2_ndf_overflow`` and ``out_of_range_fraction``: the
  total-energy test per incident energy (``bologan.metrics``), when the reference's energies are
  a grid (at most 100 values) that the generated file covers; null otherwise, with
  ``chi2_note`` saying why;
- with ``--classifier high|low``: ``classifier_auc`` and ``classifier_jsd``
  (``bologan.classifier``) and what training cost.

Voxels may be negative (they are below the 1 MeV threshold, so they count as empty). NaN or
infinite values, a missing dataset, the wrong voxel count or a non-positive incident energy
are refused with one line (exit 2).
"""
from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from common.errors import UserError
from bologan.geometry import PARTICLES, Particle
from bologan.geometry import particle as lookup_particle

ENERGIES_KEY = "incident_energies"
SHOWERS_KEY = "showers"
MAX_GRID_ENERGIES = 100       # more distinct incident energies: a spectrum, no chi2 per energy


@dataclass(frozen=True)
class ShowerFile:
    """The two datasets of one file, float64, MeV."""
    path: Path
    particle: Particle
    incident_energies_mev: np.ndarray      # (N,)
    voxels_mev: np.ndarray                 # (N, n_voxels)


def _particle_for(path: Path, n_voxels: int, particle: str | None) -> Particle:
    if particle is not None:
        part = lookup_particle(particle)
        if n_voxels != part.n_voxels:
            raise UserError(f"{path}: dataset '{SHOWERS_KEY}' has {n_voxels} voxels per shower, "
                            f"{part.name} need {part.n_voxels}")
        return part
    matches = [p for p in PARTICLES.values() if p.n_voxels == n_voxels]
    if not matches:
        known = ", ".join(f"{p.n_voxels} ({p.name})" for p in PARTICLES.values())
        raise UserError(f"{path}: dataset '{SHOWERS_KEY}' has {n_voxels} voxels per shower; "
                        f"dataset 1 has {known}")
    return matches[0]


def read_shower_file(path: str | Path, particle: str | None = None) -> ShowerFile:
    """Read and check one dataset-1 file; every problem is a one-line ``UserError``."""
    p = Path(path)
    if not p.is_file():
        raise UserError(f"{p}: file not found")
    import h5py

    try:
        fh = h5py.File(p, "r")
    except OSError as exc:
        raise UserError(f"{p}: not an HDF5 file or damaged ({str(exc).splitlines()[0]})") from None
    with fh:
        for key in (ENERGIES_KEY, SHOWERS_KEY):
            if key not in fh or not isinstance(fh[key], h5py.Dataset):
                raise UserError(f"{p}: no dataset '{key}' (a CaloChallenge file has '{ENERGIES_KEY}' "
                                f"and '{SHOWERS_KEY}'; found: {', '.join(sorted(fh.keys())) or 'nothing'})")
        energies, showers = fh[ENERGIES_KEY], fh[SHOWERS_KEY]
        if not (energies.ndim == 1 or energies.ndim == 2 and energies.shape[1] == 1):
            raise UserError(f"{p}: dataset '{ENERGIES_KEY}' has shape {energies.shape}, expected (N, 1)")
        if showers.ndim != 2:
            raise UserError(f"{p}: dataset '{SHOWERS_KEY}' has shape {showers.shape}, expected (N, n_voxels)")
        if showers.shape[0] != energies.shape[0]:
            raise UserError(f"{p}: '{SHOWERS_KEY}' has {showers.shape[0]} rows but '{ENERGIES_KEY}' "
                            f"has {energies.shape[0]}")
        if not (np.issubdtype(showers.dtype, np.number) and np.issubdtype(energies.dtype, np.number)):
            raise UserError(f"{p}: datasets '{SHOWERS_KEY}' and '{ENERGIES_KEY}' must be numeric")
        part = _particle_for(p, showers.shape[1], particle)
        try:
            e_inc = np.asarray(energies[()], dtype=np.float64).reshape(-1)
            voxels = np.asarray(showers[()], dtype=np.float64)
        except OSError as exc:
            raise UserError(f"{p}: cannot read the datasets ({str(exc).splitlines()[0]})") from None
    if e_inc.size < 2:
        raise UserError(f"{p}: {e_inc.size} showers; at least 2 are needed")
    bad = ~np.isfinite(voxels).all(axis=1)
    if bad.any():
        raise UserError(f"{p}: {int(bad.sum())} of {e_inc.size} showers have NaN or infinite voxels "
                        f"(first at row {int(np.argmax(bad))})")
    bad = ~(np.isfinite(e_inc) & (e_inc > 0))
    if bad.any():
        raise UserError(f"{p}: {int(bad.sum())} incident energies are not positive finite numbers "
                        f"(first at row {int(np.argmax(bad))}: {e_inc[np.argmax(bad)]!r})")
    return ShowerFile(path=p, particle=part, incident_energies_mev=e_inc, voxels_mev=voxels)


def _energy_scores(gen: ShowerFile, ref: ShowerFile) -> dict[str, Any]:
    from bologan.metrics import etot_by_momentum, score_checkpoint

    ref_by_e = etot_by_momentum(ref.incident_energies_mev, ref.voxels_mev)
    gen_by_e = etot_by_momentum(gen.incident_energies_mev, gen.voxels_mev)
    note = None
    if len(ref_by_e) > MAX_GRID_ENERGIES:
        note = f"the reference has {len(ref_by_e)} distinct incident energies, not a grid of at most {MAX_GRID_ENERGIES}"
    elif missing := sorted(set(ref_by_e) - set(gen_by_e)):
        note = f"the generated file has no shower at {len(missing)} reference incident energies (e.g. {missing[0]:g} MeV)"
    if note is not None:
        return {"chi2_ndf": None, "chi2_ndf_overflow": None, "out_of_range_fraction": None, "chi2_note": note}
    _, total = score_checkpoint(ref_by_e, {e: gen_by_e[e] for e in ref_by_e}, ref.particle.name)
    return {"chi2_ndf": _number(total.chi2_ndf), "chi2_ndf_overflow": _number(total.chi2_ndf_overflow),
            "out_of_range_fraction": _number(total.out_of_range_fraction), "chi2_note": None}


def _number(value: float) -> float | str | None:
    """JSON has no inf or NaN: inf as the string "inf", NaN as null."""
    v = float(value)
    if math.isnan(v):
        return None
    return v if math.isfinite(v) else ("inf" if v > 0 else "-inf")


def compare(gen: ShowerFile, ref: ShowerFile, classifier: str | None = None, classifier_epochs: int = 50,
            seed: int = 0, log=None) -> dict[str, Any]:
    """Every score of ``gen`` against ``ref`` (see the module docstring), as a JSON-ready dict."""
    from bologan.metrics import shower_features
    from bologan.physics_distance import feature_physics_distances

    if gen.particle.name != ref.particle.name:
        raise UserError(f"{gen.path} holds {gen.particle.name}, {ref.path} holds {ref.particle.name}")
    particle = ref.particle.name
    t0 = time.perf_counter()
    gen_feats = shower_features(particle, gen.incident_energies_mev, gen.voxels_mev)
    ref_feats = shower_features(particle, ref.incident_energies_mev, ref.voxels_mev)
    d = feature_physics_distances(ref_feats, gen_feats)
    out: dict[str, Any] = {
        "particle": particle, "n_generated": int(gen.incident_energies_mev.size),
        "n_reference": int(ref.incident_energies_mev.size),
        "fpd_x1e3": _number(d.fpd_x1e3), "fpd_err_x1e3": _number(d.fpd_err_x1e3),
        "kpd_x1e3": _number(d.kpd_x1e3), "kpd_err_x1e3": _number(d.kpd_err_x1e3),
    }
    out.update(_energy_scores(gen, ref))
    out["scoring_s"] = round(time.perf_counter() - t0, 3)
    if classifier is not None:
        from bologan import classifier as cls

        if classifier == "high":
            x_gen, x_ref = cls.high_level_inputs(gen_feats), cls.high_level_inputs(ref_feats)
        else:
            x_gen = cls.low_level_inputs(gen.incident_energies_mev, gen.voxels_mev)
            x_ref = cls.low_level_inputs(ref.incident_energies_mev, ref.voxels_mev)
        try:
            r = cls.train_classifier(x_gen, x_ref, classifier, epochs=classifier_epochs, seed=seed, log=log)
        except ValueError as exc:
            raise UserError(f"--classifier {classifier}: {exc}") from None
        out.update({"classifier": classifier, "classifier_auc": r.auc, "classifier_jsd": r.jsd,
                    "classifier_best_epoch": r.best_epoch, "classifier_epochs": r.epochs_run,
                    "classifier_train_showers_per_class": r.train_showers,
                    "classifier_s": round(r.train_s, 3), "classifier_s_per_epoch": round(r.s_per_epoch, 3)})
    return out


def format_text(result: dict[str, Any]) -> str:
    """The scores as a few human-readable lines."""
    def show(v: Any, fmt: str) -> str:
        return format(v, fmt) if isinstance(v, float) else str(v)

    lines = [f"{result['particle']}: {result['n_generated']} generated against {result['n_reference']} reference showers",
             f"FPD x1e3 {show(result['fpd_x1e3'], '.4g')} +- {show(result['fpd_err_x1e3'], '.2g')}   "
             f"KPD x1e3 {show(result['kpd_x1e3'], '.4g')} +- {show(result['kpd_err_x1e3'], '.2g')}"]
    if result["chi2_note"] is None:
        lines.append(f"chi2/NDF {show(result['chi2_ndf'], '.4g')} (with overflow {show(result['chi2_ndf_overflow'], '.4g')}), "
                     f"{100 * result['out_of_range_fraction']:.2f} % of generated showers outside the reference range")
    else:
        lines.append(f"chi2/NDF not computed: {result['chi2_note']}")
    if "classifier_auc" in result:
        lines.append(f"classifier ({result['classifier']}-level): AUC {result['classifier_auc']:.4f}  "
                     f"JSD {result['classifier_jsd']:.4f}  (best epoch {result['classifier_best_epoch']} of "
                     f"{result['classifier_epochs']}, {result['classifier_s_per_epoch']:.1f} s per epoch)")
    return "\n".join(lines)


# --------------------------------------------------------------------------- command line

def add_arguments(parser) -> None:
    """The file-comparison flags of ``bologan.evaluate``."""
    group = parser.add_argument_group("comparing two CaloChallenge dataset-1 HDF5 files")
    group.add_argument("--generated", metavar="GEN.hdf5",
                       help="score this file against --reference REF.hdf5 (no TRAIN_DIR)")
    group.add_argument("--particle", choices=sorted(PARTICLES),
                       help="particle of both files (default: from the voxel count)")
    group.add_argument("--json", action="store_true", help="print the scores as one JSON line")
    group.add_argument("--classifier", choices=("high", "low"),
                       help="also train CaloChallenge's classifier on high-level features or voxels "
                            "(TensorFlow; minutes per epoch on a CPU)")
    group.add_argument("--classifier-epochs", type=int, default=50, metavar="N",
                       help="classifier epochs (CaloChallenge: 50)")


def run(args, echo=print) -> int:
    """``bologan.evaluate --generated GEN --reference REF``: print the scores."""
    if args.train_dir is not None:
        raise UserError("--generated compares two files; give no TRAIN_DIR with it")
    if not args.reference:
        raise UserError("--generated needs --reference REF.hdf5")
    if args.classifier_epochs < 1:
        raise UserError("--classifier-epochs must be >= 1")
    ref = read_shower_file(args.reference, args.particle)
    gen = read_shower_file(args.generated, args.particle)
    if args.classifier is not None:
        from bologan.tfsetup import quiet_tensorflow

        quiet_tensorflow()
    result = compare(gen, ref, args.classifier, args.classifier_epochs, seed=args.seed,
                     log=None if args.json else echo)
    result.update({"generated": str(args.generated), "reference": str(args.reference)})
    echo(json.dumps(result, sort_keys=True) if args.json else format_text(result))
    return 0
