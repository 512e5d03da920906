"""`mlscale datagen` end to end on a tiny Al cell with the real pw.x/pp.x (QE 6.7).

References are independent of mlscale's readers: cube files parsed by ASE, numbers
grepped from pw.x's output, eigenvalues/weights/occupations from pw.x's XML file.
"""

from __future__ import annotations

import json
import re
import shutil
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest
from ase.build import bulk

from mlscale.cli import main
from mlscale.config import BispectrumSettings, EnergyGrid
from mlscale.datagen import (
    DFTSettings,
    LdosSettings,
    QERunner,
    generate_dataset,
    run_qe,
    thermal_fcc_snapshots,
)
from mlscale.errors import MlscaleError
from mlscale.parallel import self_comm

pytestmark = [
    pytest.mark.qe,
    pytest.mark.skipif(shutil.which("pw.x") is None or shutil.which("pp.x") is None,
                       reason="Quantum ESPRESSO (pw.x, pp.x) not installed"),
]

RY_EV = 13.605693122994  # CODATA 2018
BOHR_A = 0.529177210903
HA_EV = 2 * RY_EV
KB_EV = 8.617333262e-5
N_ATOMS = 4
DFT = DFTSettings(ecutwfc=10.0, kpoints=(2, 2, 2), nbnd=14)
LDOS = LdosSettings(EnergyGrid(-3.0, 0.5, 19), broadening=0.3)
RUNNER = QERunner(nprocs=1)


def tiny_cell():
    atoms = bulk("Al", "fcc", a=4.05, cubic=True)
    atoms.positions += np.random.default_rng(7).normal(scale=0.08, size=(N_ATOMS, 3))
    atoms.wrap()
    return atoms


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    """QE run (cubes read independently with ASE before conversion), then the conversion."""
    out = tmp_path_factory.mktemp("al")
    atoms = tiny_cell()
    run_dir = out / "qe" / "al_00"
    run_qe(atoms, run_dir, DFT, LDOS, RUNNER)
    cubes = sorted(run_dir.glob("tmp.pp*snapshot_ldos.cube"))
    cube_ldos = np.stack([cube_data(p) for p in cubes], axis=-1)
    cube_density = cube_data(run_dir / "density.cube")
    settings = BispectrumSettings(twojmax=2)
    generate_dataset([atoms], out, DFT, LDOS, settings, RUNNER, self_comm(), prefix="al")
    return {"out": out, "run": run_dir, "atoms": atoms, "cube_ldos": cube_ldos,
            "cube_density": cube_density, "settings": settings,
            "info": json.loads((out / "al_00.info.json").read_text())}


def cube_data(path):
    """A cube file's data in file units, read by ASE (not ase.io.read: it broadcasts)."""
    from ase.io.cube import read_cube

    with open(path) as f:
        return read_cube(f)["data"]


def qe_eigen(run_dir):
    """Weights [k], eigenvalues [k, n] (eV), occupations [k, n] from pw.x's XML file."""
    root = ET.parse(run_dir / "scf.xml").getroot()
    ks = list(root.iter("ks_energies"))
    w_k = np.array([float(k.find("k_point").get("weight")) for k in ks])
    e_kn = np.array([k.find("eigenvalues").text.split() for k in ks], float) * HA_EV
    f_kn = np.array([k.find("occupations").text.split() for k in ks], float)
    return w_k, e_kn, f_kn


def grep_ry(text, label):
    return float(re.findall(label + r"\s*=\s*(-?\d+\.\d+)\s*Ry", text)[-1]) * RY_EV


def test_ldos_equals_cube_values_in_ev_angstrom(dataset):
    ldos = np.load(dataset["out"] / "al_00.out.npy", allow_pickle=False)
    expected = dataset["cube_ldos"] / (RY_EV * BOHR_A**3)
    assert ldos.shape == expected.shape == (*dataset["info"]["grid_dimensions"], 19)
    np.testing.assert_allclose(ldos, expected, rtol=1e-6, atol=1e-7 * np.abs(expected).max())


