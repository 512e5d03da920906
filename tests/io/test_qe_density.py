"""QE's charge-density.dat and ``mlscale qe-density``, checked against pw.x itself.

References: the Miller indices, reciprocal vectors and ρ(G) that pw.x writes for its
own SCF (a triclinic 1-atom Al cell, with k points and at Γ only), pp.x's plot_num=0
cube of the same run, and pw.x's SCF restarted from the file mlscale writes (fcc Al,
1 atom, 2×2×2 k, ecutwfc 15 / ecutrho 60 Ry): it must read it, converge at once and
reproduce the total energy.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from mlscale.cli import main
from mlscale.datagen.qe_run import QERunner
from mlscale.errors import MlscaleError
from mlscale.grid import Block, qe_fft_shape
from mlscale.io.cube import read_cube_block
from mlscale.io.qe_charge_density import (
    ChargeDensityG,
    density_from_rho_g,
    qe_miller_indices,
    read_charge_density,
    reciprocal_vectors_bohr,
    rho_g_from_density,
    write_charge_density,
)
from mlscale.io.structure import read_structure
from mlscale.units import BOHR_ANGSTROM

HAVE_QE = shutil.which("pw.x") is not None and shutil.which("pp.x") is not None
needs_qe = pytest.mark.skipif(not HAVE_QE, reason="Quantum ESPRESSO (pw.x, pp.x) not installed")

FCC = "0.0 2.025 2.025\n 2.025 0.0 2.025\n 2.025 2.025 0.0"
TRICLINIC = "2.9 0.0 0.0\n 0.7 2.7 0.0\n 0.4 -0.5 3.3"


def pw_input(cell: str, kpoints: str, outdir: str = "out", extra: str = "") -> str:
    return f"""&CONTROL
  calculation = 'scf', prefix = 'al', outdir = './{outdir}'
  pseudo_dir = '/usr/share/espresso/pseudo'
/
&SYSTEM
  ibrav = 0, nat = 1, ntyp = 1, ecutwfc = 15, ecutrho = 60
  occupations = 'smearing', smearing = 'mv', degauss = 0.02
/
&ELECTRONS
  conv_thr = 1e-10 {extra}
/
ATOMIC_SPECIES
 Al 26.98 Al.pz-vbc.UPF
CELL_PARAMETERS angstrom
 {cell}
ATOMIC_POSITIONS crystal
 Al 0.1 0.0 0.0
K_POINTS {kpoints}
"""


def run_pw(directory: Path, text: str, name: str = "scf") -> str:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / f"{name}.in").write_text(text)
    QERunner(nprocs=1, nice=10).run("pw.x", f"{name}.in", f"{name}.out", directory)
    return (directory / f"{name}.out").read_text()


def total_energy_Ry(output: str) -> float:
    return float(re.findall(r"^!\s+total energy\s+=\s+(\S+) Ry", output, re.M)[-1])


def iterations(output: str) -> int:
    return int(re.search(r"convergence has been achieved in\s+(\d+) iterations", output)[1])


def fft_dimensions(output: str) -> tuple[int, ...]:
    match = re.search(r"Dense\s+grid:.*FFT dimensions: \(\s*(\d+),\s*(\d+),\s*(\d+)\)", output)
    return tuple(int(n) for n in match.groups())


@pytest.fixture(scope="module")
def fcc_run(tmp_path_factory):
    """pw.x SCF of fcc Al (1 atom, 2×2×2 k, 15/60 Ry) and pp.x's density cube of it."""
    directory = tmp_path_factory.mktemp("fcc")
    output = run_pw(directory, pw_input(FCC, "automatic\n 2 2 2 0 0 0"))
    (directory / "pp.in").write_text(
        "&INPUTPP\n prefix = 'al', outdir = './out', filplot = 'tmp.rho', plot_num = 0\n/\n"
        "&PLOT\n iflag = 3, output_format = 6, fileout = 'rho.cube'\n/\n")
    QERunner(nprocs=1, nice=10).run("pp.x", "pp.in", "pp.out", directory)
    return directory, output


