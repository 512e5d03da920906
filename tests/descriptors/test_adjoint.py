"""Bispectrum adjoint (forces through the native descriptors) against finite differences.

The reference is independent of the adjoint: E(R) = Σ_p Σ_f β_pf B_pf(R) evaluated with
:func:`mlscale.descriptors.native.compute_block` (itself tested against LAMMPS), and
F = -∂E/∂R by the central finite-difference stencil of fourth order, float64,
displacements 2.5e-4 and 5e-4 Å (truncation error ~1e-12 relative).
"""

from __future__ import annotations

import json

import numba
import numpy as np
import pytest
from ase import Atoms

from mlscale import BispectrumSettings, Block, Grid, MlscaleError
from mlscale.descriptors.adjoint import bispectrum_forces
from mlscale.descriptors.native import compute_block
from mlscale.grid import Decomposition, DistributedGrid

STEP = 2.5e-4     # Å


def energy(atoms, grid, block, settings, beta_pf, skip_p=None) -> float:
    """Σ_p Σ_f β_pf B_pf over the block (optionally without point ``skip_p``)."""
    b_pf = compute_block(atoms, grid, block, settings).reshape(block.size, -1)
    weights_p = np.ones(block.size)
    if skip_p is not None:
        weights_p[skip_p] = 0.0
    return float(np.sum(weights_p[:, None] * b_pf * beta_pf))


def fd_forces(atoms, grid, block, settings, beta_pf, skip_p=None, atom_list=None):
    """-∂E/∂R_av by the fourth-order central stencil (E at ±h, ±2h)."""
    forces_av = np.zeros((len(atoms), 3))
    for a in atom_list if atom_list is not None else range(len(atoms)):
        for v in range(3):
            e = {}
            for k in (-2, -1, 1, 2):
                moved = atoms.copy()
                moved.positions[a, v] += k * STEP
                e[k] = energy(moved, grid, block, settings, beta_pf, skip_p)
            forces_av[a, v] = -(e[-2] - 8 * e[-1] + 8 * e[1] - e[2]) / (12 * STEP)
    return forces_av


def assert_close_relative(forces_av, reference_av, rtol=1e-6):
    """Per component: |F - F_fd| <= rtol |F_fd| (plus 1e-9 of the largest component)."""
    assert np.abs(reference_av).max() > 1e-3, "a test of nothing: no force"
    err = np.abs(forces_av - reference_av)
    bound = rtol * np.abs(reference_av) + 1e-9 * np.abs(reference_av).max()
    worst = np.unravel_index(np.argmax(err / bound), err.shape)
    assert np.all(err <= bound), (
        f"component {worst}: adjoint {forces_av[worst]!r}, finite differences "
        f"{reference_av[worst]!r}, relative error {err[worst] / abs(reference_av[worst]):.2e}")


def random_beta(block, settings, seed=0):
    return np.random.default_rng(seed).normal(size=(block.size, settings.n_features))


def al_cubic(n_atoms=3, a=4.05, seed=1):
    rng = np.random.default_rng(seed)
    cell = np.eye(3) * a
    return Atoms(f"Al{n_atoms}", positions=rng.uniform(0, a, (n_atoms, 3)), cell=cell, pbc=True)


@pytest.mark.parametrize("twojmax", [2, 4, 10])
def test_forces_equal_finite_differences_for_al_in_a_cubic_cell(twojmax):
    atoms = al_cubic(3)
    grid = Grid(atoms.cell.array, (5, 4, 6))
    block = Block((1, 0, 2), (3, 3, 5))     # 18 points, not at the origin
    settings = BispectrumSettings(twojmax=twojmax)
    beta_pf = random_beta(block, settings)
    forces_av = bispectrum_forces(atoms, grid, block, settings, beta_pf)
    assert_close_relative(forces_av, fd_forces(atoms, grid, block, settings, beta_pf))


