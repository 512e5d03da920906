"""Measure this machine's per-rank cost constants (what ``mlscale bench`` does).

:func:`measure` runs ``mlscale predict --only-rank 0/P`` shares of a structure
(repeated until its grid holds twice ``points``) in child processes with one thread
each: three share sizes (``points``, half and a quarter of it) for the CPU time per
phase and the fixed memory, and, with glibc's heap kept unfragmented
(MALLOC_MMAP_THRESHOLD_), two sizes and two chunk sizes for the memory per point and
per chunk point alone; :func:`fit_runs` fits the model of docs/scaling.md
(:mod:`mlscale.costmodel.predict`). In this process it times the descriptors at two
atom densities (cost per neighbour), reading and checking a large supercell (cost per
atom) and, with pseudopotentials, the energy phase. Times are CPU seconds, memory the
processes' peak resident memory (MiB) or traced allocations (bytes).
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
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import numba
import numpy as np
from ase import Atoms
from threadpoolctl import threadpool_limits

from ..config import BispectrumSettings
from ..descriptors import check_atoms
from ..descriptors.native import compute_block
from ..electrons import kept_energies
from ..energy import density_energy_terms
from ..errors import MlscaleError
from ..grid import Block, DistributedGrid, Grid, halo_atoms, halo_c, largest_block, slabs
from ..io.structure import read_structure, write_structure
from ..model import ModelInfo
from .constants import BenchConstants
from .predict import neighbours_per_point, network_macs


@dataclass(frozen=True)
class BenchPlan:
    """What to measure: share sizes and, optionally, the energy phase."""

    points: int = 250000             # grid points of the largest share
    chunk_points: int = 8192         # chunk size of the shares (and 4x that once)
    pseudopotentials_dir: str | None = None  # UPF directory: also the energy phase
    pseudopotentials: dict | None = None     # element -> UPF path, found in that directory

    def __post_init__(self) -> None:
        if self.points < 1000 or self.chunk_points < 1:
            raise MlscaleError("--points must be >= 1000 and --chunk-points positive")
        if (self.pseudopotentials_dir is None) != (self.pseudopotentials is None):
            raise MlscaleError("give the pseudopotentials' directory and the files found in "
                               "it, or neither")


def measure(model_path: Path, info: ModelInfo, atoms: Atoms, base_shape: tuple[int, int, int],
            plan: BenchPlan, progress: Callable[[str], None] = print
            ) -> tuple[BenchConstants, dict]:
    """Measure and fit the constants of the model ``model_path`` (its metadata: ``info``)
    on ``atoms`` (Å; ``base_shape``: its grid) repeated.

    Limits this process to one thread. Returns the constants and the record of what they
    were fitted from (the supercell, its grid, every run's times and peaks, the load
    average); ``progress`` receives one line per share run.
    """
    single_thread()
    big, shape, reps = bench_supercell(atoms, base_shape, plan.points)
    grid = Grid(np.array(big.cell[:]), shape)
    with tempfile.TemporaryDirectory(prefix="mlscale-bench-") as name:
        tmp = Path(name)
        write_structure(tmp / "structure.xyz", big)
        runs, clean = measure_shares(tmp / "structure.xyz", model_path, shape, plan, tmp,
                                     progress)
        neighbour = descriptor_neighbours(big, grid, info.descriptors)
        per_atom = atom_costs(big, grid, info.descriptors, tmp)
        energy: dict[str, float] = {}
        runs_e: list[dict] = []
        if plan.pseudopotentials_dir is not None and plan.pseudopotentials is not None:
            energy, runs_e = measure_energy(model_path, info, atoms, base_shape, big, grid,
                                            plan, tmp)
    fit = fit_runs(runs, clean, network_macs(info.settings.layers), info.energy_grid.count)
    constants = constants_from_fits(info, fit, neighbour, per_atom, energy)
    record = {"supercell": [reps] * 3, "grid": list(shape),
              "load_average": list(os.getloadavg()), "runs": runs, "unfragmented_runs": clean,
              "energy_runs": runs_e, "neighbour_timing": neighbour, "atom_timing": per_atom}
    return constants, record


def bench_supercell(atoms: Atoms, base_shape: tuple[int, int, int], points: int
                    ) -> tuple[Atoms, tuple[int, int, int], int]:
    """``atoms`` repeated r×r×r, r the least with at least twice ``points`` grid points:
    (supercell, its grid shape, r)."""
    reps = max(1, math.ceil((2 * points / int(np.prod(base_shape))) ** (1 / 3)))
    shape = (base_shape[0] * reps, base_shape[1] * reps, base_shape[2] * reps)
    return atoms.repeat((reps, reps, reps)), shape, reps


def measure_shares(structure: Path, model_path: Path, grid_shape: tuple[int, int, int],
                   plan: BenchPlan, tmp: Path, progress: Callable[[str], None]
                   ) -> tuple[list[dict], list[dict]]:
    """The share runs: (runs with the default heap, runs with an unfragmented heap)."""
    chunk = plan.chunk_points
    shares = [(plan.points // 4, chunk, False), (plan.points // 2, chunk, False),
              (plan.points, chunk, False), (plan.points // 2, chunk, True),
              (plan.points, chunk, True), (plan.points, 4 * chunk, True)]
    npoints = int(np.prod(grid_shape))
    runs: list[dict] = []
    clean: list[dict] = []
    for target, chunk_points, unfragmented in shares:
        ranks = 2 ** max(0, round(math.log2(npoints / target)))
        done = share_run(structure, model_path, grid_shape, ranks, chunk_points,
                         tmp / f"run{len(runs) + len(clean)}", unfragmented)
        (clean if unfragmented else runs).append(done)
        progress(f"share 0/{ranks}: {done['points']} points, chunk {done['chunk_points']}"
                 f"{' (unfragmented heap)' if unfragmented else ''}: {done['cpu_s']:.1f} s CPU, "
                 f"{done['peak_MiB']:.0f} MiB")
    return runs, clean


def measure_energy(model_path: Path, info: ModelInfo, base: Atoms,
                   base_shape: tuple[int, int, int], atoms: Atoms, grid: Grid, plan: BenchPlan,
                   tmp: Path) -> tuple[dict, list[dict]]:
    """The energy phase: its CPU time and memory per point on the supercell's grid, and
    its fixed memory from two whole predictions of ``base`` (without and with it)."""
    if plan.pseudopotentials_dir is None or plan.pseudopotentials is None:
        raise MlscaleError("the energy phase needs pseudopotentials")
    write_structure(tmp / "base.xyz", base)
    runs = [child_predict(tmp / "base.xyz", model_path, base_shape,
                          [*extra, "--chunk-points", str(plan.chunk_points),
                           "-o", str(tmp / f"energy{i}")])
            for i, extra in enumerate(([], ["--pseudopotentials", plan.pseudopotentials_dir]))]
    energy = energy_costs(atoms, grid, plan.pseudopotentials, info.ecutrho_Ry)
    energy["energy_overhead_MiB"] = max(runs[1]["peak_MiB"] - runs[0]["peak_MiB"], 0.0)
    return energy, runs


def constants_from_fits(info: ModelInfo, fit: dict, neighbour: dict, per_atom: dict,
                        energy: dict) -> BenchConstants:
    """The constants from :func:`fit_runs`, :func:`descriptor_neighbours`,
    :func:`atom_costs` and (may be empty) the energy phase's."""
    d_point, d_neighbour = split_neighbours(fit["descriptor_point_s"], neighbour)
    return BenchConstants(
        machine=machine(), date=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        twojmax=info.descriptors.twojmax, layers=tuple(info.settings.layers),
        energies=info.energy_grid.count, startup_s=fit["startup_s"], atom_s=per_atom["atom_s"],
        descriptor_point_s=d_point, descriptor_neighbour_s=d_neighbour,
        network_mac_s=fit["network_mac_s"],
        electrons_point_energy_s=fit["electrons_point_energy_s"],
        output_point_s=fit["output_point_s"], overhead_MiB=fit["overhead_MiB"],
        point_bytes=fit["point_bytes"], chunk_point_bytes=fit["chunk_point_bytes"],
        atom_bytes=per_atom["atom_bytes"],
        kept_energies=kept_energies(info.energy_grid.energies, info.temperature_K), **energy)


