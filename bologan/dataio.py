"""The project's shower file format: one Parquet file per dataset, TensorFlow-free.

Columns:

- ``momentum_mev`` (float64): incident momentum p in MeV (CaloChallenge ``incident_energies``;
  p = 2^k MeV on the dataset-1 grid).
- ``voxels_mev`` (fixed_size_list<float32>[n_voxels]): deposited energy per voxel in MeV,
  flattened radial index fastest, then angular bin, then layer (``bologan.geometry``).

Schema metadata (keys prefixed ``bologan.``): schema_version, particle, pid, n_voxels, layers
(JSON list of [layer_id, n_radial, n_alpha]), units ("MeV"), eta_slice, source.

``read_showers`` validates everything the trainer relies on and turns every problem into a
one-line ``UserError`` that names the file.  pyarrow is imported only when a file is touched.
"""
from __future__ import annotations

import json
import os
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from common.atomic import atomic_write_parquet
from common.errors import UserError
from bologan.geometry import ETA_SLICE, PARTICLES, Particle
from bologan.geometry import particle as lookup_particle

SHOWER_SCHEMA_VERSION = 1
"""Bump when the columns or their meaning change; readers refuse newer versions."""

MOMENTUM_COLUMN = "momentum_mev"
VOXELS_COLUMN = "voxels_mev"
_PREFIX = "bologan."


@dataclass
class Showers:
    """A set of showers of one particle type, in MeV.

    ``momentum_mev``: float64, shape (N,). ``voxels_mev``: float32, shape (N, particle.n_voxels).
    Arrays returned by ``read_showers`` may be read-only views of the file's buffers: copy
    them before changing values in place.
    """

    particle: Particle
    momentum_mev: np.ndarray
    voxels_mev: np.ndarray
    source: str

    def __post_init__(self) -> None:
        self.momentum_mev = np.asarray(self.momentum_mev, dtype=np.float64).reshape(-1)
        self.voxels_mev = np.asarray(self.voxels_mev, dtype=np.float32)
        n = self.momentum_mev.shape[0]
        expected = (n, self.particle.n_voxels)
        if self.voxels_mev.shape != expected:
            # Constructing Showers with mismatched arrays is a programming error, not user input.
            raise ValueError(f"voxels_mev has shape {self.voxels_mev.shape}, expected {expected}")

    def __len__(self) -> int:
        return int(self.momentum_mev.shape[0])


def _pa():
    import pyarrow as pa

    return pa


def check_showers(showers: Showers, where: str) -> None:
    """Raise a one-line ``UserError`` prefixed by ``where`` if the showers are unusable.

    Checks: at least one shower, finite positive momenta, finite non-negative voxels.
    """
    n = len(showers)
    if n == 0:
        raise UserError(f"{where}: empty dataset (no showers)")
    p = showers.momentum_mev
    bad_p = ~(np.isfinite(p) & (p > 0))
    if bad_p.any():
        first = int(np.argmax(bad_p))
        raise UserError(f"{where}: {int(bad_p.sum())} of {n} showers have a non-positive or non-finite "
                        f"momentum (first at row {first}: {p[first]!r})")
    v = showers.voxels_mev
    # Row sums are one cheap pass; NaN and inf propagate into them, so the exact per-voxel
    # check only runs when something is wrong.
    if not np.isfinite(v.sum(axis=1, dtype=np.float64)).all():
        bad = ~np.isfinite(v).all(axis=1)
        if bad.any():
            first = int(np.argmax(bad))
            raise UserError(f"{where}: {int(bad.sum())} of {n} showers have NaN or infinite voxels "
                            f"(first at row {first})")
    if v.size and float(v.min()) < 0.0:
        neg = (v < 0).any(axis=1)
        raise UserError(f"{where}: {int(neg.sum())} of {n} showers have negative voxel energies "
                        f"(minimum {float(v.min()):.4g} MeV)")


def _metadata(showers: Showers) -> dict[bytes, bytes]:
    part = showers.particle
    meta = {
        "schema_version": str(SHOWER_SCHEMA_VERSION),
        "particle": part.name,
        "pid": str(part.pid),
        "n_voxels": str(part.n_voxels),
        "layers": json.dumps([[ly.layer_id, ly.n_radial, ly.n_alpha] for ly in part.layers]),
        "units": "MeV",
        "eta_slice": json.dumps(list(ETA_SLICE)),
        "source": showers.source,
    }
    return {(_PREFIX + k).encode(): v.encode("utf-8") for k, v in meta.items()}


