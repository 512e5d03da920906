"""Measure this machine's per-rank cost constants for `mlscale plan` (time and memory per point).

Runs `mlscale predict --only-rank 0/P` shares of a structure (default: the built-in
example, repeated until its grid holds twice --points) in child processes with one
thread each: three share sizes (--points, half and a quarter of it) for the CPU time
per phase and the fixed memory, and, with glibc's heap kept unfragmented
(MALLOC_MMAP_THRESHOLD_), two sizes and two chunk sizes for the memory per point and
per chunk point alone; it fits the model of docs/scaling.md. In this process it times the descriptors at two atom
densities (cost per neighbour), reading and checking a large supercell (cost per atom)
and, with --pseudopotentials, the energy phase. Writes the constants as JSON (default:
$XDG_CACHE_HOME/mlscale/bench.json, i.e. ~/.cache/mlscale/bench.json). Run it as one
process on an otherwise idle node of the machine the plan is for; it takes minutes.
"""

from __future__ import annotations

import json
import math
import os
import platform
import subprocess
import sys
import tempfile
import time
import tracemalloc
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from ..errors import MlscaleError
from ..model import DEFAULT_CHUNK_POINTS


def add_arguments(parser):
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


def run(args, comm) -> int:
    from ..examples import builtin_example, shipped_model_path
    from ..inference import grid_for
    from ..io.structure import read_structure
    from ..model import load_model
    from ..plan import BenchConstants, default_constants_path, network_macs

    with comm.collective():
        if comm.size != 1:
            raise MlscaleError("run mlscale bench as one process: it measures what one rank "
                               "costs")
        if args.points < 1000 or args.chunk_points < 1:
            raise MlscaleError("--points must be >= 1000 and --chunk-points positive")
        model_path = Path(args.model) if args.model else shipped_model_path()
        model = load_model(model_path)
        info = model.info
        atoms = read_structure(args.structure) if args.structure else builtin_example()
        from ..descriptors import check_atoms

        check_atoms(atoms, info.descriptors.species)
        pseudopotentials = None
        if args.pseudopotentials:
            from ..energy import find_pseudopotentials

            pseudopotentials = find_pseudopotentials(args.pseudopotentials,
                                                     set(atoms.get_chemical_symbols()))
    _single_thread()
    output = Path(args.output) if args.output else default_constants_path()
    base, base_grid = atoms, grid_for(atoms, info)
    reps = max(1, math.ceil((2 * args.points / base_grid.npoints) ** (1 / 3)))
    atoms = base.repeat((reps, reps, reps))
    grid = grid_for(atoms, info, tuple(n * reps for n in base_grid.shape))
    energies = info.energy_grid.count
    macs = network_macs(model.settings.layers)

    with tempfile.TemporaryDirectory(prefix="mlscale-bench-") as tmp:
        from ..io.structure import write_structure

        structure = Path(tmp) / "structure.xyz"
        write_structure(structure, atoms)
        chunk = args.chunk_points
        shares = [(args.points // 4, chunk, False), (args.points // 2, chunk, False),
                  (args.points, chunk, False), (args.points // 2, chunk, True),
                  (args.points, chunk, True), (args.points, 4 * chunk, True)]
        runs, clean = [], []
        for target, chunk_points, unfragmented in shares:
            ranks = 2 ** max(0, round(math.log2(grid.npoints / target)))
            done = _share_run(structure, model_path, grid.shape, ranks, chunk_points,
                              Path(tmp) / f"run{len(runs) + len(clean)}", unfragmented)
            (clean if unfragmented else runs).append(done)
            comm.print(f"share 0/{ranks}: {done['points']} points, chunk "
                       f"{done['chunk_points']}{' (unfragmented heap)' if unfragmented else ''}"
                       f": {done['cpu_s']:.1f} s CPU, {done['peak_MiB']:.0f} MiB")
        neighbour = _descriptor_neighbours(atoms, grid, info.descriptors)
        per_atom = _atom_costs(atoms, grid, info, Path(tmp))
        energy, runs_e = {}, []
        if pseudopotentials:
            write_structure(Path(tmp) / "base.xyz", base)
            runs_e = [_child_predict(Path(tmp) / "base.xyz", model_path, base_grid.shape,
                                     extra + ["--chunk-points", str(chunk),
                                              "-o", str(Path(tmp) / f"energy{i}")])
                      for i, extra in enumerate(([], ["--pseudopotentials",
                                                      args.pseudopotentials]))]
            energy = _energy_costs(atoms, grid, pseudopotentials, info)
            energy["energy_overhead_MiB"] = max(runs_e[1]["peak_MiB"] - runs_e[0]["peak_MiB"],
                                                0.0)

    fit = fit_runs(runs, clean, macs, energies)
    d_point, d_neighbour = split_neighbours(fit["descriptor_point_s"], neighbour)
    constants = BenchConstants(
        machine=_machine(), date=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        twojmax=info.descriptors.twojmax, layers=tuple(model.settings.layers),
        energies=energies, startup_s=fit["startup_s"], atom_s=per_atom["atom_s"],
        descriptor_point_s=d_point, descriptor_neighbour_s=d_neighbour,
        network_mac_s=fit["network_mac_s"],
        electrons_point_energy_s=fit["electrons_point_energy_s"],
        output_point_s=fit["output_point_s"], overhead_MiB=fit["overhead_MiB"],
        point_bytes=fit["point_bytes"], chunk_point_bytes=fit["chunk_point_bytes"],
        atom_bytes=per_atom["atom_bytes"], **energy)
    record = {**constants.to_dict(), "model": str(model_path),
              "structure": args.structure or "built-in example",
              "supercell": [reps] * 3, "grid": list(grid.shape),
              "load_average": list(os.getloadavg()), "runs": runs, "unfragmented_runs": clean,
              "energy_runs": runs_e, "neighbour_timing": neighbour, "atom_timing": per_atom}
    from ..io.atomic import write_json_atomic

    output.parent.mkdir(parents=True, exist_ok=True)
    write_json_atomic(output, record)
    comm.print(summary(constants))
    comm.print(f"constants written to {output}")
    return 0


def fit_runs(runs: list[dict], clean: list[dict], macs: int, energies: int) -> dict:
    """Least-squares fits of the share runs.

    Time (``runs``): CPU seconds per phase linear in the points (slopes); startup = the
    median CPU time the slopes leave unexplained (imports, model, numba cache, ...).
    Memory: bytes per point and per chunk point from the ``clean`` runs (heap without
    fragmentation: the arrays alone, deterministic; two sizes at one chunk size, then a
    4x larger chunk); the fixed part from ``runs``: the median of what these leave, which
    includes what the allocator keeps of freed chunk buffers.
    """
    points = np.array([r["points"] for r in runs], dtype=float)
    ones = np.ones_like(points)
    slopes = {}
    for phase in ("descriptors", "network", "electrons", "output"):
        y = np.array([r["cpu_phases_s"].get(phase, 0.0) for r in runs])
        slopes[phase] = max(float(np.linalg.lstsq(np.stack([ones, points], 1), y,
                                                  rcond=None)[0][1]), 0.0)
    startup = np.median([r["cpu_s"] - sum(slopes.values()) * r["points"] for r in runs])

    small, large, wide = clean
    point_mib = (large["peak_MiB"] - small["peak_MiB"]) / (large["points"] - small["points"])
    chunk_mib = max((wide["peak_MiB"] - large["peak_MiB"])
                    / (wide["chunk_points"] - large["chunk_points"]), 0.0)
    overhead = np.median([r["peak_MiB"] - point_mib * r["points"] - chunk_mib * r["chunk_points"]
                          for r in runs])
    return {"startup_s": float(startup), "descriptor_point_s": slopes["descriptors"],
            "network_mac_s": slopes["network"] / macs,
            "electrons_point_energy_s": slopes["electrons"] / energies,
            "output_point_s": slopes["output"], "overhead_MiB": float(overhead),
            "point_bytes": point_mib * 1024**2, "chunk_point_bytes": chunk_mib * 1024**2}


def split_neighbours(per_point_s: float, timing: dict) -> tuple[float, float]:
    """(s per point, s per point and neighbour) from the shares' descriptor cost per point
    at ``timing['neighbours'][0]`` and the in-process ratio of the costs at two densities."""
    nu1, nu2 = timing["neighbours"]
    ratio = timing["seconds"][1] / timing["seconds"][0]
    per_neighbour = max(per_point_s * (1 - ratio) / (nu1 - nu2), 0.0)
    return per_point_s - per_neighbour * nu1, per_neighbour


def summary(c) -> str:
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


# -- measurements ---------------------------------------------------------------------------
def _share_run(structure, model_path, grid_shape, ranks, chunk_points, out,
               unfragmented=False) -> dict:
    """One `mlscale predict --only-rank 0/ranks` child: CPU time per phase, peak memory."""
    from ..grid import Block
    from ..inference import slabs

    run = _child_predict(structure, model_path, grid_shape,
                         ["--only-rank", f"0/{ranks}", "--chunk-points", str(chunk_points),
                          "-o", str(out)], unfragmented)
    share = run.pop("share")
    block = Block(tuple(share["block_start"]), tuple(share["block_stop"]))
    return {"ranks": ranks, "points": block.size,
            "chunk_points": max(c.size for c in slabs(block, chunk_points)), **run}


def _child_predict(structure, model_path, grid_shape, extra: list,
                   unfragmented: bool = False) -> dict:
    """Run `mlscale predict` (one process, one thread, native descriptors; ``extra``
    must hold ``-o DIR``): its CPU and wall time, per phase too, and peak memory.

    unfragmented: glibc returns every freed block of 1 MiB or more at once
    (MALLOC_MMAP_THRESHOLD_), so that the peak is the arrays' memory alone."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PMI_", "PMIX_", "MPI"))}
    env.update(OMP_NUM_THREADS="1", NUMBA_NUM_THREADS="1", MKL_NUM_THREADS="1")
    if unfragmented:
        env["MALLOC_MMAP_THRESHOLD_"] = str(1 << 20)
    command = [sys.executable, "-m", "mlscale", "predict", str(structure), "--model",
               str(model_path), "--descriptors", "native", "--grid", *map(str, grid_shape),
               *extra]
    out = Path(extra[extra.index("-o") + 1])
    start = time.perf_counter()
    child = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                             text=True)
    log = child.stdout.read()
    _, status, usage = os.wait4(child.pid, 0)
    child.returncode = os.waitstatus_to_exitcode(status)
    wall = time.perf_counter() - start
    if child.returncode != 0:
        raise MlscaleError(f"bench run failed ({' '.join(command)}): {log.strip()[-500:]}")
    results = json.loads((out / "results.json").read_text())
    return {"cpu_s": usage.ru_utime + usage.ru_stime, "wall_s": wall,
            "cpu_phases_s": results["cpu_timings_s"], "wall_phases_s": results["timings_s"],
            "peak_MiB": results["peak_memory_per_rank_MiB"], "share": results.get("share")}


def _descriptor_neighbours(atoms, grid, settings, points: int = 2048) -> dict:
    """Descriptor CPU time of the same block at the structure's density and 1.3³ times lower."""
    from ..descriptors.native import compute_block
    from ..grid import Block, Grid
    from ..plan import neighbours_per_point

    nz = grid.shape[2]
    block = Block((0, 0, 0), (1, min(grid.shape[1], max(1, points // nz)), nz))
    neighbours, seconds = [], []
    for scale in (1.0, 1.3):
        scaled = atoms.copy()
        scaled.set_cell(atoms.cell[:] * scale, scale_atoms=True)
        scaled_grid = Grid(scaled.cell[:], grid.shape)
        compute_block(scaled, scaled_grid, Block((0, 0, 0), (1, 1, nz)), settings)  # warm up
        best = math.inf
        for _ in range(3):
            start = time.process_time()
            compute_block(scaled, scaled_grid, block, settings)
            best = min(best, time.process_time() - start)
        neighbours.append(neighbours_per_point(len(scaled), scaled.get_volume(), settings.cutoff))
        seconds.append(best)
    return {"neighbours": neighbours, "seconds": seconds, "points": block.size}


def _atom_costs(atoms, grid, info, tmp: Path, min_atoms: int = 20000) -> dict:
    """CPU time per atom of reading, checking and selecting a rank's atoms, and the memory
    per atom that stays (traced, in a second pass: tracing slows the first down)."""
    from ..descriptors import check_atoms
    from ..io.structure import read_structure, write_structure
    from ..plan import halo_atoms, halo_c, largest_block

    reps = max(1, math.ceil((min_atoms / len(atoms)) ** (1 / 3)))
    big = atoms.repeat((reps, reps, reps))
    path = tmp / "atoms.xyz"
    write_structure(path, big)
    shape = tuple(n * reps for n in grid.shape)

    def read_and_select():
        read = read_structure(path)
        check_atoms(read, info.descriptors.species)
        cell_cv = read.cell[:]
        halo_atoms(read.positions @ np.linalg.inv(cell_cv), shape, largest_block(shape, 64),
                   halo_c(cell_cv, info.descriptors.cutoff))
        return read

    start = time.process_time()
    read_and_select()
    seconds = time.process_time() - start
    tracemalloc.start()
    kept = read_and_select()
    current = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    del kept
    return {"atoms": len(big), "atom_s": seconds / len(big), "atom_bytes": current / len(big)}


def _energy_costs(atoms, grid, pseudopotentials, info) -> dict:
    """Energy phase on a synthetic density: CPU time and traced memory per point."""
    from ..energy import density_energy_terms
    from ..parallel import self_comm

    comm = self_comm()
    block = grid.full_block()
    rng = np.random.default_rng(0)
    density_b = 0.05 * (1 + 0.1 * rng.random(grid.shape))
    density_energy_terms(density_b, grid, block, atoms, pseudopotentials, comm,
                         ecutrho_Ry=info.ecutrho_Ry)  # warm up
    tracemalloc.start()
    start = time.process_time()
    density_energy_terms(density_b, grid, block, atoms, pseudopotentials, comm,
                         ecutrho_Ry=info.ecutrho_Ry)
    seconds = time.process_time() - start
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return {"energy_point_s": seconds / grid.npoints, "energy_point_bytes": peak / grid.npoints}


def _single_thread():
    import sys

    import numba
    from threadpoolctl import threadpool_limits

    threadpool_limits(limits=1, user_api="blas")
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(1)
    numba.set_num_threads(1)


def _machine() -> str:
    model = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            model = next(line.split(":", 1)[1].strip() for line in cpuinfo
                         if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return f"{platform.node()}: {model}, {os.cpu_count()} cores"
