"""Importers for the two public shower formats, returning ``bologan.dataio.Showers`` (MeV), and
the one exporter: showers written back as CaloChallenge HDF5, so that the community's own
evaluation scripts read generated showers.

- CaloChallenge dataset-1 HDF5: datasets ``incident_energies`` (N, 1) and ``showers``
  (N, n_voxels), both MeV.  Needs h5py (the ``hdf5`` extra), imported only here.
- FastCaloGAN per-momentum CSV files, ``pid{pid}_E{p}_eta_{a}_{b}_voxalisation.csv`` with p the
  momentum in MeV: one shower per row, optionally a header row, optionally two trailing
  extra columns (dropped).  Empty cells / NaN become 0 as in BoloGAN; the count is reported.
"""
from __future__ import annotations

import logging
import os
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from bologan.dataio import Showers, check_showers
from common.atomic import atomic_write
from common.errors import UserError
from bologan.geometry import Particle
from bologan.geometry import particle as lookup_particle

log = logging.getLogger(__name__)

_GZIP_MAGIC = b"\x1f\x8b"
_HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"
_CSV_NAME = re.compile(r"^pid(\d+)_E(\d+)_eta_(\d+)_(\d+)_voxalisation\.csv$")
HDF5_ENERGIES = "incident_energies"
HDF5_SHOWERS = "showers"
HDF5_SUFFIXES = (".hdf5", ".h5")
"""File name endings that ``bologan.generate --out`` writes as CaloChallenge HDF5."""


def _as_particle(particle: str | Particle) -> Particle:
    return particle if isinstance(particle, Particle) else lookup_particle(particle)


def _check_readable_file(path: Path) -> bytes:
    """The file's first 8 bytes; missing files and directories are user errors."""
    if not path.exists():
        raise UserError(f"{path}: file not found")
    if path.is_dir():
        raise UserError(f"{path}: is a directory, expected a file")
    try:
        with path.open("rb") as fh:
            return fh.read(8)
    except OSError as exc:
        raise UserError(f"{path}: cannot read ({exc.strerror or exc})") from None


def import_calochallenge_hdf5(path: str | os.PathLike, particle: str | Particle) -> Showers:
    """Read a CaloChallenge dataset-1 HDF5 file (voxels converted to float32 while reading)."""
    part = _as_particle(particle)
    p = Path(path)
    head = _check_readable_file(p)
    if head.startswith(_GZIP_MAGIC):
        raise UserError(f"{p}: the whole file is gzip-compressed; run 'gunzip {p.name}' and import "
                        f"the .hdf5 file it leaves")
    if not head.startswith(_HDF5_MAGIC):
        # HDF5 may also start at byte 512, 1024, ... after a user block; let h5py decide.
        log.debug("%s: no HDF5 signature at offset 0", p)
    try:
        import h5py
    except ImportError:
        raise UserError("reading HDF5 needs h5py: install the hdf5 extra "
                        "(pip install 'bologan-scaling[hdf5]')") from None
    try:
        fh = h5py.File(p, "r")
    except OSError as exc:
        raise UserError(f"{p}: not an HDF5 file or truncated ({_first_line(exc)})") from None
    with fh:
        energies = _dataset(fh, p, HDF5_ENERGIES)
        showers = _dataset(fh, p, HDF5_SHOWERS)
        if energies.ndim == 2 and energies.shape[1] == 1 or energies.ndim == 1:
            n = energies.shape[0]
        else:
            raise UserError(f"{p}: dataset 'incident_energies' has shape {energies.shape}, expected (N, 1)")
        if showers.ndim != 2:
            raise UserError(f"{p}: dataset 'showers' has shape {showers.shape}, expected (N, {part.n_voxels})")
        if showers.shape[1] != part.n_voxels:
            raise UserError(f"{p}: dataset 'showers' has {showers.shape[1]} voxels per shower, "
                            f"{part.name} need {part.n_voxels}")
        if showers.shape[0] != n:
            raise UserError(f"{p}: dataset 'showers' has {showers.shape[0]} rows but "
                            f"'incident_energies' has {n}")
        if not (np.issubdtype(showers.dtype, np.number) and np.issubdtype(energies.dtype, np.number)):
            raise UserError(f"{p}: datasets 'showers' and 'incident_energies' must be numeric")
        try:
            momentum = np.asarray(energies[()], dtype=np.float64).reshape(-1)
            voxels = showers.astype(np.float32)[()]
        except OSError as exc:
            raise UserError(f"{p}: cannot read the datasets, file damaged or truncated "
                            f"({_first_line(exc)})") from None
    result = Showers(particle=part, momentum_mev=momentum, voxels_mev=voxels,
                     source=f"imported from {p.name}")
    check_showers(result, str(p))
    return result


