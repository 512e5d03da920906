"""δ/δn and δ/δn_core of the density terms against central finite differences of
mlscale.energy's own energies (float64): Al LDA (no core charge) from QE's density, and
MALA's Be2 (PBE, core correction)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from mlscale.energy import DistributedFFT, density_energy_terms, read_upf
from mlscale.energy.core import core_density_q
from mlscale.energy.xc import xc_energy_potential
from mlscale.forces.density import density_gradient
from mlscale.grid import DistributedGrid, Grid
from mlscale.io import read_structure
from mlscale.parallel import self_comm
from mlscale.units import BOHR_ANGSTROM, HARTREE_EV
from tests.energy._qe import AL_DIR

DENSITY_KEYS = ("hartree_energy_eV", "xc_energy_eV", "double_counting_eV")


def smooth_field(shape, seed):
    """A smooth random periodic field of unit size (low Fourier components only)."""
    rng = np.random.default_rng(seed)
    field_q = np.zeros(shape, dtype=complex)
    field_q[:3, :3, :3] = rng.normal(size=(3, 3, 3)) + 1j * rng.normal(size=(3, 3, 3))
    field = np.real(np.fft.ifftn(field_q))
    return field / np.max(np.abs(field))


def case(name, be2=None, al_pseudo=None):
    if name == "Al":
        atoms = read_structure(AL_DIR / "al.scf.in")
        density = np.load(AL_DIR / "al.density.npy")
        ecut = json.loads((AL_DIR / "al.qe.json").read_text())["ecutrho_Ry"]
        return atoms, density, al_pseudo, ecut
    atoms = read_structure(be2 / "recreate_data" / "Be.pw.scf.in")
    density = np.load(be2 / "Be_snapshot0.dens.npy")[..., 0]  # 1/Å³
    return atoms, density, {"Be": be2 / "Be.pbe-n-rrkjus_psl.1.0.0.UPF"}, 160.0


@pytest.fixture(params=["Al", "Be2"])
def inputs(request):
    if request.param == "Al":
        return case("Al", al_pseudo=request.getfixturevalue("al_pseudo"))
    return case("Be2", be2=request.getfixturevalue("be2"))


def density_energy(density, dgrid, atoms, pps, ecut):
    terms = density_energy_terms(density, dgrid, atoms, pps, ecutrho_Ry=ecut)
    return sum(terms[key] for key in DENSITY_KEYS)


def test_density_gradient_equals_central_finite_differences(inputs):
    atoms, density, pps, ecut = inputs
    dgrid = DistributedGrid(Grid(atoms.cell.array, density.shape), self_comm())
    gradient = density_gradient(density, dgrid, atoms, pps, ecutrho_Ry=ecut)
    for seed in range(2):
        direction = smooth_field(density.shape, seed) * np.mean(density)
        h = 1e-3
        fd = (density_energy(density + h * direction, dgrid, atoms, pps, ecut)
              - density_energy(density - h * direction, dgrid, atoms, pps, ecut)) / (2 * h)
        analytic = dgrid.voxel_volume * float(np.sum(gradient.potential_b * direction))
        assert analytic == pytest.approx(fd, rel=1e-6)


def test_core_potential_equals_central_finite_differences(be2):
    """δ/δn_c of E_xc[n + n_c] − ∫ n v_xc[n + n_c] (the only n_c-dependent terms)."""
    atoms, density, pps, ecut = case("Be2", be2=be2)
    dgrid = DistributedGrid(Grid(atoms.cell.array, density.shape), self_comm())
    gradient = density_gradient(density, dgrid, atoms, pps, ecutrho_Ry=ecut)
    assert gradient.functional == "PBE" and gradient.core_potential_b is not None
    fft = DistributedFFT(dgrid.with_cell(dgrid.cell_cv / BOHR_ANGSTROM))
    n_b = density * BOHR_ANGSTROM**3
    n_q = fft.forward(n_b)
    core_q = core_density_q(fft, {"Be": read_upf(pps["Be"])}, atoms.get_chemical_symbols(),
                            atoms.get_scaled_positions(), ecut)
    direction_q = fft.forward(smooth_field(density.shape, 5)) * np.abs(core_q).max() * 0.5

    def energy(t):
        rho_q = n_q + core_q + t * direction_q
        e_xc, v_xc_b = xc_energy_potential(fft.backward(n_q + core_q) + t * fft.backward(
            direction_q), rho_q, fft, "PBE", ecut)
        return (e_xc - fft.integrate(n_b * v_xc_b)) * HARTREE_EV

    h = 1e-3
    fd = (energy(h) - energy(-h)) / (2 * h)
    direction_b = fft.backward(direction_q) / BOHR_ANGSTROM**3  # 1/Å³
    analytic = dgrid.voxel_volume * float(np.sum(gradient.core_potential_b * direction_b))
    assert analytic == pytest.approx(fd, rel=1e-6)
