"""Compile and cache the numba kernels ahead of the first run: ``python -m mlscale.warm``.

The descriptor kernel and the bispectrum-force kernel are compiled by numba on first use
(``cache=True``: ~30 s each on one core, stored beside the sources in ``__pycache__``, or
in ``NUMBA_CACHE_DIR``); ``jobs/install.sh`` runs this once so that a user's first
``mlscale predict`` does not pay it. The kernels are compiled for their argument types,
not for a twojmax, so a tiny cell at twojmax 2 warms them for every model.
"""
from __future__ import annotations

import sys
import time

import numpy as np


def warm() -> float:
    """Run both kernels on a two-atom cell and a 2×2×2 grid; returns the seconds taken."""
    from ase import Atoms

    from .config import BispectrumSettings
    from .descriptors.adjoint import bispectrum_forces
    from .descriptors.native import compute_block
    from .grid import Block, Grid

    start = time.perf_counter()
    atoms = Atoms("Al2", positions=[[0.1, 0.2, 0.3], [2.0, 2.1, 1.9]], cell=[4.0] * 3,
                  pbc=True)
    grid = Grid(np.array(atoms.cell[:]), (2, 2, 2))
    block = Block((0, 0, 0), (2, 2, 2))
    settings = BispectrumSettings(twojmax=2, species=("Al",))
    descriptors = compute_block(atoms, grid, block, settings)
    bispectrum_forces(atoms, grid, block, settings, np.ones_like(descriptors))
    return time.perf_counter() - start


def main() -> int:
    seconds = warm()
    print(f"mlscale: numba kernels compiled and cached ({seconds:.1f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
