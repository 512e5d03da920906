"""Structures from ASE-readable files; mlscale needs a periodic cell."""

import json

import numpy as np
import pytest
from ase import Atoms
from ase.build import bulk

from mlscale.errors import MlscaleError
from mlscale.io import read_structure, write_structure


def test_qe_output_and_input_match_mala_json(be2):
    info = json.loads((be2 / "Be_snapshot0.info.json").read_text())["atoms"]
    for path in (be2 / "Be_snapshot0.out", be2 / "recreate_data" / "Be.pw.scf.in"):
        atoms = read_structure(path)
        assert atoms.numbers.tolist() == info["numbers"] and atoms.pbc.all()
        np.testing.assert_allclose(atoms.positions, info["positions"], atol=1e-6)
        np.testing.assert_allclose(atoms.cell, info["cell"], atol=1e-6)


@pytest.mark.parametrize("name", ["POSCAR", "al.cif", "al.xyz", "al.vasp"])
def test_write_read_round_trip(tmp_path, name):
    atoms = bulk("Al", "fcc", a=4.05) * (1, 1, 2)
    atoms.positions[1] += [0.1, -0.05, 0.02]
    write_structure(tmp_path / name, atoms)
    back = read_structure(tmp_path / name)
    assert back.get_chemical_symbols() == ["Al", "Al"]
    assert abs(back.get_volume() - atoms.get_volume()) < 1e-5
    np.testing.assert_allclose(back.get_all_distances(mic=True), atoms.get_all_distances(mic=True),
                               atol=1e-5)
    assert [p.name for p in tmp_path.iterdir()] == [name]


def test_cell_without_pbc_becomes_periodic(tmp_path):
    atoms = Atoms("H2", positions=[[0, 0, 0], [0, 0, 0.74]], cell=[5, 5, 5], pbc=False)
    write_structure(tmp_path / "h2.xyz", atoms, format="extxyz")
    assert read_structure(tmp_path / "h2.xyz").pbc.all()


def test_errors(tmp_path):
    with pytest.raises(MlscaleError, match="file not found"):
        read_structure(tmp_path / "missing.xyz")
    (tmp_path / "mol.xyz").write_text("2\n\nH 0 0 0\nH 0 0 0.74\n")
    with pytest.raises(MlscaleError, match="no \\(3-D\\) cell"):
        read_structure(tmp_path / "mol.xyz")
    (tmp_path / "junk.cif").write_text("this is not a cif file\n")
    with pytest.raises(MlscaleError, match="cannot read a structure"):
        read_structure(tmp_path / "junk.cif")
    with pytest.raises(MlscaleError, match="cannot write .*x.unknownext"):
        write_structure(tmp_path / "x.unknownext", bulk("Al"))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["junk.cif", "mol.xyz"]
