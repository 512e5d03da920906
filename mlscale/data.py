"""Training snapshots, read lazily: pairs of (descriptor file, LDOS file) on disk.

A snapshot is a descriptor array ``[nx, ny, nz, F]`` (or ``[points, F]``; MALA's
``.in.npy`` with 3 leading coordinate columns, ``F + 3``, is accepted and the
coordinates dropped) and an LDOS array ``[nx, ny, nz, E]`` in 1/(eV·Å³). ``.npy``
files are memory-mapped (no pickle): only the rows a rank asks for are copied into
its memory; the mapped file pages are page cache, which the kernel evicts when memory
is short, so the data set can exceed RAM. With ``streaming`` (snapshot after snapshot
training order) a snapshot is read ahead when training enters it and its pages are
dropped from the process when training leaves it.

openPMD files (``.h5``; meshes ``Bispectrum`` and ``LDOS`` as in MALA) do not allow
cheap random access to single points, so :func:`cache_openpmd` first converts them
once, each rank its own grid block, into ``.npy`` files in a cache directory.

Points are numbered globally over a :class:`SnapshotSet`: snapshot after snapshot,
grid points in C order within one.
"""

from __future__ import annotations

import hashlib
import mmap
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import MlscaleError
from .grid import DistributedGrid, Grid
from .io.numpy_io import memory_map_npy, write_npy_distributed
from .io.openpmd_io import openpmd_info, read_openpmd
from .parallel import Comm

COORDINATE_COLUMNS = 3
CHUNK_POINTS = 65536  # points read at once by the sequential passes (statistics, validation)
OPENPMD_MESHES = {"descriptors": "Bispectrum", "ldos": "LDOS"}


@dataclass(frozen=True)
class SnapshotFiles:
    """Paths of one snapshot: descriptors and LDOS."""

    descriptors: Path
    ldos: Path

    @classmethod
    def parse(cls, text: str) -> SnapshotFiles:
        """``"DESCRIPTORS:LDOS"`` (e.g. ``Be_snapshot0.in.npy:Be_snapshot0.out.npy``)."""
        parts = str(text).rsplit(":", 1)
        if len(parts) != 2 or not all(parts):
            raise MlscaleError(f"snapshot must be given as DESCRIPTORS:LDOS, got '{text}'")
        return cls(Path(parts[0]), Path(parts[1]))

    def __str__(self) -> str:
        return f"{self.descriptors}:{self.ldos}"


def _memory_map_npy(path: Path) -> tuple[np.ndarray, mmap.mmap]:
    """A read-only array view of a snapshot's ``.npy`` file and the mmap behind it."""
    if path.is_file() and path.suffix != ".npy":
        raise MlscaleError(f"unsupported snapshot file type '{path.suffix}' for {path} "
                           "(use .npy, or openPMD .h5 through cache_openpmd)")
    return memory_map_npy(path)


class Snapshot:
    """One snapshot opened lazily: ``descriptors_pf`` [points, F] and ``ldos_pe`` [points, E]."""

    def __init__(self, files: SnapshotFiles, n_features: int, n_energies: int):
        self.files = files
        x, self._x_map = _memory_map_npy(Path(files.descriptors))
        y, self._y_map = _memory_map_npy(Path(files.ldos))
        if x.ndim not in (2, 4) or x.shape[-1] not in (n_features, n_features + COORDINATE_COLUMNS):
            raise MlscaleError(
                f"{files.descriptors}: descriptors must be [nx, ny, nz, {n_features}] "
                f"(or {n_features + COORDINATE_COLUMNS} with coordinates), got {x.shape}")
        if y.ndim != x.ndim or y.shape[-1] != n_energies:
            raise MlscaleError(f"{files.ldos}: LDOS must be [{', '.join(map(str, x.shape[:-1]))}, "
                               f"{n_energies}] to match the descriptors, got {y.shape}")
        if y.shape[:-1] != x.shape[:-1]:
            raise MlscaleError(f"grids differ: descriptors {x.shape[:-1]} in {files.descriptors}, "
                               f"LDOS {y.shape[:-1]} in {files.ldos}")
        x = x.reshape(-1, x.shape[-1])
        self.descriptors_pf = x[:, x.shape[1] - n_features:]
        self.ldos_pe = y.reshape(-1, n_energies)
        self.npoints = len(self.ldos_pe)

    def prefetch(self) -> None:
        """Ask the kernel to read the files ahead (sequential I/O, asynchronous)."""
        for mapped in (self._x_map, self._y_map):
            mapped.madvise(mmap.MADV_WILLNEED)

    def release(self) -> None:
        """Drop this process's mapped pages (they stay in the page cache)."""
        for mapped in (self._x_map, self._y_map):
            mapped.madvise(mmap.MADV_DONTNEED)


