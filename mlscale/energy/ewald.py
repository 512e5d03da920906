"""Ewald energy of point ions in a neutralising background, O(N log N) in the atoms.

E = ½ Σ' q_i q_j erfc(η r)/r  (real space, cell list, pairs split over ranks)
  + 2π/Ω Σ_{G≠0} e^{-G²/4η²}/G² |S(G)|²  (smooth particle-mesh: B-spline charges
    on the distributed real-space mesh, distributed FFT, division by the B-spline
    transform)
  - η/√π Σ q²  - π (Σq)² / (2Ω η²).

η, the real-space cutoff and the reciprocal cutoff follow from the mesh and the
B-spline order so that every neglected term is below ~1e-14 of the energy scale.
Atomic units: Bohr, Hartree, charges in e.
"""

from __future__ import annotations

import math

import numba
import numpy as np
from scipy.spatial import cKDTree
from scipy.special import erfc

from ..grid import Block
from ..parallel import Comm
from .fft import DistributedFFT

ORDER = 16  # B-spline order (even)
ALIAS = 1e-14  # bound on the aliasing factor (m/(K-m))^ORDER
TAIL = 1e-14  # e^{-κ²}: size of the neglected real- and reciprocal-space tails
CHUNK = 4096  # atoms per neighbour-search batch of the forces (mlscale.forces.ewald)
REAL_SPACE_ATOMS = 8  # atoms per batch of the energy's pair sum: its pairs (~600 per Al
# atom, ~70 bytes each with their temporaries) stay ~0.4 MiB, not 11 bytes per grid point


def ewald_energy(pos_av: np.ndarray, charge_a: np.ndarray, fft: DistributedFFT) -> float:
    """Ewald energy (Hartree) of charges ``charge_a`` (e) at ``pos_av`` (Bohr) in fft's cell."""
    cell_cv = fft.grid.cell_cv
    volume = fft.grid.volume
    charge_a = np.asarray(charge_a, dtype=float)
    kappa = math.sqrt(math.log(1 / TAIL))
    eta, g_max = _splitting(fft, kappa)
    frac_ac = np.linalg.solve(cell_cv.T, np.asarray(pos_av, dtype=float).T).T % 1.0

    # reciprocal space: particle mesh, in pieces of the spectral points (in the FFT's work
    # array: no array of the grid's size beyond it and the spread charges)
    pencil, real_work = fft.real_work  # the charges spread onto the FFT's own input
    _spread(frac_ac, charge_a, fft, pencil, real_work)
    s_work = fft.forward_work()
    total = 0.0
    for index in fft.chunks_q():
        s = s_work[index] * fft.grid.npoints
        for axis, m in enumerate(fft.m_chunk(index)):
            s /= np.sinc(m / fft.grid.shape[axis]) ** ORDER
        g_x, g_y, g_z = fft.g_chunk(index)
        g2 = g_x**2 + g_y**2 + g_z**2
        keep = (g2 > 1e-12) & (g2 <= g_max**2)
        term = np.exp(-g2[keep] / (4 * eta**2)) / g2[keep] * np.abs(s[keep]) ** 2
        total += float(np.sum(np.broadcast_to(fft.weight_chunk(index), keep.shape)[keep] * term))
    reciprocal = 2 * np.pi / volume * fft.comm.sum(total)

    # real space: this rank's share of the atoms against all periodic images
    real = fft.comm.sum(_real_space(frac_ac, charge_a, cell_cv, eta, kappa / eta, fft.comm))

    self_term = -eta / math.sqrt(math.pi) * float(np.sum(charge_a**2))
    background = -math.pi * float(np.sum(charge_a)) ** 2 / (2 * volume * eta**2)
    return reciprocal + real + self_term + background


def _splitting(fft: DistributedFFT, kappa: float) -> tuple[float, float]:
    """η and the reciprocal cutoff |G| the mesh resolves to the aliasing bound."""
    ratio = ALIAS ** (1 / ORDER)  # largest allowed m/(K-m)
    lengths = np.linalg.norm(fft.grid.cell_cv, axis=1)
    g_max = float(np.min(2 * np.pi * np.array(fft.grid.shape) * ratio / (1 + ratio) / lengths))
    return g_max / (2 * kappa), g_max


