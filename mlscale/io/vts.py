"""A distributed scalar grid quantity as a VTK XML structured grid (``.vts``), for ParaView.

openPMD's cartesian mesh is an orthogonal box; a structured grid carries every point's
true Cartesian position, so a non-orthogonal (triclinic) cell is shown in its real place
and shape. Representation: (nx+1)·(ny+1)·(nz+1) points r = (i/nx) a + (j/ny) b + (k/nz) c
(Å), i = 0..nx etc., with the point data ``name`` at grid point (i mod nx, j mod ny,
k mod nz): the periodic image closes the cell, so the hexahedral cells tile it exactly and
the integral of the trilinear interpolant (ParaView's *Integrate Variables*) equals
Σ n ΔV over the grid, the electron count for the density.

File: XML header, then ``<AppendedData encoding="raw">`` with the values (Float64, x
fastest) and the points (Float64 × 3), each preceded by its byte count (UInt64, little
endian). Every array element has a fixed offset, so each rank writes its own points into
the file (memory-mapped, in turn): nothing is gathered. Rank 0 creates the file under a
temporary name and renames it when all ranks are done (``atomic.commit``).
"""

from __future__ import annotations

from contextlib import contextmanager

import numpy as np

from ..errors import MlscaleError
from ..grid import DistributedGrid
from .atomic import check_free_space, commit, remove_quietly, temporary_path, write_error

_HEADER = """<?xml version="1.0"?>
<VTKFile type="StructuredGrid" version="1.0" byte_order="LittleEndian" header_type="UInt64">
  <StructuredGrid WholeExtent="{extent}">
    <FieldData>
      <DataArray type="Float64" Name="cell_A" NumberOfTuples="9" format="ascii">{cell}</DataArray>
    </FieldData>
    <Piece Extent="{extent}">
      <PointData Scalars="{name}">
        <DataArray type="Float64" Name="{name}" NumberOfComponents="1"
                   format="appended" offset="0"/>
      </PointData>
      <Points>
        <DataArray type="Float64" Name="Points" NumberOfComponents="3"
                   format="appended" offset="{offset}"/>
      </Points>
    </Piece>
  </StructuredGrid>
  <AppendedData encoding="raw">
   _"""
_FOOTER = b"\n  </AppendedData>\n</VTKFile>\n"


def _layout(dgrid: DistributedGrid, name: str) -> tuple[bytes, int]:
    """The XML header and the number of points (with the periodic images)."""
    nx, ny, nz = dgrid.grid.shape
    n_points = (nx + 1) * (ny + 1) * (nz + 1)
    header = _HEADER.format(extent=f"0 {nx} 0 {ny} 0 {nz}", name=name,
                            offset=8 + 8 * n_points,
                            cell=" ".join(f"{x:.17g}" for x in dgrid.grid.cell_cv.ravel()))
    return header.encode("ascii"), n_points


def _create(tmp, header: bytes, n_points: int) -> None:
    """The file with its header, both byte counts and the footer; data still zero."""
    values_bytes, points_bytes = 8 * n_points, 24 * n_points
    with open(tmp, "wb") as f:
        f.write(header)
        f.write(np.uint64(values_bytes).tobytes())
        f.seek(values_bytes, 1)
        f.write(np.uint64(points_bytes).tobytes())
        f.seek(points_bytes, 1)
        f.write(_FOOTER)


def _image_indices(start: int, stop: int, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Output point indices along one axis for the block [start, stop), and the block's
    local indices they take their values from (index n is the image of index 0)."""
    out = np.arange(start, stop)
    if start == 0:
        out = np.append(out, n)
    return out, out % n - start


def _store(tmp, header: bytes, n_points: int, local_b: np.ndarray,
           dgrid: DistributedGrid) -> None:
    """Write this rank's values and point coordinates into the file (memory-mapped)."""
    grid, block = dgrid.grid, dgrid.block
    shape_zyx = tuple(n + 1 for n in reversed(grid.shape))
    (ox, lx), (oy, ly), (oz, lz) = (_image_indices(s, e, n) for s, e, n in
                                    zip(block.start, block.stop, grid.shape))
    values = np.memmap(tmp, dtype="<f8", mode="r+", offset=len(header) + 8, shape=shape_zyx)
    values[np.ix_(oz, oy, ox)] = np.transpose(local_b[np.ix_(lx, ly, lz)], (2, 1, 0))
    values.flush()
    del values
    points = np.memmap(tmp, dtype="<f8", mode="r+", offset=len(header) + 16 + 8 * n_points,
                       shape=shape_zyx + (3,))
    frac = [o / n for o, n in zip((ox, oy, oz), grid.shape)]
    cell_cv = grid.cell_cv
    for kz, fz in zip(oz, frac[2]):  # one plane at a time: bounded memory
        plane_yxv = (frac[1][:, None, None] * cell_cv[1] + frac[0][None, :, None] * cell_cv[0]
                     + fz * cell_cv[2])
        points[np.ix_([kz], oy, ox)] = plane_yxv[None]
    points.flush()
    del points


@contextmanager
def _naming(path):
    """A system error (full disk) as the MlscaleError naming ``path``."""
    try:
        yield
    except OSError as error:
        raise write_error(path, error) from None


def write_vts(path, name: str, local_b: np.ndarray, dgrid: DistributedGrid) -> None:
    """Write a distributed scalar grid quantity (this rank's ``[bx, by, bz]`` block, any
    units) to the structured grid ``path`` (``.vts``) with true point positions in Å.
    Collective over ``dgrid.comm``; the file appears complete or not at all."""
    comm = dgrid.comm
    local_b = np.asarray(local_b, dtype=np.float64)
    with comm.collective():
        if not str(path).endswith(".vts"):
            raise MlscaleError(f"VTK structured grid output must end in .vts, got {path}")
        dgrid.grid.check_array(local_b, f"{name} local array", dgrid.block)
    header, n_points = _layout(dgrid, name)
    tmp = None
    try:
        with comm.collective(), _naming(path):
            if comm.rank == 0:
                tmp = str(temporary_path(path))
                check_free_space(path, 32 * n_points + len(header))
                _create(tmp, header, n_points)
        tmp = comm.broadcast(tmp)
        for turn in range(comm.size):
            with comm.collective(), _naming(path):
                if comm.rank == turn:
                    _store(tmp, header, n_points, local_b, dgrid)
        with comm.collective():
            if comm.rank == 0:
                commit(tmp, path)
    except BaseException:
        if comm.rank == 0 and tmp is not None:
            remove_quietly(tmp)
        raise
