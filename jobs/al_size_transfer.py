"""DOS per atom of a thermal 108-atom Al cell predicted by a model: the size transfer of issue 12.

    python jobs/al_size_transfer.py MODEL [MODEL ...] [--ensemble M2 M3 ...] [--out out/size108]
        [--dft out/dft108] [--pseudopotentials /usr/share/espresso/pseudo]

Structure: 3×3×3 conventional fcc Al (a = 4.05 Å), EMT Langevin MD at 298 K (seed 108,
`thermal_fcc_snapshots`, last of 3 snapshots), written to OUT/al108.xyz (jobs/dft_108.sh
runs pw.x on the same file). For each MODEL: `mlscale predict`'s pipeline on QE's grid
at the model's ecutrho (70³), E_F for 324 electrons, band energy, total energy (with the
pseudopotentials), min(DOS)/mean(DOS) on [E_F − 4 eV, E_F + 1 eV] (the LDOS's own 0.05 eV
broadening); OUT/<model>.dos.txt and OUT/<model>.json. With --ensemble, the first MODEL's
prediction also evaluates these members on its descriptors (mlscale.ensemble, as
`mlscale predict --ensemble`): OUT/<model>.json gets the ensemble's mean and spread.
With a finished DFT run in --dft (its result.json, jobs/dft_cell.py result), prints
prediction − DFT per atom; where that run's density is there too (DFT/charge-density.dat
or DFT/qe_tmp/snapshot.save/charge-density.dat, pw.x's ρ(G)), also the density error
(mean |n − n_DFT| / mean n_DFT on the grid) and the total-energy error split into the band
energy, −TS and the density terms (E_H + E_xc − ∫ n v_Hxc, the same functional evaluated
on DFT's density): OUT/<model>.json "versus_dft".
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import mpi4py.MPI  # noqa: F401
import numpy as np
from ase.io import read, write

from mlscale import ensemble
from mlscale.datagen.structures import thermal_fcc_snapshots
from mlscale.energy import density_energy_terms, find_pseudopotentials, total_energy
from mlscale.grid import DistributedGrid
from mlscale.inference import grid_for, number_of_electrons, predict
from mlscale.io.qe_charge_density import density_from_rho_g, read_charge_density
from mlscale.model import load_model
from mlscale.parallel import world


def structure(out: Path):
    path = out / "al108.xyz"
    if not path.exists():
        atoms = thermal_fcc_snapshots("Al", 4.05, (3, 3, 3), 298.0, count=3, seed=108)[-1]
        write(path, atoms)
    return read(path)


def predict_one(atoms, path: str, members: list[str], pseudo_dir: str | None) -> dict:
    """Scalars (eV), DOS per atom (1/eV) and, with members, the ensemble entry."""
    model = load_model(Path(path), "numpy")
    dgrid = DistributedGrid(grid_for(atoms, model.info), world())
    n_el = number_of_electrons(atoms, model.info.valence_electrons)
    pseudo = (find_pseudopotentials(pseudo_dir, model.info.species) if pseudo_dir else None)
    others = ensemble.load_members([Path(m) for m in members], model.info, "numpy", world())
    if others:
        predictions = ensemble.predict_ensemble(atoms, [model, *others], dgrid, n_el,
                                                pseudopotentials=pseudo)
        prediction = predictions[0]
    else:
        prediction = predict(atoms, model, dgrid, n_el, pseudopotentials=pseudo)
    scalars = prediction.scalars()
    mu = scalars["fermi_energy_eV"]
    energies, dos = prediction.energies_e, prediction.dos_e / len(atoms)
    window = (energies >= mu - 4.0) & (energies <= mu + 1.0)
    result = {"model": path, "grid": list(dgrid.grid.shape), "atoms": len(atoms),
              "fermi_energy_eV": mu,
              "band_energy_per_atom_eV": scalars["band_energy_eV"] / len(atoms),
              "total_energy_per_atom_eV": (scalars["total_energy_eV"] / len(atoms)
                                           if pseudo else None),
              "dos_min_over_mean": float(dos[window].min() / dos[window].mean())}
    if others:
        result["ensemble"] = ensemble.ensemble_results(predictions, [path, *members],
                                                       len(atoms))
    return {"result": result, "energies": energies, "dos": dos, "prediction": prediction,
            "atoms": atoms, "pseudo": pseudo}


def dft_density_path(dft_dir: Path) -> Path | None:
    for path in (dft_dir / "charge-density.dat",
                 dft_dir / "qe_tmp" / "snapshot.save" / "charge-density.dat"):
        if path.is_file():
            return path
    return None


def versus_dft_density(run: dict, dft: dict, density_path: Path) -> dict:
    """Density error and the total-energy error by term (eV per atom) against a DFT run."""
    prediction, atoms = run["prediction"], run["atoms"]
    dgrid = prediction.dgrid
    data = read_charge_density(density_path)
    reach = np.abs(data.mill_qc).max(axis=0)
    if np.any(reach > (np.array(dgrid.shape) - 1) // 2):
        raise SystemExit(f"{density_path}: G vectors up to Miller index {reach.tolist()} do "
                         f"not fit the prediction's {list(dgrid.shape)} grid (another cell or "
                         "cutoff?)")
    n_dft = density_from_rho_g(data.rho_sq[0], data.mill_qc, dgrid.shape, data.gamma_only)
    n_dft_b = n_dft[dgrid.block.slices]
    comm = dgrid.comm
    out = {"density_relative_mae": float(
        comm.sum(float(np.abs(prediction.density_b - n_dft_b).sum()))
        / comm.sum(float(n_dft_b.sum())))}
    if run["pseudo"] is not None and prediction.energy_terms is not None:
        terms = density_energy_terms(n_dft_b, dgrid, atoms, run["pseudo"],
                                     ecutrho_Ry=prediction.energy_terms["ecutrho_Ry"])
        keys = ("double_counting_eV", "hartree_energy_eV", "xc_energy_eV")
        n = len(atoms)
        scalars = prediction.scalars()
        out.update({
            "band_energy_per_atom_eV": (scalars["band_energy_eV"] - dft["band_energy_eV"]) / n,
            "minus_TS_per_atom_eV": (scalars["entropy_contribution_eV"]
                                     - dft["minus_TS_eV"]) / n,
            "density_terms_per_atom_eV": sum(prediction.energy_terms[k] - terms[k]
                                             for k in keys) / n,
            "ewald_per_atom_eV": (prediction.energy_terms["ewald_energy_eV"]
                                  - terms["ewald_energy_eV"]) / n,
            # this functional on DFT's own density and eigenvalues − pw.x's total energy:
            # what the energy evaluation alone costs on this cell
            "functional_on_dft_inputs_per_atom_eV": (
                total_energy(dft["band_energy_eV"], dft["minus_TS_eV"], terms)
                - dft["total_energy_eV"]) / n,
        })
    return out


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", nargs="+")
    parser.add_argument("--ensemble", nargs="+", default=[],
                        help="members evaluated with the first model's descriptors")
    parser.add_argument("--out", default="out/size108")
    parser.add_argument("--dft", default="out/dft108")
    parser.add_argument("--pseudopotentials", default="/usr/share/espresso/pseudo")
    args = parser.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    atoms = structure(out)
    dft_path = Path(args.dft) / "result.json"
    dft = json.loads(dft_path.read_text()) if dft_path.is_file() else None
    density_path = dft_density_path(Path(args.dft)) if dft is not None else None
    for i, path in enumerate(args.models):
        run = predict_one(atoms, path, args.ensemble if i == 0 else [],
                          args.pseudopotentials or None)
        r = run["result"]
        if density_path is not None and dft["atoms"] == len(atoms):
            r["versus_dft"] = versus_dft_density(run, dft, density_path)
        stem = Path(path).stem
        np.savetxt(out / f"{stem}.dos.txt", np.c_[run["energies"], run["dos"]],
                   header=f"energy (eV), DOS per atom (1/eV); E_F {r['fermi_energy_eV']:.4f} eV")
        (out / f"{stem}.json").write_text(json.dumps(r, indent=1) + "\n")
        total = r["total_energy_per_atom_eV"]
        print(f"{path}: grid {r['grid']}, E_F {r['fermi_energy_eV']:.4f} eV, "
              f"band energy/atom {r['band_energy_per_atom_eV']:.5f} eV, total energy/atom "
              f"{total if total is None else f'{total:.5f}'} eV, "
              f"min/mean DOS on [E_F-4, E_F+1] = {r['dos_min_over_mean']:.3f}")
        if "ensemble" in r:
            std = r["ensemble"]["std"]
            print(f"  ensemble of {r['ensemble']['size']}: std E_F "
                  f"{1e3 * std['fermi_energy_eV']:.1f} meV, band "
                  f"{1e3 * std['band_energy_per_atom_eV']:.2f} meV/atom, total "
                  f"{1e3 * std.get('total_energy_per_atom_eV', float('nan')):.2f} meV/atom")
        if dft is not None and dft["atoms"] == len(atoms):
            n = len(atoms)
            print(f"  − DFT ({dft['kgrid']}, {dft['kpoints']} k-points): E_F "
                  f"{1e3 * (r['fermi_energy_eV'] - dft['fermi_energy_eV']):+.1f} meV, band "
                  f"{1e3 * (r['band_energy_per_atom_eV'] - dft['band_energy_eV'] / n):+.2f} "
                  f"meV/atom" + (f", total {1e3 * (total - dft['total_energy_eV'] / n):+.2f} "
                                 "meV/atom" if total is not None else "")
                  + f"; DFT min/mean DOS {dft['dos_min_over_mean']:.3f}")
        if "versus_dft" in r:
            v = r["versus_dft"]
            print(f"  density: mean |n - n_DFT| / mean n_DFT = "
                  f"{100 * v['density_relative_mae']:.3f} %")
            if "density_terms_per_atom_eV" in v:
                print("  total-energy error by term (meV/atom): band "
                      f"{1e3 * v['band_energy_per_atom_eV']:+.2f}, -TS "
                      f"{1e3 * v['minus_TS_per_atom_eV']:+.2f}, E_H + E_xc - int n v_Hxc "
                      f"{1e3 * v['density_terms_per_atom_eV']:+.2f}, Ewald "
                      f"{1e3 * v['ewald_per_atom_eV']:+.3f}; the functional on DFT's density "
                      f"and eigenvalues - pw.x: "
                      f"{1e3 * v['functional_on_dft_inputs_per_atom_eV']:+.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
