"""Quantum ESPRESSO references shared by tests/energy and tests/commands/test_energy.py.

tests/data/al_qe: LDA Al, QE 6.7, made by tests/data/al_qe/make_al_qe.py; pw.x's printed
energy summary (Ry) read back in eV.
"""

from __future__ import annotations

import re
from pathlib import Path

from mlscale.units import RYDBERG_EV

AL_DIR = Path(__file__).resolve().parents[1] / "data" / "al_qe"
QE_PSEUDO = Path("/usr/share/espresso/pseudo")
MEV = 1e-3


def qe_printed(path, label) -> float:
    """A term of pw.x's energy summary (``label contribution = x Ry``) in eV."""
    value = re.findall(rf"{label}\s+contribution\s*=\s*([-\d.]+)\s*Ry", Path(path).read_text())
    return float(value[-1]) * RYDBERG_EV
