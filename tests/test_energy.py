"""Energy terms against Quantum ESPRESSO, analytic results and brute-force sums (one rank).

References: MALA's Be2 data (PBE, ultrasoft, core correction; QE 6.6 output) and
tests/data/al_qe (LDA Al, QE 6.7, made by tests/data/al_qe/make_al_qe.py).
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from scipy.integrate import simpson
from scipy.special import erfc

from mlscale.errors import MlscaleError
from mlscale.grid import DistributedGrid, Grid
from mlscale.io import read_structure
from mlscale.parallel import self_comm
from mlscale.energy import (DistributedFFT, density_energy_terms, ewald_energy,
                            find_pseudopotentials, read_upf, total_energy)
from mlscale.energy.core import core_form_factor
from mlscale.energy.hartree import hartree_energy_potential
from mlscale.units import BOHR_ANGSTROM, HARTREE_EV, KB_EV_PER_K, RYDBERG_EV
from mlscale.energy.xc import xc_energy_potential

AL_DIR = Path(__file__).parent / "data" / "al_qe"
QE_PSEUDO = Path("/usr/share/espresso/pseudo")
MEV = 1e-3


def qe_printed(path, label) -> float:
    """A term of pw.x's energy summary (``label contribution = x Ry``) in eV."""
    value = re.findall(rf"{label}\s+contribution\s*=\s*([-\d.]+)\s*Ry", Path(path).read_text())
    return float(value[-1]) * RYDBERG_EV


def qe_valences(path) -> dict[str, float]:
    """Valence charges from pw.x's ``atomic species valence mass`` table."""
    text = Path(path).read_text().split("atomic species   valence")[1].split("\n\n")[0]
    return {line.split()[0]: float(line.split()[1]) for line in text.strip().splitlines()[1:]}


def terms_for(density_path, structure_path, pseudopotentials, **kwargs):
    atoms = read_structure(structure_path)
    density = np.load(density_path, allow_pickle=False)
    density = density.reshape(density.shape[:3])
    dgrid = DistributedGrid(Grid(atoms.cell.array, density.shape), self_comm())
    return density_energy_terms(density, dgrid, atoms, pseudopotentials, **kwargs)


@pytest.fixture(scope="module")
def al_qe():
    return json.loads((AL_DIR / "al.qe.json").read_text())


@pytest.fixture(scope="module")
def al_pseudo(tmp_path_factory):
    path = QE_PSEUDO / "Al.pz-vbc.UPF"
    if not path.is_file():
        pytest.skip(f"{path} not installed (Quantum ESPRESSO pseudopotentials)")
    return {"Al": path}


@pytest.fixture(scope="module")
def al_terms(al_pseudo, al_qe):
    return terms_for(AL_DIR / "al.density.npy", AL_DIR / "al.scf.in", al_pseudo,
                     ecutrho_Ry=al_qe["ecutrho_Ry"])


@pytest.fixture(scope="module")
def be2_terms(be2):
    return terms_for(be2 / "Be_snapshot0.dens.npy", be2 / "recreate_data" / "Be.pw.scf.in",
                     {"Be": be2 / "Be.pbe-n-rrkjus_psl.1.0.0.UPF"}, ecutrho_Ry=160.0)


# -- against QE ------------------------------------------------------------------------------
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


@pytest.mark.parametrize("name", ["ewald_triclinic", "ewald_monoclinic", "ewald_orthorhombic"])
def test_ewald_matches_qe(name):
    atoms = read_structure(AL_DIR / f"{name}.scf.in")
    valence = qe_valences(AL_DIR / f"{name}.scf.out")
    charges = [valence[s] for s in atoms.get_chemical_symbols()]
    cell = atoms.cell.array / BOHR_ANGSTROM
    fft = DistributedFFT(DistributedGrid(Grid(cell, (30, 32, 36)), self_comm()))
    energy = ewald_energy(atoms.positions / BOHR_ANGSTROM, charges, fft) * HARTREE_EV
    assert abs(energy - qe_printed(AL_DIR / f"{name}.scf.out", "ewald")) < 1e-6


