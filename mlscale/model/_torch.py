"""The LDOS network in torch: the ``nn.Module`` training builds and saves, and its
:class:`TorchModel` prediction (float32, identical to torch-based codes such as MALA).

``LDOSModel`` maps raw descriptors ``[points, features]`` to the LDOS in 1/(eV·Å³)
``[points, energies]`` (float32). Both scalings are generic per-column affine maps kept
as buffers, so they travel with the weights (file format: mlscale.model._format):

    x_normalised = (x - input_shift) / input_scale
    ldos         = mlp(x_normalised) * output_scale + output_shift

The LDOS restriction acts in prediction (:class:`TorchModel`), never in ``forward``
(what training fits).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import safetensors.torch
import torch

from ..config import ModelSettings
from ..errors import MlscaleError
from ._format import (
    DEFAULT_CHUNK_POINTS,
    METADATA_KEY,
    SCALING,
    ModelInfo,
    check_settings,
    file_metadata,
    predict_in_chunks,
    read_model_file,
    vjp_in_chunks,
)

ACTIVATIONS = {"LeakyReLU": torch.nn.LeakyReLU, "ReLU": torch.nn.ReLU, "Tanh": torch.nn.Tanh,
               "Sigmoid": torch.nn.Sigmoid, "ELU": torch.nn.ELU, "GELU": torch.nn.GELU,
               "SiLU": torch.nn.SiLU}


class LDOSModel(torch.nn.Module):
    """MLP from descriptors to LDOS with the input/output affine maps as buffers."""

    input_shift: torch.Tensor
    input_scale: torch.Tensor
    output_shift: torch.Tensor
    output_scale: torch.Tensor

    def __init__(self, settings: ModelSettings):
        super().__init__()
        layers = check_settings(settings)
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

    def restricted(self, x_pf: torch.Tensor) -> torch.Tensor:
        """``forward`` with the LDOS restriction applied (``zero_negative``: negative
        values become 0; ``absolute``: their absolute value), as MALA's predictor."""
        out = self(x_pf)
        if self.settings.ldos_restriction == "zero_negative":
            return torch.clamp_min(out, 0.0)
        if self.settings.ldos_restriction == "absolute":
            return torch.abs(out)
        return out


class TorchModel:
    """A :class:`LDOSModel` with its metadata: the torch backend of mlscale.model.Model.

    module: the network (any device; float32); info: its metadata (``info.settings``
    must be the module's).
    """

    def __init__(self, module: LDOSModel, info: ModelInfo):
        if module.settings != info.settings:
            raise MlscaleError(f"the module's settings {module.settings} differ from the "
                               f"metadata's {info.settings}")
        self.module = module
        self.info = info

    @classmethod
    def from_file(cls, path) -> TorchModel:
        """The model of a file (eval mode, CPU). No pickle."""
        info, tensors = read_model_file(path)
        module = LDOSModel(info.settings)
        module.load_state_dict({name: torch.from_numpy(t) for name, t in tensors.items()})
        return cls(module.eval(), info)

    @property
    def settings(self) -> ModelSettings:
        return self.info.settings

    @property
    def n_features(self) -> int:
        return self.info.settings.layers[0]

    @property
    def n_energies(self) -> int:
        return self.info.settings.layers[-1]

    def __call__(self, descriptors_pf, chunk_points: int = DEFAULT_CHUNK_POINTS) -> np.ndarray:
        """LDOS float64 [points, energies] in 1/(eV·Å³), restriction applied, in chunks
        of ``chunk_points`` under ``torch.no_grad``; threads: ``torch.set_num_threads``."""
        device = self.module.input_shift.device

        def evaluate(chunk):
            return self.module.restricted(torch.from_numpy(chunk).to(device)).cpu().numpy()

        with torch.no_grad():
            return predict_in_chunks(evaluate, self.n_features, self.n_energies,
                                     descriptors_pf, chunk_points)

    def vjp(self, descriptors_pf, grad_ldos_pe,
            chunk_points: int = DEFAULT_CHUNK_POINTS) -> np.ndarray:
        """Σ_e grad_ldos_pe ∂ldos_pe/∂descriptors_pf (torch autograd, float32), float64
        [points, features]; in chunks."""
        device = self.module.input_shift.device

        def vjp_chunk(x_pf, g_pe):
            x = torch.from_numpy(x_pf).to(device).requires_grad_(True)
            out = self.module.restricted(x)
            (grad,) = torch.autograd.grad(out, x, torch.from_numpy(g_pe).to(device))
            return grad.cpu().numpy()

        return vjp_in_chunks(vjp_chunk, self.n_features, self.n_energies, descriptors_pf,
                             grad_ldos_pe, chunk_points)


def save_model(path, model: LDOSModel, metadata: dict) -> None:
    """Write ``model`` and ``metadata`` (JSON-serialisable) to one safetensors file, atomically.

    The stored metadata is ``metadata`` plus ``format``, ``format_version``, ``model``
    (layers, activation, LDOS restriction), ``units`` and ``tensors_sha256``.
    """
    from ..io.atomic import atomic_path

    tensors = {name: t.detach().to("cpu", torch.float32).contiguous()
               for name, t in model.state_dict().items()}
    text = file_metadata(metadata, model.settings,
                         {name: t.numpy() for name, t in tensors.items()})
    with atomic_path(path) as tmp:
        Path(tmp).write_bytes(safetensors.torch.save(tensors, metadata={METADATA_KEY: text}))


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
    _check_ensemble(models)
    first, k = models[0], len(models)
    settings, layers = first.settings, first.settings.layers
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
        for name in SCALING:
            getattr(result, name).copy_(getattr(first, name))
    return result.eval()


def _check_ensemble(models: list) -> None:
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
        for name in SCALING:
            if not torch.equal(getattr(model, name), getattr(first, name)):
                raise MlscaleError(f"ensemble members differ in {name}: train them on the "
                                   "same data")
