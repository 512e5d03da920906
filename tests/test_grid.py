"""Grid geometry and decomposition: blocks tile the grid exactly, for any rank count."""

import itertools

import numpy as np
import pytest
from ase.build import bulk

from mlscale.errors import MlscaleError
from mlscale.grid import (
    Block,
    Decomposition,
    Grid,
    atoms_in_block,
    halo_atoms,
    halo_c,
    largest_block,
    process_grid,
    qe_fft_shape,
    slabs,
    split_axis,
)


@pytest.mark.parametrize("nranks", [1, 2, 3, 4, 5, 6, 7, 8, 12, 17])
@pytest.mark.parametrize("shape", [(18, 18, 27), (5, 7, 3), (24, 24, 24)])
def test_blocks_tile_the_grid_exactly(shape, nranks):
    exists = any(px * py * pz == nranks
                 for px in range(1, shape[0] + 1) for py in range(1, shape[1] + 1)
                 for pz in range(1, shape[2] + 1))
    if not exists:  # e.g. 17 ranks: a prime above every axis length
        with pytest.raises(MlscaleError, match="cannot split"):
            Decomposition(shape, nranks).dims  # noqa: B018 - the property raises
        return
    decomposition = Decomposition(shape, nranks)
    owner = np.full(shape, -1)
    for rank, block in enumerate(decomposition.blocks()):
        assert block.size > 0
        assert np.all(owner[block.slices] == -1), "blocks overlap"
        owner[block.slices] = rank
    assert np.all(owner >= 0), "some points have no owner"


def test_blocks_are_balanced():
    sizes = [b.size for b in Decomposition((18, 18, 27), 4).blocks()]
    assert max(sizes) - min(sizes) <= 18 * 18
    assert split_axis(10, 3) == [0, 3, 6, 10]


def test_process_grid_prefers_compact_blocks():
    assert process_grid(8, (64, 64, 64)) == (2, 2, 2)
    assert process_grid(3, (18, 18, 27)) == (1, 1, 3)
    px, py, pz = process_grid(7, (18, 18, 27))
    assert px * py * pz == 7


def test_too_many_ranks_is_a_clear_error():
    with pytest.raises(MlscaleError, match="cannot split"):
        process_grid(7, (2, 2, 2))


def test_positions_follow_fractional_convention():
    cell = np.array([[2.0, 0, 0], [-1.0, 1.7, 0], [0, 0, 3.0]])
    grid = Grid(cell, (4, 5, 6))
    pos = grid.positions_bv(grid.full_block())
    np.testing.assert_allclose(pos[1, 2, 3], (1 / 4) * cell[0] + (2 / 5) * cell[1] + (3 / 6) * cell[2])
    assert grid.voxel_volume == pytest.approx(abs(np.linalg.det(cell)) / 120)


def test_qe_fft_shape_matches_qe_output_for_be2():
    # Be2 cell and ecutrho 160 Ry: QE 6.6 printed FFT dimensions (18, 18, 27).
    cell = [[2.259825867767797, 0, 0], [-1.1299129338838985, 1.9570656971336065, 0],
            [0, 0, 3.5698785608749377]]
    assert qe_fft_shape(cell, 160.0) == (18, 18, 27)


def test_bad_grid_input():
    with pytest.raises(MlscaleError):
        Grid(np.zeros((3, 3)), (2, 2, 2))
    with pytest.raises(MlscaleError):
        Grid(np.eye(3), (0, 2, 2))
    grid = Grid(np.eye(3), (2, 3, 4))
    with pytest.raises(MlscaleError, match="expected"):
        grid.check_array(np.zeros((2, 3, 5, 1)), "LDOS")


# --- which atoms a rank needs ---------------------------------------------------------------


def brute_force_near(pos_av, cell_cv, grid_shape, block, cutoff):
    """Atoms with an image within ``cutoff`` of a point of the block (explicit images)."""
    points = (block.indices_bc().reshape(-1, 3) / np.array(grid_shape)) @ cell_cv
    near = set()
    for shift in itertools.product(range(-2, 3), repeat=3):
        images = pos_av + np.array(shift) @ cell_cv
        for a, image in enumerate(images):
            if np.min(np.sum((points - image) ** 2, axis=1)) < cutoff**2:
                near.add(a)
    return near


