"""The LDOS network: load a model file and evaluate it (forward and backward).

``load_model(path, backend)`` gives a :class:`Model`: descriptors [points, features] ->
LDOS [points, energies] in 1/(eV·Å³), evaluated in chunks, its metadata parsed once
into ``model.info`` (:class:`ModelInfo`). Two backends, the same numbers to float32
round-off:

- ``"numpy"`` (:class:`NumpyNetwork`): float32 BLAS, what ``mlscale predict`` runs;
  importing this package and loading such a model never imports torch (~245 MiB less
  per rank);
- ``"torch"`` (:class:`TorchModel`, wrapping the ``nn.Module`` :class:`LDOSModel` that
  training builds and :func:`save_model` writes): float32 results identical to
  torch-based codes such as MALA, GPUs.

The torch names (``LDOSModel``, ``TorchModel``, ``save_model``, ``ensemble_model``,
``ACTIVATIONS``) and the MALA archive import (``import_mala``, ``read_mala_archive``,
``convert_mala_model``) are loaded, with torch, on first use.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Protocol

import numpy as np

from ..errors import MlscaleError
from ._format import (
    ACTIVATION_NAMES,
    DEFAULT_CHUNK_POINTS,
    FORMAT,
    FORMAT_VERSION,
    METADATA_KEY,
    UNITS,
    ModelInfo,
    read_model_file,
    read_safetensors,
)
from ._numpy import NumpyNetwork

if TYPE_CHECKING:
    from ._mala import convert_mala_model, import_mala, read_mala_archive
    from ._torch import ACTIVATIONS, LDOSModel, TorchModel, ensemble_model, save_model

__all__ = ["ACTIVATION_NAMES", "ACTIVATIONS", "BACKENDS", "DEFAULT_CHUNK_POINTS", "FORMAT",
           "FORMAT_VERSION", "LDOSModel", "METADATA_KEY", "Model", "ModelInfo",
           "NumpyNetwork", "TorchModel", "UNITS", "convert_mala_model", "ensemble_model",
           "import_mala", "load_model", "read_mala_archive", "read_model_file",
           "read_safetensors", "save_model"]

BACKENDS = ("numpy", "torch")
_LAZY = {"ACTIVATIONS": "._torch", "LDOSModel": "._torch", "TorchModel": "._torch",
         "ensemble_model": "._torch", "save_model": "._torch",
         "convert_mala_model": "._mala", "import_mala": "._mala",
         "read_mala_archive": "._mala"}


class Model(Protocol):
    """An LDOS network with its metadata, whatever evaluates it."""

    info: ModelInfo

    @property
    def n_features(self) -> int:
        """Descriptor features per point (input layer)."""

    @property
    def n_energies(self) -> int:
        """LDOS energies per point (output layer)."""

    def __call__(self, descriptors_pf, chunk_points: int = DEFAULT_CHUNK_POINTS) -> np.ndarray:
        """LDOS float64 [points, energies] in 1/(eV·Å³) from raw descriptors [points,
        features], the model's LDOS restriction applied; ``chunk_points`` at a time.
        MlscaleError for a wrong shape, non-finite descriptors or chunk_points < 1."""

    def vjp(self, descriptors_pf, grad_ldos_pe,
            chunk_points: int = DEFAULT_CHUNK_POINTS) -> np.ndarray:
        """Σ_e grad_ldos_pe ∂ldos_pe/∂descriptors_pf, float64 [points, features] (the
        backward pass, restriction included), in the units of grad_ldos_pe / (eV·Å³)
        (descriptors are dimensionless): with grad_ldos_pe = ∂E/∂LDOS in eV·(eV·Å³), eV."""


def load_model(path, backend: str = "numpy") -> Model:
    """The model file ``path`` (safetensors, no pickle), evaluated by ``backend``
    (``"numpy"``: no torch; ``"torch"``)."""
    if backend == "numpy":
        return NumpyNetwork.from_file(path)
    if backend == "torch":
        from ._torch import TorchModel

        return TorchModel.from_file(path)
    raise MlscaleError(f"unknown network backend '{backend}' (choose from "
                       f"{', '.join(BACKENDS)})")


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name], __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
