"""Predicted forces against QE's on converged-data-set records (4×4×4 shifted k).

    python jobs/forces_vs_k4.py MODEL NAME [NAME ...] [--records data/al_k4] [--plot P.png]

Each record's info.json holds the snapshot's structure and pw.x's forces
(``atomic_forces_dft``, eV/Å, ``tprnfor``) at the data set's settings (LDA Al.pz-vbc,
20/80 Ry, 4×4×4 shifted k, Fermi–Dirac 298 K; docs/dft_settings.md). The model's forces
come from :class:`mlscale.calculator.MlscaleCalculator` on QE's 45³ grid. Prints per
record and overall the force MAE per component, the largest error, the correlation and
the mean |F_QE| (eV/Å), as JSON; ``--plot`` writes a parity plot.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import mpi4py.MPI  # noqa: F401  (before anything that loads LAMMPS)
import numpy as np
from ase import Atoms

from mlscale.calculator import MlscaleCalculator

PSEUDO = "/usr/share/espresso/pseudo"


def record_atoms(info: dict) -> tuple[Atoms, np.ndarray]:
    """The record's structure (Å) and QE's forces [atoms, 3] (eV/Å)."""
    atoms = Atoms(info["symbols"], positions=info["positions"], cell=info["cell"], pbc=True)
    return atoms, np.array(info["atomic_forces_dft"], dtype=float)


def stats(ml: np.ndarray, qe: np.ndarray) -> dict:
    error = ml - qe
    return {"components": int(qe.size), "mae_eV_per_A": float(np.mean(np.abs(error))),
            "max_error_eV_per_A": float(np.max(np.abs(error))),
            "correlation": float(np.corrcoef(ml.ravel(), qe.ravel())[0, 1]),
            "mean_abs_qe_eV_per_A": float(np.mean(np.abs(qe)))}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("model")
    parser.add_argument("names", nargs="+")
    parser.add_argument("--records", default="data/al_k4")
    parser.add_argument("--pseudopotentials", default=PSEUDO)
    parser.add_argument("--plot")
    args = parser.parse_args()
    calc = MlscaleCalculator(args.model, pseudopotentials={
        "Al": str(Path(args.pseudopotentials) / "Al.pz-vbc.UPF")})
    out, all_ml, all_qe = {}, [], []
    for name in args.names:
        info = json.loads((Path(args.records) / f"{name}.info.json").read_text())
        atoms, qe = record_atoms(info)
        atoms.calc = calc
        start = time.perf_counter()
        ml = atoms.get_forces()
        out[name] = {**stats(ml, qe), "seconds": round(time.perf_counter() - start, 1)}
        all_ml.append(ml)
        all_qe.append(qe)
    ml_all, qe_all = np.concatenate(all_ml), np.concatenate(all_qe)
    out["all"] = stats(ml_all, qe_all)
    print(json.dumps(out, indent=1))
    if args.plot:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(4, 4))
        for name, ml, qe in zip(args.names, all_ml, all_qe):
            ax.scatter(qe.ravel(), ml.ravel(), s=6, label=name)
        lim = 1.1 * np.max(np.abs(np.concatenate((ml_all.ravel(), qe_all.ravel()))))
        ax.plot([-lim, lim], [-lim, lim], "k--", lw=0.8)
        ax.set(xlim=(-lim, lim), ylim=(-lim, lim), xlabel="QE force, 4×4×4 k (eV/Å)",
               ylabel="mlscale force (eV/Å)",
               title=f"MAE {out['all']['mae_eV_per_A']:.3f} eV/Å, "
                     f"r = {out['all']['correlation']:.2f}")
        ax.legend(fontsize=6)
        fig.tight_layout()
        fig.savefig(args.plot, dpi=120)


if __name__ == "__main__":
    main()
