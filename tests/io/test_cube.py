"""QE pp.x cube files: MALA's Be2 LDOS cubes against MALA's LDOS array."""

import json
import shutil

import numpy as np
import pytest
from ase import Atoms
from ase.io import write as ase_write

from mlscale.errors import MlscaleError
from mlscale.grid import Block
from mlscale.io import ldos_cube_paths, read_cube, read_cube_block, read_ldos_cubes


def _cube(path, shape, values, step_bohr=0.5, extra=""):
    """A minimal cube file in QE's layout (z fastest, 6 values per line)."""
    lines = ["comment", "  Energy =  -5.0000 eV, broadening =   5.0000 eV",
             "    1    0.000000    0.000000    0.000000"]
    for axis, n in enumerate(shape):
        step = [0.0, 0.0, 0.0]
        step[axis] = step_bohr
        lines.append(f"{n:5d}" + "".join(f"{x:12.6f}" for x in step))
    lines.append("    1    1.000000    0.100000    0.200000    0.300000")
    tokens = list(values)
    lines += ["  ".join(tokens[i:i + 6]) for i in range(0, len(tokens), 6)]
    path.write_text("\n".join(lines) + "\n" + extra)
    return path


def test_be2_ldos_cubes_equal_mala_ldos(be2):
    paths = ldos_cube_paths(be2 / "cubes", "Be")
    assert [p.name for p in paths] == [f"tmp.pp{i:02d}Be_ldos.cube" for i in range(1, 12)]
    ldos = read_ldos_cubes(paths)
    reference = np.load(be2 / "Be_snapshot0.out.npy")  # MALA's conversion of these cubes
    assert ldos.shape == reference.shape
    np.testing.assert_allclose(ldos, reference, rtol=1e-6, atol=0)  # 5 printed digits, float32
    other = np.load(be2 / "Be_snapshot1.out.npy")
    assert np.max(np.abs(ldos - other) / np.abs(other)) > 0.1  # they are snapshot 0's
    block = Block((4, 9, 0), (12, 18, 13))
    np.testing.assert_array_equal(read_ldos_cubes(paths, block), ldos[block.slices])


def test_be2_cube_header(be2):
    info = json.loads((be2 / "Be_snapshot0.info.json").read_text())
    paths = ldos_cube_paths(be2 / "cubes", "Be")
    data, atoms, meta = read_cube(paths[0])
    assert data.shape == (18, 18, 27) == meta["shape"]
    np.testing.assert_allclose(atoms.positions, info["atoms"]["positions"], atol=2e-6)
    np.testing.assert_allclose(atoms.cell, info["atoms"]["cell"], atol=2e-5)
    np.testing.assert_allclose(meta["voxel_cv"], info["voxel"]["array"], atol=2e-6)
    assert atoms.get_chemical_symbols() == ["Be", "Be"]
    # energies of Be.pp.ldos.in: emin = -5 eV, delta_e = 2.5 eV, degauss_ldos = 5 eV
    energies = [read_cube_block(p, Block((0, 0, 0), (1, 1, 1)))[1]["energy_ev"] for p in paths]
    np.testing.assert_allclose(energies, -5.0 + 2.5 * np.arange(11))
    assert meta["broadening_ev"] == 5.0


def test_cube_written_by_ase(tmp_path):
    rng = np.random.default_rng(7)
    data = rng.random((4, 5, 6))
    atoms = Atoms("HO", positions=[[0.1, 0.2, 0.3], [1.0, 1.1, 1.2]],
                  cell=[[3.0, 0, 0], [0.5, 2.5, 0], [0, 0, 4.0]], pbc=True)
    ase_write(tmp_path / "x.cube", atoms, data=data, format="cube", parallel=False)
    read, read_atoms, meta = read_cube(tmp_path / "x.cube")
    np.testing.assert_allclose(read, data, rtol=1e-5)
    np.testing.assert_allclose(read_atoms.positions, atoms.positions, atol=1e-5)
    np.testing.assert_allclose(read_atoms.cell, atoms.cell, atol=1e-5)
    assert read_atoms.numbers.tolist() == [1, 8]


