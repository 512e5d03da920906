"""MALA-compatible ``.npy`` arrays on the grid, read and written block by block.

MALA stores one snapshot per file as a C-ordered ``[nx, ny, nz, n]`` array:
descriptors ``*.in.npy`` (3 Cartesian coordinate columns in Å, then the features),
LDOS ``*.out.npy`` in 1/(eV·Å³). Reading memory-maps the file and copies only the
requested block; writing lets every rank put its own block into one shared file.
"""

from __future__ import annotations

import mmap
import os
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np

from ..errors import MlscaleError
from ..grid import Block, DistributedGrid
from .atomic import check_free_space, commit, remove_quietly, temporary_path, write_error

N_COORDINATE_COLUMNS = 3


def check_finite(array: np.ndarray, what: str) -> np.ndarray:
    """Return ``array``; raise MlscaleError naming ``what`` if it holds NaN or inf."""
    bad = np.size(array) - int(np.count_nonzero(np.isfinite(array)))
    if bad:
        raise MlscaleError(f"{what} contains {bad} NaN or infinite value(s)")
    return array


@dataclass(frozen=True)
class NpyHeader:
    """A ``.npy`` header: shape, dtype, memory order, and the data's offset in bytes."""

    shape: tuple[int, ...]
    dtype: np.dtype
    fortran_order: bool
    offset: int

    @property
    def nbytes(self) -> int:
        """Bytes of data the header announces."""
        return int(np.prod(self.shape, dtype=np.int64)) * self.dtype.itemsize


def read_npy_header(handle: BinaryIO) -> NpyHeader:
    """The header of an open ``.npy`` file read from its start (formats 1.0 and 2.0).

    Reads no data and unpickles nothing (an object dtype is returned for the caller to
    refuse); leaves ``handle`` at the first data byte. ValueError for a non-.npy file.
    """
    version = np.lib.format.read_magic(handle)
    read = (np.lib.format.read_array_header_1_0 if version == (1, 0)
            else np.lib.format.read_array_header_2_0)
    shape, fortran_order, dtype = read(handle)
    return NpyHeader(tuple(int(n) for n in shape), dtype, bool(fortran_order), handle.tell())


def memory_map_npy(path: str | Path) -> tuple[np.ndarray, mmap.mmap]:
    """A read-only view of a C-ordered floating-point ``.npy`` file and the mmap behind it.

    The mmap is returned so callers can ``madvise`` it (read ahead, drop pages).
    MlscaleError for a missing, truncated or non-.npy file, Fortran order, or data that
    are not floating-point numbers.
    """
    path = Path(path)
    if not path.is_file():
        raise MlscaleError(f"file not found: {path}")
    try:
        with open(path, "rb") as handle:
            header = read_npy_header(handle)
            if header.dtype.hasobject or header.dtype.kind != "f":
                raise MlscaleError(f"{path} holds {header.dtype}, not floating-point numbers")
            if header.fortran_order:
                raise MlscaleError(f"{path} is in Fortran order; save it in C order")
            if header.offset + header.nbytes > path.stat().st_size:
                raise MlscaleError(f"{path} is truncated (expected "
                                   f"{header.offset + header.nbytes} bytes)")
            mapped = mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ)
    except (OSError, ValueError) as error:
        raise MlscaleError(f"cannot read {path} as .npy: {error}") from None
    count = int(np.prod(header.shape, dtype=np.int64))
    array = np.frombuffer(mapped, dtype=header.dtype, count=count, offset=header.offset)
    return array.reshape(header.shape), mapped


def _open_npy(path) -> np.ndarray:
    """Memory-map a numeric .npy file (no pickles) with clear errors."""
    path = Path(path)
    if not path.is_file():
        raise MlscaleError(f"file not found: {path}")
    try:
        array = np.load(path, mmap_mode="r", allow_pickle=False)
    except (ValueError, OSError, EOFError) as error:
        raise MlscaleError(f"{path} is not a readable .npy array ({error})") from None
    if not isinstance(array, np.ndarray):
        raise MlscaleError(f"{path} is an .npz archive, expected a single .npy array")
    if array.dtype.kind not in "fiu":
        raise MlscaleError(f"{path} holds {array.dtype} data, expected real numbers")
    return array


