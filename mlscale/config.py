"""Small frozen settings objects, one per concern, convertible to/from plain dicts (JSON).

Dicts read from files (JSON, TOML, model metadata) go through :func:`checked_fields`:
every key must name a field and every value must have the field's annotated type
(an int is accepted for a float, a list for a tuple), so that a mistyped
configuration fails with a message naming the key, the expected type and the value.
"""

from __future__ import annotations

import types
import typing
from collections.abc import Mapping, Sequence
from dataclasses import MISSING, Field, asdict, dataclass, field, fields, is_dataclass
from typing import Any

import numpy as np

from .errors import MlscaleError

_TYPE_NAMES = {bool: "a boolean", int: "an integer", float: "a number", str: "a string",
               dict: "a table", type(None): "null"}


def _matches(value: Any, hint: Any) -> bool:
    """Whether ``value`` (from JSON/TOML) fits the type annotation ``hint``."""
    origin, arguments = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        return any(_matches(value, arm) for arm in arguments)
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            return False
        if len(arguments) == 2 and arguments[1] is Ellipsis:
            return all(_matches(item, arguments[0]) for item in value)
        return len(value) == len(arguments) and all(map(_matches, value, arguments))
    if origin is dict:
        return isinstance(value, Mapping) and all(
            _matches(k, arguments[0]) and _matches(v, arguments[1]) for k, v in value.items())
    if hint is dict:
        return isinstance(value, Mapping)
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if isinstance(hint, type) and is_dataclass(hint):
        return isinstance(value, (hint, Mapping))
    return isinstance(value, hint)


def _type_name(hint: Any) -> str:
    """A reader's name for a type annotation ("an integer", "a list of numbers", ...)."""
    origin, arguments = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_type_name(arm) for arm in arguments)
    if origin is tuple:
        if len(arguments) == 2 and arguments[1] is Ellipsis:
            return f"a list of {_type_name(arguments[0]).split(' ', 1)[1]}s"
        names = [_type_name(argument).split(" ", 1)[1] for argument in arguments]
        if len(set(names)) == 1:
            return f"a list of {len(names)} {names[0]}s"
        return f"a list ({', '.join(names)})"
    if origin is dict:
        return f"a table of {_type_name(arguments[1]).split(' ', 1)[1]}s"
    if isinstance(hint, type) and is_dataclass(hint):
        return f"a table of {hint.__name__} settings"
    return _TYPE_NAMES.get(hint, getattr(hint, "__name__", str(hint)))


def _converted(value: Any, hint: Any) -> Any:
    """``value`` as the field holds it: lists as tuples, integers as floats where a float is
    expected (so that a setting reads the same from JSON ``1`` and ``1.0``)."""
    arguments = typing.get_args(hint)
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        arm = next(arm for arm in arguments if _matches(value, arm))
        return _converted(value, arm)
    if typing.get_origin(hint) is tuple:
        items = arguments[:1] * len(value) if arguments[-1:] == (Ellipsis,) else arguments
        return tuple(_converted(item, h) for item, h in zip(value, items, strict=True))
    if typing.get_origin(hint) is dict:
        return {k: _converted(v, arguments[1]) for k, v in value.items()}
    if hint is float:
        return float(value)
    return value


def field_types(cls: type) -> dict[str, Any]:
    """The resolved type annotation of every field of the dataclass ``cls``."""
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in fields(cls)}


