"""The LDOS network evaluated with NumPy: what `mlscale predict` runs.

Prediction needs no gradients, so a rank reads the model file's tensors as NumPy arrays
(safetensors, no pickle) and evaluates the MLP with float32 BLAS matrix products. On a
CPU this is as fast as torch (docs/benchmarks.md) and the rank never imports torch,
which alone is ~200 MiB of resident memory per rank. Training, GPUs and model building
use :class:`mlscale.model.LDOSModel`, which reads and writes the same file.

The file (format ``mlscale-model`` version 1): the tensors of ``LDOSModel.state_dict()``
(``mlp.<i>.weight`` [out, in] and ``mlp.<i>.bias`` of the linear layers, ``input_shift``,
``input_scale``, ``output_shift``, ``output_scale``) plus a JSON metadata string under
the key ``mlscale`` with the format, the layer sizes, activation and LDOS restriction,
and the caller's metadata (descriptor settings, energy grid, temperature, species, ...):

    x_normalised = (x - input_shift) / input_scale
    ldos         = restrict(mlp(x_normalised) * output_scale + output_shift)
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import safetensors

from .config import BispectrumSettings, EnergyGrid, ModelSettings
from .errors import MlscaleError

FORMAT = "mlscale-model"
FORMAT_VERSION = 1
METADATA_KEY = "mlscale"
UNITS = {"descriptors": "dimensionless (LAMMPS sna/grid bispectrum)",
         "ldos": "1/(eV*Angstrom^3)", "energy": "eV", "temperature": "K"}
REQUIRED_METADATA = ("descriptors", "energy_grid", "temperature_K", "species")
SCALING = ("input_shift", "input_scale", "output_shift", "output_scale")


def _gelu(h):
    from scipy.special import erf

    return 0.5 * h * (1.0 + erf(h / np.float32(np.sqrt(2.0))))


# the activations of mlscale.model.ACTIVATIONS with torch's default parameters, in place
# where possible; float32 in, float32 out
ACTIVATIONS = {
    "LeakyReLU": lambda h: np.maximum(h, np.float32(0.01) * h, out=h),
    "ReLU": lambda h: np.maximum(h, 0, out=h),
    "Tanh": lambda h: np.tanh(h, out=h),
    "Sigmoid": lambda h: np.float32(0.5) * (1 + np.tanh(np.float32(0.5) * h)),
    "ELU": lambda h: np.where(h > 0, h, np.expm1(np.minimum(h, 0))),
    "GELU": lambda h: _gelu(h).astype(np.float32),
    "SiLU": lambda h: h * (np.float32(0.5) * (1 + np.tanh(np.float32(0.5) * h))),
}


def linear_indices(layers) -> list[int]:
    """Indices of the linear layers in LDOSModel's ``mlp`` (activations in between)."""
    return [2 * i for i in range(len(layers) - 1)]


class NumpyNetwork:
    """An LDOS model as NumPy float32 arrays: raw descriptors [points, features] -> LDOS
    [points, energies] in 1/(eV·Å³). Built from the tensors of an LDOSModel file."""

    def __init__(self, settings: ModelSettings, tensors: dict, source="model"):
        layers = tuple(int(n) for n in settings.layers)
        if len(layers) < 2 or min(layers) < 1:
            raise MlscaleError(f"{source}: model needs at least two positive layer sizes, "
                               f"got {layers}")
        if settings.activation not in ACTIVATIONS:
            raise MlscaleError(f"{source}: unknown activation '{settings.activation}' "
                               f"(choose from {', '.join(ACTIVATIONS)})")
        expected = {}
        for index, (n_in, n_out) in zip(linear_indices(layers), zip(layers[:-1], layers[1:])):
            expected[f"mlp.{index}.weight"] = (n_out, n_in)
            expected[f"mlp.{index}.bias"] = (n_out,)
        expected.update(input_shift=(layers[0],), input_scale=(layers[0],),
                        output_shift=(layers[-1],), output_scale=(layers[-1],))
        found = {name: tuple(np.shape(t)) for name, t in tensors.items()}
        if expected != found:
            raise MlscaleError(f"{source}: tensors do not match the declared layers "
                               f"{list(layers)} (expected {expected}, found {found})")
        arrays = {name: np.asarray(t, dtype=np.float32) for name, t in tensors.items()}
        if not all(np.isfinite(a).all() for a in arrays.values()):
            raise MlscaleError(f"{source}: model tensors contain NaN or infinity")
        self.settings = settings
        # weights transposed once to [in, out], so that h @ W is a plain BLAS product
        self.weights = [np.ascontiguousarray(arrays[f"mlp.{i}.weight"].T)
                        for i in linear_indices(layers)]
        self.biases = [arrays[f"mlp.{i}.bias"] for i in linear_indices(layers)]
        self.input_shift, self.input_scale, self.output_shift, self.output_scale = (
            arrays[name] for name in SCALING)
        self.activation = ACTIVATIONS[settings.activation]

    @property
    def n_features(self) -> int:
        return self.settings.layers[0]

    @property
    def n_energies(self) -> int:
        return self.settings.layers[-1]

    def __call__(self, x_pf: np.ndarray) -> np.ndarray:
        """float32 [points, features] -> float32 [points, energies], restriction applied."""
        h = (x_pf - self.input_shift) / self.input_scale
        last = len(self.weights) - 1
        for i, (weight, bias) in enumerate(zip(self.weights, self.biases)):
            h = h @ weight
            h += bias
            if i < last:
                h = self.activation(h)
        h *= self.output_scale
        h += self.output_shift
        restriction = self.settings.ldos_restriction
        if restriction == "zero_negative":
            np.maximum(h, 0, out=h)
        elif restriction == "absolute":
            np.abs(h, out=h)
        return h


