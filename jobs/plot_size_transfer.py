"""Plot the DOS per atom of the 108-atom size-transfer cell: predictions beside DFT (issue 12).

    python jobs/plot_size_transfer.py [--size108 out/size108] [--dft RUN [RUN ...]]
        [--models m1 shipped ...] [--record data/al_k4 al298_00] [-o docs/img/size_transfer_108.png]

Curves, each against its own Fermi level (E − E_F, eV), DOS per atom (1/eV), all with the
LDOS's 0.05 eV Fermi–Dirac broadening on the 0.1 eV grid:
- the predictions of `jobs/al_size_transfer.py` (OUT/<model>.dos.txt, E_F in the header);
- DFT of the same cell, one curve per --dft RUN (`jobs/dft_108.sh`: RUN/dos.txt from
  pw.x's eigenvalues, drawn only below its lowest top band minus 5 broadenings, where it
  is complete; the first in black, the others dotted);
- DFT of a 32-atom 298 K record at 4×4×4 shifted k-points (its full-grid `dos_e` / 32).
The window [E_F − 4, E_F + 1] eV of the gap check is shaded.
"""
from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

import numpy as np


def read_dos(path: Path) -> tuple[np.ndarray, np.ndarray, float]:
    header = path.read_text().splitlines()[0]
    fermi = float(re.findall(r"E_F (-?[\d.]+) eV", header)[0])
    data = np.loadtxt(path)
    return data[:, 0], data[:, 1], fermi


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size108", type=Path, default=Path("out/size108"))
    parser.add_argument("--dft", type=Path, nargs="+", default=[Path("data/dft108/k333")])
    parser.add_argument("--models", nargs="+", default=["m1"],
                        help="stems of OUT/<stem>.dos.txt to draw")
    parser.add_argument("--labels", nargs="+", help="legend labels of --models")
    parser.add_argument("--record", nargs=2, default=["data/al_k4", "al298_00"])
    parser.add_argument("-o", "--output", type=Path,
                        default=Path("docs/img/size_transfer_108.png"))
    args = parser.parse_args(argv)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4.5))
    labels = args.labels or [f"prediction, model {m}" for m in args.models]
    for stem, label in zip(args.models, labels):
        e, dos, fermi = read_dos(args.size108 / f"{stem}.dos.txt")
        ax.plot(e - fermi, dos, label=f"{label} (108 atoms)", lw=1.4)
    for i, run in enumerate(args.dft):
        if not (run / "dos.txt").is_file():
            continue
        e, dos, fermi = read_dos(run / "dos.txt")
        result = json.loads((run / "result.json").read_text())
        complete = e <= result["lowest_top_band_eV"] - 5 * 0.05
        kx, ky, kz = result["kgrid"].split()[:3]
        ax.plot(e[complete] - fermi, dos[complete], "k" if i == 0 else "k:",
                lw=1.8 if i == 0 else 1.0,
                label=f"DFT, 108 atoms, {kx}×{ky}×{kz} shifted ({result['kpoints']} k)")
    from mlscale.datagen import read_compact_record

    info, arrays = read_compact_record(Path(args.record[0]), args.record[1])
    e = -4.5 + 0.1 * np.arange(len(arrays["dos_e"]))
    ax.plot(e - info["fermi_energy_dft"], np.asarray(arrays["dos_e"]) / len(info["symbols"]),
            color="0.6", lw=1.0, ls="--", label=f"DFT, 32 atoms ({args.record[1]}), 4×4×4 shifted")
    ax.axvspan(-4.0, 1.0, color="0.92", zorder=0, label="gap-check window")
    ax.set_xlim(-11.5, 3.0)
    ax.set_ylim(bottom=0)
    ax.set_xlabel("E − E_F (eV)")
    ax.set_ylabel("DOS per atom (1/eV)")
    ax.set_title("Thermal fcc Al (298 K), DOS per atom, 0.05 eV Fermi–Dirac broadening")
    ax.legend(fontsize=8, loc="upper left")
    fig.tight_layout()
    args.output.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.output, dpi=110)
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
