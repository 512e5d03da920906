"""DOS per atom of a thermal 108-atom Al cell predicted by a model: the gap check of issue 12.

    python jobs/al_size_transfer.py MODEL [MODEL ...] [--out out/size108]

Structure: 3×3×3 conventional fcc Al (a = 4.05 Å), EMT Langevin MD at 298 K (seed 108,
`thermal_fcc_snapshots`, last of 3 snapshots), written to OUT/al108.xyz. For each model:
`mlscale predict`'s DOS (45·3/2 … the model's grid for the cell), E_F for 324 electrons,
and min(DOS)/mean(DOS) on [E_F − 4 eV, E_F + 1 eV] (the LDOS's own 0.05 eV broadening).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import mpi4py.MPI  # noqa: F401
import numpy as np
from ase.io import read, write

from mlscale.datagen.structures import thermal_fcc_snapshots
from mlscale.grid import DistributedGrid
from mlscale.inference import grid_for, number_of_electrons, predict
from mlscale.model import load_model
from mlscale.parallel import world


def structure(out: Path):
    path = out / "al108.xyz"
    if not path.exists():
        atoms = thermal_fcc_snapshots("Al", 4.05, (3, 3, 3), 298.0, count=3, seed=108)[-1]
        write(path, atoms)
    return read(path)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", nargs="+")
    parser.add_argument("--out", default="out/size108")
    args = parser.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    atoms = structure(out)
    for path in args.models:
        model = load_model(Path(path), "torch")
        dgrid = DistributedGrid(grid_for(atoms, model.info), world())
        n_el = number_of_electrons(atoms, model.info.valence_electrons)
        prediction = predict(atoms, model, dgrid, n_el)
        energies, dos = prediction.energies_e, prediction.dos_e / len(atoms)
        mu = prediction.scalars()["fermi_energy_eV"]
        window = (energies >= mu - 4.0) & (energies <= mu + 1.0)
        ratio = dos[window].min() / dos[window].mean()
        np.savetxt(out / f"{Path(path).stem}.dos.txt", np.c_[energies, dos],
                   header=f"energy (eV), DOS per atom (1/eV); E_F {mu:.4f} eV")
        print(f"{path}: grid {dgrid.grid.shape}, E_F {mu:.4f} eV, "
              f"band energy/atom {prediction.scalars()['band_energy_eV'] / len(atoms):.5f} eV, "
              f"min/mean DOS on [E_F-4, E_F+1] = {ratio:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
