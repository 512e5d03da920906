"""Ewald forces: the exact derivative of :func:`mlscale.energy.ewald.ewald_energy`.

Same splitting η, cutoffs and B-spline mesh as the energy:

- real space, E_r = ½ Σ' q_i q_j φ(r), φ = erfc(η r)/r:
  F_i = −Σ_{j,R} q_i q_j φ'(r) (R_i − R_j − R)/r, φ'(r) = −erfc(ηr)/r² − 2η/√π e^{−η²r²}/r;
- reciprocal space, E_k = 2π/Ω Σ_{G≠0} K(G) C(G)² |S̃(G)|² with S̃(G) = Σ_p Q_p e^{−iG·r_p}
  the transform of the B-spline charges Q_p = Σ_a q_a M(u_a,x − k_x) M(u_a,y − k_y)
  M(u_a,z − k_z) (u = fractional position × mesh size), K = e^{−G²/4η²}/G² and C the
  inverse B-spline transform: the potential φ_p = ∂E_k/∂Q_p = 4π/Ω Σ_G K C² S̃ e^{iG·r_p}
  on the mesh (one backward FFT), then ∂E_k/∂u_a = q_a Σ_p φ_p ∂(M M M)/∂u_a with
  M_n'(x) = M_{n−1}(x) − M_{n−1}(x − 1), gathered from this rank's block;
- the self and background terms do not depend on positions.

Atomic units (Bohr, Hartree) like the energy; per-atom arrays are the only reduction.
"""

from __future__ import annotations

import math

import numba
import numpy as np
from scipy.spatial import cKDTree
from scipy.special import erfc

from ..energy.ewald import CHUNK, ORDER, TAIL, _splitting, _spread, image_tree
from ..energy.fft import DistributedFFT


def ewald_forces(pos_av: np.ndarray, charge_a: np.ndarray, fft: DistributedFFT) -> np.ndarray:
    """−∂E_Ewald/∂R ``[atoms, 3]`` (Hartree/Bohr) for charges ``charge_a`` (e) at ``pos_av``
    (Bohr) in fft's cell, the same on all ranks. Collective."""
    cell_cv = fft.grid.cell_cv
    charge_a = np.asarray(charge_a, dtype=float)
    kappa = math.sqrt(math.log(1 / TAIL))
    eta, g_max = _splitting(fft, kappa)
    frac_ac = np.linalg.solve(cell_cv.T, np.asarray(pos_av, dtype=float).T).T % 1.0
    du_ac = _reciprocal_gradient(frac_ac, charge_a, fft, eta, g_max)  # ∂E/∂(frac · shape)
    inv_vc = np.linalg.inv(cell_cv)  # frac_c = Σ_v pos_v inv_vc[v, c]
    gradient_av = (du_ac * np.array(fft.grid.shape)) @ inv_vc.T
    gradient_av -= _real_space_forces(frac_ac, charge_a, cell_cv, eta, kappa / eta, fft.comm)
    return -fft.comm.sum(gradient_av)


def _reciprocal_gradient(frac_ac, charge_a, fft: DistributedFFT, eta: float,
                         g_max: float) -> np.ndarray:
    """This block's share of ∂E_k/∂u_ac, u = fractional position × mesh size (Hartree)."""
    s_q = fft.forward(_spread(frac_ac, charge_a, fft)) * fft.grid.npoints
    c_q = np.ones(s_q.shape)
    for axis, m in enumerate(fft.m_q3):
        c_q = c_q / np.sinc(m / fft.grid.shape[axis]) ** ORDER
    g2_q = fft.g2_q
    keep_q = (g2_q > 1e-12) & (g2_q <= g_max**2)
    k_q = np.zeros(g2_q.shape)
    k_q[keep_q] = np.exp(-g2_q[keep_q] / (4 * eta**2)) / g2_q[keep_q]
    phi_b = fft.backward(4 * np.pi / fft.grid.volume * k_q * c_q**2 * s_q)
    block = fft.block
    shape = np.array(fft.grid.shape)
    local: list[np.ndarray] = []
    weight: list[np.ndarray] = []
    slope: list[np.ndarray] = []
    for axis in range(3):
        k0_a, w_aj, dw_aj = bspline_weights_and_derivatives(frac_ac[:, axis] * shape[axis])
        index_aj = (k0_a[:, None] + np.arange(ORDER)) % shape[axis] - block.start[axis]
        inside_aj = (index_aj >= 0) & (index_aj < block.shape[axis])
        local.append(np.where(inside_aj, index_aj, -1))
        weight.append(w_aj)
        slope.append(dw_aj)
    du_ac = np.zeros((len(charge_a), 3))
    (ix_aj, iy_aj, iz_aj), (wx_aj, wy_aj, wz_aj), (dx_aj, dy_aj, dz_aj) = local, weight, slope
    _gather_stencils(charge_a, ix_aj, iy_aj, iz_aj, wx_aj, wy_aj, wz_aj, dx_aj, dy_aj, dz_aj,
                     phi_b, du_ac)
    return du_ac


