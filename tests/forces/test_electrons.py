"""∂E/∂LDOS with the Fermi level held at the electron count, against central finite
differences of mlscale.electrons' own energies (float64)."""

from __future__ import annotations

import numpy as np
import pytest

from mlscale import electrons
from mlscale.errors import MlscaleError
from mlscale.forces.electrons import ldos_gradient, weight_derivatives
from mlscale.parallel import self_comm

ENERGIES_E = np.linspace(-6.0, 4.0, 41)  # eV
VOXEL = 0.05  # Å³
ELECTRONS = 30.0


def random_ldos(seed=0, points=60):
    rng = np.random.default_rng(seed)
    smooth_e = np.sqrt(np.clip(ENERGIES_E + 7.0, 0, None))  # free-electron-like DOS shape
    return smooth_e * rng.uniform(0.5, 1.5, (points, 1)) * rng.uniform(0.8, 1.2, (points, 41))


def energy(ldos_pe, temperature_K, method, a_p, b_p):
    """E_band − TS + E_n[n], E_n = Σ_p ΔV (½ a_p n_p² + b_p n_p) (eV), μ from the count."""
    dos_e = electrons.dos_from_ldos(ldos_pe, VOXEL)
    mu = electrons.fermi_level(dos_e, ENERGIES_E, ELECTRONS, temperature_K, method)
    n_p = electrons.density(ldos_pe, ENERGIES_E, mu, temperature_K, method)
    return (electrons.band_energy(dos_e, ENERGIES_E, mu, temperature_K, method)
            + electrons.entropy_contribution(dos_e, ENERGIES_E, mu, temperature_K, method)
            + VOXEL * float(np.sum(0.5 * a_p * n_p**2 + b_p * n_p)))


def gradient(ldos_pe, temperature_K, method, a_p, b_p):
    dos_e = electrons.dos_from_ldos(ldos_pe, VOXEL)
    mu = _mu(ldos_pe, temperature_K, method)
    n_p = electrons.density(ldos_pe, ENERGIES_E, mu, temperature_K, method)
    return ldos_gradient(ldos_pe, ENERGIES_E, dos_e, mu, temperature_K, VOXEL, a_p * n_p + b_p,
                         self_comm(), method)


@pytest.mark.parametrize("method", ["analytical", "quadrature"])
@pytest.mark.parametrize("temperature_K", [298.0, 3000.0])
def test_ldos_gradient_equals_central_finite_differences(method, temperature_K):
    ldos_pe = random_ldos()
    rng = np.random.default_rng(1)
    a_p, b_p = rng.uniform(0.5, 2.0, 60), rng.normal(0, 3.0, 60)  # eV·Å³, eV
    grad = gradient(ldos_pe, temperature_K, method, a_p, b_p)
    n_p = electrons.density(ldos_pe, ENERGIES_E, _mu(ldos_pe, temperature_K, method),
                            temperature_K, method)
    grad_pe = grad.on_points(a_p * n_p + b_p)
    for seed in range(3):
        direction_pe = np.random.default_rng(10 + seed).normal(size=ldos_pe.shape) * ldos_pe
        h = 1e-4
        fd = (energy(ldos_pe + h * direction_pe, temperature_K, method, a_p, b_p)
              - energy(ldos_pe - h * direction_pe, temperature_K, method, a_p, b_p)) / (2 * h)
        analytic = float(np.sum(grad_pe * direction_pe))
        assert analytic == pytest.approx(fd, rel=1e-6, abs=1e-9)
        # without μ's response the derivative is wrong: the test can fail
        frozen_pe = grad_pe + VOXEL * grad.fermi_response_eV * grad.slope_e
        assert abs(float(np.sum(frozen_pe * direction_pe)) - fd) > 1e-3 * abs(fd)


def _mu(ldos_pe, temperature_K, method):
    dos_e = electrons.dos_from_ldos(ldos_pe, VOXEL)
    return electrons.fermi_level(dos_e, ENERGIES_E, ELECTRONS, temperature_K, method)


@pytest.mark.parametrize("method", ["analytical", "quadrature"])
@pytest.mark.parametrize("mu", [-1.234, 0.05, 3.9])
def test_weight_derivatives_equal_richardson_differences_in_mu(method, mu):
    temperature_K = 500.0
    analytic = weight_derivatives(ENERGIES_E, mu, temperature_K, method)
    functions = (electrons.occupation_weights, electrons.band_energy_weights,
                 electrons.entropy_weights)
    for weights, d_e in zip(functions, analytic):
        def central(h, weights=weights):
            return (weights(ENERGIES_E, mu + h, temperature_K, method)
                    - weights(ENERGIES_E, mu - h, temperature_K, method)) / (2 * h)
        h = 2e-3 if method == "analytical" else 5e-4  # eV: round-off vs truncation
        richardson_e = (4 * central(h / 2) - central(h)) / 3
        assert np.max(np.abs(d_e - richardson_e)) <= 1e-8 * np.max(np.abs(d_e))


def test_ldos_gradient_rejects_mismatched_potential():
    ldos_pe = random_ldos()
    dos_e = electrons.dos_from_ldos(ldos_pe, VOXEL)
    with pytest.raises(MlscaleError, match="potential has 3 points"):
        ldos_gradient(ldos_pe, ENERGIES_E, dos_e, 0.0, 300.0, VOXEL, np.zeros(3), self_comm())
