"""DOS, Fermi level, band energy, −TS and electron count from an LDOS file (MPI-parallel).

Prints the same JSON keys as results.json; with --output also writes dos.csv and the
density (openPMD). Every rank reads only its block of the LDOS.
"""

from __future__ import annotations

import argparse
from dataclasses import asdict
from pathlib import Path

from ..config import EnergyGrid
from ..errors import MlscaleError
from ..grid import DistributedGrid, Grid, grid_shape
from ..inference import electrons_from_ldos
from ..io.grid_arrays import grid_array_format, grid_array_shape, read_grid_block
from ..io.numpy_io import check_finite
from ..io.openpmd_io import check_recorded_cell
from ..io.run_directory import claim_directory
from ..io.structure import read_structure
from ..output import write_fields, write_results
from ..parallel import Comm
from ._common import add_integration, print_json


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("ldos", help="LDOS [nx,ny,nz,energies] in 1/(eV·Å³): .npy or openPMD .h5")
    parser.add_argument("--energy-grid", nargs=3, type=float, required=True,
                        metavar=("START", "STEP", "COUNT"), help="energies in eV")
    parser.add_argument("--temperature", type=float, required=True, help="electronic T in K")
    parser.add_argument("--electrons", type=float, required=True, help="number of electrons")
    parser.add_argument("--cell-from", required=True, metavar="STRUCTURE",
                        help="structure file giving the cell (any ASE-readable file)")
    parser.add_argument("-o", "--output", help="directory for dos.csv and density.h5")
    add_integration(parser)


def run(args: argparse.Namespace, comm: Comm) -> int:
    start, step, count = args.energy_grid
    if count != int(count):
        raise MlscaleError(f"energy count must be an integer, got {count}")
    energy_grid = EnergyGrid(start, step, int(count))
    path = Path(args.ldos)
    with comm.collective():
        atoms = read_structure(args.cell_from)
        shape = grid_shape(grid_array_shape(path, "LDOS")[:3])
        dgrid = DistributedGrid(Grid(atoms.cell[:], shape), comm)
        if grid_array_format(path) == "openpmd":  # mlscale's files record the cell
            check_recorded_cell(path, "LDOS", dgrid.cell_cv, args.cell_from)
    claim = claim_directory(Path(args.output), comm) if args.output else None
    with comm.collective():
        ldos_be = read_grid_block(path, dgrid.block, mesh="LDOS")
        if ldos_be.ndim != 4 or ldos_be.shape[3] != energy_grid.count:
            raise MlscaleError(
                f"{path} holds {ldos_be.shape[-1] if ldos_be.ndim == 4 else '?'} energies, "
                f"the energy grid has {energy_grid.count}")
        check_finite(ldos_be, str(path))
    energies_e = energy_grid.energies
    scalars, dos_e, density_b = electrons_from_ldos(
        ldos_be.reshape(dgrid.local_points, -1), dgrid, energies_e, args.electrons,
        args.temperature, args.integration)
    results = {**asdict(scalars), "atoms": len(atoms), "grid": list(dgrid.shape),
               "ranks": comm.size, "temperature_K": args.temperature,
               "integration": args.integration}
    if claim is not None:
        write_fields(claim.path, energies_e, dos_e, density_b, dgrid,
                     fermi_energy_eV=scalars.fermi_energy_eV)
        write_results(claim.path, results, comm)
        claim.release()
    print_json(comm, results)
    return 0
