"""Physical constants and unit conversions: one set for all of mlscale.

CODATA 2018 (as Quantum ESPRESSO 6.6+ ``Modules/constants.f90`` and
``scipy.constants``). mlscale's edges use eV, Å, K; the energy module works in
Hartree atomic units inside; QE files use Ry and Bohr.
"""

BOHR_ANGSTROM = 0.529177210903
"""One Bohr in Å."""

HARTREE_EV = 27.211386245988
"""One Hartree in eV."""

RYDBERG_EV = HARTREE_EV / 2
"""One Rydberg in eV."""

EV_JOULE = 1.602176634e-19
"""One eV in J (the elementary charge in C; exact since the 2019 SI)."""

KB_EV_PER_K = 1.380649e-23 / EV_JOULE
"""Boltzmann's constant in eV/K: k_B (J/K, exact) over e, 8.617333262...e-5."""
