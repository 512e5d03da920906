"""What one rank of a prediction holds: its block of the grid and the atoms near it."""

from __future__ import annotations

import numpy as np

from .grid import Block


def halo_c(cell_cv: np.ndarray, cutoff: float) -> np.ndarray:
    """Fractional half-widths of a sphere of radius ``cutoff`` (Å) along the cell axes."""
    return cutoff * np.linalg.norm(np.linalg.inv(np.asarray(cell_cv, dtype=float)), axis=0)


def halo_atoms(frac_ac: np.ndarray, grid_shape, block: Block, halo: np.ndarray) -> np.ndarray:
    """Indices of the atoms with a periodic image inside the block's box widened by ``halo``.

    frac_ac: fractional positions [atoms, 3]; halo: fractional half-widths (:func:`halo_c`).
    These are the only atoms whose images can lie within the cutoff of the block's
    points (the box the native descriptor kernel searches), so they are all a rank needs.
    """
    frac_ac = np.asarray(frac_ac, dtype=float)
    frac_ac = frac_ac - np.floor(frac_ac)
    n_c = np.asarray(grid_shape, dtype=float)
    lo_c = np.asarray(block.start) / n_c - halo - 1e-9
    hi_c = (np.asarray(block.stop) - 1) / n_c + halo + 1e-9
    # an image f + k (k integer) lies in [lo, hi] on an axis iff floor(hi - f) >= ceil(lo - f)
    inside_ac = np.floor(hi_c - frac_ac) >= np.ceil(lo_c - frac_ac)
    return np.flatnonzero(inside_ac.all(axis=1))
