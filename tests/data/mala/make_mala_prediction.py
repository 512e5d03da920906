"""MALA 1.4.0's own LDOS prediction with the re-saved Be model on Be2 snapshot-0 descriptors.

Run with MALA's venv, from the repository root:

    /work/mala-venv/bin/python tests/data/mala/make_mala_prediction.py

Loads ``Be_model_mala14.zip`` with ``mala.Predictor.load_run``, scales MALA's stored
descriptors (``Be_snapshot0.in.npy`` without its 3 coordinate columns) with the
archive's input scaler and runs the predictor's network pass (network, output
scaler, zeroing of negative LDOS). Writes ``be2_snapshot0_mala_prediction.npz``: the
LDOS at every 17th grid point (C-order [x, y, z] index) and its sum over all points,
and ``be2_snapshot0_mala_prediction.json``: MALA's self-consistent Fermi energy and
band energy of the full predicted LDOS (default "analytical" integration).
"""

import json
import os
import sys
from pathlib import Path

import mala
import numpy as np
import torch

HERE = Path(__file__).resolve().parent
DATA = Path(os.environ.get("MLSCALE_MALA_DATA",
                           HERE.parents[3] / "shared" / "mala-test-data")) / "Be2"
STRIDE = 17


def main():
    if not (DATA / "Be_snapshot0.in.npy").exists():
        sys.exit(f"MALA Be2 test data not found at {DATA}")
    _, _, data, predictor = mala.Predictor.load_run("Be_model_mala14", path=str(HERE))
    descriptors = np.load(DATA / "Be_snapshot0.in.npy")[..., 3:]
    shape = descriptors.shape[:3]
    x = torch.from_numpy(descriptors.reshape(-1, descriptors.shape[-1])).float()
    data.input_data_scaler.transform(x)
    data.grid_dimension = list(shape)
    data.grid_size = int(np.prod(shape))
    ldos_pe = predictor._forward_snap_descriptors(x, len(x))

    calculator = data.target_calculator  # holds info.json: cell, voxel, T, electrons
    calculator.read_from_array(ldos_pe.reshape(*shape, -1))
    points = np.arange(0, len(ldos_pe), STRIDE)
    np.savez(HERE / "be2_snapshot0_mala_prediction.npz", points_p=points,
             ldos_pe=ldos_pe[points], ldos_sum_e=ldos_pe.sum(axis=0))
    summary = {
        "generator": "tests/data/mala/make_mala_prediction.py",
        "mala_version": mala.__version__, "torch_version": torch.__version__,
        "model": "Be_model_mala14.zip", "descriptors": "Be2/Be_snapshot0.in.npy",
        "temperature_K": float(calculator.temperature),
        "number_of_electrons": float(calculator.number_of_electrons_exact),
        "fermi_energy_eV": float(calculator.fermi_energy),
        "band_energy_eV": float(calculator.band_energy),
    }
    (HERE / "be2_snapshot0_mala_prediction.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
