"""Regenerate mala_electrons_reference.json by running MALA 1.4.0 on the Be2 LDOS.

Run with the separate MALA venv (not mlscale's), from the repository root:

    /work/mala-venv/bin/python tests/data/make_mala_electrons_reference.py

Reads MALA's public Be2 test data (``$MLSCALE_MALA_DATA/Be2``, default
``../shared/mala-test-data/Be2``): the LDOS ``Be_snapshot{0,1}.out.npy`` and the QE
outputs ``Be_snapshot{0,1}.out`` (temperature, electron count, cell, grid), which MALA
parses itself. Stores, for MALA's "analytical" energy integration and its
trapezoid rule ("trapezoid"; "trapz" for the band energy, as MALA 1.4.0 names it
there), the DOS, the self-consistent Fermi level, band energy, entropy term, electron
count and a summary of the density; plus MALA's raw analytical weight vectors
(``analytical_integration`` applied to unit vectors) for a few (mu, T) cases.
"""

import json
import os
import sys
from pathlib import Path

import mala
import numpy as np
from mala.targets.calculation_helpers import analytical_integration

HERE = Path(__file__).resolve().parent
DATA = Path(os.environ.get("MLSCALE_MALA_DATA", HERE.parents[2] / "shared" / "mala-test-data")) / "Be2"
OUTPUT = HERE / "mala_electrons_reference.json"

# MALA's LDOS energy grid of the Be2 data: 11 energies from -5 eV, step 2.5 eV.
GRID = dict(ldos_gridsize=11, ldos_gridspacing_ev=2.5, ldos_gridoffset_ev=-5.0)
# Flat (C-order [x, y, z]) indices at which the density is stored.
DENSITY_INDICES = [0, 1, 26, 27, 485, 1000, 2187, 4373, 4374, 6561, 8000, 8747]
# (energy grid start, step, count, mu, T) for raw weight vectors.
WEIGHT_CASES = [
    (-5.0, 2.5, 11, 8.7430, 299.98637294316444),
    (-5.0, 2.5, 11, -5.0, 299.98637294316444),
    (-5.0, 2.5, 11, 20.0, 299.98637294316444),
    (-5.0, 2.5, 11, 6.1, 3000.0),
    (-5.0, 2.5, 11, 3.3, 30000.0),
    (-2.0, 0.1, 40, 0.05, 116.0),
    (-2.0, 0.1, 40, 0.0, 1160.0),
]
FUNCTIONS = {"occupation": ("F0", "F1"), "band_energy_minus_mu_n": ("F1", "F2"),
             "entropy": ("S0", "S1")}


def ldos_calculator(snapshot):
    params = mala.Parameters()
    for key, value in GRID.items():
        setattr(params.targets, key, value)
    ldos = mala.LDOS.from_numpy_file(params, str(DATA / f"Be_snapshot{snapshot}.out.npy"))
    ldos.read_additional_calculation_data(str(DATA / f"Be_snapshot{snapshot}.out"))
    return ldos


def snapshot_reference(snapshot):
    ldos = ldos_calculator(snapshot)
    data = ldos.local_density_of_states
    dos = ldos.get_density_of_states(data)
    dos_calc = mala.DOS.from_ldos_calculator(ldos)
    T = float(ldos.temperature)
    result = {
        "ldos_file": f"Be_snapshot{snapshot}.out.npy",
        "temperature_K": T,
        "number_of_electrons_exact": float(ldos.number_of_electrons_exact),
        "voxel_volume_A3": float(ldos.voxel.volume),
        "grid_shape": [int(n) for n in data.shape[:3]],
        "energies_eV": [float(e) for e in ldos.energy_grid],
        "dos_per_eV": [float(d) for d in dos],
        "methods": {},
    }
    for ours, mala_method, mala_band in (("analytical", "analytical", "analytical"),
                                         ("quadrature", "trapezoid", "trapz")):
        mu = float(dos_calc.get_self_consistent_fermi_energy(
            dos, temperature=T, integration_method=mala_method))
        n_p = ldos.get_density(data, fermi_energy=mu, temperature=T,
                               integration_method=mala_method)[:, 0]
        result["methods"][ours] = {
            "mala_integration_method": mala_method,
            "fermi_energy_eV": mu,
            "number_of_electrons": float(dos_calc.get_number_of_electrons(
                dos, fermi_energy=mu, temperature=T, integration_method=mala_method)),
            "band_energy_eV": float(dos_calc.get_band_energy(
                dos, fermi_energy=mu, temperature=T, integration_method=mala_band)),
            "entropy_contribution_eV": float(dos_calc.get_entropy_contribution(
                dos, fermi_energy=mu, temperature=T, integration_method=mala_method)),
            "density_sum_per_A3": float(n_p.sum()),
            "density_electrons": float(n_p.sum() * ldos.voxel.volume),
            "density_min_per_A3": float(n_p.min()),
            "density_max_per_A3": float(n_p.max()),
            "density_argmax": int(np.argmax(n_p)),
            "density_indices": DENSITY_INDICES,
            "density_values_per_A3": [float(n_p[i]) for i in DENSITY_INDICES],
        }
    return result


def weight_reference():
    cases = []
    for start, step, count, mu, T in WEIGHT_CASES:
        energies = start + step * np.arange(count)
        case = {"start_eV": start, "step_eV": step, "count": count, "mu_eV": mu,
                "temperature_K": T}
        for name, (i0, i1) in FUNCTIONS.items():
            w = analytical_integration(np.eye(count), i0, i1, mu, energies, T)
            case[name] = [float(x) for x in w]
        cases.append(case)
    return cases


def main():
    if not (DATA / "Be_snapshot0.out.npy").exists():
        sys.exit(f"MALA Be2 test data not found at {DATA}")
    reference = {
        "generator": "tests/data/make_mala_electrons_reference.py",
        "mala_version": mala.__version__,
        "numpy_version": np.__version__,
        "units": "energies eV, DOS 1/eV, density 1/A^3, temperature K",
        "snapshots": [snapshot_reference(s) for s in (0, 1)],
        "analytical_weights": weight_reference(),
    }
    tmp = OUTPUT.with_name(OUTPUT.name + ".tmp")
    tmp.write_text(json.dumps(reference, indent=1) + "\n")
    os.replace(tmp, OUTPUT)
    print(f"wrote {OUTPUT}")


if __name__ == "__main__":
    main()
