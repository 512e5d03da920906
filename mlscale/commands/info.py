"""Show versions, MPI layout and which optional tools (LAMMPS, QE, Horovod) are usable."""

from __future__ import annotations

import importlib
import shutil


def add_arguments(parser):
    pass


def _version(module: str) -> str:
    try:
        return getattr(importlib.import_module(module), "__version__", "installed")
    except Exception as error:  # noqa: BLE001 - report, don't fail
        return f"not usable ({type(error).__name__})"


def run(args, comm) -> int:
    from mpi4py import MPI

    from .. import __version__

    lines = [
        f"mlscale       {__version__}",
        f"MPI           {MPI.Get_library_version().splitlines()[0].strip()}, {comm.size} rank(s)",
    ]
    for module in ("numpy", "torch", "lammps", "numba", "openpmd_api", "h5py", "ase",
                   "pyscf", "mpi4py_fft", "horovod.torch"):
        lines.append(f"{module:<13} {_version(module)}")
    for exe in ("pw.x", "pp.x"):
        lines.append(f"{exe:<13} {shutil.which(exe) or 'not found'}")
    comm.print("\n".join(lines))
    return 0
