"""Exchange-correlation energy and potential (LDA, GGA) through libxc (``pyscf.dft.libxc``).

Atomic units: densities in electrons/Bohr³, energies in Hartree, potentials in Hartree.
The density given is the total one the functional sees, valence plus pseudo-core
charge. GGA gradients are taken in reciprocal space inside the sphere |G|² <= ecut
(Quantum ESPRESSO's way) and the potential is v = ∂e/∂n - ∇·(2 ∂e/∂σ ∇n), σ = |∇n|².
"""

from __future__ import annotations

import numpy as np
from pyscf.dft import libxc

from ..errors import MlscaleError
from .fft import DistributedFFT

# name -> (libxc code, is GGA)
FUNCTIONALS = {
    "LDA": ("LDA_X,LDA_C_PZ", False),  # Slater + Perdew-Zunger 1981 (QE "PZ")
    "PW": ("LDA_X,LDA_C_PW", False),  # Slater + Perdew-Wang 1992 (QE "PW")
    "PBE": ("GGA_X_PBE,GGA_C_PBE", True),
    "PBESOL": ("GGA_X_PBE_SOL,GGA_C_PBE_SOL", True),
}

# QE functional strings (UPF headers) -> name
_QE_NAMES = {
    "PZ": "LDA", "LDA": "LDA", "SLA PZ": "LDA", "SLA PZ NOGX NOGC": "LDA",
    "PW": "PW", "SLA PW": "PW", "SLA PW NOGX NOGC": "PW",
    "PBE": "PBE", "SLA PW PBE PBE": "PBE", "SLA PW PBX PBC": "PBE",
    "PBESOL": "PBESOL", "SLA PW PSX PSC": "PBESOL",
}

CHUNK = 1 << 16  # points per libxc call (bounds libxc's temporaries)


def functional_name(name: str) -> str:
    """Our functional name for a UPF/QE functional string or a name in FUNCTIONALS."""
    key = " ".join(name.upper().replace("-", " ").split())
    if key in FUNCTIONALS:
        return key
    if key in _QE_NAMES:
        return _QE_NAMES[key]
    raise MlscaleError(f"unsupported exchange-correlation functional {name!r} "
                       f"(supported: {', '.join(FUNCTIONALS)})")


def xc_energy_potential(n_b: np.ndarray, n_q: np.ndarray, fft: DistributedFFT, functional: str,
                        g2_max: float) -> tuple[float, np.ndarray]:
    """E_xc (Hartree, all ranks) and v_xc on this rank's block (Hartree).

    n_b: total density (valence + core) on the block; n_q: the same in G space (used
    for the GGA gradient). fft works in Bohr.
    """
    code, gga = FUNCTIONALS[functional]
    n_p = n_b.ravel()
    if not gga:
        e_p, v_p = _libxc(code, n_p[None, :])
        return fft.integrate(e_p), v_p.reshape(n_b.shape)
    inside_q = fft.g2_q <= g2_max
    in_q = np.where(inside_q, 1j * n_q, 0)
    rho_xp = np.empty((4, n_p.size))  # n, ∇n
    rho_xp[0] = n_p
    for v in range(3):
        rho_xp[1 + v] = fft.backward(fft.g_q(v) * in_q).ravel()
    del in_q
    e_p, v_p, vsigma_p = _libxc(code, rho_xp)
    h_vp = rho_xp[1:]
    h_vp *= 2 * vsigma_p  # ∂e/∂(∇n)
    del vsigma_p
    div_q = np.zeros_like(n_q)
    for v in range(3):
        div_q += fft.g_q(v) * fft.forward(h_vp[v].reshape(n_b.shape))
    del rho_xp, h_vp
    div_q *= 1j * inside_q
    v_b = v_p.reshape(n_b.shape) - fft.backward(div_q)
    return fft.integrate(e_p), v_b


def _libxc(code: str, rho_xp: np.ndarray) -> tuple[np.ndarray, ...]:
    """Energy density e = n·ε_xc and the derivatives for densities |n| (as QE, sign kept in e)."""
    npts = rho_xp.shape[1]
    e_p = np.empty(npts)
    v_p = np.empty(npts)
    vsigma_p = np.empty(npts) if rho_xp.shape[0] > 1 else None
    for a in range(0, npts, CHUNK):
        rho = np.array(rho_xp[:, a:a + CHUNK])
        n = rho[0].copy()
        rho[0] = np.abs(n)
        exc, vxc = libxc.eval_xc(code, rho if rho.shape[0] > 1 else rho[0], deriv=1)[:2]
        e_p[a:a + CHUNK] = exc * n
        v_p[a:a + CHUNK] = vxc[0]
        if vsigma_p is not None:
            vsigma_p[a:a + CHUNK] = vxc[1]
    return (e_p, v_p) if vsigma_p is None else (e_p, v_p, vsigma_p)
