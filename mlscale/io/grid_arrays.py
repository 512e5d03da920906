"""Grid arrays ``[nx, ny, nz(, n)]`` in any supported file format, chosen by extension.

The one place that maps a file name to a format: ``.npy`` (numpy, memory-mapped
blocks), ``.h5``/``.bp`` (openPMD; a ``.json`` openPMD series too) and ``.cube``
(QE/Gaussian cube, read only). Readers return this rank's block in the file's
units; writers are collective over the distributed grid.
"""

from __future__ import annotations

import os
from collections.abc import Collection
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import MlscaleError
from ..grid import Block, DistributedGrid
from .cube import read_cube_block
from .numpy_io import npy_shape, read_npy_block, write_npy_distributed
from .openpmd_io import openpmd_info, read_openpmd, write_openpmd

SUFFIXES = {".npy": "npy", ".h5": "openpmd", ".bp": "openpmd", ".json": "openpmd",
            ".cube": "cube"}
WRITABLE = ("npy", "openpmd")


def grid_array_format(path: str | os.PathLike[str],
                      allowed: Collection[str] = tuple(sorted(set(SUFFIXES.values()))),
                      what: str = "grid array") -> str:
    """``"npy"``, ``"openpmd"`` or ``"cube"`` by the extension of ``path``; MlscaleError
    (naming ``what`` the file holds) for another extension or a format not in ``allowed``."""
    path = Path(path)
    kind = SUFFIXES.get(path.suffix.lower())
    if kind is None or kind not in allowed:
        suffixes = ", ".join(s for s, k in SUFFIXES.items() if k in allowed)
        raise MlscaleError(f"unknown {what} file type '{path.suffix}' for {path} "
                           f"(expected {suffixes})")
    return kind


def grid_array_shape(path: str | os.PathLike[str], mesh: str) -> tuple[int, ...]:
    """Global shape of the array in ``path`` (openPMD: of mesh ``mesh``, components last
    if there are several), without reading its data."""
    path = Path(path)
    kind = grid_array_format(path)
    if not path.is_file():
        raise MlscaleError(f"file not found: {path}")
    if kind == "npy":
        shape = tuple(npy_shape(path))
    elif kind == "openpmd":
        info = openpmd_info(path, mesh)
        extra = (info["n_components"],) if info["n_components"] > 1 else ()
        shape = tuple(info["shape"]) + extra
    else:
        shape = tuple(read_cube_block(path, Block((0, 0, 0), (1, 1, 1)))[1]["shape"])
    if len(shape) < 3:
        raise MlscaleError(f"{path} is not a grid array (shape {shape})")
    return shape


def read_grid_block(path: str | os.PathLike[str], block: Block, mesh: str) -> np.ndarray:
    """``block`` of the grid array in ``path``, in the file's units."""
    path = Path(path)
    kind = grid_array_format(path)
    if not path.exists():
        raise MlscaleError(f"file not found: {path}")
    if kind == "npy":
        return read_npy_block(path, block)
    if kind == "openpmd":
        return read_openpmd(path, mesh, block)
    return read_cube_block(path, block)[0]


def write_grid_array(path: str | os.PathLike[str], mesh: str, local_array: np.ndarray,
                     dgrid: DistributedGrid, **openpmd: Any) -> None:
    """Write the rank's block of a grid array to ``.npy`` or openPMD by extension.

    openpmd: ``unit_si``, ``unit_dimension``, ``attributes`` for openPMD files.
    Collective over ``dgrid.comm``.
    """
    if grid_array_format(path, WRITABLE) == "npy":
        write_npy_distributed(path, local_array, dgrid)
    else:
        write_openpmd(path, mesh, local_array, dgrid, **openpmd)
