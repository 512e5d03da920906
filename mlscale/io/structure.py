"""Atomic structures from any ASE-readable file (QE input/output, xyz, cif, POSCAR, ...).

mlscale works on periodic cells: a structure must have a cell of non-zero volume,
and it is treated as periodic along all three axes. ASE's MPI mode is switched off
(``parallel=False``): every rank that calls these functions reads/writes by itself.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from ase import Atoms

from ..errors import MlscaleError
from .atomic import atomic_path


def read_structure(path, format: str | None = None) -> Atoms:  # noqa: A002 - ASE's name
    """Read the (last) structure in ``path``; ``format`` as in ``ase.io.read`` (None: guess).

    Returns Atoms with ``pbc = True`` and no calculator. Raises MlscaleError for
    missing or unreadable files and for structures without a cell.
    """
    import ase.io

    path = Path(path)
    if path.is_dir():
        raise MlscaleError(f"{path} is a directory, not a structure file")
    if not path.is_file():
        raise MlscaleError(f"file not found: {path}")
    try:
        atoms = ase.io.read(path, format=format, index=-1, parallel=False)
    except Exception as error:  # noqa: BLE001 - ASE raises many types for bad files
        raise MlscaleError(
            f"cannot read a structure from {path} ({type(error).__name__}: {error})") from None
    if not isinstance(atoms, Atoms) or len(atoms) == 0:
        raise MlscaleError(f"{path} holds no atoms")
    if not (np.isfinite(atoms.cell.array).all() and np.isfinite(atoms.positions).all()):
        raise MlscaleError(f"{path} has non-finite cell vectors or positions")
    if atoms.cell.rank < 3 or abs(atoms.cell.volume) < 1e-10:
        raise MlscaleError(f"{path} has no (3-D) cell; mlscale needs a periodic cell")
    atoms.pbc = True
    atoms.calc = None  # drop results stored by the file (e.g. QE energies)
    return atoms


def write_structure(path, atoms: Atoms, format: str | None = None) -> None:  # noqa: A002
    """Write ``atoms`` with ``ase.io.write`` (format from the name if None), atomically."""
    import ase.io

    with atomic_path(path) as tmp:
        try:
            ase.io.write(tmp, atoms, format=format or _format_of(path), parallel=False)
        except Exception as error:  # noqa: BLE001
            raise MlscaleError(f"cannot write {path} ({type(error).__name__}: {error})") from None


def _format_of(path) -> str:
    """ASE's format for ``path``'s name (the temporary name would hide e.g. POSCAR)."""
    from ase.io.formats import filetype

    return filetype(Path(path).name, read=False)
