"""Structures for data generation: ASE-readable files or thermal MD snapshots of an fcc crystal."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from ase import units
from ase.build import bulk
from ase.calculators.emt import EMT
from ase.constraints import FixCom
from ase.md.langevin import Langevin
from ase.md.velocitydistribution import Stationary

from ..errors import MlscaleError


def read_structures(paths) -> list:
    """All frames of the given ASE-readable files, in order; MlscaleError if unreadable."""
    from ase.io import read

    frames: list = []
    for path in paths:
        if not Path(path).is_file():
            raise MlscaleError(f"structure file not found: {path}")
        try:
            frames.extend(read(path, index=":", parallel=False))
        except Exception as error:  # noqa: BLE001 - any parser failure is a user error
            raise MlscaleError(f"cannot read structure file {path}: {error}") from None
    if not frames:
        raise MlscaleError("no structures given")
    return frames


def thermal_fcc_snapshots(symbol: str = "Al", a: float = 4.05, repeat=(2, 2, 2),
                          temperature: float = 298.0, count: int = 10, seed: int = 0,
                          timestep_fs: float = 2.0, equilibration_steps: int = 500,
                          interval_steps: int = 50) -> list:
    """Snapshots of a conventional fcc supercell from a seeded Langevin MD with ASE's EMT.

    a: lattice constant in Å; temperature: ionic temperature in K. Velocities start from
    a Maxwell–Boltzmann distribution at 2T (equipartition), the MD runs
    ``equilibration_steps`` steps, then one snapshot every ``interval_steps`` steps
    (timestep in fs, friction 0.01/fs). Returns ``count`` Atoms (positions in Å,
    wrapped into the cell) without calculators.
    """
    if count < 1:
        raise MlscaleError(f"need at least one snapshot, got count={count}")
    try:
        atoms = bulk(symbol, "fcc", a=a, cubic=True).repeat(tuple(repeat))
    except Exception as error:  # noqa: BLE001
        raise MlscaleError(f"cannot build an fcc {symbol} crystal: {error}") from None
    atoms.calc = EMT()
    atoms.set_constraint(FixCom())
    rng = np.random.default_rng(seed)
    masses_a1 = atoms.get_masses()[:, None]
    atoms.set_momenta(rng.normal(size=(len(atoms), 3))
                      * np.sqrt(masses_a1 * units.kB * 2 * temperature))
    Stationary(atoms)
    dynamics = Langevin(atoms, timestep_fs * units.fs, temperature_K=temperature,
                        friction=0.01 / units.fs, fixcm=False, rng=rng)
    dynamics.run(equilibration_steps)
    snapshots = []
    for _ in range(count):
        dynamics.run(interval_steps)
        snapshot = atoms.copy()
        snapshot.calc = None
        snapshot.set_constraint()
        snapshot.wrap()
        snapshots.append(snapshot)
    return snapshots
