"""Pseudo-core charge of the non-linear core correction, built as Quantum ESPRESSO does.

The radial core charge ρ_c(r) of each species (UPF ``PP_NLCC``) is Bessel-transformed
with QE's Simpson rule on the radial mesh cut beyond 10 Bohr, multiplied by the
structure factor and kept inside the sphere |G|² <= ecut. Atomic units: Bohr,
electrons/Bohr³.
"""

from __future__ import annotations

import numpy as np
from scipy.interpolate import CubicSpline

from ..errors import MlscaleError
from .fft import DistributedFFT
from .upf import Pseudopotential

RADIAL_CUTOFF_BOHR = 10.0  # QE's rcut for integrals of radial functions
TABLE_STEP = 0.002  # |G| spacing (1/Bohr) of the interpolation table of the transform
FORM_CHUNK = 32  # |G| values per piece of the radial transform (temporaries [32, mesh])


def simpson_qe(f_r: np.ndarray, rab_r: np.ndarray) -> np.ndarray:
    """∫ f dr on a radial mesh with QE's ``simpson`` (odd number of points; last axis)."""
    n = f_r.shape[-1]
    m = n if n % 2 else n - 1  # QE ignores the last point of an even mesh
    weight = np.zeros(n)
    weight[0:m:2] = 2.0
    weight[1:m:2] = 4.0
    weight[0] = weight[m - 1] = 1.0
    return np.sum(f_r * rab_r * weight, axis=-1) / 3.0


def core_mesh_size(r_r: np.ndarray) -> int:
    """QE's ``msh``: mesh points up to the first r > 10 Bohr, made odd."""
    beyond = np.nonzero(r_r > RADIAL_CUTOFF_BOHR)[0]
    msh = int(beyond[0]) + 1 if beyond.size else len(r_r)
    return 2 * ((msh + 1) // 2) - 1


def core_form_factor(pp: Pseudopotential, g_k: np.ndarray) -> np.ndarray:
    """4π ∫ r² ρ_c(r) j0(|G| r) dr at |G| = ``g_k`` (1/Bohr); electrons."""
    if pp.core_r is None:
        raise MlscaleError(f"pseudopotential {pp.path} has no core charge (PP_NLCC)")
    msh = core_mesh_size(pp.r_r)
    r, rab, core = pp.r_r[:msh], pp.rab_r[:msh], pp.core_r[:msh]
    out = np.empty(len(g_k))
    for start in range(0, len(g_k), FORM_CHUNK):  # bounded temporaries [FORM_CHUNK, msh]
        g = g_k[start:start + FORM_CHUNK, None]
        j0 = np.sinc(g * r / np.pi)
        out[start:start + FORM_CHUNK] = 4 * np.pi * simpson_qe(r**2 * core * j0, rab)
    return out


def core_density_q(fft: DistributedFFT, pseudopotentials: dict[str, Pseudopotential],
                   symbols: list[str], frac_ac: np.ndarray, g2_max: float) -> np.ndarray | None:
    """n_core(G) on this rank's spectral points, inside |G|² <= g2_max; None without NLCC.

    fft works in Bohr. frac_ac: fractional atomic positions. Returns electrons/Bohr³.
    """
    species = [s for s in dict.fromkeys(symbols) if pseudopotentials[s].core_r is not None]
    if not species:
        return None
    table_k = np.arange(0.0, np.sqrt(g2_max) + 4 * TABLE_STEP, TABLE_STEP)
    symbols_a = np.asarray(symbols)
    forms = [CubicSpline(table_k, core_form_factor(pseudopotentials[s], table_k))
             for s in species]
    phases = [_phases(fft, frac_ac[symbols_a == s]) for s in species]
    n_q = np.zeros(fft.spectral_block.shape, dtype=complex)
    for index in fft.chunks_q():  # in pieces: no temporaries of the grid's size
        g_x, g_y, g_z = fft.g_chunk(index)
        g2 = g_x**2 + g_y**2 + g_z**2
        inside = g2 <= g2_max
        g = np.sqrt(g2[inside])
        n_chunk = n_q[index]
        for form, phase in zip(forms, phases):
            n_chunk[inside] += form(g) * _structure_factor_chunk(phase, index)[inside]
    n_q /= fft.grid.volume
    return n_q


def _phases(fft: DistributedFFT, frac_ac: np.ndarray) -> list[np.ndarray]:
    """exp(-2πi m τ_a) of the atoms' fractional positions per axis, [atoms, q_axis]."""
    return [np.exp(-2j * np.pi * frac_ac[:, axis, None] * m.ravel()[None, :])
            for axis, m in enumerate(fft.m_q3)]


def _structure_factor_chunk(phase: list[np.ndarray], index: tuple[int, slice]) -> np.ndarray:
    """S(G) of :func:`structure_factor` on one of :meth:`DistributedFFT.chunks_q`."""
    ix, iy = index
    return (phase[0][:, ix, None] * phase[1][:, iy]).T @ phase[2]


def structure_factor(fft: DistributedFFT, frac_ac: np.ndarray) -> np.ndarray:
    """S(G) = Σ_a exp(-i G·τ_a) on this rank's spectral points (exact; cost atoms × points)."""
    phase = _phases(fft, frac_ac)
    s_q = np.empty(fft.spectral_block.shape, dtype=complex)
    for ix in range(s_q.shape[0]):
        s_q[ix] = (phase[0][:, ix, None] * phase[1]).T @ phase[2]
    return s_q
