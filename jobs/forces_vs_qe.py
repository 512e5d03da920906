"""Predicted forces against Quantum ESPRESSO's on the same structure: MAE and correlation.

    python jobs/forces_vs_qe.py QE.out results.json [--plot parity.png]

QE.out: a pw.x output with ``tprnfor``; results.json: ``mlscale predict --forces`` of
the same structure. Prints the mean absolute error per component (eV/Å), the largest
error, the Pearson correlation and the mean |F| of QE, as JSON.
"""

from __future__ import annotations

import argparse
import json

import numpy as np
from ase.io import read


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("qe_output")
    parser.add_argument("results")
    parser.add_argument("--plot")
    args = parser.parse_args()
    qe_av = read(args.qe_output, format="espresso-out").get_forces()  # eV/Å
    with open(args.results) as f:
        ml_av = np.array(json.load(f)["forces_eV_per_A"])
    error = ml_av - qe_av
    print(json.dumps({"atoms": len(qe_av), "mae_eV_per_A": float(np.mean(np.abs(error))),
                      "max_error_eV_per_A": float(np.max(np.abs(error))),
                      "correlation": float(np.corrcoef(ml_av.ravel(), qe_av.ravel())[0, 1]),
                      "mean_abs_qe_eV_per_A": float(np.mean(np.abs(qe_av)))}, indent=1))
    if args.plot:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(4, 4))
        ax.scatter(qe_av.ravel(), ml_av.ravel(), s=8)
        lim = 1.1 * np.max(np.abs(np.concatenate((qe_av.ravel(), ml_av.ravel()))))
        ax.plot([-lim, lim], [-lim, lim], "k--", lw=0.8)
        ax.set(xlim=(-lim, lim), ylim=(-lim, lim), xlabel="QE force (eV/Å)",
               ylabel="mlscale force (eV/Å)")
        fig.tight_layout()
        fig.savefig(args.plot, dpi=120)


if __name__ == "__main__":
    main()
