"""Training data from Quantum ESPRESSO: structures → pw.x → pp.x LDOS/density → snapshots."""

from .dataset import check_bands_cover, generate_dataset, run_qe
from .qe_input import pp_density_input, pp_ldos_input, pw_input
from .qe_run import QERunner, check_pw_output
from .settings import DFTSettings, LdosSettings, degauss_ry
from .structures import read_structures, thermal_fcc_snapshots

__all__ = [
    "DFTSettings", "LdosSettings", "QERunner", "check_bands_cover", "check_pw_output",
    "degauss_ry", "generate_dataset", "pp_density_input", "pp_ldos_input", "pw_input",
    "read_structures", "run_qe", "thermal_fcc_snapshots",
]
