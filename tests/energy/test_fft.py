"""DistributedFFT on several ranks against NumPy's FFT of the whole field.

Run: mpiexec -n 2 python -m pytest --with-mpi -m mpi tests/energy  (and -n 3)
"""

from __future__ import annotations

import numpy as np
import pytest

from mlscale.energy import DistributedFFT
from mlscale.grid import DistributedGrid, Grid
from mlscale.parallel import world


@pytest.mark.mpi(min_size=2)
@pytest.mark.parametrize("shape", [(10, 12, 15), (9, 7, 8), (5, 6, 4)])
def test_fft_matches_numpy(shape):
    comm = world()
    grid = Grid(np.array([[4.0, 0, 0], [1.0, 5.0, 0], [0.5, 0.3, 6.0]]), shape)
    fft = DistributedFFT(DistributedGrid(grid, comm))
    full = np.random.default_rng(3).random(shape)
    f_q = fft.forward(full[fft.block.slices])
    reference = np.fft.rfftn(full) / full.size
    assert np.allclose(f_q, reference[fft.spectral_block.slices], atol=1e-15)
    assert np.allclose(fft.backward(f_q), full[fft.block.slices], atol=1e-14)
    assert fft.sum_q(np.abs(f_q) ** 2) == pytest.approx(np.mean(full**2), rel=1e-13)