def test_dos_from_ldos_matches_qe_eigenvalues(dataset):
    """Σ_r LDOS ΔV equals Σ_k w_k Σ_n −f'((ε−ε_nk)/σ)/σ: units, spin factor, broadening."""
    ldos = np.load(dataset["out"] / "al_00.out.npy", allow_pickle=False)
    voxel = dataset["atoms"].get_volume() / np.prod(ldos.shape[:3])
    dos = ldos.sum(axis=(0, 1, 2), dtype=np.float64) * voxel
    w_k, e_kn, _ = qe_eigen(dataset["run"])
    x = (LDOS.energy_grid.energies[:, None, None] - e_kn) / LDOS.broadening
    expected = np.sum(w_k[:, None] / (2 + np.exp(x) + np.exp(-x)), axis=(1, 2)) / LDOS.broadening
    np.testing.assert_allclose(dos, expected, rtol=1e-4, atol=1e-5 * expected.max())


def test_density_integrates_to_electron_count(dataset):
    density = np.load(dataset["out"] / "al_00.dens.npy", allow_pickle=False)
    # rtol: ASE (CODATA 2014) and this file (2018) differ in the Bohr radius by 4e-10
    np.testing.assert_allclose(density[..., 0], dataset["cube_density"] / BOHR_A**3, rtol=1e-8)
    voxel = dataset["atoms"].get_volume() / density[..., 0].size
    assert density.sum() * voxel == pytest.approx(3 * N_ATOMS, rel=1e-4)
    assert dataset["info"]["number_of_electrons_from_density"] == pytest.approx(3 * N_ATOMS, rel=1e-4)


def test_info_matches_qe_output(dataset):
    info, text = dataset["info"], (dataset["run"] / "scf.out").read_text()
    assert info["fermi_energy_dft"] == pytest.approx(
        float(re.findall(r"the Fermi energy is\s+(-?\d+\.\d+) ev", text)[-1]), abs=1e-4)
    for key, label in [("total_energy_dft_calculation", r"!\s+total energy"),
                       ("one_electron_contribution", "one-electron contribution"),
                       ("hartree_contribution", "hartree contribution"),
                       ("xc_contribution", "xc contribution"),
                       ("ewald_contribution", "ewald contribution"),
                       ("entropy_contribution_dft_calculation", r"smearing contrib\. \(-TS\)")]:
        # rel: QE's printed digits and the CODATA 2014 (ASE) / 2018 Rydberg (8e-9)
        assert info[key] == pytest.approx(grep_ry(text, label), rel=2e-8, abs=1e-6), key
    w_k, e_kn, f_kn = qe_eigen(dataset["run"])
    assert info["band_energy_dft_calculation"] == pytest.approx(np.sum(w_k[:, None] * f_kn * e_kn),
                                                                rel=1e-12)
    assert info["number_of_electrons_from_eigenvals"] == pytest.approx(3 * N_ATOMS, rel=1e-8)
    assert info["number_of_electrons_exact"] == 3 * N_ATOMS
    assert info["temperature"] == pytest.approx(298.0, rel=1e-3)
    assert info["degauss"] == pytest.approx(KB_EV * 298.0 / RY_EV, abs=1e-4)
    fft = re.findall(r"FFT dimensions: \(\s*(\d+),\s*(\d+),\s*(\d+)\)", text)[0]
    assert info["grid_dimensions"] == [int(n) for n in fft]
    np.testing.assert_allclose(info["cell"], dataset["atoms"].cell, atol=1e-10)
    np.testing.assert_allclose(info["positions"], dataset["atoms"].positions, atol=1e-10)
    assert info["dft_settings"]["ecutwfc"] == 10.0 and info["ldos_settings"]["broadening"] == 0.3


