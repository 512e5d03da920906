"""Energy terms on several ranks equal the one-rank results and QE's.

Run: mpiexec -n 2 python -m pytest --with-mpi tests/test_energy_mpi.py  (and -n 3)
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from mlscale.errors import MlscaleError
from mlscale.grid import DistributedGrid, Grid
from mlscale.io import read_structure
from mlscale.parallel import self_comm, world
from mlscale.energy import DistributedFFT, density_energy_terms, ewald_energy
from mlscale.units import HARTREE_EV, RYDBERG_EV

AL_DIR = Path(__file__).parent / "data" / "al_qe"
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
@pytest.mark.parametrize("shape", [(10, 12, 15), (9, 7, 8), (5, 6, 4)])
def test_fft_matches_numpy(shape):
    comm = world()
    grid = Grid(np.array([[4.0, 0, 0], [1.0, 5.0, 0], [0.5, 0.3, 6.0]]), shape)
    fft = DistributedFFT(DistributedGrid(grid, comm))
    full = np.random.default_rng(3).random(shape)
    f_q = fft.forward(full[fft.block.slices])
    reference = np.fft.rfftn(full) / full.size
    assert np.allclose(f_q, reference[fft.spectral_block.slices], atol=1e-15)
    assert np.allclose(fft.backward(f_q), full[fft.block.slices], atol=1e-14)
    assert fft.sum_q(np.abs(f_q) ** 2) == pytest.approx(np.mean(full**2), rel=1e-13)


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
def test_ewald_independent_of_ranks():
    rng = np.random.default_rng(11)
    cell = np.array([[9.0, 0.5, 0.0], [0.4, 8.0, 0.6], [-0.3, 0.2, 10.0]])
    pos = rng.random((20, 3)) @ cell
    charges = rng.choice([1.0, 3.0], 20)
    grid = Grid(cell, (27, 24, 30))
    distributed = ewald_energy(pos, charges, DistributedFFT(DistributedGrid(grid, world())))
    serial = ewald_energy(pos, charges, DistributedFFT(DistributedGrid(grid, self_comm())))
    assert distributed == pytest.approx(serial, rel=1e-13)


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


@pytest.mark.mpi(min_size=2)
def test_cli_under_mpi(be2, capsys):
    from mlscale.cli import main

    status = main(["energy", str(be2 / "Be_snapshot0.dens.npy"), "--structure",
                   str(be2 / "recreate_data" / "Be.pw.scf.in"), "--pseudopotentials", str(be2),
                   "--ecutrho", "160"])
    assert status == 0
    out = capsys.readouterr().out
    if world().rank == 0:
        terms = json.loads(out)
        assert terms["ranks"] == world().size
        assert abs(terms["xc_energy_eV"] - (-3.29457444 * RYDBERG_EV)) < 4e-5  # Be_snapshot0.out
    else:
        assert out == ""
