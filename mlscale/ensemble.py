"""A cheap uncertainty signal: the spread of a small ensemble of models over one prediction.

``mlscale predict --model M1 --ensemble M2 M3 ...`` computes the descriptors of the
rank's points once (:func:`shared_descriptors`, chunk by chunk as the pipeline does) and
evaluates every member on them (:func:`member_prediction`): DOS, Fermi level, band
energy, −TS, density and (with pseudopotentials) total energy, through the pipeline's
own functions (:func:`mlscale.electrons.electronic_structure`,
:func:`mlscale.electrons.density`, :func:`mlscale.inference.energy_terms`). M1's
prediction is what the command writes (dos.csv, density, results.json's scalars);
results.json gets an ``ensemble`` entry (:func:`ensemble_results`): each member's
values, their mean and standard deviation (sample, ddof = 1), per cell and per atom
(energies in eV, eV/atom).

Memory: the descriptors of the rank's points (the network's input dtype, float32:
4·features bytes per point, 364 B with MALA's 91 features, what ``--forces`` keeps too),
each member's density block (8 B per point), and one chunk of LDOS: a member never holds
its whole LDOS. It runs in two passes over the descriptors (network → partial DOS →
reduced DOS → μ and the scalars; network again → density), so an extra member costs two
network evaluations and no descriptors. Without ``--ensemble`` nothing changes: the
pipeline (:func:`mlscale.inference.predict`) runs with its own bounded store.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from ase import Atoms

from . import electrons
from .descriptors import compute_descriptors, descriptor_blocks
from .errors import MlscaleError
from .grid import DistributedGrid
from .inference import (
    ElectronicStructure,
    Prediction,
    check_pseudopotentials,
    dos_scalars,
    energy_terms,
)
from .model import DEFAULT_CHUNK_POINTS, Model, ModelInfo, load_model
from .parallel import Comm
from .timing import Timings

#: results.json keys of a member's values that the ensemble summarises (eV)
KEYS = ("fermi_energy_eV", "band_energy_eV", "entropy_contribution_eV", "total_energy_eV")
#: of those, the extensive ones, also given per atom (eV/atom)
EXTENSIVE = ("band_energy_eV", "entropy_contribution_eV", "total_energy_eV")


@dataclass
class SharedDescriptors:
    """This rank's descriptors, computed once for all members of an ensemble.

    descriptors_pf [points, features] in the network's input dtype (float32: 4·features
    bytes per point, 364 B with MALA's 91 features), the block's C order; chunks: the
    points of each chunk, as the pipeline evaluates them (:func:`descriptor_blocks`).
    """

    descriptors_pf: np.ndarray
    chunks: list[int]

    def ranges(self) -> list[tuple[int, int]]:
        edges = np.concatenate([[0], np.cumsum(self.chunks, dtype=np.int64)])
        return [(int(a), int(b)) for a, b in zip(edges[:-1], edges[1:])]


def shared_descriptors(atoms: Atoms, model: Model, dgrid: DistributedGrid, backend: str,
                       chunk_points: int, timings: Timings) -> SharedDescriptors:
    """The descriptors of the rank's points, chunk by chunk as the pipeline computes them
    (native: the atoms near the block, slabs of ≤ ~chunk_points; lammps: the block in
    one collective call). Timed as "descriptors"."""
    settings = model.info.descriptors
    local_atoms = atoms
    with timings.phase("descriptors"):
        if backend == "native":
            near = dgrid.atoms_near(atoms.positions @ np.linalg.inv(dgrid.cell_cv),
                                    settings.cutoff)
            local_atoms = atoms[near] if len(near) else atoms[:1]
        dtype = np.dtype(getattr(model, "dtype", np.float32))
        out = np.empty((dgrid.local_points, model.n_features), dtype=dtype)
        chunks, offset = [], 0
        for chunk in descriptor_blocks(dgrid, backend, chunk_points):
            out[offset:offset + chunk.size] = compute_descriptors(
                local_atoms, dgrid, settings, backend=backend, block=chunk, check=False
            ).reshape(chunk.size, -1)
            offset += chunk.size
            chunks.append(chunk.size)
    return SharedDescriptors(out, chunks)


def load_members(paths: Sequence[Path], primary: ModelInfo, backend: str,
                 comm: Comm) -> list[Model]:
    """Load the extra ensemble members; MlscaleError (collective) for a missing file or a
    member whose descriptors, energy grid, temperature or valence differ from the
    primary model's (they must read the same descriptors and mean the same LDOS)."""
    members = []
    with comm.collective():
        for path in paths:
            member = load_model(Path(path), backend)
            _check_compatible(Path(path), member.info, primary)
            members.append(member)
    return members


def _check_compatible(path: Path, info: ModelInfo, primary: ModelInfo) -> None:
    differences = [name for name, a, b in (
        ("descriptor settings", info.descriptors, primary.descriptors),
        ("energy grid", info.energy_grid, primary.energy_grid),
        ("electronic temperature", info.temperature_K, primary.temperature_K),
        ("valence electrons", dict(info.valence_electrons), dict(primary.valence_electrons)),
    ) if a != b]
    if differences:
        raise MlscaleError(f"ensemble member {path} differs from the prediction's model in its "
                           f"{', '.join(differences)}: members must be trained on the same "
                           "descriptors, energy grid and temperature")