def bspline_weights(x_a: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Centred cardinal B-spline weights: φ(x - k) for k = k0 + j, j < ORDER.

    Returns k0_a (int) and w_aj; Σ_j w_aj = 1.
    """
    floor_a = np.floor(x_a)
    f_a = x_a - floor_a
    n_j = np.arange(ORDER)[:, None]
    m_ja = np.zeros((ORDER, len(x_a)))  # m_ja[n] = M_k(f + n), cardinal B-spline of order k
    m_ja[0], m_ja[1] = f_a, 1 - f_a
    for k in range(2, ORDER):
        shifted = np.zeros_like(m_ja)
        shifted[1:] = m_ja[:-1]
        m_ja = ((f_a + n_j) * m_ja + (k + 1 - f_a - n_j) * shifted) / k
    return floor_a.astype(np.int64) - ORDER // 2 + 1, m_ja[::-1].T


def _spread(frac_ac: np.ndarray, charge_a: np.ndarray, fft: DistributedFFT,
            block: Block | None = None, out: np.ndarray | None = None) -> np.ndarray:
    """Charges spread with B-splines onto this rank's block of the mesh (or onto ``block``
    of it, into ``out``)."""
    block = fft.block if block is None else block
    shape = np.array(fft.grid.shape)
    local: list[np.ndarray] = []
    weight: list[np.ndarray] = []
    for axis in range(3):
        k0_a, w_aj = bspline_weights(frac_ac[:, axis] * shape[axis])
        index_aj = (k0_a[:, None] + np.arange(ORDER)) % shape[axis] - block.start[axis]
        inside_aj = (index_aj >= 0) & (index_aj < block.shape[axis])
        local.append(np.where(inside_aj, index_aj, -1))
        weight.append(w_aj)
    touches_a = np.all([(loc >= 0).any(axis=1) for loc in local], axis=0)
    atoms = np.nonzero(touches_a & (charge_a != 0))[0]
    if out is None:
        q_b = np.zeros(block.shape)
    else:
        q_b = out
        q_b[...] = 0.0
    (ix_aj, iy_aj, iz_aj), (wx_aj, wy_aj, wz_aj) = local, weight
    _add_stencils(charge_a[atoms], ix_aj[atoms], iy_aj[atoms], iz_aj[atoms],
                  wx_aj[atoms], wy_aj[atoms], wz_aj[atoms], q_b)
    return q_b


@numba.njit(cache=True)
def _add_stencils(q_a: np.ndarray, ix_aj: np.ndarray, iy_aj: np.ndarray, iz_aj: np.ndarray,
                  wx_aj: np.ndarray, wy_aj: np.ndarray, wz_aj: np.ndarray,
                  out: np.ndarray) -> None:
    """out[ix, iy, iz] += q wx wy wz over each atom's stencil (index -1: not in this block)."""
    for a in range(q_a.shape[0]):
        for i in range(ix_aj.shape[1]):
            x = ix_aj[a, i]
            if x < 0:
                continue
            wx = q_a[a] * wx_aj[a, i]
            for j in range(iy_aj.shape[1]):
                y = iy_aj[a, j]
                if y < 0:
                    continue
                wxy = wx * wy_aj[a, j]
                for k in range(iz_aj.shape[1]):
                    z = iz_aj[a, k]
                    if z >= 0:
                        out[x, y, z] += wxy * wz_aj[a, k]


def _real_space(frac_ac: np.ndarray, charge_a: np.ndarray, cell_cv: np.ndarray, eta: float,
                cutoff: float, comm: Comm) -> float:
    """½ Σ_{i in this rank's atoms} Σ_{j,R}' q_i q_j erfc(η r)/r over r < cutoff."""
    tree, image_charge = image_tree(frac_ac, charge_a, cell_cv, cutoff)
    natoms = len(charge_a)
    mine = np.arange(natoms * comm.rank // comm.size, natoms * (comm.rank + 1) // comm.size)
    pos_av = frac_ac @ cell_cv
    energy = 0.0
    for start in range(0, len(mine), REAL_SPACE_ATOMS):
        a = mine[start:start + REAL_SPACE_ATOMS]
        pairs = cKDTree(pos_av[a]).sparse_distance_matrix(tree, cutoff, output_type="ndarray")
        r = pairs["v"]
        keep = r > 1e-10
        r = r[keep]
        energy += 0.5 * float(np.sum(charge_a[a][pairs["i"][keep]] * image_charge[pairs["j"][keep]]
                                     * erfc(eta * r) / r))
    return energy


def image_tree(frac_ac: np.ndarray, charge_a: np.ndarray, cell_cv: np.ndarray, cutoff: float
               ) -> tuple[cKDTree, np.ndarray]:
    """A k-d tree of every periodic image within ``cutoff`` of the cell (positions in the
    units of ``cell_cv``) and the images' charges."""
    volume = abs(np.linalg.det(cell_cv))
    heights = volume / np.linalg.norm(np.cross(cell_cv[[1, 2, 0]], cell_cv[[2, 0, 1]]), axis=1)
    margin = cutoff / heights  # fractional padding per axis
    reach = np.ceil(margin).astype(int)
    pos_parts: list[np.ndarray] = []
    charge_parts: list[np.ndarray] = []
    for shift in np.ndindex(*(2 * reach + 1)):
        frac = frac_ac + (np.array(shift) - reach)
        keep = np.all((frac >= -margin) & (frac < 1 + margin), axis=1)
        pos_parts.append(frac[keep] @ cell_cv)
        charge_parts.append(charge_a[keep])
    return cKDTree(np.concatenate(pos_parts)), np.concatenate(charge_parts)