def require_h5py():
    """The h5py module; a one-line ``UserError`` naming the extra when it is not installed."""
    try:
        import h5py
    except ImportError:
        raise UserError("writing HDF5 needs h5py: install the hdf5 extra "
                        "(pip install 'bologan-scaling[hdf5]')") from None
    return h5py


def write_calochallenge_hdf5(path: str | os.PathLike, showers: Showers,
                             attrs: dict[str, int | float | str] | None = None) -> None:
    """Write ``showers`` as a CaloChallenge dataset-1 file, atomically (never a partial file).

    ``incident_energies`` (N, 1) float64 and ``showers`` (N, n_voxels) float32, both MeV, in the
    dataset-1 voxel order; the incident energy is the momentum, as in the challenge's files.
    File attributes record the particle, units and provenance, and ``attrs`` (the challenge's
    readers ignore them).
    """
    target = Path(path)
    check_showers(showers, f"{target.name} (not written)")
    if target.is_dir():
        raise UserError(f"{target}: is a directory; give a file name for the output")
    h5py = require_h5py()

    def write(tmp: str) -> None:
        with h5py.File(tmp, "w") as fh:
            fh.create_dataset(HDF5_ENERGIES, data=showers.momentum_mev.reshape(-1, 1).astype(np.float64))
            fh.create_dataset(HDF5_SHOWERS, data=np.ascontiguousarray(showers.voxels_mev, dtype=np.float32))
            fh.attrs.update({"particle": showers.particle.name, "units": "MeV", "source": showers.source,
                             **(attrs or {})})

    try:
        atomic_write(target, write)
    except OSError as exc:
        raise UserError(f"{target}: cannot write ({exc.strerror or exc})") from None


def _dataset(fh, path: Path, key: str):
    import h5py

    obj = fh.get(key)
    if obj is None:
        found = ", ".join(sorted(fh.keys())) or "nothing"
        raise UserError(f"{path}: no dataset '{key}' (found: {found})")
    if not isinstance(obj, h5py.Dataset):
        raise UserError(f"{path}: '{key}' is a group, expected a dataset")
    return obj


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__


def _csv_files(directory_or_files: str | os.PathLike | Sequence[str | os.PathLike],
               part: Particle, eta: tuple[int, int]) -> list[tuple[float, Path]]:
    """(momentum MeV, file) pairs sorted by momentum, checked against the naming scheme."""
    a, b = eta
    pattern = f"pid{part.pid}_E*_eta_{a}_{b}_voxalisation.csv"
    if isinstance(directory_or_files, (str, os.PathLike)):
        root = Path(directory_or_files)
        if not root.exists():
            raise UserError(f"{root}: not found")
        if root.is_dir():
            files = sorted(root.glob(pattern))
            if not files:
                # FastCaloGAN's own layout: csvFiles/pid{pid}/eta_{a}_{b}/...
                files = sorted((root / f"pid{part.pid}" / f"eta_{a}_{b}").glob(pattern))
            if not files:
                raise UserError(f"{root}: no files named {pattern} (here or in pid{part.pid}/eta_{a}_{b}/)")
        else:
            files = [root]
    else:
        files = [Path(f) for f in directory_or_files]
        if not files:
            raise UserError("no CSV files given")
    out: dict[float, Path] = {}
    for f in files:
        m = _CSV_NAME.match(f.name)
        if m is None:
            raise UserError(f"{f}: file name does not follow pid{{pid}}_E{{momentum MeV}}_eta_{{a}}_{{b}}"
                            f"_voxalisation.csv")
        pid, mom, fa, fb = (int(g) for g in m.groups())
        if pid != part.pid:
            raise UserError(f"{f}: file is for pid {pid}, but {part.name} have pid {part.pid}")
        if (fa, fb) != (a, b):
            raise UserError(f"{f}: file is for eta slice {fa}_{fb}, expected {a}_{b}")
        if mom <= 0:
            raise UserError(f"{f}: momentum E{mom} in the file name must be positive")
        if float(mom) in out:
            raise UserError(f"{f}: momentum {mom} MeV given twice (also {out[float(mom)].name})")
        out[float(mom)] = f
    return sorted(out.items())