# -- fits -------------------------------------------------------------------------------------
def fit_runs(runs: list[dict], clean: list[dict], macs: int, energies: int) -> dict:
    """Least-squares fits of the share runs.

    Time (``runs``): CPU seconds per phase linear in the points (slopes), each run's
    time first scaled to one density pass (:func:`one_pass_fraction`); startup = the
    median CPU time the slopes leave unexplained (imports, model, numba cache, ...).
    Memory: bytes per point and per chunk point from the ``clean`` runs (heap without
    fragmentation: the arrays alone, deterministic; two sizes at one chunk size, then a
    4x larger chunk); the fixed part from ``runs``: the median of what these leave, which
    includes what the allocator keeps of freed chunk buffers.
    """
    points = np.array([r["points"] for r in runs], dtype=float)
    ones = np.ones_like(points)
    slopes = {}
    one_pass = np.array([one_pass_fraction(r) for r in runs])
    extra = np.zeros_like(points)  # CPU seconds of second passes, per run
    for phase in ("descriptors", "network", "electrons", "output"):
        raw = np.array([r["cpu_phases_s"].get(phase, 0.0) for r in runs])
        y = raw * (one_pass[:, 0] if phase in ("descriptors", "network")
                   else one_pass[:, 1] if phase == "electrons" else 1.0)
        extra += raw - y
        slopes[phase] = max(float(np.linalg.lstsq(np.stack([ones, points], 1), y,
                                                  rcond=None)[0][1]), 0.0)
    startup = np.median([r["cpu_s"] - e - sum(slopes.values()) * r["points"]
                         for r, e in zip(runs, extra)])

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


