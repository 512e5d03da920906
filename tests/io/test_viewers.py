"""The density files of a prediction read by independent readers: openPMD-viewer (as its
users integrate a field) and VTK (ParaView's reader and its *Integrate Variables*).

The density is an analytic sum of normalised periodic Gaussians, so its integral is the
electron count exactly and its value at any Cartesian point is known: the readers must
give the count for an orthorhombic and a triclinic (60°) cell, and the VTK points must
carry the density of the place they name."""

from pathlib import Path

import numpy as np
import pytest

from mlscale.grid import DistributedGrid, Grid
from mlscale.output import write_fields
from mlscale.parallel import world

CELLS = {
    "orthorhombic": np.diag([4.0, 3.6, 4.4]),
    "triclinic": np.array([[4.0, 0.0, 0.0], [2.0, 2.0 * np.sqrt(3.0), 0.0], [1.0, 0.8, 4.2]]),
}
FRAC_AC = np.array([[0.1, 0.2, 0.3], [0.6, 0.5, 0.1], [0.3, 0.8, 0.7]])
CHARGE_A = np.array([3.0, 3.0, 2.0])  # 8 electrons
SIGMA_A = 0.45  # Gaussian width, Å


def gaussian_density(points_gv: np.ndarray, cell_cv: np.ndarray) -> np.ndarray:
    """Σ_atoms Σ_images q (2πσ²)^(-3/2) exp(-|r - R|²/2σ²) (1/Å³) at the points (Å)."""
    shifts = np.array(np.meshgrid(*[np.arange(-2, 3)] * 3, indexing="ij")).reshape(3, -1).T
    density_g = np.zeros(len(points_gv))
    for frac_c, charge in zip(FRAC_AC, CHARGE_A):
        centres_sv = (frac_c + shifts) @ cell_cv
        d2_gs = ((points_gv[:, None, :] - centres_sv[None]) ** 2).sum(-1)
        density_g += charge * np.exp(-d2_gs / (2 * SIGMA_A**2)).sum(1)
    return density_g / (2 * np.pi * SIGMA_A**2) ** 1.5


def write_prediction(directory: Path, cell_cv: np.ndarray) -> np.ndarray:
    """write_fields of the Gaussian density on a 20×20×21 grid; returns the full grid."""
    grid = Grid(cell_cv, (20, 20, 21))
    frac_gc = np.stack(np.meshgrid(*[np.arange(n) / n for n in grid.shape], indexing="ij"), -1)
    density_g = gaussian_density(frac_gc.reshape(-1, 3) @ cell_cv, cell_cv).reshape(grid.shape)
    dgrid = DistributedGrid(grid, world())
    write_fields(directory, np.arange(3.0), np.ones(3), density_g[dgrid.block.slices], dgrid)
    world().barrier()
    return density_g


@pytest.fixture
def shared_tmp(tmp_path):
    return Path(world().broadcast(str(tmp_path)))


@pytest.mark.parametrize("kind", sorted(CELLS))
def test_openpmd_viewer_integrates_to_electron_count(shared_tmp, kind):
    from openpmd_viewer import OpenPMDTimeSeries

    density_g = write_prediction(shared_tmp, CELLS[kind])
    for backend in ("openpmd-api", "h5py"):
        series = OpenPMDTimeSeries(str(shared_tmp), backend=backend, check_all_files=False)
        assert series.avail_fields == ["Density"]
        field_g, info = series.get_field("Density", iteration=0)  # SI: 1/m³, m
        assert field_g.shape == density_g.shape
        np.testing.assert_allclose(field_g, density_g * 1e30, rtol=1e-14)
        assert field_g.sum() * info.dx * info.dy * info.dz == pytest.approx(CHARGE_A.sum(),
                                                                             rel=1e-9)
    # ParaView's openPMD reader: the .pmd's first line without its last character, after
    # the .pmd's directory and "/", opened with openpmd-api; a scalar mesh is one array
    import openpmd_api as opmd

    pmd = str(shared_tmp / "density.pmd")
    with open(pmd) as handle:
        pattern = handle.readlines()[0][0:-1]
    series = opmd.Series(f"{Path(pmd).parent}/{pattern}", opmd.Access.read_only)
    mesh = series.iterations[0].meshes["Density"]
    assert mesh.scalar and len(mesh) == 1 and list(mesh.grid_spacing) == pytest.approx(
        [info.dx * 1e10, info.dy * 1e10, info.dz * 1e10])
    series.close()
    assert (shared_tmp / "density.vts").exists() == (kind == "triclinic")
    world().barrier()


def read_vts(path: Path):
    """(points_gv, density_g, integral, volume) of a .vts, through VTK as ParaView does."""
    from vtkmodules.util.numpy_support import vtk_to_numpy
    from vtkmodules.vtkFiltersParallel import vtkIntegrateAttributes
    from vtkmodules.vtkIOXML import vtkXMLStructuredGridReader

    reader = vtkXMLStructuredGridReader()
    reader.SetFileName(str(path))
    reader.Update()
    grid = reader.GetOutput()
    integrate = vtkIntegrateAttributes()
    integrate.SetInputData(grid)
    integrate.Update()
    sums = integrate.GetOutput()
    return (vtk_to_numpy(grid.GetPoints().GetData()),
            vtk_to_numpy(grid.GetPointData().GetArray("Density")),
            float(vtk_to_numpy(sums.GetPointData().GetArray("Density"))[0]),
            float(vtk_to_numpy(sums.GetCellData().GetArray("Volume"))[0]))


def test_vts_places_triclinic_density_and_integrates_to_electron_count(shared_tmp):
    cell_cv = CELLS["triclinic"]
    write_prediction(shared_tmp, cell_cv)
    points_gv, values_g, integral, volume = read_vts(shared_tmp / "density.vts")
    assert len(points_gv) == 21 * 21 * 22
    assert volume == pytest.approx(abs(np.linalg.det(cell_cv)), rel=1e-12)
    assert integral == pytest.approx(CHARGE_A.sum(), rel=1e-9)
    # every point carries the density of the place it names
    np.testing.assert_allclose(values_g, gaussian_density(points_gv, cell_cv), rtol=1e-10,
                               atol=1e-12)
    corners_v = points_gv[[0, -1]]
    np.testing.assert_allclose(corners_v, [np.zeros(3), cell_cv.sum(0)], atol=1e-12)
    world().barrier()