# -- against analytic results and brute force ---------------------------------------------------
def brute_force_ewald(pos_av, charge_a, cell_cv, eta=0.5, images=6, g_range=14):
    """Plain Ewald sum with every image/G vector in a box (Hartree, Bohr)."""
    volume = abs(np.linalg.det(cell_cv))
    r = np.arange(-g_range, g_range + 1)
    m = np.stack(np.meshgrid(r, r, r, indexing="ij"), -1).reshape(-1, 3)
    g = m[np.any(m != 0, axis=1)] @ (2 * np.pi * np.linalg.inv(cell_cv).T)
    g2 = np.sum(g**2, axis=1)
    s = np.exp(-1j * g @ pos_av.T) @ charge_a
    energy = 2 * np.pi / volume * np.sum(np.exp(-g2 / (4 * eta**2)) / g2 * np.abs(s) ** 2)
    r = np.arange(-images, images + 1)
    shifts = np.stack(np.meshgrid(r, r, r, indexing="ij"), -1).reshape(-1, 3) @ cell_cv
    for i, q in enumerate(charge_a):
        d = np.linalg.norm(pos_av[i] + shifts[:, None, :] - pos_av[None, :, :], axis=2)
        d = np.where(d < 1e-10, np.inf, d)
        energy += 0.5 * np.sum(q * charge_a[None, :] * erfc(eta * d) / d)
    return energy - eta / np.sqrt(np.pi) * np.sum(charge_a**2) \
        - np.pi * np.sum(charge_a) ** 2 / (2 * volume * eta**2)


@pytest.mark.parametrize("shape", [(24, 27, 30), (15, 16, 18), (45, 40, 40)])
def test_ewald_matches_brute_force(shape):
    rng = np.random.default_rng(7)
    cell = np.array([[7.0, 0.3, -0.5], [1.2, 8.0, 0.4], [-0.7, 0.9, 9.0]])
    pos = rng.random((7, 3)) @ cell + 20.0  # outside the cell: wrapped
    charges = rng.choice([1.0, 2.0, 3.0, 4.0], 7)
    fft = DistributedFFT(DistributedGrid(Grid(cell, shape), self_comm()))
    reference = brute_force_ewald(pos, charges, cell)
    assert abs(ewald_energy(pos, charges, fft) - reference) < 1e-11 * abs(reference)


def test_ewald_crystal_per_atom_is_size_independent():
    """fcc lattice: a 3x3x3 supercell has 27 times the primitive cell's energy."""
    prim = np.array([[0, 0.5, 0.5], [0.5, 0, 0.5], [0.5, 0.5, 0]]) * 7.6
    one = brute_force_ewald(np.zeros((1, 3)), np.array([3.0]), prim, eta=0.8, images=8, g_range=10)
    pos = np.array([i * prim[0] + j * prim[1] + k * prim[2]
                    for i in range(3) for j in range(3) for k in range(3)])
    fft = DistributedFFT(DistributedGrid(Grid(3 * prim, (36, 36, 36)), self_comm()))
    assert abs(ewald_energy(pos, np.full(27, 3.0), fft) / 27 - one) < 1e-11


def test_hartree_of_a_plane_wave():
    """n = A cos(G·r): E_H = π Ω A² / G² (atomic units)."""
    cell = np.array([[5.0, 0.0, 0.0], [1.0, 6.0, 0.0], [0.5, 0.7, 7.0]])
    grid = Grid(cell, (12, 15, 16))
    fft = DistributedFFT(DistributedGrid(grid, self_comm()))
    frac = grid.fractional_bc(grid.full_block())
    m = np.array([1, -2, 3])
    g = m @ (2 * np.pi * np.linalg.inv(cell).T)
    n = 0.3 * np.cos(2 * np.pi * frac @ m)
    energy, v_q = hartree_energy_potential(fft.forward(n), fft, fft.max_g2())
    assert energy == pytest.approx(np.pi * grid.volume * 0.3**2 / (g @ g), rel=1e-12)
    v = fft.backward(v_q)
    assert np.allclose(v, 4 * np.pi / (g @ g) * n, atol=1e-13)


def pz_lda_energy_per_electron(n):
    """Slater exchange + Perdew–Zunger 1981 correlation (rs >= 1 branch), Hartree."""
    rs = (3 / (4 * np.pi * n)) ** (1 / 3)
    exchange = -0.75 * (3 * n / np.pi) ** (1 / 3)
    correlation = -0.1423 / (1 + 1.0529 * np.sqrt(rs) + 0.3334 * rs)
    return exchange + correlation


