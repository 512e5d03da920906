"""openPMD in MALA's layout: MALA's own files, and distributed round trips on 1..N ranks."""

from pathlib import Path

import h5py
import numpy as np
import pytest

from mlscale.errors import MlscaleError
from mlscale.grid import Block, DistributedGrid, Grid
from mlscale.io import DENSITY_UNITS, LDOS_UNITS, openpmd_info, read_openpmd, write_openpmd
from mlscale.parallel import world

CELL = np.array([[4.0, 0.0, 0.0], [-2.0, 3.4, 0.0], [0.0, 0.0, 5.0]])


@pytest.fixture
def shared_tmp(tmp_path):
    """A directory all ranks see (rank 0's tmp_path)."""
    return Path(world().broadcast(str(tmp_path)))


@pytest.mark.parametrize("snapshot", [0, 1])
def test_mala_ldos_h5_equals_mala_npy(be2, snapshot):
    expected = np.load(be2 / f"Be_snapshot{snapshot}.out.npy")
    ldos = read_openpmd(be2 / f"Be_snapshot{snapshot}.out.h5", "LDOS")
    assert ldos.shape == (18, 18, 27, 11) and ldos.dtype == np.float64
    np.testing.assert_array_equal(ldos, expected)
    block = Block((3, 0, 10), (11, 7, 27))
    np.testing.assert_array_equal(
        read_openpmd(be2 / f"Be_snapshot{snapshot}.out.h5", "LDOS", block), expected[block.slices])


def test_mala_density_h5_equals_mala_npy(be2):
    expected = np.load(be2 / "Be_snapshot0.dens.npy")[..., 0]
    np.testing.assert_array_equal(read_openpmd(be2 / "Be_snapshot.dens.h5", "Density"), expected)
    info = openpmd_info(be2 / "Be_snapshot.dens.h5", "Density")
    assert info["shape"] == (18, 18, 27) and info["n_components"] == 1
    assert info["unit_si"] == pytest.approx(DENSITY_UNITS["unit_si"])
    # MALA writes ase.units' eV (CODATA 2014), mlscale CODATA 2018's: 8e-9 apart
    assert openpmd_info(be2 / "Be_snapshot0.out.h5", "LDOS")["unit_si"] == pytest.approx(
        LDOS_UNITS["unit_si"], rel=2e-8)


@pytest.mark.parametrize("n, dtype", [(None, np.float64), (4, np.float32)])
def test_distributed_round_trip(shared_tmp, n, dtype):
    comm = world()
    grid = Grid(CELL, (7, 5, 6))
    shape = grid.shape + ((n,) if n else ())
    full = np.random.default_rng(5).random(shape).astype(dtype)
    dgrid = DistributedGrid(grid, comm)
    block = dgrid.block
    path = shared_tmp / "out.h5"
    write_openpmd(path, "LDOS", full[block.slices], dgrid, **LDOS_UNITS,
                  attributes={"energy_start_ev": -5.0, "note": "test"})
    comm.barrier()
    # independent reader: h5py sees MALA's layout
    with h5py.File(path, "r") as f:
        assert f.attrs["is_mala_data"] == 1
        mesh = f["data/0/meshes/LDOS"]
        if n is None:  # a scalar record: the mesh is the dataset
            assert isinstance(mesh, h5py.Dataset)
            stored, component = mesh[()], mesh
        else:
            assert sorted(mesh) == [str(c) for c in range(n)]
            stored, component = np.stack([mesh[str(c)][()] for c in range(n)], axis=-1), mesh["0"]
        assert stored.dtype == dtype
        np.testing.assert_array_equal(stored, full)
        np.testing.assert_allclose(mesh.attrs["unitDimension"], [-5, -1, 2, 0, 0, 0, 0])
        np.testing.assert_allclose(component.attrs["unitSI"], 6.241509e48, rtol=1e-6)
        # the sheared box of the cell's volume: |a|, b's height over a, c's over (a, b)
        np.testing.assert_allclose(mesh.attrs["gridSpacing"], [4.0 / 7, 3.4 / 5, 5.0 / 6],
                                   rtol=1e-12)
        assert mesh.attrs["note"] in (b"test", "test") and mesh.attrs["energy_start_ev"] == -5.0
    # our reader, by block
    np.testing.assert_array_equal(read_openpmd(path, "LDOS", block), full[block.slices])
    np.testing.assert_array_equal(read_openpmd(path, "LDOS"), full)
    assert sorted(p.name for p in shared_tmp.iterdir()) == ["out.h5"]
    comm.barrier()


