"""Unit conversions between mlscale's edges (eV, Å) and the atomic units used inside.

CODATA 2018 values, as in Quantum ESPRESSO 6.6+ (``Modules/constants.f90``), so that
numbers compared with QE output do not differ by a change of constants.
"""

BOHR_ANGSTROM = 0.529177210903
"""One Bohr in Å."""

HARTREE_EV = 27.211386245988
"""One Hartree in eV."""

RYDBERG_EV = HARTREE_EV / 2
"""One Rydberg in eV."""
