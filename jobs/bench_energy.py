"""Time and peak memory of the energy step (density_energy_terms) for growing cells.

    mpiexec -n RANKS python jobs/bench_energy.py --cells N [--ecutrho 100] [--system al|be]
                                                 [--repeat 3] [--ewald-only]

``al``: fcc Al, N x N x N conventional cells (4 N³ atoms, a = 4.05 Å), LDA,
Al.pz-vbc.UPF (no core correction). ``be``: hcp Be, N x N x N two-atom cells
(a = 2.26 Å, c = 3.57 Å), PBE, MALA's Be.pbe-n-rrkjus_psl.1.0.0.UPF (core correction).
QE's FFT grid for ``--ecutrho`` Ry (100 Ry: 25 points per 4.05 Å); a smooth synthetic
density with the valence electron count.

Prints one JSON line (rank 0): grid, atoms, the peak resident memory per rank (max
over ranks) during a first run above the memory before it (MiB; it includes loading
numba's cached Ewald kernel), then the median over ``--repeat`` further runs of the
wall-clock and CPU seconds (max over ranks). ``--ewald-only``: the same timings for the
Ewald term alone on the grid's distributed FFT.
"""

from __future__ import annotations

import argparse
import json
import resource
import time

import numpy as np
from ase.build import bulk

from mlscale.energy import DistributedFFT, density_energy_terms, ewald_energy
from mlscale.grid import DistributedGrid, Grid, qe_fft_shape
from mlscale.parallel import world
from mlscale.units import BOHR_ANGSTROM

SYSTEMS = {  # name -> element, valence, pseudopotential
    "al": ("Al", 3.0, "/usr/share/espresso/pseudo/Al.pz-vbc.UPF"),
    "be": ("Be", 2.0, "/work/shared/mala-test-data/Be2/Be.pbe-n-rrkjus_psl.1.0.0.UPF"),
}


def peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def timed(function, repeat, comm):
    """Median wall and CPU seconds (max over ranks) of ``repeat`` calls, last result."""
    wall, cpu = [], []
    for _ in range(repeat):
        start, cpu_start = time.perf_counter(), time.process_time()
        result = function()
        wall.append(comm.max(time.perf_counter() - start))
        cpu.append(comm.max(time.process_time() - cpu_start))
    return float(np.median(wall)), float(np.median(cpu)), wall, result


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cells", type=int, required=True)
    parser.add_argument("--ecutrho", type=float, default=100.0, help="Ry")
    parser.add_argument("--system", choices=SYSTEMS, default="al")
    parser.add_argument("--repeat", type=int, default=3, help="runs; the median is printed")
    parser.add_argument("--ewald-only", action="store_true", help="time the Ewald term alone")
    args = parser.parse_args()
    comm = world()
    element, valence, pseudo = SYSTEMS[args.system]
    if element == "Al":
        atoms = bulk("Al", "fcc", a=4.05, cubic=True).repeat(args.cells)
    else:
        atoms = bulk("Be", "hcp", a=2.26, c=3.57).repeat(args.cells)
    grid = Grid(atoms.cell.array, qe_fft_shape(atoms.cell.array, args.ecutrho))
    out = {"ranks": comm.size, "atoms": len(atoms), "grid": list(grid.shape),
           "points": grid.npoints}

    if args.ewald_only:
        fft = DistributedFFT(DistributedGrid(Grid(grid.cell_cv / BOHR_ANGSTROM, grid.shape), comm))
        charges = np.full(len(atoms), valence)
        ewald_energy(atoms.positions / BOHR_ANGSTROM, charges, fft)  # load numba's kernel
        wall, cpu, _, _ = timed(
            lambda: ewald_energy(atoms.positions / BOHR_ANGSTROM, charges, fft), args.repeat, comm)
        comm.print(json.dumps({**out, "ewald_seconds": round(wall, 3),
                               "ewald_cpu_seconds": round(cpu, 3)}))
        return

    dgrid = DistributedGrid(grid, comm)
    frac = grid.fractional_bc(dgrid.block)
    density_b = np.cos(2 * np.pi * args.cells * frac).prod(axis=-1)
    del frac
    density_b = (1 + 0.2 * density_b) * valence * len(atoms) / grid.volume
    comm.barrier()
    before = peak_mib()
    step = lambda: density_energy_terms(density_b, dgrid, atoms, {element: pseudo})  # noqa: E731
    terms = step()  # first run: its peak memory (later peaks add heap fragmentation)
    growth = comm.max(peak_mib() - before)
    wall, cpu, walls, terms = timed(step, args.repeat, comm)
    comm.print(json.dumps({
        **out, "functional": terms["functional"], "seconds": round(wall, 3),
        "cpu_seconds": round(cpu, 3), "all_seconds": [round(t, 3) for t in walls],
        "peak_growth_MiB_per_rank": round(growth, 1),
        "bytes_per_point_per_rank": round(growth * 2**20 / (grid.npoints / comm.size), 1),
        "number_of_electrons": round(terms["number_of_electrons"], 6),
    }))


if __name__ == "__main__":
    main()
