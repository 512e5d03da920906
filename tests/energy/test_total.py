"""density_energy_terms and total_energy against Quantum ESPRESSO, on one rank and several.

References: MALA's Be2 data (PBE, ultrasoft, core correction; QE 6.6 output) and
tests/data/al_qe (LDA Al, QE 6.7, made by tests/data/al_qe/make_al_qe.py).
Several ranks: mpiexec -n 2 python -m pytest --with-mpi -m mpi tests/energy  (and -n 3)
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from mlscale.energy import DistributedFFT, density_energy_terms, read_upf, total_energy
from mlscale.energy.xc import xc_energy_potential
from mlscale.errors import MlscaleError
from mlscale.grid import DistributedGrid, Grid
from mlscale.io import read_structure
from mlscale.parallel import self_comm, world
from mlscale.units import BOHR_ANGSTROM, HARTREE_EV, KB_EV_PER_K, RYDBERG_EV
from tests.energy._qe import AL_DIR, MEV, qe_printed


def terms_for(density_path, structure_path, pseudopotentials, **kwargs):
    atoms = read_structure(structure_path)
    density = np.load(density_path, allow_pickle=False)
    density = density.reshape(density.shape[:3])
    dgrid = DistributedGrid(Grid(atoms.cell.array, density.shape), self_comm())
    return density_energy_terms(density, dgrid, atoms, pseudopotentials, **kwargs)


@pytest.fixture(scope="module")
def al_terms(al_pseudo, al_qe):
    return terms_for(AL_DIR / "al.density.npy", AL_DIR / "al.scf.in", al_pseudo,
                     ecutrho_Ry=al_qe["ecutrho_Ry"])


@pytest.fixture(scope="module")
def be2_terms(be2):
    return terms_for(be2 / "Be_snapshot0.dens.npy", be2 / "recreate_data" / "Be.pw.scf.in",
                     {"Be": be2 / "Be.pbe-n-rrkjus_psl.1.0.0.UPF"}, ecutrho_Ry=160.0)


# -- against QE ------------------------------------------------------------------------------------
@pytest.mark.parametrize("key, label, tolerance_meV", [
    ("hartree_energy_eV", "hartree", 0.001),
    ("xc_energy_eV", "xc", 0.02),  # QE's PBE uses PW92, libxc's modified PW92 constants
    ("ewald_energy_eV", "ewald", 0.001),
])
def test_be2_terms_match_qe(be2, be2_terms, key, label, tolerance_meV):
    reference = qe_printed(be2 / "Be_snapshot0.out", label)
    assert abs(be2_terms[key] - reference) / 2 < tolerance_meV * MEV
    assert be2_terms["functional"] == "PBE" and be2_terms["core_correction"]


def test_be2_core_correction_matters(be2, be2_terms):
    """Without the core charge the XC energy is off by eV/atom (the test above can fail)."""
    pp = read_upf(be2 / "Be.pbe-n-rrkjus_psl.1.0.0.UPF")
    assert pp.core_r is not None and pp.z_valence == 2.0
    reference = qe_printed(be2 / "Be_snapshot0.out", "xc")
    assert abs(be2_terms["xc_energy_eV"] - reference) < 1e-4
    # a NLCC-free functional evaluation: same density, core charge of zero
    atoms = read_structure(be2 / "recreate_data" / "Be.pw.scf.in")
    n = np.load(be2 / "Be_snapshot0.dens.npy")[..., 0] * BOHR_ANGSTROM**3
    fft = DistributedFFT(DistributedGrid(Grid(atoms.cell.array / BOHR_ANGSTROM, n.shape), self_comm()))
    e_xc, _ = xc_energy_potential(n, fft.forward(n), fft, "PBE", 160.0)
    assert abs(e_xc * HARTREE_EV - reference) / 2 > 1.0


@pytest.mark.parametrize("key, qe_key", [
    ("hartree_energy_eV", "ehart"), ("xc_energy_eV", "etxc"), ("ewald_energy_eV", "ewald")])
def test_al_terms_match_qe(al_terms, al_qe, key, qe_key):
    assert abs(al_terms[key] - al_qe[qe_key] * HARTREE_EV) < 0.002 * MEV
    assert al_terms["functional"] == "LDA" and not al_terms["core_correction"]


def test_al_double_counting_and_total_match_qe(al_terms, al_qe):
    """−∫n v_Hxc = −(2 E_H + ∫ n v_xc) in QE's terms; E with QE's own E_band and −TS."""
    assert abs(al_terms["double_counting_eV"] + (2 * al_qe["ehart"] + al_qe["vtxc"]) * HARTREE_EV) \
        < 0.002 * MEV
    energy = total_energy(al_qe["eband"] * HARTREE_EV, al_qe["demet"] * HARTREE_EV, al_terms)
    assert abs(energy - al_qe["etot"] * HARTREE_EV) < 0.002 * MEV
    assert abs(al_terms["number_of_electrons"] - 3.0) < 1e-6


def test_al_printed_terms(al_terms):
    """The same terms against pw.x's printed summary (8 decimals in Ry)."""
    for key, label in [("hartree_energy_eV", "hartree"), ("xc_energy_eV", "xc"),
                       ("ewald_energy_eV", "ewald")]:
        assert abs(al_terms[key] - qe_printed(AL_DIR / "al.scf.out", label)) < 1e-6


