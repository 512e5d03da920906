"""Ensemble spread against the actual error on records of the converged data set (issue 12).

    python jobs/ensemble_spread.py M1 M2 [M3 ...] [--records data/al_k4] --names NAME ...
        [--structures FILE ...]

For each record: the prediction of M1 (the `mlscale predict` pipeline, 45³ grid, total
energy with /usr/share/espresso/pseudo) with M2 … evaluated on its descriptors
(mlscale.ensemble, as `mlscale predict --model M1 --ensemble M2 ...`). Prints a Markdown
table: the RMS displacement u_rms (Å) of the record from the ideal lattice, then for the
Fermi level (meV), band and total energy (meV/atom): M1 − DFT, ensemble mean − DFT, and
the ensemble's standard deviation (ddof 1). DFT: QE's values in the record (4×4×4
shifted k-points). Then the correlation of std with |mean − DFT| over the records.
--structures: ASE-readable files without DFT (e.g. `jobs/dft_cell.py structure al900`):
their u_rms and ensemble std only.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import mpi4py.MPI  # noqa: F401
import numpy as np
from ase import Atoms
from ase.build import bulk
from ase.io import read

from mlscale import ensemble
from mlscale.datagen import read_compact_record
from mlscale.energy import find_pseudopotentials
from mlscale.grid import DistributedGrid
from mlscale.inference import grid_for, number_of_electrons
from mlscale.model import load_model
from mlscale.parallel import world

QUANTITIES = (("fermi_energy_eV", "fermi_energy_dft", 1, "E_F (meV)"),
              ("band_energy_per_atom_eV", "band_energy_dft_calculation", 32, "band (meV/atom)"),
              ("total_energy_per_atom_eV", "total_energy_dft_calculation", 32,
               "total (meV/atom)"))


def u_rms(atoms: Atoms) -> float:
    """RMS Cartesian displacement (Å) from the ideal 2×2×2 fcc lattice (a = 4.05 Å),
    nearest lattice site per atom, minimum image, the mean drift removed."""
    ideal = bulk("Al", "fcc", a=4.05, cubic=True).repeat(2).positions
    cell = np.diag(atoms.cell.lengths())
    d = atoms.positions[:, None, :] - ideal[None, :, :]
    d -= np.round(d / np.diag(cell)) * np.diag(cell)
    nearest = d[np.arange(len(atoms)), np.argmin((d ** 2).sum(-1), axis=1)]
    nearest -= nearest.mean(0)
    return float(np.sqrt((nearest ** 2).mean()))


def evaluate(models, members, records: Path, name: str, pseudo) -> dict:
    if Path(name).is_file():  # a structure without DFT
        info, atoms = None, read(name)
    else:
        info, _ = read_compact_record(records, name)
        atoms = Atoms(info["symbols"], positions=info["positions"], cell=info["cell"],
                      pbc=True)
    model = models[0]
    dgrid = DistributedGrid(grid_for(atoms, model.info), world())
    n_el = number_of_electrons(atoms, model.info.valence_electrons)
    predictions = ensemble.predict_ensemble(atoms, [*models, *members], dgrid, n_el,
                                            pseudopotentials=pseudo)
    result = ensemble.ensemble_results(predictions, [str(i) for i in range(len(predictions))],
                                       len(atoms))
    row = {"name": name, "u_rms": u_rms(atoms)}
    for key, dft_key, scale, _ in QUANTITIES:
        reference = np.nan if info is None else info[dft_key] / scale
        row[key] = (1e3 * (result["members"][0][key] - reference),
                    1e3 * (result["mean"][key] - reference), 1e3 * result["std"][key])
    return row


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", nargs="+")
    parser.add_argument("--records", type=Path, default=Path("data/al_k4"))
    parser.add_argument("--names", nargs="+", default=[])
    parser.add_argument("--structures", nargs="+", default=[])
    args = parser.parse_args(argv)
    if world().size != 1:
        raise SystemExit("ensemble_spread.py runs on one rank")
    first = load_model(Path(args.models[0]), "numpy")
    members = ensemble.load_members([Path(m) for m in args.models[1:]], first.info, "numpy",
                                    world())
    pseudo = find_pseudopotentials("/usr/share/espresso/pseudo", first.info.species)
    rows = [evaluate([first], members, args.records, name, pseudo) for name in
            [*args.names, *args.structures]]
    head = " | ".join(f"{label}: M1 − DFT | mean − DFT | std" for *_, label in QUANTITIES)
    print(f"| record | u_rms (Å) | {head} |")
    print("|---|---:|" + "---:|" * 3 * len(QUANTITIES))
    for r in rows:
        cells = " | ".join(f"{a:+.2f} | {b:+.2f} | {c:.2f}" for a, b, c in
                           (r[key] for key, *_ in QUANTITIES))
        print(f"| {r['name']} | {r['u_rms']:.3f} | {cells} |")
    if sum(np.isfinite(r["band_energy_per_atom_eV"][1]) for r in rows) > 2:
        for key, *_, label in QUANTITIES:
            std = np.array([r[key][2] for r in rows if np.isfinite(r[key][1])])
            error = np.array([abs(r[key][1]) for r in rows if np.isfinite(r[key][1])])
            print(f"{label}: Pearson r(std, |mean − DFT|) = {np.corrcoef(std, error)[0, 1]:+.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
