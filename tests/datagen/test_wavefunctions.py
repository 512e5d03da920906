"""The one-pass LDOS from pw.x's wavefunctions against pp.x on the same run, and its reader.

References: pp.x's own LDOS (``plot_num = 3``, the same broadening) parsed by hand from its
10-digit ``filplot`` files and by ASE from its cube files; hand-written Fortran records;
analytic plane-wave densities and −f′ of the Fermi function.
"""

from __future__ import annotations

import re
import shutil
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest
from ase.build import bulk
from scipy.io import FortranFile
from scipy.special import expit

from mlscale.config import EnergyGrid
from mlscale.datagen import DFTSettings, LdosSettings, QERunner, pw_input, run_qe
from mlscale.datagen.qe_input import OUTDIR, PREFIX, pp_ldos_input
from mlscale.datagen.wavefunctions import (
    Wavefunctions,
    check_norm_conserving,
    fermi_dirac_delta,
    is_norm_conserving,
    ldos_from_wavefunctions,
    read_band_structure,
    read_wavefunctions,
    state_densities,
)
from mlscale.errors import MlscaleError

RY_EV = 13.605693122994  # CODATA 2018, as QE 6.7
BOHR_A = 0.529177210903
PSEUDO = "/usr/share/espresso/pseudo"
HAVE_QE = shutil.which("pw.x") is not None and shutil.which("pp.x") is not None
needs_qe = pytest.mark.skipif(not HAVE_QE, reason="Quantum ESPRESSO (pw.x, pp.x) not installed")
DFT = DFTSettings(ecutwfc=10.0, kpoints=(2, 2, 2), kshift=(1, 1, 1), nbnd=16)
LDOS = LdosSettings(EnergyGrid(4.0, 0.7, 6), broadening=0.25)


# -- the file reader -------------------------------------------------------------------------
def write_wfc(path, miller_qc, coefficients_nq, gamma_only=False, xk=(0.1, -0.2, 0.3)):
    """A wfc file as QE 6.7's write_wfc writes it (Fortran unformatted records)."""
    with FortranFile(path, "w", header_dtype="<u4") as f:
        header = np.zeros(1, dtype=[("ik", "<i4"), ("xk", "<f8", 3), ("ispin", "<i4"),
                                    ("gamma", "<i4"), ("scalef", "<f8")])
        header[0] = (3, xk, 1, int(gamma_only), 1.0)
        f.write_record(header)
        nbnd, igwx = coefficients_nq.shape
        f.write_record(np.array([igwx + 5, igwx, 1, nbnd], dtype="<i4"))
        f.write_record(np.eye(3).ravel() * 1.5)
        f.write_record(np.asarray(miller_qc, dtype="<i4"))
        for coefficients_q in coefficients_nq:
            f.write_record(np.asarray(coefficients_q, dtype="<c16"))


def test_wavefunction_reader_returns_the_hand_written_records(tmp_path):
    rng = np.random.default_rng(1)
    miller_qc = rng.integers(-3, 4, size=(7, 3))
    coefficients_nq = rng.normal(size=(4, 7)) + 1j * rng.normal(size=(4, 7))
    write_wfc(tmp_path / "wfc3.dat", miller_qc, coefficients_nq)
    wfc = read_wavefunctions(tmp_path / "wfc3.dat")
    assert (wfc.k_index, wfc.spin, wfc.gamma_only, wfc.scale) == (3, 1, False, 1.0)
    np.testing.assert_array_equal(wfc.xk_v, [0.1, -0.2, 0.3])
    np.testing.assert_array_equal(wfc.bvectors_cv, 1.5 * np.eye(3))
    np.testing.assert_array_equal(wfc.miller_qc, miller_qc)
    np.testing.assert_array_equal(wfc.coefficients_nq, coefficients_nq)


def test_truncated_wavefunction_file_raises_clear_error(tmp_path):
    write_wfc(tmp_path / "wfc1.dat", np.zeros((2, 3)), np.ones((3, 2)))
    data = (tmp_path / "wfc1.dat").read_bytes()
    (tmp_path / "wfc1.dat").write_bytes(data[:-20])
    with pytest.raises(MlscaleError, match="cannot read pw.x wavefunctions"):
        read_wavefunctions(tmp_path / "wfc1.dat")


# -- the pieces ------------------------------------------------------------------------------
def test_broadening_is_minus_the_fermi_function_derivative():
    x = np.linspace(-30, 30, 601)
    np.testing.assert_allclose(fermi_dirac_delta(x), expit(x) * expit(-x), rtol=1e-12)
    near, h = np.linspace(-8, 8, 161), 1e-5  # and −f′ by central differences
    derivative = (expit(-(near + h)) - expit(-(near - h))) / (2 * h)
    np.testing.assert_allclose(fermi_dirac_delta(near), -derivative, rtol=1e-6)
    assert fermi_dirac_delta(np.array([36.5, -40.0])).tolist() == [0.0, 0.0]  # QE's cut


def plane_waves(miller_qc, coefficients_nq, gamma_only=False):
    return Wavefunctions(1, np.zeros(3), 1, gamma_only, 1.0, np.eye(3),
                         np.asarray(miller_qc), np.asarray(coefficients_nq, dtype=complex))


