"""Core-charge forces: −∂E/∂R_a through the pseudo-core charge of the XC energy.

The core charge is built as :func:`mlscale.energy.core.core_density_q` builds it,

    n_c(G) = (1/Ω) Σ_a ρ̃_s(a)(|G|) e^{−iG·R_a}   (inside the sphere |G|² <= g2_max),

so with V_c(r) = δE/δn_c(r) (:mod:`mlscale.forces.density`) and V_c(G) its transform
(QE normalisation, f(G) = (1/N) Σ_r f(r) e^{−iG·r}),

    ∂E/∂R_a = Σ_r ΔV V_c(r) ∂n_c(r)/∂R_a = Σ_G conj(V_c(G)) (−iG) ρ̃_s(|G|) e^{−iG·R_a}

(a sum over all G, real; computed on each rank's spectral points and reduced as one
[atoms, 3] array). Cost: atoms × this rank's G points.
"""

from __future__ import annotations

import numpy as np
from ase import Atoms
from scipy.interpolate import CubicSpline

from ..energy.core import TABLE_STEP, core_form_factor, structure_factor
from ..energy.fft import DistributedFFT
from ..energy.upf import Pseudopotential
from ..units import BOHR_ANGSTROM, HARTREE_EV


def core_forces(core_potential_b: np.ndarray | None, fft: DistributedFFT, atoms: Atoms,
                pseudopotentials: dict[str, Pseudopotential], g2_max: float) -> np.ndarray:
    """−∂E/∂R_a through the core charge, ``[atoms, 3]`` in eV/Å, the same on all ranks.

    core_potential_b: δE/δn_c on this rank's block (eV; None: no core correction, zero
    forces); fft: the distributed FFT in Bohr; g2_max: the G sphere (Bohr⁻²) of the core
    charge. Collective.
    """
    symbols = np.array(atoms.get_chemical_symbols())
    forces_av = np.zeros((len(atoms), 3))
    if core_potential_b is not None:
        v_q = fft.forward(core_potential_b / HARTREE_EV)  # Hartree
        inside_q = fft.g2_q <= g2_max
        g_q = np.sqrt(fft.g2_q[inside_q])
        table_k = np.arange(0.0, np.sqrt(g2_max) + 4 * TABLE_STEP, TABLE_STEP)
        frac_ac = atoms.get_scaled_positions(wrap=True)
        g_vq = np.array([fft.g_q(v)[inside_q] for v in range(3)])
        weight_q = fft.weight_q[inside_q]
        for s in dict.fromkeys(symbols.tolist()):
            pp = pseudopotentials[s]
            if pp.core_r is None:
                continue
            form_q = CubicSpline(table_k, core_form_factor(pp, table_k))(g_q)
            x_q = weight_q * form_q * np.conj(v_q[inside_q])
            for a in np.nonzero(symbols == s)[0]:
                phase_q = structure_factor(fft, frac_ac[a:a + 1])[inside_q]
                # F = −Re Σ_G conj(V) (−iG) ρ̃ e^{−iGR} = −Σ_G G Im(conj(V) ρ̃ e^{−iGR})
                forces_av[a] = -g_vq @ np.imag(x_q * phase_q)
    return fft.comm.sum(forces_av) * (HARTREE_EV / BOHR_ANGSTROM)
