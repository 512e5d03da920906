"""Tersoff–Hamann STM (mlscale.stm, ``mlscale stm``) against QE 6.7's pp.x ``plot_num = 5``.

References: pp.x's own STM field of the same pw.x run of a 3-layer Al(100) slab, read from
its 10-digit ``filplot`` file (both bias signs); the closed forms of QE's smeared delta
functions; exact integrals of linear functions; a hand-computed column interpolation.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from mlscale import stm
from mlscale.cli import main
from mlscale.datagen.qe_run import QERunner
from mlscale.datagen.wavefunctions import ldos_from_wavefunctions, read_band_structure
from mlscale.errors import MlscaleError
from mlscale.grid import DistributedGrid, Grid

RY_EV = 13.605693122994  # CODATA 2018, as QE 6.7
BOHR_A = 0.529177210903
HAVE_QE = shutil.which("pw.x") is not None and shutil.which("pp.x") is not None
needs_qe = pytest.mark.skipif(not HAVE_QE, reason="Quantum ESPRESSO (pw.x, pp.x) not installed")
SAMPLE_BIAS_RY = 0.0735  # ≈ 1 V
DEGAUSS_RY = 0.02
Z_TOP = 4.05  # the topmost atom of the slab below (Å)

SCF = f"""&CONTROL
  calculation='scf', prefix='slab', outdir='./tmp', pseudo_dir='/usr/share/espresso/pseudo'
/
&SYSTEM
  ibrav=0, nat=3, ntyp=1, ecutwfc=10.0, occupations='smearing', smearing='gaussian',
  degauss={DEGAUSS_RY}, nosym=.true., nbnd=14
/
&ELECTRONS
  conv_thr=1e-8, mixing_beta=0.3
/
ATOMIC_SPECIES
Al 26.98 Al.pz-vbc.UPF
CELL_PARAMETERS angstrom
2.8638 0.0 0.0
0.0 2.8638 0.0
0.0 0.0 12.05
ATOMIC_POSITIONS angstrom
Al 0.0 0.0 0.0
Al 1.4319 1.4319 2.025
Al 0.0 0.0 {Z_TOP}
K_POINTS automatic
3 3 1 0 0 0
"""


def pp_input(name: str, sample_bias: float) -> str:
    return (f"&INPUTPP\n  prefix='slab', outdir='./tmp', filplot='{name}', plot_num=5, "
            f"sample_bias={sample_bias}\n/\n")


@pytest.fixture(scope="module")
def slab_run(tmp_path_factory):
    """pw.x SCF of an Al(100) slab (3 layers, 8 Å vacuum), pp.x's STM field for ±1 V."""
    run = tmp_path_factory.mktemp("stm")
    runner = QERunner(nprocs=1, nice=10)
    (run / "scf.in").write_text(SCF)
    runner.run("pw.x", "scf.in", "scf.out", run)
    for name, bias in (("plus.pp", SAMPLE_BIAS_RY), ("minus.pp", -SAMPLE_BIAS_RY)):
        (run / f"{name}.in").write_text(pp_input(name, bias))
        runner.run("pp.x", f"{name}.in", f"{name}.out", run)
    return run


def filplot_values(path: Path) -> np.ndarray:
    """pp.x's filplot: header, then the values x fastest; returned in 1/Å³."""
    lines = path.read_text().splitlines()
    nr1, nr2, nr3, _, _, _, nat, ntyp = (int(v) for v in lines[1].split())
    ibrav = int(lines[2].split()[0])
    start = 3 + (3 if ibrav == 0 else 0) + 1 + ntyp + nat
    values = np.array(" ".join(lines[start:]).split(), dtype=float)
    return values.reshape(nr3, nr2, nr1).transpose(2, 1, 0) / BOHR_A**3


def slab_grid(shape, comm=None) -> DistributedGrid:
    return DistributedGrid(Grid(np.diag([2.8638, 2.8638, 12.05]), shape), comm)


# -- the pieces ------------------------------------------------------------------------------
def test_smeared_deltas_are_qe_closed_forms_and_integrate_to_one():
    x = np.linspace(-7, 7, 14001)
    root_pi = np.sqrt(np.pi)
    closed = {0: np.exp(-x * x) / root_pi,
              1: np.exp(-x * x) / root_pi * (1.5 - x * x),  # Methfessel–Paxton, order 1
              -1: np.exp(-(x - 2 ** -0.5) ** 2) / root_pi * (2 - np.sqrt(2) * x),
              -99: 1 / (2 + np.exp(x) + np.exp(-x))}
    for ngauss, expected in closed.items():
        np.testing.assert_allclose(stm.w0gauss(x, ngauss), expected, rtol=1e-12, atol=1e-300)
        assert abs(np.trapezoid(stm.w0gauss(x, ngauss), x) - 1) < 2e-3


def test_state_weights_follow_pp_x_window_for_both_signs():
    e_kn = np.array([[0.5, 1.0 - 1e-9, 1.5, 2.0 + 1e-9, 2.3, 3.0]])
    sigma = 0.2
    for bias, (down, up) in ((1.0, (1.0, 2.0)), (-1.0, (0.0, 1.0))):
        w = stm.state_weights(e_kn, [2.0], 1.0, bias, sigma, 0)[0]
        for e, got in zip(e_kn[0], w):
            inside = down < e < up
            edge = down if e < down else up
            expected = 2.0 if inside else 2.0 * np.exp(-((edge - e) / sigma) ** 2) / np.sqrt(np.pi)
            used = down - 3 * sigma <= e < up + 3 * sigma
            assert got == pytest.approx(expected if used else 0.0, rel=1e-12)
    with pytest.raises(MlscaleError, match="non-zero"):
        stm.bias_window(1.0, 0.0)


