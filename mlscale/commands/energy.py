"""Energy terms of a density: Hartree, exchange-correlation, Ewald, double counting (JSON).

DENSITY_FILE: numpy ``.npy`` (electrons/Å³, [nx, ny, nz] or [nx, ny, nz, 1]), openPMD
``.h5``/``.bp`` (mesh ``--mesh``, electrons/Å³) or a QE pp.x cube (electrons/Bohr³).
The cell is the structure's; each rank reads only its block of the grid.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
from ase import Atoms

from ..energy import Pseudopotential, density_energy_terms, find_pseudopotentials, read_upf
from ..errors import MlscaleError
from ..grid import Block, DistributedGrid, Grid, grid_shape
from ..io.cube import read_cube_block
from ..io.grid_arrays import grid_array_format, grid_array_shape, read_grid_block
from ..io.openpmd_io import check_recorded_cell
from ..io.structure import read_structure
from ..parallel import Comm
from ..units import BOHR_ANGSTROM


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("density", metavar="DENSITY_FILE", help=".npy, openPMD (.h5/.bp) or .cube")
    parser.add_argument("--structure", required=True,
                        help="atoms and cell: any ASE-readable file "
                        "(QE input/output, xyz, cif ...)")
    parser.add_argument("--pseudopotentials", required=True, metavar="DIR",
                        help="directory with one UPF file per element")
    parser.add_argument("--ecutrho", type=float, metavar="RY",
                        help="G-sphere cutoff |G|^2 <= ecutrho in Ry (QE's ecutrho); "
                             "default: the largest sphere the grid holds")
    parser.add_argument("--functional", help="LDA, PW, PBE or PBESOL (default: from the UPF files)")
    parser.add_argument("--mesh", default="Density", help="openPMD mesh name (default Density)")


def run(args: argparse.Namespace, comm: Comm) -> int:
    path = Path(args.density)
    with comm.collective():
        grid_array_format(path, what="density")
        atoms = read_structure(args.structure)
        pseudopotentials = {symbol: read_upf(upf) for symbol, upf in find_pseudopotentials(
            args.pseudopotentials, atoms.get_chemical_symbols()).items()}  # parsed up front
        shape = grid_array_shape(path, args.mesh)
        if len(shape) > 4 or (len(shape) == 4 and shape[3] != 1):
            raise MlscaleError(f"{path} has shape {shape}, expected one value per grid point")
        dgrid = DistributedGrid(Grid(atoms.cell.array, grid_shape(shape[:3])), comm)
    with comm.collective():
        density_b = _read_density(path, dgrid, args.mesh)
    warning = _charge_warning(density_b, dgrid, atoms, pseudopotentials)
    if warning:
        comm.print(f"mlscale: warning: {warning}", file=sys.stderr)
    terms = density_energy_terms(density_b, dgrid, atoms, pseudopotentials,
                                 ecutrho_Ry=args.ecutrho, functional=args.functional)
    comm.print(json.dumps({**terms, "density_file": str(path), "grid": list(dgrid.shape),
                           "atoms": len(atoms), "ranks": comm.size}, indent=2))
    return 0


def _charge_warning(density_b: np.ndarray, dgrid: DistributedGrid, atoms: Atoms,
                    pseudopotentials: dict[str, Pseudopotential]) -> str | None:
    """A warning when ∫ n dV differs by more than 1 % from the structure's valence
    electrons (Σ z_valence): a density of another structure, or a charged cell.
    Collective."""
    electrons = dgrid.integrate(density_b)
    valence = sum(pseudopotentials[s].z_valence for s in atoms.get_chemical_symbols())
    if abs(electrons - valence) <= 0.01 * valence:
        return None
    return (f"the density holds {electrons:.4f} electrons, the structure's atoms {valence:g} "
            f"valence electrons (Σ z_valence of their UPFs): a density of another "
            f"structure, or a charged cell?")


def _read_density(path: Path, dgrid: DistributedGrid, mesh: str) -> np.ndarray:
    """The rank's block of the density in electrons/Å³ (a cube's 1/Bohr³ converted)."""
    density_b = read_grid_block(path, dgrid.block, mesh)
    if density_b.ndim == 4:
        density_b = density_b[..., 0]
    if grid_array_format(path) == "cube":
        meta = read_cube_block(path, Block((0, 0, 0), (1, 1, 1)))[1]
        cube_cell = meta["voxel_cv"] * np.array(dgrid.shape)[:, None]
        if not np.allclose(cube_cell, dgrid.cell_cv, rtol=0, atol=1e-4):
            raise MlscaleError(f"the cell of {path} differs from the structure's cell")
        density_b = density_b / BOHR_ANGSTROM**3
    elif grid_array_format(path) == "openpmd":
        check_recorded_cell(path, mesh, dgrid.cell_cv, "the structure")
    return density_b
