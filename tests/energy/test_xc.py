"""xc_energy_potential: LDA against the Slater + Perdew-Zunger formula, the PBE potential
against finite differences of the energy."""

from __future__ import annotations

import numpy as np
import pytest

from mlscale.energy import DistributedFFT
from mlscale.energy.xc import xc_energy_potential
from mlscale.grid import DistributedGrid, Grid
from mlscale.parallel import self_comm


def pz_lda_energy_per_electron(n):
    """Slater exchange + Perdew–Zunger 1981 correlation (rs >= 1 branch), Hartree."""
    rs = (3 / (4 * np.pi * n)) ** (1 / 3)
    exchange = -0.75 * (3 * n / np.pi) ** (1 / 3)
    correlation = -0.1423 / (1 + 1.0529 * np.sqrt(rs) + 0.3334 * rs)
    return exchange + correlation


def test_lda_uniform_density_matches_formula():
    grid = Grid(np.eye(3) * 6.0, (8, 8, 8))
    fft = DistributedFFT(DistributedGrid(grid, self_comm()))
    n = np.full(grid.shape, 0.01)  # rs = 2.88
    energy, v = xc_energy_potential(n, fft.forward(n), fft, "LDA", fft.max_g2())
    assert energy == pytest.approx(grid.volume * 0.01 * pz_lda_energy_per_electron(0.01), rel=1e-10)
    h = 1e-6  # v = d(n ε)/dn
    dv = ((0.01 + h) * pz_lda_energy_per_electron(0.01 + h)
          - (0.01 - h) * pz_lda_energy_per_electron(0.01 - h)) / (2 * h)
    assert np.allclose(v, dv, rtol=1e-7)


def test_gga_potential_is_the_functional_derivative(be2):
    """PBE: ∫ v_xc δn = δE_xc for a small smooth δn (finite difference)."""
    cell = np.array([[6.0, 0.0, 0.0], [0.5, 6.5, 0.0], [0.3, 0.2, 7.0]])
    grid = Grid(cell, (16, 16, 18))
    fft = DistributedFFT(DistributedGrid(grid, self_comm()))
    frac = grid.fractional_bc(grid.full_block())
    n = 0.02 + 0.01 * np.cos(2 * np.pi * frac[..., 0]) * np.cos(2 * np.pi * frac[..., 2])
    dn = 1e-6 * np.sin(2 * np.pi * (frac[..., 1] + frac[..., 2]))
    _, v = xc_energy_potential(n, fft.forward(n), fft, "PBE", fft.max_g2())
    plus, _ = xc_energy_potential(n + dn, fft.forward(n + dn), fft, "PBE", fft.max_g2())
    minus, _ = xc_energy_potential(n - dn, fft.forward(n - dn), fft, "PBE", fft.max_g2())
    assert (plus - minus) / 2 == pytest.approx(fft.integrate(v * dn), rel=1e-6)
