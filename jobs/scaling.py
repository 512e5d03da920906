"""Scaling measurements of `mlscale predict`: memory model, strong and weak scaling,
one rank's share of a 131,072-atom run (docs/scaling.md, docs/benchmarks.md "Scaling").

Run from the repository root with the venv active, one experiment at a time:

    python jobs/scaling.py model                 # the measurement model (untrained Al,
                                                 #   91-400-400-171, ecutrho 80 Ry)
    nice python jobs/scaling.py memory           # peak RSS of --only-rank shares: fit
    nice python jobs/scaling.py energy-memory    # the energy phase: 1 and 2 ranks
    nice python jobs/scaling.py strong --repeats 3   # 256 atoms on 1 and 2 ranks
    nice python jobs/scaling.py weak --repeats 3     # 32·P atoms on P = 1, 2 (4, 8 once)
    nice python jobs/scaling.py share131k        # shares of 131,072 atoms vs mlscale plan
    nice python jobs/scaling.py full --repeat 4 4 4 --ranks 2   # one end-to-end run
    python jobs/scaling.py check-plan --constants BENCH.json    # plan vs every run above

Structures are the built-in 32-atom Al example repeated; every run is a fresh process
(`mpiexec -n P`, or one process for `--only-rank` shares) with one thread per rank.
Each run appends one JSON line to OUT/runs.jsonl (default out/scaling) with wall and
CPU time per phase, peak memory per rank and the results; each experiment prints a
markdown table (medians over repeats).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "mlscale" / "data" / "al_example.xyz"
PSEUDO = "/usr/share/espresso/pseudo"
MPIEXEC = shutil.which("mpiexec", path=str(Path(sys.executable).parent)) or "mpiexec"
ENV = {k: v for k, v in os.environ.items() if not k.startswith(("PMI_", "PMIX_", "MPI"))}
ENV.update(OMP_NUM_THREADS="1", NUMBA_NUM_THREADS="1", MKL_NUM_THREADS="1")


def make_model(path: Path, ecutrho: float = 80.0, energies: int = 171):
    """Untrained Al model, 91-400-400-171 (LeakyReLU), outputs near a flat 0.02 /(eV Å³)."""
    import torch

    from mlscale.config import BispectrumSettings, EnergyGrid, ModelSettings
    from mlscale.model import LDOSModel, save_model

    torch.manual_seed(1)
    model = LDOSModel(ModelSettings(layers=(91, 400, 400, energies)))
    model.set_scaling(np.zeros(91), np.ones(91), np.full(energies, 0.02),
                      np.full(energies, 1e-5))
    metadata = {"descriptors": BispectrumSettings(species=("Al",)).to_dict(),
                "energy_grid": EnergyGrid(-4.5, 0.1, energies).to_dict(),
                "temperature_K": 298.0, "species": ["Al"], "valence_electrons": {"Al": 3},
                "ecutrho_Ry": ecutrho}
    path.parent.mkdir(parents=True, exist_ok=True)
    save_model(path, model, metadata)


def structure(out: Path, reps) -> Path:
    """The built-in example repeated ``reps`` (a, b, c), written once as extxyz."""
    path = out / "structures" / f"al_{'x'.join(map(str, reps))}.xyz"
    if not path.exists():
        from mlscale.io.structure import read_structure, write_structure

        path.parent.mkdir(parents=True, exist_ok=True)
        write_structure(path, read_structure(EXAMPLE).repeat(tuple(reps)))
    return path


def run(args, label: str, struct: Path, ranks: int = 1, extra=(), share=None) -> dict:
    """One `mlscale predict` as a fresh job; appends its record to runs.jsonl."""
    out = args.out / "runs" / f"{label}-{time.strftime('%H%M%S')}"
    command = ["predict", str(struct), "--model", str(args.model), "--descriptors", "native",
               "--chunk-points", str(args.chunk_points), "-o", str(out), *map(str, extra)]
    if share is not None:
        command += ["--only-rank", f"{share[0]}/{share[1]}"]
        launcher = [sys.executable, "-m", "mlscale"]
    else:
        launcher = [MPIEXEC, "-n", str(ranks), sys.executable, "-m", "mlscale"]
    load = os.getloadavg()[0]
    start = time.perf_counter()
    child = subprocess.Popen(launcher + command, env=ENV, stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, text=True)
    log = child.stdout.read()
    _, status, usage = os.wait4(child.pid, 0)
    wall = time.perf_counter() - start
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"{label} failed:\n{log[-3000:]}")
    results = json.loads((out / "results.json").read_text())
    record = {"label": label, "ranks": ranks, "share": share, "wall_s": wall,
              "cpu_s_all_processes": usage.ru_utime + usage.ru_stime, "load_average": load,
              "structure": struct.name, "chunk_points": args.chunk_points,
              "command": " ".join(launcher[:3] + ["mlscale"] + command), **results}
    with open(args.out / "runs.jsonl", "a") as f:
        f.write(json.dumps(record) + "\n")
    print(f"{label}: wall {wall:.1f} s, phases {fmt(results['timings_s'])}, cpu "
          f"{fmt(results['cpu_timings_s'])}, peak {results['peak_memory_per_rank_MiB']:.0f} MiB"
          f", load {load:.1f}", flush=True)
    return record


def fmt(d: dict) -> str:
    return "{" + ", ".join(f"{k} {v:.2f}" for k, v in d.items()) + "}"


def block_points(record) -> int:
    """Grid points of the (largest) block of a run."""
    from mlscale.grid import largest_block

    if isinstance(record.get("share"), list):
        from mlscale.grid import DistributedGrid, Grid

        rank, of = record["share"]
        return DistributedGrid.share(Grid(np.eye(3), tuple(record["grid"])), rank, of).local_points
    return largest_block(tuple(record["grid"]), record["ranks"]).size


# -- experiments -----------------------------------------------------------------------------
def memory(args):
    """Peak RSS of shares of growing blocks, two chunk sizes: fit M0 + b_p n + b_c c."""
    from mlscale.grid import DistributedGrid, Grid

    struct = structure(args.out, (4, 4, 4))  # 2048 atoms, 175³ grid at 80 Ry
    rows = []
    for chunk in (8192, 65536):
        args.chunk_points = chunk
        for ranks in (128, 64, 32, 16, 8):
            rec = run(args, f"memory-c{chunk}-P{ranks}", struct, share=(0, ranks))
            share = DistributedGrid.share(Grid(np.eye(3), tuple(rec["grid"])), 0, ranks)
            rows.append((share.local_points, max(c.size for c in share.slabs(chunk)),
                         rec["peak_memory_per_rank_MiB"], rec["cpu_timings_s"]))
    a = np.array([[1.0, n, c] for n, c, _, _ in rows])
    y = np.array([m for _, _, m, _ in rows])
    (m0, b_p, b_c), *_ = np.linalg.lstsq(a, y, rcond=None)
    print(f"\nfit: {m0:.1f} MiB + {b_p * 2**20:.0f} B per point + {b_c * 2**20:.0f} B per chunk "
          "point\n\n| points | chunk points | peak MiB | fit MiB | CPU s descriptors | network |")
    print("|---:|---:|---:|---:|---:|---:|")
    for (n, c, m, cpu), fit in zip(rows, a @ [m0, b_p, b_c]):
        print(f"| {n:,} | {c:,} | {m:.0f} | {fit:.0f} | {cpu['descriptors']:.1f} | "
              f"{cpu['network']:.1f} |")


def energy_memory(args):
    """Full runs with and without the energy phase on 1 and 2 ranks."""
    for reps in ((1, 1, 1), (1, 1, 2)):
        struct = structure(args.out, reps)
        for ranks in (1, 2):
            for energy in (False, True):
                extra = ["--pseudopotentials", PSEUDO] if energy else []
                run(args, f"energy-{'x'.join(map(str, reps))}-{ranks}r-{int(energy)}", struct,
                    ranks, extra)


def strong(args):
    """One system (256 atoms, 90³ = 729,000 points) on 1 and 2 ranks, interleaved."""
    struct = structure(args.out, (2, 2, 2))
    records = {1: [], 2: []}
    for _ in range(args.repeats):
        for ranks in (1, 2):
            records[ranks].append(run(args, f"strong-{ranks}r", struct, ranks))
    table(records, "ranks")


def weak(args):
    """32·P atoms on P ranks: P = 1, 2 timed (repeats), 4 and 8 once (oversubscribed)."""
    reps = {1: (1, 1, 1), 2: (1, 1, 2), 4: (1, 2, 2), 8: (2, 2, 2)}
    records = {p: [] for p in reps}
    for _ in range(args.repeats):
        for p in (1, 2):
            records[p].append(run(args, f"weak-{p}r", structure(args.out, reps[p]), p))
    for p in (4, 8):
        records[p].append(run(args, f"weak-{p}r", structure(args.out, reps[p]), p))
    table(records, "ranks")
    print("\n| ranks | atoms | band energy / atom (eV) | Fermi level (eV) "
          "| electrons from density |")
    print("|---:|---:|---:|---:|---:|")
    for p, recs in records.items():
        r = recs[0]
        print(f"| {p} | {r['atoms']} | {r['band_energy_eV'] / r['atoms']:.10f} | "
              f"{r['fermi_energy_eV']:.10f} | {r['number_of_electrons_from_density']:.8f} |")


def share131k(args):
    """Shares of the 131,072-atom run (the example repeated 16×16×16; 700³ points at 80 Ry)."""
    struct = structure(args.out, (16, 16, 16))
    for ranks in args.ranks or (4096, 512):
        for rank in (ranks - 1,):  # the last rank holds the largest block
            run(args, f"share131k-{rank}of{ranks}", struct, share=(rank, ranks))


def full(args):
    """One end-to-end run (with the energy phase) of the example repeated --repeat."""
    struct = structure(args.out, args.repeat)
    run(args, f"full-{'x'.join(map(str, args.repeat))}-{args.ranks[0]}r", struct,
        args.ranks[0], ["--pseudopotentials", PSEUDO])


def check_plan(args):
    """mlscale plan's predictions (``--constants``) against every recorded run."""
    from mlscale.costmodel import (
        memory_MiB,
        neighbours_per_point,
        network_macs,
        read_constants,
        time_s,
    )
    from mlscale.grid import Block, largest_block, slabs
    from mlscale.io.structure import read_structure
    from mlscale.model import load_model

    constants = read_constants(args.constants)
    model = load_model(args.model)
    energies, cutoff = model.info.energy_grid.count, 2 * 0.5 * 4.67637
    macs = network_macs(model.settings.layers)
    print(f"constants: {args.constants} ({constants.machine}, {constants.date})\n")
    print("| run | ranks | points per rank | memory MiB plan | measured | ratio | "
          "CPU s per rank plan | measured | ratio |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for line in open(args.out / "runs.jsonl"):
        r = json.loads(line)
        if args.labels and not any(r["label"].startswith(x) for x in args.labels):
            continue
        atoms = read_structure(args.out / "structures" / r["structure"])
        share = r.get("share")
        block = (Block(tuple(share["block_start"]), tuple(share["block_stop"])) if share
                 else largest_block(tuple(r["grid"]), r["ranks"]))
        chunk = max(c.size for c in slabs(block, r["chunk_points"]))
        energy = "--pseudopotentials" in r["command"]
        nu = neighbours_per_point(len(atoms), atoms.get_volume(), cutoff)
        memory = memory_MiB(constants, block.size, chunk, energies, len(atoms), energy)["total"]
        seconds = time_s(constants, block.size, nu, macs, energies, len(atoms), energy)["total"]
        ranks = 1 if share else r["ranks"]
        cpu = r["cpu_s_all_processes"] / ranks
        peak = r["peak_memory_per_rank_MiB"]
        print(f"| {r['label']} | {r['ranks']} | {block.size:,} | {memory:.0f} | {peak:.0f} | "
              f"{memory / peak:.2f} | {seconds:.1f} | {cpu:.1f} | {seconds / cpu:.2f} |")


def table(records: dict, key: str):
    print(f"\n| {key} | atoms | points per rank | wall s (median) | CPU s per rank: descriptors |"
          " network | electrons | output | peak MiB per rank | load |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for k, recs in records.items():
        def med(f, recs=recs):
            return statistics.median(f(r) for r in recs)

        def cpu(phase, med=med):
            return med(lambda r: r["cpu_timings_s"].get(phase, 0.0))
        print(f"| {k} | {recs[0]['atoms']} | {block_points(recs[0]):,} | "
              f"{med(lambda r: r['wall_s']):.1f} | {cpu('descriptors'):.2f} | "
              f"{cpu('network'):.2f} | {cpu('electrons'):.2f} | {cpu('output'):.2f} | "
              f"{med(lambda r: r['peak_memory_per_rank_MiB']):.0f} | "
              f"{med(lambda r: r['load_average']):.1f} |")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("experiment", choices=("model", "memory", "energy-memory", "strong",
                                               "weak", "share131k", "full", "check-plan"))
    parser.add_argument("--out", type=Path, default=ROOT / "out" / "scaling")
    parser.add_argument("--model", type=Path, help="default: OUT/al_model.safetensors")
    parser.add_argument("--chunk-points", type=int, default=8192)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--ranks", type=int, nargs="+")
    parser.add_argument("--repeat", type=int, nargs=3, default=(4, 4, 4))
    parser.add_argument("--constants", type=Path, help="check-plan: mlscale bench's JSON")
    parser.add_argument("--labels", nargs="*", help="check-plan: only runs with these label "
                        "prefixes")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    args.model = args.model or args.out / "al_model.safetensors"
    if args.experiment == "model" or not args.model.exists():
        make_model(args.model)
        print(f"model written to {args.model}")
    if args.experiment == "full" and not args.ranks:
        args.ranks = [1]
    experiments = {"memory": memory, "energy-memory": energy_memory, "strong": strong,
                   "weak": weak, "share131k": share131k, "full": full,
                   "check-plan": check_plan}
    if args.experiment in experiments:
        experiments[args.experiment](args)


if __name__ == "__main__":
    main()