def member_prediction(member: Model, shared: SharedDescriptors, dgrid: DistributedGrid,
                      atoms: Atoms, n_electrons: float, *, method: str = "analytical",
                      chunk_points: int = DEFAULT_CHUNK_POINTS,
                      pseudopotentials: dict[str, Any] | None = None,
                      fermi_energy: float | None = None,
                      timings: Timings | None = None) -> Prediction:
    """One member's :class:`~mlscale.inference.Prediction` from the shared descriptors.

    Pass 1: the member's LDOS chunk by chunk → partial DOS → DOS (1/eV, reduced over the
    ranks) → μ (eV) for ``n_electrons`` (or ``fermi_energy``), E_band, −TS.
    Pass 2: the LDOS again → density (1/Å³) of the rank's block → with
    ``pseudopotentials`` the density energy terms and the total energy (eV)
    (:func:`mlscale.inference.energy_terms`). Memory: one chunk's LDOS and the density
    block. Collective.
    """
    timings = Timings() if timings is None else timings
    info = member.info
    energies_e, temperature = info.energy_grid.energies, info.temperature_K
    local_dos_e = np.zeros(member.n_energies)
    for start, stop in shared.ranges():
        with timings.phase("network"):
            ldos = member(shared.descriptors_pf[start:stop], chunk_points)
        with timings.phase("electrons"):
            local_dos_e += electrons.dos_from_ldos(ldos, dgrid.voxel_volume)
    with timings.phase("electrons"):
        dos_e = dgrid.sum(local_dos_e)
        summary = dos_scalars(dos_e, dgrid, energies_e, n_electrons, temperature, method,
                              fermi_energy)
    density_p = np.empty(dgrid.local_points)
    for start, stop in shared.ranges():
        with timings.phase("network"):
            ldos = member(shared.descriptors_pf[start:stop], chunk_points)
        with timings.phase("electrons"):
            density_p[start:stop] = electrons.density(
                ldos, energies_e, summary["fermi_energy_eV"], temperature, method)
    from_density = dgrid.sum(float(density_p.sum() * dgrid.voxel_volume))
    scalars = ElectronicStructure(**summary, number_of_electrons_from_density=from_density)
    density_b = density_p.reshape(dgrid.local_shape)
    result = Prediction(info, dgrid, n_electrons, energies_e, dos_e, scalars, density_b)
    if pseudopotentials is not None:
        with timings.phase("energy"):
            result.energy_terms, result.total_energy_eV = energy_terms(
                density_b, dgrid, atoms, pseudopotentials, info, scalars)
    return result


def predict_ensemble(atoms: Atoms, models: Sequence[Model], dgrid: DistributedGrid,
                     n_electrons: float, *, backend: str = "native", method: str = "analytical",
                     chunk_points: int = DEFAULT_CHUNK_POINTS,
                     pseudopotentials: dict[str, Any] | None = None,
                     fermi_energy: float | None = None, timings: Timings | None = None
                     ) -> list[Prediction]:
    """Every model's prediction of ``atoms`` on ``dgrid``, descriptors computed once
    (:func:`shared_descriptors` with the first model's settings; :func:`load_members`
    checks the others). Memory per point: the descriptors (4·features bytes) and one
    density block per prediction kept (8 bytes each). Collective."""
    timings = Timings() if timings is None else timings
    if pseudopotentials is not None:
        with dgrid.comm.collective():
            check_pseudopotentials(models[0].info, pseudopotentials)
    shared = shared_descriptors(atoms, models[0], dgrid, backend, chunk_points, timings)
    return [member_prediction(model, shared, dgrid, atoms, n_electrons, method=method,
                              chunk_points=chunk_points, pseudopotentials=pseudopotentials,
                              fermi_energy=fermi_energy, timings=timings)
            for model in models]


def ensemble_results(predictions: Sequence[Prediction], paths: Sequence[str],
                     n_atoms: int) -> dict[str, Any]:
    """results.json's ``ensemble`` entry: the members (in order, the prediction's model
    first) with their values, and the mean and standard deviation (ddof = 1; 0 for one
    member) of each of :data:`KEYS` present, in eV, and of the extensive ones per atom
    (eV/atom)."""
    values = [{k: float(v) for k, v in p.scalars().items() if k in KEYS and v is not None}
              for p in predictions]
    keys = [k for k in KEYS if all(k in v for v in values)]
    table = {k: np.array([v[k] for v in values]) for k in keys}
    table.update({f"{k[:-3]}_per_atom_eV": table[k] / n_atoms for k in EXTENSIVE if k in keys})
    ddof = 1 if len(values) > 1 else 0
    return {
        "models": list(paths),
        "size": len(values),
        "members": [{"model": paths[i], **{k: float(a[i]) for k, a in table.items()}}
                    for i in range(len(values))],
        "mean": {k: float(np.mean(a)) for k, a in table.items()},
        "std": {k: float(np.std(a, ddof=ddof)) for k, a in table.items()},
        "std_ddof": ddof,
    }