def test_forces_equal_finite_differences_for_mala_be2(be2):
    """MALA's Be2 cell (18×18×27 grid, twojmax 10, Be: radius 0.5, weight 1), 12 points
    around the atoms; the grid's own cell from MALA's reference data."""
    info = json.loads((be2 / "Be_snapshot0.info.json").read_text())["atoms"]
    atoms = Atoms(numbers=info["numbers"], positions=info["positions"], cell=info["cell"],
                  pbc=True)
    settings = BispectrumSettings(species=("Be",))
    grid = Grid(atoms.cell.array, (18, 18, 27))
    block = Block((4, 5, 8), (6, 7, 11))
    beta_pf = random_beta(block, settings, seed=14)
    forces_av = bispectrum_forces(atoms, grid, block, settings, beta_pf)
    assert_close_relative(forces_av, fd_forces(atoms, grid, block, settings, beta_pf))


@pytest.mark.parametrize("switchflag", [0, 1])
def test_forces_equal_finite_differences_for_two_species_in_a_triclinic_cell(switchflag):
    cell = np.array([[5.1, 0.0, 0.0], [1.3, 4.6, 0.0], [-0.7, 0.9, 5.4]])
    atoms = Atoms("AlBeAlBe", cell=cell, pbc=True,
                  scaled_positions=[[0.1, 0.2, 0.3], [0.6, 0.1, 0.8], [0.4, 0.7, 0.5],
                                    [0.85, 0.55, 0.15]])
    settings = BispectrumSettings(twojmax=4, species=("Al", "Be"), radii=(0.5, 0.42),
                                  weights=(1.0, 0.7), rmin0=0.4, switchflag=switchflag)
    grid = Grid(cell, (6, 5, 7))
    block = Block((2, 1, 0), (4, 4, 3))
    beta_pf = random_beta(block, settings, seed=2)
    forces_av = bispectrum_forces(atoms, grid, block, settings, beta_pf)
    assert_close_relative(forces_av, fd_forces(atoms, grid, block, settings, beta_pf))


def test_forces_equal_finite_differences_in_a_cell_smaller_than_the_cutoff():
    """A 2.3 Å triclinic cell: each point sees dozens of images of each atom."""
    cell = np.array([[2.3, 0.0, 0.0], [0.4, 2.1, 0.0], [0.3, -0.2, 2.5]])
    atoms = Atoms("Al2", cell=cell, pbc=True, scaled_positions=[[0.1, 0.3, 0.2],
                                                                 [0.55, 0.6, 0.75]])
    settings = BispectrumSettings(twojmax=10)
    assert 2.3 < settings.cutoff / 2
    grid = Grid(cell, (3, 3, 4))
    block = Block((0, 1, 1), (2, 3, 3))
    beta_pf = random_beta(block, settings, seed=3)
    forces_av = bispectrum_forces(atoms, grid, block, settings, beta_pf)
    assert_close_relative(forces_av, fd_forces(atoms, grid, block, settings, beta_pf))


def test_an_atom_on_a_grid_point_is_skipped_there_as_in_the_descriptors():
    """The point on the atom does not see it (r² <= 1e-20), so that term has no gradient.

    A cell wider than twice the cutoff, so the point sees no other image of the atom:
    the atom's force is then the finite difference of E without that point (a central
    difference across the skipped term would differentiate the term as if it were not
    skipped); the other atoms are differentiated as usual.
    """
    atoms = al_cubic(3, a=9.6, seed=4)
    grid = Grid(atoms.cell.array, (4, 4, 4))
    block = Block((0, 0, 0), (2, 2, 2))
    atoms.positions[0] = grid.positions_bv(block)[1, 0, 1]      # point p = 1*4 + 0*2 + 1 = 5
    settings = BispectrumSettings(twojmax=4)
    assert 2 * settings.cutoff < 9.6
    beta_pf = random_beta(block, settings, seed=5)
    forces_av = bispectrum_forces(atoms, grid, block, settings, beta_pf)
    others = fd_forces(atoms, grid, block, settings, beta_pf, atom_list=[1, 2])
    assert_close_relative(forces_av[1:], others[1:])
    on_point = fd_forces(atoms, grid, block, settings, beta_pf, skip_p=5, atom_list=[0])
    assert np.abs(on_point[0]).max() > 0
    assert_close_relative(forces_av[:1], on_point[:1])


