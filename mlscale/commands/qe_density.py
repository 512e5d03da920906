"""Write a density as pw.x's starting density (``startingpot = 'file'``).

DENSITY: a prediction directory (its density.h5 or density.cube) or a density file
(.npy or openPMD .h5/.bp in electrons/Å³, a pp.x cube in electrons/Bohr³) on the pw.x
input's FFT grid. Writes OUTDIR/PREFIX.save/charge-density.dat (ρ(G) in pw.x's own G
order, QE 6.x Fortran unformatted; no XML is needed) with PREFIX and OUTDIR from the
pw.x input (OUTDIR relative to the input's directory; --outdir overrides). Every rank
reads its block; rank 0 gathers the whole grid for this one file (pw.x reads a single
global file anyway). Then run pw.x on the input with ``startingpot = 'file'`` in
&ELECTRONS: docs/qe_density.md.
"""

from __future__ import annotations

import argparse
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from ase import Atoms

from ..errors import MlscaleError
from ..grid import DistributedGrid, Grid, grid_shape, qe_fft_shape
from ..io.cube_writer import gather_full_grid
from ..io.grid_arrays import grid_array_format, grid_array_shape
from ..io.qe_charge_density import (
    ChargeDensityG,
    qe_miller_indices,
    reciprocal_vectors_bohr,
    rho_g_from_density,
    write_charge_density,
)
from ..io.structure import read_structure
from ..parallel import Comm
from ..units import BOHR_ANGSTROM
from ._common import print_json
from .energy import _read_density

PREDICTION_FILES = ("density.h5", "density.cube")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("density", metavar="DENSITY",
                        help="prediction directory, or .npy/.h5/.bp/.cube density file")
    parser.add_argument("--pw-input", required=True, metavar="FILE",
                        help="the pw.x input (cell, ecutwfc/ecutrho, nr1-3, prefix, outdir, "
                             "K_POINTS)")
    parser.add_argument("--outdir", metavar="DIR",
                        help="pw.x's outdir (default: the input's outdir, relative to the "
                             "input's directory; QE's default $ESPRESSO_TMPDIR or ./)")
    parser.add_argument("--mesh", default="Density", help="openPMD mesh name")


@dataclass(frozen=True)
class PwRun:
    """What the charge-density file depends on in a pw.x input.

    atoms: cell and atoms (Å); shape: the dense FFT grid; ecutrho_Ry: the density cutoff
    (Ry); alat_bohr: QE's lattice parameter (Bohr); save_dir: OUTDIR/PREFIX.save."""

    atoms: Atoms
    shape: tuple[int, int, int]
    ecutrho_Ry: float
    alat_bohr: float
    gamma_only: bool
    save_dir: Path
    startingpot: str


def read_pw_input(path: Path, outdir: str | None = None) -> PwRun:
    """The settings of a pw.x input that fix the charge-density file; MlscaleError for
    an unreadable input or a spin-polarised or non-collinear run (only nspin = 1)."""
    from ase.io.espresso import read_fortran_namelist

    atoms = read_structure(path, format="espresso-in")
    try:
        with open(path) as f:
            namelists, cards = read_fortran_namelist(f)
    except (OSError, ValueError, IndexError) as error:
        raise MlscaleError(f"cannot read the namelists of {path}: {error}") from None
    system = namelists.get("system", {})
    control = namelists.get("control", {})
    if int(system.get("nspin", 1)) != 1 or system.get("noncolin", False):
        raise MlscaleError(f"{path}: only nspin = 1 runs are supported (one density)")
    if "ecutwfc" not in system:
        raise MlscaleError(f"{path}: no ecutwfc in &SYSTEM")
    ecutrho = float(system.get("ecutrho", 4.0 * float(system["ecutwfc"])))
    shape = qe_fft_shape(atoms.cell.array, ecutrho)
    shape = grid_shape([system.get(f"nr{i}", n) for i, n in zip((1, 2, 3), shape)])
    gamma_only = any(c.upper().startswith("K_POINTS") and "GAMMA" in c.upper() for c in cards)
    default_outdir = os.environ.get("ESPRESSO_TMPDIR", "./")
    save_dir = (path.parent / (outdir or str(control.get("outdir", default_outdir)))
                / f"{control.get('prefix', 'pwscf')}.save")
    startingpot = str(namelists.get("electrons", {}).get("startingpot", "atomic"))
    return PwRun(atoms, shape, ecutrho, _alat_bohr(system, atoms), gamma_only, save_dir,
                 startingpot)


