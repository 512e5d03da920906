"""mlscale.inference: the pipeline's results do not depend on how ranks chunk their work."""

from __future__ import annotations

import numpy as np
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


# --- the windowed density store (issue 16): against the full LDOS store ------------------------
class CountingModel:
    """The model, counting the points it is asked for (how many passes a prediction made)."""

    def __init__(self, model):
        self.model, self.points = model, 0

    def __getattr__(self, name):
        return getattr(self.model, name)

    def __call__(self, descriptors_pf, chunk_points):
        self.points += len(descriptors_pf)
        return self.model(descriptors_pf, chunk_points)


def _shipped():
    from mlscale.examples import builtin_example, shipped_model_path
    from mlscale.model import load_model

    return CountingModel(load_model(shipped_model_path(), "numpy")), builtin_example()


def _full_store(atoms, model, dgrid, n_electrons, method, fermi_energy=None):
    """The reference: the whole LDOS kept (ldos_on_grid), then electrons_from_ldos."""
    from mlscale import inference
    from mlscale.timing import Timings

    ldos_pe, dos_e = inference.ldos_on_grid(atoms, model, dgrid, "native", 2000, Timings())
    return inference.electrons_from_ldos(ldos_pe, dgrid, model.info.energy_grid.energies,
                                         n_electrons, model.info.temperature_K, method,
                                         fermi_energy, dos_e)


def _windowed(atoms, model, dgrid, n_electrons, method, **kwargs):
    from mlscale import inference
    from mlscale.timing import Timings

    model.points = 0
    timings = Timings()
    result = inference.predict(atoms, model, dgrid, n_electrons, method=method,
                               chunk_points=2000, timings=timings, **kwargs)
    # the counts results.json reports: the passes and the estimate's points are the
    # network's points (an instrumented model counts them)
    counts = timings.counts
    assert model.points == (counts["density_passes"] * dgrid.local_points
                            + counts.get("estimate_points", 0))
    return result, model.points


def _assert_same(result, reference):
    scalars, dos_e, density_b = reference
    for key, value in vars(scalars).items():
        assert getattr(result.electrons, key) == pytest.approx(value, rel=1e-12, abs=1e-12), key
    np.testing.assert_array_equal(result.dos_e, dos_e)
    # the fully occupied sum uses the exact weights; the full store's analytical weights of
    # deep energies carry ~1.5e-12 relative round-off
    np.testing.assert_allclose(result.density_b, density_b, rtol=0, atol=3e-12 * density_b.max())


def _check_window_and_fallback(comm, method, shape=(18, 18, 20)):
    from mlscale import inference

    model, atoms = _shipped()
    dgrid, n_electrons = inference.setup(atoms, model.info, comm, shape=shape)
    reference = _full_store(atoms, model, dgrid, n_electrons, method)
    local = dgrid.local_points
    one_pass, points = _windowed(atoms, model, dgrid, n_electrons, method)
    _assert_same(one_pass, reference)
    assert local < points < local * 1.1  # one pass and the estimate's 1/27
    whole, points = _windowed(atoms, model, dgrid, n_electrons, method,
                              fermi_bracket=(-np.inf, np.inf))  # the window is every energy
    _assert_same(whole, reference)
    assert points == local
    # a bracket μ is not in: the density needs a second pass at the solved μ
    fallback, points = _windowed(atoms, model, dgrid, n_electrons, method,
                                 fermi_bracket=(0.0, 1.0))
    _assert_same(fallback, reference)
    assert points == 2 * local
    mu = reference[0].fermi_energy_eV + 0.3  # a given Fermi level: one pass, no estimate
    given, points = _windowed(atoms, model, dgrid, n_electrons, method, fermi_energy=mu)
    _assert_same(given, _full_store(atoms, model, dgrid, n_electrons, method, mu))
    assert points == local


@pytest.mark.parametrize("method", ["analytical", "quadrature"])
def test_windowed_prediction_equals_the_full_store_and_falls_back(method):
    from mlscale.parallel import self_comm

    _check_window_and_fallback(self_comm(), method)


@pytest.mark.mpi(min_size=2)
@pytest.mark.parametrize("method", ["analytical", "quadrature"])
def test_windowed_prediction_equals_the_full_store_on_ranks(method):
    from mlscale.parallel import world

    _check_window_and_fallback(world(), method, shape=(17, 18, 19))


def test_windowed_share_equals_the_full_store_of_the_share():
    """--only-rank: the estimate from the share's own coarse points and electron share;
    one pass when it brackets the share's μ, else a second pass at μ, the same result.
    (A share's coarse points sample a thin slab: with the shipped 4×4×4-k model the
    estimate of these shares is −0.07 … −0.03 eV from their μ, so both branches run.)"""
    from mlscale import inference
    from mlscale.parallel import self_comm
    from mlscale.timing import Timings

    model, atoms = _shipped()
    passes = set()
    for share in ((0, 3), (1, 3), (2, 3)):
        dgrid, n_electrons = inference.setup(atoms, model.info, self_comm(),
                                             shape=(18, 18, 20), share=share)
        reference = _full_store(atoms, model, dgrid, n_electrons, "analytical")
        model.points = 0
        estimate = inference.fermi_estimate(atoms, model, dgrid, n_electrons,
                                            method="analytical", chunk_points=2000,
                                            timings=Timings())
        coarse = model.points
        result, points = _windowed(atoms, model, dgrid, n_electrons, "analytical")
        _assert_same(result, reference)
        inside = abs(estimate - reference[0].fermi_energy_eV) < inference.BRACKET_HALF_WIDTH_EV
        assert points == coarse + (1 if inside else 2) * dgrid.local_points, share
        passes.add(inside)
    assert passes == {True, False}  # both branches ran


def test_fermi_estimate_is_within_the_bracket_of_the_solved_fermi_level():
    from mlscale import inference
    from mlscale.parallel import self_comm
    from mlscale.timing import Timings

    model, atoms = _shipped()
    dgrid, n_electrons = inference.setup(atoms, model.info, self_comm(), shape=(30, 30, 30))
    estimate = inference.fermi_estimate(atoms, model, dgrid, n_electrons, method="analytical",
                                        chunk_points=2000, timings=Timings())
    assert model.points == 10**3
    mu = _full_store(atoms, model, dgrid, n_electrons, "analytical")[0].fermi_energy_eV
    assert abs(estimate - mu) < inference.BRACKET_HALF_WIDTH_EV / 5
    # an electron count no coarse DOS holds: no estimate (the prediction then makes a DOS
    # pass and a density pass)
    assert inference.fermi_estimate(atoms, model, dgrid, 1e6, method="analytical",
                                    chunk_points=2000, timings=Timings()) is None
