"""Bispectrum adjoint: forces through the native descriptors, never storing ∂B/∂R.

For per-point coefficients β_pf (e.g. ∂E/∂B from the network's backward pass), the
block's share of

    F_a = -Σ_p Σ_f β_pf ∂B_pf/∂R_a

on every atom a, summed over its periodic images. SNAP's adjoint (LAMMPS
``compute_yi``/``compute_deidrj``) with the grid point as the centre: per point, Y =
Σ_f β_f ∂B_f/∂U_total, then for every neighbour image Y·∂U/∂d with d = point - atom
(see ``_adjoint_kernel``). Same neighbours, cutoffs, weights, switching function and
rmin0 as :func:`mlscale.descriptors.native.compute_block`, of which this is the exact
derivative (points closer than 1e-10 Å to an atom skip it in both).
"""

from __future__ import annotations

import numba
import numpy as np

from ..config import BispectrumSettings
from ..errors import MlscaleError
from ..grid import Block, DistributedGrid, Grid
from ..progress import compile_note
from ._adjoint_kernel import BATCH, adjoint_points
from ._native_tables import tables
from .native import _check_settings, _images_near, _species_indices, checked_positions_and_block


def bispectrum_forces(atoms, grid: Grid | DistributedGrid, block: Block | None,
                      settings: BispectrumSettings, beta_pf: np.ndarray) -> np.ndarray:
    """This block's bispectrum forces ``forces_av [len(atoms), 3]`` in (units of β)/Å.

    atoms, grid, block, settings: as :func:`mlscale.descriptors.native.compute_block`
    (``grid`` may also be a :class:`DistributedGrid`, then ``block=None`` means its rank's
    block). beta_pf: coefficients per point of the block and feature, ``[points,
    n_features]`` in the block's C order (or ``[bx, by, bz, n_features]``). Purely local;
    the sum over the blocks of a decomposition is the whole grid's force, each periodic
    image and each atom seen from several blocks counted once.
    """
    if isinstance(grid, DistributedGrid):
        block = grid.block if block is None else block
        grid = grid.grid
    elif block is None:
        raise MlscaleError("bispectrum_forces needs a block (or a DistributedGrid)")
    _check_settings(settings)
    beta_pf = _check_beta(beta_pf, block, settings)
    species_a = _species_indices(atoms, settings)
    pos_av, start, shape, grid_n = checked_positions_and_block(atoms, grid, block)
    cell_cv = np.ascontiguousarray(grid.cell_cv, dtype=float)
    forces_av = np.zeros((len(atoms), 3))
    if block.size == 0 or len(atoms) == 0:
        return forces_av
    rc_s = 2.0 * np.array(settings.radii) * settings.rcutfac
    images = _ImageCells(pos_av @ np.linalg.inv(cell_cv), species_a, cell_cv, rc_s,
                         start, shape, grid_n)
    t = tables(settings.twojmax)
    # a few chunks (contiguous batch ranges, one accumulator each) per thread: balance
    nchunks = max(1, min(4 * numba.get_num_threads(), (block.size + BATCH - 1) // BATCH))
    compile_note(adjoint_points, "bispectrum force")
    force_tiv = adjoint_points(
        start, shape, grid_n, cell_cv, images.pos_iv, images.species_i, rc_s[images.species_i],
        rc_s, np.array(settings.weights), float(settings.rfac0), float(settings.rmin0),
        int(settings.switchflag), images.halo_c, images.reg_lo_c, images.bin_w_c,
        images.nbins_c, images.bin_ptr, settings.twojmax, t.ublock, t.rootpq, t.entry_u,
        t.entry_w, t.entry_b, t.prod_ptr, t.prod_c, t.prod_u1, t.prod_u2, beta_pf, nchunks)
    np.add.at(forces_av, images.atom_i, force_tiv.sum(axis=0))
    return forces_av


def _check_beta(beta_pf, block: Block, settings: BispectrumSettings) -> np.ndarray:
    """β as a C-contiguous float64 ``[points, n_features]``; MlscaleError if misshapen."""
    beta = np.asarray(beta_pf, dtype=float)
    nfeat = settings.n_features
    if beta.shape not in ((block.size, nfeat), (*block.shape, nfeat)):
        raise MlscaleError(f"beta_pf has shape {beta.shape}, expected ({block.size}, {nfeat}) "
                           f"or {(*block.shape, nfeat)} for block {block.start}..{block.stop}")
    if not np.all(np.isfinite(beta)):
        raise MlscaleError("beta_pf contains NaN or infinity")
    return np.ascontiguousarray(beta.reshape(block.size, nfeat))


class _ImageCells:
    """The atom images within the cutoff of the block's box, sorted into cell-list bins.

    The same region, bins and order as :func:`mlscale.descriptors.native.compute_block`;
    atom_i maps each image (Å: pos_iv) back to its atom.
    """

    def __init__(self, frac_ac, species_a, cell_cv, rc_s, start, shape, grid_n):
        self.halo_c = rc_s.max() * np.linalg.norm(np.linalg.inv(cell_cv), axis=0)
        lo_c = start / grid_n
        hi_c = (start + shape - 1) / grid_n
        frac_ic, atom_i = _images_near(frac_ac, np.arange(len(frac_ac)),
                                       lo_c - self.halo_c, hi_c + self.halo_c)
        self.bin_w_c = self.halo_c / 2.0
        self.reg_lo_c = lo_c - self.halo_c
        self.nbins_c = np.maximum(
            np.ceil((hi_c + self.halo_c - self.reg_lo_c) / self.bin_w_c).astype(np.int64), 1)
        bin_ic = np.clip(np.floor((frac_ic - self.reg_lo_c) / self.bin_w_c).astype(np.int64),
                         0, self.nbins_c - 1)
        nbins = int(np.prod(self.nbins_c))
        bin_i = (bin_ic[:, 0] * self.nbins_c[1] + bin_ic[:, 1]) * self.nbins_c[2] + bin_ic[:, 2]
        order = np.argsort(bin_i, kind="stable")
        self.bin_ptr = np.zeros(nbins + 1, dtype=np.int64)
        np.cumsum(np.bincount(bin_i, minlength=nbins), out=self.bin_ptr[1:])
        self.pos_iv = np.ascontiguousarray(frac_ic[order] @ cell_cv)
        self.atom_i = atom_i[order]
        self.species_i = np.ascontiguousarray(species_a[self.atom_i])