def _cut(array: np.ndarray, block: Block | None, path, ndim: tuple[int, ...],
         columns: slice = slice(None)) -> np.ndarray:
    """float64 copy of ``array[block, ..., columns]`` after shape checks."""
    if array.ndim not in ndim:
        expected = " or ".join(str(n) for n in ndim)
        raise MlscaleError(f"{path} has shape {array.shape}, expected a {expected}-D grid array")
    if block is None:
        block = Block((0, 0, 0), array.shape[:3])
    if any(b > n for b, n in zip(block.stop, array.shape[:3])):
        raise MlscaleError(
            f"{path} has grid shape {array.shape[:3]}, "
            f"too small for block {block.start}..{block.stop}"
        )
    index = block.slices + ((columns,) if array.ndim == 4 else ())
    out = np.array(array[index], dtype=np.float64)
    return check_finite(out, str(path))


def npy_shape(path) -> tuple[int, ...]:
    """Shape of a numeric .npy file, reading only its header (clear errors as the readers)."""
    return tuple(int(n) for n in _open_npy(path).shape)


def read_npy_block(path, block: Block | None = None) -> np.ndarray:
    """Block ``[bx, by, bz, ...]`` (whole array if None) of a 3-D or 4-D grid .npy, float64."""
    return _cut(_open_npy(path), block, path, (3, 4))


def read_descriptors_npy(path, n_features: int | None = None,
                         block: Block | None = None) -> np.ndarray:
    """Descriptors ``[bx, by, bz, n_features]`` from a MALA ``.in.npy`` file.

    MALA files carry 3 leading coordinate columns, which are dropped. With
    ``n_features`` given, a file of exactly ``n_features`` columns (no coordinates)
    is accepted too; any other column count is an error. With ``n_features`` None
    the file must have MALA's layout (coordinates + at least one feature).
    """
    array = _open_npy(path)
    if array.ndim != 4:
        raise MlscaleError(f"{path} has shape {array.shape}, expected [nx, ny, nz, features]")
    columns = array.shape[3]
    if n_features is None:
        if columns <= N_COORDINATE_COLUMNS:
            raise MlscaleError(f"{path} has {columns} columns, expected 3 coordinates + features")
        first = N_COORDINATE_COLUMNS
    elif columns == n_features + N_COORDINATE_COLUMNS:
        first = N_COORDINATE_COLUMNS
    elif columns == n_features:
        first = 0
    else:
        raise MlscaleError(
            f"{path} has {columns} columns, expected {n_features} features "
            f"(or {n_features + N_COORDINATE_COLUMNS} with MALA's coordinate columns)"
        )
    return _cut(array, block, path, (4,), slice(first, None))


def read_ldos_npy(path, n_energies: int | None = None, block: Block | None = None) -> np.ndarray:
    """LDOS ``[bx, by, bz, n_energies]`` in 1/(eV·Å³) from a MALA ``.out.npy`` file."""
    array = _open_npy(path)
    if array.ndim != 4:
        raise MlscaleError(f"{path} has shape {array.shape}, expected [nx, ny, nz, energies]")
    if n_energies is not None and array.shape[3] != n_energies:
        raise MlscaleError(
            f"{path} has {array.shape[3]} LDOS energies, expected {n_energies}"
        )
    return _cut(array, block, path, (4,))


