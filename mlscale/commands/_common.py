"""Argument helpers shared by sub-commands."""

from __future__ import annotations

import json
from pathlib import Path

from ..errors import MlscaleError


def add_descriptor_backend(parser):
    parser.add_argument("--descriptors", dest="backend", choices=("lammps", "native"),
                        default="native", help="descriptor backend: native (numba kernel, "
                        "matched to LAMMPS) or lammps (reference); default: %(default)s")


def add_integration(parser):
    parser.add_argument("--integration", choices=("analytical", "quadrature"),
                        default="analytical",
                        help="Fermi-Dirac integration over energy (default: %(default)s)")


def read_block_array(path: Path, block, *, mesh: str, n_last: int | None = None):
    """This rank's block of a grid array from .npy or openPMD (.h5/.bp) by extension."""
    path = Path(path)
    if not path.exists():
        raise MlscaleError(f"file not found: {path}")
    if path.suffix == ".npy":
        from ..io.numpy_io import read_npy_block

        array = read_npy_block(path, block)
    elif path.suffix in (".h5", ".bp", ".json"):
        from ..io.openpmd_io import read_openpmd

        array = read_openpmd(path, mesh, block)
    else:
        raise MlscaleError(f"unknown array file type '{path.suffix}' for {path} (use .npy or .h5)")
    return array


def print_json(comm, data: dict):
    comm.print(json.dumps(data, indent=2, sort_keys=True))
