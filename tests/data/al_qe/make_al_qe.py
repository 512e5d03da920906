"""Regenerate the Quantum ESPRESSO reference data in this directory (QE 6.7, ~1 minute).

    python tests/data/al_qe/make_al_qe.py [--pseudo-dir /usr/share/espresso/pseudo]

Al (LDA, norm-conserving Al.pz-vbc.UPF), one atom in a slightly distorted fcc cell,
ecutwfc 12 Ry, 8x8x8 k-points, Fermi-Dirac smearing 0.01 Ry, converged to 1e-12 Ry:

- ``al.scf.in``, ``al.scf.out``: pw.x input and output;
- ``al.qe.json``: the energy terms of pw.x's XML file (``data-file-schema.xml``,
  Hartree, full precision) and the LDOS settings;
- ``al.density.npy``: pp.x ``plot_num = 0`` density, [15, 12, 12], electrons/Å³
  (pp.x's own 10-digit intermediate file, converted from 1/Bohr³);
- ``al.ldos.npy``: pp.x ``plot_num = 3`` LDOS on 34 energies (-4.4 to 8.8 eV, step and
  Gaussian broadening 0.4 eV), [15, 12, 12, 34], 1/(eV·Å³), float32;
- ``al.dos_fine.npy``: the DOS (1/eV) of a pp.x LDOS with step and broadening 0.05 eV
  (-4.5 to 9 eV), summed over the grid here (Σ_r LDOS ΔV);
- ``ewald_*.scf.in/out``: one-iteration pw.x runs of other cells (triclinic, several
  species) for their ``ewald contribution``.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
BOHR_ANGSTROM = 0.529177210903  # QE 6.7 (CODATA 2018)
RYDBERG_EV = 13.605693122994
MPIRUN = ["/usr/bin/mpirun", "--allow-run-as-root", "-np", "1"]

AL_CELL = [[0.0, 2.05, 2.05], [2.02, 0.0, 2.02], [2.03, 2.04, 0.0]]  # Å
AL_INPUT = """&CONTROL
   calculation = 'scf'
   prefix = 'al'
   outdir = './tmp'
   pseudo_dir = '{pseudo_dir}'
/
&SYSTEM
   ibrav = 0
   nat = 1
   ntyp = 1
   ecutwfc = 12.0
   occupations = 'smearing'
   smearing = 'fermi-dirac'
   degauss = 0.01
   nbnd = 8
/
&ELECTRONS
   conv_thr = 1.0d-12
   mixing_beta = 0.5
/
ATOMIC_SPECIES
Al 26.9815 Al.pz-vbc.UPF
CELL_PARAMETERS angstrom
{cell}
ATOMIC_POSITIONS crystal
Al 0.0 0.0 0.0
K_POINTS automatic
8 8 8 0 0 0
"""

PP_INPUT = """&INPUTPP
   prefix = 'al'
   outdir = './tmp'
   filplot = '{filplot}'
   plot_num = {plot_num}
{extra}/
"""

LDOS_COARSE = dict(emin=-4.4, emax=8.8, delta_e=0.4, degauss_ldos=0.4)
LDOS_FINE = dict(emin=-4.5, emax=9.0, delta_e=0.05, degauss_ldos=0.05)

# other cells for the Ewald term: (name, species lines, cell (Å), positions (crystal))
EWALD_CELLS = [
    ("ewald_triclinic",
     ["Al 26.98 Al.pz-vbc.UPF", "Mg 24.305 Mg.pz-n-vbc.UPF", "Si 28.085 Si.pz-vbc.UPF"],
     [[4.1, 0.3, -0.2], [0.9, 4.6, 0.4], [-0.5, 1.1, 5.3]],
     [("Al", 0.10, 0.20, 0.30), ("Mg", 0.55, 0.47, 0.81), ("Si", 0.83, 0.71, 0.12)]),
    ("ewald_monoclinic",
     ["Al 26.98 Al.pz-vbc.UPF", "H 1.008 H.pz-vbc.UPF"],
     [[3.2, 0.0, 0.0], [0.0, 3.9, 0.0], [-1.1, 0.0, 4.4]],
     [("Al", 0.0, 0.0, 0.0), ("H", 0.5, 0.5, 0.5), ("H", 0.21, 0.33, 0.77)]),
    ("ewald_orthorhombic",
     ["Si 28.085 Si.pz-vbc.UPF"],
     [[5.43, 0.0, 0.0], [0.0, 5.60, 0.0], [0.0, 0.0, 5.25]],
     [("Si", 0.00, 0.00, 0.00), ("Si", 0.25, 0.25, 0.25), ("Si", 0.50, 0.50, 0.00),
      ("Si", 0.75, 0.75, 0.25), ("Si", 0.50, 0.00, 0.50), ("Si", 0.75, 0.25, 0.75),
      ("Si", 0.00, 0.50, 0.50), ("Si", 0.27, 0.74, 0.76)]),
]

EWALD_INPUT = """&CONTROL
   calculation = 'scf'
   prefix = '{name}'
   outdir = './tmp'
   pseudo_dir = '{pseudo_dir}'
/
&SYSTEM
   ibrav = 0
   nat = {nat}
   ntyp = {ntyp}
   ecutwfc = 10.0
   occupations = 'smearing'
   degauss = 0.05
/
&ELECTRONS
   conv_thr = 1.0d2
