"""∂E/∂LDOS: the electronic part of the force chain, with the Fermi level's response.

E = E_band(D, μ) + (−TS)(D, μ) + E_n[n], with D_e = ΔV Σ_p LDOS_pe (summed over ranks),
n_p = Σ_e LDOS_pe w_e(μ) and μ fixed by the electron count N(D, μ) = Σ_e D_e w_e(μ) = N₀.
Differentiating the constraint, dμ/dLDOS_pe = −ΔV w_e / (∂N/∂μ), so

    ∂E/∂LDOS_pe = ΔV [b_e + s_e + (v_p − λ) w_e],
    λ = (Σ_e D_e (b'_e + s'_e) + ΔV Σ_p v_p Σ_e LDOS_pe w'_e) / (Σ_e D_e w'_e),

where w, b, s are the occupation, band-energy and entropy weights of
:mod:`mlscale.electrons`, ' is ∂/∂μ and v_p = δE_n/δn(r_p) is the density terms'
functional derivative (eV, :mod:`mlscale.forces.density`). The gradient is therefore
two vectors over energies, :class:`LdosGradient`, applied to any chunk of points.

The μ-derivatives of the weights are exact: for the analytical integration,
∂/∂μ ∫ h_e(ε) G(ε − μ) dε = ∫ h_e'(ε) G(ε − μ) dε (the hat h_e vanishes at the ends
of its support), and h_e' is a constant on each of the hat's two intervals, so the
derivative is the difference of the interval integrals of f, (ε − μ) f and the entropy
density, the antiderivatives of :mod:`mlscale.electrons`; for the trapezoid rule,
∂f/∂μ = f(1 − f)/k_BT.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .. import electrons
from ..errors import MlscaleError
from ..parallel import Comm
from ..units import KB_EV_PER_K


@dataclass(frozen=True)
class LdosGradient:
    """∂E/∂LDOS_pe = voxel_volume_A3 · (offset_e + potential_p · slope_e), eV²·Å³.

    offset_e (eV): b_e + s_e − λ w_e; slope_e (eV): the occupation weights w_e; λ (eV):
    ``fermi_response_eV``, the energy's explicit μ-derivative over ∂N/∂μ.
    """

    offset_e: np.ndarray
    slope_e: np.ndarray
    voxel_volume_A3: float
    fermi_response_eV: float

    def on_points(self, potential_p: np.ndarray) -> np.ndarray:
        """∂E/∂LDOS [points, energies] (eV²·Å³) for points with δE_n/δn = potential_p (eV)."""
        potential_p = np.asarray(potential_p, dtype=float).reshape(-1, 1)
        return self.voxel_volume_A3 * (self.offset_e[None, :] + potential_p * self.slope_e)


def weight_derivatives(energies_e: np.ndarray, mu_eV: float, temperature_K: float,
                       method: str = "analytical") -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """∂/∂μ of the occupation (1), band-energy (eV) and entropy (eV) weights of
    :mod:`mlscale.electrons`, exact for both integration methods."""
    energies_e = np.asarray(energies_e, dtype=float)
    w_e = electrons.occupation_weights(energies_e, mu_eV, temperature_K, method)  # checks
    kT = KB_EV_PER_K * temperature_K
    x_e = (energies_e - mu_eV) / kT
    if method == "quadrature":
        step_e = np.diff(energies_e) / 2
        trap_e = np.concatenate((step_e, [0.0])) + np.concatenate(([0.0], step_e))
        f_e = electrons.fermi_function(energies_e, mu_eV, temperature_K)
        df_e = trap_e * f_e * (1 - f_e) / kT
        return df_e, energies_e * df_e, -kT * x_e * df_e
    edges = np.concatenate(([2 * energies_e[0] - energies_e[1]], energies_e,
                            [2 * energies_e[-1] - energies_e[-2]]))
    x = (edges - mu_eV) / kT
    dx = np.diff(x)

    def hat_slopes(integrand: str) -> np.ndarray:
        i0 = electrons._antiderivatives(x, integrand)[0]  # ∫ g dx on each interval
        per_interval = np.diff(i0) / dx
        return per_interval[:-1] - per_interval[1:]  # left interval rises, right falls

    dw_e = hat_slopes("occupation")
    return dw_e, w_e + mu_eV * dw_e + kT * hat_slopes("energy"), kT * hat_slopes("entropy")


def ldos_gradient(ldos_pe: np.ndarray, energies_e: np.ndarray, dos_e: np.ndarray,
                  mu_eV: float, temperature_K: float, voxel_volume_A3: float,
                  potential_p: np.ndarray, comm: Comm, method: str = "analytical"
                  ) -> LdosGradient:
    """∂E/∂LDOS with μ held at the electron count, as :class:`LdosGradient`.

    ldos_pe: this rank's LDOS [points, energies] (1/(eV·Å³), any float dtype); dos_e: the
    whole DOS (1/eV, summed over ranks); mu_eV: its Fermi level; potential_p: δE_n/δn at
    this rank's points (eV, same order as ldos_pe; zeros for band energy and −TS only).
    Collective: one scalar reduced over ``comm``.
    """
    energies_e = np.asarray(energies_e, dtype=float)
    flat_pe = np.asarray(ldos_pe).reshape(-1, energies_e.size)
    potential_p = np.asarray(potential_p, dtype=float).reshape(-1)
    if potential_p.size != flat_pe.shape[0]:
        raise MlscaleError(f"potential has {potential_p.size} points, the LDOS "
                           f"{flat_pe.shape[0]}")
    w_e = electrons.occupation_weights(energies_e, mu_eV, temperature_K, method)
    b_e = electrons.band_energy_weights(energies_e, mu_eV, temperature_K, method)
    s_e = electrons.entropy_weights(energies_e, mu_eV, temperature_K, method)
    dw_e, db_e, ds_e = weight_derivatives(energies_e, mu_eV, temperature_K, method)
    local = voxel_volume_A3 * float(potential_p @ (flat_pe @ dw_e))
    explicit = float(np.asarray(dos_e) @ (db_e + ds_e)) + comm.sum(local)
    dn_dmu = float(np.asarray(dos_e) @ dw_e)
    if not dn_dmu > 0:
        raise MlscaleError(f"the electron count does not grow with the Fermi level "
                           f"(dN/dμ = {dn_dmu:g} /eV): μ and its response are undefined")
    response = explicit / dn_dmu
    return LdosGradient(b_e + s_e - response * w_e, w_e, float(voxel_volume_A3), response)
