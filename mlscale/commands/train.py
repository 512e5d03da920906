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

import argparse
import json
import sys
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from ..config import (
    DEVICES,
    DISTRIBUTED_BACKENDS,
    DOS_TERMS,
    HIDDEN_LAYERS,
    LAST_LAYERS,
    OUTPUT_SCALINGS,
    SHUFFLES,
    BispectrumSettings,
    EnergyGrid,
    ModelSettings,
    TrainingSettings,
    checked_fields,
    field_default,
    field_doc,
    field_types,
    setting,
)
from ..errors import MlscaleError
from ..io.run_directory import probe_writable
from ..parallel import Comm


@dataclass(frozen=True)
class TrainOptions:
    """The command's own options: the data, what the model file records, the run's setup.

    The optimiser and schedule are :class:`~mlscale.config.TrainingSettings`, the
    activation :class:`~mlscale.config.ModelSettings`'; their fields are options too.
    """

    train: tuple[str, ...] = setting(
        (), "training snapshots: descriptor and LDOS file (.npy or openPMD .h5) joined by ':'")
    validation: tuple[str, ...] = setting(
        (), "validation snapshots (split by snapshot, never by point)")
    energy_grid: tuple[float, float, float] | None = setting(
        None, "LDOS energies in eV: start, step, count")
    temperature: float | None = setting(None, "electronic temperature in K")
    species: tuple[str, ...] | None = setting(
        None, "element symbols in descriptor (LAMMPS type) order")
    valence_electrons: tuple[str, ...] | dict[str, float] = setting(
        (), "valence electrons per species, stored for prediction (e.g. Be=2)")
    ecutrho: float | None = setting(None, "QE density cutoff in Ry, stored for prediction")
    descriptors: dict | None = setting(
        None, "bispectrum settings (a table in a config file; default: MALA's for --species)")
    layers: tuple[int, ...] | None = setting(
        None, "layer sizes, input to output (default: features, "
        f"{', '.join(map(str, HIDDEN_LAYERS))}, energies)")
    shuffle: str = setting(
        SHUFFLES[0], "training order per epoch: one permutation of all points, or the "
        "snapshots one after another, points shuffled within each (data larger than RAM)")
    distributed: str = setting(DISTRIBUTED_BACKENDS[0], "gradient averaging")
    device: str = setting(DEVICES[0], "torch device")
    threads: int | None = setting(None, "torch threads per rank (default: torch's choice)")
    checkpoint_every: int = setting(0, "checkpoint every K epochs (0: only on SIGTERM)")
    checkpoint: str | None = setting(
        None, "checkpoint file (default: OUTPUT with .checkpoint.safetensors)")
    resume: str | None = setting(None, "continue from a checkpoint")
    cache_dir: str | None = setting(None, "where openPMD (.h5) snapshots are converted to "
                                    ".npy once (default: mlscale-cache next to OUTPUT)")
    output: str | None = setting(None, "model file to write (.safetensors)")


# every option -> the settings class whose field it is (the field of the same name)
SOURCES: dict[str, type] = {
    **{f.name: TrainOptions for f in fields(TrainOptions)},
    "activation": ModelSettings,
    **{f.name: TrainingSettings for f in fields(TrainingSettings)},
}
ALIASES = {"patience": "early_stopping_patience"}  # older option names still accepted
REQUIRED = ("train", "energy_grid", "temperature", "species", "output", "validation")
CHOICES = {"shuffle": SHUFFLES, "distributed": DISTRIBUTED_BACKENDS, "device": DEVICES,
           "output_scaling": OUTPUT_SCALINGS, "dos_terms": DOS_TERMS,
           "last_layer": LAST_LAYERS}
METAVARS = {int: "N", float: "X", str: "NAME"}
# argparse details beyond name, type, help and choices
ARGPARSE: dict[str, dict[str, Any]] = {
    "train": {"nargs": "+", "action": "extend", "metavar": "IN:OUT"},
    "validation": {"nargs": "+", "action": "extend", "metavar": "IN:OUT"},
    "energy_grid": {"nargs": 3, "type": float, "metavar": ("START", "STEP", "COUNT")},
    "temperature": {"metavar": "K"},
    "species": {"nargs": "+"},
    "valence_electrons": {"nargs": "+", "metavar": "EL=N", "type": str},
    "ecutrho": {"metavar": "RY"},
    "descriptors": {"suppress": True},  # config file only
    "layers": {"nargs": "+", "type": int},
    "checkpoint_every": {"metavar": "K"},
    "checkpoint": {"metavar": "FILE"},
    "resume": {"metavar": "FILE"},
    "cache_dir": {"metavar": "DIR"},
    "output": {"flags": ("-o",), "metavar": "MODEL"},
    "electron_weight": {"metavar": "W"},
    "electron_fermi_level": {"metavar": "EV"},
    "band_weight": {"metavar": "W"},
    "dos_weight": {"metavar": "MU"},
}


