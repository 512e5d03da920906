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

KB_EV_PER_K = 8.617333262e-5
"""Boltzmann's constant in eV/K."""

EV_JOULE = 1.602176634e-19
"""One eV in J (the elementary charge in C)."""