def _has_header(path: Path) -> bool:
    """True if the first row is not numbers (column names)."""
    with path.open("r", newline="") as fh:
        first = fh.readline().strip()
    for cell in first.split(",")[:8]:
        cell = cell.strip().strip('"')
        if not cell:
            continue
        try:
            float(cell)
        except ValueError:
            return True
    return False


def _read_csv(path: Path, part: Particle) -> tuple[np.ndarray, bool]:
    """Voxels float32 (N, n_voxels) with NaN still in, and whether extra columns were dropped."""
    import pandas as pd

    try:
        header = _has_header(path)
        frame = pd.read_csv(path, header=None, skiprows=1 if header else 0, engine="c",
                            dtype=np.float32, skipinitialspace=True)
    except pd.errors.EmptyDataError:
        raise UserError(f"{path}: empty file (no showers)") from None
    except UnicodeDecodeError:
        raise UserError(f"{path}: not a text CSV file") from None
    except (ValueError, pd.errors.ParserError) as exc:
        raise UserError(f"{path}: not a numeric CSV ({_first_line(exc)})") from None
    except OSError as exc:
        raise UserError(f"{path}: cannot read ({exc.strerror or exc})") from None
    values = frame.to_numpy(dtype=np.float32, copy=False)
    if values.shape[0] and np.array_equal(values[0], np.arange(values.shape[1])):
        # pandas' to_csv writes column numbers 0..n-1 as the header of an unnamed frame.
        values = values[1:]
    if values.shape[0] == 0:
        raise UserError(f"{path}: empty file (no showers)")
    ncol = values.shape[1]
    nvox = part.n_voxels
    if ncol == nvox + 2:
        values = values[:, :nvox]
    elif ncol != nvox:
        raise UserError(f"{path}: {ncol} columns per row, {part.name} need {nvox} "
                        f"(or {nvox + 2} with two trailing extra columns)")
    return np.ascontiguousarray(values), ncol == nvox + 2


def import_fastcalogan_csv(directory_or_files: str | os.PathLike | Sequence[str | os.PathLike],
                           particle: str | Particle, eta: tuple[int, int] = (20, 25)) -> Showers:
    """Read FastCaloGAN per-momentum CSV files (a directory, one file or a list of files).

    ``eta`` is the slice in the file names, in units of 0.01 (20_25 is 0.20 < |eta| < 0.25).
    NaN voxels are set to 0; how many is logged and recorded in ``Showers.source``.
    """
    part = _as_particle(particle)
    files = _csv_files(directory_or_files, part, eta)
    blocks, momenta = [], []
    n_nan = 0
    n_extra = 0
    for mom, f in files:
        values, extra = _read_csv(f, part)
        nan = np.isnan(values)
        count = int(nan.sum())
        if count:
            values[nan] = 0.0
            n_nan += count
        n_extra += int(extra)
        block = Showers(particle=part, momentum_mev=np.full(values.shape[0], mom), voxels_mev=values,
                        source=f.name)
        check_showers(block, str(f))  # per file, so the message names the bad one
        blocks.append(block.voxels_mev)
        momenta.append(block.momentum_mev)
    notes = []
    if n_nan:
        notes.append(f"{n_nan} NaN voxels set to 0")
        log.warning("%d NaN voxels set to 0 (as BoloGAN does)", n_nan)
    if n_extra:
        notes.append(f"2 trailing extra columns dropped in {n_extra} files")
        log.info("dropped 2 trailing extra columns in %d files", n_extra)
    names = files[0][1].name if len(files) == 1 else f"{len(files)} CSV files pid{part.pid} eta {eta[0]}_{eta[1]}"
    source = f"imported from {names}" + (f" ({'; '.join(notes)})" if notes else "")
    voxels = blocks[0] if len(blocks) == 1 else np.concatenate(blocks, axis=0)
    return Showers(particle=part, momentum_mev=np.concatenate(momenta), voxels_mev=voxels, source=source)
