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

CHUNK = 1 << 20  # points per libxc call (bounds libxc's temporaries)


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
    grad_vp = np.stack([fft.backward(1j * g_q * n_q * inside_q).ravel() for g_q in fft.g_vq()])
    e_p, v_p, vsigma_p = _libxc(code, np.concatenate([n_p[None, :], grad_vp]))
    h_vp = 2 * vsigma_p * grad_vp  # ∂e/∂(∇n)
    del grad_vp
    div_q = sum(1j * g_q * fft.forward(h_p.reshape(n_b.shape)) for g_q, h_p in zip(fft.g_vq(), h_vp))
    v_b = v_p.reshape(n_b.shape) - fft.backward(div_q * inside_q)
    return fft.integrate(e_p), v_b


def _libxc(code: str, rho_xp: np.ndarray):
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
