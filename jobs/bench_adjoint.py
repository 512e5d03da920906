"""Time of the bispectrum adjoint against the descriptors alone, on the same points:

    NUMBA_NUM_THREADS=1 python jobs/bench_adjoint.py [repeats]

32 Al atoms (fcc 2×2×2 of 4.05 Å, rattled 0.1 Å), twojmax 10 (91 features), 20,000
points (a 25×40×20 block of the 40³ grid), random β. Each repeat times
``native.compute_block`` then ``adjoint.bispectrum_forces`` (CPU seconds of this
process, compiled beforehand) and prints both, their ratio and the load average
(docs/benchmarks.md, "Bispectrum adjoint").
"""

from __future__ import annotations

import os
import sys
import time

os.environ.setdefault("OMP_NUM_THREADS", "1")


def main(repeats: int) -> None:
    import numba
    import numpy as np
    from ase.build import bulk

    from mlscale import BispectrumSettings, Block, Grid
    from mlscale.descriptors.adjoint import bispectrum_forces
    from mlscale.descriptors.native import compute_block

    atoms = bulk("Al", "fcc", a=4.05, cubic=True).repeat(2)
    atoms.rattle(0.1, seed=1)
    grid = Grid(atoms.cell.array, (40, 40, 40))
    block = Block((0, 0, 0), (25, 40, 20))
    settings = BispectrumSettings()
    beta_pf = np.random.default_rng(0).normal(size=(block.size, settings.n_features))
    tiny = Block((0, 0, 0), (1, 1, 1))
    compute_block(atoms, grid, tiny, settings)
    bispectrum_forces(atoms, grid, tiny, settings, beta_pf[:1])
    print(f"{len(atoms)} atoms, {block.size} points, twojmax {settings.twojmax}, "
          f"{numba.get_num_threads()} numba thread(s)")
    for _ in range(repeats):
        t0 = time.process_time()
        compute_block(atoms, grid, block, settings)
        t1 = time.process_time()
        bispectrum_forces(atoms, grid, block, settings, beta_pf)
        t2 = time.process_time()
        print(f"descriptors {t1 - t0:6.2f} s  adjoint {t2 - t1:6.2f} s  "
              f"ratio {(t2 - t1) / (t1 - t0):4.2f}  load {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 3)