class SnapshotSet:
    """Several snapshots with one global point numbering.

    streaming: reads come snapshot after snapshot (each visited once per pass), so
    :meth:`read` prefetches a snapshot when it is first touched and releases those
    the current read no longer touches.
    """

    def __init__(self, files: Sequence[SnapshotFiles], n_features: int, n_energies: int,
                 streaming: bool = False):
        self.snapshots = [Snapshot(f, n_features, n_energies) for f in files]
        if not self.snapshots:
            raise MlscaleError("no snapshots given")
        self.n_features, self.n_energies = n_features, n_energies
        self.sizes = np.array([s.npoints for s in self.snapshots], dtype=np.int64)
        self.offsets = np.concatenate([[0], np.cumsum(self.sizes)])
        self.npoints = int(self.offsets[-1])
        self.streaming = streaming
        self._active: set[int] = set()

    def read(self, points: Sequence[int] | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Descriptors [n, F] and LDOS [n, E] (float32) of global points in the given order."""
        points = np.asarray(points, dtype=np.int64)
        x = np.empty((len(points), self.n_features), np.float32)
        y = np.empty((len(points), self.n_energies), np.float32)
        which = np.searchsorted(self.offsets, points, side="right") - 1
        touched = set(np.unique(which).tolist())
        if self.streaming:
            for s in touched - self._active:
                self.snapshots[s].prefetch()
            for s in self._active - touched:
                self.snapshots[s].release()
            self._active = touched
        for s in touched:
            mask = which == s
            local = points[mask] - self.offsets[s]
            x[mask] = self.snapshots[s].descriptors_pf[local]
            y[mask] = self.snapshots[s].ldos_pe[local]
        return x, y

    def chunks(self, start: int, stop: int,
               chunk_points: int) -> Iterator[tuple[Snapshot, np.ndarray, np.ndarray]]:
        """Yield (snapshot, x, y) for the global points ``start <= p < stop`` in chunks."""
        for s, snapshot in enumerate(self.snapshots):
            lo = max(start - self.offsets[s], 0)
            hi = min(stop - self.offsets[s], snapshot.npoints)
            for a in range(lo, hi, chunk_points):
                b = min(a + chunk_points, hi)
                yield (snapshot, np.array(snapshot.descriptors_pf[a:b], np.float32),
                       np.array(snapshot.ldos_pe[a:b], np.float32))
            if hi > lo:
                snapshot.release()

    def share(self, comm: Comm) -> tuple[int, int]:
        """This rank's contiguous range of global points (balanced over ranks)."""
        return (self.npoints * comm.rank // comm.size,
                self.npoints * (comm.rank + 1) // comm.size)

    def release(self) -> None:
        """Drop the mapped pages of every snapshot."""
        for snapshot in self.snapshots:
            snapshot.release()
        self._active = set()


def _cache_name(path: Path) -> str:
    """A cache file name that changes when the source file changes."""
    stat = path.stat()
    key = f"{path.resolve()}:{stat.st_size}:{stat.st_mtime_ns}".encode()
    return f"{path.stem}-{hashlib.sha256(key).hexdigest()[:16]}.npy"


def _convert_openpmd(path: Path, mesh: str, target: Path, comm: Comm) -> None:
    """Copy an openPMD mesh into a ``[nx, ny, nz, n]`` float32 .npy; each rank its block."""
    with comm.collective():
        info = openpmd_info(path, mesh)
    # only the grid's shape matters for copying values: a unit cube stands in for the cell
    dgrid = DistributedGrid(Grid(np.eye(3), info["shape"]), comm)
    with comm.collective():
        local = read_openpmd(path, mesh, dgrid.block).astype(np.float32)
    write_npy_distributed(target, local.reshape(*dgrid.local_shape, info["n_components"]),
                          dgrid)


def cache_openpmd(files: Sequence[SnapshotFiles | str], cache_dir: str | Path | None,
                  comm: Comm) -> list[SnapshotFiles]:
    """The snapshots with every openPMD (``.h5``) part replaced by a ``.npy`` copy.

    Copies are made once (collectively, each rank reads and writes its own grid block)
    into ``cache_dir`` and reused while the source file is unchanged.
    """
    result = []
    for spec in files:
        spec = spec if isinstance(spec, SnapshotFiles) else SnapshotFiles.parse(spec)
        paths = {}
        for part in ("descriptors", "ldos"):
            path = Path(getattr(spec, part))
            if path.suffix == ".h5":
                with comm.collective():
                    if not path.is_file():
                        raise MlscaleError(f"file not found: {path}")
                    if cache_dir is None:
                        raise MlscaleError(f"{path}: openPMD snapshots need a cache directory")
                    target = Path(cache_dir) / _cache_name(path)
                    if comm.rank == 0:
                        Path(cache_dir).mkdir(parents=True, exist_ok=True)
                if not comm.broadcast(target.is_file()):
                    _convert_openpmd(path, OPENPMD_MESHES[part], target, comm)
                path = target
            paths[part] = path
        result.append(SnapshotFiles(paths["descriptors"], paths["ldos"]))
    return result


def open_snapshots(files: Sequence[SnapshotFiles | str], n_features: int, n_energies: int,
                   comm: Comm, streaming: bool = False) -> SnapshotSet:
    """Open snapshots lazily on every rank (collective: all ranks fail alike)."""
    with comm.collective():
        return SnapshotSet([f if isinstance(f, SnapshotFiles) else SnapshotFiles.parse(f)
                            for f in files], n_features, n_energies, streaming)


@dataclass(frozen=True)
class Statistics:
    """Per-column mean and standard deviation (float64) over all points."""

    input_mean: np.ndarray
    input_std: np.ndarray
    output_mean: np.ndarray
    output_std: np.ndarray


class _Moments:
    """Count, mean and sum of squared deviations per column, updated chunk by chunk (Chan)."""

    def __init__(self, width: int):
        self.count, self.mean, self.m2 = 0, np.zeros(width), np.zeros(width)

    def add(self, chunk: np.ndarray) -> None:
        chunk = np.asarray(chunk, np.float64)
        n = len(chunk)
        if n == 0:
            return
        chunk_mean = chunk.mean(axis=0)
        chunk_m2 = ((chunk - chunk_mean) ** 2).sum(axis=0)
        delta = chunk_mean - self.mean
        total = self.count + n
        self.mean = self.mean + delta * (n / total)
        self.m2 = self.m2 + chunk_m2 + delta**2 * (self.count * n / total)
        self.count = total


def _combine(comm: Comm, moments: _Moments) -> tuple[np.ndarray, np.ndarray]:
    """Global mean and standard deviation from every rank's partial moments."""
    count, mean, m2 = moments.count, moments.mean, moments.m2
    total = comm.sum(count)
    global_mean = comm.sum(mean * count) / total
    global_m2 = comm.sum(m2 + count * (mean - global_mean) ** 2)
    return global_mean, np.sqrt(global_m2 / total)


def scaling_statistics(snapshots: SnapshotSet, comm: Comm, chunk_points: int = CHUNK_POINTS,
                       check: Sequence[SnapshotSet] = ()) -> Statistics:
    """Mean/std per descriptor feature and per LDOS energy, in one distributed pass.

    Every rank reads only its share of the points, in chunks; the partial moments are
    combined over ranks. The SnapshotSets in ``check`` (validation data) are scanned
    for NaN in the same pass. Raises MlscaleError (on all ranks) for NaN or infinity.
    """
    x_moments, y_moments = _Moments(snapshots.n_features), _Moments(snapshots.n_energies)
    with comm.collective():
        for data in (snapshots, *check):
            for snapshot, x, y in data.chunks(*data.share(comm), chunk_points):
                if not (np.isfinite(x).all() and np.isfinite(y).all()):
                    raise MlscaleError(f"snapshot {snapshot.files} contains NaN or infinity")
                if data is snapshots:
                    x_moments.add(x)
                    y_moments.add(y)
    x_mean, x_std = _combine(comm, x_moments)
    y_mean, y_std = _combine(comm, y_moments)
    return Statistics(x_mean, x_std, y_mean, y_std)