@pytest.mark.parametrize("cubic", [True, False])
def test_halo_atoms_hold_every_atom_within_the_cutoff(cubic):
    atoms = bulk("Al", "fcc", a=4.05, cubic=cubic).repeat((4, 3, 3) if cubic else (6, 5, 5))
    atoms.rattle(0.3, seed=3)
    cell_cv = atoms.cell[:]
    shape = (16, 12, 12)
    frac_ac = atoms.positions @ np.linalg.inv(cell_cv)
    cutoff = 3.0
    for rank in (0, 5, 11):
        block = Decomposition(shape, 12).block(rank)
        chosen = set(halo_atoms(frac_ac, shape, block, halo_c(cell_cv, cutoff)).tolist())
        needed = brute_force_near(atoms.positions, cell_cv, shape, block, cutoff)
        assert needed <= chosen
        assert len(chosen) < len(atoms)  # a real selection, not everything


def test_halo_c_of_an_orthorhombic_cell_is_the_cutoff_over_each_length():
    np.testing.assert_allclose(halo_c(np.diag([10.0, 20.0, 5.0]), 2.0), [0.2, 0.1, 0.4])


def test_atoms_in_block_partition_the_atoms():
    atoms = bulk("Al", "fcc", a=4.05, cubic=True).repeat((3, 3, 3))
    atoms.rattle(0.2, seed=1)
    frac_ac = atoms.get_scaled_positions()
    shape = (15, 15, 15)
    counts = [atoms_in_block(frac_ac, shape, b) for b in Decomposition(shape, 7).blocks()]
    assert sum(counts) == len(atoms)


def test_largest_block_is_the_largest_of_the_decomposition():
    for shape, ranks in (((49, 49, 49), 8), ((10, 7, 3), 6), ((784, 784, 784), 4096),
                         ((30, 20, 11), 5)):
        sizes = [b.size for b in Decomposition(shape, ranks).blocks()] if ranks < 100 else [
            117649]
        assert largest_block(shape, ranks).size == max(sizes)


def test_slabs_split_planes_into_rows_when_a_plane_is_too_large():
    block = Block((2, 0, 5), (4, 100, 45))  # planes of 4000 points
    chunks = slabs(block, 1000)
    assert all(c.size <= 1000 for c in chunks) and len(chunks) == 2 * 4
    covered = np.concatenate([c.indices_bc().reshape(-1, 3) for c in chunks])
    np.testing.assert_array_equal(covered, block.indices_bc().reshape(-1, 3))  # C order


def test_qe_fft_shape_is_pw_x_grid_without_factor_7():
    """Against the FFT dimensions pw.x 6.7 (FFTW) reported: fcc Al primitive (a = 4.05 Å)
    at 60 Ry: 15³ (14 = 2·7 is rejected); the 3×3×3 conventional Al cell (12.15 Å) at
    80 Ry: 72³ (70 = 2·5·7 is rejected); a rule allowing 7 gives 14³ and 70³."""
    a = 4.05
    fcc = 0.5 * a * np.array([[0.0, 1.0, 1.0], [1.0, 0.0, 1.0], [1.0, 1.0, 0.0]])
    assert qe_fft_shape(fcc, 60.0) == (15, 15, 15)
    assert qe_fft_shape(np.eye(3) * 3 * a, 80.0) == (72, 72, 72)
    assert qe_fft_shape(np.eye(3) * 2 * a, 80.0) == (45, 45, 45)  # the data set's 32 atoms


def test_qe_fft_shape_equals_the_sphere_s_miller_indices_on_triclinic_cells():
    """2·max|m_i| + 1 over every G in the sphere, by brute force, on random cells."""
    from mlscale.units import BOHR_ANGSTROM
    rng = np.random.default_rng(7)
    for _ in range(40):
        cell = np.diag(rng.uniform(2.0, 6.0, 3)) + rng.uniform(-1.5, 1.5, (3, 3))
        ecut = rng.uniform(20.0, 150.0)
        a_cv = cell / BOHR_ANGSTROM
        b_cv = 2 * np.pi * np.linalg.inv(a_cv).T
        bound = np.floor(np.sqrt(ecut) * np.linalg.norm(a_cv, axis=1) / (2 * np.pi)) + 1
        m_qc = np.stack(np.meshgrid(*(np.arange(-b, b + 1) for b in bound.astype(int)),
                                    indexing="ij"), axis=-1).reshape(-1, 3)
        n_c = 2 * np.abs(m_qc[np.sum((m_qc @ b_cv) ** 2, axis=1) <= ecut]).max(axis=0) + 1
        smooth = [next(n for n in itertools.count(int(k))
                       if all(p in (2, 3, 5) for p in _prime_factors(n))) for n_ in [n_c]
                  for k in n_]
        assert qe_fft_shape(cell, ecut) == tuple(smooth)


def _prime_factors(n: int) -> list[int]:
    factors, p = [], 2
    while n > 1:
        while n % p == 0:
            factors.append(p)
            n //= p
        p += 1
    return factors