def test_descriptors_and_openpmd_copies(dataset):
    from mlscale.io.openpmd_io import read_openpmd

    info = dataset["info"]
    descriptors = np.load(dataset["out"] / "al_00.in.npy", allow_pickle=False)
    assert descriptors.shape == (*info["grid_dimensions"], dataset["settings"].n_features)
    assert np.all(np.isfinite(descriptors)) and descriptors.std() > 0
    ldos = np.load(dataset["out"] / "al_00.out.npy", allow_pickle=False)
    np.testing.assert_array_equal(read_openpmd(dataset["out"] / "al_00.out.h5", "LDOS"), ldos)
    assert not list(dataset["run"].glob("*.cube")) and not (dataset["run"] / "qe_tmp").exists()


def test_resume_skips_finished_snapshots(dataset, capsys):
    out = dataset["out"]
    before = {p.name: p.stat().st_mtime_ns for p in out.glob("al_00.*")}
    generate_dataset([dataset["atoms"]], out, DFT, LDOS, dataset["settings"], RUNNER,
                     self_comm(), prefix="al")
    assert "finished before, skipped" in capsys.readouterr().out
    assert {p.name: p.stat().st_mtime_ns for p in out.glob("al_00.*")} == before


def test_generated_snapshots_are_seeded_and_thermal():
    first = thermal_fcc_snapshots(count=2, seed=3, equilibration_steps=100, interval_steps=20)
    again = thermal_fcc_snapshots(count=2, seed=3, equilibration_steps=100, interval_steps=20)
    np.testing.assert_array_equal(first[1].positions, again[1].positions)
    ideal = bulk("Al", "fcc", a=4.05, cubic=True).repeat(2)
    frac = first[1].get_scaled_positions() - ideal.get_scaled_positions()
    u = (frac - np.round(frac)) @ ideal.cell
    rms = np.sqrt(np.mean((u - u.mean(axis=0)) ** 2))
    assert 0.03 < rms < 0.3  # Al at 298 K: ~0.1 Å per Cartesian component


