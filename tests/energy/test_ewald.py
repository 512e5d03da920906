"""ewald_energy against Quantum ESPRESSO, a brute-force Ewald sum and a supercell, on one rank
and several (mpiexec -n 2 python -m pytest --with-mpi -m mpi tests/energy)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from scipy.special import erfc

from mlscale.energy import DistributedFFT, ewald_energy
from mlscale.grid import DistributedGrid, Grid
from mlscale.io import read_structure
from mlscale.parallel import self_comm, world
from mlscale.units import BOHR_ANGSTROM, HARTREE_EV
from tests.energy._qe import AL_DIR, qe_printed


def qe_valences(path) -> dict[str, float]:
    """Valence charges from pw.x's ``atomic species valence mass`` table."""
    text = Path(path).read_text().split("atomic species   valence")[1].split("\n\n")[0]
    return {line.split()[0]: float(line.split()[1]) for line in text.strip().splitlines()[1:]}


@pytest.mark.parametrize("name", ["ewald_triclinic", "ewald_monoclinic", "ewald_orthorhombic"])
def test_ewald_matches_qe(name):
    atoms = read_structure(AL_DIR / f"{name}.scf.in")
    valence = qe_valences(AL_DIR / f"{name}.scf.out")
    charges = [valence[s] for s in atoms.get_chemical_symbols()]
    cell = atoms.cell.array / BOHR_ANGSTROM
    fft = DistributedFFT(DistributedGrid(Grid(cell, (30, 32, 36)), self_comm()))
    energy = ewald_energy(atoms.positions / BOHR_ANGSTROM, charges, fft) * HARTREE_EV
    assert abs(energy - qe_printed(AL_DIR / f"{name}.scf.out", "ewald")) < 1e-6


def brute_force_ewald(pos_av, charge_a, cell_cv, eta=0.5, images=6, g_range=14):
    """Plain Ewald sum with every image/G vector in a box (Hartree, Bohr)."""
    volume = abs(np.linalg.det(cell_cv))
    r = np.arange(-g_range, g_range + 1)
    m = np.stack(np.meshgrid(r, r, r, indexing="ij"), -1).reshape(-1, 3)
    g = m[np.any(m != 0, axis=1)] @ (2 * np.pi * np.linalg.inv(cell_cv).T)
    g2 = np.sum(g**2, axis=1)
    s = np.exp(-1j * g @ pos_av.T) @ charge_a
    energy = 2 * np.pi / volume * np.sum(np.exp(-g2 / (4 * eta**2)) / g2 * np.abs(s) ** 2)
    r = np.arange(-images, images + 1)
    shifts = np.stack(np.meshgrid(r, r, r, indexing="ij"), -1).reshape(-1, 3) @ cell_cv
    for i, q in enumerate(charge_a):
        d = np.linalg.norm(pos_av[i] + shifts[:, None, :] - pos_av[None, :, :], axis=2)
        d = np.where(d < 1e-10, np.inf, d)
        energy += 0.5 * np.sum(q * charge_a[None, :] * erfc(eta * d) / d)
    return energy - eta / np.sqrt(np.pi) * np.sum(charge_a**2) \
        - np.pi * np.sum(charge_a) ** 2 / (2 * volume * eta**2)


@pytest.mark.parametrize("shape", [(24, 27, 30), (15, 16, 18), (45, 40, 40)])
def test_ewald_matches_brute_force(shape):
    rng = np.random.default_rng(7)
    cell = np.array([[7.0, 0.3, -0.5], [1.2, 8.0, 0.4], [-0.7, 0.9, 9.0]])
    pos = rng.random((7, 3)) @ cell + 20.0  # outside the cell: wrapped
    charges = rng.choice([1.0, 2.0, 3.0, 4.0], 7)
    fft = DistributedFFT(DistributedGrid(Grid(cell, shape), self_comm()))
    reference = brute_force_ewald(pos, charges, cell)
    assert abs(ewald_energy(pos, charges, fft) - reference) < 1e-11 * abs(reference)


def test_ewald_crystal_per_atom_is_size_independent():
    """fcc lattice: a 3x3x3 supercell has 27 times the primitive cell's energy."""
    prim = np.array([[0, 0.5, 0.5], [0.5, 0, 0.5], [0.5, 0.5, 0]]) * 7.6
    one = brute_force_ewald(np.zeros((1, 3)), np.array([3.0]), prim, eta=0.8, images=8, g_range=10)
    pos = np.array([i * prim[0] + j * prim[1] + k * prim[2]
                    for i in range(3) for j in range(3) for k in range(3)])
    fft = DistributedFFT(DistributedGrid(Grid(3 * prim, (36, 36, 36)), self_comm()))
    assert abs(ewald_energy(pos, np.full(27, 3.0), fft) / 27 - one) < 1e-11


@pytest.mark.mpi(min_size=2)
def test_ewald_independent_of_ranks():
    rng = np.random.default_rng(11)
    cell = np.array([[9.0, 0.5, 0.0], [0.4, 8.0, 0.6], [-0.3, 0.2, 10.0]])
    pos = rng.random((20, 3)) @ cell
    charges = rng.choice([1.0, 3.0], 20)
    grid = Grid(cell, (27, 24, 30))
    distributed = ewald_energy(pos, charges, DistributedFFT(DistributedGrid(grid, world())))
    serial = ewald_energy(pos, charges, DistributedFFT(DistributedGrid(grid, self_comm())))
    assert distributed == pytest.approx(serial, rel=1e-13)
