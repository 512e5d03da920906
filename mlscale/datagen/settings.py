"""DFT (pw.x) and LDOS (pp.x) settings for data generation, as frozen dataclasses.

Energies follow QE's conventions where QE's inputs do: cutoffs in Ry, LDOS
energies and broadening in eV (pp.x reads them in eV). Temperatures in K.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from ..config import EnergyGrid, _from_dict
from ..errors import MlscaleError
from ..units import KB_EV_PER_K, RYDBERG_EV

DEFAULT_PSEUDO_DIR = "/usr/share/espresso/pseudo"


def degauss_ry(temperature_K: float) -> float:
    """Fermi–Dirac smearing width k_B·T in Ry for an electronic temperature in K."""
    return KB_EV_PER_K * temperature_K / RYDBERG_EV


@dataclass(frozen=True)
class DFTSettings:
    """pw.x SCF settings.

    ecutwfc/ecutrho: plane-wave cutoffs in Ry (ecutrho None: 4·ecutwfc, QE's default).
    kpoints: Monkhorst–Pack grid; kshift: per axis 0 or 1 (shifted by half a step).
    temperature: electronic temperature in K (Fermi–Dirac smearing, degauss = k_B·T).
    nbnd: bands (None: QE's default, usually too few to cover an LDOS grid above E_F).
    conv_thr: SCF threshold in Ry for the whole cell.
    """

    ecutwfc: float = 20.0
    ecutrho: float | None = None
    kpoints: tuple[int, int, int] = (2, 2, 2)
    kshift: tuple[int, int, int] = (0, 0, 0)
    temperature: float = 298.0
    pseudopotentials: dict = field(default_factory=lambda: {"Al": "Al.pz-vbc.UPF"})
    pseudo_dir: str = DEFAULT_PSEUDO_DIR
    conv_thr: float = 1e-8
    mixing_beta: float = 0.3
    electron_maxstep: int = 100
    nbnd: int | None = None

    def __post_init__(self):
        object.__setattr__(self, "kpoints", tuple(int(k) for k in self.kpoints))
        object.__setattr__(self, "kshift", tuple(int(k) for k in self.kshift))
        object.__setattr__(self, "pseudopotentials", dict(self.pseudopotentials))
        if len(self.kpoints) != 3 or min(self.kpoints) < 1:
            raise MlscaleError(f"kpoints must be three positive integers, got {self.kpoints}")
        if len(self.kshift) != 3 or not set(self.kshift) <= {0, 1}:
            raise MlscaleError(f"kshift must be three of 0 or 1, got {self.kshift}")
        if not self.ecutwfc > 0 or (self.ecutrho is not None and self.ecutrho < 4 * self.ecutwfc):
            raise MlscaleError("need ecutwfc > 0 and ecutrho >= 4*ecutwfc (Ry)")
        if not self.temperature > 0:
            raise MlscaleError(f"electronic temperature must be > 0 K, got {self.temperature}")

    @property
    def degauss(self) -> float:
        """Smearing width in Ry."""
        return degauss_ry(self.temperature)

    @property
    def ecutrho_ry(self) -> float:
        return 4.0 * self.ecutwfc if self.ecutrho is None else float(self.ecutrho)

    def to_dict(self) -> dict:
        data = asdict(self)
        data["kpoints"], data["kshift"] = list(self.kpoints), list(self.kshift)
        return data

    @classmethod
    def from_dict(cls, data: dict) -> DFTSettings:
        return _from_dict(cls, data, "DFT")


@dataclass(frozen=True)
class LdosSettings:
    """pp.x LDOS settings: energy grid (absolute QE energies, eV) and broadening (eV).

    QE 6.7's pp.x broadens each eigenvalue with the SCF's smearing function, here the
    Fermi–Dirac derivative −f'(x) with x = (ε − ε_nk)/broadening (FWHM 3.53·broadening).
    """

    energy_grid: EnergyGrid = field(default_factory=lambda: EnergyGrid(-5.0, 0.1, 171))
    broadening: float = 0.1

    def __post_init__(self):
        if isinstance(self.energy_grid, dict):
            object.__setattr__(self, "energy_grid", EnergyGrid.from_dict(self.energy_grid))
        if not self.broadening > 0:
            raise MlscaleError(f"LDOS broadening must be > 0 eV, got {self.broadening}")

    @property
    def emax(self) -> float:
        """Highest LDOS energy in eV."""
        return float(self.energy_grid.energies[-1])

    def to_dict(self) -> dict:
        return {"energy_grid": self.energy_grid.to_dict(), "broadening": self.broadening}

    @classmethod
    def from_dict(cls, data: dict) -> LdosSettings:
        return _from_dict(cls, data, "LDOS")

