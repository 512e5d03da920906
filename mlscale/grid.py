"""The real-space grid of a cell, its decomposition into 3-D blocks over ranks, and the
distributed grid every stage of the pipeline takes.

Conventions (QE's FFT grid, docs/architecture.md): point (i, j, k) sits at fractional
position (i/nx, j/ny, k/nz) of the cell; arrays are ``[x, y, z, ...]`` in C order.
Cell vectors are the rows of ``cell_cv`` in Å.

Each rank owns one rectangular index block ``[start, stop)`` of the global grid.
The process grid (px, py, pz) with px*py*pz = ranks is chosen to minimise the
block surface; any rank count works, not only divisors of the grid.

:class:`DistributedGrid` (a :class:`Grid`, this rank's block and the communicator in
one object, as GPAW's grid descriptor) is the only place that computes which block a
rank owns; every stage takes it instead of loose ``(grid, block, comm)`` arguments.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Any, SupportsInt, TypeVar

import numpy as np
from numpy.typing import ArrayLike, DTypeLike

from .errors import MlscaleError
from .parallel import Comm, self_comm
from .units import BOHR_ANGSTROM

T = TypeVar("T")


def triple(values: Iterable[T]) -> tuple[T, T, T]:
    """``values`` (exactly three of them) as a 3-tuple; ValueError for another count."""
    x, y, z = values
    return x, y, z


def grid_shape(shape: Sequence[SupportsInt]) -> tuple[int, int, int]:
    """A grid shape (nx, ny, nz) as three ints; MlscaleError unless three positive integers."""
    n = tuple(int(i) for i in shape)
    if len(n) != 3 or min(n) < 1:
        raise MlscaleError(f"grid shape must be three positive integers, got {shape}")
    return n[0], n[1], n[2]


@dataclass(frozen=True)
class Block:
    """A rectangular block of global grid indices, ``start <= index < stop`` per axis."""

    start: tuple[int, int, int]
    stop: tuple[int, int, int]

    @property
    def shape(self) -> tuple[int, int, int]:
        return triple(int(b - a) for a, b in zip(self.start, self.stop))

    @property
    def size(self) -> int:
        return int(np.prod(self.shape))

    @property
    def slices(self) -> tuple[slice, slice, slice]:
        """Slices that cut this block out of a global ``[nx, ny, nz, ...]`` array."""
        return triple(slice(a, b) for a, b in zip(self.start, self.stop))

    def indices_bc(self) -> np.ndarray:
        """Global integer indices of the block's points, shape ``[bx, by, bz, 3]``."""
        axes = [np.arange(a, b) for a, b in zip(self.start, self.stop)]
        return np.stack(np.meshgrid(*axes, indexing="ij"), axis=-1)


