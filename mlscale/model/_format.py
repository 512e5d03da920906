"""The model file format and what every backend checks, without torch.

The file (format ``mlscale-model`` version 1) is one safetensors file: the tensors of
``LDOSModel.state_dict()`` (``mlp.<i>.weight`` [out, in] and ``mlp.<i>.bias`` of the
linear layers, ``input_shift``, ``input_scale``, ``output_shift``, ``output_scale``)
plus a JSON metadata string under the key ``mlscale`` with the format, the layer
sizes, activation and LDOS restriction (``model``), the units, and the caller's
metadata (descriptor settings, energy grid, temperature, species, ...):

    x_normalised = (x - input_shift) / input_scale
    ldos         = restrict(mlp(x_normalised) * output_scale + output_shift)

Loading never unpickles anything. The metadata is parsed once, into :class:`ModelInfo`.
Files written since issue 14 also record ``tensors_sha256`` (:func:`tensors_sha256`: the
names, dtypes, shapes and bytes of all tensors), verified on load, so flipped bytes in
the weights are refused; older files without it still load.
"""

from __future__ import annotations

import copy
import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import safetensors

from ..config import BispectrumSettings, EnergyGrid, ModelSettings
from ..errors import MlscaleError

FORMAT = "mlscale-model"
FORMAT_VERSION = 1
METADATA_KEY = "mlscale"
UNITS = {"descriptors": "dimensionless (LAMMPS sna/grid bispectrum)",
         "ldos": "1/(eV*Angstrom^3)", "energy": "eV", "temperature": "K"}
REQUIRED_METADATA = ("descriptors", "energy_grid", "temperature_K", "species")
SCALING = ("input_shift", "input_scale", "output_shift", "output_scale")
# hidden activations, with torch's default parameters (LeakyReLU slope 0.01, exact GELU)
ACTIVATION_NAMES = ("LeakyReLU", "ReLU", "Tanh", "Sigmoid", "ELU", "GELU", "SiLU")
# grid points evaluated at once (descriptors, activations and LDOS of one chunk in memory)
DEFAULT_CHUNK_POINTS = 8192


@dataclass(frozen=True)
class ModelInfo:
    """A model file's metadata, parsed and checked against its layers.

    descriptors: bispectrum settings of the network's input; energy_grid: the LDOS
    energies (eV); temperature_K: electronic temperature (K); species: element symbols;
    valence_electrons: {symbol: electrons}; ecutrho_Ry: QE density cutoff (Ry) or None;
    settings: layers, activation and LDOS restriction; metadata: the whole JSON metadata
    (a copy), for anything else (training, dft, validation errors, ...).
    """

    descriptors: BispectrumSettings
    energy_grid: EnergyGrid
    temperature_K: float
    species: tuple[str, ...]
    valence_electrons: dict
    ecutrho_Ry: float | None
    settings: ModelSettings
    metadata: dict

    @classmethod
    def from_metadata(cls, metadata: dict, settings: ModelSettings | None = None) -> ModelInfo:
        """Parse ``metadata``; ``settings`` default to its ``model`` entry.

        MlscaleError for missing keys, invalid values, or descriptors and energies that
        do not fit the input and output layers.
        """
        if settings is None:
            try:
                settings = ModelSettings.from_dict(metadata["model"])
            except (KeyError, TypeError, ValueError, MlscaleError) as error:
                raise MlscaleError(f"invalid model settings in metadata: {error}") from None
        missing = [key for key in REQUIRED_METADATA if key not in metadata]
        if missing:
            raise MlscaleError(f"model metadata lacks {', '.join(missing)}")
        try:
            ecutrho = metadata.get("ecutrho_Ry")
            info = cls(descriptors=BispectrumSettings.from_dict(metadata["descriptors"]),
                       energy_grid=EnergyGrid.from_dict(metadata["energy_grid"]),
                       temperature_K=float(metadata["temperature_K"]),
                       species=tuple(str(s) for s in metadata["species"]),
                       valence_electrons={str(k): float(v) for k, v in
                                          dict(metadata.get("valence_electrons", {})).items()},
                       ecutrho_Ry=None if ecutrho is None else float(ecutrho),
                       settings=settings, metadata=copy.deepcopy(dict(metadata)))
        except (TypeError, ValueError) as error:
            raise MlscaleError(f"invalid model metadata: {error}") from None
        info.check()
        return info

    def check(self) -> None:
        """MlscaleError unless the descriptors and energies fit the layers."""
        layers = check_settings(self.settings)
        if self.descriptors.n_features != layers[0]:
            raise MlscaleError(f"the descriptors have {self.descriptors.n_features} features "
                               f"but the network's input layer has {layers[0]}")
        if self.energy_grid.count != layers[-1]:
            raise MlscaleError(f"the energy grid has {self.energy_grid.count} energies but "
                               f"the network's output layer has {layers[-1]}")
        if not self.temperature_K > 0:
            raise MlscaleError(f"temperature must be positive, got {self.temperature_K} K")


