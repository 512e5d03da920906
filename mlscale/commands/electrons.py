"""DOS, Fermi level, band energy, −TS and electron count from an LDOS file (MPI-parallel).

Prints the same JSON keys as results.json; with --output also writes dos.csv and the
density (openPMD). Every rank reads only its block of the LDOS.
"""

from __future__ import annotations

from pathlib import Path

from ..config import EnergyGrid
from ..errors import MlscaleError
from ._common import add_integration, print_json, read_block_array


def add_arguments(parser):
    parser.add_argument("ldos", help="LDOS [nx,ny,nz,energies] in 1/(eV·Å³): .npy or openPMD .h5")
    parser.add_argument("--energy-grid", nargs=3, type=float, required=True,
                        metavar=("START", "STEP", "COUNT"), help="energies in eV")
    parser.add_argument("--temperature", type=float, required=True, help="electronic T in K")
    parser.add_argument("--electrons", type=float, required=True, help="number of electrons")
    parser.add_argument("--cell-from", required=True, metavar="STRUCTURE",
                        help="structure file giving the cell (any ASE-readable file)")
    parser.add_argument("-o", "--output", help="directory for dos.csv and density.h5")
    add_integration(parser)


def run(args, comm) -> int:
    from .. import electrons
    from ..grid import Decomposition, Grid
    from ..inference import write_outputs
    from ..io.numpy_io import check_finite
    from ..io.structure import read_structure

    start, step, count = args.energy_grid
    if count != int(count):
        raise MlscaleError(f"energy count must be an integer, got {count}")
    energy_grid = EnergyGrid(start, step, int(count))
    path = Path(args.ldos)
    with comm.collective():
        atoms = read_structure(args.cell_from)
        shape = _grid_shape_of(path)
        grid = Grid(atoms.cell[:], shape)
    block = Decomposition(grid.shape, comm.size).block(comm.rank)
    with comm.collective():
        ldos_ge = read_block_array(path, block, mesh="LDOS")
        if ldos_ge.ndim != 4 or ldos_ge.shape[3] != energy_grid.count:
            raise MlscaleError(
                f"{path} holds {ldos_ge.shape[-1] if ldos_ge.ndim == 4 else '?'} energies, "
                f"the energy grid has {energy_grid.count}")
        check_finite(ldos_ge, str(path))
    ldos_pe = ldos_ge.reshape(block.size, -1)
    energies_e = energy_grid.energies
    dos_e = comm.sum(electrons.dos_from_ldos(ldos_pe, grid.voxel_volume))
    with comm.collective():
        summary = electrons.electronic_structure(dos_e, energies_e, args.electrons,
                                                 args.temperature, args.integration)
    density_p = electrons.density(ldos_pe, energies_e, summary["fermi_energy_eV"],
                                  args.temperature, args.integration)
    summary["number_of_electrons_from_density"] = comm.sum(
        float(density_p.sum() * grid.voxel_volume))
    results = {**summary, "atoms": len(atoms), "grid": list(grid.shape), "ranks": comm.size,
               "temperature_K": args.temperature, "integration": args.integration}
    if args.output:
        out = Path(args.output)
        write_outputs(out, results, energies_e, dos_e, density_p.reshape(block.shape), grid,
                      block, comm)
        if comm.rank == 0:
            from ..io.atomic import write_json_atomic

            write_json_atomic(out / "results.json", results)
    print_json(comm, results)
    return 0


def _grid_shape_of(path: Path) -> tuple[int, int, int]:
    if path.suffix == ".npy":
        from ..io.numpy_io import npy_shape

        shape = npy_shape(path)
    else:
        from ..io.openpmd_io import openpmd_info

        shape = openpmd_info(path, "LDOS")["shape"]
    if len(shape) < 3:
        raise MlscaleError(f"{path} is not a grid array (shape {shape})")
    return tuple(shape[:3])
