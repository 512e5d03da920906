"""The real-space grid of a cell and its decomposition into 3-D blocks over ranks.

Conventions (QE's FFT grid, see DESIGN.md): point (i, j, k) sits at fractional
position (i/nx, j/ny, k/nz) of the cell; arrays are ``[x, y, z, ...]`` in C order.
Cell vectors are the rows of ``cell_cv`` in Å.

Each rank owns one rectangular index block ``[start, stop)`` of the global grid.
The process grid (px, py, pz) with px*py*pz = ranks is chosen to minimise the
block surface; any rank count works, not only divisors of the grid.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np

from .errors import MlscaleError


@dataclass(frozen=True)
class Block:
    """A rectangular block of global grid indices, ``start <= index < stop`` per axis."""

    start: tuple[int, int, int]
    stop: tuple[int, int, int]

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(int(b - a) for a, b in zip(self.start, self.stop))

    @property
    def size(self) -> int:
        return int(np.prod(self.shape))

    @property
    def slices(self) -> tuple[slice, slice, slice]:
        """Slices that cut this block out of a global ``[nx, ny, nz, ...]`` array."""
        return tuple(slice(a, b) for a, b in zip(self.start, self.stop))

    def indices_g3(self) -> np.ndarray:
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

    def __post_init__(self):
        cell = np.asarray(self.cell_cv, dtype=float)
        if cell.shape != (3, 3) or not np.all(np.isfinite(cell)):
            raise MlscaleError(f"cell must be a finite 3x3 matrix, got shape {cell.shape}")
        if abs(np.linalg.det(cell)) < 1e-10:
            raise MlscaleError("cell has zero volume")
        shape = tuple(int(n) for n in self.shape)
        if len(shape) != 3 or min(shape) < 1:
            raise MlscaleError(f"grid shape must be three positive integers, got {self.shape}")
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

    def fractional_g3(self, block: Block) -> np.ndarray:
        """Fractional coordinates of a block's points, ``[bx, by, bz, 3]``."""
        return block.indices_g3() / np.array(self.shape, dtype=float)

    def positions_g3(self, block: Block) -> np.ndarray:
        """Cartesian positions (Å) of a block's points, ``[bx, by, bz, 3]``."""
        return self.fractional_g3(block) @ self.cell_cv

    def check_array(self, array: np.ndarray, what: str, block: Block | None = None):
        """Raise a clear error unless ``array`` has the block's (or the grid's) shape."""
        expected = (block or self.full_block()).shape
        if tuple(array.shape[:3]) != tuple(expected):
            raise MlscaleError(
                f"{what} has grid shape {tuple(array.shape[:3])}, expected {tuple(expected)}"
            )


def qe_fft_shape(cell_cv, ecutrho_Ry: float) -> tuple[int, int, int]:
    """Quantum ESPRESSO's dense FFT grid for a cell (Å) and density cutoff ``ecutrho`` (Ry).

    As QE: n_i = 2*int(sqrt(ecutrho)*|a_i|/(2π)) + 1 (|a_i| in Bohr), raised to the next
    size with prime factors 2, 3, 5 and 7 only.
    """
    bohr = 0.52917721067
    lengths = np.linalg.norm(np.asarray(cell_cv, dtype=float), axis=1) / bohr
    if not ecutrho_Ry > 0:
        raise MlscaleError(f"ecutrho must be positive, got {ecutrho_Ry}")
    raw = (2 * int(np.sqrt(ecutrho_Ry) * length / (2 * np.pi)) + 1 for length in lengths)
    return tuple(_next_fft_size(n) for n in raw)


def _next_fft_size(n: int) -> int:
    n = max(n, 1)
    while True:
        m = n
        for p in (2, 3, 5, 7):
            while m % p == 0:
                m //= p
        if m == 1:
            return n
        n += 1


def process_grid(nranks: int, shape: tuple[int, int, int]) -> tuple[int, int, int]:
    """Split ``nranks`` into (px, py, pz) with p_i <= n_i, minimising block surface."""
    if nranks < 1:
        raise MlscaleError("need at least one rank")
    best = None
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
        return tuple(split_axis(n, p) for n, p in zip(self.shape, self.dims))

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
