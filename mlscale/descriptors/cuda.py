"""Native bispectrum descriptors on this rank's CUDA GPU (numba.cuda), float64.

The numbers of :func:`mlscale.descriptors.native.compute_block` (the same atom
images, cell-list bins, Clebsch–Gordan tables and float64 arithmetic, summed in
another order: equal to round-off), computed by ``_cuda_kernel`` with one thread per
grid point. ``numba.cuda`` is imported on the first call, never by a CPU run.
With ``NUMBA_ENABLE_CUDASIM=1`` set before numba is imported, the same kernel runs in
numba's CUDA simulator on the CPU (slowly: the tests use a few dozen points).
"""

from __future__ import annotations

from functools import cache

import numpy as np

from ..config import BispectrumSettings
from ..errors import MlscaleError
from ..grid import Block, Grid
from ._native_tables import tables
from .adjoint import _ImageCells
from .native import _check_settings, _species_indices, checked_positions_and_block


def cuda_module():
    """``numba.cuda`` if a CUDA GPU (or numba's simulator) can be used; MlscaleError
    saying why not otherwise."""
    try:
        from numba import cuda
    except ImportError as error:  # numba without its CUDA target (numba-cuda)
        raise MlscaleError(f"--device cuda needs numba's CUDA target: {error}") from None
    try:
        available = cuda.is_available()
    except Exception as error:  # noqa: BLE001 - a broken driver raises several types
        raise MlscaleError(f"--device cuda: the CUDA driver failed: {error}") from None
    if not available:
        raise MlscaleError("--device cuda: no CUDA GPU is available on this node (numba.cuda "
                           "finds no driver or no device); use --device cpu")
    return cuda


def compute_block(atoms, grid: Grid, block: Block, settings: BispectrumSettings,
                  on_device: bool = False):
    """Bispectrum descriptors of one block, ``[bx, by, bz, n_features]`` float64, on the
    current CUDA device.

    Arguments, checks and errors as :func:`mlscale.descriptors.native.compute_block`.
    on_device: return the numba device array (``__cuda_array_interface__``, for torch
    without a copy through the host) instead of a NumPy copy. Device memory: the
    output (8·n_features bytes per point), the atoms near the block and the tables.
    """
    cuda = cuda_module()
    from ._cuda_kernel import THREADS_PER_BLOCK, bispectrum_kernel

    _check_settings(settings)
    species_a = _species_indices(atoms, settings)
    pos_av, start, shape, grid_n = checked_positions_and_block(atoms, grid, block)
    nfeat = settings.n_features
    if block.size == 0:
        empty = np.zeros((*block.shape, nfeat))
        return cuda.to_device(empty) if on_device else empty
    cell_cv = np.ascontiguousarray(grid.cell_cv, dtype=float)
    rc_s = 2.0 * np.array(settings.radii) * settings.rcutfac
    images = _ImageCells(pos_av @ np.linalg.inv(cell_cv), species_a, cell_cv, rc_s,
                         start, shape, grid_n)
    out = cuda.device_array((block.size, nfeat), dtype=np.float64)
    kernel = bispectrum_kernel(settings.twojmax)
    blocks = (block.size + THREADS_PER_BLOCK - 1) // THREADS_PER_BLOCK
    # device copies up front: NumPy arguments would be copied back after the launch
    arrays = [cuda.to_device(np.ascontiguousarray(a)) for a in (
        start, shape, grid_n, cell_cv, images.pos_iv, images.species_i, rc_s,
        np.array(settings.weights, dtype=float), images.halo_c, images.reg_lo_c,
        images.bin_w_c, images.nbins_c, images.bin_ptr)]
    scalars = (float(settings.rfac0), float(settings.rmin0), int(settings.switchflag))
    kernel[blocks, THREADS_PER_BLOCK](*arrays[:8], *scalars, *arrays[8:],
                                      *device_tables(settings.twojmax), out)
    out = out.reshape(*block.shape, nfeat)
    return out if on_device else out.copy_to_host()


@cache
def device_tables(twojmax: int) -> tuple:
    """The CPU kernel's tables for ``twojmax`` as device arrays (indices int32), copied
    once per process: ublock, rootpq, entry_u, entry_w, entry_b, prod_ptr, prod_c,
    prod_u1, prod_u2."""
    from numba import cuda

    t = tables(twojmax)
    index = (t.ublock, t.entry_u, t.entry_b, t.prod_ptr, t.prod_u1, t.prod_u2)
    if max(int(a.max()) for a in index) >= 2**31:
        raise MlscaleError(f"twojmax {twojmax}: the tables exceed int32 indices")
    i32 = {id(a): a.astype(np.int32) for a in index}
    return tuple(cuda.to_device(np.ascontiguousarray(i32.get(id(a), a)))
                 for a in (t.ublock, t.rootpq, t.entry_u, t.entry_w, t.entry_b, t.prod_ptr,
                           t.prod_c, t.prod_u1, t.prod_u2))

