"""Total energy from the density: Hartree, exchange-correlation with core correction, Ewald.

Distributed over the ranks' real-space blocks; validated term by term against
Quantum ESPRESSO (docs/energy.md). The names below are loaded on first use: the XC
and FFT libraries (pyscf/libxc, mpi4py-fft) cost memory that a prediction without the
energy phase does not pay, and reading pseudopotentials needs neither.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .ewald import ewald_energy
    from .fft import DistributedFFT
    from .total import density_energy_terms, total_energy
    from .upf import Pseudopotential, find_pseudopotentials, read_upf

__all__ = [
    "DistributedFFT", "Pseudopotential", "density_energy_terms", "ewald_energy",
    "find_pseudopotentials", "read_upf", "total_energy",
]

_MODULES = {"ewald_energy": ".ewald", "DistributedFFT": ".fft",
            "density_energy_terms": ".total", "total_energy": ".total",
            "Pseudopotential": ".upf", "find_pseudopotentials": ".upf", "read_upf": ".upf"}


def __getattr__(name: str) -> Any:
    if name in _MODULES:
        return getattr(importlib.import_module(_MODULES[name], __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
