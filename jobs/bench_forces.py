"""Cost of forces against an energy-only prediction, side by side in one process.

    OMP_NUM_THREADS=1 NUMBA_NUM_THREADS=1 python jobs/bench_forces.py [--repeat 2]

The built-in 32-atom Al example with the shipped model and Al.pz-vbc.UPF: a warm-up
(numba compilation), then per repeat one energy-only prediction and one with forces.
Prints wall and CPU seconds per phase as JSON, with the load average and the CPU model.
"""

from __future__ import annotations

import argparse
import json
import os
import time

from mlscale import inference
from mlscale.examples import builtin_example, shipped_model_path
from mlscale.model import load_model
from mlscale.parallel import world
from mlscale.timing import Timings, peak_rss_mib

PSEUDO = {"Al": "/usr/share/espresso/pseudo/Al.pz-vbc.UPF"}


def run(atoms, model, comm, with_forces: bool) -> dict:
    timings = Timings()
    start = time.perf_counter()
    dgrid, n_electrons = inference.setup(atoms, model.info, comm, with_energy=True)
    inference.predict(atoms, model, dgrid, n_electrons, pseudopotentials=PSEUDO,
                      with_forces=with_forces, timings=timings)
    return {"wall_s": time.perf_counter() - start, "phases_s": timings.seconds,
            "phases_cpu_s": timings.cpu_seconds,
            "grid": list(dgrid.shape)}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeat", type=int, default=1)
    args = parser.parse_args()
    comm = world()
    atoms = builtin_example()
    model = load_model(shipped_model_path())
    small = atoms[:4]  # warm-up: compile the kernels on a cheap case
    small.set_cell(atoms.cell.array / 2, scale_atoms=False)
    warm = time.perf_counter()
    dgrid, n = inference.setup(small, model.info, comm, with_energy=True)
    inference.predict(small, model, dgrid, n, pseudopotentials=PSEUDO, with_forces=True)
    out = {"warm_up_s": time.perf_counter() - warm, "runs": []}
    for _ in range(args.repeat):
        out["runs"].append({"energy": run(atoms, model, comm, False),
                            "forces": run(atoms, model, comm, True)})
    out["peak_rss_mib"] = peak_rss_mib()
    out["loadavg"] = os.getloadavg()
    out["ranks"] = comm.size
    comm.print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
