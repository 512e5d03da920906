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
from .fft import DistributedFFT, row_chunks

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
PIECE = 1 << 13  # points per libxc call of xc_energy_double_counting (~0.5 MiB of them)


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


def xc_energy_double_counting(valence_b: np.ndarray, scale: float, core_b: np.ndarray | None,
                              rho_q: np.ndarray | None, fft: DistributedFFT, functional: str,
                              g2_max: float) -> tuple[float, float]:
    """E_xc[n + n_core] and ∫ n v_xc dr (Hartree, all ranks), v_xc as
    :func:`xc_energy_potential`'s, without v_xc or the density on the grid: libxc runs on
    pieces of the block (PIECE points), and the energies are summed as they come out.

    valence_b: this rank's block of the valence density in any unit, n = scale·valence_b
    electrons/Bohr³; core_b: n_core(r) on the block (electrons/Bohr³) or None; rho_q:
    (n + n_core)(G) for the GGA gradients (None for LDA; overwritten with n(G) when a core
    charge is given). fft works in Bohr; its work arrays are overwritten.

    The GGA term needs no divergence: with h = 2 ∂e/∂σ ∇ρ and the sphere's gradient ∇_s
    (the same G sum as v_xc's divergence), ∫ n ∇_s·h = −∫ ∇_s n · h on the grid
    (Parseval), and ∇_s n = ∇ρ without a core charge.
    """
    code, gga = FUNCTIONALS[functional]
    if gga and rho_q is None:
        raise ValueError("a GGA needs rho_q")
    grad_vb = [] if rho_q is None or not gga else [_gradient(rho_q, fft, g2_max, v)
                                                    for v in range(3)]
    e_xc = n_v_xc = 0.0
    for index in row_chunks(valence_b.shape, PIECE):
        n_p = (valence_b[index] * scale).ravel()
        rho_p = n_p if core_b is None else n_p + core_b[index].ravel()
        if not gga:
            e_p, v_p = _libxc(code, rho_p[None, :])
        else:
            rho_xp = np.concatenate((rho_p[None, :], [g[index].ravel() for g in grad_vb]))
            e_p, v_p, vsigma_p = _libxc(code, rho_xp)
            if core_b is None:  # ∫ ∇n · 2 ∂e/∂σ ∇n
                n_v_xc += float(np.sum(2 * vsigma_p * np.sum(rho_xp[1:] ** 2, axis=0)))
            else:  # h, in place of ∇ρ
                for g in grad_vb:
                    g[index] *= (2 * vsigma_p).reshape(g[index].shape)
        e_xc += float(np.sum(e_p))
        n_v_xc += float(np.sum(n_p * v_p))
    if rho_q is not None and gga and core_b is not None:  # ∫ ∇_s n · h
        n_q = rho_q
        n_q[...] = fft.forward_work(valence_b)
        n_q *= scale
        for v, h_b in enumerate(grad_vb):
            n_v_xc += float(np.sum(h_b * _gradient(n_q, fft, g2_max, v)))
    volume = fft.grid.voxel_volume
    return fft.comm.sum(e_xc) * volume, fft.comm.sum(n_v_xc) * volume


def _gradient(f_q: np.ndarray, fft: DistributedFFT, g2_max: float, v: int) -> np.ndarray:
    """Component v of ∇f inside the sphere |G|² <= g2_max on this rank's block, from f(G)
    (as :func:`xc_energy_potential` takes it); uses the FFT's work arrays."""
    work = fft.spectral_work
    for index in fft.chunks_q():
        g_vq = fft.g_chunk(index)
        inside = g_vq[0] ** 2 + g_vq[1] ** 2 + g_vq[2] ** 2 <= g2_max
        work[index] = g_vq[v] * np.where(inside, 1j * f_q[index], 0)
    return fft.backward_work()


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
