"""Plan a prediction: decomposition, points and atoms per rank, predicted memory and time per rank.

The structure is a file, a supercell of one (--supercell-of FILE --repeat A B C), or a
crystal of --atoms N of --element at --lattice A (cubic cell repeated n×n×n). The
model gives the energy grid, the descriptors and (through ecutrho) QE's grid. Give
--ranks P, or a budget per rank (--memory-per-rank GiB and/or --time-per-rank S) to
get the fewest ranks that fit. Memory and time come from the constants `mlscale bench`
measured (docs/scaling.md); time is per rank on one dedicated core.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ..errors import MlscaleError
from ..model import DEFAULT_CHUNK_POINTS
from ._common import add_device

if TYPE_CHECKING:
    from ase import Atoms

    from ..costmodel import BenchConstants
    from ..grid import Grid
    from ..model import ModelInfo
    from ..parallel import Comm

GPU_NOTE = ("no GPU constants exist yet (mlscale bench measures the CPU path): memory and "
            "time above are those of --device cpu; host memory per rank is the same with "
            "--device cuda (docs/gpu.md)")

# The CLI imports every command module when it starts (every `mlscale predict` rank
# too): what only this command needs is imported when it runs.


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("structure", nargs="?", help="any ASE-readable structure file")
    parser.add_argument("--supercell-of", metavar="FILE", help="plan for a supercell of FILE")
    parser.add_argument("--repeat", nargs=3, type=int, metavar=("A", "B", "C"),
                        help="repetitions of --supercell-of along the cell vectors")
    parser.add_argument("--atoms", type=int, help="number of atoms of a bulk crystal ...")
    parser.add_argument("--element", help="... of this element ...")
    parser.add_argument("--lattice", type=float, help="... with this lattice constant (Å) ...")
    parser.add_argument("--crystal", default="fcc",
                        help="... and structure (ASE bulk name; default: %(default)s)")
    parser.add_argument("--model", help="model file (.safetensors); default: the shipped model")
    parser.add_argument("--grid", nargs=3, type=int, metavar=("NX", "NY", "NZ"),
                        help="real-space grid; default: QE's FFT grid at the model's ecutrho")
    parser.add_argument("--ranks", type=int, help="number of MPI ranks")
    parser.add_argument("--memory-per-rank", type=float, metavar="GIB",
                        help="memory budget per rank (GiB): find the fewest ranks that fit")
    parser.add_argument("--time-per-rank", type=float, metavar="S",
                        help="time budget per rank (s): find the fewest ranks that fit")
    parser.add_argument("--chunk-points", type=int,
                        help="as in mlscale predict (default: predict's default)")
    parser.add_argument("--energy", action="store_true",
                        help="include the total-energy phase (predict --pseudopotentials)")
    parser.add_argument("--constants", help="constants from mlscale bench (default: "
                        "$XDG_CACHE_HOME/mlscale/bench.json)")
    parser.add_argument("--json", action="store_true", help="print the plan as JSON")
    add_device(parser)


def run(args: argparse.Namespace, comm: Comm) -> int:
    from ..costmodel import default_constants_path, plan, read_constants
    from ..examples import shipped_model_path
    from ..inference import grid_for, kept_energies
    from ..model import load_model

    with comm.collective():
        atoms = structure_from_args(args)
        info = load_model(Path(args.model) if args.model else shipped_model_path()).info
        grid = grid_for(atoms, info, args.grid)
        constants = read_constants(args.constants or default_constants_path())
        chunk_points = args.chunk_points or DEFAULT_CHUNK_POINTS  # predict's default
        _check_budgets(args, chunk_points)
        if constants.twojmax != info.descriptors.twojmax:
            raise MlscaleError(f"the bench constants are for twojmax {constants.twojmax}, the "
                               f"model uses {info.descriptors.twojmax}: rerun mlscale bench "
                               "with this model")
        result = plan(constants, grid.shape, grid.cell_cv,
                      atoms.positions @ np.linalg.inv(grid.cell_cv), info.settings.layers,
                      info.energy_grid.count, info.descriptors.cutoff, chunk_points,
                      ranks=args.ranks, memory_GiB=args.memory_per_rank,
                      time_budget_s=args.time_per_rank, energy=args.energy,
                      kept_energies=kept_energies(info))  # the density's LDOS window
    if args.json:
        comm.print(json.dumps({**result, "load": asdict(result["load"]),
                               "grid": list(grid.shape), "chunk_points": chunk_points,
                               "constants": constants.machine, "device": args.device,
                               **({"device_note": GPU_NOTE} if args.device != "cpu" else {})},
                              indent=2))
        return 0
    comm.print(report(result, atoms, grid, info.settings.layers, info, constants,
                      chunk_points, args))
    if args.device != "cpu":
        comm.print(f"device      {args.device}: {GPU_NOTE}")
    return 0


def structure_from_args(args: argparse.Namespace) -> Atoms:
    """The structure the plan is for, from exactly one of the three ways to give it."""
    ways = [args.structure is not None, args.supercell_of is not None, args.atoms is not None]
    if sum(ways) != 1:
        raise MlscaleError("give a structure: a file, --supercell-of FILE --repeat A B C, or "
                           "--atoms N --element X --lattice A")
    from ..io.structure import read_structure

    if args.structure is not None:
        return read_structure(args.structure)
    if args.supercell_of is not None:
        if not args.repeat or min(args.repeat) < 1:
            raise MlscaleError("--supercell-of needs --repeat A B C (positive integers)")
        return read_structure(args.supercell_of).repeat(tuple(args.repeat))
    return bulk_crystal(args.atoms, args.element, args.lattice, args.crystal)


def bulk_crystal(n_atoms: int, element: str | None, lattice: float | None,
                 crystal: str) -> Atoms:
    """ASE's cubic ``crystal`` cell of ``element`` repeated n×n×n to hold ``n_atoms`` atoms."""
    from ase.build import bulk

    if element is None or lattice is None or not lattice > 0:
        raise MlscaleError("--atoms needs --element and a positive --lattice (Å)")
    try:
        cell = bulk(element, crystal, a=lattice, cubic=True)
    except Exception as error:  # noqa: BLE001 - ASE raises several types
        raise MlscaleError(f"cannot build a cubic {crystal} cell of {element}: {error}") from None
    n = round((n_atoms / len(cell)) ** (1 / 3))
    if n < 1 or n**3 * len(cell) != n_atoms:
        options = ", ".join(str(k**3 * len(cell)) for k in range(max(n - 1, 1), n + 2))
        raise MlscaleError(f"{n_atoms} atoms is not a cubic supercell of the {len(cell)}-atom "
                           f"{crystal} cell (try {options})")
    atoms = cell.repeat((n, n, n))
    atoms.pbc = True
    return atoms


