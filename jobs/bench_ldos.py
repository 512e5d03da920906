"""Time pp.x against the one-pass LDOS from the wavefunctions on one 32-atom Al snapshot.

usage (venv active, in an empty directory): python jobs/bench_ldos.py [FEW_ENERGIES_ONLY]

The shipped data set's settings (al_00's structure, 20 Ry, 2×2×2 shifted, 104 bands,
176 energies −4.5 … 13.0 eV, σ = 0.05 eV): pw.x SCF (mpirun -np 2 -nk 2, skipped when
run/scf.out is finished), pp.x on 5 energies, pp.x on all 176 (unless an argument is
given), the one pass on all 176, and the largest difference from pp.x's cubes.
"""
import sys
import time
from pathlib import Path

import numpy as np

from mlscale.config import EnergyGrid
from mlscale.datagen import DFTSettings, LdosSettings, QERunner, pw_input, thermal_fcc_snapshots
from mlscale.datagen.qe_input import OUTDIR, PREFIX, pp_ldos_input
from mlscale.datagen.wavefunctions import ldos_from_wavefunctions
from mlscale.io.cube import ldos_cube_paths, read_ldos_cubes

dft = DFTSettings(ecutwfc=20, kpoints=(2, 2, 2), kshift=(1, 1, 1), nbnd=104, mixing_beta=0.7,
                  conv_thr=1e-7)
full = LdosSettings(EnergyGrid(-4.5, 0.1, 176), broadening=0.05)
few = LdosSettings(EnergyGrid(7.0, 0.1, 5), broadening=0.05)  # 5 energies around E_F
runner = QERunner(nprocs=2, pools=2)
run = Path("run")
run.mkdir(exist_ok=True)
if not (run / "scf.out").is_file() or "JOB DONE" not in (run / "scf.out").read_text():
    atoms = thermal_fcc_snapshots("Al", 4.05, (2, 2, 2), 298.0, 1, 2026)[0]
    (run / "scf.in").write_text(pw_input(atoms, dft))
    start = time.perf_counter()
    runner.run("pw.x", "scf.in", "scf.out", run)
    print(f"pw.x SCF {time.perf_counter() - start:.1f} s", flush=True)


def pp_x(ldos: LdosSettings, stem: str) -> float:
    for path in run.glob("tmp.pp*"):
        path.unlink()
    (run / f"{stem}.in").write_text(pp_ldos_input(ldos))
    start = time.perf_counter()
    QERunner(nprocs=2).run("pp.x", f"{stem}.in", f"{stem}.out", run)
    return time.perf_counter() - start


seconds = pp_x(few, "pp_few")
print(f"pp.x -np 2, 5 energies: {seconds:.1f} s, {seconds / 5:.2f} s per energy", flush=True)
if len(sys.argv) == 1:
    print(f"pp.x -np 2, 176 energies: {pp_x(full, 'pp_full'):.1f} s", flush=True)
start = time.perf_counter()
ldos_ge = ldos_from_wavefunctions(run / OUTDIR / f"{PREFIX}.save", full.energy_grid.energies,
                                  full.broadening)
print(f"one pass, 1 process, 176 energies: {time.perf_counter() - start:.1f} s", flush=True)
cubes = read_ldos_cubes(ldos_cube_paths(run, PREFIX))
first = 0 if cubes.shape[-1] == 176 else 115  # the 5-energy run starts at 7.0 eV
ours = ldos_ge[..., first:first + cubes.shape[-1]]
error = np.abs(ours - cubes).max(axis=(0, 1, 2)) / np.abs(cubes).max(axis=(0, 1, 2))
print(f"largest |one pass - pp.x cube| / the energy's maximum: {error.max():.1e}")
