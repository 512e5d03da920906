"""Density-dependent energy terms on the distributed grid, and the total energy.

Total energy (Ellis et al., PRB 104, 035120, eq. 9), eV:

    E = E_band − ∫ n (v_H + v_xc) dr + E_H + E_xc[n + n_core] + E_Ewald − TS

Inputs at the edges are in eV and Å; inside, atomic units (Hartree, Bohr) with
Quantum ESPRESSO's conventions (n(G) = FFT(n)/N, G sums inside |G|² <= ecutrho).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import numpy as np
from ase import Atoms

from ..errors import MlscaleError
from ..grid import DistributedGrid
from ..units import BOHR_ANGSTROM, HARTREE_EV
from .core import core_density_q
from .ewald import ewald_energy
from .fft import DistributedFFT
from .hartree import hartree_energy
from .upf import Pseudopotential, read_upf
from .xc import FUNCTIONALS, functional_name, xc_energy_double_counting

PseudopotentialSource = str | os.PathLike[str] | Pseudopotential
"""A UPF file's path or the pseudopotential read from it."""


def _core_and_gradient_input(n_q: np.ndarray, fft: DistributedFFT,
                             pps: dict[str, Pseudopotential], atoms: Atoms, name: str,
                             g2_max: float) -> tuple[np.ndarray | None, np.ndarray | None]:
    """The core charge n_core(r) on this rank's block (None without core correction) and,
    for GGA, (n + n_core)(G) for the gradients (None for LDA), both per Bohr³. n_q: n(G)
    in the FFT's own array, overwritten here (the core charge's transform uses it)."""
    frac_ac = atoms.get_scaled_positions(wrap=True)
    core_q = core_density_q(fft, pps, atoms.get_chemical_symbols(), frac_ac, g2_max)
    rho_q = None
    if FUNCTIONALS[name][1]:  # GGA: (n + n_core)(G) for the gradients
        rho_q = n_q.copy()
        if core_q is not None:
            rho_q += core_q
    core_b = None
    if core_q is not None:
        fft.spectral_work[...] = core_q
        del core_q
        core_b = fft.backward_work()
    return core_b, rho_q


def density_energy_terms(density_b: np.ndarray, dgrid: DistributedGrid, atoms: Atoms,
                         pseudopotentials: Mapping[str, PseudopotentialSource],
                         ecutrho_Ry: float | None = None,
                         functional: str | None = None) -> dict[str, Any]:
    """Hartree, XC (with core correction), Ewald and double-counting energies in eV.

    density_b: this rank's block of the valence density n(r), electrons/Å³, on ``dgrid``
    (cell in Å).
    pseudopotentials: element -> UPF path (or :class:`Pseudopotential`).
    ecutrho_Ry: G sphere |G|² <= ecutrho (Bohr⁻², i.e. Ry) for the G sums; None: the
    largest sphere the grid holds.
    functional: "LDA", "PW", "PBE" or "PBESOL" (or a QE name); None: from the UPF files.

    Returns ``hartree_energy_eV``, ``xc_energy_eV``, ``ewald_energy_eV``,
    ``double_counting_eV`` (−∫ n v_Hxc), ``number_of_electrons`` and the settings
    used (``functional``, ``ecutrho_Ry``, ``core_correction``). Collective.
    """
    symbols = atoms.get_chemical_symbols()
    with dgrid.comm.collective():
        pps, name = _check_inputs(density_b, dgrid, atoms, pseudopotentials, functional)
    _check_sign(density_b, dgrid)
    fft = DistributedFFT(dgrid.with_cell(dgrid.cell_cv / BOHR_ANGSTROM))
    g2_max = _sphere(fft, ecutrho_Ry, dgrid.shape)
    # Per point this holds, besides the density: the FFT's work arrays (a real and a
    # half-spectrum one), for GGA ρ(G) and ∇ρ, with a core charge n_core(r); E_H, E_xc
    # and the double counting are summed in pieces (docs/scaling.md, "Energy phase").
    scale = BOHR_ANGSTROM**3  # 1/Å³ -> 1/Bohr³
    n_q = fft.forward_work(density_b)  # in the FFT's own array, until the next transform
    n_q *= scale
    e_hartree = hartree_energy(n_q, fft, g2_max)

    core_b, rho_q = _core_and_gradient_input(n_q, fft, pps, atoms, name, g2_max)
    del n_q
    e_xc, n_v_xc = xc_energy_double_counting(density_b, scale, core_b, rho_q, fft, name,
                                             g2_max)
    del core_b, rho_q
    double_counting = -(2 * e_hartree + n_v_xc)  # −∫ n (v_H + v_xc), ∫ n v_H = 2 E_H

    charge_a = np.array([pps[s].z_valence for s in symbols])
    e_ewald = ewald_energy(atoms.positions / BOHR_ANGSTROM, charge_a, fft)
    return {
        "hartree_energy_eV": e_hartree * HARTREE_EV,
        "xc_energy_eV": e_xc * HARTREE_EV,
        "ewald_energy_eV": e_ewald * HARTREE_EV,
        "double_counting_eV": double_counting * HARTREE_EV,
        "number_of_electrons": fft.integrate(density_b) * scale,
        "functional": name,
        "ecutrho_Ry": g2_max,
        "core_correction": any(pps[s].core_r is not None for s in set(symbols)),
    }


