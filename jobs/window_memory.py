"""Traced memory per local grid point of `inference.predict` (issue 16): the density's
window against the full LDOS store, with and without the energy terms.

    OMP_NUM_THREADS=1 python jobs/window_memory.py [--model M] [--pseudopotentials DIR]
    OMP_NUM_THREADS=1 python jobs/window_memory.py --timing

--timing instead: CPU seconds of whole predictions on the built-in example's 45³ grid,
window, full store and a bracket μ is not in (the second pass), alternately, twice.

The shipped model on the built-in example and on it repeated 2 x 1 x 1, each on QE's grid
at the model's 80 Ry (45³ and 90 x 45 x 45 points: the same chunks, and the G sphere
grows with the cell as in any larger system); the slope of numpy's traced peak
(tracemalloc) between the two, so that fixed and per-chunk memory cancel. Prints one
line per case: bytes per point, peaks (MiB) and the Fermi level of each run. The last
line is the energy phase alone (`inference.energy_terms` after the prediction, beyond
the density it starts from; the whole prediction's peak with the energy terms is the
larger of it + 8 and the window's).
"""

from __future__ import annotations

import argparse
import tracemalloc

import numpy as np
from mpi4py import MPI  # noqa: F401 - before anything that loads MPI libraries

from mlscale import inference
from mlscale.examples import builtin_example, shipped_model_path
from mlscale.model import load_model
from mlscale.parallel import self_comm

REPEATS = ((1, 1, 1), (2, 1, 1))


def traced(atoms, model, shape=None, **kwargs) -> tuple[int, float, float]:
    """(points, traced peak in bytes, Fermi level in eV) of one prediction on ``shape``
    (default QE's grid)."""
    dgrid, n_electrons = inference.setup(atoms, model.info, self_comm(), shape=shape)
    tracemalloc.start()
    try:
        result = inference.predict(atoms, model, dgrid, n_electrons, chunk_points=1024, **kwargs)
        return dgrid.local_points, tracemalloc.get_traced_memory()[1], \
            result.electrons.fermi_energy_eV
    finally:
        tracemalloc.stop()


def energy_phase(atoms, model, pseudo) -> tuple[int, float, float]:
    """(points, traced peak in bytes of the energy terms alone, beyond the density they
    start from, Fermi level in eV) on QE's grid."""
    dgrid, n_electrons = inference.setup(atoms, model.info, self_comm())
    result = inference.predict(atoms, model, dgrid, n_electrons, chunk_points=1024)
    tracemalloc.start()
    try:
        inference.energy_terms(result.density_b, dgrid, atoms, pseudo, model.info,
                               result.electrons)
        return dgrid.local_points, tracemalloc.get_traced_memory()[1], \
            result.electrons.fermi_energy_eV
    finally:
        tracemalloc.stop()


def timing(atoms, model) -> None:
    """Print CPU seconds of predictions with the window, the full store and the fallback."""
    import time

    dgrid, n_electrons = inference.setup(atoms, model.info, self_comm())
    cases = {"window": {}, "full store": {"fermi_bracket": (-np.inf, np.inf)},
             "second pass": {"fermi_bracket": (0.0, 1.0)}}
    inference.predict(atoms, model, dgrid, n_electrons)  # first use
    seconds: dict[str, list[float]] = {name: [] for name in cases}
    for _ in range(2):
        for name, kwargs in cases.items():
            start = time.process_time()
            inference.predict(atoms, model, dgrid, n_electrons, **kwargs)
            seconds[name].append(time.process_time() - start)
    for name, values in seconds.items():
        print(f"{name:12s} " + ", ".join(f"{v:.2f}" for v in values) + " s CPU")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=str(shipped_model_path()))
    parser.add_argument("--pseudopotentials", default="/usr/share/espresso/pseudo")
    parser.add_argument("--timing", action="store_true", help="CPU time instead of memory")
    args = parser.parse_args()
    model, atoms = load_model(args.model, "numpy"), builtin_example()
    if args.timing:
        timing(atoms, model)
        return
    pseudo = {"Al": f"{args.pseudopotentials}/Al.pz-vbc.UPF"}
    traced(atoms, model, (12, 12, 12))  # first use of numba and numpy
    cases = {"window": {}, "full store": {"fermi_bracket": (-np.inf, np.inf)},
             "window + energy terms": {"pseudopotentials": pseudo},
             "full store + energy terms": {"pseudopotentials": pseudo,
                                           "fermi_bracket": (-np.inf, np.inf)}}
    for name, kwargs in [*cases.items(), ("energy phase beyond n(r)", None)]:
        (n1, b1, mu1), (n2, b2, mu2) = (
            traced(atoms.repeat(repeat), model, **kwargs) if kwargs is not None
            else energy_phase(atoms.repeat(repeat), model, pseudo) for repeat in REPEATS)
        per_point = (b2 - b1) / (n2 - n1)
        total = f" (+ 8 for the density: {per_point + 8:.1f})" if kwargs is None else ""
        print(f"{name:26s} {per_point:6.1f} bytes per point{total}; peaks "
              f"{b1 / 2**20:.1f} MiB at {n1} points, {b2 / 2**20:.1f} MiB at {n2}; "
              f"μ {mu1:.6f}, {mu2:.6f} eV", flush=True)


if __name__ == "__main__":
    main()