@dataclass(frozen=True, eq=False)
class Grid:
    """A periodic real-space grid over a cell.

    cell_cv: cell vectors as rows, Å.  shape: (nx, ny, nz) grid points.
    """

    cell_cv: np.ndarray
    shape: tuple[int, int, int]

    def __post_init__(self) -> None:
        cell = np.asarray(self.cell_cv, dtype=float)
        if cell.shape != (3, 3) or not np.all(np.isfinite(cell)):
            raise MlscaleError(f"cell must be a finite 3x3 matrix, got shape {cell.shape}")
        if abs(np.linalg.det(cell)) < 1e-10:
            raise MlscaleError("cell has zero volume")
        shape = grid_shape(self.shape)
        object.__setattr__(self, "cell_cv", cell)
        object.__setattr__(self, "shape", shape)

    @property
    def npoints(self) -> int:
        return int(np.prod(self.shape))

    @property
    def volume(self) -> float:
        """Cell volume in Å³."""
        return float(abs(np.linalg.det(self.cell_cv)))

    @property
    def voxel_volume(self) -> float:
        """Volume per grid point ΔV in Å³."""
        return self.volume / self.npoints

    @property
    def voxel_cv(self) -> np.ndarray:
        """Grid step vectors (rows), Å: cell vector i divided by n_i."""
        return self.cell_cv / np.array(self.shape, dtype=float)[:, None]

    @property
    def is_orthorhombic(self) -> bool:
        off = self.cell_cv - np.diag(np.diag(self.cell_cv))
        return bool(np.all(np.abs(off) < 1e-10))

    def full_block(self) -> Block:
        return Block((0, 0, 0), self.shape)

    def fractional_bc(self, block: Block) -> np.ndarray:
        """Fractional coordinates of a block's points, ``[bx, by, bz, 3]``."""
        return block.indices_bc() / np.array(self.shape, dtype=float)

    def positions_bv(self, block: Block) -> np.ndarray:
        """Cartesian positions (Å) of a block's points, ``[bx, by, bz, 3]``."""
        return self.fractional_bc(block) @ self.cell_cv

    def check_array(self, array: np.ndarray, what: str, block: Block | None = None) -> None:
        """Raise a clear error unless ``array`` has the block's (or the grid's) shape."""
        expected = (block or self.full_block()).shape
        if tuple(array.shape[:3]) != tuple(expected):
            raise MlscaleError(
                f"{what} has grid shape {tuple(array.shape[:3])}, expected {tuple(expected)}"
            )


def qe_fft_shape(cell_cv: ArrayLike, ecutrho_Ry: float) -> tuple[int, int, int]:
    """pw.x's dense FFT grid for a cell (Å) and density cutoff ``ecutrho`` (Ry).

    As QE 6.7 built with FFTW (``realspace_grid_init``, ``grid_set``, ``good_fft_order``):
    per axis 2·max|m_i| + 1 over the G vectors with |G|² <= ecutrho (G in 1/Bohr),
    raised to the next size with prime factors 2, 3 and 5 only (FFTW builds reject 7
    and 11). E.g. fcc Al (a = 4.05 Å) primitive cell at 60 Ry: 15³; the 3×3×3
    conventional cell (12.15 Å) at 80 Ry: 72³ (both as pw.x reports).
    """
    cell_cv = np.asarray(cell_cv, dtype=float)
    if not ecutrho_Ry > 0:
        raise MlscaleError(f"ecutrho must be positive, got {ecutrho_Ry}")
    a_cv = cell_cv / BOHR_ANGSTROM
    b_cv = 2 * np.pi * np.linalg.inv(a_cv).T  # reciprocal vectors (1/Bohr), rows
    return triple(_next_fft_size(2 * _max_miller(a_cv, b_cv, c, ecutrho_Ry) + 1)
                  for c in range(3))


def _max_miller(a_cv: np.ndarray, b_cv: np.ndarray, c: int, ecut: float) -> int:
    """The largest m_c of the G = Σ m_i b_i with |G|² <= ecut (a, b in Bohr, 1/Bohr).

    Plane by plane from the continuous bound down: on the plane m_c = m the sphere cuts a
    disc around G0 = 2π m a_c/|a_c|², and the other two indices m_i = G·a_i/2π of its
    points lie within |G0·a_i/2π| ± radius·|a_i|/2π: only the cap's few points are tried,
    whatever the cell's size.
    """
    others = [i for i in range(3) if i != c]
    length = np.linalg.norm(a_cv[c])
    for m in range(int(np.floor(np.sqrt(ecut) * length / (2 * np.pi))), 0, -1):
        g0_v = 2 * np.pi * m * a_cv[c] / length**2
        radius = np.sqrt(max(ecut - g0_v @ g0_v, 0.0))
        ranges = []
        for i in others:
            centre = g0_v @ a_cv[i] / (2 * np.pi)
            half = radius * np.linalg.norm(a_cv[i]) / (2 * np.pi)
            ranges.append(np.arange(np.floor(centre - half), np.ceil(centre + half) + 1))
        mi, mj = np.meshgrid(*ranges, indexing="ij")
        g_qv = (m * b_cv[c] + mi.reshape(-1, 1) * b_cv[others[0]]
                + mj.reshape(-1, 1) * b_cv[others[1]])
        if np.any(np.sum(g_qv**2, axis=1) <= ecut):
            return m
    return 0