def test_lda_uniform_density_matches_formula():
    grid = Grid(np.eye(3) * 6.0, (8, 8, 8))
    fft = DistributedFFT(DistributedGrid(grid, self_comm()))
    n = np.full(grid.shape, 0.01)  # rs = 2.88
    energy, v = xc_energy_potential(n, fft.forward(n), fft, "LDA", fft.max_g2())
    assert energy == pytest.approx(grid.volume * 0.01 * pz_lda_energy_per_electron(0.01), rel=1e-10)
    h = 1e-6  # v = d(n ε)/dn
    dv = ((0.01 + h) * pz_lda_energy_per_electron(0.01 + h)
          - (0.01 - h) * pz_lda_energy_per_electron(0.01 - h)) / (2 * h)
    assert np.allclose(v, dv, rtol=1e-7)


def test_gga_potential_is_the_functional_derivative(be2):
    """PBE: ∫ v_xc δn = δE_xc for a small smooth δn (finite difference)."""
    cell = np.array([[6.0, 0.0, 0.0], [0.5, 6.5, 0.0], [0.3, 0.2, 7.0]])
    grid = Grid(cell, (16, 16, 18))
    fft = DistributedFFT(DistributedGrid(grid, self_comm()))
    frac = grid.fractional_bc(grid.full_block())
    n = 0.02 + 0.01 * np.cos(2 * np.pi * frac[..., 0]) * np.cos(2 * np.pi * frac[..., 2])
    dn = 1e-6 * np.sin(2 * np.pi * (frac[..., 1] + frac[..., 2]))
    _, v = xc_energy_potential(n, fft.forward(n), fft, "PBE", fft.max_g2())
    plus, _ = xc_energy_potential(n + dn, fft.forward(n + dn), fft, "PBE", fft.max_g2())
    minus, _ = xc_energy_potential(n - dn, fft.forward(n - dn), fft, "PBE", fft.max_g2())
    assert (plus - minus) / 2 == pytest.approx(fft.integrate(v * dn), rel=1e-6)


def test_core_charge_integrates_to_the_radial_charge(be2):
    """n_core(G=0) Ω per atom equals 4π∫r²ρ_c dr on the full radial mesh (to its 10 Bohr cut)."""
    pp = read_upf(be2 / "Be.pbe-n-rrkjus_psl.1.0.0.UPF")
    total = simpson(4 * np.pi * pp.r_r**2 * pp.core_r, x=pp.r_r)
    assert core_form_factor(pp, np.array([0.0]))[0] == pytest.approx(total, rel=1e-6)


def test_core_form_factor_table_matches_direct_transform(be2):
    """The spline table used on the grid reproduces the Simpson transform at any |G|."""
    from mlscale.energy.core import core_density_q

    pp = read_upf(be2 / "Be.pbe-n-rrkjus_psl.1.0.0.UPF")
    atoms = read_structure(be2 / "recreate_data" / "Be.pw.scf.in")
    fft = DistributedFFT(DistributedGrid(Grid(atoms.cell.array / BOHR_ANGSTROM, (18, 18, 27)), self_comm()))
    frac = atoms.get_scaled_positions()
    n_q = core_density_q(fft, {"Be": pp}, ["Be", "Be"], frac, 160.0)
    inside = fft.g2_q <= 160.0
    g_vq = np.stack([fft.g_q(v) for v in range(3)])
    phase = sum(np.exp(-1j * np.einsum("v...,v->...", g_vq, f @ atoms.cell.array / BOHR_ANGSTROM))
                for f in frac)
    direct = core_form_factor(pp, np.sqrt(fft.g2_q[inside])) * phase[inside] / fft.grid.volume
    assert np.allclose(n_q[inside], direct, rtol=0, atol=1e-14)
    assert not np.any(n_q[~inside])


# -- UPF and errors --------------------------------------------------------------------------------
UPF_V1 = """<PP_INFO>
 test
</PP_INFO>
<PP_HEADER>
   0                   Version Number
  Xx                   Element
   NC                  Norm - Conserving pseudopotential
    T                  Nonlinear Core Correction
 SLA  PW   PBE  PBE    PBE  Exchange-Correlation functional
    5.00000000000      Z valence
</PP_HEADER>
<PP_MESH>
  <PP_R>
  0.1 0.2 0.3
  </PP_R>
  <PP_RAB>
  0.1 0.1 0.1
  </PP_RAB>
</PP_MESH>
<PP_NLCC>
  1.0 0.5 0.25
</PP_NLCC>
"""


def test_read_upf_versions(tmp_path, al_pseudo):
    path = tmp_path / "Xx.test.UPF"
    path.write_text(UPF_V1)
    pp = read_upf(path)
    assert (pp.element, pp.z_valence, pp.functional, pp.pseudo_type) == ("Xx", 5.0, "SLA PW PBE PBE", "NC")
    assert np.allclose(pp.core_r, [1.0, 0.5, 0.25]) and np.allclose(pp.r_r, [0.1, 0.2, 0.3])
    al = read_upf(al_pseudo["Al"])
    assert (al.element, al.z_valence, al.core_r) == ("Al", 3.0, None)
    assert len(al.r_r) == 171


