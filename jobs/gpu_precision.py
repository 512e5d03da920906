"""Band energy and Fermi level of the shipped model with the network in float32, TF32
(emulated) and bfloat16 (torch autocast), on the built-in example at the model's grid.

TF32 is emulated on the CPU: every matrix product's inputs (activations and weights)
rounded to TF32's 10-bit mantissa (round to nearest), products accumulated in float32,
as a GPU's TF32 tensor cores do (the accumulation order differs). bfloat16: torch's
CPU autocast (Linear layers in bfloat16, the rest in float32), as on a GPU.

    OMP_NUM_THREADS=2 python jobs/gpu_precision.py OUT.json
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np


def round_tf32(x: np.ndarray) -> np.ndarray:
    """float32 values rounded to TF32 (1 sign, 8 exponent, 10 mantissa bits)."""
    bits = np.ascontiguousarray(x, dtype=np.float32).view(np.uint32)
    rounded = (bits + np.uint32(0x1000)) & np.uint32(0xFFFFE000)
    return rounded.view(np.float32)


def tf32_forward(net, x_pf: np.ndarray) -> np.ndarray:
    """The NumPy network's forward pass with TF32-rounded matrix-product inputs."""
    h = (x_pf.astype(np.float32) - net.input_shift) / net.input_scale
    last = len(net.weights) - 1
    for i, (weight, bias) in enumerate(zip(net.weights, net.biases)):
        h = round_tf32(h) @ round_tf32(weight) + bias
        if i < last:
            h = net.activation(h)
    h = h * net.output_scale + net.output_shift
    return np.maximum(h, 0) if net.info.settings.ldos_restriction == "zero_negative" else h


def main(out: str) -> int:
    import torch

    from mlscale import electrons
    from mlscale.descriptors.native import compute_block
    from mlscale.examples import builtin_example, shipped_model_path
    from mlscale.inference import grid_for, number_of_electrons
    from mlscale.model import NumpyNetwork, load_model

    atoms = builtin_example()
    net = NumpyNetwork.from_file(shipped_model_path())
    info = net.info
    grid = grid_for(atoms, info)
    x_pf = compute_block(atoms, grid, grid.full_block(), info.descriptors).reshape(
        grid.npoints, -1)
    torch_model = load_model(shipped_model_path(), "torch")
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        bf16 = torch_model.module.restricted(torch.from_numpy(x_pf.astype(np.float32)))
    ldos = {"float32": net(x_pf), "tf32_emulated": tf32_forward(net, x_pf),
            "bfloat16_autocast": bf16.float().numpy()}
    n = number_of_electrons(atoms, info.valence_electrons)
    result = {"atoms": len(atoms), "grid": list(grid.shape)}
    for name, ldos_pe in ldos.items():
        dos_e = electrons.dos_from_ldos(ldos_pe, grid.voxel_volume)
        result[name] = electrons.electronic_structure(dos_e, info.energy_grid.energies, n,
                                                      info.temperature_K, "analytical")
    for name in ("tf32_emulated", "bfloat16_autocast"):
        result[name]["band_energy_change_meV_per_atom"] = 1e3 * (
            result[name]["band_energy_eV"] - result["float32"]["band_energy_eV"]) / len(atoms)
        result[name]["fermi_level_change_meV"] = 1e3 * (
            result[name]["fermi_energy_eV"] - result["float32"]["fermi_energy_eV"])
    Path(out).write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
