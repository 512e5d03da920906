"""openPMD (HDF5) grid data in MALA's layout, written and read block by block.

Layout (as in MALA's files): series attribute ``is_mala_data = 1``; one iteration
(``/data/<iteration>/``); a mesh per quantity (``LDOS``, ``Density``, ...) whose
record components ``"0" .. "n-1"`` are ``[nx, ny, nz]`` datasets, one per feature
or energy; a one-component quantity (the density) is written as a *scalar* mesh record
(the dataset is the mesh itself, as openPMD-viewer and ParaView expect; files with the
older component ``Density/0`` are still read). Values are stored in mlscale's (MALA's)
units; ``unitSI`` converts them to SI and ``unitDimension`` names the SI dimension.
Unlike MALA's files, the mesh also carries the grid spacing (Å, ``gridUnitSI = 1e-10``),
``position = 0`` (grid point i sits at i·spacing) and the cell vectors (``cell``, Å, row-major).

openPMD's cartesian geometry is an orthogonal box. For a cell whose vectors are not
orthogonal the mesh is the cell *sheared* into the box of the same volume: spacings
|a|/nx, h_b/ny, h_c/nz with h_b the height of b over a and h_c the height of c over the
(a, b) plane (the diagonal of R in cellᵀ = QR). Sums times the voxel volume (electron
counts) are right in any reader; positions are the true ones only for a diagonal cell
(``mlscale.io.vts`` writes the true geometry for ParaView). ``series_index`` writes the
one-line ``.pmd`` file ParaView's openPMD reader opens.

The installed openpmd-api has no MPI support, so ranks write in turn: rank 0
creates the file (under a temporary name) and declares every dataset, then each
rank opens it and stores its own chunk; rank 0 renames the file at the end.

openPMD/HDF5 report a failed write (a full disk) only as messages on stderr, and the
file then still opens. So rank 0 first checks the filesystem has room for the data,
every rank re-opens the file after storing its chunk and compares what it reads back
with what it wrote, and rank 0 checks the file's size and fsyncs it before the rename:
a failed write raises MlscaleError naming the file and leaves nothing under its name.
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import openpmd_api as opmd

from ..errors import MlscaleError
from ..grid import Block, DistributedGrid, Grid
from ..units import EV_JOULE
from .atomic import (
    check_free_space,
    commit,
    free_bytes,
    remove_quietly,
    temporary_path,
    write_error,
    write_text_atomic,
)
from .numpy_io import check_finite

ANGSTROM_SI = 1e-10
EV_SI = EV_JOULE  # 1 eV in joule
#: unit_si / unit_dimension for LDOS in 1/(eV·Å³) and density in 1/Å³ (MALA's values)
LDOS_UNITS = {"unit_si": 1.0 / (EV_SI * ANGSTROM_SI**3),
              "unit_dimension": {"L": -5, "M": -1, "T": 2}}
DENSITY_UNITS = {"unit_si": 1.0 / ANGSTROM_SI**3, "unit_dimension": {"L": -3}}


def _unit_dimension(dims: dict | None) -> dict:
    names = {"L": opmd.Unit_Dimension.L, "M": opmd.Unit_Dimension.M, "T": opmd.Unit_Dimension.T,
             "I": opmd.Unit_Dimension.I, "theta": opmd.Unit_Dimension.theta,
             "N": opmd.Unit_Dimension.N, "J": opmd.Unit_Dimension.J}
    unknown = set(dims or {}) - set(names)
    if unknown:
        raise MlscaleError(f"unknown unit dimension(s) {sorted(unknown)}, use {list(names)}")
    return {names[key]: float(value) for key, value in (dims or {}).items()}


@contextmanager
def _closing(series):
    """Close a series afterwards; a close error must not hide the original one."""
    try:
        yield series
    except BaseException:
        try:
            series.close()
        except Exception:  # noqa: BLE001
            pass
        raise
    series.close()


def _check_path(path) -> Path:
    path = Path(path)
    if "%" in path.name:
        raise MlscaleError(f"openPMD file name must not contain '%': {path}")
    if path.suffix != ".h5":
        raise MlscaleError(f"openPMD output must end in .h5 (HDF5), got {path}")
    return path


def box_spacing(grid: Grid) -> list[float]:
    """Grid spacing (Å) of the orthogonal box of the cell's volume: |a|/nx, h_b/ny, h_c/nz
    (h_b: height of b over a, h_c: height of c over the (a, b) plane); for orthogonal
    cell vectors the vectors' lengths over the point counts."""
    heights_c = np.abs(np.diag(np.linalg.qr(grid.cell_cv.T, mode="r")))
    return [float(h / n) for h, n in zip(heights_c, grid.shape)]