def test_al_total_energy_from_dft_ldos(al_terms, al_qe, al_pseudo):
    """Total energy from pp.x's LDOS (band energy, −TS, density) against pw.x's.

    The Gaussian broadening of pp.x's LDOS (= the energy grid step) sets the error:
    −102 meV/atom for the stored 0.4 eV grid; −1.6 meV/atom for the 0.05 eV DOS.
    """
    electrons = pytest.importorskip("mlscale.electrons")
    temperature = al_qe["degauss_Ry"] * RYDBERG_EV / KB_EV_PER_K
    reference = al_qe["etot"] * HARTREE_EV
    ldos = np.load(AL_DIR / "al.ldos.npy", allow_pickle=False)
    energies = al_qe["ldos"]["start_eV"] + al_qe["ldos"]["step_eV"] * np.arange(ldos.shape[-1])
    atoms = read_structure(AL_DIR / "al.scf.in")
    grid = Grid(atoms.cell.array, ldos.shape[:3])
    dos = electrons.dos_from_ldos(ldos.reshape(-1, len(energies)), grid.voxel_volume)
    summary = electrons.electronic_structure(dos, energies, 3.0, temperature)
    density = electrons.density(ldos, energies, summary["fermi_energy_eV"], temperature)
    terms = density_energy_terms(density, DistributedGrid(grid, self_comm()), atoms, al_pseudo,
                                 ecutrho_Ry=al_qe["ecutrho_Ry"])
    error = total_energy(summary["band_energy_eV"], summary["entropy_contribution_eV"],
                         terms) - reference
    assert 80 * MEV < -error < 120 * MEV

    dos = np.load(AL_DIR / "al.dos_fine.npy", allow_pickle=False)
    energies = al_qe["dos_fine"]["start_eV"] + al_qe["dos_fine"]["step_eV"] * np.arange(len(dos))
    summary = electrons.electronic_structure(dos, energies, 3.0, temperature)
    error = total_energy(summary["band_energy_eV"], summary["entropy_contribution_eV"],
                         al_terms) - reference
    assert abs(error) < 2.5 * MEV