def checked_fields(cls: type, data: Mapping, what: str) -> dict[str, Any]:
    """``data`` checked key by key against the fields of the dataclass ``cls``.

    Returns the values converted to the fields' types (lists to tuples, integers to
    floats). Raises MlscaleError for an unknown key, naming the known ones, or for a
    value of the wrong type, naming the key, the expected type and the value found.
    ``what`` says whose settings they are (e.g. ``"training setting"``).
    """
    if not isinstance(data, Mapping):
        raise MlscaleError(f"{what}s must be a table of keys and values, got {data!r}")
    hints = field_types(cls)
    unknown = sorted(set(data) - set(hints))
    if unknown:
        raise MlscaleError(f"unknown {what}(s) {', '.join(map(repr, unknown))} (known: "
                           f"{', '.join(hints)})")
    result = {}
    for key, value in data.items():
        if not _matches(value, hints[key]):
            raise MlscaleError(f"{what} '{key}' must be {_type_name(hints[key])}, got "
                               f"{value!r} ({type(value).__name__})")
        result[key] = _converted(value, hints[key])
    return result


def _from_dict(cls, data: Mapping, what: str):
    return cls(**checked_fields(cls, data, f"{what} setting"))


def field_default(item: Field) -> Any:
    """The default value of a dataclass field (MISSING if it has none)."""
    if item.default_factory is not MISSING:
        return item.default_factory()
    return item.default


def setting(default: Any, doc: str) -> Any:
    """A dataclass field with a default and a one-line description (``--help`` shows it)."""
    return field(default=default, metadata={"doc": doc})


def field_doc(item: Field) -> str:
    """The description of a field made with :func:`setting` ("" if it has none)."""
    return item.metadata.get("doc", "")


@dataclass(frozen=True)
class EnergyGrid:
    """The LDOS energy grid: ``count`` energies ``start + i*step`` in eV."""

    start: float
    step: float
    count: int

    def __post_init__(self):
        if self.count < 2 or not self.step > 0:
            raise MlscaleError(f"energy grid needs count >= 2 and step > 0, got "
                               f"count={self.count}, step={self.step}")

    @property
    def energies(self) -> np.ndarray:
        """Energies in eV, shape ``[count]``."""
        return self.start + self.step * np.arange(self.count)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> EnergyGrid:
        return _from_dict(cls, data, "energy grid")


@dataclass(frozen=True)
class BispectrumSettings:
    """LAMMPS ``compute sna/grid`` settings (MALA's defaults).

    rcutfac: cutoff scale (Å), the neighbour cutoff is 2*radelem*rcutfac.
    species: element symbols in LAMMPS type order; radii/weights per species.
    """

    twojmax: int = 10
    rcutfac: float = 4.67637
    rfac0: float = 0.99363
    rmin0: float = 0.0
    species: tuple[str, ...] = ("Al",)
    radii: tuple[float, ...] = (0.5,)
    weights: tuple[float, ...] = (1.0,)
    switchflag: int = 1
    bzeroflag: int = 0
    quadraticflag: int = 0

    def __post_init__(self):
        object.__setattr__(self, "species", tuple(self.species))
        object.__setattr__(self, "radii", tuple(float(r) for r in self.radii))
        object.__setattr__(self, "weights", tuple(float(w) for w in self.weights))
        if not (len(self.species) == len(self.radii) == len(self.weights)) or not self.species:
            raise MlscaleError("bispectrum settings need one radius and one weight per species")
        if self.twojmax < 0:
            raise MlscaleError("twojmax must be >= 0")

    @property
    def cutoff(self) -> float:
        """Largest neighbour cutoff in Å (2*radelem*rcutfac)."""
        return 2.0 * max(self.radii) * self.rcutfac

    @property
    def n_features(self) -> int:
        """Number of bispectrum components (91 for twojmax 10)."""
        count = 0
        J = self.twojmax
        for j1 in range(J + 1):
            for j2 in range(j1 + 1):
                for j in range(j1 - j2, min(J, j1 + j2) + 1, 2):
                    if j >= j1:
                        count += 1
        return count

    def indistinguishable_species(self) -> list[tuple[str, ...]]:
        """Groups of species with the same radius and weight.

        The bispectrum (without LAMMPS' chemflag) sees a neighbour only through its
        distance, radius and weight: atoms of species in one group contribute alike, so
        the descriptors, and any model built on them, cannot tell these species apart.
        """
        groups: dict[tuple[float, float], list[str]] = {}
        for name, radius, weight in zip(self.species, self.radii, self.weights, strict=True):
            groups.setdefault((radius, weight), []).append(name)
        return [tuple(group) for group in groups.values() if len(group) > 1]

    def species_warning(self) -> str | None:
        """A warning naming indistinguishable species and the fix, or None."""
        groups = self.indistinguishable_species()
        if not groups:
            return None
        names = "; ".join(", ".join(group) for group in groups)
        return (f"species {names} have the same bispectrum radius and weight, so the "
                "descriptors cannot tell their atoms apart; give each species its own "
                "radii/weights in the descriptor settings")

    def with_species(self, species: Sequence[str], radii: Sequence[float] | None = None,
                     weights: Sequence[float] | None = None) -> BispectrumSettings:
        """Copy with another species list (this radius and weight 1 where not given: such
        species are indistinguishable, see :meth:`indistinguishable_species`)."""
        species = tuple(species)
        radii = tuple(radii) if radii is not None else (self.radii[0],) * len(species)
        weights = tuple(weights) if weights is not None else (1.0,) * len(species)
        return BispectrumSettings(**{**asdict(self), "species": species, "radii": radii,
                                     "weights": weights})

    def to_dict(self) -> dict:
        data = asdict(self)
        for key in ("species", "radii", "weights"):
            data[key] = list(data[key])
        return data

    @classmethod
    def from_dict(cls, data: dict) -> BispectrumSettings:
        return _from_dict(cls, data, "bispectrum")


