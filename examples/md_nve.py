"""A few steps of NVE molecular dynamics of thermal Al with mlscale's forces.

    python examples/md_nve.py --steps 5 --dt 1.0
    mpiexec -n 4 python examples/md_nve.py      # every rank runs the same MD

ASE's Velocity Verlet with :class:`mlscale.calculator.MlscaleCalculator`: the built-in
32-atom Al structure (298 K) and the shipped model unless told otherwise; prints the
potential (the predicted free energy), kinetic and total energy per step, the shortest
interatomic distance, the largest force component and the wall time per step.
``--trajectory FILE`` appends every step (positions, momenta, forces, energy) to an
extended-XYZ file; ``--restart FILE [--frame N]`` continues from a frame of such a file
with its momenta (no new thermal velocities). The total energy is conserved as the
integrator allows (its error falls as dt², tests/test_calculator.py) because the forces
are the energy's exact derivative.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from ase import units
from ase.md.velocitydistribution import thermalize_momenta
from ase.md.verlet import VelocityVerlet
from mpi4py import MPI  # noqa: F401  (before LAMMPS, if the LAMMPS backend is used)

from mlscale.calculator import MlscaleCalculator
from mlscale.examples import builtin_example, shipped_model_path
from mlscale.io import read_structure
from mlscale.parallel import world

AL_PSEUDO = "/usr/share/espresso/pseudo/Al.pz-vbc.UPF"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("structure", nargs="?", help="ASE-readable file (default: built-in Al)")
    parser.add_argument("--model", default=str(shipped_model_path()))
    parser.add_argument("--pseudopotential", default=AL_PSEUDO, help="Al UPF file")
    parser.add_argument("--grid", nargs=3, type=int, help="default: QE's grid of the model")
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--dt", type=float, default=1.0, help="time step (fs)")
    parser.add_argument("--temperature", type=float, default=298.0, help="initial (K)")
    parser.add_argument("--trajectory", help="extended-XYZ file, every step appended (rank 0)")
    parser.add_argument("--restart", help="extended-XYZ trajectory to continue from")
    parser.add_argument("--frame", type=int, default=-1, help="frame of --restart (default last)")
    args = parser.parse_args()
    comm = world()
    if args.restart:
        atoms = read_frame(args.restart, args.frame)
    else:
        atoms = read_structure(args.structure) if args.structure else builtin_example()
        thermalize_momenta(atoms, temperature_K=args.temperature, rng=np.random.default_rng(0))
    atoms.calc = MlscaleCalculator(model=args.model, pseudopotentials={"Al": args.pseudopotential},
                                   grid=args.grid, comm=comm)
    dynamics = VelocityVerlet(atoms, timestep=args.dt * units.fs)
    start = time.perf_counter()

    def report() -> None:
        e_pot, e_kin = atoms.get_potential_energy(), atoms.get_kinetic_energy()
        d_min = atoms.get_all_distances(mic=True)[np.triu_indices(len(atoms), 1)].min()
        f_max = np.abs(atoms.get_forces()).max()
        comm.print(f"step {dynamics.nsteps:4d}  E_pot {e_pot:.6f}  E_kin {e_kin:.6f}  "
                   f"E_tot {e_pot + e_kin:.6f} eV  d_min {d_min:.4f} A  |F|max {f_max:.3f} eV/A"
                   f"  ({time.perf_counter() - start:.1f} s)")
        if args.trajectory and comm.rank == 0:
            append_frame(args.trajectory, atoms)

    dynamics.attach(report, interval=1)  # also at step 0
    dynamics.run(args.steps)
    comm.print(f"{(time.perf_counter() - start) / (args.steps + 1):.2f} s per force call")


def read_frame(path: str, frame: int):
    """A frame of an extended-XYZ trajectory with its momenta (ase.io, no pickle)."""
    import ase.io

    atoms = ase.io.read(path, index=frame, format="extxyz")
    if not atoms.has("momenta"):
        raise SystemExit(f"{path}: frame {frame} has no momenta to continue from")
    atoms.pbc = True
    atoms.calc = None
    return atoms


def append_frame(path: str, atoms) -> None:
    """Append one frame (positions, momenta, forces, energies) to an extended-XYZ file."""
    import ase.io
    from ase.calculators.singlepoint import SinglePointCalculator

    frame = atoms.copy()
    frame.calc = SinglePointCalculator(frame, energy=atoms.get_potential_energy(),
                                       free_energy=atoms.get_potential_energy(),
                                       forces=atoms.get_forces())
    ase.io.write(path, frame, format="extxyz", append=True)


if __name__ == "__main__":
    main()