# -- errors ----------------------------------------------------------------------------------------
def test_bad_inputs_raise(al_pseudo):
    atoms = read_structure(AL_DIR / "al.scf.in")
    density = np.load(AL_DIR / "al.density.npy")
    grid = Grid(atoms.cell.array, density.shape)
    dgrid = DistributedGrid(grid, self_comm())
    with pytest.raises(MlscaleError, match="grid shape"):
        density_energy_terms(density[:-1], dgrid, atoms, al_pseudo)
    with pytest.raises(MlscaleError, match="NaN"):
        density_energy_terms(np.where(density > 0.2, np.nan, density), dgrid, atoms, al_pseudo)
    with pytest.raises(MlscaleError, match="no pseudopotential given for Al"):
        density_energy_terms(density, dgrid, atoms, {})
    with pytest.raises(MlscaleError, match="differs"):
        density_energy_terms(density, DistributedGrid(Grid(atoms.cell.array * 1.01,
                                                           density.shape)), atoms, al_pseudo)
    with pytest.raises(MlscaleError, match="does not fit"):
        density_energy_terms(density, dgrid, atoms, al_pseudo, ecutrho_Ry=100.0)
    with pytest.raises(MlscaleError, match="unsupported exchange-correlation"):
        density_energy_terms(density, dgrid, atoms, al_pseudo, functional="BLYP")
    with pytest.raises(MlscaleError, match="decomposition"):
        density_energy_terms(density, DistributedGrid.share(grid, 0, 2), atoms, al_pseudo)


# -- several ranks: the one-rank results and QE's --------------------------------------------------
AL_PSEUDO = Path("/usr/share/espresso/pseudo/Al.pz-vbc.UPF")


KEYS = ("hartree_energy_eV", "xc_energy_eV", "ewald_energy_eV", "double_counting_eV",
        "number_of_electrons")


def distributed_and_serial(density, atoms, pseudopotentials, **kwargs):
    comm = world()
    grid = Grid(atoms.cell.array, density.shape)
    dgrid = DistributedGrid(grid, comm)
    distributed = density_energy_terms(density[dgrid.block.slices], dgrid, atoms,
                                       pseudopotentials, **kwargs)
    serial = density_energy_terms(density, DistributedGrid(grid, self_comm()), atoms,
                                  pseudopotentials, **kwargs)
    return distributed, serial


@pytest.mark.mpi(min_size=2)
def test_be2_terms_independent_of_ranks(be2):
    atoms = read_structure(be2 / "recreate_data" / "Be.pw.scf.in")
    density = np.load(be2 / "Be_snapshot0.dens.npy")[..., 0]
    distributed, serial = distributed_and_serial(
        density, atoms, {"Be": be2 / "Be.pbe-n-rrkjus_psl.1.0.0.UPF"}, ecutrho_Ry=160.0)
    for key in KEYS:
        assert distributed[key] == pytest.approx(serial[key], rel=1e-12, abs=1e-11)
    qe_hartree = 0.00453875 * RYDBERG_EV  # Be_snapshot0.out
    assert abs(distributed["hartree_energy_eV"] - qe_hartree) < 1e-6


@pytest.mark.mpi(min_size=2)
def test_al_terms_independent_of_ranks():
    if not AL_PSEUDO.is_file():
        pytest.skip(f"{AL_PSEUDO} not installed")
    qe = json.loads((AL_DIR / "al.qe.json").read_text())
    atoms = read_structure(AL_DIR / "al.scf.in")
    density = np.load(AL_DIR / "al.density.npy")
    distributed, serial = distributed_and_serial(density, atoms, {"Al": AL_PSEUDO},
                                                 ecutrho_Ry=qe["ecutrho_Ry"])
    for key in KEYS:
        assert distributed[key] == pytest.approx(serial[key], rel=1e-12, abs=1e-11)
    assert abs(distributed["xc_energy_eV"] - qe["etxc"] * HARTREE_EV) < 2e-6


@pytest.mark.mpi(min_size=2)
def test_bad_block_on_one_rank_fails_all_ranks():
    if not AL_PSEUDO.is_file():
        pytest.skip(f"{AL_PSEUDO} not installed")
    comm = world()
    atoms = read_structure(AL_DIR / "al.scf.in")
    density = np.load(AL_DIR / "al.density.npy")
    grid = Grid(atoms.cell.array, density.shape)
    dgrid = DistributedGrid(grid, comm)
    local = density[dgrid.block.slices]
    if comm.rank == 1:
        local = local[:-1]
    with pytest.raises(MlscaleError, match="grid shape"):
        density_energy_terms(local, dgrid, atoms, {"Al": AL_PSEUDO})