def _check_inputs(density_b: np.ndarray, dgrid: DistributedGrid, atoms: Atoms,
                  pseudopotentials: Mapping[str, PseudopotentialSource], functional: str | None
                  ) -> tuple[dict[str, Pseudopotential], str]:
    """The pseudopotentials per element and the functional's name; MlscaleError for a
    share, a density that does not fit the grid or is not finite, or another cell."""
    if dgrid.is_share:
        raise MlscaleError("the energy terms need the whole density: one rank's share does "
                           "not match the grid decomposition over the ranks")
    dgrid.check_local(density_b, "density")
    if not np.all(np.isfinite(density_b)):
        raise MlscaleError("density contains NaN or infinite values")
    if not np.allclose(atoms.cell.array, dgrid.cell_cv, rtol=0, atol=1e-4):
        raise MlscaleError("the structure's cell differs from the density grid's cell")
    pps = _read_pseudopotentials(pseudopotentials, atoms.get_chemical_symbols())
    name = functional_name(functional if functional is not None else _common_functional(pps))
    return pps, name


#: the largest negative charge a density may hold, relative to ∫|n| dV (a predicted
#: density can dip slightly below zero where the LDOS model's error does)
NEGATIVE_CHARGE_TOLERANCE = 0.01


def _check_sign(density_b: np.ndarray, dgrid: DistributedGrid) -> None:
    """MlscaleError (on every rank) if more than 1 % of the density's charge is negative
    (a sign error or not a density: XC of n < 0 is undefined). Collective."""
    negative = dgrid.sum(float(-np.minimum(density_b, 0.0).sum()))
    absolute = dgrid.sum(float(np.abs(density_b).sum()))
    if absolute == 0:
        raise MlscaleError("the density is zero everywhere: no electrons")
    if negative > NEGATIVE_CHARGE_TOLERANCE * absolute:
        lowest = dgrid.comm.min(float(density_b.min()) if density_b.size else 0.0)
        raise MlscaleError(
            f"the density is not a density: {negative * dgrid.voxel_volume:.4g} of its "
            f"{absolute * dgrid.voxel_volume:.4g} electrons (∫|n| dV) are negative "
            f"(lowest n {lowest:.4g} 1/Å³); at most {NEGATIVE_CHARGE_TOLERANCE:.0%} may be")


def _sphere(fft: DistributedFFT, ecutrho_Ry: float | None, shape: tuple[int, int, int]
            ) -> float:
    """The G sphere |G|² <= g2_max (Bohr⁻²) of the sums: ecutrho, or all the grid holds."""
    g2_max = fft.max_g2()
    if ecutrho_Ry is None:
        return g2_max
    if not 0 < ecutrho_Ry <= g2_max * (1 + 1e-9):
        raise MlscaleError(f"ecutrho {ecutrho_Ry} Ry does not fit the {shape} grid "
                           f"(at most {g2_max:.2f} Ry)")
    return float(ecutrho_Ry)


def total_energy(band_energy: float, entropy_contribution: float,
                 terms: Mapping[str, Any]) -> float:
    """E = E_band + (−∫ n v_Hxc) + E_H + E_xc + E_Ewald + (−TS), eV.

    band_energy: Σ f ε in eV; entropy_contribution: −TS in eV (<= 0); terms: the
    dict of :func:`density_energy_terms`.
    """
    return (band_energy + terms["double_counting_eV"] + terms["hartree_energy_eV"]
            + terms["xc_energy_eV"] + terms["ewald_energy_eV"] + entropy_contribution)


def _read_pseudopotentials(paths: Mapping[str, PseudopotentialSource],
                           symbols: list[str]) -> dict[str, Pseudopotential]:
    pps = {}
    for symbol in dict.fromkeys(symbols):
        if symbol not in paths:
            raise MlscaleError(f"no pseudopotential given for {symbol}")
        source = paths[symbol]
        pp = source if isinstance(source, Pseudopotential) else read_upf(source)
        if pp.element != symbol:
            raise MlscaleError(f"pseudopotential {pp.path} is for {pp.element}, not {symbol}")
        pps[symbol] = pp
    return pps


def _common_functional(pps: dict[str, Pseudopotential]) -> str:
    names = {functional_name(pp.functional) for pp in pps.values()}
    if len(names) > 1:
        raise MlscaleError("pseudopotentials use different functionals: "
                           f"{', '.join(sorted(names))}")
    return names.pop()
