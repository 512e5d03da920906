"""hartree_energy_potential against the analytic result for a plane wave."""

from __future__ import annotations

import numpy as np
import pytest

from mlscale.energy import DistributedFFT
from mlscale.energy.hartree import hartree_energy_potential
from mlscale.grid import DistributedGrid, Grid
from mlscale.parallel import self_comm


def test_hartree_of_a_plane_wave():
    """n = A cos(G·r): E_H = π Ω A² / G² (atomic units)."""
    cell = np.array([[5.0, 0.0, 0.0], [1.0, 6.0, 0.0], [0.5, 0.7, 7.0]])
    grid = Grid(cell, (12, 15, 16))
    fft = DistributedFFT(DistributedGrid(grid, self_comm()))
    frac = grid.fractional_bc(grid.full_block())
    m = np.array([1, -2, 3])
    g = m @ (2 * np.pi * np.linalg.inv(cell).T)
    n = 0.3 * np.cos(2 * np.pi * frac @ m)
    energy, v_q = hartree_energy_potential(fft.forward(n), fft, fft.max_g2())
    assert energy == pytest.approx(np.pi * grid.volume * 0.3**2 / (g @ g), rel=1e-12)
    v = fft.backward(v_q)
    assert np.allclose(v, 4 * np.pi / (g @ g) * n, atol=1e-13)
