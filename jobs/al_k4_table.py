"""The table of the compact records in data/al_k4 (docs/dft_settings.md, converged data set).

usage (venv active, repository root): python jobs/al_k4_table.py [RECORD_DIR]

Per record: QE's Fermi level, total and band energy per atom (band energy from the
eigenvalues), the electrons in the density, the band energy from the record's full-grid
DOS (dos_e; Fermi level solved for the exact electron count, analytical integration)
minus the eigenvalue band energy, SCF iterations, the largest force component, the size
of the record's two files.
"""
import sys
from pathlib import Path

from mlscale.datagen import read_compact_record
from mlscale.electrons import band_energy, fermi_level

folder = Path(sys.argv[1] if len(sys.argv) > 1 else "data/al_k4")
print("| record | E_F (eV) | E/atom (eV) | E_band/atom (eV) | N (density) "
      "| ΔE_band LDOS (meV/atom) | SCF iter. | max \\|F\\| (eV/Å) | size (MB) |")
print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
for path in sorted(folder.glob("*.info.json")):
    name = path.name[:-len(".info.json")]
    info, arrays = read_compact_record(folder, name)
    natoms, grid = len(info["symbols"]), info["ldos_settings"]["energy_grid"]
    energies = [grid["start"] + grid["step"] * i for i in range(grid["count"])]
    electrons, temperature = info["number_of_electrons_exact"], info["temperature"]
    mu = fermi_level(arrays["dos_e"], energies, electrons, temperature)
    band = band_energy(arrays["dos_e"], energies, mu, temperature)
    size = (path.stat().st_size + (folder / f"{name}.npz").stat().st_size) / 1e6
    forces = max(abs(f) for row in info["atomic_forces_dft"] for f in row)
    print(f"| {name} | {info['fermi_energy_dft']:.4f} "
          f"| {info['total_energy_dft_calculation'] / natoms:.5f} "
          f"| {info['band_energy_dft_calculation'] / natoms:.5f} "
          f"| {info['number_of_electrons_from_density']:.5f} "
          f"| {1000 * (band - info['band_energy_dft_calculation']) / natoms:+.2f} "
          f"| {info['scf_iterations']} | {forces:.3f} | {size:.2f} |")
