"""Energy terms of a density: Hartree, exchange-correlation, Ewald, double counting (JSON).

DENSITY_FILE: numpy ``.npy`` (electrons/Å³, [nx, ny, nz] or [nx, ny, nz, 1]), openPMD
``.h5``/``.bp`` (mesh ``--mesh``, electrons/Å³) or a QE pp.x cube (electrons/Bohr³).
The cell is the structure's; each rank reads only its block of the grid.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ..errors import MlscaleError
from ..grid import Block, Decomposition, Grid


def add_arguments(parser):
    parser.add_argument("density", metavar="DENSITY_FILE", help=".npy, openPMD (.h5/.bp) or .cube")
    parser.add_argument("--structure", required=True,
                        help="atoms and cell: any ASE-readable file (QE input/output, xyz, cif ...)")
    parser.add_argument("--pseudopotentials", required=True, metavar="DIR",
                        help="directory with one UPF file per element")
    parser.add_argument("--ecutrho", type=float, metavar="RY",
                        help="G-sphere cutoff |G|^2 <= ecutrho in Ry (QE's ecutrho); "
                             "default: the largest sphere the grid holds")
    parser.add_argument("--functional", help="LDA, PW, PBE or PBESOL (default: from the UPF files)")
    parser.add_argument("--mesh", default="Density", help="openPMD mesh name (default Density)")


def run(args, comm) -> int:
    from ..energy import density_energy_terms, find_pseudopotentials
    from ..units import BOHR_ANGSTROM
    from ..io import read_cube_block, read_npy_block, read_openpmd, read_structure

    path = Path(args.density)
    kind = _kind(path)
    with comm.collective():
        atoms = read_structure(args.structure)
        pseudopotentials = find_pseudopotentials(args.pseudopotentials,
                                                 atoms.get_chemical_symbols())
        shape = _grid_shape(path, kind, args.mesh)
    grid = Grid(atoms.cell.array, shape)
    block = Decomposition(shape, comm.size).block(comm.rank)
    with comm.collective():
        if kind == "npy":
            density_b = read_npy_block(path, block)
            if density_b.ndim == 4:
                if density_b.shape[3] != 1:
                    raise MlscaleError(f"{path} has {density_b.shape[3]} values per point, expected 1")
                density_b = density_b[..., 0]
        elif kind == "openpmd":
            density_b = read_openpmd(path, args.mesh, block)
            if density_b.ndim != 3:
                raise MlscaleError(f"{path}: mesh {args.mesh!r} has several components")
        else:
            density_b, meta = read_cube_block(path, block)
            cube_cell = meta["voxel_cv"] * np.array(shape)[:, None]
            if not np.allclose(cube_cell, grid.cell_cv, rtol=0, atol=1e-4):
                raise MlscaleError(f"the cell of {path} differs from the structure's cell")
            density_b = density_b / BOHR_ANGSTROM**3
    terms = density_energy_terms(density_b, grid, block, atoms, pseudopotentials, comm,
                                 ecutrho_Ry=args.ecutrho, functional=args.functional)
    comm.print(json.dumps({**terms, "density_file": str(path), "grid": list(shape),
                           "atoms": len(atoms), "ranks": comm.size}, indent=2))
    return 0


def _kind(path: Path) -> str:
    suffix = path.suffix.lower()
    if suffix == ".npy":
        return "npy"
    if suffix in (".h5", ".bp"):
        return "openpmd"
    if suffix == ".cube":
        return "cube"
    raise MlscaleError(f"unknown density file type {path.name} (expected .npy, .h5, .bp or .cube)")


def _grid_shape(path: Path, kind: str, mesh: str) -> tuple[int, int, int]:
    from ..io import openpmd_info, read_cube_block

    if kind == "npy":
        if not path.is_file():
            raise MlscaleError(f"file not found: {path}")
        try:
            shape = np.load(path, mmap_mode="r", allow_pickle=False).shape
        except (ValueError, OSError, EOFError) as error:
            raise MlscaleError(f"{path} is not a readable .npy array ({error})") from None
        if len(shape) not in (3, 4):
            raise MlscaleError(f"{path} has shape {shape}, expected a 3-D or 4-D grid array")
        return tuple(shape[:3])
    if kind == "openpmd":
        return tuple(openpmd_info(path, mesh)["shape"])
    return tuple(read_cube_block(path, Block((0, 0, 0), (1, 1, 1)))[1]["shape"])