def component_names(n: int, scalar: bool) -> list[str]:
    """openPMD record component names: the scalar record, or ``"0" .. "n-1"``."""
    return [opmd.Mesh_Record_Component.SCALAR] if scalar else [str(c) for c in range(n)]


def _declare(path, mesh_name, names, dtype, grid: Grid, unit_si, unit_dimension, attributes,
             iteration):
    """Create the file with the mesh, its attributes and all (empty) datasets."""
    from .. import __version__

    with _closing(opmd.Series(str(path), opmd.Access.create)) as series:
        series.set_software("mlscale", __version__)
        series.set_attribute("is_mala_data", 1)
        mesh = series.iterations[iteration].meshes[mesh_name]
        mesh.geometry = opmd.Geometry.cartesian
        mesh.axis_labels = ["x", "y", "z"]
        mesh.data_order = "C"
        mesh.grid_spacing = box_spacing(grid)
        mesh.grid_global_offset = [0.0, 0.0, 0.0]
        mesh.grid_unit_SI = ANGSTROM_SI
        mesh.unit_dimension = unit_dimension
        mesh.set_attribute("cell", [float(x) for x in grid.cell_cv.ravel()])
        for key, value in (attributes or {}).items():
            mesh.set_attribute(str(key), value)
        for name in names:
            component = mesh[name]
            component.reset_dataset(opmd.Dataset(np.dtype(dtype), list(grid.shape)))
            component.unit_SI = float(unit_si)
            component.position = [0.0, 0.0, 0.0]
        series.flush()


def _store(path, mesh_name, names, local_bm: np.ndarray, block: Block, iteration):
    """Open the existing file and store this rank's chunk of every component."""
    with _closing(opmd.Series(str(path), opmd.Access.read_write)) as series:
        mesh = series.iterations[iteration].meshes[mesh_name]
        chunks = [np.ascontiguousarray(local_bm[..., c]) for c in range(local_bm.shape[3])]
        for name, chunk in zip(names, chunks):
            mesh[name].store_chunk(chunk, list(block.start), list(block.shape))
        series.flush()


def _verify(tmp, path, mesh_name, names, local_bm: np.ndarray, block: Block, iteration):
    """MlscaleError (naming ``path``) unless the file holds this rank's chunk exactly."""
    try:
        with _closing(opmd.Series(str(tmp), opmd.Access.read_only)) as series:
            mesh = series.iterations[iteration].meshes[mesh_name]
            chunks = [mesh[name].load_chunk(list(block.start), list(block.shape))
                      for name in names]
            series.flush()
        same = all(np.array_equal(chunk, local_bm[..., c], equal_nan=True)
                   for c, chunk in enumerate(chunks))
    except Exception as error:  # noqa: BLE001 - openPMD raises several types
        same, detail = False, f"{type(error).__name__}: {error}"
    else:
        detail = "the data read back differ from those written"
    if not same:
        raise MlscaleError(f"cannot write {path}: HDF5 failed to store block {block.start}.."
                           f"{block.stop} of mesh {mesh_name!r} ({detail}; "
                           f"{free_bytes(Path(path).parent) / 2**20:.1f} MiB free on the "
                           f"filesystem)")


def _finish(tmp, path, nbytes: int) -> None:
    """Check the size of the written file, fsync it and rename it to ``path``."""
    size = os.path.getsize(tmp)
    if size < nbytes:
        raise MlscaleError(f"cannot write {path}: the HDF5 file has {size} bytes, less "
                           f"than its {nbytes} bytes of data (disk full?)")
    commit(tmp, path)


