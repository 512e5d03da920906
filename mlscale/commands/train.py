"""Train an LDOS model from snapshots (descriptors:LDOS files), data-parallel over MPI ranks.

Run as ``mpiexec -n N mlscale train ...`` (or srun). Each rank reads only its share
of every global batch from memory-mapped .npy files (openPMD .h5 snapshots are
converted to .npy once, in --cache-dir); gradients are averaged each
step (torch DDP, or Horovod with --distributed horovod). Settings may also come from
a JSON or TOML file (--config) whose keys are the long option names (``-`` or ``_``);
options on the command line win. SIGTERM writes a checkpoint and exits non-zero;
--resume continues from it bit for bit on the same number of ranks.
"""

from __future__ import annotations

import json
from pathlib import Path

from ..config import OUTPUT_SCALINGS
from ..errors import MlscaleError

DEFAULTS = {
    "validation": [], "species": None, "energy_grid": None, "temperature": None,
    "layers": None, "activation": "LeakyReLU", "epochs": 100, "batch_size": 64,
    "learning_rate": 1e-3, "weight_decay": 0.0, "patience": 10, "lr_patience": 4,
    "lr_factor": 0.5, "seed": 1234, "distributed": "ddp", "device": "cpu",
    "checkpoint_every": 0, "checkpoint": None, "resume": None, "threads": None,
    "valence_electrons": [], "ecutrho": None, "descriptors": None, "output": None,
    "train": [], "cache_dir": None, "shuffle": "points", "output_scaling": "per-energy",
    "electron_weight": 0.0, "electron_fermi_level": None,
}


def add_arguments(parser):
    add = parser.add_argument
    add("--config", metavar="FILE", help="JSON or TOML file with any of these options")
    add("--train", nargs="+", action="extend", metavar="IN:OUT",
        help="training snapshots: descriptor and LDOS file (.npy or openPMD .h5) joined by ':'")
    add("--validation", nargs="+", action="extend", metavar="IN:OUT",
        help="validation snapshots (split by snapshot, never by point)")
    add("--energy-grid", nargs=3, type=float, metavar=("START", "STEP", "COUNT"),
        help="LDOS energies in eV")
    add("--temperature", type=float, metavar="K", help="electronic temperature in K")
    add("--species", nargs="+", help="element symbols in descriptor (LAMMPS type) order")
    add("--valence-electrons", nargs="+", metavar="EL=N",
        help="valence electrons per species, stored for prediction (e.g. Be=2)")
    add("--ecutrho", type=float, metavar="RY", help="QE density cutoff, stored for prediction")
    add("--layers", nargs="+", type=int, help="layer sizes, input to output (default: "
        "features, 100, 100, energies)")
    add("--activation", help="hidden activation (default LeakyReLU)")
    add("--epochs", type=int)
    add("--batch-size", type=int, help="GLOBAL batch size, split over the ranks (default 64)")
    add("--learning-rate", type=float)
    add("--weight-decay", type=float)
    add("--patience", type=int, help="early stopping: epochs without improvement (0: off)")
    add("--lr-patience", type=int, help="epochs without improvement before the lr drops")
    add("--lr-factor", type=float, help="factor applied to the learning rate on a plateau")
    add("--seed", type=int)
    add("--shuffle", choices=("points", "snapshots"),
        help="training order per epoch: one permutation of all points (default), or the "
        "snapshots one after another, points shuffled within each (data larger than RAM)")
    add("--output-scaling", choices=OUTPUT_SCALINGS,
        help="LDOS standardisation in the loss: per-energy (default; every energy weighs "
        "the same) or global (one scale: mean squared LDOS error in physical units)")
    add("--electron-weight", type=float, metavar="W",
        help="add W·E·(err·v)² to each point's loss: its density error at "
        "--electron-fermi-level, weighed like W·E energies' errors (default 0: off)")
    add("--electron-fermi-level", type=float, metavar="EV",
        help="Fermi level (eV, the data's energy zero) for --electron-weight")
    add("--distributed", choices=("ddp", "horovod"), help="gradient averaging (default ddp)")
    add("--device", choices=("cpu", "cuda"), help="default cpu")
    add("--threads", type=int, help="torch threads per rank (default: torch's choice)")
    add("--checkpoint-every", type=int, metavar="K", help="checkpoint every K epochs (0: only "
        "on SIGTERM)")
    add("--checkpoint", metavar="FILE",
        help="checkpoint file (default: OUTPUT with .checkpoint.safetensors)")
    add("--resume", metavar="FILE", help="continue from a checkpoint")
    add("--cache-dir", metavar="DIR", help="where openPMD (.h5) snapshots are converted to "
        ".npy once (default: mlscale-cache next to OUTPUT)")
    add("--output", "-o", metavar="MODEL", help="model file to write (.safetensors)")


