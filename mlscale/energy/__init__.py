"""Total energy from the density: Hartree, exchange-correlation with core correction, Ewald.

Distributed over the ranks' real-space blocks; validated term by term against
Quantum ESPRESSO (docs/energy.md).
"""

from .ewald import ewald_energy
from .fft import DistributedFFT
from .total import density_energy_terms, total_energy
from .upf import Pseudopotential, find_pseudopotentials, read_upf

__all__ = [
    "DistributedFFT", "Pseudopotential", "density_energy_terms", "ewald_energy",
    "find_pseudopotentials", "read_upf", "total_energy",
]
