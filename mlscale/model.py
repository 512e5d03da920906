"""The LDOS network: an MLP with its input standardisation and output scaling inside.

``LDOSModel`` maps raw descriptors ``[points, features]`` to the LDOS in
1/(eV·Å³) ``[points, energies]`` (float32). Both scalings are generic per-column
affine maps kept as buffers, so they travel with the weights:

    x_normalised = (x - input_shift) / input_scale
    ldos         = mlp(x_normalised) * output_scale + output_shift

A model is saved as ONE safetensors file: the tensors plus a JSON metadata string
(key ``mlscale``) with the format name and version, the layer sizes and activation,
and whatever the caller records (descriptor settings, energy grid, temperature,
species, training information). Loading never unpickles anything.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import safetensors.torch
import torch

from .config import ModelSettings
from .errors import MlscaleError

# the file format, its metadata check and reader are torch-free (mlscale.network)
from .network import (FORMAT, FORMAT_VERSION, METADATA_KEY, REQUIRED_METADATA,  # noqa: F401
                      UNITS, check_metadata, evaluate_in_chunks, read_model_file,
                      read_safetensors)
ACTIVATIONS = {"LeakyReLU": torch.nn.LeakyReLU, "ReLU": torch.nn.ReLU, "Tanh": torch.nn.Tanh,
               "Sigmoid": torch.nn.Sigmoid, "ELU": torch.nn.ELU, "GELU": torch.nn.GELU,
               "SiLU": torch.nn.SiLU}


class LDOSModel(torch.nn.Module):
    """MLP from descriptors to LDOS with the input/output affine maps as buffers."""

    def __init__(self, settings: ModelSettings):
        super().__init__()
        layers = tuple(int(n) for n in settings.layers)
        if len(layers) < 2 or min(layers) < 1:
            raise MlscaleError(f"model needs at least two positive layer sizes, got {layers}")
        if settings.activation not in ACTIVATIONS:
            raise MlscaleError(f"unknown activation '{settings.activation}' "
                               f"(choose from {', '.join(ACTIVATIONS)})")
        self.settings = ModelSettings(layers=layers, activation=settings.activation,
                                      ldos_restriction=settings.ldos_restriction)
        modules = []
        for i, (n_in, n_out) in enumerate(zip(layers[:-1], layers[1:])):
            modules.append(torch.nn.Linear(n_in, n_out))
            if i < len(layers) - 2:
                modules.append(ACTIVATIONS[settings.activation]())
        self.mlp = torch.nn.Sequential(*modules)
        self.register_buffer("input_shift", torch.zeros(layers[0]))
        self.register_buffer("input_scale", torch.ones(layers[0]))
        self.register_buffer("output_shift", torch.zeros(layers[-1]))
        self.register_buffer("output_scale", torch.ones(layers[-1]))

    @property
    def n_features(self) -> int:
        return self.settings.layers[0]

    @property
    def n_energies(self) -> int:
        return self.settings.layers[-1]

    def set_scaling(self, input_shift, input_scale, output_shift, output_scale):
        """Set the affine maps (arrays of length features / energies; scales nonzero)."""
        for name, value, n in (("input_shift", input_shift, self.n_features),
                               ("input_scale", input_scale, self.n_features),
                               ("output_shift", output_shift, self.n_energies),
                               ("output_scale", output_scale, self.n_energies)):
            value = torch.as_tensor(np.asarray(value, dtype=np.float32))
            if value.shape != (n,) or not torch.isfinite(value).all():
                raise MlscaleError(f"{name} must be {n} finite numbers, got shape "
                                   f"{tuple(value.shape)}")
            if name.endswith("scale") and (value == 0).any():
                raise MlscaleError(f"{name} must be nonzero")
            getattr(self, name).copy_(value)

    def normalise_input(self, x_pf: torch.Tensor) -> torch.Tensor:
        return (x_pf - self.input_shift) / self.input_scale

    def normalise_output(self, ldos_pe: torch.Tensor) -> torch.Tensor:
        return (ldos_pe - self.output_shift) / self.output_scale

    def forward(self, x_pf: torch.Tensor) -> torch.Tensor:
        """Raw descriptors [points, features] -> LDOS [points, energies] in 1/(eV·Å³)."""
        return self.mlp(self.normalise_input(x_pf)) * self.output_scale + self.output_shift


def save_model(path, model: LDOSModel, metadata: dict) -> None:
    """Write ``model`` and ``metadata`` (JSON-serialisable) to one safetensors file, atomically.

    The stored metadata is ``metadata`` plus ``format``, ``format_version``, ``model``
    (layers, activation, LDOS restriction) and ``units``.
    """
    from .io.atomic import atomic_path

    check_metadata(metadata, model.settings)
    full = {**metadata, "format": FORMAT, "format_version": FORMAT_VERSION,
            "model": model.settings.to_dict(), "units": UNITS}
    try:
        text = json.dumps(full, allow_nan=False)
    except (TypeError, ValueError) as error:
        raise MlscaleError(f"model metadata is not JSON serialisable: {error}") from None
    tensors = {name: t.detach().to("cpu", torch.float32).contiguous()
               for name, t in model.state_dict().items()}
    with atomic_path(path) as tmp:
        Path(tmp).write_bytes(safetensors.torch.save(tensors, metadata={METADATA_KEY: text}))


def model_from_state(settings: ModelSettings, state: dict, source) -> LDOSModel:
    """An LDOSModel with ``state`` loaded; MlscaleError when tensors do not fit ``settings``."""
    model = LDOSModel(settings)
    expected = {name: tuple(t.shape) for name, t in model.state_dict().items()}
    found = {name: tuple(t.shape) for name, t in state.items()}
    if expected != found:
        raise MlscaleError(f"{source}: tensors do not match the declared layers "
                           f"{list(settings.layers)} (expected {expected}, found {found})")
    if not all(torch.isfinite(t).all() for t in state.values()):
        raise MlscaleError(f"{source}: model tensors contain NaN or infinity")
    model.load_state_dict({name: t.to(torch.float32) for name, t in state.items()})
    return model.eval()


def load_model(path) -> tuple[LDOSModel, dict]:
    """Load a model file written by :func:`save_model`: ``(model, metadata)``. No pickle."""
    settings, tensors, metadata = read_model_file(path, "pt")
    return model_from_state(settings, tensors, path), metadata


def predict_ldos(model: LDOSModel, descriptors_pf, chunk_points: int = 8192) -> np.ndarray:
    """LDOS [points, energies] in 1/(eV·Å³), float64, from raw descriptors [points, features].

    Evaluated in chunks of ``chunk_points`` under ``torch.no_grad`` so the extra memory
    is bounded by one chunk; threads are the caller's choice (``torch.set_num_threads``).
    The model's ``ldos_restriction`` is applied to the network's output (``zero_negative``:
    negative values become 0; ``absolute``: their absolute value), as MALA's predictor does.
    """
    device = model.input_shift.device
    restriction = model.settings.ldos_restriction

    def evaluate(chunk):
        out = model(torch.from_numpy(chunk).to(device))
        if restriction == "zero_negative":
            out = torch.clamp_min(out, 0.0)
        elif restriction == "absolute":
            out = torch.abs(out)
        return out.cpu().numpy()

    with torch.no_grad():
        return evaluate_in_chunks(descriptors_pf, model.n_features, model.n_energies,
                                  chunk_points, evaluate)


def ensemble_model(models) -> LDOSModel:
    """One LDOSModel whose output is the mean of ``models``' outputs, exactly.

    The members must have the same layers, activation and affine maps (models trained
    on the same data with different seeds). The hidden layers are stacked side by side
    (first layer: rows stacked; deeper hidden layers: block-diagonal), and the last
    layer averages: its weights are the members' side by side divided by their number,
    its bias their mean. The block-diagonal hidden-to-hidden matrices are stored dense:
    K members cost K× the first and last layers' multiply-adds and K² × the hidden-to-
    hidden ones of one member (and as much file size).
    """
    models = list(models)
    if not models:
        raise MlscaleError("an ensemble needs at least one model")
    first = models[0]
    settings = first.settings
    for model in models[1:]:
        if (model.settings.layers, model.settings.activation) != (settings.layers,
                                                                   settings.activation):
            raise MlscaleError(f"ensemble members differ in architecture: {settings.layers} "
                               f"{settings.activation} vs {model.settings.layers} "
                               f"{model.settings.activation}")
        for name in ("input_shift", "input_scale", "output_shift", "output_scale"):
            if not torch.equal(getattr(model, name), getattr(first, name)):
                raise MlscaleError(f"ensemble members differ in {name}: train them on the "
                                   "same data")
    k, layers = len(models), settings.layers
    wide = (layers[0], *(k * n for n in layers[1:-1]), layers[-1])
    result = LDOSModel(ModelSettings(layers=wide, activation=settings.activation,
                                     ldos_restriction=settings.ldos_restriction))
    member_linear = [[m for m in model.mlp if isinstance(m, torch.nn.Linear)]
                     for model in models]
    linear = [m for m in result.mlp if isinstance(m, torch.nn.Linear)]
    last = len(linear) - 1
    with torch.no_grad():
        for i, target in enumerate(linear):
            parts = [member[i] for member in member_linear]
            if i == last:
                target.weight.copy_(torch.cat([p.weight for p in parts], dim=1) / k)
                target.bias.copy_(torch.stack([p.bias for p in parts]).mean(dim=0))
            elif i == 0:
                target.weight.copy_(torch.cat([p.weight for p in parts], dim=0))
                target.bias.copy_(torch.cat([p.bias for p in parts]))
            else:
                target.weight.copy_(torch.block_diag(*[p.weight for p in parts]))
                target.bias.copy_(torch.cat([p.bias for p in parts]))
        for name in ("input_shift", "input_scale", "output_shift", "output_scale"):
            getattr(result, name).copy_(getattr(first, name))
    return result.eval()