def _read_config(path) -> dict:
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
        if path.suffix == ".toml":
            import tomllib

            data = tomllib.loads(text)
        else:
            data = json.loads(text)
    except FileNotFoundError:
        raise MlscaleError(f"config file not found: {path}") from None
    except (OSError, ValueError) as error:
        raise MlscaleError(f"cannot read config file {path}: {error}") from None
    if not isinstance(data, dict):
        raise MlscaleError(f"config file {path} must hold a table of options")
    data = {key.replace("-", "_"): value for key, value in data.items()}
    unknown = set(data) - set(DEFAULTS)
    if unknown:
        raise MlscaleError(f"unknown option(s) in {path}: {', '.join(sorted(unknown))}")
    return data


def resolve_options(args) -> dict:
    """Command line over config file over defaults."""
    config = _read_config(args.config) if args.config else {}
    options = {}
    for key, default in DEFAULTS.items():
        value = getattr(args, key, None)
        options[key] = value if value not in (None, []) else config.get(key, default)
    for key in ("train", "energy_grid", "temperature", "species", "output"):
        if options[key] in (None, []):
            raise MlscaleError(f"--{key.replace('_', '-')} is required")
    return options


def _valence(entries) -> dict:
    valence = {}
    for entry in entries:
        name, _, number = str(entry).partition("=")
        try:
            valence[name] = float(number)
        except ValueError:
            raise MlscaleError(f"--valence-electrons wants EL=N, got '{entry}'") from None
    return valence


def run(args, comm) -> int:
    import torch

    from ..config import BispectrumSettings, EnergyGrid, ModelSettings, TrainingSettings
    from ..model import save_model
    from ..training import train

    with comm.collective():
        options = resolve_options(args)
        start, step, count = options["energy_grid"]
        energy_grid = EnergyGrid(float(start), float(step), int(count))
        species = list(options["species"])
        descriptors = (BispectrumSettings.from_dict(options["descriptors"])
                       if options["descriptors"] else BispectrumSettings().with_species(species))
        if list(descriptors.species) != species:
            raise MlscaleError(f"species {species} differ from the descriptor settings' "
                               f"{list(descriptors.species)}")
        layers = options["layers"] or [descriptors.n_features, 100, 100, energy_grid.count]
        model_settings = ModelSettings(tuple(int(n) for n in layers), options["activation"])
        training_settings = TrainingSettings(
            epochs=options["epochs"], batch_size=options["batch_size"],
            learning_rate=options["learning_rate"], weight_decay=options["weight_decay"],
            early_stopping_patience=options["patience"], lr_patience=options["lr_patience"],
            lr_factor=options["lr_factor"], seed=options["seed"],
            output_scaling=options["output_scaling"],
            electron_weight=float(options["electron_weight"]),
            electron_fermi_level=(None if options["electron_fermi_level"] is None
                                  else float(options["electron_fermi_level"])))
        if not options["validation"]:
            raise MlscaleError("--validation needs at least one snapshot (split by snapshot)")
        output = Path(options["output"])
        checkpoint = options["checkpoint"] or output.with_name(
            output.name.removesuffix(".safetensors") + ".checkpoint.safetensors")
        metadata = {"descriptors": descriptors.to_dict(), "energy_grid": energy_grid.to_dict(),
                    "temperature_K": float(options["temperature"]), "species": species,
                    "valence_electrons": _valence(options["valence_electrons"])}
        if options["ecutrho"] is not None:
            metadata["ecutrho_Ry"] = float(options["ecutrho"])
        if options["threads"]:
            torch.set_num_threads(int(options["threads"]))

    model, history = train(options["train"], options["validation"], model_settings,
                           training_settings, metadata, comm, options["distributed"],
                           device=options["device"], checkpoint=checkpoint,
                           checkpoint_every=options["checkpoint_every"],
                           resume=options["resume"], shuffle=options["shuffle"],
                           cache_dir=options["cache_dir"] or output.parent / "mlscale-cache")
    best = min(history, key=lambda entry: entry["validation_loss"])
    metadata["training"] = {
        "train_snapshots": [str(s) for s in options["train"]],
        "validation_snapshots": [str(s) for s in options["validation"]],
        "settings": training_settings.to_dict(), "ranks": comm.size,
        "distributed": options["distributed"], "epochs_run": len(history),
        "best_epoch": best["epoch"], "best_validation_loss": best["validation_loss"],
        "history": history}
    with comm.collective():
        if comm.rank == 0:
            save_model(output, model, metadata)
    comm.print(f"model written to {output} (best epoch {best['epoch']}, validation loss "
               f"{best['validation_loss']:.6e})")
    return 0