def _check_local(local: np.ndarray, block: Block, global_shape: tuple[int, ...]):
    if len(global_shape) < 3 or min(global_shape) < 1:
        raise MlscaleError(f"global shape must be [nx, ny, nz, ...], got {global_shape}")
    if any(b > n for b, n in zip(block.stop, global_shape[:3])):
        raise MlscaleError(f"block {block.start}..{block.stop} outside grid {global_shape[:3]}")
    expected = tuple(block.shape) + tuple(global_shape[3:])
    if local.shape != expected:
        raise MlscaleError(f"local array has shape {local.shape}, expected {expected}")
    if local.dtype.kind not in "fiu":
        raise MlscaleError(f"cannot write {local.dtype} data, expected real numbers")


def _write_block(path, local: np.ndarray, block: Block, global_shape: tuple[int, ...]):
    """Write ``local`` at its block's place in an existing .npy file (pwrite per z-row)."""
    with open(path, "r+b") as f:
        header = read_npy_header(f)
        shape, dtype, offset = header.shape, header.dtype, header.offset
        if tuple(shape) != tuple(global_shape):
            raise MlscaleError(f"{path} has shape {shape}, expected {global_shape}")
        data = np.ascontiguousarray(local, dtype=dtype)
        _, ny, nz = global_shape[:3]
        row = int(np.prod(global_shape[3:], dtype=np.int64))  # values per grid point
        x0, y0, z0 = block.start
        fd = f.fileno()
        for i in range(data.shape[0]):
            for j in range(data.shape[1]):
                start = (((x0 + i) * ny + (y0 + j)) * nz + z0) * row
                chunk = memoryview(data[i, j]).cast("B")
                if os.pwrite(fd, chunk, offset + start * dtype.itemsize) != len(chunk):
                    raise MlscaleError(f"short write to {path} (disk full?)")


def write_npy_distributed(path, local_array: np.ndarray, dgrid: DistributedGrid,
                          global_shape: tuple[int, ...] | None = None) -> None:
    """Write one ``.npy`` file ``[nx, ny, nz, ...]``; each rank stores only its block.

    local_array: ``[bx, by, bz, ...]`` of the rank's block of ``dgrid`` (same dtype on
    every rank); global_shape: default the grid's shape followed by the local array's
    trailing axes (given, it is checked against the local array). Collective: rank 0
    creates the file under a temporary name, every rank writes its own rows, rank 0
    renames it to ``path``. On any failure no file is left behind.
    """
    local = np.asarray(local_array)
    block, comm = dgrid.block, dgrid.comm
    if global_shape is None:
        global_shape = dgrid.shape + local.shape[3:]
    global_shape = tuple(int(n) for n in global_shape)
    with comm.collective():
        if global_shape[:3] != dgrid.shape:
            raise MlscaleError(f"global shape {global_shape} is not on the grid {dgrid.shape}")
        _check_local(local, block, global_shape)
    dtype = comm.broadcast(local.dtype.str)
    tmp = None
    with comm.collective():
        if local.dtype.str != dtype:
            raise MlscaleError(
                f"local arrays differ in dtype across ranks ({local.dtype.str} vs {dtype})")
        if comm.rank == 0:
            tmp = str(temporary_path(path))
    tmp = comm.broadcast(tmp)
    try:
        with comm.collective():
            if comm.rank == 0:
                _create(tmp, path, np.dtype(dtype), global_shape)
        with comm.collective():
            try:
                _write_block(tmp, local, block, global_shape)
            except OSError as error:
                raise write_error(path, error) from None
        with comm.collective():
            if comm.rank == 0:
                commit(tmp, path)
    except BaseException:
        if comm.rank == 0:
            remove_quietly(tmp)
        raise


def _create(tmp, path, dtype: np.dtype, global_shape: tuple[int, ...]) -> None:
    """The (sparse) .npy file ``tmp`` for ``path``, after checking the disk has room."""
    check_free_space(path, int(np.prod(global_shape, dtype=np.int64)) * dtype.itemsize)
    try:
        np.lib.format.open_memmap(tmp, mode="w+", dtype=dtype, shape=global_shape).flush()
    except OSError as error:
        raise write_error(path, error) from None
