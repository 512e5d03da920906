"""mlscale.inference: the pipeline's results do not depend on how ranks chunk their work."""

from __future__ import annotations

import pytest

from mlscale.grid import Decomposition, slabs


@pytest.mark.mpi(min_size=2)
def test_ranks_with_different_chunk_counts_agree_with_one_rank(al_model):
    """Chunks are local work: ranks whose blocks split into different numbers of chunks
    must neither wait for each other per chunk nor change the result."""
    from mlscale import inference
    from mlscale.examples import builtin_example
    from mlscale.model import load_model
    from mlscale.parallel import self_comm, world

    comm = world()
    shape = (12, 12, 17)  # blocks of unequal size on 2, 3 and 4 ranks
    blocks = Decomposition(shape, comm.size).blocks()
    chunk = next(c for c in range(20, 400) if len({len(slabs(b, c)) for b in blocks}) > 1)
    # torch, as this test always ran: its float32 matmul gives each point the same LDOS in
    # any batch, while NumPy's BLAS (sgemm) rounds a row differently (~1e-7) with the
    # batch's size, which alone moves the band energy by ~1e-9 between rank counts
    model = load_model(al_model, "torch")
    atoms = builtin_example()
    results = []
    for on in (comm, self_comm()):
        dgrid, n_electrons = inference.setup(atoms, model.info, on, shape=shape)
        results.append(inference.predict(atoms, model, dgrid, n_electrons, backend="native",
                                         chunk_points=chunk).scalars())
    ranks, one = results
    for key in ("fermi_energy_eV", "band_energy_eV", "number_of_electrons_from_density"):
        assert ranks[key] == pytest.approx(one[key], rel=1e-10), key


def test_an_electron_count_the_dos_cannot_hold_names_the_grid():
    import numpy as np
    import pytest

    from mlscale.errors import MlscaleError
    from mlscale.grid import DistributedGrid, Grid
    from mlscale.inference import electrons_from_ldos
    from mlscale.parallel import self_comm

    dgrid = DistributedGrid(Grid(np.eye(3) * 2.0, (2, 3, 4)), self_comm())
    ldos_pe = np.full((24, 11), 0.01)
    with pytest.raises(MlscaleError, match=r"cannot place 1000.0 electrons .* on the 2x3x4 grid"):
        electrons_from_ldos(ldos_pe, dgrid, -5.0 + 2.5 * np.arange(11), 1000.0, 298.0)
