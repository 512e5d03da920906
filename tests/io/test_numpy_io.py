"""MALA-compatible .npy reading by block and distributed writing."""

import pickle
from pathlib import Path

import numpy as np
import pytest

from mlscale.errors import MlscaleError
from mlscale.grid import Block, DistributedGrid, Grid
from mlscale.io import (
    check_finite,
    npy_shape,
    read_descriptors_npy,
    read_ldos_npy,
    read_npy_block,
    write_npy_distributed,
)
from mlscale.parallel import world


@pytest.fixture
def shared_tmp(tmp_path):
    """A directory all ranks see (rank 0's tmp_path)."""
    return Path(world().broadcast(str(tmp_path)))


def test_read_block_matches_numpy_slicing(tmp_path):
    data = np.random.default_rng(1).random((5, 6, 7, 2)).astype(np.float32)
    np.save(tmp_path / "a.npy", data)
    block = Block((1, 2, 3), (4, 6, 5))
    out = read_npy_block(tmp_path / "a.npy", block)
    assert out.dtype == np.float64 and out.shape == (3, 4, 2, 2)
    np.testing.assert_array_equal(out, data[1:4, 2:6, 3:5])
    np.testing.assert_array_equal(read_npy_block(tmp_path / "a.npy"), data)
    assert npy_shape(tmp_path / "a.npy") == (5, 6, 7, 2)


def test_mala_descriptors_and_ldos(be2):
    raw = np.load(be2 / "Be_snapshot0.in.npy")
    block = Block((2, 0, 5), (9, 18, 11))
    expected = raw[2:9, :, 5:11, 3:]
    np.testing.assert_array_equal(read_descriptors_npy(be2 / "Be_snapshot0.in.npy", 91, block), expected)
    np.testing.assert_array_equal(read_descriptors_npy(be2 / "Be_snapshot0.in.npy", None, block), expected)
    with pytest.raises(MlscaleError, match="94 columns, expected 90 features"):
        read_descriptors_npy(be2 / "Be_snapshot0.in.npy", 90)
    ldos = read_ldos_npy(be2 / "Be_snapshot0.out.npy", 11, block)
    np.testing.assert_array_equal(ldos, np.load(be2 / "Be_snapshot0.out.npy")[2:9, :, 5:11])
    with pytest.raises(MlscaleError, match="has 11 LDOS energies, expected 12"):
        read_ldos_npy(be2 / "Be_snapshot0.out.npy", 12)


def test_descriptors_without_coordinates(tmp_path):
    data = np.random.default_rng(2).random((2, 3, 4, 5))
    np.save(tmp_path / "d.npy", data)
    np.testing.assert_array_equal(read_descriptors_npy(tmp_path / "d.npy", 5), data)
    np.testing.assert_array_equal(read_descriptors_npy(tmp_path / "d.npy", 2), data[..., 3:])
    with pytest.raises(MlscaleError, match="expected 4 features"):
        read_descriptors_npy(tmp_path / "d.npy", 4)


def test_bad_files(tmp_path):
    with pytest.raises(MlscaleError, match="file not found"):
        read_npy_block(tmp_path / "missing.npy")
    with pytest.raises(MlscaleError, match="file not found"):
        npy_shape(tmp_path / "missing.npy")
    (tmp_path / "garbage.npy").write_bytes(b"not an array at all" * 10)
    with pytest.raises(MlscaleError, match="not a readable .npy"):
        read_npy_block(tmp_path / "garbage.npy")
    (tmp_path / "pickle.npy").write_bytes(pickle.dumps({"a": 1}))
    with pytest.raises(MlscaleError, match="not a readable .npy"):
        read_npy_block(tmp_path / "pickle.npy")
    np.save(tmp_path / "object.npy", np.array([[[{"a": 1}]]], dtype=object), allow_pickle=True)
    with pytest.raises(MlscaleError, match="not a readable .npy"):
        read_npy_block(tmp_path / "object.npy")
    np.save(tmp_path / "text.npy", np.full((2, 2, 2), "x"))
    with pytest.raises(MlscaleError, match="expected real numbers"):
        read_npy_block(tmp_path / "text.npy")
    np.savez(tmp_path / "arch.npz", a=np.zeros((2, 2, 2)))
    with pytest.raises(MlscaleError, match="npz"):
        read_npy_block(tmp_path / "arch.npz")
    np.save(tmp_path / "flat.npy", np.zeros((4, 4)))
    with pytest.raises(MlscaleError, match=r"expected a 3 or 4-D grid"):
        read_npy_block(tmp_path / "flat.npy")
    np.save(tmp_path / "small.npy", np.zeros((2, 2, 2)))
    with pytest.raises(MlscaleError, match="too small for block"):
        read_npy_block(tmp_path / "small.npy", Block((0, 0, 0), (3, 2, 2)))
    np.save(tmp_path / "cut.npy", np.zeros((10, 10, 10)))
    raw = (tmp_path / "cut.npy").read_bytes()
    (tmp_path / "cut.npy").write_bytes(raw[: len(raw) // 2])
    with pytest.raises(MlscaleError, match="not a readable .npy"):
        read_npy_block(tmp_path / "cut.npy")


def test_nan_is_rejected(tmp_path):
    data = np.ones((2, 2, 2, 3))
    data[1, 0, 1, 2] = np.nan
    np.save(tmp_path / "nan.npy", data)
    with pytest.raises(MlscaleError, match="1 NaN or infinite"):
        read_ldos_npy(tmp_path / "nan.npy")
    with pytest.raises(MlscaleError, match="LDOS contains 2 NaN"):
        check_finite(np.array([np.inf, 1.0, -np.inf]), "LDOS")
    assert check_finite(np.ones(2), "x") is not None


@pytest.mark.parametrize("shape, dtype", [((5, 7, 3, 4), np.float64), ((6, 5, 7), np.float32)])
def test_distributed_write_any_rank_count(shared_tmp, shape, dtype):
    comm = world()
    full = np.random.default_rng(3).random(shape).astype(dtype)
    dgrid = DistributedGrid(Grid(np.eye(3), shape[:3]), comm)
    block = dgrid.block
    path = shared_tmp / "global.npy"
    write_npy_distributed(path, full[block.slices], dgrid, shape)
    comm.barrier()
    result = np.load(path, allow_pickle=False)
    assert result.dtype == dtype
    np.testing.assert_array_equal(result, full)
    assert sorted(p.name for p in shared_tmp.iterdir()) == ["global.npy"]
    comm.barrier()


def test_distributed_write_rejects_wrong_shape(shared_tmp):
    comm = world()
    shape = (4, 4, 4, 2)
    dgrid = DistributedGrid(Grid(np.eye(3), shape[:3]), comm)
    block = dgrid.block
    local = np.zeros(block.shape + (3,))
    with pytest.raises(MlscaleError, match="expected"):
        write_npy_distributed(shared_tmp / "x.npy", local, dgrid, shape)
    assert list(shared_tmp.iterdir()) == []


@pytest.mark.mpi(min_size=2)
def test_distributed_write_failure_on_one_rank_fails_all(shared_tmp):
    comm = world()
    shape = (4, 6, 5)
    dgrid = DistributedGrid(Grid(np.eye(3), shape[:3]), comm)
    block = dgrid.block
    local = np.zeros(block.shape, dtype=np.float32 if comm.rank == 1 else np.float64)
    with pytest.raises(MlscaleError, match="differ in dtype"):
        write_npy_distributed(shared_tmp / "x.npy", local, dgrid, shape)
    comm.barrier()
    assert list(shared_tmp.iterdir()) == []
    comm.barrier()
