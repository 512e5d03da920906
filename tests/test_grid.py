"""Grid geometry and decomposition: blocks tile the grid exactly, for any rank count."""

import numpy as np
import pytest

from mlscale.errors import MlscaleError
from mlscale.grid import Decomposition, Grid, process_grid, qe_fft_shape, split_axis


@pytest.mark.parametrize("nranks", [1, 2, 3, 4, 5, 6, 7, 8, 12, 17])
@pytest.mark.parametrize("shape", [(18, 18, 27), (5, 7, 3), (24, 24, 24)])
def test_blocks_tile_the_grid_exactly(shape, nranks):
    exists = any(px * py * pz == nranks
                 for px in range(1, shape[0] + 1) for py in range(1, shape[1] + 1)
                 for pz in range(1, shape[2] + 1))
    if not exists:  # e.g. 17 ranks: a prime above every axis length
        with pytest.raises(MlscaleError, match="cannot split"):
            Decomposition(shape, nranks).dims
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
    pos = grid.positions_g3(grid.full_block())
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
