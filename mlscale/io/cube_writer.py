"""Gaussian cube output of a distributed grid field (VESTA, VMD, Ovito), via ASE's writer.

The cube holds the whole grid, so rank 0 gathers every rank's block (the full field
must fit in rank 0's memory). Cube convention: atomic units, the density in
electrons/Bohr³; grid point (i, j, k) sits at ``i/N1 a1 + j/N2 a2 + k/N3 a3``, the
origin at 0, as in mlscale's grid.
"""
from __future__ import annotations

import os

import numpy as np
from ase import Atoms
from ase.io.cube import write_cube
from ase.units import Bohr

from ..grid import DistributedGrid
from .atomic import atomic_path


def gather_full_grid(local_b: np.ndarray, dgrid: DistributedGrid) -> np.ndarray | None:
    """The whole grid on rank 0 (None elsewhere) from every rank's block. Collective."""
    comm = dgrid.comm
    blocks = [dgrid.decomposition.block(r) for r in range(comm.size)]
    counts = [int(np.prod(b.shape)) for b in blocks]
    send = np.ascontiguousarray(local_b, dtype=np.float64).ravel()
    receive = np.empty(sum(counts), dtype=np.float64) if comm.rank == 0 else None
    comm.mpi.Gatherv(send, [receive, counts] if comm.rank == 0 else None, root=0)
    if receive is None:
        return None
    full = np.empty(dgrid.shape, dtype=np.float64)
    offsets = np.concatenate([[0], np.cumsum(counts)])
    for block, start, stop in zip(blocks, offsets[:-1], offsets[1:]):
        full[block.slices] = receive[start:stop].reshape(block.shape)
    return full


def write_density_cube(path: str | os.PathLike[str], atoms: Atoms, density_b: np.ndarray,
                       dgrid: DistributedGrid) -> None:
    """Write the density (this rank's block, electrons/Å³) as a cube file in
    electrons/Bohr³, atomically, on rank 0. Collective."""
    full = gather_full_grid(density_b, dgrid)
    if full is None:
        return
    with atomic_path(path) as tmp, open(tmp, "w") as f:
        write_cube(f, atoms, data=full * Bohr**3, origin=np.zeros(3),
                   comment="mlscale electron density, electrons/Bohr^3")
