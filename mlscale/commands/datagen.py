"""Generate training data with Quantum ESPRESSO: pw.x SCF, LDOS and density, snapshots.

Structures come from ASE-readable files, or (without files) from a seeded Langevin MD
of an fcc supercell with ASE's EMT at the ionic temperature. Per structure the QE runs
happen in <out>/qe/<name> (mpirun -np N, OpenMPI); the LDOS comes from pw.x's
wavefunctions in one pass (norm-conserving pseudopotentials) or from pp.x, one run per
energy (--ldos-tool). Then all ranks convert the results into <name>.in.npy / .out.npy /
.dens.npy (+ openPMD .h5) and write <name>.info.json last; with --records also a compact
record. Finished snapshots (info JSON or record present) are skipped.
"""

from __future__ import annotations

import json
from pathlib import Path

from ..config import BispectrumSettings, EnergyGrid
from ..errors import MlscaleError
from ._common import add_descriptor_backend


def add_arguments(parser):
    add = parser.add_argument
    add("structures", nargs="*", type=Path,
        help="ASE-readable structure files (all frames); none: generate fcc MD snapshots")
    add("--out", type=Path, required=True, help="output directory of the data set")
    add("--prefix", default="snapshot", help="snapshot name prefix (default: %(default)s)")
    add("--no-openpmd", action="store_true", help="skip the openPMD .h5 copies")
    add_descriptor_backend(parser)

    add = parser.add_argument_group("generated structures (no files given)").add_argument
    add("--element", default="Al", help="chemical symbol (default: %(default)s)")
    add("--lattice", type=float, default=4.05,
        help="fcc lattice constant, Å (default: %(default)s)")
    add("--repeat", type=int, nargs=3, default=(2, 2, 2), help="conventional cells per axis")
    add("--ionic-temperature", type=float, default=298.0, help="K (default: %(default)s)")
    add("--count", type=int, default=1, help="number of snapshots (default: %(default)s)")
    add("--seed", type=int, default=0, help="MD random seed (default: %(default)s)")

    add = parser.add_argument_group("DFT (pw.x)").add_argument
    add("--settings", type=Path,
        help='JSON file {"dft": {...}, "ldos": {...}}; the flags below override it')
    add("--ecutwfc", type=float, help="wave-function cutoff, Ry")
    add("--kpoints", type=int, nargs=3, help="Monkhorst-Pack grid")
    add("--kshift", type=int, nargs=3, help="Monkhorst-Pack shifts (0 or 1 per axis)")
    add("--temperature", type=float, help="electronic temperature, K (Fermi-Dirac smearing)")
    add("--nbnd", type=int, help="number of bands")
    add("--pseudo-dir", help="pseudopotential directory")
    add("--pseudo", action="append", metavar="EL=FILE", default=[],
        help="pseudopotential file of an element (repeatable)")
    add("--electron-maxstep", type=int, help="maximum SCF iterations")
    add("--mixing-beta", type=float, help="SCF density mixing factor")
    add("--conv-thr", type=float, help="SCF convergence threshold, Ry (whole cell)")

    add = parser.add_argument_group("LDOS").add_argument
    add("--emin", type=float, help="lowest LDOS energy, eV (QE's energy zero)")
    add("--de", type=float, help="LDOS energy spacing, eV")
    add("--ne", type=int, help="number of LDOS energies")
    add("--ldos-broadening", type=float,
        help="LDOS broadening degauss_ldos, eV (Fermi-Dirac width in QE 6.7)")
    add("--ldos-tool", choices=("auto", "wavefunctions", "pp.x"), default="auto",
        help="wavefunctions: all energies in one pass from pw.x's wavefunctions "
             "(norm-conserving only); pp.x: one pp.x run per energy; auto (default): "
             "wavefunctions when every pseudopotential is norm-conserving")

    add = parser.add_argument_group("compact records (committable, resumable)").add_argument
    add("--records", type=Path,
        help="also write a compact record per snapshot here (LDOS at every STRIDE-th point "
             "per axis, density, info); snapshots with a record are skipped")
    add("--record-stride", type=int, default=3,
        help="grid stride of the records' LDOS; must divide the grid for training "
             "(default: %(default)s)")
    add("--record-dtype", choices=("float16", "float32"), default="float16",
        help="LDOS type in the records (default: %(default)s)")

    add = parser.add_argument_group("running QE").add_argument
    add("--np", type=int, default=1, dest="nprocs", help="MPI processes for QE (default: 1)")
    add("--pools", type=int, default=1, help="pw.x k-point pools (-nk)")
    add("--mpirun", default="/usr/bin/mpirun", help="OpenMPI launcher (default: %(default)s)")
    add("--qe-bin", help="directory of pw.x and pp.x (default: PATH)")
    add("--nice", type=int, default=0, help="niceness of the QE processes")