def defaults() -> dict[str, Any]:
    """Every option's default, from the fields of the settings dataclasses."""
    return {name: field_default(_field(name)) for name in SOURCES}


def _field(name: str):
    return next(f for f in fields(SOURCES[name]) if f.name == name)


def _scalar(hint: Any) -> Any:
    """The argparse type of a field's annotation (``float | None`` -> float)."""
    arms = [a for a in typing.get_args(hint) if a is not type(None)]
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        return _scalar(arms[0])
    if typing.get_origin(hint) is tuple:
        return _scalar(typing.get_args(hint)[0])
    return hint


def _help(name: str) -> str:
    """The field's description with its default (or "required") appended."""
    default = field_default(_field(name))
    text = field_doc(_field(name))
    if name in REQUIRED:
        return f"{text} (required)"
    if default is None or default == ():
        return text
    shown = " ".join(map(str, default)) if isinstance(default, tuple) else default
    return f"{text} (default: {shown})"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options: one per field of TrainOptions, TrainingSettings and the activation."""
    parser.add_argument("--config", metavar="FILE",
                        help="JSON or TOML file with any of these options")
    for name in SOURCES:
        kwargs = dict(ARGPARSE.get(name, {}))
        if kwargs.pop("suppress", False):
            continue
        flags = [f"--{name.replace('_', '-')}", *kwargs.pop("flags", ())]
        flags += [f"--{old}" for old, new in ALIASES.items() if new == name]
        kwargs.setdefault("type", _scalar(field_types(SOURCES[name])[name]))
        if name in CHOICES:
            kwargs["choices"] = CHOICES[name]
        else:
            kwargs.setdefault("metavar", METAVARS.get(kwargs["type"]))
        parser.add_argument(*flags, dest=name, help=_help(name), **kwargs)


def _load(path: Path) -> Any:
    """The contents of a JSON or TOML (``.toml``) file."""
    try:
        text = path.read_text(encoding="utf-8")
        if path.suffix == ".toml":
            import tomllib  # Python >= 3.11

            return tomllib.loads(text)
        return json.loads(text)
    except FileNotFoundError:
        raise MlscaleError(f"config file not found: {path}") from None
    except (OSError, ValueError) as error:
        raise MlscaleError(f"cannot read config file {path}: {error}") from None


def read_config(path: str | Path) -> dict[str, Any]:
    """Options from a config file, each key checked: it must name an option and its value
    must have the option's type (MlscaleError naming the key, the type and the value)."""
    path = Path(path)
    data = _load(path)
    if not isinstance(data, dict):
        raise MlscaleError(f"config file {path} must hold a table of options")
    data = {key.replace("-", "_"): value for key, value in data.items()}
    data = {ALIASES.get(key, key): value for key, value in data.items()}
    unknown = sorted(set(data) - set(SOURCES))
    if unknown:
        raise MlscaleError(f"unknown option(s) in {path}: {', '.join(unknown)}")
    options: dict[str, Any] = {}
    for cls in dict.fromkeys(SOURCES.values()):
        part = {key: value for key, value in data.items() if SOURCES[key] is cls}
        try:
            options.update(checked_fields(cls, part, "option"))
        except MlscaleError as error:
            raise MlscaleError(f"config file {path}: {error}") from None
    return options


def resolve_options(args: argparse.Namespace) -> dict[str, Any]:
    """Command line over config file over the settings' defaults."""
    config = read_config(args.config) if args.config else {}
    options = {}
    for key, default in defaults().items():
        value = getattr(args, key, None)
        options[key] = value if value not in (None, []) else config.get(key, default)
    for key in REQUIRED:
        if options[key] in (None, [], ()):
            raise MlscaleError(f"--{key.replace('_', '-')} is required")
    return options