def _alat_bohr(system: dict, atoms: Atoms) -> float:
    """QE's alat: celldm(1) (Bohr) or A (Å) if given, else |a1| (ibrav = 0)."""
    celldm = system.get("celldm")
    if isinstance(celldm, dict) and celldm.get(1):
        return float(celldm[1])
    if system.get("a"):
        return float(system["a"]) / BOHR_ANGSTROM
    return float(np.linalg.norm(atoms.cell.array[0]) / BOHR_ANGSTROM)


def density_path(path: Path) -> Path:
    """The density file of a prediction directory, or ``path`` itself."""
    if not path.is_dir():
        return path
    for name in PREDICTION_FILES:
        if (path / name).is_file():
            return path / name
    raise MlscaleError(f"{path} holds no {' or '.join(PREDICTION_FILES)} (a prediction "
                       f"written with --only-rank has no whole density)")


def run(args: argparse.Namespace, comm: Comm) -> int:
    with comm.collective():
        pw = read_pw_input(Path(args.pw_input), args.outdir)
        path = density_path(Path(args.density))
        grid_array_format(path, what="density")
        shape = grid_array_shape(path, args.mesh)
        if len(shape) > 4 or (len(shape) == 4 and shape[3] != 1):
            raise MlscaleError(f"{path} has shape {shape}, expected one value per grid point")
        if tuple(shape[:3]) != pw.shape:
            raise MlscaleError(
                f"the density's grid {tuple(shape[:3])} is not the FFT grid {pw.shape} of "
                f"{args.pw_input} (ecutrho {pw.ecutrho_Ry:g} Ry): predict on that grid "
                f"(mlscale predict --grid {' '.join(map(str, pw.shape))}) or set nr1, nr2, "
                f"nr3 in the input")
        dgrid = DistributedGrid(Grid(pw.atoms.cell.array, pw.shape), comm)
        density_b = _read_density(path, dgrid, args.mesh)
    electrons = dgrid.integrate(density_b)
    minimum = comm.min(float(density_b.min()) if density_b.size else np.inf)
    full_g = gather_full_grid(density_b, dgrid)  # the whole grid, rank 0 only
    target = pw.save_dir / "charge-density.dat"
    ngm = 0
    with comm.collective():
        if full_g is not None:
            ngm = _write(target, full_g, pw)
    print_json(comm, {
        "charge_density": str(target), "density_file": str(path), "grid": list(pw.shape),
        "ecutrho_Ry": pw.ecutrho_Ry, "g_vectors": comm.broadcast(ngm),
        "gamma_only": pw.gamma_only, "electrons_in_density": electrons,
        "density_min_per_A3": minimum, "ranks": comm.size,
        "next": ("pw.x with startingpot = 'file' in &ELECTRONS" if pw.startingpot != "file"
                 else "pw.x (the input has startingpot = 'file')"),
    })
    return 0


def _write(target: Path, density_g: np.ndarray, pw: PwRun) -> int:
    """charge-density.dat of ``density_g`` (electrons/Å³) for the run ``pw``; its G count."""
    mill_qc = qe_miller_indices(pw.atoms.cell.array, pw.shape, pw.ecutrho_Ry,
                                gamma_only=pw.gamma_only, alat_bohr=pw.alat_bohr)
    rho_q = rho_g_from_density(density_g, mill_qc)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise MlscaleError(f"cannot create {target.parent}: {error}") from None
    write_charge_density(target, ChargeDensityG(
        pw.gamma_only, reciprocal_vectors_bohr(pw.atoms.cell.array), mill_qc, rho_q[None]))
    return len(mill_qc)
