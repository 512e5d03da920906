"""Distributed real-to-complex 3-D FFT of fields held in mlscale's real-space blocks.

mpi4py-fft's ``PFFT`` wants its input in its own pencil/slab layout; mlscale's ranks
hold 3-D blocks (:class:`~mlscale.grid.DistributedGrid`). :class:`DistributedFFT`
moves data between the two layouts with one ``Alltoallv`` (each rank sends and
receives only the points it owns), so memory per rank stays proportional to its
points, and the same code runs on 1 and N ranks.

Conventions (Quantum ESPRESSO's): ``f(G) = (1/N) Σ_r f(r) e^{-iG·r}`` and
``f(r) = Σ_G f(G) e^{iG·r}``. Spectral arrays (suffix ``_q``) hold this rank's part
of the half space G_z >= 0 of a real field; :meth:`DistributedFFT.sum_q` counts each
±G pair twice as it should. Lengths are in the units of ``dgrid.cell_cv``.
The module talks MPI (``Alltoallv`` of the layout exchange, mpi4py-fft) through
the communicator of the distributed grid.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from functools import cached_property
from typing import Any

import numpy as np
from mpi4py import MPI
from mpi4py_fft import PFFT, fftw

from ..errors import MlscaleError
from ..grid import Block, DistributedGrid, triple

CHUNK_POINTS = 1 << 13  # points per piece of the chunked loops over a field (chunks_q)


class DistributedFFT:
    """FFT between this rank's block of a real field and its share of G space."""

    def __init__(self, dgrid: DistributedGrid) -> None:
        if dgrid.is_share:
            raise MlscaleError("the distributed FFT needs every rank of the job, not one share")
        grid, comm = dgrid.grid, dgrid.comm
        self.dgrid = dgrid
        self.grid = grid
        self.comm = comm
        self.block = dgrid.block
        # collapse: the axes no rank splits go in one FFTW call (the real-to-complex one);
        # each distributed axis is a complex stage of its own, transformed in place. Work
        # arrays per point: 8 (real) + 8.2 (half spectrum) on 1 rank, 8.2 more per
        # distributed axis (mpi4py-fft splits 1 axis for a prime number of ranks, else 2)
        self._pfft = PFFT(comm.mpi, grid.shape, axes=(0, 1, 2), dtype=np.float64,
                          collapse=True, backend="fftw", planner_effort="FFTW_ESTIMATE",
                          transforms={(0,): _IN_PLACE, (1,): _IN_PLACE})
        pencil = _block_of(self._pfft.local_slice(False))
        self.spectral_block = _block_of(self._pfft.local_slice(True))
        pencils = [Block(triple(b[:3]), triple(b[3:]))
                   for b in comm.mpi.allgather(pencil.start + pencil.stop)]
        blocks = dgrid.decomposition.blocks()
        # to pencils: what this block sends to each rank / receives from each rank's block
        self._send = [_overlap(self.block, p) for p in pencils]
        self._recv = [_overlap(b, pencil) for b in blocks]
        self._pencil = pencil

    # -- transforms -----------------------------------------------------------------
    def forward(self, f_b: np.ndarray) -> np.ndarray:
        """f(G) on this rank's spectral points from this rank's block of real f(r)."""
        return self.forward_work(f_b).copy()

    def backward(self, f_q: np.ndarray) -> np.ndarray:
        """This rank's block of real f(r) from f(G) on this rank's spectral points."""
        self.spectral_work[...] = f_q
        return self.backward_work()

    # The transform's own arrays (mpi4py-fft's): working in them saves a copy of a field
    # per transform. They hold a result only until the next transform of this object.
    @property
    def spectral_work(self) -> np.ndarray:
        """The spectral work array (this rank's spectral points): forward_work's result,
        backward_work's input."""
        return self._pfft.forward.output_array

    @property
    def real_work(self) -> tuple[Block, np.ndarray]:
        """The real-space work array, the input of :meth:`forward_work` without an argument,
        and the block of the grid it holds (mpi4py-fft's pencil, not this rank's block
        unless there is one rank)."""
        return self._pencil, self._pfft.forward.input_array

    def forward_work(self, f_b: np.ndarray | None = None) -> np.ndarray:
        """f(G) of this rank's block of real f(r) (None: of what :attr:`real_work` holds),
        in :attr:`spectral_work` (no copy: overwritten by the next transform)."""
        if f_b is not None:
            self._exchange(f_b, self.block, self._send, self._pencil, self._recv,
                           self._pfft.forward.input_array)
        return self._pfft.forward()

    def backward_work(self, out: np.ndarray | None = None) -> np.ndarray:
        """This rank's block of real f(r) from f(G) in :attr:`spectral_work` (which the
        transform overwrites), as a new array or into ``out``."""
        u = self._pfft.backward()
        if out is None:
            out = np.empty(self.block.shape)
        return self._exchange(u, self._pencil, self._recv, self.block, self._send, out)

    def chunks_q(self, points: int = CHUNK_POINTS) -> Iterator[tuple[int, slice]]:
        """Indices ``(ix, iy slice)`` that cover this rank's spectral points in pieces of
        whole z-rows, about ``points`` each (bounded temporaries)."""
        return row_chunks(self.spectral_block.shape, points)

    def m_chunk(self, index: tuple[int, slice]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """:attr:`m_q3` on one of :meth:`chunks_q` (broadcastable to its [rows, z] shape)."""
        ix, iy = index
        return self.m_q3[0][ix], self.m_q3[1][0, iy], self.m_q3[2][0, 0]

    def g_chunk(self, index: tuple[int, slice]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The Cartesian components of G on the spectral points of one of :meth:`chunks_q`
        (as :meth:`g_q`, value for value)."""
        mx, my, mz = self.m_chunk(index)
        b = self.reciprocal_cv
        return triple(mx * b[0, v] + my * b[1, v] + mz * b[2, v] for v in range(3))

    def weight_chunk(self, index: tuple[int, slice]) -> np.ndarray:
        """:attr:`weight_q` on one of :meth:`chunks_q` (broadcastable)."""
        mz = self.m_q3[2][0, 0]
        nz = self.grid.shape[2]
        return np.where((mz > 0) & (2 * mz != nz), 2.0, 1.0)

    # -- G space ----------------------------------------------------------------------
    @cached_property
    def m_q3(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Integer frequencies of the local spectral points, one broadcastable array per axis."""
        out: list[np.ndarray] = []
        for axis, (a, b) in enumerate(zip(self.spectral_block.start, self.spectral_block.stop)):
            n = self.grid.shape[axis]
            index = np.arange(a, b)
            m = index if axis == 2 else (index + n // 2) % n - n // 2
            shape = [1, 1, 1]
            shape[axis] = b - a
            out.append(m.reshape(shape))
        return triple(out)

    @cached_property
    def reciprocal_cv(self) -> np.ndarray:
        """Reciprocal lattice vectors (rows) b_i with a_i·b_j = 2π δ_ij."""
        return 2 * np.pi * np.linalg.inv(self.grid.cell_cv).T

    def g_q(self, v: int) -> np.ndarray:
        """Cartesian component v of the G vectors of the local spectral points."""
        mx, my, mz = self.m_q3
        b = self.reciprocal_cv
        return mx * b[0, v] + my * b[1, v] + mz * b[2, v]

    @cached_property
    def g2_q(self) -> np.ndarray:
        """|G|² of the local spectral points."""
        return self.g_q(0) ** 2 + self.g_q(1) ** 2 + self.g_q(2) ** 2

    @cached_property
    def weight_q(self) -> np.ndarray:
        """Multiplicity of each stored G in a sum over all G (2 for the ±G pairs)."""
        mz = self.m_q3[2]
        nz = self.grid.shape[2]
        weight = np.where((mz > 0) & (2 * mz != nz), 2.0, 1.0)
        return np.broadcast_to(weight, self.spectral_block.shape)

    def max_g2(self) -> float:
        """Largest |G|² of a sphere whose G all have |m_i| <= (n_i - 1)//2 (no Nyquist planes).

        A G = Σ m_i b_i has |m_i| = |G·a_i|/2π <= |G| |a_i|/2π, so the sphere may reach
        just below 2π((n_i - 1)//2 + 1)/|a_i| on every axis (as Quantum ESPRESSO's grids).
        """
        lengths = np.linalg.norm(self.grid.cell_cv, axis=1)
        m_max = (np.array(self.grid.shape) - 1) // 2
        return float(np.min(2 * np.pi * (m_max + 1) / lengths) ** 2) * (1 - 1e-9)

    def sum_q(self, x_q: np.ndarray) -> float:
        """Σ over all G of a field whose values at ±G are complex conjugates (all ranks)."""
        return self.comm.sum(float(np.sum(self.weight_q * np.real(x_q))))

    def integrate(self, f_b: np.ndarray) -> float:
        """∫ f dV = Σ_r f(r) ΔV over the whole grid (all ranks)."""
        return self.dgrid.integrate(f_b)

    # -- layout exchange --------------------------------------------------------------
    def _exchange(self, f: np.ndarray, f_block: Block, send: list[Block | None],
                  out_block: Block, recv: list[Block | None],
                  out: np.ndarray | None = None) -> np.ndarray:
        """Move a field from blocks ``f_block`` (this rank) to ``out_block`` (this rank),
        into ``out`` (default a new array). The part this rank keeps is copied directly;
        only the other ranks' parts go through the send and receive buffers."""
        f = np.asarray(f, dtype=np.float64)
        if out is None:
            out = np.empty(out_block.shape)
        me = self.comm.rank
        own = send[me]
        if own is not None:
            out[_local(own, out_block)] = f[_local(own, f_block)]
        if self.comm.size == 1:
            return out
        send_counts = np.array([0 if o is None or r == me else o.size
                                for r, o in enumerate(send)])
        recv_counts = np.array([0 if o is None or r == me else o.size
                                for r, o in enumerate(recv)])
        send_buf = np.empty(int(send_counts.sum()))
        offset = 0
        for r, o in enumerate(send):
            if o is not None and r != me:
                send_buf[offset:offset + o.size] = f[_local(o, f_block)].ravel()
                offset += o.size
        recv_buf = np.empty(int(recv_counts.sum()))
        self.comm.mpi.Alltoallv([send_buf, (send_counts, _displacements(send_counts)), MPI.DOUBLE],
                                [recv_buf, (recv_counts, _displacements(recv_counts)), MPI.DOUBLE])
        del send_buf
        offset = 0
        for r, o in enumerate(recv):
            if o is not None and r != me:
                out[_local(o, out_block)] = recv_buf[offset:offset + o.size].reshape(o.shape)
                offset += o.size
        return out


def _in_place(plan: Callable) -> Callable:
    """An mpi4py-fft plan function (``transforms``) that transforms its array in place."""
    def planned(u: np.ndarray, s: Any = None, axes: Any = (-1,), threads: int = 1,
                flags: Any = (fftw.FFTW_MEASURE,), output_array: Any = None) -> Any:
        return plan(u, s=s, axes=axes, threads=threads, flags=flags, output_array=u)
    return planned


_IN_PLACE = (_in_place(fftw.fftn), _in_place(fftw.ifftn))  # complex stages of PFFT


def row_chunks(shape: tuple[int, ...], points: int) -> Iterator[tuple[int, slice]]:
    """``(ix, iy slice)`` over an [nx, ny, nz] array: whole z-rows, ~``points`` a piece."""
    nx, ny, nz = shape
    rows = max(1, points // max(nz, 1))
    for ix in range(nx):
        for iy in range(0, ny, rows):
            yield ix, slice(iy, min(iy + rows, ny))


def _block_of(slices: Sequence[slice]) -> Block:
    return Block(triple(s.start for s in slices), triple(s.stop for s in slices))


def _overlap(a: Block, b: Block) -> Block | None:
    start = triple(max(x, y) for x, y in zip(a.start, b.start))
    stop = triple(min(x, y) for x, y in zip(a.stop, b.stop))
    return Block(start, stop) if all(s < e for s, e in zip(start, stop)) else None


def _local(part: Block, within: Block) -> tuple[slice, slice, slice]:
    return triple(slice(a - w, b - w) for a, b, w in zip(part.start, part.stop, within.start))


def _displacements(counts: np.ndarray) -> np.ndarray:
    return np.concatenate([[0], np.cumsum(counts)[:-1]])
