"""Functional derivatives of the density terms: δ/δn and δ/δn_core of E_H + E_xc − ∫ n v_Hxc.

With E_n[n, n_c] = E_H[n] + E_xc[n + n_c] − ∫ n (v_H[n] + v_xc[n + n_c]) (the part of the
total energy that :func:`mlscale.energy.density_energy_terms` computes from the
density; Ewald does not depend on n):

    δE_n/δn(r)   = −v_H[n](r) − (f_xc n)(r)
    δE_n/δn_c(r) =  v_xc(r)   − (f_xc n)(r)

where (f_xc n)(r) = d/dt v_xc[n + n_c + t n](r) at t = 0 is the XC kernel applied to n,
computed exactly from libxc's second derivatives: for LDA v2rho2·n; for GGA (e(ρ, σ),
σ = |∇ρ|²)

    f_xc n = v2rho2 n + v2rhosigma δσ − ∇·[2 (v2rhosigma n + v2sigma2 δσ) ∇ρ + 2 vsigma ∇n],
    δσ = 2 ∇ρ·∇n,

with the gradients and the divergence taken in reciprocal space inside the G sphere as
:mod:`mlscale.energy.xc` takes them, so that these are the derivatives of the discrete
energies mlscale reports. Distributed like :mod:`mlscale.energy`: each rank its block,
the distributed FFT. Atomic units inside; potentials returned in eV (δE/δn of an
energy in eV for a density in 1/Å³ is eV: ∂E/∂n_p = ΔV · δE/δn(r_p)).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from ase import Atoms
from pyscf.dft import libxc

from ..energy.core import core_density_q
from ..energy.fft import DistributedFFT
from ..energy.hartree import hartree_energy_potential
from ..energy.total import _check_inputs, _sphere
from ..energy.upf import Pseudopotential
from ..energy.xc import CHUNK, FUNCTIONALS, xc_energy_potential
from ..grid import DistributedGrid
from ..units import BOHR_ANGSTROM, HARTREE_EV


@dataclass
class DensityGradient:
    """δE_n/δn (``potential_b``) and δE_n/δn_c (``core_potential_b``, None without NLCC) on
    this rank's block, eV; and what the core-charge forces reuse: the FFT in Bohr, the G
    sphere (Bohr⁻²), the pseudopotentials per element and the functional's name."""

    potential_b: np.ndarray
    core_potential_b: np.ndarray | None
    fft: DistributedFFT
    g2_max: float
    pseudopotentials: dict[str, Pseudopotential]
    functional: str


def density_gradient(density_b: np.ndarray, dgrid: DistributedGrid, atoms: Atoms,
                     pseudopotentials: dict, ecutrho_Ry: float | None = None,
                     functional: str | None = None) -> DensityGradient:
    """δE_n/δn and δE_n/δn_c (eV) of the density terms at the valence density ``density_b``
    (1/Å³, this rank's block); arguments as :func:`mlscale.energy.density_energy_terms`.
    Collective."""
    with dgrid.comm.collective():
        pps, name = _check_inputs(density_b, dgrid, atoms, pseudopotentials, functional)
    fft = DistributedFFT(dgrid.with_cell(dgrid.cell_cv / BOHR_ANGSTROM))
    g2_max = _sphere(fft, ecutrho_Ry, dgrid.shape)
    n_b = density_b * BOHR_ANGSTROM**3
    n_q = fft.forward(n_b)
    v_h_b = fft.backward(hartree_energy_potential(n_q, fft, g2_max)[1])
    frac_ac = atoms.get_scaled_positions(wrap=True)
    core_q = core_density_q(fft, pps, atoms.get_chemical_symbols(), frac_ac, g2_max)
    if core_q is None:
        rho_b, rho_q = n_b, n_q
    else:
        rho_b, rho_q = n_b + fft.backward(core_q), n_q + core_q
    del core_q
    kernel_b = xc_kernel_times(rho_b, rho_q, n_b, n_q, fft, name, g2_max)
    potential_b = (-v_h_b - kernel_b) * HARTREE_EV
    core_b = None
    if any(pp.core_r is not None for pp in pps.values()):
        v_xc_b = xc_energy_potential(rho_b, rho_q, fft, name, g2_max)[1]
        core_b = (v_xc_b - kernel_b) * HARTREE_EV
    return DensityGradient(potential_b, core_b, fft, g2_max, pps, name)


def xc_kernel_times(rho_b: np.ndarray, rho_q: np.ndarray, n_b: np.ndarray, n_q: np.ndarray,
                    fft: DistributedFFT, functional: str, g2_max: float) -> np.ndarray:
    """(f_xc n)(r) = d/dt v_xc[ρ + t n] at t = 0 on this rank's block (Hartree).

    rho_b, rho_q: the density the functional sees (valence + core, electrons/Bohr³) in
    real and G space; n_b, n_q: the direction n, likewise. fft works in Bohr.
    """
    code, gga = FUNCTIONALS[functional]
    rho_p, n_p = rho_b.ravel(), n_b.ravel()
    sign_p = np.where(rho_p < 0, -1.0, 1.0)  # libxc sees |ρ| (mlscale.energy.xc)
    if not gga:
        return (_second_derivatives(code, rho_p[None, :])[0] * sign_p * n_p).reshape(n_b.shape)
    inside_q = fft.g2_q <= g2_max
    grad_rho_vp = np.array([fft.backward(1j * fft.g_q(v) * rho_q * inside_q).ravel()
                            for v in range(3)])
    grad_n_vp = np.array([fft.backward(1j * fft.g_q(v) * n_q * inside_q).ravel()
                          for v in range(3)])
    v2rho2, v2rhosigma, v2sigma2, vsigma = _second_derivatives(
        code, np.concatenate((rho_p[None, :], grad_rho_vp)))
    dsigma_p = 2 * np.einsum("vp,vp->p", grad_rho_vp, grad_n_vp)
    local_p = v2rho2 * sign_p * n_p + v2rhosigma * dsigma_p
    flux_p = 2 * (v2rhosigma * sign_p * n_p + v2sigma2 * dsigma_p)
    div_q = np.zeros_like(n_q)
    for v in range(3):
        h_b = (flux_p * grad_rho_vp[v] + 2 * vsigma * grad_n_vp[v]).reshape(n_b.shape)
        div_q += fft.g_q(v) * fft.forward(h_b)
    div_q *= 1j * inside_q
    return local_p.reshape(n_b.shape) - fft.backward(div_q)


def _second_derivatives(code: str, rho_xp: np.ndarray) -> tuple[np.ndarray, ...]:
    """libxc at |n|: (v2rho2,) for LDA; (v2rho2, v2rhosigma, v2sigma2, vsigma) for GGA."""
    npts = rho_xp.shape[1]
    count = 1 if rho_xp.shape[0] == 1 else 4
    out = tuple(np.empty(npts) for _ in range(count))
    for a in range(0, npts, CHUNK):
        rho = np.array(rho_xp[:, a:a + CHUNK])
        rho[0] = np.abs(rho[0])
        _, vxc, fxc = libxc.eval_xc(code, rho if count > 1 else rho[0], deriv=2)[:3]
        values = (fxc[0],) if count == 1 else (fxc[0], fxc[1], fxc[2], vxc[1])
        for target, value in zip(out, values):
            target[a:a + CHUNK] = value
    return out