def bspline_weights_and_derivatives(x_a: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The weights of :func:`mlscale.energy.ewald.bspline_weights` (k0_a, w_aj) and their
    derivatives dw_aj/dx: M_n'(y) = M_{n−1}(y) − M_{n−1}(y − 1)."""
    floor_a = np.floor(x_a)
    f_a = x_a - floor_a
    n_j = np.arange(ORDER)[:, None]
    m_ja = np.zeros((ORDER, len(x_a)))  # m_ja[n] = M_k(f + n)
    m_ja[0], m_ja[1] = f_a, 1 - f_a
    previous = m_ja
    for k in range(2, ORDER):
        previous = m_ja
        shifted = np.zeros_like(m_ja)
        shifted[1:] = m_ja[:-1]
        m_ja = ((f_a + n_j) * m_ja + (k + 1 - f_a - n_j) * shifted) / k
    shifted = np.zeros_like(previous)
    shifted[1:] = previous[:-1]
    dm_ja = previous - shifted  # d/dy M_n(f + n) = M_{n−1}(f + n) − M_{n−1}(f + n − 1)
    k0_a = floor_a.astype(np.int64) - ORDER // 2 + 1
    return k0_a, m_ja[::-1].T, dm_ja[::-1].T


@numba.njit(cache=True)
def _gather_stencils(q_a: np.ndarray, ix_aj: np.ndarray, iy_aj: np.ndarray, iz_aj: np.ndarray,
                     wx_aj: np.ndarray, wy_aj: np.ndarray, wz_aj: np.ndarray,
                     dx_aj: np.ndarray, dy_aj: np.ndarray, dz_aj: np.ndarray,
                     phi_b: np.ndarray, out_ac: np.ndarray) -> None:
    """out[a] += q_a Σ φ[x, y, z] (dwx wy wz, wx dwy wz, wx wy dwz) over the stencil points
    in this block (index −1: not in this block)."""
    for a in range(q_a.shape[0]):
        for i in range(ix_aj.shape[1]):
            x = ix_aj[a, i]
            if x < 0:
                continue
            for j in range(iy_aj.shape[1]):
                y = iy_aj[a, j]
                if y < 0:
                    continue
                for k in range(iz_aj.shape[1]):
                    z = iz_aj[a, k]
                    if z < 0:
                        continue
                    p = q_a[a] * phi_b[x, y, z]
                    out_ac[a, 0] += p * dx_aj[a, i] * wy_aj[a, j] * wz_aj[a, k]
                    out_ac[a, 1] += p * wx_aj[a, i] * dy_aj[a, j] * wz_aj[a, k]
                    out_ac[a, 2] += p * wx_aj[a, i] * wy_aj[a, j] * dz_aj[a, k]


def _real_space_forces(frac_ac, charge_a, cell_cv, eta, cutoff, comm) -> np.ndarray:
    """This rank's share of −∂E_r/∂R over r < cutoff (Hartree/Bohr), [atoms, 3]."""
    tree, image_charge = image_tree(frac_ac, charge_a, cell_cv, cutoff)
    natoms = len(charge_a)
    mine = np.arange(natoms * comm.rank // comm.size, natoms * (comm.rank + 1) // comm.size)
    pos_av = frac_ac @ cell_cv
    forces_av = np.zeros((natoms, 3))
    for start in range(0, len(mine), CHUNK):
        a = mine[start:start + CHUNK]
        pairs = cKDTree(pos_av[a]).sparse_distance_matrix(tree, cutoff, output_type="ndarray")
        keep = pairs["v"] > 1e-10
        i, j, r = pairs["i"][keep], pairs["j"][keep], pairs["v"][keep]
        dphi = -erfc(eta * r) / r**2 - 2 * eta / math.sqrt(math.pi) * np.exp(-(eta * r) ** 2) / r
        scale = -charge_a[a][i] * image_charge[j] * dphi / r
        np.add.at(forces_av, a[i], scale[:, None] * (pos_av[a][i] - tree.data[j]))
    return forces_av
