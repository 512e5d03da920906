"""Quantum ESPRESSO 6.7 input files (pw.x SCF, pp.x LDOS and density), written by hand.

ASE's espresso writer is not used: it adds namelists (&FCP, &RISM) that QE 6.7 rejects.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from ase.data import atomic_masses, atomic_numbers

from ..errors import MlscaleError
from .settings import DFTSettings, LdosSettings

PREFIX = "snapshot"
OUTDIR = "qe_tmp"  # relative to the run directory
DENSITY_CUBE = "density.cube"
LDOS_FILPLOT = "tmp.pp"
LDOS_FILEOUT = f"{PREFIX}_ldos.cube"  # pp.x names the cubes tmp.ppNN<fileout>
LDOS_NPY = "ldos.npy"  # the one-pass LDOS from the wavefunctions [nx, ny, nz, energy]


def pseudo_paths(symbols, settings: DFTSettings) -> dict[str, Path]:
    """Path of the pseudopotential of every species in ``symbols``; MlscaleError if missing."""
    paths = {}
    for symbol in sorted(set(symbols)):
        name = settings.pseudopotentials.get(symbol)
        if name is None:
            raise MlscaleError(f"no pseudopotential given for species {symbol!r}")
        path = Path(settings.pseudo_dir) / name
        if not path.is_file():
            raise MlscaleError(f"pseudopotential not found: {path}")
        paths[symbol] = path
    return paths


def pw_input(atoms, settings: DFTSettings) -> str:
    """pw.x SCF input (text) for an ASE Atoms object; positions and cell in Å."""
    paths = pseudo_paths(atoms.get_chemical_symbols(), settings)
    species = sorted(paths)
    system = [
        "ibrav = 0", f"nat = {len(atoms)}", f"ntyp = {len(species)}",
        f"ecutwfc = {settings.ecutwfc!r}", f"ecutrho = {settings.ecutrho_ry!r}",
        "occupations = 'smearing'", "smearing = 'fermi-dirac'",
        f"degauss = {settings.degauss:.10e}",
    ]
    if settings.nbnd is not None:
        system.append(f"nbnd = {int(settings.nbnd)}")
    lines = [
        _namelist("CONTROL", [
            "calculation = 'scf'", f"prefix = '{PREFIX}'", f"outdir = './{OUTDIR}'",
            f"pseudo_dir = '{Path(settings.pseudo_dir).resolve()}'",
            "tprnfor = .true.", "verbosity = 'high'",
        ]),
        _namelist("SYSTEM", system),
        _namelist("ELECTRONS", [
            f"conv_thr = {settings.conv_thr:.3e}", f"mixing_beta = {settings.mixing_beta!r}",
            f"electron_maxstep = {int(settings.electron_maxstep)}",
        ]),
        "ATOMIC_SPECIES",
        *(f"  {s} {atomic_masses[atomic_numbers[s]]:.6f} {paths[s].name}" for s in species),
        "CELL_PARAMETERS angstrom",
        *(_vector(v) for v in np.asarray(atoms.cell)),
        "ATOMIC_POSITIONS angstrom",
        *(f"  {s} {_vector(p)}" for s, p in zip(atoms.get_chemical_symbols(), atoms.positions)),
        "K_POINTS automatic",
        "  {} {} {} {} {} {}".format(*settings.kpoints, *settings.kshift),
    ]
    return "\n".join(lines) + "\n"


def pp_ldos_input(ldos: LdosSettings) -> str:
    """pp.x input for the LDOS (plot_num 3), one cube per energy.

    QE 6.7 broadens with the SCF's smearing function (Fermi–Dirac here) of width
    ``degauss_ldos``, and makes ``int((emax - emin)/delta_e) + 1`` energies: emax
    gets a hundredth of a step extra so that rounding cannot drop the last one.
    """
    grid = ldos.energy_grid
    emax = grid.start + (grid.count - 0.99) * grid.step
    return "\n".join([
        _namelist("INPUTPP", [
            f"prefix = '{PREFIX}'", f"outdir = './{OUTDIR}'", f"filplot = '{LDOS_FILPLOT}'",
            "plot_num = 3", f"emin = {grid.start!r}", f"emax = {emax!r}",
            f"delta_e = {grid.step!r}", f"degauss_ldos = {ldos.broadening!r}",
        ]),
        _namelist("PLOT", ["iflag = 3", "output_format = 6", f"fileout = '{LDOS_FILEOUT}'"]),
    ]) + "\n"


def pp_density_input() -> str:
    """pp.x input for the valence electron density (plot_num 0) as a cube file."""
    return "\n".join([
        _namelist("INPUTPP", [f"prefix = '{PREFIX}'", f"outdir = './{OUTDIR}'",
                              "filplot = 'tmp.density'", "plot_num = 0"]),
        _namelist("PLOT", ["iflag = 3", "output_format = 6", f"fileout = '{DENSITY_CUBE}'"]),
    ]) + "\n"


def _namelist(name: str, entries: list[str]) -> str:
    return "&{}\n{}\n/".format(name, "\n".join(f"  {entry}" for entry in entries))


def _vector(v) -> str:
    return " ".join(f"{float(x):.12f}" for x in v)
