"""Hartree energy and potential of a periodic density (Poisson equation in G space).

Atomic units (Hartree, Bohr, e = 1). The G = 0 term is dropped (neutralising
background); only G inside the sphere |G|² <= ecut count, as in Quantum ESPRESSO.
"""

from __future__ import annotations

import numpy as np

from .fft import DistributedFFT


def hartree_energy_potential(n_q: np.ndarray, fft: DistributedFFT,
                             g2_max: float) -> tuple[float, np.ndarray]:
    """E_H = Ω/2 Σ_G 4π|n(G)|²/G² (Hartree, all ranks) and v_H(G) = 4π n(G)/G².

    n_q: density in G space (electrons/Bohr³, QE normalisation); fft works in Bohr.
    """
    g2_q = fft.g2_q
    keep_q = (g2_q > 1e-12) & (g2_q <= g2_max)
    v_q = np.zeros_like(n_q)
    v_q[keep_q] = 4 * np.pi * n_q[keep_q] / g2_q[keep_q]
    energy = 0.5 * fft.grid.volume * fft.sum_q(np.conj(n_q) * v_q)
    return energy, v_q


def hartree_energy(n_q: np.ndarray, fft: DistributedFFT, g2_max: float) -> float:
    """E_H of :func:`hartree_energy_potential` (Hartree, all ranks) without v_H: in pieces of
    the spectral points (:meth:`DistributedFFT.chunks_q`), so that it holds no array of the
    grid's size. ∫ n v_H dr = 2 E_H (Parseval), so the double counting needs no v_H either.
    """
    total = 0.0
    for index in fft.chunks_q():
        g_x, g_y, g_z = fft.g_chunk(index)
        g2 = g_x**2 + g_y**2 + g_z**2
        keep = (g2 > 1e-12) & (g2 <= g2_max)
        n = np.broadcast_to(n_q[index], keep.shape)[keep]
        v = 4 * np.pi * n / np.broadcast_to(g2, keep.shape)[keep]
        weight = np.broadcast_to(fft.weight_chunk(index), keep.shape)[keep]
        total += float(np.sum(weight * np.real(np.conj(n) * v)))
    return 0.5 * fft.grid.volume * fft.comm.sum(total)
