"""The ASE calculator: the energy and forces of `mlscale predict --forces`, the same
Atoms required on every rank, the model kept between calls, and NVE molecular dynamics
whose energy error falls as the square of the time step (Velocity Verlet with exact
forces).

Several ranks: mpiexec -n 2 python -m pytest --with-mpi -m mpi tests/test_calculator.py
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from ase import units
from ase.md.velocitydistribution import thermalize_momenta
from ase.md.verlet import VelocityVerlet

from mlscale.calculator import MlscaleCalculator
from mlscale.errors import MlscaleError
from mlscale.io import read_structure
from mlscale.model import NumpyNetwork
from mlscale.parallel import self_comm, world
from tests.forces._tiny import AL_PSEUDO, GRID, thermal_al, write_tiny_model


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    if not AL_PSEUDO.is_file():
        pytest.skip(f"{AL_PSEUDO} not installed")
    path = tmp_path_factory.mktemp("tiny")
    (path / "pseudo").mkdir()
    (path / "pseudo" / AL_PSEUDO.name).symlink_to(AL_PSEUDO)
    return write_tiny_model(path / "al.safetensors"), path / "pseudo"


def test_calculator_equals_mlscale_predict_forces(tiny, tmp_path):
    model_path, pseudo_dir = tiny
    atoms = thermal_al()
    atoms.write(tmp_path / "al.xyz")
    env = dict(os.environ, OMP_NUM_THREADS="1", NUMBA_NUM_THREADS="1")
    subprocess.run([sys.executable, "-m", "mlscale", "predict", str(tmp_path / "al.xyz"),
                    "--model", str(model_path), "--grid", *map(str, GRID),
                    "--pseudopotentials", str(pseudo_dir), "--forces", "-o",
                    str(tmp_path / "out")], check=True, env=env, capture_output=True)
    results = json.loads((tmp_path / "out" / "results.json").read_text())
    atoms = read_structure(tmp_path / "al.xyz")  # the positions the command read
    atoms.calc = MlscaleCalculator(model=model_path, pseudopotentials=pseudo_dir, grid=GRID,
                                   comm=self_comm())
    energy = atoms.get_potential_energy()
    assert energy == pytest.approx(results["total_energy_eV"], rel=1e-12, abs=1e-9)
    assert atoms.get_potential_energy(force_consistent=True) == energy
    forces_av = atoms.get_forces()
    assert np.allclose(forces_av, results["forces_eV_per_A"], rtol=0, atol=1e-9)
    assert np.max(np.abs(forces_av)) > 0.1


def test_calculator_keeps_its_model_and_recomputes_only_on_change(tiny):
    model_path, pseudo_dir = tiny
    calc = MlscaleCalculator(model=model_path, pseudopotentials={"Al": AL_PSEUDO},
                             grid=GRID, comm=self_comm())
    model = calc.model
    atoms = thermal_al()
    atoms.calc = calc
    first = atoms.get_forces().copy()
    prediction = calc.prediction
    assert np.array_equal(atoms.get_forces(), first) and calc.prediction is prediction
    atoms.positions[0, 0] += 0.05
    assert not np.allclose(atoms.get_forces(), first)
    assert calc.model is model and calc.prediction is not prediction


def test_forces_need_pseudopotentials_on_the_command_line(tiny, tmp_path):
    model_path, _ = tiny
    thermal_al().write(tmp_path / "al.xyz")
    run = subprocess.run([sys.executable, "-m", "mlscale", "predict", str(tmp_path / "al.xyz"),
                          "--model", str(model_path), "--grid", *map(str, GRID), "--forces",
                          "-o", str(tmp_path / "out")], env=dict(os.environ, OMP_NUM_THREADS="1"),
                         capture_output=True, text=True)
    assert run.returncode != 0 and "--forces needs --pseudopotentials" in run.stderr


def nve_energy_error(model, dt_fs, total_fs):
    """Largest |E_kin + E_pot − initial| (eV) of an NVE run of thermal Al with the tiny model."""
    atoms = thermal_al(seed=4)
    thermalize_momenta(atoms, temperature_K=600, rng=np.random.default_rng(0))
    atoms.calc = MlscaleCalculator(model=model, pseudopotentials={"Al": AL_PSEUDO}, grid=GRID,
                                   comm=self_comm(), ldos_dtype=np.float64)
    energies = [atoms.get_total_energy()]
    dynamics = VelocityVerlet(atoms, timestep=dt_fs * units.fs)
    for _ in range(round(total_fs / dt_fs)):
        dynamics.run(1)
        energies.append(atoms.get_total_energy())
    return np.max(np.abs(np.array(energies) - energies[0]))


def test_halving_the_time_step_quarters_the_nve_energy_error(tiny):
    model = NumpyNetwork.from_file(tiny[0], np.float64)
    coarse = nve_energy_error(model, 2.0, 8.0)
    fine = nve_energy_error(model, 1.0, 8.0)
    assert coarse > 1e-6  # eV: far above round-off
    assert 3.3 < coarse / fine < 4.7


@pytest.mark.mpi(min_size=2)
def test_calculator_on_several_ranks_equals_one_rank(tiny):
    model_path, pseudo_dir = tiny
    atoms = thermal_al()
    atoms.calc = MlscaleCalculator(model=model_path, pseudopotentials=pseudo_dir, grid=GRID)
    serial = thermal_al()
    serial.calc = MlscaleCalculator(model=model_path, pseudopotentials=pseudo_dir, grid=GRID,
                                    comm=self_comm())
    # float32 network and LDOS: chunks of other sizes round differently (~1e-11 relative)
    assert atoms.get_potential_energy() == pytest.approx(serial.get_potential_energy(),
                                                         rel=1e-10)
    assert np.allclose(atoms.get_forces(), serial.get_forces(), rtol=0, atol=1e-6)


@pytest.mark.mpi(min_size=2)
def test_different_atoms_on_one_rank_fail_every_rank(tiny):
    model_path, pseudo_dir = tiny
    atoms = thermal_al(seed=world().rank)
    atoms.calc = MlscaleCalculator(model=model_path, pseudopotentials=pseudo_dir, grid=GRID)
    with pytest.raises(MlscaleError, match="the same Atoms"):
        atoms.get_potential_energy()


def test_md_example_trajectory_restarts_where_it_stopped(tiny, tmp_path):
    """examples/md_nve.py: 2 steps with --trajectory, then 1 step restarted from frame 1
    reproduce frame 2 (positions and energy) to the file's printed precision."""
    import ase.io

    model_path, _ = tiny
    structure = tmp_path / "al.xyz"
    ase.io.write(structure, thermal_al(seed=4))
    example = Path(__file__).resolve().parents[1] / "examples" / "md_nve.py"
    common = ["--model", str(model_path), "--pseudopotential", str(AL_PSEUDO),
              "--grid", *map(str, GRID), "--dt", "1.0"]
    first, second = tmp_path / "first.xyz", tmp_path / "second.xyz"
    subprocess.run([sys.executable, str(example), str(structure), "--steps", "2",
                    "--temperature", "600", "--trajectory", str(first), *common],
                   check=True, capture_output=True)
    subprocess.run([sys.executable, str(example), "--restart", str(first), "--frame", "1",
                    "--steps", "1", "--trajectory", str(second), *common],
                   check=True, capture_output=True)
    run, again = ase.io.read(first, index=":"), ase.io.read(second, index=":")
    assert len(run) == 3 and len(again) == 2
    assert np.abs(run[1].get_momenta()).max() > 0  # thermal velocities were written
    np.testing.assert_allclose(again[0].positions, run[1].positions, atol=1e-7)
    np.testing.assert_allclose(again[1].positions, run[2].positions, atol=1e-6)
    assert abs(again[1].get_potential_energy() - run[2].get_potential_energy()) < 1e-5
    assert not np.allclose(run[2].positions, run[0].positions, atol=1e-4)  # it moved