def showers_to_table(showers: Showers) -> Any:
    """The ``pyarrow.Table`` that ``write_showers`` stores (no copy of the voxel buffer)."""
    pa = _pa()
    nvox = showers.particle.n_voxels
    flat = pa.array(np.ascontiguousarray(showers.voxels_mev).reshape(-1), type=pa.float32())
    voxels = pa.FixedSizeListArray.from_arrays(flat, nvox)
    momentum = pa.array(showers.momentum_mev, type=pa.float64())
    schema = pa.schema([pa.field(MOMENTUM_COLUMN, pa.float64(), nullable=False),
                        pa.field(VOXELS_COLUMN, pa.list_(pa.float32(), nvox), nullable=False)],
                       metadata=_metadata(showers))
    return pa.Table.from_arrays([momentum, voxels], schema=schema)


def write_showers(path: str | os.PathLike, showers: Showers) -> None:
    """Validate and write ``showers`` to ``path`` atomically (never a partial file)."""
    target = Path(path)
    check_showers(showers, f"{target.name} (not written)")
    if target.is_dir():
        raise UserError(f"{target}: is a directory; give a file name for the output")
    table = showers_to_table(showers)
    try:
        atomic_write_parquet(target, table)
    except OSError as exc:
        raise UserError(f"{target}: cannot write ({exc.strerror or exc})") from None


def _meta_str(meta: dict[bytes, bytes], key: str) -> str | None:
    raw = meta.get((_PREFIX + key).encode())
    return None if raw is None else raw.decode("utf-8", errors="replace")


def _resolve_particle(path: Path, meta: dict[bytes, bytes], nvox_in_file: int,
                      particle: str | Particle | None) -> Particle:
    wanted = None
    if particle is not None:
        wanted = particle if isinstance(particle, Particle) else lookup_particle(particle)
    stored_name = _meta_str(meta, "particle")
    stored = None
    if stored_name is not None:
        if stored_name not in PARTICLES:
            raise UserError(f"{path}: unknown particle {stored_name!r} in the file metadata")
        stored = PARTICLES[stored_name]
    if wanted is not None and stored is not None and wanted.name != stored.name:
        raise UserError(f"{path}: particle mismatch: the file holds {stored.name}, expected {wanted.name}")
    part = wanted or stored
    if part is None:
        # A foreign Parquet file without our metadata: the voxel count identifies the particle.
        matches = [p for p in PARTICLES.values() if p.n_voxels == nvox_in_file]
        if len(matches) != 1:
            known = ", ".join(f"{p.name} {p.n_voxels}" for p in PARTICLES.values())
            raise UserError(f"{path}: {nvox_in_file} voxels per shower matches no particle ({known})")
        part = matches[0]
    if nvox_in_file != part.n_voxels:
        raise UserError(f"{path}: wrong voxel count: {nvox_in_file} voxels per shower, "
                        f"{part.name} need {part.n_voxels}")
    stored_nvox = _meta_str(meta, "n_voxels")
    if stored_nvox is not None and stored_nvox != str(nvox_in_file):
        raise UserError(f"{path}: metadata says {stored_nvox} voxels per shower but the column holds "
                        f"{nvox_in_file}")
    return part


def _voxel_width(path: Path, field_type: Any) -> int | None:
    """Fixed list width of the voxel column, or None for variable-length lists."""
    pa = _pa()
    if pa.types.is_fixed_size_list(field_type):
        value_type = field_type.value_type
    elif pa.types.is_list(field_type) or pa.types.is_large_list(field_type):
        value_type = field_type.value_type
    else:
        raise UserError(f"{path}: column '{VOXELS_COLUMN}' has type {field_type}, expected a list of floats")
    if not (pa.types.is_floating(value_type) or pa.types.is_integer(value_type)):
        raise UserError(f"{path}: column '{VOXELS_COLUMN}' holds {value_type}, expected float32")
    return field_type.list_size if pa.types.is_fixed_size_list(field_type) else None