def check_settings(settings: ModelSettings, source: str = "model") -> tuple[int, ...]:
    """The layer sizes; MlscaleError for fewer than two or non-positive layers or an
    unknown activation."""
    layers = tuple(int(n) for n in settings.layers)
    if len(layers) < 2 or min(layers) < 1:
        raise MlscaleError(f"{source} needs at least two positive layer sizes, got {layers}")
    if settings.activation not in ACTIVATION_NAMES:
        raise MlscaleError(f"{source}: unknown activation '{settings.activation}' "
                           f"(choose from {', '.join(ACTIVATION_NAMES)})")
    return layers


def linear_indices(layers) -> list[int]:
    """Indices of the linear layers in LDOSModel's ``mlp`` (activations in between)."""
    return [2 * i for i in range(len(layers) - 1)]


def tensor_shapes(layers) -> dict[str, tuple[int, ...]]:
    """Name -> shape of every tensor a model with these layer sizes holds."""
    shapes: dict[str, tuple[int, ...]] = {}
    for index, n_in, n_out in zip(linear_indices(layers), layers[:-1], layers[1:]):
        shapes[f"mlp.{index}.weight"] = (n_out, n_in)
        shapes[f"mlp.{index}.bias"] = (n_out,)
    shapes.update(input_shift=(layers[0],), input_scale=(layers[0],),
                  output_shift=(layers[-1],), output_scale=(layers[-1],))
    return shapes


def check_tensors(settings: ModelSettings, tensors: dict, source="model") -> None:
    """MlscaleError unless ``tensors`` (NumPy arrays) are exactly those of ``settings``'
    layers, all finite."""
    expected = tensor_shapes(check_settings(settings, str(source)))
    found = {name: tuple(np.shape(t)) for name, t in tensors.items()}
    if expected != found:
        raise MlscaleError(f"{source}: tensors do not match the declared layers "
                           f"{list(settings.layers)} (expected {expected}, found {found})")
    if not all(np.isfinite(np.asarray(t)).all() for t in tensors.values()):
        raise MlscaleError(f"{source}: model tensors contain NaN or infinity")
    if not np.any(np.asarray(tensors["output_scale"])):
        raise MlscaleError(f"{source}: output_scale is zero for every energy, so the network "
                           f"would predict the constant output_shift (a broken scaling)")


def tensors_sha256(tensors: dict) -> str:
    """SHA-256 (hex) over the tensors (NumPy arrays) in name order: each name, dtype,
    shape and C-order bytes."""
    digest = hashlib.sha256()
    for name in sorted(tensors):
        array = np.ascontiguousarray(tensors[name])
        digest.update(f"{name}\0{array.dtype.str}\0{array.shape}\0".encode())
        digest.update(array.tobytes())
    return digest.hexdigest()


def file_metadata(metadata: dict, settings: ModelSettings, tensors: dict | None = None) -> str:
    """The JSON string stored under METADATA_KEY: ``metadata`` (checked) plus ``format``,
    ``format_version``, ``model``, ``units`` and, given the tensors (NumPy arrays, as
    stored), their ``tensors_sha256``."""
    ModelInfo.from_metadata(metadata, settings)
    full = {**metadata, "format": FORMAT, "format_version": FORMAT_VERSION,
            "model": settings.to_dict(), "units": UNITS}
    if tensors is not None:
        full["tensors_sha256"] = tensors_sha256(tensors)
    try:
        return json.dumps(full, allow_nan=False)
    except (TypeError, ValueError) as error:
        raise MlscaleError(f"model metadata is not JSON serialisable: {error}") from None


