"""`mlscale energy` on .npy, cube and openPMD densities against QE, its errors, and under MPI
(mpiexec -n 2 python -m pytest --with-mpi -m mpi tests/commands/test_energy.py)."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from mlscale.io import read_structure
from mlscale.parallel import world
from mlscale.units import BOHR_ANGSTROM, HARTREE_EV, RYDBERG_EV
from tests.energy._qe import AL_DIR, MEV, qe_printed


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