def settings_from_args(args):
    """(DFTSettings, LdosSettings) from the --settings file and the flags."""
    from ..datagen import DFTSettings, LdosSettings

    data = {"dft": {}, "ldos": {}}
    if args.settings is not None:
        try:
            loaded = json.loads(Path(args.settings).read_text())
        except (OSError, ValueError) as error:
            raise MlscaleError(f"cannot read settings file {args.settings}: {error}") from None
        unknown = set(loaded) - set(data)
        if unknown:
            raise MlscaleError(f"unknown section(s) in {args.settings}: "
                               f"{', '.join(sorted(unknown))}")
        data.update(loaded)
    dft = dict(data["dft"])
    for key in ("ecutwfc", "kpoints", "kshift", "temperature", "nbnd", "pseudo_dir",
                "electron_maxstep", "mixing_beta", "conv_thr"):
        if getattr(args, key) is not None:
            dft[key] = getattr(args, key)
    for item in args.pseudo:
        element, sep, name = item.partition("=")
        if not sep or not element or not name:
            raise MlscaleError(f"--pseudo expects EL=FILE, got {item!r}")
        dft.setdefault("pseudopotentials", {})[element] = name
    ldos = dict(data["ldos"])
    grid = dict(ldos.get("energy_grid", LdosSettings().energy_grid.to_dict()))
    for key, flag in (("start", "emin"), ("step", "de"), ("count", "ne")):
        if getattr(args, flag) is not None:
            grid[key] = getattr(args, flag)
    ldos["energy_grid"] = EnergyGrid.from_dict(grid)
    if args.ldos_broadening is not None:
        ldos["broadening"] = args.ldos_broadening
    return DFTSettings.from_dict(dft), LdosSettings.from_dict(ldos)


def run(args, comm) -> int:
    from ..datagen import (
        CompactSettings,
        QERunner,
        default_ldos_tool,
        generate_dataset,
        read_structures,
        thermal_fcc_snapshots,
    )

    dft, ldos = settings_from_args(args)
    tool = default_ldos_tool(dft) if args.ldos_tool == "auto" else args.ldos_tool
    records = None if args.records is None else (
        args.records, CompactSettings(args.record_stride, args.record_dtype))
    runner = QERunner(nprocs=args.nprocs, pools=args.pools, mpirun=args.mpirun,
                      qe_bin=args.qe_bin, nice=args.nice)
    structures = None
    with comm.collective():
        runner.check()
        if args.structures:
            structures = read_structures(args.structures)
        else:
            structures = thermal_fcc_snapshots(
                args.element, args.lattice, tuple(args.repeat), args.ionic_temperature,
                args.count, args.seed)
    species = sorted({s for atoms in structures for s in atoms.get_chemical_symbols()})
    bispectrum = BispectrumSettings().with_species(species)
    comm.print(f"datagen: {len(structures)} structure(s) into {args.out}; "
               f"ecutwfc {dft.ecutwfc} Ry, k-points {dft.kpoints}, T_e {dft.temperature} K, "
               f"{ldos.energy_grid.count} LDOS energies ({tool})")
    paths = generate_dataset(structures, args.out, dft, ldos, bispectrum, runner, comm,
                             prefix=args.prefix, backend=args.backend,
                             openpmd=not args.no_openpmd, ldos_tool=tool, records=records)
    comm.print(f"datagen: {len(paths)} snapshot(s) finished in {args.out}")
    return 0
