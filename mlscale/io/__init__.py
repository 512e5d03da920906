"""File formats: MALA-compatible numpy and openPMD, QE cubes and pw.x outputs, structures.

Every reader takes an optional :class:`~mlscale.grid.Block` and reads only that
part of the grid; the distributed writers are collective over a ``Comm`` and
each rank writes only its own block. Outputs are written atomically.
"""

from .atomic import atomic_path, write_json_atomic, write_text_atomic
from .cube import ldos_cube_paths, read_cube, read_cube_block, read_ldos_cubes
from .numpy_io import (
                       check_finite,
                       npy_shape,
                       read_descriptors_npy,
                       read_ldos_npy,
                       read_npy_block,
                       write_npy_distributed,
)
from .openpmd_io import DENSITY_UNITS, LDOS_UNITS, openpmd_info, read_openpmd, write_openpmd
from .qe import parse_pw_output
from .structure import read_structure, write_structure

__all__ = [
    "DENSITY_UNITS", "LDOS_UNITS", "atomic_path", "check_finite", "ldos_cube_paths",
    "npy_shape", "openpmd_info", "parse_pw_output", "read_cube", "read_cube_block",
    "read_descriptors_npy", "read_ldos_cubes", "read_ldos_npy", "read_npy_block",
    "read_openpmd", "read_structure", "write_json_atomic", "write_npy_distributed",
    "write_openpmd", "write_structure", "write_text_atomic",
]
