"""Ewald forces against central finite differences of mlscale.energy.ewald.ewald_energy."""

from __future__ import annotations

import numpy as np
import pytest
from ase.build import bulk

from mlscale.energy import DistributedFFT, ewald_energy
from mlscale.energy.ewald import bspline_weights
from mlscale.forces.ewald import bspline_weights_and_derivatives, ewald_forces
from mlscale.grid import DistributedGrid, Grid
from mlscale.parallel import world
from mlscale.units import BOHR_ANGSTROM


def structure(seed=0):
    """Thermal-like Al (4 atoms, cubic) and a triclinic two-charge cell, in Bohr."""
    atoms = bulk("Al", "fcc", a=4.05, cubic=True)
    atoms.rattle(0.1, seed=seed)
    cells = {"cubic": (atoms.cell.array / BOHR_ANGSTROM, atoms.positions / BOHR_ANGSTROM,
                       np.full(4, 3.0), (15, 15, 15))}
    rng = np.random.default_rng(seed)
    tri_cv = np.array([[6.0, 0.0, 0.0], [1.5, 7.0, 0.0], [0.7, -1.1, 8.0]])
    cells["triclinic"] = (tri_cv, rng.random((3, 3)) @ tri_cv, np.array([2.0, 4.0, 1.0]),
                          (12, 14, 16))
    return cells


def fft_of(cell_cv, shape):
    return DistributedFFT(DistributedGrid(Grid(cell_cv, shape), world()))


@pytest.mark.parametrize("name", ["cubic", "triclinic"])
def test_ewald_forces_equal_central_finite_differences(name):
    cell_cv, pos_av, charge_a, shape = structure()[name]
    fft = fft_of(cell_cv, shape)
    forces_av = ewald_forces(pos_av, charge_a, fft)
    h = 1e-3  # Bohr
    fd_av = np.zeros_like(pos_av)
    for a in range(len(pos_av)):
        for v in range(3):
            step = np.zeros_like(pos_av)
            step[a, v] = h
            fd_av[a, v] = -(ewald_energy(pos_av + step, charge_a, fft)
                            - ewald_energy(pos_av - step, charge_a, fft)) / (2 * h)
    assert np.max(np.abs(forces_av - fd_av)) <= 1e-4 * np.max(np.abs(fd_av))


def test_ewald_forces_sum_to_zero_and_ignore_translations():
    cell_cv, pos_av, charge_a, shape = structure(seed=3)["triclinic"]
    fft = fft_of(cell_cv, shape)
    forces_av = ewald_forces(pos_av, charge_a, fft)
    scale = np.max(np.abs(forces_av))
    assert np.max(np.abs(forces_av.sum(axis=0))) <= 1e-9 * scale
    moved_av = ewald_forces(pos_av + np.array([0.37, -1.3, 2.9]), charge_a, fft)
    assert np.max(np.abs(moved_av - forces_av)) <= 1e-9 * scale


def test_ewald_force_between_two_far_charges_is_coulomb():
    """Two opposite charges 3 Bohr apart in a 60 Bohr box: F ≈ q²/r² (images ~1e-3 smaller)."""
    cell_cv = np.eye(3) * 60.0
    pos_av = np.array([[30.0, 30.0, 28.5], [30.0, 30.0, 31.5]])
    forces_av = ewald_forces(pos_av, np.array([1.0, -1.0]), fft_of(cell_cv, (40, 40, 40)))
    assert forces_av[0, 2] == pytest.approx(1 / 9.0, rel=2e-3)  # attraction towards +z
    assert np.allclose(forces_av[:, :2], 0, atol=1e-10)


def test_bspline_derivatives_are_the_derivatives_of_the_energy_weights():
    x_a = np.array([0.01, 0.3, 5.75, 11.99])  # h does not cross an integer
    k0_a, w_aj, dw_aj = bspline_weights_and_derivatives(x_a)
    k0_ref, w_ref = bspline_weights(x_a)
    assert np.array_equal(k0_a, k0_ref) and np.array_equal(w_aj, w_ref)
    h = 1e-5
    fd_aj = (bspline_weights(x_a + h)[1] - bspline_weights(x_a - h)[1]) / (2 * h)
    assert np.allclose(dw_aj, fd_aj, atol=1e-9)
    assert np.allclose(dw_aj.sum(axis=1), 0, atol=1e-14)
