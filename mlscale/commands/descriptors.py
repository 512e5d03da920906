"""Compute bispectrum descriptors of a structure on a grid (MPI-parallel).

Writes one array ``[nx, ny, nz, features]`` (no coordinate columns) as .npy, or as
openPMD (.h5, mesh "Bispectrum"); every rank computes and writes its own block.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from ase import Atoms

from ..config import BispectrumSettings
from ..descriptors import compute_descriptors, to_host
from ..device import select_device
from ..grid import DistributedGrid, Grid
from ..io.grid_arrays import WRITABLE, grid_array_format, write_grid_array
from ..io.run_directory import probe_writable
from ..io.structure import read_structure
from ..parallel import Comm
from ._common import add_descriptor_backend, add_device


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("structure", help="any ASE-readable file (QE input/output too)")
    parser.add_argument("--grid", nargs=3, type=int, required=True, metavar=("NX", "NY", "NZ"))
    parser.add_argument("-o", "--output", required=True, help="output file (.npy or .h5)")
    defaults = BispectrumSettings()
    parser.add_argument("--species", nargs="+",
                        help="species in type order (default: those of the structure, sorted)")
    parser.add_argument("--radii", nargs="+", type=float, help="radius per species (default 0.5)")
    parser.add_argument("--weights", nargs="+", type=float, help="weight per species (default 1)")
    parser.add_argument("--twojmax", type=int, default=defaults.twojmax)
    parser.add_argument("--rcutfac", type=float, default=defaults.rcutfac)
    parser.add_argument("--rfac0", type=float, default=defaults.rfac0)
    add_descriptor_backend(parser)
    add_device(parser)


def settings_from_args(args: argparse.Namespace, atoms: Atoms) -> BispectrumSettings:
    species = args.species or sorted(set(atoms.get_chemical_symbols()))
    base = BispectrumSettings(twojmax=args.twojmax, rcutfac=args.rcutfac, rfac0=args.rfac0)
    return base.with_species(species, args.radii, args.weights)


def run(args: argparse.Namespace, comm: Comm) -> int:
    output = Path(args.output)
    device = select_device(args.device, comm, need_torch=False)
    with comm.collective():
        grid_array_format(output, WRITABLE)
        if comm.rank == 0:  # before the work, not after it
            probe_writable(output, "-o")
        atoms = read_structure(args.structure)
        settings = settings_from_args(args, atoms)
        dgrid = DistributedGrid(Grid(atoms.cell[:], tuple(args.grid)), comm)
    descriptors_bf = to_host(compute_descriptors(atoms, dgrid, settings, args.backend,
                                                 device=device.kind))
    write_grid_array(output, "Bispectrum", descriptors_bf, dgrid)
    comm.print(f"{settings.n_features} descriptors on a {dgrid.shape} grid written to {output}")
    return 0
