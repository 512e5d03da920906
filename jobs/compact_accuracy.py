"""What a compact record costs in accuracy: LDOS dtype and grid subsample vs the full float32 LDOS.

usage: python jobs/compact_accuracy.py LDOS.npy VOLUME_A3 N_ELECTRONS [EMIN DE]

LDOS.npy: a full LDOS [nx, ny, nz, energy] in 1/(eV·Å³) (a snapshot's .out.npy). For each
storage choice it prints the band energy and Fermi level (mlscale.electrons, analytical
integration, 298 K, Fermi level for the exact electron count) from the DOS of the stored
points (DOS = V · mean over the points) minus the same from the full float32 LDOS
(meV/atom with 32 atoms, meV), the largest DOS error relative to the DOS maximum, the
largest per-value LDOS error relative to the LDOS maximum, and the record size (MB).
"""
import io
import sys

import numpy as np

from mlscale.datagen.compact import subsample_indices
from mlscale.electrons import band_energy, fermi_level

path, volume, electrons = sys.argv[1], float(sys.argv[2]), float(sys.argv[3])
emin, de = (float(sys.argv[4]), float(sys.argv[5])) if len(sys.argv) > 5 else (-4.5, 0.1)
ldos_ge = np.load(path, allow_pickle=False)
shape, ne = ldos_ge.shape[:3], ldos_ge.shape[3]
energies_e = emin + de * np.arange(ne)
NATOMS, T = 32, 298.0


def scalars(dos_e):
    mu = fermi_level(dos_e, energies_e, electrons, T)
    return band_energy(dos_e, energies_e, mu, T), mu, dos_e


def npz_megabytes(**arrays):
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **arrays)
    return buffer.tell() / 1e6


ref_band, ref_mu, ref_dos = scalars(ldos_ge.reshape(-1, ne).mean(axis=0, dtype=np.float64) * volume)
print(f"{path}: grid {shape}, {ne} energies; full float32: E_band {ref_band:.5f} eV, "
      f"mu {ref_mu:.5f} eV")
rng = np.random.default_rng(0)
choices = [("all points", subsample_indices(shape, 1))]
for stride in (2, 3, 5, 9):
    choices.append((f"stride {stride}", subsample_indices(shape, stride)))
for count in (3375, 729):
    flat = np.sort(rng.choice(np.prod(shape), count, replace=False))
    choices.append((f"random {count}", np.stack(np.unravel_index(flat, shape), -1)))
print("| points | dtype | count | ΔE_band (meV/atom) | Δμ (meV) | max ΔDOS / max DOS "
      "| max ΔLDOS / max LDOS | npz (MB) |")
print("| --- | --- | --- | --- | --- | --- | --- | --- |")
for label, index_gc in choices:
    sub_ge = ldos_ge[tuple(index_gc.T)]
    for dtype in ("float32", "float16"):
        stored = sub_ge.astype(dtype)
        band, mu, dos = scalars(stored.mean(axis=0, dtype=np.float64) * volume)
        value_error = np.abs(stored.astype(np.float64) - sub_ge).max() / ldos_ge.max()
        size = npz_megabytes(index_gc=index_gc.astype(np.int16), ldos_ge=stored)
        print(f"| {label} | {dtype} | {len(index_gc)} | {1000 * (band - ref_band) / NATOMS:+.3f} "
              f"| {1000 * (mu - ref_mu):+.2f} | {np.abs(dos - ref_dos).max() / ref_dos.max():.1e} "
              f"| {value_error:.1e} | {size:.2f} |", flush=True)
