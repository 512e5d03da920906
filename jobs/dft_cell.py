"""pw.x inputs and results of the size-transfer and extrapolation DFT runs (issue 12).

    python jobs/dft_cell.py structure al108 OUT.xyz     # al_size_transfer.py's cell
    python jobs/dft_cell.py input STRUCTURE RUN_DIR --kpoints 3 3 3 --kshift 1 1 1 \\
        --nbnd 216 --conv-thr 1e-6 --mixing-beta 0.5 [--max-seconds S] [--restart]
        [--starting-density]
    python jobs/dft_cell.py result RUN_DIR            # scalars and DOS from pw.x's XML

The input is the project's writer (mlscale.datagen.qe_input.pw_input, the data set's
settings: LDA Al.pz-vbc.UPF, ecutwfc 20 Ry, ecutrho 80 Ry, Fermi–Dirac smearing at
298 K) with two entries added to &CONTROL: ``max_seconds`` (pw.x stops cleanly and
writes its restart files before it) and ``restart_mode`` ('restart' resumes such a
stopped SCF); ``--starting-density`` adds startingpot='file' to &ELECTRONS (the density in
RUN_DIR/qe_tmp/snapshot.save/charge-density.dat, e.g. one carried from another machine
by jobs/dft_108.sh). ``result`` writes RUN_DIR/result.json: Fermi level (eV), band energy
Σ_k w_k Σ_n f_nk ε_nk (eV, from the XML's eigenvalues and occupations), total energy
(eV, QE's ``!`` line), −TS (eV), k-points, and RUN_DIR/dos.txt: the DOS per atom
(1/eV) on the LDOS energy grid −4.5 … 13.0 eV (0.1 eV) broadened as pp.x and the
one-pass LDOS broaden (Fermi–Dirac derivative, σ = 0.05 eV).
"""
from __future__ import annotations

import argparse
import json
import re
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
from ase.io import read, write

from mlscale.datagen.qe_input import OUTDIR, PREFIX, pw_input
from mlscale.datagen.settings import DFTSettings
from mlscale.datagen.structures import thermal_fcc_snapshots
from mlscale.units import HARTREE_EV, RYDBERG_EV

ENERGIES_E = -4.5 + 0.1 * np.arange(176)  # the data set's LDOS grid, eV
SIGMA_EV = 0.05  # the data set's LDOS broadening, eV

STRUCTURES = {
    # name: (repeat, ionic temperature K, MD seed, snapshot index)
    "al108": ((3, 3, 3), 298.0, 108, 2),  # jobs/al_size_transfer.py's cell
    # 32-atom cells as jobs/dft_hot.sh (mlscale datagen) makes them: snapshot 0 of seed T
    "al900": ((2, 2, 2), 900.0, 900, 0),
    "al1200": ((2, 2, 2), 1200.0, 1200, 0),
}


def make_structure(name: str, path: Path):
    repeat, temperature, seed, index = STRUCTURES[name]
    atoms = thermal_fcc_snapshots("Al", 4.05, repeat, temperature, count=index + 1,
                                  seed=seed)[index]
    write(path, atoms)


def make_input(args):
    atoms = read(args.structure)
    settings = DFTSettings(ecutwfc=20.0, kpoints=tuple(args.kpoints), kshift=tuple(args.kshift),
                           temperature=298.0, pseudopotentials={"Al": "Al.pz-vbc.UPF"},
                           conv_thr=args.conv_thr, mixing_beta=args.mixing_beta,
                           nbnd=args.nbnd, electron_maxstep=200)
    text = pw_input(atoms, settings)
    extra = [f"  restart_mode = '{'restart' if args.restart else 'from_scratch'}'"]
    if args.max_seconds:
        extra.append(f"  max_seconds = {int(args.max_seconds)}")
    text = text.replace("&CONTROL\n", "&CONTROL\n" + "\n".join(extra) + "\n", 1)
    if args.starting_density:  # RUN/qe_tmp/snapshot.save/charge-density.dat, e.g. a carried one
        text = text.replace("&ELECTRONS\n", "&ELECTRONS\n  startingpot = 'file'\n", 1)
    run = Path(args.run_dir)
    run.mkdir(parents=True, exist_ok=True)
    (run / "scf.in").write_text(text)


