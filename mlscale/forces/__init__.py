"""Forces: −dE_total/dR through every stage of the prediction (docs/forces.md).

Stages, each a pure function over arrays and each the exact derivative of mlscale's
own energy: :func:`ldos_gradient` (electrons, μ's response included),
:func:`density_gradient` (Hartree and XC kernel terms), :func:`core_forces`
(pseudo-core charge), :func:`ewald_forces`, and :func:`prediction_forces` (the chain,
with the bispectrum adjoint of :mod:`mlscale.descriptors.adjoint`). Names load on first
use, so that importing this package does not load libxc or the FFT libraries.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .chain import Forces, prediction_forces
    from .core import core_forces
    from .density import DensityGradient, density_gradient
    from .electrons import LdosGradient, ldos_gradient, weight_derivatives
    from .ewald import ewald_forces

__all__ = ["DensityGradient", "Forces", "LdosGradient", "core_forces", "density_gradient",
           "ewald_forces", "ldos_gradient", "prediction_forces", "weight_derivatives"]

_MODULES = {"Forces": ".chain", "prediction_forces": ".chain", "core_forces": ".core",
            "DensityGradient": ".density", "density_gradient": ".density",
            "LdosGradient": ".electrons", "ldos_gradient": ".electrons",
            "weight_derivatives": ".electrons", "ewald_forces": ".ewald"}


def __getattr__(name: str) -> Any:
    if name in _MODULES:
        return getattr(importlib.import_module(_MODULES[name], __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