def test_fortran_exponent_without_e(tmp_path):
    values = ["0.10000E+00"] * 7 + ["0.12345-100"]
    data, _, _ = read_cube(_cube(tmp_path / "a.cube", (2, 2, 2), values))
    assert data[1, 1, 1] == pytest.approx(1.2345e-101)
    assert data[0, 0, 0] == 0.1


def test_units_of_ldos(tmp_path):
    path = _cube(tmp_path / "tmp.pp01X_ldos.cube", (1, 2, 3), ["1.0"] * 6)
    ldos = read_ldos_cubes([path])
    # 1 / (Ry Bohr^3) in 1 / (eV Å^3): Ry = 13.6057 eV, Bohr = 0.529177 Å
    np.testing.assert_allclose(ldos, 1.0 / (13.605693 * 0.52917721**3), rtol=1e-6)
    assert ldos.shape == (1, 2, 3, 1)


def test_corrupt_and_mismatched_cubes(tmp_path, be2):
    with pytest.raises(MlscaleError, match="file not found"):
        read_cube(tmp_path / "none.cube")
    truncated = tmp_path / "trunc.cube"
    lines = (be2 / "cubes" / "tmp.pp01Be_ldos.cube").read_text().splitlines()
    truncated.write_text("\n".join(lines[:-40]) + "\n")
    with pytest.raises(MlscaleError, match="truncated"):
        read_cube(truncated)
    with pytest.raises(MlscaleError, match="truncated"):
        read_cube_block(truncated, Block((17, 0, 0), (18, 18, 27)))
    np.testing.assert_array_equal(read_cube_block(truncated, Block((0, 0, 0), (2, 18, 27)))[0],
                                  read_cube(be2 / "cubes" / "tmp.pp01Be_ldos.cube")[0][:2])
    corrupt = _cube(tmp_path / "c.cube", (2, 2, 2), ["0.1"] * 3 + ["abc"] + ["0.1"] * 4)
    with pytest.raises(MlscaleError, match="corrupt"):
        read_cube(corrupt)
    extra = _cube(tmp_path / "e.cube", (2, 2, 2), ["0.1"] * 8, extra="0.5\n")
    with pytest.raises(MlscaleError, match="header says 8"):
        read_cube(extra)
    (tmp_path / "h.cube").write_text("title\ncomment\n  x y z\n")
    with pytest.raises(MlscaleError, match="header"):
        read_cube(tmp_path / "h.cube")
    nan = _cube(tmp_path / "n.cube", (2, 2, 2), ["0.1"] * 7 + ["nan"])
    with pytest.raises(MlscaleError, match="NaN"):
        read_cube(nan)
    a = _cube(tmp_path / "a.cube", (2, 2, 2), ["0.1"] * 8)
    b = _cube(tmp_path / "b.cube", (2, 2, 3), ["0.1"] * 12)
    with pytest.raises(MlscaleError, match="cube grids differ"):
        read_ldos_cubes([a, b])
    c = _cube(tmp_path / "c2.cube", (2, 2, 2), ["0.1"] * 8, step_bohr=0.6)
    with pytest.raises(MlscaleError, match="cube grids differ"):
        read_ldos_cubes([a, c])
    shifted = tmp_path / "o.cube"
    shifted.write_text(a.read_text().replace("    1    0.000000    0.000000    0.000000",
                                             "    1    0.500000    0.000000    0.000000"))
    with pytest.raises(MlscaleError, match="origin"):
        read_ldos_cubes([shifted])


def test_cube_paths_errors(tmp_path, be2):
    with pytest.raises(MlscaleError, match="no LDOS cubes"):
        ldos_cube_paths(tmp_path, "Be")
    for i in (1, 2, 4):
        shutil.copy(be2 / "cubes" / "tmp.pp01Be_ldos.cube", tmp_path / f"tmp.pp{i:02d}Be_ldos.cube")
    with pytest.raises(MlscaleError, match=r"miss energy index\(es\) \[3\]"):
        ldos_cube_paths(tmp_path, "Be")
    with pytest.raises(MlscaleError, match="directory not found"):
        ldos_cube_paths(tmp_path / "nope", "Be")