def write_openpmd(path, mesh_name: str, local_array: np.ndarray, dgrid: DistributedGrid,
                  unit_si: float = 1.0, unit_dimension: dict | None = None,
                  attributes: dict | None = None, iteration: int = 0) -> None:
    """Write a distributed grid quantity to one openPMD HDF5 file (collective).

    local_array: this rank's ``[bx, by, bz]`` (a scalar record) or ``[bx, by, bz, n]``
    (components ``"0" .. "n-1"``) in mlscale units; unit_si: factor to SI;
    unit_dimension: SI exponents, e.g. ``{"L": -3}`` (see LDOS_UNITS, DENSITY_UNITS);
    attributes: extra mesh attributes (numbers, strings or lists of them).
    """
    local = np.asarray(local_array)
    grid, block, comm = dgrid.grid, dgrid.block, dgrid.comm
    with comm.collective():
        path = _check_path(path)
        if local.ndim not in (3, 4):
            raise MlscaleError(
                f"{mesh_name}: local array must be [bx, by, bz(, n)], got {local.shape}")
        grid.check_array(local, f"{mesh_name} local array", block)
        if local.dtype.kind != "f":
            raise MlscaleError(f"{mesh_name}: expected floating-point data, got {local.dtype}")
        dimension = _unit_dimension(unit_dimension)
    local_bm = local[..., None] if local.ndim == 3 else local
    mine = (local_bm.shape[3], local_bm.dtype.str, local.ndim)
    layout = comm.broadcast(mine)
    names = component_names(layout[0], scalar=layout[2] == 3)
    tmp = None
    with comm.collective():
        if mine != layout:
            raise MlscaleError(f"{mesh_name}: ranks disagree on components/dtype "
                               f"{mine[:2]} vs {layout[:2]}")
        if comm.rank == 0:
            tmp = str(temporary_path(path))
    tmp = comm.broadcast(tmp)
    nbytes = int(np.prod(grid.shape)) * layout[0] * np.dtype(layout[1]).itemsize
    try:
        with comm.collective(), _naming(path):
            if comm.rank == 0:
                check_free_space(path, nbytes)
                _declare(tmp, mesh_name, names, layout[1], grid, unit_si, dimension,
                         attributes, iteration)
        for turn in range(comm.size):  # serial openPMD: one rank at a time
            with comm.collective(), _naming(path):
                if comm.rank == turn:
                    _store(tmp, mesh_name, names, local_bm, block, iteration)
                    _verify(tmp, path, mesh_name, names, local_bm, block, iteration)
        with comm.collective(), _naming(path):
            if comm.rank == 0:
                _finish(tmp, path, nbytes)
    except BaseException:
        if comm.rank == 0:
            remove_quietly(tmp)
        raise


@contextmanager
def _naming(path):
    """Turn openPMD's and the system's errors into MlscaleErrors naming ``path``."""
    try:
        yield
    except MlscaleError:
        raise
    except OSError as error:
        raise write_error(path, error) from None
    except Exception as error:  # noqa: BLE001 - openPMD raises several types
        raise MlscaleError(f"cannot write {path}: {type(error).__name__}: {error}") from None


@contextmanager
def _reading(path, mesh_name: str, iteration: int | None):
    """Open a series read-only; yield (series, mesh, component names in order)."""
    path = Path(path)
    if not path.is_file():
        raise MlscaleError(f"file not found: {path}")
    try:
        series = opmd.Series(str(path), opmd.Access.read_only)
    except Exception as error:  # noqa: BLE001 - openPMD raises several types
        raise MlscaleError(f"cannot read openPMD file {path}: {error}") from None
    with _closing(series):
        yield (series,) + _find_mesh(series, path, mesh_name, iteration)


