"""The k-point (and FFT-grid) offset between the training data's DFT and the 108-atom DFT,
measured on the ideal crystal, where supercells fold onto the 4-atom cube exactly.

    python jobs/k_offset_ideal.py [--out out/kideal]     # ≈ 1 min on 2 cores (41 s measured)

The model learnt DFT of 32-atom cells at 4×4×4 shifted k (45³ FFT grid); the size-transfer
reference is DFT of a 108-atom cell at 3×3×3 shifted k (72³). For the ideal fcc crystal
(a = 4.05 Å) both are the 4-atom cube exactly: a 2×2×2 supercell at n×n×n shifted k is the
cube at 2n×2n×2n shifted, the 3×3×3 supercell at 3×3×3 shifted the cube at 9×9×9 shifted,
and the 72³ grid of the 12.15 Å cell is the cube's 24³. Runs (pw.x 6.7, the data set's
settings: LDA Al.pz-vbc.UPF, 20/80 Ry, Fermi–Dirac 298 K; symmetry on):

    c32_k4    32-atom ideal cell, 4×4×4 shifted, QE's 45³ grid  (the training data's DFT)
    c4_k6     4-atom cube, 6×6×6 shifted, 24³  (= the 108-atom cell at 2×2×2 shifted)
    c4_k8     4-atom cube, 8×8×8 shifted, 24³  (the same k-sum on the 108-atom cell's grid)
    c4_k9     4-atom cube, 9×9×9 shifted, 24³  (= the 108-atom DFT of the ideal crystal)
    c4_k12, c4_k16, c4_k24   denser shifted grids, 24³ (the converged k-sum)

Prints E/atom, band energy/atom (eV, Σ w f ε from the XML) and E_F (eV) of each, and the
offsets that matter: c4_k9 − c32_k4 (what the 108-atom reference differs from the training
data's kind of DFT by, for the ideal crystal), c4_k6 − c4_k9 (the ideal crystal's 2×2×2 −
3×3×3 on 108 atoms, to set beside the thermal 108-atom cell's measured one) and each run
− c4_k24. Writes OUT/offsets.json.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

from ase.build import bulk

sys.path.insert(0, str(Path(__file__).resolve().parent))
from dft_cell import result  # noqa: E402  (jobs/dft_cell.py: scalars from pw.x's XML)

from mlscale.datagen.qe_input import pw_input  # noqa: E402
from mlscale.datagen.settings import DFTSettings  # noqa: E402

RUNS = {  # name: (conventional-cell repeat, k-points per axis, FFT grid or None for QE's)
    "c32_k4": (2, 4, None),
    "c4_k6": (1, 6, 24),
    "c4_k8": (1, 8, 24),
    "c4_k9": (1, 9, 24),
    "c4_k12": (1, 12, 24),
    "c4_k16": (1, 16, 24),
    "c4_k24": (1, 24, 24),
}


def run_one(name: str, out: Path) -> dict:
    repeat, k, fft = RUNS[name]
    run = out / name
    if (run / "result.json").is_file():
        return json.loads((run / "result.json").read_text())
    atoms = bulk("Al", "fcc", a=4.05, cubic=True).repeat(repeat)
    settings = DFTSettings(ecutwfc=20.0, kpoints=(k, k, k), kshift=(1, 1, 1), temperature=298.0,
                           pseudopotentials={"Al": "Al.pz-vbc.UPF"}, conv_thr=1e-9)
    text = pw_input(atoms, settings)
    if fft:
        grid = "".join(f"  nr{axis} = {fft}\n" for axis in (1, 2, 3))
        text = text.replace("&SYSTEM\n", "&SYSTEM\n" + grid, 1)
    run.mkdir(parents=True, exist_ok=True)
    (run / "scf.in").write_text(text)
    with open(run / "scf.out", "w") as log:
        subprocess.run(["/usr/bin/mpirun", "--allow-run-as-root", "-np", "2", "pw.x", "-nk", "2",
                        "-in", "scf.in"], cwd=run, stdout=log, stderr=subprocess.STDOUT,
                       check=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    return result(run)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("out/kideal"))
    args = parser.parse_args(argv)
    rows = {}
    for name in RUNS:
        r = run_one(name, args.out)
        n = r["atoms"]
        grid = [int(x) for x in (args.out / name / "scf.out").read_text().split(
            "FFT dimensions: (")[1].split(")")[0].split(",")]
        rows[name] = {"E_per_atom_eV": r["total_energy_eV"] / n,
                      "band_per_atom_eV": r["band_energy_eV"] / n,
                      "fermi_eV": r["fermi_energy_eV"], "kpoints_irreducible": r["kpoints"],
                      "fft": grid}
        print(f"{name:8s} FFT {grid} k {r['kpoints']:4d}: E/atom {rows[name]['E_per_atom_eV']:.6f}"
              f"  band/atom {rows[name]['band_per_atom_eV']:.6f}  E_F {r['fermi_energy_eV']:.4f}")

    def diff(a: str, b: str) -> dict:
        return {"E_meV_per_atom": 1e3 * (rows[a]["E_per_atom_eV"] - rows[b]["E_per_atom_eV"]),
                "band_meV_per_atom": 1e3 * (rows[a]["band_per_atom_eV"]
                                            - rows[b]["band_per_atom_eV"]),
                "fermi_meV": 1e3 * (rows[a]["fermi_eV"] - rows[b]["fermi_eV"])}

    offsets = {"c4_k9 - c32_k4": diff("c4_k9", "c32_k4"),
               "c4_k8 - c32_k4 (FFT 48^3 vs 45^3 on the 32-atom cell)": diff("c4_k8", "c32_k4"),
               "c4_k6 - c4_k9 (108 atoms: 2x2x2 - 3x3x3)": diff("c4_k6", "c4_k9"),
               **{f"{name} - c4_k24": diff(name, "c4_k24") for name in RUNS if name != "c4_k24"}}
    for label, d in offsets.items():
        print(f"{label}: E {d['E_meV_per_atom']:+.2f}, band {d['band_meV_per_atom']:+.2f} "
              f"meV/atom, E_F {d['fermi_meV']:+.1f} meV")
    (args.out / "offsets.json").write_text(json.dumps({"runs": rows, "offsets": offsets},
                                                      indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
