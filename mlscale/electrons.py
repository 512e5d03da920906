"""Electrons from the LDOS: DOS, Fermi level, band energy, entropy term −TS, density.

Pure functions over numpy arrays. Units (MALA's): energies eV, temperature K, LDOS
1/(eV·Å³), DOS 1/eV, density 1/Å³. The LDOS already holds the spin factor (a
non-spin-polarised LDOS integrates to the full electron count); nothing here
multiplies by 2.

Every integral over energy is a dot product with a weight vector over the LDOS
energy grid, ``∫ g(ε) F(ε) dε = Σ_e g_e w_e``, for two methods:

- ``"analytical"`` (MALA's default; Ellis et al., PRB 104, 035120, eqs. 32–33): exact
  for a g that is piecewise linear between the grid energies and, as in MALA, falls
  linearly to zero one grid step beyond either end of the grid (grids may be
  non-uniform). Each weight is the
  integral of a hat function against the Fermi–Dirac factor, evaluated with
  polylogarithms Li_s(−e^{−|x|}), s = 1, 2, 3, x = (ε − μ)/k_BT (vectorised: series
  in e^{−|x|} or Taylor series in x, plus the inversion formulas for x < 0).
- ``"quadrature"``: the trapezoid rule on the grid energies (MALA's ``"trapezoid"``).

Band energy is ∫ ε f D dε; the entropy term is −TS = k_BT ∫ D [f ln f + (1−f) ln(1−f)] dε
(eV, ≤ 0). The Fermi level is the μ in [first, last grid energy] that gives the
electron count, as in MALA.

The DOS is a local partial sum over the points a rank owns (the caller sums it over
ranks with ``comm.sum``); the density stays local. Functions that read a rank's own
LDOS (:func:`dos_from_ldos`, :func:`density`) can fail on some ranks only (NaN in the
data): call them inside ``with comm.collective():``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction

import numpy as np
from numpy.typing import ArrayLike
from scipy.optimize import brentq
from scipy.special import expit, zeta

from .errors import MlscaleError
from .units import KB_EV_PER_K

METHODS = ("analytical", "quadrature")

_TERMS = 40  # series terms: error below (1/π)^40 resp. e^-40 of the leading term
_CHUNK_ELEMENTS = 1 << 18  # LDOS values per float64 buffer (2 MiB) when casting


# -- polylogarithms ----------------------------------------------------------------------
def _bernoulli(count: int) -> list[Fraction]:
    """Exact Bernoulli numbers B_0 .. B_{count-1} (B_1 = −1/2)."""
    b = [Fraction(1)]
    for m in range(1, count):
        b.append(-sum((math.comb(m + 1, k) * b[k] for k in range(m)), Fraction(0)) / (m + 1))
    return b


_BERNOULLI = _bernoulli(_TERMS + 2)


def _eta(n: int) -> float:
    """Dirichlet eta η(n) = −Li_n(−1) for an integer n."""
    if n == 1:
        return math.log(2.0)
    if n >= 2:
        return (1.0 - 2.0 ** (1 - n)) * float(zeta(n))
    if n == 0:
        return 0.5
    m = -n  # η(−m) = (2^{m+1} − 1) B_{m+1}/(m + 1)
    return (2.0 ** (m + 1) - 1.0) * float(_BERNOULLI[m + 1]) / (m + 1)


def _series_coefficients() -> tuple[dict[int, np.ndarray], dict[int, np.ndarray]]:
    """Per s = 1, 2, 3: coefficients in e^{-y} (k ≥ 1) and in y (Taylor at y = 0)."""
    k = np.arange(1, _TERMS + 1, dtype=float)
    power = {s: np.concatenate(([0.0], (-1.0) ** k / k**s)) for s in (1, 2, 3)}
    taylor = {s: np.array([-_eta(s - j) * (-1.0) ** j / math.factorial(j)
                           for j in range(_TERMS + 1)]) for s in (1, 2, 3)}
    return power, taylor


_POWER, _TAYLOR = _series_coefficients()


def _li_neg_exp(s: int, y: np.ndarray) -> np.ndarray:
    """Li_s(−e^{−y}) for y ≥ 0 (s = 1, 2, 3), to ~1e-15 relative, vectorised."""
    if s == 1:
        return -np.log1p(np.exp(-y))
    near = y <= 1.0
    t = np.exp(-np.where(near, 2.0, y))
    far = np.polynomial.polynomial.polyval(t, _POWER[s])
    close = np.polynomial.polynomial.polyval(np.where(near, y, 0.0), _TAYLOR[s])
    return np.where(near, close, far)


def _antiderivatives(x: np.ndarray, integrand: str) -> tuple[np.ndarray, np.ndarray]:
    """I0 = ∫ g dx and I1 = ∫ x g dx (dimensionless) for g(x) of the given kind.

    g is f = 1/(1 + e^x) ("occupation"), x f ("energy") or f ln f + (1−f) ln(1−f)
    ("entropy"). Written with q_s = Li_s(−e^{−|x|}); for x < 0 the inversion formulas
    of Li_s(−e^{|x|}) bring in the polynomial terms (continuous at x = 0).
    """
    q1, q2, q3 = (_li_neg_exp(s, np.abs(x)) for s in (1, 2, 3))
    below = x < 0
    x2, x3 = x * x, x * x * x
    c = math.pi**2 / 6
    if integrand == "occupation":
        i0 = np.where(below, x + q1, q1)
        i1 = np.where(below, x2 / 2 - c + x * q1 - q2, x * q1 + q2)
    elif integrand == "energy":
        i0 = np.where(below, x2 / 2 - c + x * q1 - q2, x * q1 + q2)
        i1 = np.where(below, x3 / 3, 0.0) + x2 * q1 + 2 * x * np.where(below, -q2, q2) + 2 * q3
    else:
        i0 = np.where(below, 2 * c + 2 * q2, -2 * q2) - x * q1
        i1 = -x2 * q1 + 3 * x * np.where(below, q2, -q2) - 3 * q3
    return i0, i1


def _hat_edges(energies_e: np.ndarray) -> np.ndarray:
    """The grid energies with one step added beyond either end (eV)."""
    return np.concatenate(([2 * energies_e[0] - energies_e[1]], energies_e,
                           [2 * energies_e[-1] - energies_e[-2]]))


def _hat_integrals(energies_e: np.ndarray, mu: float, kT: float,
                   integrand: str) -> np.ndarray:
    """∫ h_e(ε) g((ε − μ)/kT) dx for the hat functions h_e of the grid (dimensionless).

    Hats at the first and last energy reach one (the neighbouring) grid step beyond
    the grid, as MALA's do on its uniform grids.
    """
    x = (_hat_edges(energies_e) - mu) / kT
    i0, i1 = _antiderivatives(x, integrand)
    di0, di1, dx = np.diff(i0), np.diff(i1), np.diff(x)
    down = (x[1:] * di0 - di1) / dx  # interval j: hat of its left node
    up = (di1 - x[:-1] * di0) / dx  # interval j: hat of its right node
    return up[:-1] + down[1:]


# -- input checks ------------------------------------------------------------------------
def _check_energies(energies_e: ArrayLike) -> np.ndarray:
    energies_e = np.asarray(energies_e, dtype=float)
    if energies_e.ndim != 1 or energies_e.size < 2:
        raise MlscaleError("energy grid must be 1-D with >= 2 energies, "
                           f"got shape {energies_e.shape}")
    if not np.all(np.isfinite(energies_e)) or not np.all(np.diff(energies_e) > 0):
        raise MlscaleError("energy grid must be finite and strictly increasing")
    return energies_e


def _check_temperature(temperature_K: float) -> None:
    if not (np.isfinite(temperature_K) and temperature_K > 0):
        raise MlscaleError(f"temperature must be a positive number of K, got {temperature_K}")


def _check_scalars(mu_eV: float, temperature_K: float) -> None:
    if not np.isfinite(mu_eV):
        raise MlscaleError(f"Fermi level must be finite, got {mu_eV}")
    _check_temperature(temperature_K)


def _check_method(method: str) -> None:
    if method not in METHODS:
        raise MlscaleError(f"unknown integration method {method!r}; "
                           f"use one of {', '.join(METHODS)}")


def _check_dos(dos_e: ArrayLike, energies_e: np.ndarray) -> np.ndarray:
    dos_e = np.asarray(dos_e, dtype=float)
    if dos_e.shape != energies_e.shape:
        raise MlscaleError(f"DOS has shape {dos_e.shape}, expected {energies_e.shape} "
                           "(one value per energy)")
    if not np.all(np.isfinite(dos_e)):
        raise MlscaleError("DOS contains NaN or infinite values")
    return dos_e


def _flat_ldos(ldos_pe: ArrayLike, n_energies: int | None = None) -> np.ndarray:
    ldos_pe = np.asarray(ldos_pe)
    if ldos_pe.ndim not in (2, 4) or ldos_pe.dtype.kind not in "fiu":
        raise MlscaleError(f"LDOS must be a real [points, energies] or [x, y, z, energies] "
                           f"array, got shape {ldos_pe.shape} ({ldos_pe.dtype})")
    if n_energies is not None and ldos_pe.shape[-1] != n_energies:
        raise MlscaleError(f"LDOS has {ldos_pe.shape[-1]} energies, the energy grid {n_energies}")
    return ldos_pe.reshape(math.prod(ldos_pe.shape[:-1]), ldos_pe.shape[-1])


def _trapezoid(energies_e: np.ndarray) -> np.ndarray:
    step_e = np.diff(energies_e) / 2
    return np.concatenate((step_e, [0.0])) + np.concatenate(([0.0], step_e))


# -- Fermi–Dirac weights -----------------------------------------------------------------
def fermi_function(energy_e: ArrayLike, mu_eV: float, temperature_K: float) -> np.ndarray:
    """Fermi–Dirac occupation 1/(1 + exp((ε − μ)/k_BT)) (no overflow for any ε)."""
    _check_scalars(mu_eV, temperature_K)
    return expit((mu_eV - np.asarray(energy_e, dtype=float)) / (KB_EV_PER_K * temperature_K))


def _entropy_density(x: np.ndarray) -> np.ndarray:
    """f ln f + (1−f) ln(1−f) at x = (ε − μ)/k_BT (even in x, ≤ 0)."""
    y = np.abs(x)
    return -np.log1p(np.exp(-y)) - y * expit(-y)


def occupation_weights(energies_e: ArrayLike, mu_eV: float, temperature_K: float,
                       method: str = "analytical") -> np.ndarray:
    """Weights w_e (eV) with ∫ g(ε) f(ε) dε = Σ_e g_e w_e."""
    energies_e = _check_energies(energies_e)
    _check_scalars(mu_eV, temperature_K)
    _check_method(method)
    kT = KB_EV_PER_K * temperature_K
    if method == "quadrature":
        return _trapezoid(energies_e) * fermi_function(energies_e, mu_eV, temperature_K)
    return kT * _hat_integrals(energies_e, mu_eV, kT, "occupation")


def band_energy_weights(energies_e: ArrayLike, mu_eV: float, temperature_K: float,
                        method: str = "analytical") -> np.ndarray:
    """Weights w_e (eV²) with ∫ g(ε) ε f(ε) dε = Σ_e g_e w_e."""
    energies_e = _check_energies(energies_e)
    _check_scalars(mu_eV, temperature_K)
    _check_method(method)
    kT = KB_EV_PER_K * temperature_K
    if method == "quadrature":
        return (energies_e * _trapezoid(energies_e)
                * fermi_function(energies_e, mu_eV, temperature_K))
    return (mu_eV * kT * _hat_integrals(energies_e, mu_eV, kT, "occupation")
            + kT**2 * _hat_integrals(energies_e, mu_eV, kT, "energy"))


def entropy_weights(energies_e: ArrayLike, mu_eV: float, temperature_K: float,
                    method: str = "analytical") -> np.ndarray:
    """Weights w_e (eV²) with k_BT ∫ g [f ln f + (1−f) ln(1−f)] dε = Σ_e g_e w_e.

    For g = DOS the sum is the entropy term −TS.
    """
    energies_e = _check_energies(energies_e)
    _check_scalars(mu_eV, temperature_K)
    _check_method(method)
    kT = KB_EV_PER_K * temperature_K
    if method == "quadrature":
        return kT * _trapezoid(energies_e) * _entropy_density((energies_e - mu_eV) / kT)
    return kT**2 * _hat_integrals(energies_e, mu_eV, kT, "entropy")


# -- DOS and derived quantities ----------------------------------------------------------
def dos_from_ldos(ldos_pe: ArrayLike, voxel_volume_A3: float) -> np.ndarray:
    """This rank's share of the DOS, Σ_r LDOS(r, ε) ΔV (1/eV), shape ``[energies]``.

    ``ldos_pe``: [points, energies] or [x, y, z, energies] in 1/(eV·Å³); summed in
    float64. Sum the result over ranks (``comm.sum``) for the DOS.
    """
    if not (np.isfinite(voxel_volume_A3) and voxel_volume_A3 > 0):
        raise MlscaleError(f"voxel volume must be positive, got {voxel_volume_A3}")
    dos_e = _flat_ldos(ldos_pe).sum(axis=0, dtype=np.float64) * voxel_volume_A3
    if not np.all(np.isfinite(dos_e)):
        raise MlscaleError("LDOS contains NaN or infinite values")
    return dos_e


def number_of_electrons(dos_e: ArrayLike, energies_e: ArrayLike, mu_eV: float,
                        temperature_K: float, method: str = "analytical") -> float:
    """∫ D(ε) f(ε) dε: electrons at Fermi level μ (eV)."""
    energies_e = _check_energies(energies_e)
    dos_e = _check_dos(dos_e, energies_e)
    return float(dos_e @ occupation_weights(energies_e, mu_eV, temperature_K, method))


def band_energy(dos_e: ArrayLike, energies_e: ArrayLike, mu_eV: float,
                temperature_K: float, method: str = "analytical") -> float:
    """Band energy ∫ ε D(ε) f(ε) dε in eV."""
    energies_e = _check_energies(energies_e)
    dos_e = _check_dos(dos_e, energies_e)
    return float(dos_e @ band_energy_weights(energies_e, mu_eV, temperature_K, method))


def entropy_contribution(dos_e: ArrayLike, energies_e: ArrayLike, mu_eV: float,
                         temperature_K: float, method: str = "analytical") -> float:
    """Entropy term −TS = k_BT ∫ D [f ln f + (1−f) ln(1−f)] dε in eV (≤ 0 for D ≥ 0)."""
    energies_e = _check_energies(energies_e)
    dos_e = _check_dos(dos_e, energies_e)
    return float(dos_e @ entropy_weights(energies_e, mu_eV, temperature_K, method))


def fermi_level(dos_e: ArrayLike, energies_e: ArrayLike, n_electrons: float,
                temperature_K: float, method: str = "analytical") -> float:
    """The μ (eV) in [first, last energy] with ∫ D f dε = n_electrons (to ~1e-13 eV in μ)."""
    energies_e = _check_energies(energies_e)
    dos_e = _check_dos(dos_e, energies_e)
    _check_temperature(temperature_K)
    _check_method(method)
    if not (np.isfinite(n_electrons) and n_electrons > 0):
        raise MlscaleError(f"number of electrons must be positive, got {n_electrons}")

    def excess(mu: float) -> float:
        return dos_e @ occupation_weights(energies_e, mu, temperature_K, method) - n_electrons

    low, high = excess(energies_e[0]), excess(energies_e[-1])
    if low * high > 0:
        raise MlscaleError(
            f"cannot place {n_electrons} electrons within the energy grid "
            f"[{energies_e[0]:g}, {energies_e[-1]:g}] eV: the DOS holds "
            f"{low + n_electrons:.6g} to {high + n_electrons:.6g} electrons there")
    if low == 0:
        return float(energies_e[0])
    if high == 0:
        return float(energies_e[-1])
    return float(brentq(excess, energies_e[0], energies_e[-1], xtol=1e-13,
                        rtol=4 * np.finfo(float).eps, maxiter=200))


def electronic_structure(dos_e: ArrayLike, energies_e: ArrayLike, n_electrons: float,
                         temperature_K: float, method: str = "analytical") -> dict[str, float]:
    """Fermi level and the energies at it: keys ``fermi_energy_eV``, ``band_energy_eV``,
    ``entropy_contribution_eV`` (−TS) and ``number_of_electrons`` (the count reached)."""
    mu = fermi_level(dos_e, energies_e, n_electrons, temperature_K, method)
    return {
        "fermi_energy_eV": mu,
        "band_energy_eV": band_energy(dos_e, energies_e, mu, temperature_K, method),
        "entropy_contribution_eV": entropy_contribution(dos_e, energies_e, mu, temperature_K,
                                                        method),
        "number_of_electrons": number_of_electrons(dos_e, energies_e, mu, temperature_K, method),
    }


def weighted_sum(ldos_pe: ArrayLike, w_e: np.ndarray) -> np.ndarray:
    """Σ_e LDOS(r, ε_e) w_e per point, float64, shape ``ldos_pe.shape[:-1]`` (units of LDOS
    times those of w_e).

    A matrix–vector product (numpy einsum, no BLAS threads); an LDOS that is not float64
    (the model's float32) is cast through a 2 MiB float64 buffer, so no full-size copy is
    made. MlscaleError for NaN or infinite values.
    """
    ldos_pe = np.asarray(ldos_pe)
    flat_pe = _flat_ldos(ldos_pe, w_e.size)
    n_p = np.empty(flat_pe.shape[0])
    if flat_pe.dtype == np.float64:
        np.einsum("pe,e->p", flat_pe, w_e, out=n_p)
    else:
        rows = max(1, _CHUNK_ELEMENTS // max(w_e.size, 1))
        buffer_pe = np.empty((min(rows, flat_pe.shape[0]), w_e.size))
        for start in range(0, flat_pe.shape[0], rows):
            chunk_pe = buffer_pe[:min(rows, flat_pe.shape[0] - start)]
            np.copyto(chunk_pe, flat_pe[start:start + rows])
            np.einsum("pe,e->p", chunk_pe, w_e, out=n_p[start:start + chunk_pe.shape[0]])
    if not np.all(np.isfinite(n_p)):
        raise MlscaleError("LDOS contains NaN or infinite values")
    return n_p.reshape(ldos_pe.shape[:-1])


def density(ldos_pe: ArrayLike, energies_e: ArrayLike, mu_eV: float, temperature_K: float,
            method: str = "analytical") -> np.ndarray:
    """Electron density n(r) = ∫ LDOS(r, ε) f(ε) dε in 1/Å³, float64, shape ``ldos_pe.shape[:-1]``.

    Works on any block of points (:func:`weighted_sum` with the occupation weights).
    """
    energies_e = _check_energies(energies_e)
    return weighted_sum(ldos_pe, occupation_weights(energies_e, mu_eV, temperature_K, method))


# -- the density through an energy window ------------------------------------------------
#: 1 − f below, f above the window at most this (double precision's ε): exp(−36.04)
WINDOW_TOLERANCE = 2.0**-52
WINDOW_KT = -math.log(WINDOW_TOLERANCE)  # 36.04 k_BT
#: half-width (eV) of the Fermi-level bracket the prediction builds its window on
BRACKET_HALF_WIDTH_EV = 0.05


@dataclass(frozen=True)
class EnergyWindow:
    """Which LDOS energies the density needs per point while μ is only bracketed.

    For every μ in [mu_low_eV, mu_high_eV] the occupation weights (eV) of the energies
    ``[0, start)`` are ``summed_e`` to a relative 2^-52 (fully occupied), and those of
    ``[stop, energies)`` are below 2^-52 of their fully occupied value (empty); so
    n(r) = Σ_{e<start} summed_e LDOS_e (summed once, while the LDOS is made) + Σ over the
    window ``[start, stop)`` of w_e(μ) LDOS_e, to round-off. A window for a known μ
    (:meth:`at`) sums every energy with w_e(μ) and keeps none.
    """

    start: int
    stop: int
    mu_low_eV: float
    mu_high_eV: float
    summed_e: np.ndarray  # eV, length start

    @classmethod
    def at(cls, energies_e: ArrayLike, mu_eV: float, temperature_K: float,
           method: str = "analytical") -> EnergyWindow:
        """The window of a known Fermi level μ (eV): every energy summed, none kept."""
        w_e = occupation_weights(energies_e, mu_eV, temperature_K, method)
        return cls(w_e.size, w_e.size, float(mu_eV), float(mu_eV), w_e)

    @classmethod
    def empty(cls) -> EnergyWindow:
        """No bracket: nothing summed, nothing kept, no μ inside (the density needs a pass
        at the solved μ)."""
        return cls(0, 0, math.inf, -math.inf, np.zeros(0))

    @property
    def size(self) -> int:
        """Energies kept per point."""
        return self.stop - self.start

    def contains(self, mu_eV: float) -> bool:
        """True if the window's split of the density holds at Fermi level μ (eV)."""
        return bool(self.mu_low_eV <= mu_eV <= self.mu_high_eV)


def full_occupation_weights(energies_e: ArrayLike, method: str = "analytical") -> np.ndarray:
    """The weights w_e (eV) of f ≡ 1: ∫ g dε = Σ_e g_e w_e (the hat integrals for
    ``"analytical"``, the trapezoid rule for ``"quadrature"``)."""
    energies_e = _check_energies(energies_e)
    _check_method(method)
    if method == "quadrature":
        return _trapezoid(energies_e)
    edges = _hat_edges(energies_e)
    return (edges[2:] - edges[:-2]) / 2


def energy_window(energies_e: ArrayLike, mu_low_eV: float, mu_high_eV: float,
                  temperature_K: float, method: str = "analytical") -> EnergyWindow:
    """The :class:`EnergyWindow` of a Fermi level bracket [mu_low_eV, mu_high_eV] (eV).

    An energy is fully occupied if the whole support of its weight (``"analytical"``: its
    hat, one grid step either side; ``"quadrature"``: the energy itself) lies at least
    36.04 k_BT (1 − f ≤ 2^-52) below mu_low_eV, and empty if at least that far above
    mu_high_eV; the window is everything between: at 298 K and 0.1 eV steps
    2·(0.93 + 0.1) eV plus the bracket, ~21 energies plus the bracket's. It widens in
    proportion to T (72 k_BT plus two steps plus the bracket). Infinite bounds give the
    whole grid.
    """
    energies_e = _check_energies(energies_e)
    _check_temperature(temperature_K)
    _check_method(method)
    if not (mu_low_eV <= mu_high_eV) or np.isnan(mu_low_eV) or np.isnan(mu_high_eV):
        raise MlscaleError(f"Fermi level bracket [{mu_low_eV}, {mu_high_eV}] eV is not an "
                           "interval")
    margin = WINDOW_KT * KB_EV_PER_K * temperature_K
    low_e = high_e = energies_e
    if method == "analytical":  # the hat of energy e spans [edges e, edges e + 2]
        edges = _hat_edges(energies_e)
        low_e, high_e = edges[:-2], edges[2:]
    start = int(np.sum(high_e <= mu_low_eV - margin))  # increasing: a prefix
    stop = int(energies_e.size - np.sum(low_e >= mu_high_eV + margin))
    stop = max(stop, start)
    summed_e = full_occupation_weights(energies_e, method)[:start]
    return EnergyWindow(start, stop, float(mu_low_eV), float(mu_high_eV), summed_e)


def finish_density(summed_p: np.ndarray, window_pw: ArrayLike, window: EnergyWindow,
                   energies_e: ArrayLike, mu_eV: float, temperature_K: float,
                   method: str = "analytical") -> np.ndarray:
    """n(r) (1/Å³) at Fermi level μ (eV) from a windowed store: ``summed_p`` (float64,
    the fully occupied part, 1/Å³), updated in place and returned, plus Σ over the
    window's energies of w_e(μ)·``window_pw`` ([points, window.size], 1/(eV·Å³)),
    in blocks of rows (no full-size temporary). MlscaleError if μ is outside the window's
    bracket (the split would not be exact there) or the arrays do not fit."""
    window_pw = np.asarray(window_pw)
    if not window.contains(mu_eV):
        raise MlscaleError(f"Fermi level {mu_eV} eV is outside the window's bracket "
                           f"[{window.mu_low_eV}, {window.mu_high_eV}] eV")
    if (summed_p.ndim != 1 or summed_p.dtype != np.float64
            or window_pw.shape != (summed_p.size, window.size)):
        raise MlscaleError(f"a windowed density needs float64 [points] and [points, "
                           f"{window.size}] arrays, got {summed_p.shape} {summed_p.dtype} "
                           f"and {window_pw.shape}")
    w_e = occupation_weights(energies_e, mu_eV, temperature_K, method)[window.start:window.stop]
    rows = max(1, _CHUNK_ELEMENTS // max(window.size, 1))
    for start in range(0, summed_p.size, rows) if window.size else ():
        summed_p[start:start + rows] += weighted_sum(window_pw[start:start + rows], w_e)
    if not np.all(np.isfinite(summed_p)):
        raise MlscaleError("LDOS contains NaN or infinite values")
    return summed_p


def kept_energies(energies_e: ArrayLike, temperature_K: float,
                  half_width_eV: float = BRACKET_HALF_WIDTH_EV) -> int:
    """The most energies an :class:`EnergyWindow` keeps for a bracket [μ − half_width_eV,
    μ + half_width_eV] at any μ of a uniform grid (analytical weights; quadrature keeps
    one or two fewer): 22 for the shipped model (176 energies, 0.1 eV, 298 K)."""
    energies_e = _check_energies(energies_e)
    middle, step = energies_e[energies_e.size // 2], float(np.max(np.diff(energies_e)))
    # a bracket of this width anywhere lies, up to a shift by whole steps, inside this one
    return energy_window(energies_e, middle - half_width_eV - step, middle + half_width_eV,
                         temperature_K).size
