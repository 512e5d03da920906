"""Bispectrum descriptors on this rank's block of the real-space grid.

``compute_descriptors`` validates the atoms and dispatches to a backend module
(``lammps``: LAMMPS ``compute sna/grid/local``; ``native``: mlscale's own code).
Every backend offers ``compute_block(atoms, grid, block, settings, comm)``.
"""

from __future__ import annotations

import importlib

import numpy as np

from ..errors import MlscaleError
from .atoms import check_atoms, type_indices

BACKENDS = ("lammps", "native")

__all__ = ["BACKENDS", "check_atoms", "compute_descriptors", "type_indices"]


def compute_descriptors(atoms, grid, block, settings, comm, backend: str = "native",
                        check: bool = True) -> np.ndarray:
    """Bispectrum components on ``block``: ``[bx, by, bz, settings.n_features]`` float64.

    COLLECTIVE over ``comm``. lammps: each rank passes its own block of
    ``Decomposition(grid.shape, comm.size)``; native: any block (purely local work).
    atoms: ase.Atoms (Å) in the grid's cell. check=False skips :func:`check_atoms`
    (for callers that already checked the same atoms, e.g. once per slab).
    """
    with comm.collective():
        if backend not in BACKENDS:
            raise MlscaleError(f"unknown descriptor backend {backend!r}; choose one of "
                               f"{', '.join(BACKENDS)}")
        if check:
            check_atoms(atoms, settings.species)
        module = _backend(backend)
    return module.compute_block(atoms, grid, block, settings, comm)


def _backend(name: str):
    try:
        return importlib.import_module(f"{__name__}.{name}")
    except ModuleNotFoundError as error:
        if error.name not in (f"{__name__}.{name}", name):
            raise
        raise MlscaleError(f"descriptor backend {name!r} is not available "
                           f"(module {error.name} not found)") from None