def test_state_density_of_two_plane_waves_is_the_analytic_standing_wave():
    """ψ = a e^{iG1·r} + b e^{iG2·r}: |ψ|² = |a|² + |b|² + 2 Re(a b* e^{i(G1−G2)·r})."""
    shape = (6, 5, 4)
    a, b = 0.6, 0.8j
    wfc = plane_waves([[1, 0, -1], [-1, 2, 0]], [[a, b], [1.0, 0.0]])
    density_np = state_densities(wfc, [0, 1], shape)
    i, j, k = np.meshgrid(*[np.arange(n) for n in shape], indexing="ij")
    phase = 2 * np.pi * (2 * i / 6 - 2 * j / 5 - k / 4)  # (G1 − G2)·r
    expected = abs(a) ** 2 + abs(b) ** 2 + 2 * np.real(a * np.conj(b) * np.exp(1j * phase))
    np.testing.assert_allclose(density_np[0], (expected / expected.sum()).ravel(), atol=1e-15)
    np.testing.assert_allclose(density_np[1], 1 / np.prod(shape), rtol=1e-12)


def test_gamma_only_states_add_the_conjugate_g_vectors():
    """c(−G) = c(G)*: ψ = 2 Re(c e^{iG·r}) for one stored G ≠ 0."""
    shape = (8, 4, 4)
    c = 0.3 + 0.4j
    density_np = state_densities(plane_waves([[1, 0, 0]], [[c]], gamma_only=True), [0], shape)
    i = np.arange(8)[:, None, None] * np.ones(shape)
    expected = (2 * np.real(c * np.exp(2j * np.pi * i / 8))) ** 2
    np.testing.assert_allclose(density_np[0], (expected / expected.sum()).ravel(), atol=1e-15)


@pytest.mark.parametrize("name, norm_conserving", [
    ("Al.pz-vbc.UPF", True), ("Si.pbe-rrkj.UPF", True), ("C.UPF", True),
    ("C.pbe-rrkjus.UPF", False), ("B.pbe-n-kjpaw_psl.1.0.0.UPF", False),
    ("Ni.pbe-nd-rrkjus.UPF", False)])
def test_pseudopotential_type_is_recognised(name, norm_conserving):
    path = f"{PSEUDO}/{name}"
    if not Path(path).is_file():
        pytest.skip(f"{path} not installed")
    assert is_norm_conserving(path) is norm_conserving


def test_ultrasoft_pseudopotential_raises_and_names_pp_x(tmp_path):
    path = f"{PSEUDO}/C.pbe-rrkjus.UPF"
    if not Path(path).is_file():
        pytest.skip(f"{path} not installed")
    shutil.copy(path, tmp_path)
    (tmp_path / "data-file-schema.xml").write_text(
        "<qes><output><atomic_species><species name='C'>"
        "<pseudo_file>C.pbe-rrkjus.UPF</pseudo_file></species></atomic_species></output></qes>")
    with pytest.raises(MlscaleError, match="ultrasoft/PAW.*pp.x"):
        check_norm_conserving(tmp_path)
    with pytest.raises(MlscaleError, match="ultrasoft/PAW.*pp.x"):
        ldos_from_wavefunctions(tmp_path, [0.0], 0.1)


# -- against pp.x on the same pw.x run -------------------------------------------------------
def displaced_cell():
    atoms = bulk("Al", "fcc", a=4.05, cubic=True)
    atoms.positions += np.random.default_rng(11).normal(scale=0.1, size=(4, 3))
    atoms.wrap()
    return atoms


@pytest.fixture(scope="module")
def pw_run(tmp_path_factory):
    """pw.x SCF of a displaced 4-atom cell, then pp.x's LDOS on the same run."""
    run = tmp_path_factory.mktemp("wfc")
    runner = QERunner(nprocs=1)
    (run / "scf.in").write_text(pw_input(displaced_cell(), DFT))
    runner.run("pw.x", "scf.in", "scf.out", run)
    (run / "pp.in").write_text(pp_ldos_input(LDOS))
    runner.run("pp.x", "pp.in", "pp.out", run)
    return run


def filplot_values(path):
    """pp.x's intermediate file: header, then the grid values x fastest (10 digits)."""
    lines = path.read_text().splitlines()
    nr1, nr2, nr3, _, _, _, nat, ntyp = (int(v) for v in lines[1].split())
    ibrav = int(lines[2].split()[0])
    start = 3 + (3 if ibrav == 0 else 0) + 1 + ntyp + nat
    values = np.array(" ".join(lines[start:]).split(), dtype=float)
    return values.reshape(nr3, nr2, nr1).transpose(2, 1, 0)


def cube_values(path):
    from ase.io.cube import read_cube

    with open(path) as f:
        return read_cube(f)["data"]