def fermi_dirac_dos(e_kn, w_k, energies_e, sigma):
    """Σ_k w_k Σ_n −f′((ε − ε_nk)/σ)/σ (1/eV) — pp.x's LDOS broadening, summed over space."""
    dos = np.zeros_like(energies_e)
    for e_n, w in zip(e_kn, w_k):
        x = (energies_e[:, None] - e_n[None, :]) / sigma
        x = np.clip(x, -200, 200)
        dos += w * np.sum(1.0 / (2.0 + np.exp(x) + np.exp(-x)), axis=1) / sigma
    return dos


def result(run_dir: Path) -> dict:
    xml = run_dir / OUTDIR / f"{PREFIX}.save" / "data-file-schema.xml"
    if not xml.is_file():
        xml = run_dir / "scf.xml"
    root = ET.parse(xml).getroot()
    e_kn, f_kn, w_k = [], [], []
    for ks in root.iter("ks_energies"):
        w_k.append(float(ks.find("k_point").get("weight")))
        e_kn.append(np.array(ks.find("eigenvalues").text.split(), float) * HARTREE_EV)
        f_kn.append(np.array(ks.find("occupations").text.split(), float))
    w_k = np.array(w_k)
    w_k = w_k * 2.0 / w_k.sum()  # spin-degenerate: weights sum to 2
    band = float(sum(w * np.dot(e, f) for w, e, f in zip(w_k, e_kn, f_kn)))
    text = (run_dir / "scf.out").read_text()
    n_atoms = int(re.findall(r"number of atoms/cell\s*=\s*(\d+)", text)[0])
    total = float(re.findall(r"^!\s+total energy\s+=\s+(\S+)", text, re.M)[-1]) * RYDBERG_EV
    ts = re.findall(r"smearing contrib\. \(-TS\)\s+=\s+(\S+)", text)
    fermi = float(re.findall(r"the Fermi energy is\s+(\S+)", text)[-1])
    iterations = int(re.findall(r"convergence has been achieved in\s+(\d+)", text)[-1])
    wall = re.findall(r"PWSCF\s+:.*CPU\s+(.*)WALL", text)
    dos_e = fermi_dirac_dos(e_kn, w_k, ENERGIES_E, SIGMA_EV)
    np.savetxt(run_dir / "dos.txt", np.c_[ENERGIES_E, dos_e / n_atoms],
               header=f"energy (eV), DFT DOS per atom (1/eV), Fermi-Dirac broadening "
                      f"{SIGMA_EV} eV; E_F {fermi:.4f} eV")
    window = (ENERGIES_E >= fermi - 4.0) & (ENERGIES_E <= fermi + 1.0)
    out = {
        "atoms": n_atoms, "kpoints": len(w_k),
        "kgrid": re.findall(r"K_POINTS automatic\n\s*(.*)", (run_dir / "scf.in").read_text())[0],
        "fermi_energy_eV": fermi, "band_energy_eV": band, "total_energy_eV": total,
        "minus_TS_eV": float(ts[-1]) * RYDBERG_EV if ts else None,
        "scf_iterations": iterations, "wall": wall[-1].strip() if wall else None,
        "lowest_top_band_eV": float(min(e[-1] for e in e_kn)),
        "dos_min_over_mean": float(dos_e[window].min() / dos_e[window].mean()),
    }
    (run_dir / "result.json").write_text(json.dumps(out, indent=1) + "\n")
    return out


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    s = sub.add_parser("structure")
    s.add_argument("name", choices=sorted(STRUCTURES))
    s.add_argument("path", type=Path)
    i = sub.add_parser("input")
    i.add_argument("structure", type=Path)
    i.add_argument("run_dir", type=Path)
    i.add_argument("--kpoints", type=int, nargs=3, required=True)
    i.add_argument("--kshift", type=int, nargs=3, default=(1, 1, 1))
    i.add_argument("--nbnd", type=int)
    i.add_argument("--conv-thr", type=float, default=1e-6)
    i.add_argument("--mixing-beta", type=float, default=0.5)
    i.add_argument("--max-seconds", type=float)
    i.add_argument("--restart", action="store_true")
    i.add_argument("--starting-density", action="store_true",
                   help="start from the saved density (startingpot='file'), not the atoms'")
    r = sub.add_parser("result")
    r.add_argument("run_dir", type=Path)
    args = parser.parse_args(argv)
    if args.command == "structure":
        make_structure(args.name, args.path)
    elif args.command == "input":
        make_input(args)
    else:
        print(json.dumps(result(args.run_dir), indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