def test_reads_one_component_vector_layout(tmp_path):
    """Files of earlier versions (and MALA's) store a density as the component ``0``."""
    import openpmd_api as opmd

    values = np.random.default_rng(2).random((3, 4, 5))
    series = opmd.Series(str(tmp_path / "old.h5"), opmd.Access.create)
    component = series.iterations[0].meshes["Density"]["0"]
    component.reset_dataset(opmd.Dataset(values.dtype, list(values.shape)))
    component.store_chunk(values, [0, 0, 0], list(values.shape))
    series.close()
    np.testing.assert_array_equal(read_openpmd(tmp_path / "old.h5", "Density"), values)
    assert openpmd_info(tmp_path / "old.h5", "Density")["n_components"] == 1


def test_overwrite_and_iteration(shared_tmp):
    comm = world()
    grid = Grid(CELL, (4, 3, 5))
    dgrid = DistributedGrid(grid, comm)
    block = dgrid.block
    path = shared_tmp / "dens.h5"
    for value, iteration in ((1.0, 0), (2.0, 7)):
        write_openpmd(path, "Density", np.full(block.shape, value), dgrid,
                      **DENSITY_UNITS, iteration=iteration)
    np.testing.assert_array_equal(read_openpmd(path, "Density"), np.full(grid.shape, 2.0))
    np.testing.assert_array_equal(read_openpmd(path, "Density", iteration=7), np.full(grid.shape, 2.0))
    with pytest.raises(MlscaleError, match="no iteration 0"):
        read_openpmd(path, "Density", iteration=0)
    comm.barrier()


def test_read_errors(be2, tmp_path):
    with pytest.raises(MlscaleError, match="file not found"):
        read_openpmd(tmp_path / "missing.h5", "LDOS")
    with pytest.raises(MlscaleError, match=r"no mesh 'Density' \(has \['LDOS'\]\)"):
        read_openpmd(be2 / "Be_snapshot0.out.h5", "Density")
    with pytest.raises(MlscaleError, match="too small for block"):
        read_openpmd(be2 / "Be_snapshot0.out.h5", "LDOS", Block((0, 0, 0), (19, 18, 27)))
    (tmp_path / "junk.h5").write_bytes(b"\x00junk" * 100)
    with pytest.raises(MlscaleError, match="cannot read openPMD file"):
        read_openpmd(tmp_path / "junk.h5", "LDOS")


def test_write_errors(shared_tmp):
    comm = world()
    grid = Grid(CELL, (4, 4, 4))
    dgrid = DistributedGrid(grid, comm)
    block = dgrid.block
    local = np.zeros(block.shape)
    with pytest.raises(MlscaleError, match="must end in .h5"):
        write_openpmd(shared_tmp / "x.bp", "LDOS", local, dgrid)
    with pytest.raises(MlscaleError, match="has grid shape"):
        write_openpmd(shared_tmp / "x.h5", "LDOS", np.zeros((9, 9, 9)), dgrid)
    with pytest.raises(MlscaleError, match="unknown unit dimension"):
        write_openpmd(shared_tmp / "x.h5", "LDOS", local, dgrid, unit_dimension={"Q": 1})
    comm.barrier()
    assert list(shared_tmp.iterdir()) == []
    comm.barrier()


@pytest.mark.mpi(min_size=2)
def test_one_bad_rank_fails_all_and_leaves_no_file(shared_tmp):
    comm = world()
    grid = Grid(CELL, (6, 4, 5))
    dgrid = DistributedGrid(grid, comm)
    block = dgrid.block
    local = np.zeros(block.shape + (2,))
    if comm.rank == 1:
        local = np.zeros(block.shape + (3,))
    with pytest.raises(MlscaleError, match="ranks disagree on components"):
        write_openpmd(shared_tmp / "x.h5", "LDOS", local, dgrid)
    comm.barrier()
    assert list(shared_tmp.iterdir()) == []
    comm.barrier()