def read_safetensors(path, fmt: str, version: int, framework: str = "pt") -> tuple[dict, dict]:
    """Tensors (torch tensors, or NumPy arrays with ``framework="np"``) and decoded JSON
    metadata of an mlscale safetensors file of format ``fmt``.

    Raises MlscaleError for a missing, unreadable, corrupt or foreign file, or another
    format version.
    """
    path = Path(path)
    if not path.is_file():
        raise MlscaleError(f"file not found: {path}")
    try:
        with safetensors.safe_open(str(path), framework=framework) as handle:
            header = handle.metadata() or {}
            tensors = {name: handle.get_tensor(name) for name in handle.keys()}
    except Exception as error:  # noqa: BLE001 - any decoding failure means a broken file
        raise MlscaleError(f"{path} is not a readable safetensors file (corrupt or "
                           f"truncated?): {error}") from None
    try:
        metadata = json.loads(header[METADATA_KEY])
        found = metadata["format"]
    except (KeyError, TypeError, ValueError):
        raise MlscaleError(f"{path} is not an {fmt} file (no mlscale metadata)") from None
    if found != fmt:
        raise MlscaleError(f"{path} is a '{found}' file, not an {fmt} file")
    if metadata.get("format_version") != version:
        raise MlscaleError(f"{path} has {fmt} format version {metadata.get('format_version')}; "
                           f"this mlscale reads version {version}")
    return tensors, metadata


def read_model_file(path) -> tuple[ModelInfo, dict]:
    """``(info, tensors)`` of a model file: its metadata parsed and checked against its
    layers, its tensors (float32 NumPy arrays) against the layers and for finiteness."""
    tensors, metadata = read_safetensors(path, FORMAT, FORMAT_VERSION, framework="np")
    try:
        info = ModelInfo.from_metadata(metadata)
    except MlscaleError as error:
        raise MlscaleError(f"{path}: {error}") from None
    check_tensors(info.settings, tensors, path)
    recorded = metadata.get("tensors_sha256")
    if recorded is not None and tensors_sha256(tensors) != recorded:
        raise MlscaleError(f"{path} is corrupt: the SHA-256 of its tensors differs from the "
                           f"one recorded when it was written (tensors_sha256 {recorded})")
    return info, tensors


def _rows(array, width: int, name: str) -> np.ndarray:
    array = np.asarray(array)
    if array.ndim != 2 or array.shape[1] != width:
        raise MlscaleError(f"{name} must have shape [points, {width}], got {array.shape}")
    return array


def in_chunks(evaluate: Callable, n_out: int, chunk_points: int, dtype, inputs: dict) -> np.ndarray:
    """float64 [points, n_out] from ``evaluate(*chunks)``, applied to chunks of
    ``chunk_points`` rows of the ``inputs`` ({name: (array [points, width], width)}),
    each chunk converted to ``dtype``. MlscaleError for a wrong shape, a non-positive
    chunk size or non-finite values."""
    arrays = {name: _rows(array, width, name) for name, (array, width) in inputs.items()}
    points = {len(array) for array in arrays.values()}
    if len(points) != 1:
        raise MlscaleError(f"{' and '.join(arrays)} differ in their number of points "
                           f"({', '.join(str(len(a)) for a in arrays.values())})")
    if chunk_points < 1:
        raise MlscaleError("chunk_points must be positive")
    (npoints,) = points
    result = np.empty((npoints, n_out))
    for start in range(0, npoints, chunk_points):
        chunks = []
        for name, array in arrays.items():
            chunk = np.asarray(array[start:start + chunk_points], dtype=dtype)
            if not np.isfinite(chunk).all():
                raise MlscaleError(f"{name} contain NaN or infinity")
            chunks.append(chunk)
        result[start:start + len(chunks[0])] = evaluate(*chunks)
    return result


def predict_in_chunks(evaluate: Callable, n_features: int, n_energies: int,
                      descriptors_pf, chunk_points: int, dtype=np.float32) -> np.ndarray:
    """LDOS float64 [points, energies] from ``evaluate(descriptors chunk)`` per chunk."""
    return in_chunks(evaluate, n_energies, chunk_points, dtype,
                     {"descriptors": (descriptors_pf, n_features)})


def vjp_in_chunks(vjp: Callable, n_features: int, n_energies: int, descriptors_pf,
                  grad_ldos_pe, chunk_points: int, dtype=np.float32) -> np.ndarray:
    """Descriptor gradient float64 [points, features] from ``vjp(descriptors chunk,
    LDOS-gradient chunk)`` per chunk."""
    return in_chunks(vjp, n_features, chunk_points, dtype,
                     {"descriptors": (descriptors_pf, n_features),
                      "grad_ldos": (grad_ldos_pe, n_energies)})