def _next_fft_size(n: int) -> int:
    """The smallest size >= n with prime factors 2, 3 and 5 only."""
    n = max(n, 1)
    while True:
        m = n
        for p in (2, 3, 5):
            while m % p == 0:
                m //= p
        if m == 1:
            return n
        n += 1


def process_grid(nranks: int, shape: tuple[int, int, int]) -> tuple[int, int, int]:
    """Split ``nranks`` into (px, py, pz) with p_i <= n_i, minimising block surface."""
    if nranks < 1:
        raise MlscaleError("need at least one rank")
    best: tuple[tuple[float, int, int], tuple[int, int, int]] | None = None
    for px in range(1, nranks + 1):
        if nranks % px:
            continue
        for py in range(1, nranks // px + 1):
            if (nranks // px) % py:
                continue
            pz = nranks // (px * py)
            dims = (px, py, pz)
            if any(p > n for p, n in zip(dims, shape)):
                continue
            bx, by, bz = (n / p for n, p in zip(shape, dims))
            surface = bx * by + by * bz + bx * bz
            # prefer splitting z first (last axis; contiguous slabs in C order) on ties
            key = (round(surface, 9), dims[0], dims[1])
            if best is None or key < best[0]:
                best = (key, dims)
    if best is None:
        raise MlscaleError(
            f"cannot split a {shape[0]}x{shape[1]}x{shape[2]} grid over {nranks} ranks "
            "(more ranks than grid points along the possible process-grid axes)"
        )
    return best[1]


def split_axis(n: int, parts: int) -> list[int]:
    """Balanced boundaries ``b_0=0 < ... < b_parts=n`` of ``n`` points in ``parts`` pieces."""
    return [(n * i) // parts for i in range(parts + 1)]


@dataclass(frozen=True)
class Decomposition:
    """The blocks of a grid of ``shape`` over ``nranks`` ranks (rank order: x slowest)."""

    shape: tuple[int, int, int]
    nranks: int

    @cached_property
    def dims(self) -> tuple[int, int, int]:
        return process_grid(self.nranks, self.shape)

    @cached_property
    def boundaries(self) -> tuple[list[int], list[int], list[int]]:
        """Per axis, the block boundaries in grid indices."""
        return triple(split_axis(n, p) for n, p in zip(self.shape, self.dims))

    def block(self, rank: int) -> Block:
        if not 0 <= rank < self.nranks:
            raise MlscaleError(f"rank {rank} outside 0..{self.nranks - 1}")
        px, py, pz = self.dims
        cx, rest = divmod(rank, py * pz)
        cy, cz = divmod(rest, pz)
        bx, by, bz = self.boundaries
        return Block((bx[cx], by[cy], bz[cz]), (bx[cx + 1], by[cy + 1], bz[cz + 1]))

    def blocks(self) -> list[Block]:
        return [self.block(r) for r in range(self.nranks)]


# -- block geometry -----------------------------------------------------------------------
def slabs(block: Block, chunk_points: int) -> list[Block]:
    """Split a block, in C order, into slabs of at most ~``chunk_points`` points.

    Slabs of whole x-planes; where one plane holds more points, rows of y-lines
    (at least one line along z).
    """
    (x0, y0, z0), (x1, y1, z1) = block.start, block.stop
    plane = block.shape[1] * block.shape[2]
    if plane > chunk_points:
        step = max(1, chunk_points // max(block.shape[2], 1))
        return [Block((x, y, z0), (x + 1, min(y + step, y1), z1))
                for x in range(x0, x1) for y in range(y0, y1, step)]
    step = max(1, chunk_points // max(plane, 1))
    return [Block((x, y0, z0), (min(x + step, x1), y1, z1)) for x in range(x0, x1, step)]


def halo_c(cell_cv: np.ndarray, cutoff: float) -> np.ndarray:
    """Fractional half-widths of a sphere of radius ``cutoff`` (Å) along the cell axes."""
    return cutoff * np.linalg.norm(np.linalg.inv(np.asarray(cell_cv, dtype=float)), axis=0)


def halo_atoms(frac_ac: ArrayLike, grid_shape: Sequence[int], block: Block,
               halo: np.ndarray) -> np.ndarray:
    """Indices of the atoms with a periodic image inside the block's box widened by ``halo``.

    frac_ac: fractional positions [atoms, 3]; halo: fractional half-widths (:func:`halo_c`).
    These are the only atoms whose images can lie within the cutoff of the block's
    points (the box the native descriptor kernel searches), so they are all a rank needs.
    """
    frac_ac = np.asarray(frac_ac, dtype=float)
    frac_ac = frac_ac - np.floor(frac_ac)
    n_c = np.asarray(grid_shape, dtype=float)
    lo_c = np.asarray(block.start) / n_c - halo - 1e-9
    hi_c = (np.asarray(block.stop) - 1) / n_c + halo + 1e-9
    # an image f + k (k integer) lies in [lo, hi] on an axis iff floor(hi - f) >= ceil(lo - f)
    inside_ac = np.floor(hi_c - frac_ac) >= np.ceil(lo_c - frac_ac)
    return np.flatnonzero(inside_ac.all(axis=1))


def atoms_in_block(frac_ac: ArrayLike, grid_shape: Sequence[int], block: Block) -> int:
    """Number of atoms in the block's cells: start/n <= f < stop/n on every axis (wrapped)."""
    frac_ac = np.asarray(frac_ac, dtype=float)
    f_ac = (frac_ac - np.floor(frac_ac)) * np.asarray(grid_shape, dtype=float)
    inside_ac = (f_ac >= np.asarray(block.start)) & (f_ac < np.asarray(block.stop))
    return int(np.count_nonzero(inside_ac.all(axis=1)))


def largest_block(grid_shape: Sequence[int], nranks: int) -> Block:
    """The block with the most points among the ranks of ``Decomposition(grid_shape, nranks)``."""
    decomposition = Decomposition(triple(grid_shape), nranks)
    start, stop = [], []
    for bounds in decomposition.boundaries:
        i = int(np.argmax(np.diff(bounds)))
        start.append(bounds[i])
        stop.append(bounds[i + 1])
    return Block(triple(start), triple(stop))


def smallest_block_size(grid_shape: Sequence[int], nranks: int) -> int:
    """Points of the smallest block of ``Decomposition(grid_shape, nranks)``."""
    decomposition = Decomposition(triple(grid_shape), nranks)
    return int(np.prod([min(np.diff(b)) for b in decomposition.boundaries]))


# -- the distributed grid -----------------------------------------------------------------
class DistributedGrid:
    """A :class:`Grid` split over the ranks of a communicator: this rank's block of it.

    ``DistributedGrid(grid, comm)``: the block of ``comm.rank`` among ``comm.size``
    blocks. ``DistributedGrid.share(grid, rank, nranks)``: the block of rank ``rank`` of
    an ``nranks``-rank job computed by this one process alone (to measure one rank's
    cost); its reductions are then that rank's partial sums. Arrays of the block are
    ``[bx, by, bz, ...]`` (suffix ``_b``) or flattened in C order ``[points, ...]``
    (suffix ``_p``). Lengths in the units of ``grid.cell_cv`` (Å in the pipeline).
    """

    def __init__(self, grid: Grid, comm: Comm | None = None, *, rank: int | None = None,
                 nranks: int | None = None):
        self.grid = grid
        self.comm = comm if comm is not None else self_comm()
        self.rank = self.comm.rank if rank is None else int(rank)
        self.nranks = self.comm.size if nranks is None else int(nranks)
        if (rank is None) != (nranks is None):
            raise MlscaleError("give both rank and nranks of a share, or neither")
        if self.is_share and self.comm.size != 1:
            raise MlscaleError("one rank's share of a job runs on a communicator of one rank")
        self.decomposition = Decomposition(grid.shape, self.nranks)
        self.block = self.decomposition.block(self.rank)

    @classmethod
    def share(cls, grid: Grid, rank: int, nranks: int) -> DistributedGrid:
        """Rank ``rank``'s block of an ``nranks``-rank job, on this process alone."""
        return cls(grid, self_comm(), rank=rank, nranks=nranks)

    def with_cell(self, cell_cv: np.ndarray) -> DistributedGrid:
        """The same decomposition and communicator over another cell (e.g. in Bohr)."""
        share = (self.rank, self.nranks) if self.is_share else (None, None)
        return DistributedGrid(Grid(cell_cv, self.grid.shape), self.comm, rank=share[0],
                               nranks=share[1])

    # -- what the grid is -----------------------------------------------------------------
    @property
    def is_share(self) -> bool:
        """True if this process computes one rank's share of a larger job by itself."""
        return self.nranks != self.comm.size

    @property
    def shape(self) -> tuple[int, int, int]:
        """Global grid shape (nx, ny, nz)."""
        return self.grid.shape

    @property
    def cell_cv(self) -> np.ndarray:
        return self.grid.cell_cv

    @property
    def voxel_volume(self) -> float:
        """Volume per grid point ΔV (Å³ for a cell in Å)."""
        return self.grid.voxel_volume

    @property
    def npoints(self) -> int:
        """Points of the whole grid."""
        return self.grid.npoints

    @property
    def local_shape(self) -> tuple[int, int, int]:
        """Shape (bx, by, bz) of this rank's block."""
        return self.block.shape

    @property
    def local_points(self) -> int:
        """Points of this rank's block."""
        return self.block.size

    # -- arrays of the block --------------------------------------------------------------
    def empty(self, *extra: int, dtype: DTypeLike = float) -> np.ndarray:
        """Uninitialised ``[bx, by, bz, *extra]`` array of the block."""
        return np.empty((*self.local_shape, *extra), dtype=dtype)

    def zeros(self, *extra: int, dtype: DTypeLike = float) -> np.ndarray:
        """Zero ``[bx, by, bz, *extra]`` array of the block."""
        return np.zeros((*self.local_shape, *extra), dtype=dtype)

    def check_local(self, array: np.ndarray, what: str) -> None:
        """MlscaleError unless ``array`` is ``[bx, by, bz, ...]`` of this rank's block."""
        self.grid.check_array(array, what, self.block)

    def positions_b3(self, block: Block | None = None) -> np.ndarray:
        """Cartesian positions of the points of ``block`` (default: the rank's), ``[.., 3]``."""
        return self.grid.positions_bv(block or self.block)

    # -- reductions -------------------------------------------------------------------------
    def sum(self, value: Any) -> Any:
        """Sum of a scalar or array over the ranks (a share: its own value)."""
        return self.comm.sum(value)

    def integrate(self, f_b: np.ndarray) -> float:
        """∫ f dV = Σ_r f(r) ΔV over the whole grid (a share: over its block)."""
        return float(self.comm.sum(float(np.sum(f_b)) * self.voxel_volume))

    # -- work split -------------------------------------------------------------------------
    def slabs(self, chunk_points: int) -> list[Block]:
        """The rank's block in slabs of at most ~``chunk_points`` points (C order)."""
        return slabs(self.block, chunk_points)

    def atoms_near(self, frac_ac: np.ndarray, cutoff: float) -> np.ndarray:
        """Indices of the atoms (fractional positions) within ``cutoff`` of the block's box."""
        return halo_atoms(frac_ac, self.shape, self.block, halo_c(self.cell_cv, cutoff))

    def __repr__(self) -> str:
        return (f"DistributedGrid(shape={self.shape}, rank {self.rank} of {self.nranks}, "
                f"block {self.block.start}..{self.block.stop})")
