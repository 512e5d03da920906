"""MALA 1.4.0 and mlscale side by side: same model, same Be supercells, 1 and N ranks.

Run from the repository root with mlscale's venv (MALA runs in its own venv):

    nice python jobs/compare_mala.py --atoms 2 16 54 --ranks 1 2 --repeats 3 \
        --output out/compare-mala

The model is MALA's Be2 test model re-saved by MALA 1.4 (tests/data/mala/
Be_model_mala14.zip); MALA loads the archive, mlscale the file `mlscale import-mala`
makes from it. Structures: MALA's Be2 cell (from the archive's info.json) repeated
r×r×r (2, 16, 54, 128 atoms for r = 1..4) on an 18r×18r×27r grid. For every size and
rank count the tools run one after the other in rotating order, each in a fresh
`mpiexec` job with one thread per rank, `--repeats` times. Each run reports wall time
per phase (maximum over ranks), peak RSS per rank, Fermi level and band energy; the
LDOS of every grid point is written and compared with MALA's afterwards.

MALA's PyPI wheel lacks its LAMMPS input files; jobs/mala_lammps_input.in issues the
same compute line and is passed as `descriptors.custom_lammps_compute_file`.
Writes OUTPUT/runs.json (every run) and OUTPUT/table.md (medians); jobs/compare_mala.sh
runs the whole comparison in stages (fewer repeats for the large systems).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
ARCHIVE = ROOT / "tests" / "data" / "mala" / "Be_model_mala14.zip"
LAMMPS_INPUT = ROOT / "jobs" / "mala_lammps_input.in"
BASE_GRID = (18, 18, 27)
SINGLE_THREAD = {name: "1" for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS",
                                        "OPENBLAS_NUM_THREADS", "NUMBA_NUM_THREADS")}
PHASES = ("descriptors", "network", "electrons")


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


# -- MALA worker (runs in MALA's venv; imports nothing from mlscale) -----------------------
def worker_mala(args) -> None:
    start = time.perf_counter()
    import ase.io
    import mala
    from mpi4py import MPI

    comm = MPI.COMM_WORLD
    archive = Path(args.archive)
    _, _, data, predictor = mala.Predictor.load_run(
        archive.stem, path=str(archive.parent), load_with_mpi=comm.size > 1, load_with_gpu=False)
    predictor.parameters_full.verbosity = 0
    predictor.parameters_full.descriptors.custom_lammps_compute_file = str(args.lammps_input)
    atoms = ase.io.read(args.structure)
    seconds = {}
    calculate = data.descriptor_calculator.calculate_from_atoms

    def timed_descriptors(*a, **k):
        t = time.perf_counter()
        result = calculate(*a, **k)
        seconds["descriptors"] = time.perf_counter() - t
        return result

    data.descriptor_calculator.calculate_from_atoms = timed_descriptors
    comm.Barrier()
    startup = time.perf_counter() - start
    t0, cpu0 = time.perf_counter(), time.process_time()
    ldos_pe = predictor.predict_for_atoms(atoms)
    t1 = time.perf_counter()
    seconds["network"] = t1 - t0 - seconds["descriptors"]  # scaling + network + restriction
    calculator = data.target_calculator
    calculator.read_from_array(ldos_pe)
    fermi, band = calculator.fermi_energy, calculator.band_energy
    calculator.density  # noqa: B018 - the density, as mlscale computes it too
    seconds["electrons"] = time.perf_counter() - t1
    cpu = comm.allreduce(time.process_time() - cpu0, op=MPI.SUM)
    rss = comm.gather(peak_rss_mib(), root=0)
    seconds = {k: comm.allreduce(v, op=MPI.MAX) for k, v in seconds.items()}

    out = Path(args.out)
    if comm.size > 1:
        ijk_p3 = np.rint(calculator.local_grid).astype(np.int32)
    else:
        shape = data.grid_dimension
        ijk_p3 = np.indices(shape).reshape(3, -1).T.astype(np.int32)
    np.save(out / f"ldos_rank{comm.rank}.npy", np.asarray(ldos_pe, np.float32))
    np.save(out / f"ijk_rank{comm.rank}.npy", ijk_p3)
    if comm.rank == 0:
        (out / "run.json").write_text(json.dumps({
            "tool": "MALA " + mala.__version__, "ranks": comm.size, "timings_s": seconds,
            "startup_s": startup, "cpu_s": cpu, "peak_rss_MiB": rss,
            "fermi_energy_eV": float(fermi),
            "band_energy_eV": float(band),
            "grid": [int(n) for n in data.grid_dimension]}))


# -- mlscale worker --------------------------------------------------------------------
def worker_mlscale(args) -> None:
    start = time.perf_counter()
    from threadpoolctl import threadpool_limits

    from mlscale import inference, output
    from mlscale.io.structure import read_structure
    from mlscale.model import load_model
    from mlscale.parallel import world
    from mlscale.timing import Timings

    threadpool_limits(limits=1, user_api="blas")  # one thread per rank, as MALA's runs

    comm = world()
    atoms = read_structure(args.structure)
    model = load_model(args.model, args.network)  # as `mlscale predict --network`
    out = Path(args.out)
    with open(out / f"ldos_rank{comm.rank}.f32", "wb") as handle:
        recorder = LDOSRecorder(model, handle)
        comm.barrier()
        startup = time.perf_counter() - start
        cpu0 = time.process_time()
        timings = Timings()
        dgrid, n_electrons = inference.setup(atoms, model.info, comm, shape=tuple(args.grid),
                                             backend=args.backend)
        prediction = inference.predict(atoms, recorder, dgrid, n_electrons,
                                       backend=args.backend, timings=timings)
        with timings.phase("output"):  # the files `mlscale predict` writes
            output.write_fields(out / "prediction", prediction.energies_e, prediction.dos_e,
                                prediction.density_b, dgrid)
        results = {**output.prediction_results(prediction, atoms, backend=args.backend,
                                               method="analytical"),
                   **output.timing_results(timings, comm)}
        cpu = comm.sum(time.process_time() - cpu0)
    seconds = dict(results["timings_s"])
    seconds["network"] -= comm.max(recorder.seconds)  # the LDOS copy for this comparison
    rss = comm.mpi.gather(peak_rss_mib(), root=0)
    if comm.rank == 0:
        (out / "run.json").write_text(json.dumps({
            "tool": f"mlscale ({args.backend}{', torch' if args.network == 'torch' else ''})",
            "ranks": comm.size, "timings_s": seconds,
            "startup_s": startup, "cpu_s": cpu, "peak_rss_MiB": rss,
            "network": args.network,
            "fermi_energy_eV": results["fermi_energy_eV"],
            "band_energy_eV": results["band_energy_eV"], "grid": results["grid"]}))


class LDOSRecorder:
    """A model (mlscale.model.Model, either backend) that also writes each LDOS chunk
    (float32, point order) to ``handle``."""

    def __init__(self, model, handle):
        self.model, self.handle, self.seconds = model, handle, 0.0
        self.info, self.n_features, self.n_energies = (model.info, model.n_features,
                                                       model.n_energies)

    def __call__(self, descriptors_pf, chunk_points):
        ldos_pe = self.model(descriptors_pf, chunk_points)
        t = time.perf_counter()
        self.handle.write(np.asarray(ldos_pe, dtype=np.float32).tobytes())
        self.seconds += time.perf_counter() - t
        return ldos_pe


# -- driver ----------------------------------------------------------------------------
def read_mala_ldos(run_dir: Path, ranks: int, shape) -> np.ndarray:
    ldos = np.full((*shape, 0), np.nan, np.float32)
    for rank in range(ranks):
        part = np.load(run_dir / f"ldos_rank{rank}.npy", allow_pickle=False)
        ijk = np.load(run_dir / f"ijk_rank{rank}.npy", allow_pickle=False)
        if ldos.shape[-1] == 0:
            ldos = np.full((*shape, part.shape[1]), np.nan, np.float32)
        ldos[ijk[:, 0], ijk[:, 1], ijk[:, 2]] = part
    return ldos


def read_mlscale_ldos(run_dir: Path, ranks: int, shape, n_energies: int) -> np.ndarray:
    from mlscale.grid import Decomposition

    ldos = np.full((*shape, n_energies), np.nan, np.float32)
    decomposition = Decomposition(shape, ranks)
    for rank in range(ranks):
        block = decomposition.block(rank)
        part = np.fromfile(run_dir / f"ldos_rank{rank}.f32", np.float32)
        ldos[block.slices] = part.reshape(*block.shape, n_energies)
    return ldos


def run_worker(kind: str, args, structure: Path, grid, ranks: int, run_dir: Path) -> dict:
    if run_dir.exists():
        shutil.rmtree(run_dir)
    run_dir.mkdir(parents=True)
    if kind == "mala":
        python, extra = args.mala_python, ["--archive", str(ARCHIVE),
                                           "--lammps-input", str(LAMMPS_INPUT)]
    else:
        python, extra = sys.executable, ["--model", str(args.output / "be.safetensors"),
                                         "--backend", kind, "--grid", *map(str, grid),
                                         "--network", args.network]
    worker = "worker-mala" if kind == "mala" else "worker-mlscale"
    command = [args.mpiexec, "-n", str(ranks), python, str(Path(__file__).resolve()), worker,
               "--structure", str(structure), "--out", str(run_dir), *extra]
    start = time.perf_counter()
    # in run_dir: MALA writes its LAMMPS scratch files into the working directory
    done = subprocess.run(command, env={**os.environ, **SINGLE_THREAD}, capture_output=True,
                          text=True, cwd=run_dir)
    wall = time.perf_counter() - start
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed:\n{done.stdout[-3000:]}\n"
                           f"{done.stderr[-3000:]}")
    run = json.loads((run_dir / "run.json").read_text())
    run["process_wall_s"] = wall
    return run


def compare(mala_dir, mala_run, other_dir, other_run, shape) -> dict:
    a = read_mala_ldos(mala_dir, mala_run["ranks"], shape)
    b = read_mlscale_ldos(other_dir, other_run["ranks"], shape, a.shape[-1])
    if np.isnan(a).any() or np.isnan(b).any():
        raise RuntimeError("some grid points have no LDOS")
    a64, b64 = a.astype(float), b.astype(float)
    return {"ldos_max_rel_diff": float(np.max(np.abs(b64 - a64) / np.maximum(np.abs(a64), 1e-30))),
            "fermi_diff_eV": other_run["fermi_energy_eV"] - mala_run["fermi_energy_eV"],
            "band_diff_eV": other_run["band_energy_eV"] - mala_run["band_energy_eV"]}


def drive(args) -> None:
    import ase

    from mlscale.io.structure import write_structure
    from mlscale.model import import_mala, read_mala_archive

    args.output = args.output.resolve()
    args.output.mkdir(parents=True, exist_ok=True)
    import_mala(ARCHIVE, args.output / "be.safetensors")
    cell = read_mala_archive(ARCHIVE).info["atoms"]
    base = ase.Atoms(numbers=cell["numbers"], positions=cell["positions"], cell=cell["cell"],
                     pbc=True)
    tools = ["mala", *args.backends]
    runs_path = args.output / "runs.json"
    runs = json.loads(runs_path.read_text()) if args.append and runs_path.exists() else []
    for n_atoms in args.atoms:
        r = round((n_atoms / len(base)) ** (1 / 3))
        if len(base) * r ** 3 != n_atoms:
            raise SystemExit(f"{n_atoms} atoms is not a cubic repetition of the 2-atom cell")
        structure = args.output / f"be{n_atoms}.xyz"
        write_structure(structure, base.repeat((r, r, r)))
        grid = tuple(n * r for n in BASE_GRID)
        for ranks in args.ranks:
            if f"{n_atoms}:{ranks}" in args.skip:
                continue
            for repeat in range(args.repeats):
                order = tools[repeat % len(tools):] + tools[:repeat % len(tools)]
                done = {}
                for kind in order:
                    run_dir = args.output / "runs" / f"{n_atoms}atoms_{ranks}ranks_{kind}"
                    run = run_worker(kind, args, structure, grid, ranks, run_dir)
                    run.update(atoms=n_atoms, points=int(np.prod(grid)), kind=kind,
                               repeat=repeat, order=order.index(kind))
                    done[kind] = (run_dir, run)
                    print(json.dumps(run), flush=True)
                for kind in args.backends:
                    done[kind][1].update(compare(*done["mala"], *done[kind], grid))
                    print(kind, {k: done[kind][1][k] for k in ("ldos_max_rel_diff", "fermi_diff_eV",
                                                                "band_diff_eV")}, flush=True)
                runs += [run for _, run in done.values()]
                runs_path.write_text(json.dumps(runs, indent=1))
    (args.output / "table.md").write_text(table(runs))
    print(table(runs))


def table(runs) -> str:
    """Markdown table of medians per (atoms, ranks, tool) and throughput ratios."""
    lines = ["| atoms | grid points | ranks | code | runs | descriptors s | network s | "
             "electrons s | sum s | process s | CPU s | peak RSS/rank MiB | points/CPU-s | "
             "max ΔLDOS (rel) | ΔE_F eV | ΔE_band eV |", "|" + "---|" * 16]
    keys = sorted({(r["atoms"], r["ranks"], r["kind"]) for r in runs},
                  key=lambda k: (k[0], k[1], k[2] != "mala", k[2]))
    throughput, cpu_throughput = {}, {}
    for atoms, ranks, kind in keys:
        group = [r for r in runs if (r["atoms"], r["ranks"], r["kind"]) == (atoms, ranks, kind)]
        med = {p: statistics.median(r["timings_s"][p] for r in group) for p in PHASES}
        total = statistics.median(sum(r["timings_s"][p] for p in PHASES) for r in group)
        process = statistics.median(r["process_wall_s"] for r in group)
        rss = statistics.median(max(r["peak_rss_MiB"]) for r in group)
        points = group[0]["points"]
        cpu = statistics.median(r["cpu_s"] for r in group)
        throughput[atoms, ranks, kind] = points / total / ranks
        cpu_throughput[atoms, ranks, kind] = points / cpu
        if kind == "mala":
            diffs = "— | — | —"
        else:
            diffs = (f"{max(r['ldos_max_rel_diff'] for r in group):.1e} | "
                     f"{max(abs(r['fermi_diff_eV']) for r in group):.1e} | "
                     f"{max(abs(r['band_diff_eV']) for r in group):.1e}")
        name = group[0]["tool"]
        lines.append(f"| {atoms} | {points} | {ranks} | {name} | {len(group)} | "
                     f"{med['descriptors']:.2f} | {med['network']:.2f} | "
                     f"{med['electrons']:.2f} | {total:.2f} | {process:.1f} | {cpu:.1f} | "
                     f"{rss:.0f} | {cpu_throughput[atoms, ranks, kind]:.0f} | {diffs} |")
    lines += ["", "Throughput per core, mlscale / MALA: by wall time (points / sum of phases / "
              "ranks) and by CPU time (points / CPU s of all ranks):", ""]
    for (atoms, ranks, kind), value in sorted(throughput.items()):
        if kind != "mala" and (atoms, ranks, "mala") in throughput:
            mala = (atoms, ranks, "mala")
            lines.append(f"- {atoms} atoms, {ranks} rank(s), mlscale {kind}: wall "
                         f"{value / throughput[mala]:.2f}×, CPU "
                         f"{cpu_throughput[atoms, ranks, kind] / cpu_throughput[mala]:.2f}×")
    lines += ["", "Medians over the runs; differences to MALA: maximum over the runs."]
    return "\n".join(lines) + "\n"


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="mode")
    for name in ("worker-mala", "worker-mlscale"):
        worker = sub.add_parser(name)
        worker.add_argument("--structure", required=True)
        worker.add_argument("--out", required=True)
        worker.add_argument("--archive")
        worker.add_argument("--lammps-input")
        worker.add_argument("--model")
        worker.add_argument("--backend", default="lammps")
        worker.add_argument("--grid", nargs=3, type=int)
        worker.add_argument("--network", default="numpy", choices=("numpy", "torch"))
    parser.add_argument("--atoms", nargs="+", type=int, default=[2, 16, 54, 128])
    parser.add_argument("--ranks", nargs="+", type=int, default=[1, 2])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--backends", nargs="+", default=["lammps", "native"],
                        choices=("lammps", "native"), help="mlscale descriptor backends")
    parser.add_argument("--network", default="numpy", choices=("numpy", "torch"),
                        help="mlscale's network: NumPy (as `mlscale predict`) or torch "
                        "(`predict --network torch`: float32 identical to MALA's)")
    parser.add_argument("--skip", nargs="*", default=[], metavar="ATOMS:RANKS",
                        help="combinations not to run, e.g. 128:1")
    parser.add_argument("--output", type=Path, default=Path("out/compare-mala"))
    parser.add_argument("--append", action="store_true",
                        help="add to OUTPUT/runs.json of an earlier call; the table covers both")
    parser.add_argument("--mala-python", default="/work/mala-venv/bin/python")
    parser.add_argument("--mpiexec", default=shutil.which("mpiexec") or "mpiexec")
    args = parser.parse_args(argv)
    if args.mode == "worker-mala":
        worker_mala(args)
    elif args.mode == "worker-mlscale":
        worker_mlscale(args)
    else:
        drive(args)


if __name__ == "__main__":
    main()