@needs_qe
@pytest.mark.parametrize("kpoints", ["automatic\n 2 2 2 0 0 0", "gamma"])
def test_g_order_and_records_equal_pw_x_file_for_triclinic_cell(tmp_path, kpoints):
    output = run_pw(tmp_path, pw_input(TRICLINIC, kpoints))
    written = tmp_path / "out" / "al.save" / "charge-density.dat"
    qe = read_charge_density(written)
    cell_cv = read_structure(tmp_path / "scf.in", format="espresso-in").cell.array
    shape = qe_fft_shape(cell_cv, 60.0)
    assert shape == fft_dimensions(output)
    assert qe.gamma_only == (kpoints == "gamma")
    mill_qc = qe_miller_indices(cell_cv, shape, 60.0, gamma_only=qe.gamma_only)
    np.testing.assert_array_equal(mill_qc, qe.mill_qc)
    np.testing.assert_allclose(reciprocal_vectors_bohr(cell_cv), qe.b_cv, rtol=1e-12, atol=0)
    # through real space and back: the same records (ρ(G) to round-off)
    density_g = density_from_rho_g(qe.rho_sq[0], qe.mill_qc, shape, gamma_only=qe.gamma_only)
    rho_q = rho_g_from_density(density_g, mill_qc)
    np.testing.assert_allclose(rho_q, qe.rho_sq[0], rtol=0, atol=1e-14)
    copy = tmp_path / "copy.dat"
    write_charge_density(copy, ChargeDensityG(qe.gamma_only, qe.b_cv, mill_qc, qe.rho_sq))
    assert copy.read_bytes() == written.read_bytes()


@needs_qe
def test_rho_g_normalisation_equals_pw_x_on_pp_x_cube(fcc_run):
    directory, _ = fcc_run
    qe = read_charge_density(directory / "out" / "al.save" / "charge-density.dat")
    cube_g, _ = read_cube_block(directory / "rho.cube", Block((0, 0, 0), (15, 15, 15)))
    rho_q = rho_g_from_density(cube_g / BOHR_ANGSTROM**3, qe.mill_qc)  # cube: 1/Bohr³
    scale = np.abs(qe.rho_sq[0]).max()  # ρ(0) = 3 electrons / Ω
    np.testing.assert_allclose(rho_q, qe.rho_sq[0], rtol=0, atol=1e-5 * scale)
    volume_bohr3 = abs(np.linalg.det(np.linalg.inv(qe.b_cv) * 2 * np.pi))
    assert qe.rho_sq[0, 0].real * volume_bohr3 == pytest.approx(3.0, abs=1e-9)


@needs_qe
def test_pw_x_restarts_from_mlscale_file_in_one_iteration(fcc_run, capsys):
    directory, reference = fcc_run
    restart = directory / "restart"
    restart.mkdir()
    (restart / "scf.in").write_text(pw_input(FCC, "automatic\n 2 2 2 0 0 0", outdir="fresh",
                                             extra=", startingpot = 'file'"))
    assert main(["qe-density", str(directory / "rho.cube"),
                 "--pw-input", str(restart / "scf.in")]) == 0
    assert '"g_vectors": 893' in capsys.readouterr().out
    assert (restart / "fresh" / "al.save" / "charge-density.dat").is_file()
    output = run_pw(restart, (restart / "scf.in").read_text(), name="restart")
    assert "The initial density is read from file" in output
    assert iterations(reference) >= 4  # from atomic superposition
    assert iterations(output) <= 2
    assert total_energy_Ry(output) == pytest.approx(total_energy_Ry(reference), abs=1e-6)


def _input(tmp_path: Path, extra_system: str = "") -> Path:
    path = tmp_path / "scf.in"
    path.write_text(pw_input(FCC, "automatic\n 2 2 2 0 0 0").replace(
        "ecutrho = 60", f"ecutrho = 60 {extra_system}"))
    return path