def report(result: dict, atoms: Atoms, grid: Grid, layers: Sequence[int], info: ModelInfo,
           constants: BenchConstants, chunk_points: int, args: argparse.Namespace) -> str:
    """The plan (:func:`mlscale.costmodel.plan`'s result) as lines for a person."""
    load, memory, times = result["load"], result["memory_MiB"], result["time_s"]
    species = ", ".join(sorted(set(atoms.get_chemical_symbols())))
    lengths = " x ".join(f"{x:.3f}" for x in (sum(v * v for v in row) ** 0.5
                                              for row in grid.cell_cv))
    shape = " x ".join(map(str, grid.shape))
    halo = "-" if load.atoms_with_halo is None else f"{load.atoms_with_halo:,}"
    inside = "-" if load.atoms_in_block is None else f"{load.atoms_in_block:,}"
    why = []
    if args.memory_per_rank is not None:
        why.append(f"memory <= {args.memory_per_rank:g} GiB")
    if args.time_per_rank is not None:
        why.append(f"time <= {args.time_per_rank:g} s")
    parts = ", ".join(f"{k} {v:.1f}" for k, v in times.items() if k != "total")
    mem_parts = ", ".join(f"{k} {v:.0f}" for k, v in memory.items() if k != "total")
    lines = [
        f"structure   {result['atoms']:,} atoms ({species}), cell {lengths} Å",
        f"grid        {shape} = {result['points']:,} points"
        + (f" (QE grid at the model's ecutrho {info.ecutrho_Ry:g} Ry)"
           if args.grid is None else ""),
        f"model       {'-'.join(map(str, layers))} ({result['macs']:,} multiply-adds per point), "
        f"{info.energy_grid.count} energies, twojmax {info.descriptors.twojmax}, cutoff "
        f"{info.descriptors.cutoff:.3f} Å ({result['neighbours']:.1f} neighbours per point)",
        f"constants   {constants.machine} ({constants.date})",
        f"ranks       {load.ranks:,}" + (f", the fewest with {' and '.join(why)}" if why else "")
        + f": process grid {' x '.join(map(str, load.process_grid))}",
        f"per rank    {load.points:,} points (block {' x '.join(map(str, load.block_shape))}; "
        f"smallest block {load.min_points:,}), {inside} atoms in the block, {halo} with the "
        f"cutoff halo; {load.chunks:,} chunks of <= {load.chunk_points:,} points "
        f"(--chunk-points {chunk_points})",
        f"memory      {memory['total']:,.0f} MiB peak per rank ({mem_parts})",
        f"time        {times['total']:,.1f} s per rank on one core ({parts})",
        f"total       {load.ranks * times['total'] / 3600:,.2f} core-hours"
        + (", with the energy phase" if args.energy else ", without the energy phase"),
    ]
    return "\n".join(lines)


def _check_budgets(args: argparse.Namespace, chunk_points: int) -> None:
    if args.ranks is not None and (args.memory_per_rank is not None
                                   or args.time_per_rank is not None):
        raise MlscaleError("give either --ranks or budgets per rank, not both")
    if args.ranks is not None and args.ranks < 1:
        raise MlscaleError("--ranks must be positive")
    for name in ("memory_per_rank", "time_per_rank"):
        value = getattr(args, name)
        if value is not None and not value > 0:
            raise MlscaleError(f"--{name.replace('_', '-')} must be positive")
    if chunk_points < 1:
        raise MlscaleError("--chunk-points must be positive")
