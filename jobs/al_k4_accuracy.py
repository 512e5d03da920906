"""Accuracy of an LDOS model on records of the converged data set (data/al_k4).

    python jobs/al_k4_accuracy.py MODEL NAME [NAME ...] [--records data/al_k4]

For each record: the `mlscale predict` pipeline on the record's 32 atoms (45³ grid,
Fermi level for the exact electron count, total energy with the UPF files of
/usr/share/espresso/pseudo) against QE's values in the record (4×4×4 shifted k-points):
Fermi level (meV), band energy (Σ f ε from pw.x's eigenvalues) and total energy
(meV/atom), density mean |Δn| / mean n over all points (QE: pp.x's density), and the
floor: the band energy and Fermi level of DFT's own full-grid DOS (`dos_e`) through the
same electron functions. Errors are prediction − DFT. Prints a Markdown table.

    python jobs/al_k4_accuracy.py MODEL NAME ... --points [--arrays out/al_k4_train]

instead compares at the record's stored stride-3 points only (what training sees): the
band energy of the DOS V·mean(LDOS) over those points, from the stored DFT LDOS minus
that of the full-grid `dos_e` (the subsample's own cost), and from the model's LDOS at
the same points (descriptors from jobs/export_k4_records.py) minus the stored DFT LDOS's
(the network's bias on those points), meV/atom, E_F for the exact electron count.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import mpi4py.MPI  # noqa: F401
import numpy as np
from ase import Atoms

from mlscale import electrons
from mlscale.datagen import read_compact_record
from mlscale.energy import find_pseudopotentials
from mlscale.grid import DistributedGrid
from mlscale.inference import grid_for, number_of_electrons, predict
from mlscale.model import load_model
from mlscale.parallel import world


def evaluate(model, records: Path, name: str) -> dict:
    info, arrays = read_compact_record(records, name)
    atoms = Atoms(info["symbols"], positions=info["positions"], cell=info["cell"], pbc=True)
    grid = grid_for(atoms, model.info)
    dgrid = DistributedGrid(grid, world())
    pseudo = find_pseudopotentials("/usr/share/espresso/pseudo", model.info.species)
    n_el = number_of_electrons(atoms, model.info.valence_electrons)
    prediction = predict(atoms, model, dgrid, n_el, pseudopotentials=pseudo)
    result = prediction.scalars()
    n_atoms = len(atoms)
    floor = electrons.electronic_structure(np.asarray(arrays["dos_e"]),
                                           model.info.energy_grid.energies, n_el,
                                           model.info.temperature_K)
    density_dft = np.asarray(arrays["density_b"], dtype=np.float64)
    density_b = np.asarray(prediction.density_b, dtype=np.float64)  # serial: the whole grid
    return {
        "name": name,
        "fermi_meV": 1e3 * (result["fermi_energy_eV"] - info["fermi_energy_dft"]),
        "band_meV": 1e3 * (result["band_energy_eV"] - info["band_energy_dft_calculation"])
        / n_atoms,
        "total_meV": 1e3 * (result["total_energy_eV"] - info["total_energy_dft_calculation"])
        / n_atoms,
        "floor_band_meV": 1e3 * (floor["band_energy_eV"] - info["band_energy_dft_calculation"])
        / n_atoms,
        "floor_fermi_meV": 1e3 * (floor["fermi_energy_eV"] - info["fermi_energy_dft"]),
        "density_mae_pct": 100 * float(np.abs(density_b - density_dft).mean() / density_dft.mean()),
    }


def points_bias(model, records: Path, arrays: Path, name: str) -> tuple[float, float]:
    """(stride-3 DFT − full-grid DFT, model − stride-3 DFT) band energies, meV/atom."""
    info, stored = read_compact_record(records, name)
    volume = abs(float(np.linalg.det(np.asarray(info["cell"], dtype=float))))
    n_el, energies = float(info["number_of_electrons_exact"]), model.info.energy_grid.energies

    def band(dos_e):
        return electrons.electronic_structure(dos_e, energies, n_el, model.info.temperature_K)[
            "band_energy_eV"]

    n_features = model.info.descriptors.n_features
    descriptors_pf = np.load(arrays / f"{name}.in.npy").reshape(-1, n_features)
    predicted = np.asarray(model(descriptors_pf.astype(np.float32), 4096), dtype=np.float64)
    full, sub = band(np.asarray(stored["dos_e"])), band(
        volume * np.asarray(stored["ldos_ge"], dtype=np.float64).mean(axis=0))
    n_atoms = len(info["symbols"])
    model_band = band(volume * predicted.mean(axis=0))
    return 1e3 * (sub - full) / n_atoms, 1e3 * (model_band - sub) / n_atoms


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model")
    parser.add_argument("names", nargs="+")
    parser.add_argument("--records", default="data/al_k4")
    parser.add_argument("--points", action="store_true",
                        help="band-energy bias at the records' stored stride-3 points")
    parser.add_argument("--arrays", default="out/al_k4_train")
    args = parser.parse_args(argv)
    if world().size != 1:
        raise SystemExit("al_k4_accuracy.py runs on one rank")
    model = load_model(Path(args.model), "torch")
    if args.points:
        print("| record | stride-3 DFT − full DFT (meV/atom) | model − DFT at those points "
              "(meV/atom) |\n|---|---:|---:|")
        for name in args.names:
            print("| {} | {:+.2f} | {:+.2f} |".format(
                name, *points_bias(model, Path(args.records), Path(args.arrays), name)))
        return 0
    rows = [evaluate(model, Path(args.records), name) for name in args.names]
    print("| record | Fermi level (meV) | band energy (meV/atom) | total energy (meV/atom) "
          "| density MAE/mean (%) | floor band energy (meV/atom) | floor Fermi level (meV) |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['name']} | {r['fermi_meV']:+.1f} | {r['band_meV']:+.2f} | "
              f"{r['total_meV']:+.2f} | {r['density_mae_pct']:.3f} | "
              f"{r['floor_band_meV']:+.2f} | {r['floor_fermi_meV']:+.1f} |")
    for key in ("fermi_meV", "band_meV", "total_meV"):
        print(f"mean abs {key}: {np.mean([abs(r[key]) for r in rows]):.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
