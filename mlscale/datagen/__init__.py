"""Training data from Quantum ESPRESSO: structures → pw.x → LDOS and density → snapshots."""

from .compact import (
                      CompactSettings,
                      read_compact_record,
                      record_training_arrays,
                      write_compact_record,
)
from .dataset import check_bands_cover, default_ldos_tool, generate_dataset, run_qe
from .qe_input import pp_density_input, pp_ldos_input, pw_input
from .qe_run import QERunner, check_pw_output
from .settings import DFTSettings, LdosSettings, degauss_ry
from .structures import read_structures, thermal_fcc_snapshots
from .wavefunctions import ldos_from_wavefunctions, read_band_structure, read_wavefunctions

__all__ = [
    "CompactSettings", "default_ldos_tool", "ldos_from_wavefunctions", "read_band_structure",
    "read_compact_record", "read_wavefunctions", "record_training_arrays", "write_compact_record",
    "DFTSettings", "LdosSettings", "QERunner", "check_bands_cover", "check_pw_output",
    "degauss_ry", "generate_dataset", "pp_density_input", "pp_ldos_input", "pw_input",
    "read_structures", "run_qe", "thermal_fcc_snapshots",
]
