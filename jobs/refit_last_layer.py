"""Refit a model's last layer by exact least squares on training arrays (a diagnostic).

    python jobs/refit_last_layer.py MODEL OUT NAME [NAME ...] [--arrays out/al_k4_train]
                                    [--ridge 1e-6]

The hidden features of every point of ARRAYS/NAME.in.npy (jobs/export_k4_records.py) are
kept fixed; the last layer's weights and bias become the least-squares fit (float64
normal equations, ridge × mean diagonal added to the weights' diagonal) of the
standardised LDOS ARRAYS/NAME.out.npy. At the exact optimum the training points' mean
residual is zero at every energy, so what bias remains per record after the refit is
one the hidden features cannot express. Writes OUT with MODEL's metadata.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import mpi4py.MPI  # noqa: F401
import numpy as np
import torch

from mlscale.model import load_model
from mlscale.model._torch import save_model

GENERATED = ("format", "format_version", "model", "units", "tensors_sha256")


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model")
    parser.add_argument("out")
    parser.add_argument("names", nargs="+")
    parser.add_argument("--arrays", default="out/al_k4_train")
    parser.add_argument("--ridge", type=float, default=1e-6)
    args = parser.parse_args(argv)
    model = load_model(Path(args.model), "torch")
    module = model.module
    n_features, n_energies = module.settings.layers[0], module.settings.layers[-1]
    gram, cross = 0.0, 0.0
    with torch.no_grad():
        for name in args.names:
            x = torch.from_numpy(np.load(Path(args.arrays) / f"{name}.in.npy")
                                 .reshape(-1, n_features))
            y = torch.from_numpy(np.load(Path(args.arrays) / f"{name}.out.npy")
                                 .reshape(-1, n_energies))
            hidden = module.mlp[:-1](module.normalise_input(x)).double()
            hidden = torch.cat([hidden, torch.ones(len(hidden), 1, dtype=hidden.dtype)], 1)
            gram = gram + (hidden.T @ hidden).numpy()
            cross = cross + (hidden.T @ module.normalise_output(y).double()).numpy()
    n_hidden = gram.shape[0] - 1
    gram[np.diag_indices(n_hidden)] += args.ridge * np.trace(gram) / gram.shape[0]
    solution = np.linalg.solve(gram, cross)
    with torch.no_grad():
        module.mlp[-1].weight.copy_(torch.from_numpy(solution[:-1].T))
        module.mlp[-1].bias.copy_(torch.from_numpy(solution[-1]))
    metadata = {k: v for k, v in model.info.metadata.items() if k not in GENERATED}
    save_model(args.out, module, metadata)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