def test_upf_errors(tmp_path):
    with pytest.raises(MlscaleError, match="cannot read"):
        read_upf(tmp_path / "missing.UPF")
    bad = tmp_path / "Xx.bad.UPF"
    bad.write_text(UPF_V1.replace("0.1 0.1 0.1", "0.1 x 0.1"))
    with pytest.raises(MlscaleError, match="corrupt"):
        read_upf(bad)
    bad.write_text(UPF_V1.split("<PP_NLCC>")[0])
    with pytest.raises(MlscaleError, match="corrupt"):
        read_upf(bad)
    bad.write_text(UPF_V1.replace("NC    ", "PAW   "))
    with pytest.raises(MlscaleError, match="PAW"):
        read_upf(bad)


def test_find_pseudopotentials(tmp_path):
    for name in ["Al.pz-vbc.UPF", "B.pbe.UPF", "Be.pbe.upf", "Be_2.UPF", "notes.txt"]:
        (tmp_path / name).write_text("x")
    assert find_pseudopotentials(tmp_path, ["Al", "B"]) == {
        "Al": tmp_path / "Al.pz-vbc.UPF", "B": tmp_path / "B.pbe.UPF"}
    with pytest.raises(MlscaleError, match="no pseudopotential for Cu"):
        find_pseudopotentials(tmp_path, ["Al", "Cu"])
    with pytest.raises(MlscaleError, match="several pseudopotentials for Be"):
        find_pseudopotentials(tmp_path, ["Be"])
    with pytest.raises(MlscaleError, match="does not exist"):
        find_pseudopotentials(tmp_path / "nowhere", ["Al"])


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


# -- command line ---------------------------------------------------------------------------------
def run_cli(capsys, *argv) -> dict:
    from mlscale.cli import main

    assert main(["energy", *map(str, argv)]) == 0
    return json.loads(capsys.readouterr().out)


def test_cli_numpy_cube_and_openpmd(capsys, tmp_path, al_qe, al_pseudo, be2):
    import ase.io

    out = run_cli(capsys, AL_DIR / "al.density.npy", "--structure", AL_DIR / "al.scf.in",
                  "--pseudopotentials", al_pseudo["Al"].parent, "--ecutrho", 48)
    assert abs(out["xc_energy_eV"] - al_qe["etxc"] * HARTREE_EV) < 0.002 * MEV
    # the same density as a cube (1/Bohr³, ASE writes Bohr) gives the same terms
    atoms = read_structure(AL_DIR / "al.scf.in")
    density = np.load(AL_DIR / "al.density.npy")
    cube = tmp_path / "al.cube"
    ase.io.write(cube, atoms, data=density * BOHR_ANGSTROM**3)
    cube_out = run_cli(capsys, cube, "--structure", AL_DIR / "al.scf.in",
                       "--pseudopotentials", al_pseudo["Al"].parent, "--ecutrho", 48)
    for key in ("hartree_energy_eV", "xc_energy_eV", "double_counting_eV", "ewald_energy_eV"):
        assert cube_out[key] == pytest.approx(out[key], abs=2e-5)  # cube: 5 digits
    be = run_cli(capsys, be2 / "Be_snapshot.dens.h5", "--structure",
                 be2 / "recreate_data" / "Be.pw.scf.in", "--pseudopotentials", be2,
                 "--ecutrho", 160)
    assert abs(be["hartree_energy_eV"] - qe_printed(be2 / "Be_snapshot0.out", "hartree")) < 1e-5


def test_cli_errors(capsys, tmp_path, al_pseudo):
    from mlscale.cli import main

    assert main(["energy", str(tmp_path / "x.txt"), "--structure", str(AL_DIR / "al.scf.in"),
                 "--pseudopotentials", str(al_pseudo["Al"].parent)]) == 1
    assert "unknown density file type" in capsys.readouterr().err
    empty = tmp_path / "pseudo"
    empty.mkdir()
    shutil.copy(AL_DIR / "al.density.npy", tmp_path / "d.npy")
    assert main(["energy", str(tmp_path / "d.npy"), "--structure", str(AL_DIR / "al.scf.in"),
                 "--pseudopotentials", str(empty)]) == 1
    assert "no pseudopotential for Al" in capsys.readouterr().err