LDOS_RESTRICTIONS = ("none", "zero_negative", "absolute")
HIDDEN_LAYERS = (100, 100)  # default hidden layer sizes


@dataclass(frozen=True)
class ModelSettings:
    """MLP architecture: layer sizes from input to output, hidden activation, and what
    prediction does to negative LDOS values (``ldos_restriction``: ``"none"``, or
    ``"zero_negative"`` / ``"absolute"`` as MALA's ``restrict_targets``). The
    restriction acts in prediction (``mlscale.model.Model.__call__``), never in training."""

    layers: tuple[int, ...] = setting((91, *HIDDEN_LAYERS, 11), "layer sizes, input to output")
    activation: str = setting("LeakyReLU", "hidden activation (a torch.nn class name)")
    ldos_restriction: str = setting("none", "negative LDOS values in prediction: "
                                     + ", ".join(LDOS_RESTRICTIONS))

    def __post_init__(self):
        if self.ldos_restriction not in LDOS_RESTRICTIONS:
            raise MlscaleError(f"unknown ldos_restriction '{self.ldos_restriction}' "
                               f"(choose from {', '.join(LDOS_RESTRICTIONS)})")

    def to_dict(self) -> dict:
        return {"layers": list(self.layers), "activation": self.activation,
                "ldos_restriction": self.ldos_restriction}

    @classmethod
    def from_dict(cls, data: dict) -> ModelSettings:
        return _from_dict(cls, data, "model")


# How training standardises the LDOS: "per-energy" divides each energy's column by its
# own standard deviation (every energy weighs the same in the loss); "global" divides
# all energies by one number, the root mean square of those deviations, so that the
# loss is the mean squared LDOS error in physical units (as MALA's global min-max
# output scaling): energies in gaps between bands, where the LDOS is small, then do not
# dominate the loss.
OUTPUT_SCALINGS = ("per-energy", "global")
# Training order per epoch (see training.epoch_order), gradient averaging (see
# distributed.py) and torch devices; the first of each is the default.
SHUFFLES = ("points", "snapshots")
DOS_TERMS = ("point", "batch")  # TrainingSettings.dos_terms
LAST_LAYERS = ("trained", "least-squares")  # TrainingSettings.last_layer
DISTRIBUTED_BACKENDS = ("ddp", "horovod")
DEVICES = ("cpu", "cuda")


