"""Lazy training snapshots (mlscale.data): memory-mapped reads, scaling statistics in one
distributed pass, clear errors for bad files, openPMD snapshots cached as .npy.

References: the same arrays read eagerly with ``np.load`` and numpy's own mean/std.
"""

from __future__ import annotations

import numpy as np
import pytest

from mlscale.data import (
    Snapshot,
    SnapshotFiles,
    SnapshotSet,
    cache_openpmd,
    open_snapshots,
    scaling_statistics,
)
from mlscale.errors import MlscaleError
from mlscale.io.numpy_io import read_npy_header
from mlscale.parallel import self_comm
from tests.snapshot_data import GRID, N_ENERGIES, N_FEATURES, full_arrays, write_snapshots


def test_statistics_match_numpy(tmp_path):
    specs = write_snapshots(tmp_path, 3)
    no_coordinates = write_snapshots(tmp_path, 1, seed=5, coordinates=False)
    data = open_snapshots(specs + no_coordinates, N_FEATURES, N_ENERGIES, self_comm())
    stats = scaling_statistics(data, self_comm(), chunk_points=7)
    x, y = full_arrays(specs + no_coordinates)
    np.testing.assert_allclose(stats.input_mean, x.mean(axis=0), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(stats.input_std, x.std(axis=0), rtol=1e-10)
    np.testing.assert_allclose(stats.output_mean, y.mean(axis=0), rtol=1e-12)
    np.testing.assert_allclose(stats.output_std, y.std(axis=0), rtol=1e-10)


@pytest.mark.parametrize("streaming", [False, True])
def test_read_returns_requested_points_in_order(tmp_path, streaming):
    specs = write_snapshots(tmp_path, 3)
    data = SnapshotSet([SnapshotFiles.parse(s) for s in specs], N_FEATURES, N_ENERGIES,
                       streaming)
    x, y = full_arrays(specs)
    points = np.array([179, 0, 61, 60, 59, 120, 5])
    got_x, got_y = data.read(points)
    np.testing.assert_array_equal(got_x, x[points].astype(np.float32))
    np.testing.assert_array_equal(got_y, y[points].astype(np.float32))
    data.release()
    np.testing.assert_array_equal(data.read(points)[0], got_x)


def test_snapshot_errors(tmp_path):
    comm = self_comm()
    (spec,) = write_snapshots(tmp_path, 1)
    files = SnapshotFiles.parse(spec)

    def check(x_path, y_path, match):
        with pytest.raises(MlscaleError, match=match):
            data = open_snapshots([f"{x_path}:{y_path}"], N_FEATURES, N_ENERGIES, comm)
            scaling_statistics(data, comm)

    check(tmp_path / "absent.in.npy", files.ldos, "file not found")
    with pytest.raises(MlscaleError, match="DESCRIPTORS:LDOS"):
        SnapshotFiles.parse("only_one_file.npy")
    small = tmp_path / "small.out.npy"
    np.save(small, np.zeros((4, 3, 4, N_ENERGIES), np.float32))
    check(files.descriptors, small, "grids differ")
    energies = tmp_path / "energies.out.npy"
    np.save(energies, np.zeros((*GRID, N_ENERGIES + 1), np.float32))
    check(files.descriptors, energies, f"LDOS must be .*{N_ENERGIES}")
    features = tmp_path / "features.in.npy"
    np.save(features, np.zeros((*GRID, N_FEATURES + 1), np.float32))
    check(features, files.ldos, f"descriptors must be .*{N_FEATURES}")
    nan = tmp_path / "nan.out.npy"
    y = np.load(files.ldos)
    y[2, 1, 3, 0] = np.nan
    np.save(nan, y)
    check(files.descriptors, nan, "NaN")
    objects = tmp_path / "objects.out.npy"
    np.save(objects, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    check(files.descriptors, objects, "not floating-point")
    truncated = tmp_path / "truncated.out.npy"
    truncated.write_bytes(files.ldos.read_bytes()[:-40])
    check(files.descriptors, truncated, "truncated")
    other = tmp_path / "ldos.txt"
    other.write_text("1 2 3")
    check(files.descriptors, other, "unsupported snapshot file type")


def test_openpmd_snapshots_are_cached_as_npy(be2, tmp_path):
    spec = f"{be2}/Be_snapshot0.in.npy:{be2}/Be_snapshot0.out.h5"
    (cached,) = cache_openpmd([spec], tmp_path / "cache", self_comm())
    assert cached.descriptors == be2 / "Be_snapshot0.in.npy"
    np.testing.assert_array_equal(np.load(cached.ldos), np.load(be2 / "Be_snapshot0.out.npy"))
    modified = cached.ldos.stat().st_mtime_ns
    assert cache_openpmd([spec], tmp_path / "cache", self_comm()) == [cached]
    assert cached.ldos.stat().st_mtime_ns == modified  # reused, not rewritten
    with pytest.raises(MlscaleError, match="file not found"):
        cache_openpmd([f"{be2}/Be_snapshot0.in.npy:{tmp_path}/absent.h5"], tmp_path, self_comm())


@pytest.mark.parametrize("version", [(1, 0), (2, 0)])
@pytest.mark.parametrize("dtype", [np.float32, np.float64, ">f8"])
def test_npy_header_agrees_with_numpy(tmp_path, version, dtype):
    """Shape, dtype and data offset as np.load sees them; the offset is where the data
    start: the file size minus the data's bytes."""
    array = np.arange(2 * 3 * 4 * 5, dtype=dtype).reshape(2, 3, 4, 5)
    path = tmp_path / "a.npy"
    with open(path, "wb") as handle:
        np.lib.format.write_array(handle, array, version=version)
    with open(path, "rb") as handle:
        header = read_npy_header(handle)
    loaded = np.load(path, mmap_mode="r")
    assert header.shape == loaded.shape and header.dtype == loaded.dtype
    assert not header.fortran_order
    assert header.offset == path.stat().st_size - array.nbytes == loaded.offset
    assert header.nbytes == array.nbytes


def test_snapshot_reads_any_float_npy_like_np_load(tmp_path):
    """A version 2.0 header, float64 big-endian descriptors, float32 LDOS, [points, F]."""
    rng = np.random.default_rng(3)
    x = rng.normal(size=(*GRID, N_FEATURES)).astype(">f8")
    y = rng.uniform(size=(*GRID, N_ENERGIES)).astype(np.float32)
    paths = tmp_path / "x.npy", tmp_path / "y.npy"
    for path, array in zip(paths, (x.reshape(-1, N_FEATURES), y.reshape(-1, N_ENERGIES)),
                           strict=True):
        with open(path, "wb") as handle:
            np.lib.format.write_array(handle, array, version=(2, 0))
    snapshot = Snapshot(SnapshotFiles(*paths), N_FEATURES, N_ENERGIES)
    np.testing.assert_array_equal(snapshot.descriptors_pf, np.load(paths[0]))
    np.testing.assert_array_equal(snapshot.ldos_pe, np.load(paths[1]))
    assert snapshot.npoints == np.prod(GRID)


def test_fortran_order_and_integer_snapshots_are_refused(tmp_path):
    (spec,) = write_snapshots(tmp_path, 1)
    files = SnapshotFiles.parse(spec)
    fortran = tmp_path / "fortran.out.npy"
    np.save(fortran, np.asfortranarray(np.load(files.ldos)))
    with pytest.raises(MlscaleError, match="Fortran order"):
        open_snapshots([f"{files.descriptors}:{fortran}"], N_FEATURES, N_ENERGIES, self_comm())
    integers = tmp_path / "integers.out.npy"
    np.save(integers, np.zeros((*GRID, N_ENERGIES), np.int32))
    with pytest.raises(MlscaleError, match="int32, not floating-point"):
        open_snapshots([f"{files.descriptors}:{integers}"], N_FEATURES, N_ENERGIES, self_comm())
    not_npy = tmp_path / "garbage.out.npy"
    not_npy.write_bytes(b"not an npy file at all")
    with pytest.raises(MlscaleError, match="cannot read .* as .npy"):
        open_snapshots([f"{files.descriptors}:{not_npy}"], N_FEATURES, N_ENERGIES, self_comm())