def one_pass_fraction(run: dict) -> tuple[float, float]:
    """The share of a run's (descriptor and network, electrons) time that a job of one
    density pass spends: a run whose solved Fermi level fell outside its first window made
    a second pass over its points (results.json ``counts``: ``density_passes``), which the
    job it stands for need not (its estimate, from the whole grid, is the better one:
    docs/scaling.md). Descriptors and network: (points + estimate points) / (passes ·
    points + estimate points); electrons: 1 / passes. (1, 1) for one pass or no counts."""
    counts = run.get("counts") or {}
    passes = max(int(counts.get("density_passes", 1)), 1)
    estimate = float(counts.get("estimate_points", 0))
    points = float(run["points"])
    return (points + estimate) / (passes * points + estimate), 1.0 / passes


def split_neighbours(per_point_s: float, timing: dict) -> tuple[float, float]:
    """(s per point, s per point and neighbour) from the shares' descriptor cost per point
    at ``timing['neighbours'][0]`` and the in-process ratio of the costs at two densities."""
    nu1, nu2 = timing["neighbours"]
    ratio = timing["seconds"][1] / timing["seconds"][0]
    per_neighbour = max(per_point_s * (1 - ratio) / (nu1 - nu2), 0.0)
    return per_point_s - per_neighbour * nu1, per_neighbour


# -- measurements -----------------------------------------------------------------------------
def share_run(structure: Path, model_path: Path, grid_shape: tuple[int, int, int], ranks: int,
              chunk_points: int, out: Path, unfragmented: bool = False) -> dict:
    """One `mlscale predict --only-rank 0/ranks` child: CPU time per phase, peak memory."""
    run = child_predict(structure, model_path, grid_shape,
                        ["--only-rank", f"0/{ranks}", "--chunk-points", str(chunk_points),
                         "-o", str(out)], unfragmented)
    share = run.pop("share")
    block = Block(tuple(share["block_start"]), tuple(share["block_stop"]))
    return {"ranks": ranks, "points": block.size,
            "chunk_points": max(c.size for c in slabs(block, chunk_points)), **run}


