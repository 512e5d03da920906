"""Small frozen settings objects, one per concern, convertible to/from plain dicts (JSON)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields

import numpy as np

from .errors import MlscaleError


def _from_dict(cls, data: dict, what: str):
    names = {f.name for f in fields(cls)}
    unknown = set(data) - names
    if unknown:
        raise MlscaleError(f"unknown {what} setting(s): {', '.join(sorted(unknown))}")
    return cls(**data)


@dataclass(frozen=True)
class EnergyGrid:
    """The LDOS energy grid: ``count`` energies ``start + i*step`` in eV."""

    start: float
    step: float
    count: int

    def __post_init__(self):
        if self.count < 2 or not self.step > 0:
            raise MlscaleError(
                f"energy grid needs count >= 2 and step > 0, got count={self.count}, step={self.step}"
            )

    @property
    def energies(self) -> np.ndarray:
        """Energies in eV, shape ``[count]``."""
        return self.start + self.step * np.arange(self.count)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "EnergyGrid":
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

    def with_species(self, species, radii=None, weights=None) -> "BispectrumSettings":
        """Copy with another species list (radius 0.5 and weight 1 where not given)."""
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
    def from_dict(cls, data: dict) -> "BispectrumSettings":
        return _from_dict(cls, data, "bispectrum")


LDOS_RESTRICTIONS = ("none", "zero_negative", "absolute")


@dataclass(frozen=True)
class ModelSettings:
    """MLP architecture: layer sizes from input to output, hidden activation, and what
    prediction does to negative LDOS values (``ldos_restriction``: ``"none"``, or
    ``"zero_negative"`` / ``"absolute"`` as MALA's ``restrict_targets``). The
    restriction acts in :func:`mlscale.model.predict_ldos`, never in training."""

    layers: tuple[int, ...] = (91, 100, 100, 11)
    activation: str = "LeakyReLU"
    ldos_restriction: str = "none"

    def __post_init__(self):
        if self.ldos_restriction not in LDOS_RESTRICTIONS:
            raise MlscaleError(f"unknown ldos_restriction '{self.ldos_restriction}' "
                               f"(choose from {', '.join(LDOS_RESTRICTIONS)})")

    def to_dict(self) -> dict:
        return {"layers": list(self.layers), "activation": self.activation,
                "ldos_restriction": self.ldos_restriction}

    @classmethod
    def from_dict(cls, data: dict) -> "ModelSettings":
        data = dict(data)
        if "layers" in data:
            data["layers"] = tuple(int(n) for n in data["layers"])
        return _from_dict(cls, data, "model")


# How training standardises the LDOS: "per-energy" divides each energy's column by its
# own standard deviation (every energy weighs the same in the loss); "global" divides
# all energies by one number, the root mean square of those deviations, so that the
# loss is the mean squared LDOS error in physical units (as MALA's global min-max
# output scaling): energies in gaps between bands, where the LDOS is small, then do not
# dominate the loss.
OUTPUT_SCALINGS = ("per-energy", "global")


@dataclass(frozen=True)
class TrainingSettings:
    """Optimiser and schedule for `mlscale train`."""

    epochs: int = 100
    batch_size: int = 64
    learning_rate: float = 1e-3
    weight_decay: float = 0.0
    early_stopping_patience: int = 10
    lr_patience: int = 4
    lr_factor: float = 0.5
    seed: int = 1234
    output_scaling: str = "per-energy"
    # loss term on each point's density error at a reference Fermi level (eV):
    # electron_weight · (Σ_ε ΔLDOS(ε) f(ε) Δε)², in the standardised units (see training)
    electron_weight: float = 0.0
    electron_fermi_level: float | None = None
    extra: dict = field(default_factory=dict)

    def __post_init__(self):
        if self.output_scaling not in OUTPUT_SCALINGS:
            raise MlscaleError(f"unknown output scaling '{self.output_scaling}' "
                               f"(choose from {', '.join(OUTPUT_SCALINGS)})")
        if not self.electron_weight >= 0:
            raise MlscaleError(f"electron_weight must be >= 0, got {self.electron_weight}")
        if self.electron_weight > 0 and self.electron_fermi_level is None:
            raise MlscaleError("an electron_weight needs electron_fermi_level (eV), the Fermi "
                               "level at which the density error is taken")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "TrainingSettings":
        return _from_dict(cls, data, "training")