@dataclass(frozen=True)
class TrainingSettings:
    """Optimiser and schedule for `mlscale train` (losses in standardised LDOS units)."""

    epochs: int = setting(100, "training epochs (passes over all training points)")
    batch_size: int = setting(64, "GLOBAL batch size in points, split over the ranks")
    learning_rate: float = setting(1e-3, "Adam's initial learning rate")
    weight_decay: float = setting(0.0, "Adam's weight decay (L2 penalty)")
    early_stopping_patience: int = setting(
        10, "early stopping: epochs without validation improvement (0: off)")
    lr_patience: int = setting(4, "epochs without improvement before the learning rate drops")
    lr_factor: float = setting(0.5, "factor applied to the learning rate on a plateau")
    seed: int = setting(1234, "seed of the initial weights and of every epoch's order")
    output_scaling: str = setting(
        "per-energy", "LDOS standardisation in the loss: per-energy (every energy weighs the "
        "same) or global (one scale: mean squared LDOS error in physical units)")
    electron_weight: float = setting(
        0.0, "W: add W·E·(err·v)² to each point's loss, its density error at "
        "electron_fermi_level weighed like W·E energies' errors (E energies; 0: off)")
    electron_fermi_level: float | None = setting(
        None, "Fermi level (eV, the data's energy zero) for electron_weight and band_weight")
    band_weight: float = setting(
        0.0, "W: add W·E·(err·u)² to each point's loss, its band-energy error at fixed "
        "electron count, Σ ΔLDOS f (ε − electron_fermi_level) Δε, weighed like W·E energies' "
        "errors (0: off)")
    dos_terms: str = setting(
        "point", "where the electron_weight and band_weight errors are taken: each point's "
        "(point) or the batch's sum over its points, a DOS estimate (batch)")
    last_layer: str = setting(
        "trained", "the returned model's last layer: the best epoch's (trained) or, keeping "
        "its hidden layers, the least-squares fit of the standardised LDOS on all training "
        "points (least-squares: their mean residual is then zero at every energy)")
    dos_weight: float = setting(
        0.0, "mu: with last_layer least-squares, also fit each training snapshot's mean LDOS "
        "(its DOS / volume), weighed like mu × its number of points (0: the points alone)")

    def __post_init__(self):
        if self.output_scaling not in OUTPUT_SCALINGS:
            raise MlscaleError(f"unknown output scaling '{self.output_scaling}' "
                               f"(choose from {', '.join(OUTPUT_SCALINGS)})")
        if not self.electron_weight >= 0:
            raise MlscaleError(f"electron_weight must be >= 0, got {self.electron_weight}")
        if not self.band_weight >= 0:
            raise MlscaleError(f"band_weight must be >= 0, got {self.band_weight}")
        if self.dos_terms not in DOS_TERMS:
            raise MlscaleError(f"unknown dos_terms '{self.dos_terms}' (choose from "
                               f"{', '.join(DOS_TERMS)})")
        if self.last_layer not in LAST_LAYERS:
            raise MlscaleError(f"unknown last_layer '{self.last_layer}' (choose from "
                               f"{', '.join(LAST_LAYERS)})")
        if not self.dos_weight >= 0:
            raise MlscaleError(f"dos_weight must be >= 0, got {self.dos_weight}")
        if self.dos_weight > 0 and self.last_layer != "least-squares":
            raise MlscaleError("dos_weight > 0 weighs the snapshots' DOS in the least-squares "
                               "last layer: it needs last_layer least-squares")
        for name in ("electron_weight", "band_weight"):
            if getattr(self, name) > 0 and self.electron_fermi_level is None:
                raise MlscaleError(f"{name} > 0 needs electron_fermi_level (eV), the Fermi "
                                   "level at which the electron or band-energy error is taken")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> TrainingSettings:
        return _from_dict(cls, data, "training")