def check_metadata(metadata: dict, settings: ModelSettings) -> None:
    """MlscaleError unless ``metadata`` describes descriptors and energies that fit the layers.

    Required keys: ``descriptors`` (BispectrumSettings.to_dict()), ``energy_grid``
    (EnergyGrid.to_dict()), ``temperature_K``, ``species``.
    """
    missing = [key for key in REQUIRED_METADATA if key not in metadata]
    if missing:
        raise MlscaleError(f"model metadata lacks {', '.join(missing)}")
    try:
        descriptors = BispectrumSettings.from_dict(metadata["descriptors"])
        energy_grid = EnergyGrid.from_dict(metadata["energy_grid"])
        temperature = float(metadata["temperature_K"])
    except (TypeError, ValueError) as error:
        raise MlscaleError(f"invalid model metadata: {error}") from None
    if descriptors.n_features != settings.layers[0]:
        raise MlscaleError(f"the descriptors have {descriptors.n_features} features but the "
                           f"network's input layer has {settings.layers[0]}")
    if energy_grid.count != settings.layers[-1]:
        raise MlscaleError(f"the energy grid has {energy_grid.count} energies but the "
                           f"network's output layer has {settings.layers[-1]}")
    if not temperature > 0:
        raise MlscaleError(f"temperature must be positive, got {temperature} K")


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


def read_model_file(path, framework: str = "np") -> tuple[ModelSettings, dict, dict]:
    """``(settings, tensors, metadata)`` of a model file, its metadata checked against its
    layers; tensors as NumPy arrays (``"np"``) or torch tensors (``"pt"``). No pickle."""
    tensors, metadata = read_safetensors(path, FORMAT, FORMAT_VERSION, framework=framework)
    try:
        settings = ModelSettings.from_dict(metadata["model"])
    except (KeyError, TypeError, ValueError, MlscaleError) as error:
        raise MlscaleError(f"{path}: invalid model settings in metadata: {error}") from None
    try:
        check_metadata(metadata, settings)
    except MlscaleError as error:
        raise MlscaleError(f"{path}: {error}") from None
    return settings, tensors, metadata


def load_network(path) -> tuple[NumpyNetwork, dict]:
    """A model file as ``(NumpyNetwork, metadata)``, without torch. No pickle."""
    settings, tensors, metadata = read_model_file(path, "np")
    return NumpyNetwork(settings, tensors, path), metadata


def evaluate_in_chunks(descriptors_pf, n_features: int, n_energies: int, chunk_points: int,
                       evaluate) -> np.ndarray:
    """float64 [points, energies] from ``evaluate(float32 chunk [c, features])`` applied to
    chunks of ``chunk_points`` rows of ``descriptors_pf``; MlscaleError for a wrong shape,
    a non-positive chunk size or non-finite descriptors."""
    descriptors_pf = np.asarray(descriptors_pf)
    if descriptors_pf.ndim != 2 or descriptors_pf.shape[1] != n_features:
        raise MlscaleError(f"descriptors must have shape [points, {n_features}], "
                           f"got {descriptors_pf.shape}")
    if chunk_points < 1:
        raise MlscaleError("chunk_points must be positive")
    ldos_pe = np.empty((len(descriptors_pf), n_energies))
    for start in range(0, len(descriptors_pf), chunk_points):
        chunk = np.asarray(descriptors_pf[start:start + chunk_points], dtype=np.float32)
        if not np.isfinite(chunk).all():
            raise MlscaleError("descriptors contain NaN or infinity")
        ldos_pe[start:start + len(chunk)] = evaluate(chunk)
    return ldos_pe


def predict_ldos(network, descriptors_pf, chunk_points: int = 8192) -> np.ndarray:
    """LDOS [points, energies] in 1/(eV·Å³), float64, from raw descriptors [points, features].

    ``network``: a NumpyNetwork, or an mlscale.model.LDOSModel (evaluated with torch).
    Evaluated in chunks of ``chunk_points``, so the extra memory is one chunk's
    activations; threads are the caller's (BLAS) choice.
    """
    if not isinstance(network, NumpyNetwork):
        from .model import predict_ldos as predict_with_torch

        return predict_with_torch(network, descriptors_pf, chunk_points)
    return evaluate_in_chunks(descriptors_pf, network.n_features, network.n_energies,
                              chunk_points, network)
