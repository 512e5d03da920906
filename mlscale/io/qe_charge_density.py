"""Quantum ESPRESSO's ``PREFIX.save/charge-density.dat``: ρ(G) on pw.x's G sphere.

The file (QE 6.7, ``Modules/io_base.f90`` ``write_rhog``, Fortran unformatted, not HDF5
in the Debian build) holds four kinds of records:

1. ``gamma_only`` (logical, 4 bytes), ``ngm_g``, ``nspin`` (int32);
2. ``b1, b2, b3``: the reciprocal lattice vectors in 1/Bohr (2π included), 9 float64;
3. the Miller indices, int32 ``[ngm_g, 3]`` (Fortran ``mill(3, ngm_g)``);
4. per spin component, ρ(G) as ``ngm_g`` complex128, in electrons/Bohr³ with QE's
   normalisation ρ(G) = (1/N) Σ_r ρ(r) e^{−iG·r} (N grid points), so ρ(0) = N_el/Ω.

pw.x reads ρ(G) in its *own* global G order for the cell, cutoff and FFT grid and does
not look at the Miller indices: :func:`qe_miller_indices` reproduces that order
(``ggen``: loop x, then y, then z over |m_i| <= (n_i − 1)//2; keep |G|² <= ecutrho;
sort by |G|² in units of (2π/alat)² with a tolerance of 1e-8, ties in generation order).
pw.x renormalises the read charge to the electron count.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike
from scipy.io import FortranFile

from ..errors import MlscaleError
from ..units import BOHR_ANGSTROM
from .atomic import atomic_path

SORT_TOLERANCE = 1e-8  # QE's eps8, on |G|² in (2π/alat)²


@dataclass(frozen=True)
class ChargeDensityG:
    """The contents of a charge-density.dat file.

    b_cv: reciprocal vectors b1, b2, b3 (rows) in 1/Bohr, 2π included;
    mill_qc: Miller indices [ngm_g, 3]; rho_sq: ρ(G) [nspin, ngm_g], electrons/Bohr³.
    """

    gamma_only: bool
    b_cv: np.ndarray
    mill_qc: np.ndarray
    rho_sq: np.ndarray


def reciprocal_vectors_bohr(cell_cv: ArrayLike) -> np.ndarray:
    """b1, b2, b3 (rows, 1/Bohr, 2π included) of a cell given in Å (rows a1, a2, a3)."""
    cell_bohr = np.asarray(cell_cv, dtype=float) / BOHR_ANGSTROM
    return 2 * np.pi * np.linalg.inv(cell_bohr).T


def qe_miller_indices(cell_cv: ArrayLike, shape: tuple[int, int, int], ecutrho_Ry: float,
                      gamma_only: bool = False, alat_bohr: float | None = None) -> np.ndarray:
    """Miller indices [ngm_g, 3] of pw.x's G vectors in pw.x's global order.

    cell_cv: cell in Å; shape: the dense FFT grid (nr1, nr2, nr3); ecutrho_Ry: the density
    cutoff (|G|² <= ecutrho, G in 1/Bohr, Rydberg units). gamma_only: half the sphere
    (QE's i >= 0, then j >= 0 at i = 0, then k >= 0 at i = j = 0). alat_bohr sets the
    unit of the sort tolerance (default |a1|, QE's alat for ``ibrav = 0`` with
    ``CELL_PARAMETERS angstrom``); it matters only for |G|² closer than ~1e-8 (2π/alat)².
    """
    cell = np.asarray(cell_cv, dtype=float)
    alat = np.linalg.norm(cell[0]) / BOHR_ANGSTROM if alat_bohr is None else alat_bohr
    tpiba2 = (2 * np.pi / alat) ** 2
    b_cv = reciprocal_vectors_bohr(cell)
    ni, nj, nk = ((int(n) - 1) // 2 for n in shape)
    m_qc = np.stack(np.meshgrid(np.arange(-ni, ni + 1), np.arange(-nj, nj + 1),
                                np.arange(-nk, nk + 1), indexing="ij"), axis=-1).reshape(-1, 3)
    if gamma_only:
        i, j, k = m_qc.T
        m_qc = m_qc[(i > 0) | ((i == 0) & (j > 0)) | ((i == 0) & (j == 0) & (k >= 0))]
    g2_q = np.sum((m_qc @ b_cv) ** 2, axis=1) / tpiba2  # in (2π/alat)², as QE's tt
    keep = g2_q <= ecutrho_Ry / tpiba2
    m_qc, g2_q = m_qc[keep], g2_q[keep]
    g2_q[g2_q <= SORT_TOLERANCE] = 0.0
    return m_qc[_sort_with_tolerance(g2_q, SORT_TOLERANCE)].astype(np.int32)


def _sort_with_tolerance(values: np.ndarray, tolerance: float) -> np.ndarray:
    """The permutation sorting ``values``, values closer than ``tolerance`` to their
    sorted neighbour counted equal and kept in their original order (QE's hpsort_eps)."""
    order = np.argsort(values, kind="stable")
    group = np.concatenate([[0], np.cumsum(np.diff(values[order]) >= tolerance)])
    return order[np.lexsort((order, group))]


def rho_g_from_density(density_g: np.ndarray, mill_qc: np.ndarray) -> np.ndarray:
    """ρ(G) in electrons/Bohr³ at the Miller indices ``mill_qc`` from the whole-grid
    density ``density_g`` [nx, ny, nz] in electrons/Å³ (point (i,j,k) at (i/nx, j/ny,
    k/nz)): QE's forward FFT normalisation, (1/N) Σ_r n(r) e^{−iG·r}."""
    density_g = np.asarray(density_g, dtype=float) * BOHR_ANGSTROM**3
    n_g = np.fft.fftn(density_g) / density_g.size
    shape = np.array(density_g.shape)
    i, j, k = (np.asarray(mill_qc) % shape).T
    return np.asarray(n_g[i, j, k], dtype=np.complex128)


def density_from_rho_g(rho_q: np.ndarray, mill_qc: np.ndarray, shape: tuple[int, int, int],
                       gamma_only: bool = False) -> np.ndarray:
    """The real-space density [nx, ny, nz] in electrons/Å³ of ρ(G) (electrons/Bohr³) on
    the G vectors ``mill_qc`` (the inverse of :func:`rho_g_from_density` on the sphere;
    gamma_only: the other half of the sphere is the complex conjugate)."""
    n_g = np.zeros(shape, dtype=np.complex128)
    index = tuple((np.asarray(mill_qc) % np.array(shape)).T)
    n_g[index] = rho_q
    if gamma_only:
        n_g[tuple((-np.asarray(mill_qc) % np.array(shape)).T)] = np.conj(rho_q)
    density = np.fft.ifftn(n_g).real * n_g.size
    return density / BOHR_ANGSTROM**3


def write_charge_density(path: str | os.PathLike[str], data: ChargeDensityG) -> None:
    """Write ``data`` as QE's charge-density.dat (Fortran unformatted), atomically."""
    rho_sq = np.atleast_2d(np.asarray(data.rho_sq, dtype=np.complex128))
    mill_qc = np.ascontiguousarray(data.mill_qc, dtype=np.int32)
    if mill_qc.ndim != 2 or mill_qc.shape[1] != 3 or rho_sq.shape[1] != len(mill_qc):
        raise MlscaleError(f"charge density: {len(mill_qc)} Miller indices of shape "
                           f"{mill_qc.shape} for ρ(G) of shape {rho_sq.shape}")
    with atomic_path(path) as tmp:
        with FortranFile(tmp, "w") as f:
            f.write_record(np.array([int(data.gamma_only), len(mill_qc), len(rho_sq)],
                                    dtype=np.int32))
            f.write_record(np.asarray(data.b_cv, dtype=np.float64).ravel())
            f.write_record(mill_qc)
            for rho_q in rho_sq:
                f.write_record(rho_q)


def read_charge_density(path: str | os.PathLike[str]) -> ChargeDensityG:
    """Read QE's charge-density.dat (Fortran unformatted, as pw.x 6.x writes it)."""
    try:
        with FortranFile(path, "r") as f:
            gamma_only, ngm, nspin = (int(x) for x in f.read_ints(np.int32))
            b_cv = f.read_reals(np.float64).reshape(3, 3)
            mill_qc = f.read_ints(np.int32).reshape(ngm, 3)
            rho_sq = np.stack([f.read_record(np.complex128) for _ in range(nspin)])
    except FileNotFoundError:
        raise MlscaleError(f"file not found: {path}") from None
    except (OSError, ValueError, TypeError) as error:
        raise MlscaleError(f"{path} is not a QE charge-density.dat file (Fortran "
                           f"unformatted; an HDF5 build writes charge-density.hdf5): "
                           f"{error}") from None
    if rho_sq.shape != (nspin, ngm):
        raise MlscaleError(f"{path}: ρ(G) records of shape {rho_sq.shape}, header says "
                           f"{nspin} x {ngm}")
    return ChargeDensityG(bool(gamma_only), b_cv, mill_qc, rho_sq)
