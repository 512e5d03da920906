"""Measure this machine's per-rank cost constants for `mlscale plan` (time and memory per point).

Runs `mlscale predict --only-rank 0/P` shares of a structure (default: the built-in
example, repeated until its grid holds twice --points) in child processes with one
thread each: three share sizes (--points, half and a quarter of it) for the CPU time
per phase and the fixed memory, and, with glibc's heap kept unfragmented
(MALLOC_MMAP_THRESHOLD_), two sizes and two chunk sizes for the memory per point and
per chunk point alone; it fits the model of docs/scaling.md. In this process it times
the descriptors at two atom densities (cost per neighbour), reading and checking a
large supercell (cost per atom) and, with --pseudopotentials, the energy phase
(mlscale.costmodel.measure). Writes the constants as JSON (default:
$XDG_CACHE_HOME/mlscale/bench.json, i.e. ~/.cache/mlscale/bench.json). Run it as one
process on an otherwise idle node of the machine the plan is for; it takes minutes.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import MlscaleError
from ..model import DEFAULT_CHUNK_POINTS

if TYPE_CHECKING:
    from ..costmodel import BenchConstants
    from ..parallel import Comm


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", help="model file (.safetensors); default: the shipped model")
    parser.add_argument("--structure", help="structure to measure on (ASE-readable); default: "
                        "the built-in example")
    parser.add_argument("--output", "-o", help="JSON file for the constants (default: "
                        "$XDG_CACHE_HOME/mlscale/bench.json)")
    parser.add_argument("--points", type=int, default=250000,
                        help="grid points of the largest measured share (default: %(default)s)")
    parser.add_argument("--chunk-points", type=int, default=DEFAULT_CHUNK_POINTS,
                        help="chunk size of the shares (another, 4x larger, is measured once; "
                        "default: %(default)s)")
    parser.add_argument("--pseudopotentials", metavar="DIR",
                        help="directory with UPF files: also measure the energy phase")


def run(args: argparse.Namespace, comm: Comm) -> int:
    # the cost model's measuring half loads the descriptor and energy code: imported when
    # the command runs, not whenever the CLI starts (every `mlscale predict` child)
    from ..costmodel import default_constants_path, write_constants
    from ..costmodel.measure import BenchPlan, measure
    from ..descriptors import check_atoms
    from ..energy import find_pseudopotentials
    from ..examples import builtin_example, shipped_model_path
    from ..inference import grid_for
    from ..io.structure import read_structure
    from ..model import load_model

    with comm.collective():
        if comm.size != 1:
            raise MlscaleError("run mlscale bench as one process: it measures what one rank "
                               "costs")
        BenchPlan(args.points, args.chunk_points)  # checks the sizes before the model loads
        model_path = Path(args.model) if args.model else shipped_model_path()
        info = load_model(model_path).info
        atoms = read_structure(args.structure) if args.structure else builtin_example()
        check_atoms(atoms, info.descriptors.species)
        pseudopotentials = None
        if args.pseudopotentials:
            pseudopotentials = find_pseudopotentials(args.pseudopotentials,
                                                     set(atoms.get_chemical_symbols()))
        plan = BenchPlan(args.points, args.chunk_points, args.pseudopotentials or None,
                         pseudopotentials)
        base_shape = grid_for(atoms, info).shape
    output = Path(args.output) if args.output else default_constants_path()
    constants, record = measure(model_path, info, atoms, base_shape, plan, comm.print)
    write_constants(output, constants, {"model": str(model_path),
                                        "structure": args.structure or "built-in example",
                                        **record})
    comm.print(summary(constants))
    comm.print(f"constants written to {output}")
    return 0


def summary(c: BenchConstants) -> str:
    """The constants, one line per phase, in the units one reads them in."""
    lines = [f"machine {c.machine}, {c.date}",
             f"startup             {c.startup_s:.2f} s + {c.atom_s * 1e6:.2f} us per atom",
             f"descriptors         {c.descriptor_point_s * 1e6:.2f} us per point + "
             f"{c.descriptor_neighbour_s * 1e6:.3f} us per point and neighbour",
             f"network             {c.network_mac_s * 1e12:.1f} ps per multiply-add",
             f"electrons           {c.electrons_point_energy_s * 1e9:.2f} ns per point and energy",
             f"output              {c.output_point_s * 1e9:.1f} ns per point",
             f"memory              {c.overhead_MiB:.0f} MiB + {c.point_bytes:.0f} B per point "
             f"({c.energies} energies) + {c.chunk_point_bytes:.0f} B per chunk point + "
             f"{c.atom_bytes:.0f} B per atom"]
    if c.energy_point_s is not None:
        lines.append(f"energy phase        {c.energy_point_s * 1e6:.2f} us per point, "
                     f"{c.energy_point_bytes:.0f} B per point, +{c.energy_overhead_MiB:.0f} MiB")
    return "\n".join(lines)
