"""Peak memory and CPU per phase of one prediction with the NumPy network (what
`mlscale predict` runs) or the torch LDOSModel, in this fresh process, one thread:

    python jobs/network_ab.py numpy; python jobs/network_ab.py torch   # alternate, repeat

The built-in example repeated 2×1×1 (64 atoms, 182,250 points) with the shipped model;
prints the CPU seconds per phase, the peak resident memory (MiB), E_F and E_band, and
whether torch was loaded (docs/scaling.md, "Memory model").
"""

from __future__ import annotations

import os
import sys

os.environ.setdefault("OMP_NUM_THREADS", "1")


def main(mode: str) -> None:
    import numba
    from threadpoolctl import threadpool_limits

    from mlscale import inference, output
    from mlscale.examples import builtin_example, shipped_model_path
    from mlscale.model import DEFAULT_CHUNK_POINTS, load_model
    from mlscale.parallel import world
    from mlscale.timing import Timings

    if mode not in ("numpy", "torch"):
        raise SystemExit("usage: python jobs/network_ab.py numpy|torch")
    model = load_model(shipped_model_path(), mode)
    if mode == "torch":
        import torch

        torch.set_num_threads(1)
    threadpool_limits(1, "blas")
    numba.set_num_threads(1)
    atoms, comm, timings = builtin_example().repeat((2, 1, 1)), world(), Timings()
    dgrid, n_electrons = inference.setup(atoms, model.info, comm)
    prediction = inference.predict(atoms, model, dgrid, n_electrons,
                                   chunk_points=DEFAULT_CHUNK_POINTS, timings=timings)
    r = {**prediction.scalars(), **output.timing_results(timings, comm)}
    print(mode, "cpu", {k: round(v, 2) for k, v in r["cpu_timings_s"].items()},
          "peak MiB", round(r["peak_memory_per_rank_MiB"]), "E_F", r["fermi_energy_eV"],
          "E_band", r["band_energy_eV"], "torch loaded:", "torch" in sys.modules)


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "")