def test_grid_that_is_not_pw_x_fft_grid_is_a_clear_error(tmp_path, capsys):
    np.save(tmp_path / "density.npy", np.full((14, 14, 14), 0.06))
    assert main(["qe-density", str(tmp_path / "density.npy"),
                 "--pw-input", str(_input(tmp_path))]) == 1
    error = capsys.readouterr().err
    assert "grid (14, 14, 14) is not the FFT grid (15, 15, 15)" in error
    assert not (tmp_path / "out").exists()


def test_spin_polarised_input_and_missing_density_are_clear_errors(tmp_path, capsys):
    np.save(tmp_path / "density.npy", np.full((15, 15, 15), 0.06))
    spin = _input(tmp_path, ", nspin = 2, starting_magnetization(1) = 0.5")
    assert main(["qe-density", str(tmp_path / "density.npy"), "--pw-input", str(spin)]) == 1
    assert "only nspin = 1" in capsys.readouterr().err
    assert main(["qe-density", str(tmp_path), "--pw-input", str(_input(tmp_path))]) == 1
    assert "holds no density.h5 or density.cube" in capsys.readouterr().err


def test_file_that_is_not_a_charge_density_is_a_clear_error(tmp_path):
    path = tmp_path / "charge-density.dat"
    path.write_bytes(b"not fortran records")
    with pytest.raises(MlscaleError, match="not a QE charge-density.dat"):
        read_charge_density(path)


def test_uniform_density_has_only_g0(tmp_path):
    """A constant n(r) = N/V (1/Å³) has ρ(0) = N/V in 1/Bohr³ and nothing else."""
    cell_cv = np.diag([3.0, 3.5, 4.0])
    shape = qe_fft_shape(cell_cv, 40.0)
    mill_qc = qe_miller_indices(cell_cv, shape, 40.0)
    assert tuple(mill_qc[0]) == (0, 0, 0)
    rho_q = rho_g_from_density(np.full(shape, 2.0 / 42.0), mill_qc)
    assert rho_q[0].real == pytest.approx(2.0 / 42.0 * BOHR_ANGSTROM**3, rel=1e-14)
    assert np.abs(rho_q[1:]).max() < 1e-16


MPIEXEC = shutil.which("mpiexec", path=str(Path(sys.executable).parent)) or shutil.which("mpiexec")


@pytest.mark.skipif(MPIEXEC is None, reason="mpiexec not found beside the Python executable")
def test_file_written_on_two_ranks_equals_serial_file(tmp_path, capsys):
    """Blocks of 8 and 7 planes gathered on rank 0: the same bytes as one rank's file."""
    density_g = np.random.default_rng(17).uniform(0.05, 0.2, (15, 15, 15))
    np.save(tmp_path / "density.npy", density_g)
    pw = _input(tmp_path)
    assert main(["qe-density", str(tmp_path / "density.npy"), "--pw-input", str(pw),
                 "--outdir", "serial"]) == 0
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PMI_", "PMIX_", "MPI"))}
    env["OMP_NUM_THREADS"] = "1"
    run = subprocess.run([MPIEXEC, "-n", "2", sys.executable, "-m", "mlscale", "qe-density",
                          str(tmp_path / "density.npy"), "--pw-input", str(pw),
                          "--outdir", "ranks2"], capture_output=True, text=True, timeout=300,
                         env=env)
    assert run.returncode == 0, run.stderr
    assert '"ranks": 2' in run.stdout
    serial = tmp_path / "serial" / "al.save" / "charge-density.dat"
    assert (tmp_path / "ranks2" / "al.save" / "charge-density.dat").read_bytes() == \
        serial.read_bytes()
    assert np.allclose(read_charge_density(serial).rho_sq[0, 0].real,
                       density_g.mean() * BOHR_ANGSTROM**3, rtol=1e-14, atol=0)
