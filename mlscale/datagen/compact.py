"""Compact snapshot records, small enough to commit to git (a resumable data set).

A record ``<name>`` is two files in its directory:

- ``<name>.npz`` (NumPy zip, no pickle): ``index_gc`` int16 [point, 3], the grid indices
  (i, j, k) of the subsampled points (every ``stride``-th point per axis, starting at 0);
  ``ldos_ge`` [point, energy] the LDOS at those points in 1/(eV·Å³), in ``dtype``
  (float16 by default); ``density_b`` float32 [nx, ny, nz], the valence density at all
  points in 1/Å³; ``dos_e`` float64 [energy], the DOS Σ_r LDOS(r, ε)·ΔV of the full
  float32 LDOS (all points) in 1/eV, the reference for DOS and band energies
  integrated from the DFT LDOS.
- ``<name>.info.json``: the snapshot's full info (DFT scalars, forces, structure, grid,
  settings, as :func:`mlscale.datagen.convert.snapshot_info`) plus ``"compact"``:
  version, stride, dtype, number of points; written last, atomically, so its presence
  marks a finished record.

Descriptors are not stored: they follow from the structure and the descriptor settings.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from ase import Atoms

from ..config import BispectrumSettings
from ..descriptors import compute_descriptors
from ..errors import MlscaleError
from ..grid import DistributedGrid, Grid
from ..io.atomic import write_json_atomic

COMPACT_VERSION = 1
_DTYPES = ("float16", "float32")


@dataclass(frozen=True)
class CompactSettings:
    """stride: keep every stride-th grid point per axis; dtype: LDOS storage type."""

    stride: int = 3
    dtype: str = "float16"

    def __post_init__(self):
        if int(self.stride) < 1:
            raise MlscaleError(f"compact stride must be >= 1, got {self.stride}")
        if self.dtype not in _DTYPES:
            raise MlscaleError(f"compact dtype must be one of {_DTYPES}, got {self.dtype!r}")


def subsample_indices(shape, stride: int) -> np.ndarray:
    """Grid indices [point, 3] (int16) of every ``stride``-th point per axis, C order."""
    axes = [np.arange(0, int(n), int(stride)) for n in shape]
    return np.stack(np.meshgrid(*axes, indexing="ij"), axis=-1).reshape(-1, 3).astype(np.int16)


def write_compact_record(full_stem, record_dir, name: str, settings: CompactSettings) -> Path:
    """Write record ``name`` into ``record_dir`` from a full snapshot ``<full_stem>.*``.

    Reads ``.out.npy`` (LDOS, only the subsampled points), ``.dens.npy`` and
    ``.info.json`` of the full snapshot. Serial (call on one rank). Returns the
    record's info JSON path.
    """
    full_stem, record_dir = str(full_stem), Path(record_dir)
    try:
        info = json.loads(Path(f"{full_stem}.info.json").read_text())
        ldos = np.load(f"{full_stem}.out.npy", mmap_mode="r", allow_pickle=False)
        density_b = np.load(f"{full_stem}.dens.npy", allow_pickle=False)[..., 0]
    except (OSError, ValueError) as error:
        raise MlscaleError(f"cannot read the full snapshot {full_stem}: {error}") from None
    index_gc = subsample_indices(ldos.shape[:3], settings.stride)
    ldos_ge = np.asarray(ldos[tuple(index_gc.T.astype(np.intp))], dtype=settings.dtype)
    voxel = abs(np.linalg.det(np.asarray(info["cell"], dtype=float))) / np.prod(ldos.shape[:3])
    dos_e = sum(plane.sum(axis=(0, 1), dtype=np.float64) for plane in ldos) * voxel
    record_dir.mkdir(parents=True, exist_ok=True)
    partial = record_dir / f"{name}.partial.npz"
    np.savez_compressed(partial, index_gc=index_gc, ldos_ge=ldos_ge,
                        density_b=density_b.astype(np.float32), dos_e=dos_e)
    os.replace(partial, record_dir / f"{name}.npz")
    info["compact"] = {"version": COMPACT_VERSION, "stride": int(settings.stride),
                       "dtype": settings.dtype, "points": int(len(index_gc)),
                       "ldos": "ldos_ge at index_gc, 1/(eV*angstrom^3)",
                       "density": "density_b at all points, 1/angstrom^3",
                       "dos": "dos_e of the full LDOS, 1/eV"}
    info["files"] = {"record": f"{name}.npz"}
    path = record_dir / f"{name}.info.json"
    write_json_atomic(path, info)
    return path


def read_compact_record(record_dir, name: str) -> tuple[dict, dict]:
    """(info, arrays) of record ``name``: arrays ``index_gc``, ``ldos_ge`` (float32),
    ``density_b``, ``dos_e``; MlscaleError when missing or inconsistent."""
    record_dir = Path(record_dir)
    try:
        info = json.loads((record_dir / f"{name}.info.json").read_text())
        with np.load(record_dir / f"{name}.npz", allow_pickle=False) as data:
            arrays = {key: data[key] for key in ("index_gc", "ldos_ge", "density_b", "dos_e")}
    except (OSError, ValueError, KeyError) as error:
        raise MlscaleError(f"cannot read compact record {record_dir / name}: {error}") from None
    arrays["ldos_ge"] = arrays["ldos_ge"].astype(np.float32)
    if (len(arrays["index_gc"]) != len(arrays["ldos_ge"])
            or list(arrays["density_b"].shape) != list(info["grid_dimensions"])):
        raise MlscaleError(f"compact record {record_dir / name} is inconsistent")
    return info, arrays


def record_training_arrays(record_dir, name: str, settings: BispectrumSettings,
                           backend: str = "native") -> tuple[np.ndarray, np.ndarray]:
    """(descriptors_pf, ldos_pe) of a record's subsampled points, for training.

    The descriptors are recomputed from the stored structure: the points (i·s, j·s, k·s)
    of an (nx, ny, nz) grid are the points of the (nx/s, ny/s, nz/s) grid of the same
    cell, so they are computed on that coarser grid (serial; the stride must divide
    the grid). descriptors_pf: float64 [point, feature]; ldos_pe: float32 [point,
    energy] in 1/(eV·Å³), points in the order of ``index_gc``.
    """
    info, arrays = read_compact_record(record_dir, name)
    stride, shape = info["compact"]["stride"], tuple(info["grid_dimensions"])
    if any(n % stride for n in shape):
        raise MlscaleError(f"record {name}: stride {stride} does not divide the grid {shape}")
    atoms = Atoms(info["symbols"], positions=info["positions"], cell=info["cell"], pbc=True)
    coarse = DistributedGrid(Grid(np.asarray(info["cell"]), tuple(n // stride for n in shape)))
    descriptors_bf = compute_descriptors(atoms, coarse, settings, backend)
    return descriptors_bf.reshape(-1, descriptors_bf.shape[-1]), arrays["ldos_ge"]
