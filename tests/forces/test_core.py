"""Core-charge forces against central finite differences of mlscale.energy's XC terms
(Be2: PBE with core correction; the valence density held fixed)."""

from __future__ import annotations

import numpy as np

from mlscale.energy import density_energy_terms
from mlscale.forces.core import core_forces
from mlscale.forces.density import density_gradient
from mlscale.grid import DistributedGrid, Grid
from mlscale.parallel import self_comm
from tests.forces.test_density import case


def xc_terms(density, dgrid, atoms, pps, ecut):
    """The terms that depend on the core charge: E_xc[n + n_c] − ∫ n v_xc (eV)."""
    terms = density_energy_terms(density, dgrid, atoms, pps, ecutrho_Ry=ecut)
    return terms["xc_energy_eV"] + terms["double_counting_eV"]


def test_core_forces_equal_central_finite_differences(be2):
    atoms, density, pps, ecut = case("Be2", be2=be2)
    atoms.rattle(0.05, seed=1)  # off the symmetric positions
    dgrid = DistributedGrid(Grid(atoms.cell.array, density.shape), self_comm())
    gradient = density_gradient(density, dgrid, atoms, pps, ecutrho_Ry=ecut)
    forces_av = core_forces(gradient.core_potential_b, gradient.fft, atoms,
                            gradient.pseudopotentials, gradient.g2_max)
    h = 1e-3  # Å
    fd_av = np.zeros((len(atoms), 3))
    for a in range(len(atoms)):
        for v in range(3):
            energies = []
            for sign in (1, -1):
                moved = atoms.copy()
                moved.positions[a, v] += sign * h
                energies.append(xc_terms(density, dgrid, moved, pps, ecut))
            fd_av[a, v] = -(energies[0] - energies[1]) / (2 * h)
    assert np.max(np.abs(fd_av)) > 1e-2  # eV/Å: a real test
    assert np.max(np.abs(forces_av - fd_av)) <= 1e-4 * np.max(np.abs(fd_av))


def test_no_core_charge_gives_zero_core_forces(al_pseudo):
    atoms, density, pps, ecut = case("Al", al_pseudo=al_pseudo)
    dgrid = DistributedGrid(Grid(atoms.cell.array, density.shape), self_comm())
    gradient = density_gradient(density, dgrid, atoms, pps, ecutrho_Ry=ecut)
    assert gradient.core_potential_b is None
    forces_av = core_forces(None, gradient.fft, atoms, gradient.pseudopotentials, ecut)
    assert np.array_equal(forces_av, np.zeros((len(atoms), 3)))