def _voxels_to_numpy(path: Path, column: Any) -> np.ndarray:
    """(N, width) float32 array of a list column, through each chunk's flat values.

    A single-chunk column (the usual case) is returned as a read-only zero-copy view of the
    Arrow buffer: a fresh 250 MB copy costs more than the Parquet decoding on some machines.
    """
    pa = _pa()
    parts: list[np.ndarray] = []
    width: int | None = None
    for chunk in column.chunks:
        if chunk.null_count:
            raise UserError(f"{path}: column '{VOXELS_COLUMN}' has {chunk.null_count} null showers")
        if len(chunk) == 0:
            continue
        if pa.types.is_fixed_size_list(chunk.type):
            w = chunk.type.list_size
        else:
            lengths = np.diff(np.asarray(chunk.offsets))
            if lengths.min() != lengths.max():
                raise UserError(f"{path}: showers have different voxel counts "
                                f"({int(lengths.min())} to {int(lengths.max())})")
            w = int(lengths[0])
        if width is not None and w != width:
            raise UserError(f"{path}: showers have different voxel counts ({width} and {w})")
        width = w
        values = chunk.flatten()  # respects the chunk's offset, unlike .values
        if values.null_count:
            raise UserError(f"{path}: column '{VOXELS_COLUMN}' has {values.null_count} null voxels")
        if values.type != pa.float32():
            values = values.cast(pa.float32())
        parts.append(values.to_numpy(zero_copy_only=False).reshape(len(chunk), w))
    if not parts:
        return np.empty((0, 0), dtype=np.float32)
    return parts[0] if len(parts) == 1 else np.concatenate(parts, axis=0)


def read_showers(path: str | os.PathLike, particle: str | Particle | None = None) -> Showers:
    """Read and validate a shower file; every problem is a one-line ``UserError`` naming it.

    ``particle`` (name or ``Particle``), when given, must match the file's metadata. The
    arrays may be read-only (zero-copy); ``np.array(showers.voxels_mev)`` gives a writable copy.
    """
    p = Path(path)
    if not p.exists():
        raise UserError(f"{p}: file not found")
    if p.is_dir():
        raise UserError(f"{p}: is a directory, expected a Parquet shower file")
    pa = _pa()
    import pyarrow.parquet as pq

    try:
        pf = pq.ParquetFile(p)
        schema = pf.schema_arrow
    except PermissionError:
        raise UserError(f"{p}: cannot read (permission denied)") from None
    except (pa.ArrowException, OSError) as exc:
        if is_hdf5(p):
            raise UserError(_hdf5_message(p, particle)) from None
        raise UserError(f"{p}: not a Parquet file or truncated ({_short(exc)})") from None
    meta = dict(schema.metadata or {})
    version = _meta_str(meta, "schema_version")
    if version is not None:
        if not version.isdigit():
            raise UserError(f"{p}: unreadable schema version {version!r}")
        if int(version) > SHOWER_SCHEMA_VERSION:
            raise UserError(f"{p}: written with shower schema version {version}; this code reads up to "
                            f"{SHOWER_SCHEMA_VERSION} (update bologan-scaling)")
    missing = [c for c in (MOMENTUM_COLUMN, VOXELS_COLUMN) if c not in schema.names]
    if missing:
        raise UserError(f"{p}: missing column(s) {', '.join(repr(c) for c in missing)} "
                        f"(found: {', '.join(schema.names) or 'none'})")
    mom_type = schema.field(MOMENTUM_COLUMN).type
    if not (pa.types.is_floating(mom_type) or pa.types.is_integer(mom_type)):
        raise UserError(f"{p}: column '{MOMENTUM_COLUMN}' has type {mom_type}, expected float64")
    width = _voxel_width(p, schema.field(VOXELS_COLUMN).type)
    n_rows = pf.metadata.num_rows
    if n_rows == 0:
        raise UserError(f"{p}: empty dataset (no showers)")
    if width is not None:
        # Decide the particle before reading hundreds of MB.
        part = _resolve_particle(p, meta, width, particle)
    try:
        table = pf.read(columns=[MOMENTUM_COLUMN, VOXELS_COLUMN])
    except (pa.ArrowException, OSError) as exc:
        raise UserError(f"{p}: not a Parquet file or truncated ({_short(exc)})") from None
    mom_col = table.column(MOMENTUM_COLUMN)
    if mom_col.null_count:
        raise UserError(f"{p}: column '{MOMENTUM_COLUMN}' has {mom_col.null_count} null values")
    momentum = mom_col.to_numpy().astype(np.float64, copy=False)
    voxels = _voxels_to_numpy(p, table.column(VOXELS_COLUMN))
    del table
    if width is None:
        part = _resolve_particle(p, meta, voxels.shape[1], particle)
    source = _meta_str(meta, "source") or f"read from {p.name}"
    showers = Showers(particle=part, momentum_mev=momentum, voxels_mev=voxels, source=source)
    check_showers(showers, str(p))
    return showers