@pytest.mark.parametrize("nranks", [2, 3])
def test_forces_summed_over_the_blocks_equal_the_whole_grid(nranks):
    atoms = al_cubic(4, seed=6)
    grid = Grid(atoms.cell.array, (7, 5, 6))
    settings = BispectrumSettings(twojmax=6)
    whole = Block((0, 0, 0), grid.shape)
    beta_g = random_beta(whole, settings, seed=7).reshape(*grid.shape, -1)
    whole_av = bispectrum_forces(atoms, grid, whole, settings, beta_g)
    total_av = np.zeros_like(whole_av)
    for block in Decomposition(grid.shape, nranks).blocks():
        total_av += bispectrum_forces(atoms, grid, block, settings, beta_g[block.slices])
    np.testing.assert_allclose(total_av, whole_av, rtol=1e-12, atol=1e-12 * abs(whole_av).max())


def test_distributed_grid_gives_its_rank_block_forces():
    atoms = al_cubic(2, seed=8)
    grid = Grid(atoms.cell.array, (4, 5, 4))
    settings = BispectrumSettings(twojmax=2)
    dgrid = DistributedGrid.share(grid, rank=1, nranks=3)
    beta_pf = random_beta(dgrid.block, settings, seed=9)
    expected = bispectrum_forces(atoms, grid, dgrid.block, settings, beta_pf)
    np.testing.assert_array_equal(bispectrum_forces(atoms, dgrid, None, settings, beta_pf),
                                  expected)


def test_one_and_two_threads_give_the_same_forces():
    """Per-thread accumulators: no race, the same sum to round-off (3 batches of points)."""
    atoms = al_cubic(3, seed=10)
    grid = Grid(atoms.cell.array, (6, 6, 6))
    block = Block((0, 0, 0), (4, 6, 6))
    settings = BispectrumSettings(twojmax=2)
    beta_pf = random_beta(block, settings, seed=11)
    threads = numba.get_num_threads()
    try:
        numba.set_num_threads(1)
        one_av = bispectrum_forces(atoms, grid, block, settings, beta_pf)
        numba.set_num_threads(min(2, numba.config.NUMBA_NUM_THREADS))
        two_av = bispectrum_forces(atoms, grid, block, settings, beta_pf)
    finally:
        numba.set_num_threads(threads)
    np.testing.assert_allclose(two_av, one_av, rtol=1e-12, atol=1e-12 * abs(one_av).max())


def test_sum_of_forces_is_minus_the_derivative_under_a_rigid_translation():
    """Σ_a F_a·u = -dE/dt of all atoms moved by t·u (the grid stays: Σ_a F_a ≠ 0)."""
    atoms = al_cubic(3, seed=12)
    grid = Grid(atoms.cell.array, (4, 4, 4))
    block = Block((1, 1, 0), (3, 3, 4))
    settings = BispectrumSettings(twojmax=4)
    beta_pf = random_beta(block, settings, seed=13)
    u_v = np.array([0.3, -0.5, 0.8]) / np.linalg.norm([0.3, -0.5, 0.8])
    e = {}
    for k in (-2, -1, 1, 2):
        moved = atoms.copy()
        moved.positions += k * STEP * u_v
        e[k] = energy(moved, grid, block, settings, beta_pf)
    reference = -(e[-2] - 8 * e[-1] + 8 * e[1] - e[2]) / (12 * STEP)
    total_v = bispectrum_forces(atoms, grid, block, settings, beta_pf).sum(axis=0)
    assert abs(total_v @ u_v - reference) <= 1e-6 * abs(reference)
    assert np.linalg.norm(total_v) > 1e-3      # the grid breaks translation invariance


def test_bad_beta_and_settings_raise_clear_errors():
    atoms = al_cubic(2)
    grid = Grid(atoms.cell.array, (4, 4, 4))
    block = Block((0, 0, 0), (2, 2, 2))
    settings = BispectrumSettings(twojmax=2)
    with pytest.raises(MlscaleError, match="beta_pf has shape"):
        bispectrum_forces(atoms, grid, block, settings, np.zeros((8, 3)))
    with pytest.raises(MlscaleError, match="NaN"):
        bispectrum_forces(atoms, grid, block, settings, np.full((8, 5), np.nan))
    with pytest.raises(MlscaleError, match="not in the bispectrum settings"):
        bispectrum_forces(Atoms("Cu2", positions=atoms.positions, cell=atoms.cell, pbc=True),
                          grid, block, settings, np.zeros((8, 5)))
    with pytest.raises(MlscaleError, match="needs a block"):
        bispectrum_forces(atoms, grid, None, settings, np.zeros((8, 5)))
