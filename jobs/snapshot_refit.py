"""Band-energy error per record of a model and of its last layer refitted (diagnostic).

    python jobs/snapshot_refit.py MODEL --train NAME ... --check NAME ...
                                  [--arrays out/al_k4_train] [--mu 0 10 100] [--ridge 1e-6]

For every record the hidden features h of its stored stride-3 points (arrays of
jobs/export_k4_records.py) are computed once. The last layer is then refitted by least
squares on the --train records with extra weight on each record's mean:

    minimise  Σ_p |W h_p − y_p|²  +  mu · Σ_s n_s |W h̄_s − ȳ_s|²

(y the standardised LDOS, h̄_s and ȳ_s record s's means over its n_s points; mu = 0 is
jobs/refit_last_layer.py's refit). The record's DOS is V·mean(LDOS), a function of h̄_s
alone, so mu weighs the DOS of each training record against the points. Printed per mu:
band energy, model − DFT at the same stride-3 points (meV/atom, Fermi level for the exact
electron count), for every --check record; mean absolute error over --train and --check;
mean squared standardised LDOS error over the --check points. The first line is the model
as trained. With --write OUT the refit of the first --mu is written to OUT (the model's
metadata kept, as jobs/refit_last_layer.py).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import mpi4py.MPI  # noqa: F401
import numpy as np
import torch

from mlscale import electrons
from mlscale.datagen import read_compact_record
from mlscale.model import load_model
from mlscale.model._torch import save_model

GENERATED = ("format", "format_version", "model", "units", "tensors_sha256")


class Record:
    """Hidden features (with a ones column) and standardised LDOS of one record's points."""

    def __init__(self, model, arrays: Path, records: Path, name: str):
        module = model.module
        n_features, n_energies = module.settings.layers[0], module.settings.layers[-1]
        x = torch.from_numpy(np.load(arrays / f"{name}.in.npy").reshape(-1, n_features))
        y = torch.from_numpy(np.load(arrays / f"{name}.out.npy").reshape(-1, n_energies))
        with torch.no_grad():
            hidden = module.mlp[:-1](module.normalise_input(x)).double()
            self.y = module.normalise_output(y).double().numpy()
        self.h = torch.cat([hidden, torch.ones(len(hidden), 1, dtype=hidden.dtype)], 1).numpy()
        info, _ = read_compact_record(records, name)
        self.volume = abs(float(np.linalg.det(np.asarray(info["cell"], dtype=float))))
        self.n_electrons = float(info["number_of_electrons_exact"])
        self.n_atoms = len(info["symbols"])
        self.h_mean, self.y_mean = self.h.mean(axis=0), self.y.mean(axis=0)


def band_energy(model, record: Record, y_mean_std: np.ndarray) -> float:
    """Band energy (eV) of the DOS V·mean(LDOS) from a standardised mean LDOS."""
    module = model.module
    ldos = (y_mean_std * module.output_scale.double().numpy()
            + module.output_shift.double().numpy())
    return electrons.electronic_structure(record.volume * ldos, model.info.energy_grid.energies,
                                          record.n_electrons,
                                          model.info.temperature_K)["band_energy_eV"]


def refit(records: list[Record], mu: float, ridge: float) -> np.ndarray:
    """Last layer [weights; bias] (hidden + 1, energies) of the weighted least squares."""
    gram = sum(r.h.T @ r.h + mu * len(r.h) * np.outer(r.h_mean, r.h_mean) for r in records)
    cross = sum(r.h.T @ r.y + mu * len(r.h) * np.outer(r.h_mean, r.y_mean) for r in records)
    n_hidden = gram.shape[0] - 1
    gram[np.diag_indices(n_hidden)] += ridge * np.trace(gram) / gram.shape[0]
    return np.linalg.solve(gram, cross)


def report(model, tag: str, layer: np.ndarray, train: dict, check: dict) -> None:
    def error(r: Record) -> float:
        return 1e3 * (band_energy(model, r, r.h_mean @ layer)
                      - band_energy(model, r, r.y_mean)) / r.n_atoms

    errors = {name: error(r) for name, r in check.items()}
    train_mae = np.mean([abs(error(r)) for r in train.values()])
    mse = np.mean([((r.h @ layer - r.y) ** 2).mean() for r in check.values()])
    print(f"| {tag} | {train_mae:.2f} | {np.mean(np.abs(list(errors.values()))):.2f} | "
          f"{mse:.4f} | " + " | ".join(f"{e:+.1f}" for e in errors.values()) + " |")


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model")
    parser.add_argument("--train", nargs="+", required=True)
    parser.add_argument("--check", nargs="+", required=True)
    parser.add_argument("--arrays", default="out/al_k4_train")
    parser.add_argument("--records", default="data/al_k4")
    parser.add_argument("--mu", type=float, nargs="+", default=[0.0, 10.0, 100.0])
    parser.add_argument("--ridge", type=float, default=1e-6)
    parser.add_argument("--write", metavar="OUT", help="write the first --mu's refit to OUT")
    args = parser.parse_args(argv)
    model = load_model(Path(args.model), "torch")

    def records(names: list[str]) -> dict:
        return {n: Record(model, Path(args.arrays), Path(args.records), n) for n in names}

    train, check = records(args.train), records(args.check)
    last = model.module.mlp[-1]
    trained = torch.cat([last.weight.T, last.bias[None]], 0).double().detach().numpy()
    print("| last layer | train MAE | check MAE | check MSE | "
          + " | ".join(check) + " |\n|---|" + "---:|" * (3 + len(check)))
    report(model, "as trained", trained, train, check)
    layers = {}
    for mu in args.mu:
        layers[mu] = refit(list(train.values()), mu, args.ridge)
        report(model, f"refit, mu = {mu:g}", layers[mu], train, check)
    if args.write:
        layer = layers[args.mu[0]]
        with torch.no_grad():
            last.weight.copy_(torch.from_numpy(layer[:-1].T))
            last.bias.copy_(torch.from_numpy(layer[-1]))
        metadata = {k: v for k, v in model.info.metadata.items() if k not in GENERATED}
        metadata["last_layer_refit"] = {  # what a reader of the file cannot otherwise see
            "method": "least squares, records' mean LDOS weighted mu (jobs/snapshot_refit.py)",
            "mu": args.mu[0], "ridge": args.ridge, "records": list(args.train)}
        save_model(args.write, model.module, metadata)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