def _valence(entries: tuple[str, ...] | list[str] | Mapping[str, float]) -> dict[str, float]:
    """Valence electrons per species from ``EL=N`` strings (or a table EL -> N)."""
    if isinstance(entries, Mapping):
        return {str(name): float(number) for name, number in entries.items()}
    valence = {}
    for entry in entries:
        name, _, number = str(entry).partition("=")
        try:
            valence[name] = float(number)
        except ValueError:
            raise MlscaleError(f"--valence-electrons wants EL=N, got '{entry}'") from None
    return valence


def _energy_grid(values) -> EnergyGrid:
    start, step, count = values
    if float(count) != int(count):
        raise MlscaleError(f"--energy-grid COUNT must be an integer, got {count}")
    return EnergyGrid(float(start), float(step), int(count))


def _descriptors(options: dict) -> BispectrumSettings:
    """The bispectrum settings: the ``descriptors`` table, or MALA's for the species."""
    species = list(options["species"])
    descriptors = (BispectrumSettings.from_dict(options["descriptors"])
                   if options["descriptors"] else BispectrumSettings().with_species(species))
    if list(descriptors.species) != species:
        raise MlscaleError(f"species {species} differ from the descriptor settings' "
                           f"{list(descriptors.species)}")
    return descriptors


@dataclass(frozen=True)
class TrainJob:
    """What ``run`` hands to training, built from the options (collectively checked)."""

    descriptors: BispectrumSettings
    model: ModelSettings
    training: TrainingSettings
    metadata: dict
    output: Path
    checkpoint: Path


def job_from_options(options: dict) -> TrainJob:
    """Settings, model metadata and file names from the resolved options."""
    energy_grid = _energy_grid(options["energy_grid"])
    descriptors = _descriptors(options)
    layers = options["layers"] or [descriptors.n_features, *HIDDEN_LAYERS, energy_grid.count]
    model = ModelSettings(tuple(int(n) for n in layers), options["activation"])
    training = TrainingSettings(**{f.name: options[f.name] for f in fields(TrainingSettings)})
    output = Path(options["output"])
    checkpoint = Path(options["checkpoint"] or output.with_name(
        output.name.removesuffix(".safetensors") + ".checkpoint.safetensors"))
    metadata = {"descriptors": descriptors.to_dict(), "energy_grid": energy_grid.to_dict(),
                "temperature_K": float(options["temperature"]),
                "species": list(options["species"]),
                "valence_electrons": _valence(options["valence_electrons"])}
    if options["ecutrho"] is not None:
        metadata["ecutrho_Ry"] = float(options["ecutrho"])
    return TrainJob(descriptors, model, training, metadata, output, checkpoint)


def run(args: argparse.Namespace, comm: Comm) -> int:
    # torch (and so training and the model's torch half) only when training runs:
    # the CLI imports every command to build its parser
    import torch

    from ..model import save_model
    from ..training import train

    with comm.collective():
        options = resolve_options(args)
        job = job_from_options(options)
        if comm.rank == 0:  # before the epochs, not after them
            probe_writable(job.output, "the model file (-o)")
            probe_writable(job.checkpoint, "the checkpoint")
        if options["threads"]:
            torch.set_num_threads(int(options["threads"]))
    warning = job.descriptors.species_warning()
    if warning:
        comm.print(f"mlscale: warning: {warning}", file=sys.stderr)

    model, history = train(options["train"], options["validation"], job.model, job.training,
                           job.metadata, comm, options["distributed"],
                           device=options["device"], checkpoint=job.checkpoint,
                           checkpoint_every=options["checkpoint_every"],
                           resume=options["resume"], shuffle=options["shuffle"],
                           cache_dir=options["cache_dir"] or job.output.parent / "mlscale-cache")
    best = min(history, key=lambda entry: entry["validation_loss"])
    metadata = {**job.metadata, "training": {
        "train_snapshots": [str(s) for s in options["train"]],
        "validation_snapshots": [str(s) for s in options["validation"]],
        "settings": job.training.to_dict(), "ranks": comm.size,
        "distributed": options["distributed"], "epochs_run": len(history),
        "best_epoch": best["epoch"], "best_validation_loss": best["validation_loss"],
        "history": history}}
    with comm.collective():
        if comm.rank == 0:
            save_model(job.output, model, metadata)
    comm.print(f"model written to {job.output} (best epoch {best['epoch']}, validation loss "
               f"{best['validation_loss']:.6e})")
    return 0
