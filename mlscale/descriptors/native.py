"""Native bispectrum descriptors: LAMMPS ``compute sna/grid`` rebuilt as a numba kernel.

Same numbers as LAMMPS (float64, to round-off) for any twojmax, several species with
their own radius and weight, orthorhombic and triclinic cells, cells smaller than the
cutoff and grid points on atoms, but vectorised across grid points (see
``_native_kernel``) and several times faster per core.

What is computed, per grid point x (Å) and for every atom image at distance
``1e-20 < r² < rc_s²`` with ``rc_s = 2·radius_s·rcutfac``: the Wigner U of the
displacement ``x - atom`` (θ0 = rfac0·π·(r−rmin0)/(rc_s−rmin0)), weighted by the
species weight and the switching function ½[cos(π(r−rmin0)/(rc_s−rmin0)) + 1]
(switchflag 1), summed with a self term 1 on the diagonal; then the bispectrum
components (j1, j2, j ≥ j1) in LAMMPS order. Threads: numba's thread count
(``NUMBA_NUM_THREADS``; set it to 1 when running one MPI rank per core).
"""

from __future__ import annotations

import itertools

import numpy as np

from ..config import BispectrumSettings
from ..errors import MlscaleError
from ..grid import Block, Grid
from ..progress import compile_note
from ._native_kernel import bispectrum_points
from ._native_tables import tables


def compute_block(atoms, grid: Grid, block: Block, settings: BispectrumSettings) -> np.ndarray:
    """Bispectrum descriptors of one block of grid points, ``[bx, by, bz, n_features]``.

    atoms: ase.Atoms (positions in Å; the cell is taken from ``grid`` and treated as
    periodic along all three axes). Purely local: no collectives. Memory: the output, the atoms
    within the cutoff of the block, and a fixed working set per thread.
    """
    _check_settings(settings)
    species_a = _species_indices(atoms, settings)
    pos_av, start, shape, grid_n = checked_positions_and_block(atoms, grid, block)
    cell_cv = grid.cell_cv
    out = np.zeros((block.size, settings.n_features))
    if block.size == 0:
        return out.reshape(*block.shape, settings.n_features)

    rc_s = 2.0 * np.array(settings.radii) * settings.rcutfac
    inv_vc = np.linalg.inv(cell_cv)
    halo_c = rc_s.max() * np.linalg.norm(inv_vc, axis=0)   # cutoff in fractional units
    lo_c = start / grid_n
    hi_c = (start + shape - 1) / grid_n
    img_pos, img_sp = _images_near(pos_av @ inv_vc, species_a, lo_c - halo_c, hi_c + halo_c)
    bin_w = halo_c / 2.0
    reg_lo = lo_c - halo_c
    nbins = np.maximum(np.ceil((hi_c + halo_c - reg_lo) / bin_w).astype(np.int64), 1)
    bin_c = np.clip(np.floor((img_pos - reg_lo) / bin_w).astype(np.int64), 0, nbins - 1)
    bin_index = (bin_c[:, 0] * nbins[1] + bin_c[:, 1]) * nbins[2] + bin_c[:, 2]
    order = np.argsort(bin_index, kind="stable")
    bin_ptr = np.zeros(int(np.prod(nbins)) + 1, dtype=np.int64)
    np.cumsum(np.bincount(bin_index, minlength=int(np.prod(nbins))), out=bin_ptr[1:])

    t = tables(settings.twojmax)
    compile_note(bispectrum_points, "descriptor")
    bispectrum_points(
        start, shape, grid_n, np.ascontiguousarray(cell_cv),
        np.ascontiguousarray(img_pos[order] @ cell_cv), img_sp[order],
        rc_s, np.array(settings.weights), float(settings.rfac0), float(settings.rmin0),
        int(settings.switchflag), halo_c, reg_lo, bin_w, nbins, bin_ptr,
        settings.twojmax, t.ublock, t.rootpq, t.entry_u, t.entry_w, t.entry_b,
        t.prod_ptr, t.prod_c, t.prod_u1, t.prod_u2, out)
    return out.reshape(*block.shape, settings.n_features)


def checked_positions_and_block(atoms, grid: Grid, block: Block
                                ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Atom positions (Å) and the block's start, shape and the grid's shape as int64
    arrays; MlscaleError for non-finite positions, another cell, or a block outside."""
    pos_av = np.asarray(atoms.get_positions(), dtype=float)
    if not np.all(np.isfinite(pos_av)):
        raise MlscaleError("atom positions contain NaN or infinity")
    atoms_cell = np.asarray(atoms.get_cell(), dtype=float)
    if np.any(atoms_cell) and not np.allclose(atoms_cell, grid.cell_cv, rtol=0, atol=1e-6):
        raise MlscaleError("the atoms' cell differs from the grid's cell")
    start = np.array(block.start, dtype=np.int64)
    shape = np.array(block.shape, dtype=np.int64)
    grid_n = np.array(grid.shape, dtype=np.int64)
    if np.any(start < 0) or np.any(start + shape > grid_n) or np.any(shape < 0):
        raise MlscaleError(f"block {block.start}..{block.stop} is outside the grid {grid.shape}")
    return pos_av, start, shape, grid_n


def _check_settings(settings: BispectrumSettings):
    if settings.bzeroflag != 0 or settings.quadraticflag != 0:
        raise MlscaleError("the native descriptor backend supports only bzeroflag 0 and "
                           "quadraticflag 0 (MALA's defaults); use --descriptors lammps")
    if settings.switchflag not in (0, 1):
        raise MlscaleError(f"switchflag must be 0 or 1, got {settings.switchflag}")
    if not settings.rcutfac > 0 or min(settings.radii) <= 0:
        raise MlscaleError("rcutfac and all radii must be positive")
    if not 0 < settings.rfac0 <= 1:
        raise MlscaleError(f"rfac0 must be in (0, 1], got {settings.rfac0}")
    if not 0 <= settings.rmin0 < 2 * min(settings.radii) * settings.rcutfac:
        raise MlscaleError("rmin0 must be >= 0 and below the smallest cutoff")


def _species_indices(atoms, settings: BispectrumSettings) -> np.ndarray:
    """Species index (settings order) of every atom; unknown species are an error."""
    index = {name: i for i, name in enumerate(settings.species)}
    symbols = atoms.get_chemical_symbols()
    unknown = sorted(set(symbols) - set(index))
    if unknown:
        raise MlscaleError(f"species {', '.join(unknown)} not in the bispectrum settings "
                           f"({', '.join(settings.species)})")
    return np.array([index[s] for s in symbols], dtype=np.int64)


def _images_near(frac_ac: np.ndarray, species_a: np.ndarray, lo_c: np.ndarray,
                 hi_c: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Fractional positions and species of all periodic images inside [lo_c, hi_c]."""
    frac_ac = frac_ac - np.floor(frac_ac)
    ranges = [range(int(np.floor(lo)) - 1, int(np.floor(hi)) + 1) for lo, hi in zip(lo_c, hi_c)]
    pos, sp = [], []
    for shift in itertools.product(*ranges):
        moved = frac_ac + np.array(shift, dtype=float)
        inside = np.all((moved >= lo_c) & (moved <= hi_c), axis=1)
        pos.append(moved[inside])
        sp.append(species_a[inside])
    return np.concatenate(pos), np.concatenate(sp)