/
ATOMIC_SPECIES
{species}
CELL_PARAMETERS angstrom
{cell}
ATOMIC_POSITIONS crystal
{positions}
K_POINTS gamma
"""


def _rows(matrix) -> str:
    return "\n".join(" ".join(f"{x:.6f}" for x in row) for row in matrix)


def run(executable: str, input_path: Path, output_path: Path, cwd: Path):
    with open(input_path) as stdin, open(output_path, "w") as stdout:
        subprocess.run(MPIRUN + [executable], stdin=stdin, stdout=stdout, cwd=cwd, check=True)


def read_filplot(path: Path) -> tuple[np.ndarray, str]:
    """pp.x intermediate file: values on the FFT grid (x fastest) and the title line."""
    lines = path.read_text().splitlines()
    nx, ny, nz = (int(w) for w in lines[1].split()[:3])
    nat, ntyp = (int(w) for w in lines[1].split()[6:8])
    first = 6 + 1 + ntyp + nat  # title, dims, ibrav line, 3 axes, gcutm line, species, atoms
    values = np.array(" ".join(lines[first:]).split(), dtype=float)
    return values.reshape(nz, ny, nx).transpose(2, 1, 0), lines[0]


def ldos(work: Path, name: str, settings: dict) -> tuple[np.ndarray, np.ndarray]:
    """pp.x LDOS [nx, ny, nz, energies] in 1/(Ry·Bohr³) and its energies (eV)."""
    (work / name).mkdir()
    extra = "".join(f"   {key} = {value}\n" for key, value in settings.items())
    (work / f"{name}.in").write_text(PP_INPUT.format(filplot=f"{name}/ldos", plot_num=3,
                                                     extra=extra))
    run("pp.x", work / f"{name}.in", work / f"{name}.out", work)
    files = sorted((work / name).glob("ldos*"))
    data = [read_filplot(f) for f in files]
    energies = np.array([float(re.search(r"Energy\s*=\s*([-\d.]+)", title)[1]) for _, title in data])
    return np.stack([values for values, _ in data], axis=-1), energies


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pseudo-dir", default="/usr/share/espresso/pseudo")
    args = parser.parse_args()
    pseudo_dir = str(Path(args.pseudo_dir).resolve())
    for exe in ("pw.x", "pp.x"):
        if shutil.which(exe) is None:
            raise SystemExit(f"{exe} not found")
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        text = AL_INPUT.format(pseudo_dir=pseudo_dir, cell=_rows(AL_CELL))
        (work / "al.scf.in").write_text(text)
        run("pw.x", work / "al.scf.in", work / "al.scf.out", work)
        (HERE / "al.scf.in").write_text(text.replace(pseudo_dir, "PSEUDO_DIR"))
        shutil.copy(work / "al.scf.out", HERE / "al.scf.out")

        xml = (work / "tmp" / "al.save" / "data-file-schema.xml").read_text()
        energies = re.search(r"<total_energy>(.*?)</total_energy>", xml, re.S)[1]
        qe = {key: float(value) for key, value in re.findall(r"<(\w+)>([^<]+)</\1>", energies)}
        qe["fermi_energy"] = float(re.search(r"<fermi_energy>([^<]+)<", xml)[1])
        qe["units"] = "Hartree, from pw.x data-file-schema.xml"
        qe["ecutrho_Ry"] = 48.0
        qe["degauss_Ry"] = 0.01
        qe["ldos"] = {"start_eV": LDOS_COARSE["emin"], "step_eV": LDOS_COARSE["delta_e"],
                      "broadening_eV": LDOS_COARSE["degauss_ldos"]}
        qe["dos_fine"] = {"start_eV": LDOS_FINE["emin"], "step_eV": LDOS_FINE["delta_e"],
                          "broadening_eV": LDOS_FINE["degauss_ldos"]}
        (HERE / "al.qe.json").write_text(json.dumps(qe, indent=2) + "\n")

        (work / "rho.in").write_text(PP_INPUT.format(filplot="rho", plot_num=0, extra=""))
        run("pp.x", work / "rho.in", work / "rho.out", work)
        density, _ = read_filplot(work / "rho")
        np.save(HERE / "al.density.npy", density / BOHR_ANGSTROM**3)

        to_ev_a3 = 1 / (RYDBERG_EV * BOHR_ANGSTROM**3)
        coarse, energies = ldos(work, "ldos_coarse", LDOS_COARSE)
        assert np.allclose(energies, LDOS_COARSE["emin"] + LDOS_COARSE["delta_e"]
                           * np.arange(len(energies)))
        np.save(HERE / "al.ldos.npy", (coarse * to_ev_a3).astype(np.float32))
        fine, energies = ldos(work, "ldos_fine", LDOS_FINE)
        voxel_a3 = abs(np.linalg.det(np.array(AL_CELL))) / fine[..., 0].size
        np.save(HERE / "al.dos_fine.npy", (fine * to_ev_a3).sum(axis=(0, 1, 2)) * voxel_a3)

        for name, species, cell, positions in EWALD_CELLS:
            text = EWALD_INPUT.format(
                name=name, pseudo_dir=pseudo_dir, nat=len(positions), ntyp=len(species),
                species="\n".join(species),
                cell=_rows(cell),
                positions="\n".join(f"{s} {x:.6f} {y:.6f} {z:.6f}" for s, x, y, z in positions))
            (work / f"{name}.scf.in").write_text(text)
            run("pw.x", work / f"{name}.scf.in", work / f"{name}.scf.out", work)
            (HERE / f"{name}.scf.in").write_text(text.replace(pseudo_dir, "PSEUDO_DIR"))
            shutil.copy(work / f"{name}.scf.out", HERE / f"{name}.scf.out")


if __name__ == "__main__":
    main()