def test_window_weights_integrate_piecewise_linear_ldos_exactly():
    e = np.linspace(-2, 3, 11)
    ldos = 0.3 + 0.7 * e  # linear: ∫_a^b = 0.3 (b − a) + 0.35 (b² − a²)
    for bias, (a, b) in ((0.73, (0.41, 1.14)), (-1.3, (-0.89, 0.41))):
        got = stm.window_weights(e, 0.41, bias) @ ldos
        assert got == pytest.approx(0.3 * (b - a) + 0.35 * (b * b - a * a), rel=1e-12)
    with pytest.raises(MlscaleError, match="leaves the LDOS energy grid"):
        stm.window_weights(e, 2.5, 1.0)


def test_constant_current_height_is_the_log_linear_crossing():
    dgrid = slab_grid((2, 2, 20))
    z = np.arange(20) * 12.05 / 20
    field = np.broadcast_to(np.exp(-1.1 * (z - Z_TOP)), (2, 2, 20)).copy()
    field[1, 1] *= 2.0  # a brighter column sits higher by ln 2 / 1.1
    image = stm.constant_current_image(field, dgrid, np.exp(-1.1 * 2.5), Z_TOP, 6.0)
    assert image[0, 0] == pytest.approx(2.5, rel=1e-12)
    assert image[1, 1] == pytest.approx(2.5 + np.log(2) / 1.1, rel=1e-12)
    plane = stm.constant_height_image(field, dgrid, Z_TOP + 2.5)
    assert plane[0, 0] == pytest.approx(np.interp(Z_TOP + 2.5, z, field[0, 0]), rel=1e-12)


# -- against pp.x -----------------------------------------------------------------------------
@pytest.mark.qe
@needs_qe
@pytest.mark.parametrize("name, sign", [("plus.pp", 1), ("minus.pp", -1)])
def test_stm_field_from_states_equals_pp_x(slab_run, name, sign):
    reference = filplot_values(slab_run / name)
    dgrid = slab_grid(reference.shape)
    field = stm.stm_field_from_wavefunctions(slab_run / "tmp" / "slab.save",
                                             sign * SAMPLE_BIAS_RY * RY_EV, dgrid)
    np.testing.assert_allclose(field, reference, rtol=1e-6, atol=1e-8 * reference.max())
    ours = stm.constant_height_image(field, dgrid, Z_TOP + 3.0)
    theirs = stm.constant_height_image(reference, dgrid, Z_TOP + 3.0)
    assert np.abs(ours - theirs).max() <= 1e-6 * theirs.max()


@pytest.mark.qe
@needs_qe
def test_stm_field_from_dft_ldos_with_pp_x_window_is_within_one_percent(slab_run):
    save = slab_run / "tmp" / "slab.save"
    fermi = read_band_structure(save / "data-file-schema.xml").fermi_energy
    energies = np.arange(fermi - 2.0, fermi + 2.4, 0.0025)
    ldos = ldos_from_wavefunctions(save, energies, 0.005)
    field = stm.stm_field_from_ldos(ldos, energies, fermi, SAMPLE_BIAS_RY * RY_EV,
                                    (DEGAUSS_RY * RY_EV, 0))
    reference = filplot_values(slab_run / "plus.pp")
    dgrid = slab_grid(reference.shape)
    ours = stm.constant_height_image(field, dgrid, Z_TOP + 3.0)
    theirs = stm.constant_height_image(reference, dgrid, Z_TOP + 3.0)
    assert np.abs(ours - theirs).max() <= 0.01 * theirs.max()


@pytest.mark.qe
@needs_qe
def test_stm_command_writes_images_that_match_pp_x(slab_run, tmp_path):
    out = tmp_path / "images"
    assert main(["stm", str(slab_run / "scf.in"), "--qe-save", str(slab_run / "tmp/slab.save"),
                 "--bias", str(-SAMPLE_BIAS_RY * RY_EV), "--height", "2.5",
                 "-o", str(out)]) == 0
    results = json.loads((out / "results.json").read_text())
    reference = filplot_values(slab_run / "minus.pp")
    dgrid = slab_grid(reference.shape)
    expected = stm.constant_height_image(reference, dgrid, Z_TOP + 2.5)
    np.testing.assert_allclose(np.load(out / "stm_height.npy"), expected, rtol=1e-6)
    heights = np.load(out / "stm_current.npy")
    assert results["topmost_atom_z_A"] == pytest.approx(Z_TOP)
    assert 1.0 < np.nanmin(heights) <= np.nanmax(heights) < 4.0
    for png in ("stm_height.png", "stm_current.png"):
        assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.mpi(min_size=2)
def test_stm_images_on_several_ranks_equal_the_serial_ones(tmp_path):
    """A smooth synthetic field split over the ranks: images as on one rank."""
    from mlscale.parallel import self_comm, world

    comm = world()
    shape = (5, 7, 23)
    i, j, k = np.meshgrid(*[np.arange(n) for n in shape], indexing="ij")
    whole = np.exp(-0.9 * k * 12.05 / 23) * (1.2 + np.cos(2 * np.pi * i / 5)
                                             * np.sin(2 * np.pi * j / 7) * 0.3)
    serial, parallel = slab_grid(shape, self_comm()), slab_grid(shape, comm)
    level = float(whole[0, 0, 12])
    for dgrid in (serial, parallel):
        local = whole[dgrid.block.slices]
        height = stm.constant_height_image(local, dgrid, Z_TOP + 1.7)
        current = stm.constant_current_image(local, dgrid, level, Z_TOP, 6.0)
        if dgrid is serial:
            expected = (height, current)
    np.testing.assert_allclose(height, expected[0], rtol=1e-13)
    np.testing.assert_allclose(current, expected[1], rtol=1e-13)