def _find_mesh(series, path, mesh_name, iteration):
    iterations = list(series.iterations)
    if not iterations:
        raise MlscaleError(f"{path} holds no openPMD iteration")
    if iteration is None:
        iteration = iterations[0]
    if iteration not in iterations:
        raise MlscaleError(f"{path} has no iteration {iteration} (has {iterations})")
    meshes = series.iterations[iteration].meshes
    if mesh_name not in meshes:
        raise MlscaleError(f"{path} has no mesh {mesh_name!r} (has {sorted(meshes)})")
    mesh = meshes[mesh_name]
    if mesh.scalar:
        names = [opmd.Mesh_Record_Component.SCALAR]
    else:
        names = sorted(mesh, key=lambda k: int(k) if k.isdigit() else -1)
        if names != [str(c) for c in range(len(names))]:
            raise MlscaleError(
                f"{path}: mesh {mesh_name!r} has components {names}, expected 0..n-1")
    shapes = {tuple(mesh[name].shape) for name in names}
    if len(shapes) != 1 or len(next(iter(shapes))) != 3:
        raise MlscaleError(
            f"{path}: mesh {mesh_name!r} components are not equal 3-D grids ({shapes})")
    return mesh, names


def openpmd_info(path, mesh_name: str, iteration: int | None = None) -> dict:
    """Shape, component count, units and attributes of a mesh, without reading data.

    Returns ``{"shape": (nx, ny, nz), "n_components", "dtype", "unit_si",
    "attributes": {...}}`` (attributes: the mesh's, openPMD's and custom ones).
    """
    with _reading(path, mesh_name, iteration) as (_, mesh, names):
        first = mesh[names[0]]
        return {
            "shape": tuple(int(n) for n in first.shape),
            "n_components": len(names),
            "dtype": np.dtype(first.dtype).str,
            "unit_si": float(first.unit_SI),
            "attributes": {key: mesh.get_attribute(key) for key in mesh.attributes},
        }


def read_openpmd(path, mesh_name: str, block: Block | None = None,
                 iteration: int | None = None) -> np.ndarray:
    """Read only ``block`` of a mesh as float64 ``[bx, by, bz, n]``; ``[bx, by, bz]`` if n == 1.

    iteration: None for the file's first iteration (MALA stores one per file).
    Values are returned as stored (mlscale units; unitSI is not applied).
    """
    with _reading(path, mesh_name, iteration) as (series, mesh, names):
        shape = tuple(mesh[names[0]].shape)
        if block is None:
            block = Block((0, 0, 0), shape)
        if any(b > n for b, n in zip(block.stop, shape)):
            raise MlscaleError(
                f"{path}: mesh {mesh_name!r} has grid shape {shape}, too small for block "
                f"{block.start}..{block.stop}"
            )
        try:
            chunks = [mesh[name].load_chunk(list(block.start), list(block.shape))
                      for name in names]
            series.flush()
        except Exception as error:  # noqa: BLE001 - openPMD/HDF5 errors on corrupt data
            raise MlscaleError(f"cannot read mesh {mesh_name!r} from {path}: {error}") from None
    data = check_finite(np.stack(chunks, axis=-1).astype(np.float64, copy=False),
                        f"{path}: mesh {mesh_name!r}")
    return data[..., 0] if len(names) == 1 else data


def check_recorded_cell(path, mesh_name: str, cell_cv: np.ndarray, source: str,
                        atol: float = 1e-4) -> None:
    """MlscaleError if the mesh records a ``cell`` (Å, as mlscale writes it) other than
    ``cell_cv`` (the cell of ``source``, e.g. a structure file); nothing if none recorded."""
    recorded = openpmd_info(path, mesh_name)["attributes"].get("cell")
    if recorded is None:
        return
    recorded_cv = np.reshape(np.asarray(recorded, dtype=float), (3, 3))
    if not np.allclose(recorded_cv, cell_cv, rtol=0, atol=atol):
        worst = float(np.abs(recorded_cv - np.asarray(cell_cv)).max())
        raise MlscaleError(f"the cell recorded in {path} differs from the cell of {source} "
                           f"by up to {worst:.4g} Å: the grid data belong to another structure")


def series_index(pmd_path, series_name: str) -> None:
    """Write ParaView's openPMD index: a one-line text file ``NAME.pmd`` holding the series
    name (here one file, e.g. ``density.h5``) relative to the index's directory. ParaView
    (5.9+, with openpmd-api in its Python) opens it with its openPMD reader."""
    pmd_path = Path(pmd_path)
    if pmd_path.suffix != ".pmd" or "/" in series_name:
        raise MlscaleError(f"openPMD index must be NAME.pmd beside the series, got "
                           f"{pmd_path} -> {series_name}")
    write_text_atomic(pmd_path, series_name + "\n")