# HDF5's format signature; it opens the file or a user block of 512, 1024, 2048 ... bytes.
HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"
HDF5_FIRST_USER_BLOCK = 512


def is_hdf5(path: str | os.PathLike) -> bool:
    """True if the file carries HDF5's signature where the HDF5 format allows it."""
    try:
        with open(path, "rb") as fh:
            offset = 0
            while True:
                fh.seek(offset)
                head = fh.read(len(HDF5_SIGNATURE))
                if head == HDF5_SIGNATURE:
                    return True
                if len(head) < len(HDF5_SIGNATURE):
                    return False
                offset = HDF5_FIRST_USER_BLOCK if offset == 0 else 2 * offset
    except OSError:
        return False


def _hdf5_message(p: Path, particle: str | Particle | None) -> str:
    """What to say about an HDF5 file given where Parquet showers are expected: the conversion."""
    named = [name for name in PARTICLES if name in p.name.lower()]
    if len(named) == 1:
        name = named[0]
    elif particle is not None:
        name = particle if isinstance(particle, str) else particle.name
    else:
        name = "|".join(PARTICLES)
    out = p.with_suffix(".parquet")
    if out == p:
        out = p.with_name(f"{p.stem}-showers.parquet")
    command = shlex.join(["python", "-m", "bologan.data", "convert", "--from", "hdf5", "--particle", name,
                          str(p), "--out", str(out)])
    return f"{p}: an HDF5 file, not a Parquet shower file; convert it first: {command}"


def _short(exc: BaseException) -> str:
    """First line of an exception message, so a UserError stays on one line."""
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def _momentum_groups(momentum: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(group key per shower, representative momentum per group).

    Grid data has a handful of distinct momenta; continuous spectra are grouped by the nearest
    power of two so the summary stays short.
    """
    values, inverse = np.unique(momentum, return_inverse=True)
    if len(values) <= 64:
        return inverse, values
    k = np.rint(np.log2(momentum)).astype(np.int64)
    keys, inverse = np.unique(k, return_inverse=True)
    return inverse, np.exp2(keys.astype(np.float64))


def describe_showers(showers: Showers) -> dict:
    """JSON-ready summary: counts, mean total energy, sparsity and layer fractions per momentum.

    Energies in MeV. ``zero_fraction`` is the fraction of voxels that are exactly 0. Layer
    fractions are energy-weighted: the layer's summed energy over the summed total energy.
    """
    part = showers.particle
    v = showers.voxels_mev
    n = len(showers)
    slices = part.layer_slices()
    layer_e = np.stack([v[:, s].sum(axis=1, dtype=np.float64) for s in slices.values()], axis=1)
    total = layer_e.sum(axis=1)
    zeros = (v == 0).sum(axis=1)
    groups, reps = _momentum_groups(showers.momentum_mev)
    counts = np.bincount(groups, minlength=len(reps))

    def fractions(rows: np.ndarray | slice) -> dict[str, float]:
        sums = layer_e[rows].sum(axis=0)
        denom = sums.sum()
        return {str(lid): (float(s / denom) if denom > 0 else 0.0) for lid, s in zip(slices, sums)}

    per_momentum = []
    for g, (pm, count) in enumerate(zip(reps, counts)):
        rows = np.flatnonzero(groups == g)
        ekin = float(part.ekin_mev(pm))
        mean_total = float(total[rows].mean())
        per_momentum.append({
            "momentum_mev": float(pm),
            "ekin_mev": ekin,
            "showers": int(count),
            "mean_total_mev": mean_total,
            "std_total_mev": float(total[rows].std()),
            "mean_total_over_ekin": mean_total / ekin if ekin > 0 else float("nan"),
            "zero_fraction": float(zeros[rows].sum() / (len(rows) * part.n_voxels)),
            "layer_fractions": fractions(rows),
        })
    return {
        "particle": part.name,
        "pid": part.pid,
        "n_voxels": part.n_voxels,
        "layers": [[ly.layer_id, ly.n_radial, ly.n_alpha] for ly in part.layers],
        "showers": n,
        "source": showers.source,
        "mean_total_mev": float(total.mean()) if n else 0.0,
        "zero_fraction": float(zeros.sum() / max(1, n * part.n_voxels)),
        "layer_fractions": fractions(slice(None)),
        "momenta": per_momentum,
    }