@pytest.mark.qe
@needs_qe
def test_one_pass_ldos_equals_pp_x_at_every_point_and_energy(pw_run):
    save = pw_run / OUTDIR / f"{PREFIX}.save"
    ldos_ge = ldos_from_wavefunctions(save, LDOS.energy_grid.energies, LDOS.broadening)
    files = sorted(pw_run.glob("tmp.pp[0-9][0-9][0-9]"))
    cubes = sorted(pw_run.glob("tmp.pp*snapshot_ldos.cube"))
    assert len(files) == len(cubes) == LDOS.energy_grid.count
    to_file_units = RY_EV * BOHR_A**3  # 1/(eV Å³) → 1/(Ry Bohr³)
    for e, (path, cube) in enumerate(zip(files, cubes)):
        reference = filplot_values(path)
        ours = ldos_ge[..., e] * to_file_units
        assert ours.shape == reference.shape
        assert np.abs(ours - reference).max() <= 1e-5 * np.abs(reference).max()
        np.testing.assert_allclose(ours, reference, rtol=1e-8, atol=1e-9 * reference.max())
        # the cube prints 5 significant digits (0.12345E-01): half a unit of the last
        np.testing.assert_allclose(ours, cube_values(cube), rtol=5.1e-5, atol=1e-12)


@pytest.mark.qe
@needs_qe
def test_band_structure_reader_matches_the_xml(pw_run):
    bands = read_band_structure(pw_run / OUTDIR / f"{PREFIX}.save" / "data-file-schema.xml")
    text = (pw_run / "scf.out").read_text()
    assert bands.weights_k.sum() == pytest.approx(2.0)
    assert bands.nsym == 1
    assert bands.eigenvalues_kn.shape == (len(bands.weights_k), DFT.nbnd)
    fermi = float(re.findall(r"the Fermi energy is\s+(-?\d+\.\d+) ev", text)[-1])
    assert bands.fermi_energy == pytest.approx(fermi, abs=1e-4)
    volume = float(re.findall(r"unit-cell volume\s+=\s+(\S+)", text)[0]) * BOHR_A**3
    assert bands.volume == pytest.approx(volume, rel=1e-6)
    fft = tuple(int(n) for n in re.findall(r"FFT dimensions: \(\s*(\d+),\s*(\d+),\s*(\d+)\)",
                                           text)[0])
    assert bands.fft_shape == fft


@pytest.mark.qe
@needs_qe
def test_symmetry_reduced_run_raises(tmp_path):
    atoms = bulk("Al", "fcc", a=4.05)
    (tmp_path / "scf.in").write_text(pw_input(atoms, DFTSettings(ecutwfc=8.0, nbnd=6)))
    QERunner(nprocs=1).run("pw.x", "scf.in", "scf.out", tmp_path)
    with pytest.raises(MlscaleError, match="symmetries.*nosym or use pp.x"):
        ldos_from_wavefunctions(tmp_path / OUTDIR / f"{PREFIX}.save", [5.0], 0.1)


@pytest.mark.qe
@needs_qe
def test_run_qe_with_wavefunctions_keeps_them_until_the_ldos_is_read(tmp_path, pw_run):
    """run_qe's one-pass stage writes ldos.npy equal to pp.x's values, then cleans up."""
    run = tmp_path / "run"
    run_qe(displaced_cell(), run, DFT, LDOS, QERunner(nprocs=1), ldos_tool="wavefunctions")
    ldos_ge = np.load(run / "ldos.npy", allow_pickle=False)
    assert ldos_ge.dtype == np.float32
    files = sorted(pw_run.glob("tmp.pp[0-9][0-9][0-9]"))
    reference = np.stack([filplot_values(p) for p in files], axis=-1) / (RY_EV * BOHR_A**3)
    # another SCF of the same input: same to the SCF convergence, not to round-off
    np.testing.assert_allclose(ldos_ge, reference, rtol=1e-3, atol=1e-4 * reference.max())
    assert not (run / OUTDIR).exists() and (run / "scf.xml").is_file()
    assert not list(run.glob("*ldos*.cube")) and (run / "density.cube").is_file()
    weights = [float(k.find("k_point").get("weight"))
               for k in ET.parse(run / "scf.xml").getroot().iter("ks_energies")]
    assert sum(weights) == pytest.approx(2.0)


def test_default_ldos_tool_is_the_one_pass_for_norm_conserving_pseudopotentials():
    from mlscale.datagen import default_ldos_tool

    if not Path(f"{PSEUDO}/C.pbe-rrkjus.UPF").is_file():
        pytest.skip("ultrasoft test pseudopotential not installed")
    assert default_ldos_tool(DFTSettings(pseudopotentials={"Al": "Al.pz-vbc.UPF"})) == \
        "wavefunctions"
    mixed = DFTSettings(pseudopotentials={"Al": "Al.pz-vbc.UPF", "C": "C.pbe-rrkjus.UPF"})
    assert default_ldos_tool(mixed) == "pp.x"


def test_band_structure_reader_names_a_missing_element(tmp_path):
    (tmp_path / "data-file-schema.xml").write_text(
        "<qes><output><band_structure><lsda>false</lsda></band_structure></output></qes>")
    with pytest.raises(MlscaleError, match="fermi_energy|fft_grid"):
        read_band_structure(tmp_path / "data-file-schema.xml")
