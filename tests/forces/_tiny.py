"""Tiny, cheap models for derivative tests: a random 5-8-21 Tanh MLP on twojmax-2
bispectrum features whose LDOS is a flat background (holding the cell's electrons below
~0 eV) modulated by ~±30 % with the descriptors; thermal Al (LDA) and MALA's Be2 cell
(PBE, core correction)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from ase import Atoms
from ase.build import bulk

from mlscale.config import BispectrumSettings, EnergyGrid, ModelSettings

AL_PSEUDO = Path("/usr/share/espresso/pseudo/Al.pz-vbc.UPF")
GRID = (12, 12, 12)
VALENCE = {"Al": 3, "Be": 2}


def write_tiny_model(path: Path, seed: int = 0, species: str = "Al",
                     electrons_per_A3: float = 0.18) -> Path:
    """Write the tiny model (mlscale's model writer, torch) to ``path``; the LDOS
    background holds ``electrons_per_A3`` below 0.5 eV."""
    import torch

    from mlscale.model import LDOSModel, save_model

    torch.manual_seed(seed)
    model = LDOSModel(ModelSettings(layers=(5, 8, 21), activation="Tanh"))
    rng = np.random.default_rng(seed)
    background = electrons_per_A3 / 6.0  # 1/(eV·Å³) over [-5.5, 0.5] eV
    model.set_scaling(np.zeros(5), np.full(5, 2.0), np.full(21, background),
                      0.3 * background * rng.uniform(0.5, 1.0, 21))
    settings = BispectrumSettings(twojmax=2, rcutfac=4.0, species=(species,))
    metadata = {"descriptors": settings.to_dict(),
                "energy_grid": EnergyGrid(-5.0, 0.5, 21).to_dict(), "temperature_K": 1000.0,
                "species": [species], "valence_electrons": {species: VALENCE[species]}}
    save_model(path, model.eval(), metadata)
    return path


def thermal_al(seed: int = 0, repeat=(1, 1, 1)) -> Atoms:
    """Cubic fcc Al (4 atoms per cell), each atom displaced by ~0.1 Å."""
    atoms = bulk("Al", "fcc", a=4.05, cubic=True).repeat(repeat)
    atoms.rattle(0.1, seed=seed)
    return atoms


def be2_cell(be2: Path) -> Atoms:
    """MALA's Be2 snapshot-0 structure, displaced by ~0.05 Å."""
    from mlscale.io import read_structure

    atoms = read_structure(be2 / "recreate_data" / "Be.pw.scf.in")
    atoms.rattle(0.05, seed=2)
    return atoms