def test_missing_pw_is_a_clear_error(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("PATH", str(tmp_path))
    status = main(["datagen", "--out", str(tmp_path / "out"), "--count", "1"])
    assert status == 1
    assert "pw.x not found" in capsys.readouterr().err


def test_unconverged_scf_is_a_clear_error(tmp_path):
    dft = DFTSettings(ecutwfc=10.0, kpoints=(1, 1, 1), nbnd=14, electron_maxstep=1)
    with pytest.raises(MlscaleError, match="SCF did not converge"):
        run_qe(tiny_cell(), tmp_path, dft, LDOS, RUNNER)


def test_too_few_bands_is_a_clear_error(tmp_path):
    dft = DFTSettings(ecutwfc=10.0, kpoints=(1, 1, 1), nbnd=8)
    high = LdosSettings(EnergyGrid(-3.0, 0.5, 41), broadening=0.3)  # up to 17 eV
    with pytest.raises(MlscaleError, match="too few bands"):
        run_qe(tiny_cell(), tmp_path, dft, high, RUNNER)


def test_missing_pseudopotential_is_a_clear_error(tmp_path):
    dft = DFTSettings(ecutwfc=10.0, pseudo_dir=str(tmp_path))
    with pytest.raises(MlscaleError, match="pseudopotential not found"):
        run_qe(tiny_cell(), tmp_path / "run", dft, LDOS, RUNNER)


@pytest.mark.mpi(min_size=2)
def test_conversion_on_several_ranks_matches_cubes_and_serial_descriptors(tmp_path):
    """QE on rank 0, conversion split over all ranks: same arrays as the cubes / one rank."""
    from mlscale.descriptors import compute_descriptors
    from mlscale.grid import DistributedGrid, Grid
    from mlscale.parallel import world

    comm = world()
    out = Path(comm.broadcast(str(tmp_path) if comm.rank == 0 else None))
    atoms, settings = tiny_cell(), BispectrumSettings(twojmax=2)
    if comm.rank == 0:
        run_qe(atoms, out / "qe" / "al_00", DFT, LDOS, RUNNER)
        cubes = sorted((out / "qe" / "al_00").glob("tmp.pp*snapshot_ldos.cube"))
        expected = np.stack([cube_data(p) for p in cubes], axis=-1)
    comm.barrier()
    generate_dataset([atoms], out, DFT, LDOS, settings, RUNNER, comm, prefix="al")
    if comm.rank == 0:
        ldos = np.load(out / "al_00.out.npy", allow_pickle=False)
        np.testing.assert_allclose(ldos, expected / (RY_EV * BOHR_A**3), rtol=1e-6,
                                   atol=1e-7 * np.abs(expected).max() / (RY_EV * BOHR_A**3))
        descriptors = np.load(out / "al_00.in.npy", allow_pickle=False)
        grid = Grid(atoms.cell, descriptors.shape[:3])
        serial = compute_descriptors(atoms, DistributedGrid(grid, self_comm()), settings,
                                     "lammps")
        np.testing.assert_allclose(descriptors, serial.astype(np.float32), rtol=1e-6, atol=1e-6)


@pytest.mark.mpi(min_size=2)
def test_one_pass_ldos_conversion_on_several_ranks_matches_pp_x_and_records(tmp_path):
    """--ldos-tool wavefunctions on 2 ranks: the LDOS equals pp.x's cubes of the same
    input to their 5 digits, and the compact record holds it at every 2nd point."""
    from mlscale.datagen import CompactSettings, read_compact_record
    from mlscale.parallel import world

    comm = world()
    out = Path(comm.broadcast(str(tmp_path) if comm.rank == 0 else None))
    atoms, settings = tiny_cell(), BispectrumSettings(twojmax=2)
    if comm.rank == 0:
        run_qe(atoms, out / "pp" / "al_00", DFT, LDOS, RUNNER)
        cubes = sorted((out / "pp" / "al_00").glob("tmp.pp*snapshot_ldos.cube"))
        expected = np.stack([cube_data(p) for p in cubes], axis=-1) / (RY_EV * BOHR_A**3)
    comm.barrier()
    generate_dataset([atoms], out, DFT, LDOS, settings, RUNNER, comm, prefix="al",
                     openpmd=False, ldos_tool="wavefunctions",
                     records=(out / "records", CompactSettings(2, "float32")))
    if comm.rank == 0:
        ldos = np.load(out / "al_00.out.npy", allow_pickle=False)
        np.testing.assert_allclose(ldos, expected, rtol=1e-4, atol=1e-5 * expected.max())
        info, arrays = read_compact_record(out / "records", "al_00")
        assert info["ldos_tool"] == "wavefunctions"
        np.testing.assert_array_equal(arrays["ldos_ge"], ldos[::2, ::2, ::2].reshape(
            -1, ldos.shape[-1]))
        assert not (out / "qe" / "al_00" / "ldos.npy").exists()


def test_cli_from_structure_file_and_settings_file(tmp_path, capsys):
    from ase.io import write

    write(tmp_path / "cell.extxyz", tiny_cell())
    (tmp_path / "settings.json").write_text(json.dumps({
        "dft": {"ecutwfc": 10.0, "kpoints": [1, 1, 1], "nbnd": 14},
        "ldos": {"energy_grid": {"start": -3.0, "step": 1.0, "count": 5}, "broadening": 0.4}}))
    status = main(["datagen", str(tmp_path / "cell.extxyz"), "--out", str(tmp_path / "out"),
                   "--settings", str(tmp_path / "settings.json"), "--ldos-broadening", "0.5",
                   "--no-openpmd"])
    assert status == 0, capsys.readouterr().err
    info = json.loads((tmp_path / "out" / "snapshot_00.info.json").read_text())
    assert info["dft_settings"]["kpoints"] == [1, 1, 1] and info["dft_settings"]["nbnd"] == 14
    assert info["ldos_settings"] == {"energy_grid": {"start": -3.0, "step": 1.0, "count": 5},
                                     "broadening": 0.5}
    np.testing.assert_allclose(info["positions"], tiny_cell().positions, atol=1e-8)
    assert np.load(tmp_path / "out" / "snapshot_00.out.npy").shape[3] == 5
    assert not (tmp_path / "out" / "snapshot_00.out.h5").exists()