def child_predict(structure: Path, model_path: Path, grid_shape: tuple[int, int, int],
                  extra: list[str], unfragmented: bool = False) -> dict:
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
    log = child.stdout.read() if child.stdout is not None else ""
    _, status, usage = os.wait4(child.pid, 0)
    child.returncode = os.waitstatus_to_exitcode(status)
    wall = time.perf_counter() - start
    if child.returncode != 0:
        raise MlscaleError(f"bench run failed ({' '.join(command)}): {log.strip()[-500:]}")
    results = json.loads((out / "results.json").read_text())
    return {"cpu_s": usage.ru_utime + usage.ru_stime, "wall_s": wall,
            "cpu_phases_s": results["cpu_timings_s"], "wall_phases_s": results["timings_s"],
            "peak_MiB": results["peak_memory_per_rank_MiB"], "share": results.get("share"),
            "counts": results.get("counts", {})}


def descriptor_neighbours(atoms: Atoms, grid: Grid, settings: BispectrumSettings,
                          points: int = 2048) -> dict:
    """Descriptor CPU time (s) of the same block at the structure's density and 1.3³ times
    lower, with the neighbours per point of each."""
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


def atom_costs(atoms: Atoms, grid: Grid, settings: BispectrumSettings, tmp: Path,
               min_atoms: int = 20000) -> dict:
    """CPU time (s) per atom of reading, checking and selecting a rank's atoms, and the
    memory (bytes) per atom that stays (traced, in a second pass: tracing slows the first
    down)."""
    reps = max(1, math.ceil((min_atoms / len(atoms)) ** (1 / 3)))
    big = atoms.repeat((reps, reps, reps))
    path = tmp / "atoms.xyz"
    write_structure(path, big)
    shape = tuple(n * reps for n in grid.shape)

    def read_and_select() -> Atoms:
        read = read_structure(path)
        check_atoms(read, settings.species)
        cell_cv = read.cell[:]
        halo_atoms(read.positions @ np.linalg.inv(cell_cv), shape, largest_block(shape, 64),
                   halo_c(cell_cv, settings.cutoff))
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


def energy_costs(atoms: Atoms, grid: Grid, pseudopotentials: dict,
                 ecutrho_Ry: float | None) -> dict:
    """Energy phase on a synthetic density: CPU time (s) and traced memory (bytes) per
    point. ecutrho_Ry: the G sphere of the sums (Ry), if the grid holds it.

    The memory is numpy's traced peak of :func:`density_energy_terms` (the density
    allocated before, so beyond it) divided by the points, its fixed part included (the
    pieces of the chunked loops and the Ewald sum's images, ~1-4 MiB): on the shipped
    model's 90³ bench grid 17.3 bytes per point, the FFT's two work arrays (16.2) and
    those; the plan counts (8 + it) per point for the phase."""
    dgrid = DistributedGrid(grid)
    rng = np.random.default_rng(0)
    density_b = 0.05 * (1 + 0.1 * rng.random(grid.shape))
    try:  # warm up
        density_energy_terms(density_b, dgrid, atoms, pseudopotentials, ecutrho_Ry=ecutrho_Ry)
    except MlscaleError:
        # the G box of the repeated grid (an even multiple of an odd one) can be too small
        # for the model's sphere: then the sphere it holds (about as large; same cost)
        ecutrho_Ry = None
        density_energy_terms(density_b, dgrid, atoms, pseudopotentials, ecutrho_Ry=None)
    tracemalloc.start()
    start = time.process_time()
    density_energy_terms(density_b, dgrid, atoms, pseudopotentials, ecutrho_Ry=ecutrho_Ry)
    seconds = time.process_time() - start
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return {"energy_point_s": seconds / grid.npoints, "energy_point_bytes": peak / grid.npoints}


def single_thread() -> None:
    """Limit this process's BLAS, numba (and torch, if loaded) to one thread."""
    threadpool_limits(limits=1, user_api="blas")
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(1)
    numba.set_num_threads(1)


def machine() -> str:
    """Host name, CPU model and core count of this machine."""
    model = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            model = next(line.split(":", 1)[1].strip() for line in cpuinfo
                         if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return f"{platform.node()}: {model}, {os.cpu_count()} cores"
