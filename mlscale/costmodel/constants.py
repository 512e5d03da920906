"""The cost constants of one machine: :class:`BenchConstants` and their JSON file.

``mlscale bench`` measures them (:mod:`mlscale.costmodel.measure`) and writes them with
:func:`write_constants`; ``mlscale plan`` reads them (:func:`read_constants`) to predict
(:mod:`mlscale.costmodel.predict`). Seconds are CPU seconds of one single-threaded rank,
bytes and MiB its resident memory.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, fields
from pathlib import Path

from ..errors import MlscaleError
from ..io.atomic import write_json_atomic

FORMAT = "mlscale-bench"
FORMAT_VERSION = 1


@dataclass(frozen=True)
class BenchConstants:
    """Per-rank cost constants measured by ``mlscale bench`` (seconds, bytes, MiB)."""

    machine: str
    date: str
    twojmax: int               # descriptor settings the descriptor costs belong to
    layers: tuple              # network the memory constants were measured with
    energies: int              # LDOS energies point_bytes was measured at
    startup_s: float           # process start, imports, model load
    atom_s: float              # per atom of the structure: read, checks, halo selection
    descriptor_point_s: float  # per grid point ...
    descriptor_neighbour_s: float  # ... plus per neighbour of the point
    network_mac_s: float       # per multiply-add of the network
    electrons_point_energy_s: float  # DOS, LDOS store, density: per point and energy
    output_point_s: float      # writing the density, per point
    overhead_MiB: float        # peak memory at zero points (libraries, model, buffers)
    point_bytes: float         # per local grid point (LDOS store, density)
    chunk_point_bytes: float   # per point of the largest chunk (descriptors, activations)
    atom_bytes: float          # per atom of the structure
    energy_point_s: float | None = None  # energy phase per point (None: not measured)
    energy_point_bytes: float | None = None  # energy phase per point, beyond the density
    # (traced peak / points of the energy terms on the bench's grid: ~17 for the shipped
    # model's Al since issue 16, 110 before; measure.energy_costs)
    energy_overhead_MiB: float | None = None  # libraries of the energy phase
    kept_energies: int | None = None  # LDOS energies kept per point when point_bytes was
    # measured (the density's window); None: all ``energies`` (before the window)

    def to_dict(self) -> dict:
        """The constants as the JSON object of the file format (with its tag)."""
        return {"format": FORMAT, "format_version": FORMAT_VERSION,
                **{**asdict(self), "layers": list(self.layers)}}

    @classmethod
    def from_dict(cls, data: dict, source: object = "constants") -> BenchConstants:
        """Constants from :meth:`to_dict`'s object (other keys ignored); MlscaleError if
        the tag is wrong or a value is missing or invalid (``source`` names it)."""
        if data.get("format") != FORMAT or data.get("format_version") != FORMAT_VERSION:
            raise MlscaleError(f"{source} is not an {FORMAT} file of version {FORMAT_VERSION}")
        names = {f.name for f in fields(cls)}
        try:
            values = {name: data[name] for name in names if name in data}
            return cls(**{**values, "layers": tuple(int(n) for n in values["layers"])})
        except (KeyError, TypeError, ValueError) as error:
            raise MlscaleError(f"{source}: incomplete or invalid constants ({error})") from None


def read_constants(path: str | os.PathLike) -> BenchConstants:
    """Constants written by ``mlscale bench``; MlscaleError if missing or invalid."""
    path = Path(path)
    if not path.is_file():
        raise MlscaleError(f"no bench constants at {path}: run `mlscale bench` on this "
                           "machine first (or pass --constants FILE)")
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as error:
        raise MlscaleError(f"cannot read bench constants {path}: {error}") from None
    return BenchConstants.from_dict(data, path)


def write_constants(path: str | os.PathLike, constants: BenchConstants,
                    record: dict | None = None) -> None:
    """Write ``constants`` (and ``record``: what they were measured from) as JSON,
    atomically, creating the directory."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_json_atomic(path, {**constants.to_dict(), **(record or {})})


def default_constants_path() -> Path:
    """Where ``mlscale bench`` writes and ``mlscale plan`` reads the constants:
    ``$XDG_CACHE_HOME/mlscale/bench.json`` (``~/.cache/mlscale/bench.json``)."""
    cache = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(cache) / "mlscale" / "bench.json"
