"""The prediction pipeline, top to bottom, identical on 1 and N ranks.

    atoms ──► DistributedGrid (this rank's block) ──► descriptors, slab by slab
          ──► network ──► LDOS of the rank's points (float32)       :func:`ldos_on_grid`
          ──► DOS (Allreduce) ──► μ, E_band, −TS ──► n(r) of the block :func:`electrons_from_ldos`
          ──► E_H, E_xc, E_Ewald, −∫ n v_Hxc (distributed FFT)      :func:`energy_terms`
          ──► forces −dE/dR (optional; keeps the LDOS until done)   :mod:`mlscale.forces`

:func:`predict` composes these stages and returns a :class:`Prediction`; it writes
nothing (the command writes the outputs, :mod:`mlscale.output`). Nothing global is
gathered: each rank holds only its own points; the DOS (one number per energy) and
scalars are the only reduced quantities.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
from ase import Atoms
from mpi4py import MPI
from numpy.typing import DTypeLike

from . import electrons, energy, forces  # energy, forces: libraries load on first use
from .descriptors import check_atoms, compute_descriptors, descriptor_blocks, to_host
from .device import model_device
from .errors import MlscaleError
from .grid import DistributedGrid, Grid, grid_shape, qe_fft_shape
from .model import DEFAULT_CHUNK_POINTS, Model, ModelInfo
from .parallel import Comm
from .timing import Timings


@dataclass(frozen=True)
class ElectronicStructure:
    """The replicated electronic-structure scalars of a prediction (eV, electrons)."""

    fermi_energy_eV: float
    band_energy_eV: float
    entropy_contribution_eV: float  # −TS
    number_of_electrons: float  # ∫ D f dε at the Fermi level
    number_of_electrons_from_density: float  # ∫ n dV


@dataclass
class Prediction:
    """What one prediction computed: replicated DOS and scalars, the rank's density block.

    energies_e: LDOS energies (eV); dos_e: DOS (1/eV) summed over all ranks (a share:
    its partial sum); density_b: n(r) on the rank's block (1/Å³); energy_terms: the
    dict of :func:`mlscale.energy.density_energy_terms` without its electron count
    (None without pseudopotentials); total_energy_eV likewise.
    """

    info: ModelInfo
    dgrid: DistributedGrid
    n_electrons: float
    energies_e: np.ndarray
    dos_e: np.ndarray
    electrons: ElectronicStructure
    density_b: np.ndarray
    energy_terms: dict[str, Any] | None = None
    total_energy_eV: float | None = None
    forces: forces.Forces | None = None  # eV/Å, replicated (predict(..., forces=True))

    def scalars(self) -> dict[str, Any]:
        """The electronic-structure and energy numbers under their results.json keys."""
        out = asdict(self.electrons)
        if self.energy_terms is not None:
            out.update(self.energy_terms)
            out["total_energy_eV"] = self.total_energy_eV
        return out


# -- setup --------------------------------------------------------------------------------
def number_of_electrons(atoms: Atoms, valence_electrons: Mapping[str, float]) -> float:
    """Electron count of a structure from valence electrons per species."""
    symbols = atoms.get_chemical_symbols()
    unknown = sorted(set(symbols) - set(valence_electrons))
    if unknown:
        raise MlscaleError(
            f"no valence electron count for {', '.join(unknown)} in the model; pass --electrons"
        )
    return float(sum(valence_electrons[s] for s in symbols))


def grid_for(atoms: Atoms, info: ModelInfo, shape: Sequence[int] | None = None) -> Grid:
    """The grid of a prediction: given explicitly, or QE's FFT grid at the model's ecutrho."""
    if shape is None:
        if info.ecutrho_Ry is None:
            raise MlscaleError("the model does not record ecutrho_Ry; pass --grid NX NY NZ")
        shape = qe_fft_shape(atoms.cell[:], info.ecutrho_Ry)
    return Grid(np.array(atoms.cell[:]), grid_shape(tuple(shape)))


def setup(atoms: Atoms, info: ModelInfo, comm: Comm, *, shape: Sequence[int] | None = None,
          n_electrons: float | None = None, share: tuple[int, int] | None = None,
          backend: str = "native", with_energy: bool = False) -> tuple[DistributedGrid, float]:
    """The distributed grid of a prediction and its electron count, checked on all ranks.

    share=(R, P): rank R's block of a P-rank job on this one process (``comm`` of one
    rank, native descriptors); μ is then solved for R's proportional share of the
    electrons. Collective.
    """
    with comm.collective():
        grid = grid_for(atoms, info, shape)
        check_atoms(atoms, info.descriptors.species)  # unknown species: before the count
        if n_electrons is None:
            n_electrons = number_of_electrons(atoms, info.valence_electrons)
        if share is not None and (comm.size != 1 or backend != "native"):
            raise MlscaleError("running one rank's share needs one process and the native "
                               "descriptor backend")
        if share is not None and with_energy:
            raise MlscaleError("the total energy needs the whole density: not with one share")
        dgrid = (DistributedGrid(grid, comm) if share is None
                 else DistributedGrid.share(grid, *share))
    if dgrid.is_share:
        n_electrons *= dgrid.local_points / dgrid.npoints
    return dgrid, float(n_electrons)


def check_pseudopotentials(info: ModelInfo, pseudopotentials: Mapping[str, Any]) -> None:
    """Read each UPF (paths or :class:`~mlscale.energy.Pseudopotential`; MlscaleError for a
    corrupt file, before any work) and compare its valence with the model's
    ``valence_electrons``: another valence (a semicore UPF) gives another density and
    total energy, so it is an error."""
    for symbol, source in pseudopotentials.items():
        pp = source if isinstance(source, energy.Pseudopotential) else energy.read_upf(source)
        expected = info.valence_electrons.get(symbol)
        if expected is not None and abs(pp.z_valence - expected) > 1e-6:
            raise MlscaleError(
                f"pseudopotential {pp.path} has {pp.z_valence:g} valence electrons for "
                f"{symbol}, the model {expected:g}: use the pseudopotential of the model's "
                f"training data")


#: warn for grid spacings this much coarser (or twice this much finer) than the training grid
SPACING_TOLERANCE = 1.25


def grid_spacing_warning(grid: Grid, info: ModelInfo) -> str | None:
    """A warning when ``grid``'s spacings are far from those of QE's grid at the model's
    ecutrho (the grid its training data were computed on): more than 25 % coarser or 2.5×
    finer along an axis. None without a recorded ecutrho or when the spacing fits."""
    if info.ecutrho_Ry is None:
        return None
    reference = Grid(grid.cell_cv, qe_fft_shape(grid.cell_cv, info.ecutrho_Ry))
    ratio_c = (np.linalg.norm(grid.voxel_cv, axis=1)
               / np.linalg.norm(reference.voxel_cv, axis=1))
    if ratio_c.max() <= SPACING_TOLERANCE and ratio_c.min() >= 1 / (2 * SPACING_TOLERANCE):
        return None
    spacing = ", ".join(f"{x:.3f}" for x in np.linalg.norm(grid.voxel_cv, axis=1))
    trained = ", ".join(f"{x:.3f}" for x in np.linalg.norm(reference.voxel_cv, axis=1))
    return (f"the grid {list(grid.shape)} has spacings {spacing} Å, "
            f"{' '.join(f'{r:.2f}' for r in ratio_c)} times those of the model's training "
            f"grid ({list(reference.shape)} at ecutrho {info.ecutrho_Ry:g} Ry: {trained} Å); "
            f"the LDOS integrals are less accurate on a coarser grid")


def available_memory_bytes() -> int | None:
    """Memory this node can still give (bytes): MemAvailable, capped by the cgroup's
    limit minus its use where one is set; None if unknown."""
    values: list[int] = []
    try:
        with open("/proc/meminfo", encoding="ascii") as handle:
            values += [int(line.split()[1]) * 1024 for line in handle
                       if line.startswith("MemAvailable:")]
    except (OSError, ValueError, IndexError):
        pass
    try:
        limit = Path("/sys/fs/cgroup/memory.max").read_text(encoding="ascii").strip()
        used = Path("/sys/fs/cgroup/memory.current").read_text(encoding="ascii").strip()
        if limit != "max":
            values.append(int(limit) - int(used))
    except (OSError, ValueError):
        pass
    return min(values) if values else None


def check_memory(dgrid: DistributedGrid, n_energies: int,
                 available_bytes: int | None = None) -> None:
    """MlscaleError on every rank if the LDOS and density blocks the ranks of a node will
    hold (at least 4 bytes per point and energy, float32 LDOS, plus 8 per point) exceed
    the node's available memory (default :func:`available_memory_bytes`). Collective."""
    need = dgrid.local_points * (4 * n_energies + 8)
    node = dgrid.comm.mpi.Split_type(MPI.COMM_TYPE_SHARED)
    node_need, node_ranks = node.allreduce(need), node.Get_size()
    node.Free()
    available = available_memory_bytes() if available_bytes is None else available_bytes
    with dgrid.comm.collective():
        if available is not None and node_need > available:
            raise MlscaleError(
                f"the grid {list(dgrid.shape)} needs at least {need / 2**30:.3g} GiB per rank "
                f"({dgrid.local_points} points × {n_energies} LDOS energies × 4 bytes + the "
                f"density), {node_need / 2**30:.3g} GiB for the {node_ranks} rank(s) on this "
                f"node, which has {available / 2**30:.3g} GiB available: use more nodes or "
                f"a coarser --grid (`mlscale plan` estimates the ranks)")


# -- stages -------------------------------------------------------------------------------
def ldos_on_grid(atoms: Atoms, model: Model, dgrid: DistributedGrid, backend: str,
                 chunk_points: int, timings: Timings, dtype: DTypeLike = np.float32,
                 descriptors_out: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """LDOS of the rank's points, ``dtype`` (float32; float64 for derivative checks)
    ``[points, energies]`` in 1/(eV·Å³) (C order of the block), and the rank's partial
    DOS (1/eV), accumulated slab by slab.

    Memory: the float32 LDOS (4·energies bytes per point) plus one slab's descriptors
    and activations (native backend; LAMMPS computes the whole block in one call).
    descriptors_out [points, features]: if given, filled with every slab's descriptors
    (for the forces, which then need not recompute them).
    """
    settings = model.info.descriptors
    local_atoms = atoms
    if backend == "native":  # only the atoms near the block (>= 1), selected once
        with timings.phase("descriptors"):
            near = dgrid.atoms_near(atoms.positions @ np.linalg.inv(dgrid.cell_cv),
                                    settings.cutoff)
            local_atoms = atoms[near] if len(near) else atoms[:1]
    ldos_pe = np.empty((dgrid.local_points, model.n_energies), dtype=dtype)
    dos_e = np.zeros(model.n_energies)
    offset = 0
    for chunk in descriptor_blocks(dgrid, backend, chunk_points):
        with timings.phase("descriptors"):
            descriptors_pf = compute_descriptors(local_atoms, dgrid, settings, backend,
                                                 block=chunk, check=False,
                                                 device=model_device(model)  # on its GPU
                                                 ).reshape(chunk.size, -1)
            if descriptors_out is not None:
                descriptors_out[offset:offset + chunk.size] = to_host(descriptors_pf)
        with timings.phase("network"):
            ldos_chunk = model(descriptors_pf, chunk_points)
            del descriptors_pf
        with timings.phase("electrons"):
            dos_e += electrons.dos_from_ldos(ldos_chunk, dgrid.voxel_volume)
            ldos_pe[offset:offset + chunk.size] = ldos_chunk
        offset += chunk.size
    return ldos_pe, dos_e


def electrons_from_ldos(ldos_pe: np.ndarray, dgrid: DistributedGrid, energies_e: np.ndarray,
                        n_electrons: float, temperature_K: float, method: str = "analytical",
                        fermi_energy: float | None = None, local_dos_e: np.ndarray | None = None
                        ) -> tuple[ElectronicStructure, np.ndarray, np.ndarray]:
    """``(scalars, DOS, density block)`` from the LDOS of the rank's points.

    ldos_pe: [points, energies] 1/(eV·Å³); local_dos_e: the rank's partial DOS if already
    summed (default: from ``ldos_pe``). The DOS (1/eV) is reduced over the ranks; μ is
    solved for ``n_electrons`` (or ``fermi_energy`` in eV is used); the density block is
    in 1/Å³. Collective; the same function serves ``mlscale electrons``.
    """
    if local_dos_e is None:
        local_dos_e = electrons.dos_from_ldos(ldos_pe, dgrid.voxel_volume)
    dos_e = dgrid.sum(local_dos_e)
    with dgrid.comm.collective():
        if fermi_energy is None:
            summary = _solved(dos_e, energies_e, n_electrons, temperature_K, method, dgrid)
        else:
            summary = _at_fermi_level(dos_e, energies_e, fermi_energy, temperature_K, method)
    density_p = electrons.density(ldos_pe, energies_e, summary["fermi_energy_eV"],
                                  temperature_K, method)
    from_density = dgrid.sum(float(density_p.sum() * dgrid.voxel_volume))
    scalars = ElectronicStructure(**summary, number_of_electrons_from_density=from_density)
    return scalars, dos_e, density_p.reshape(dgrid.local_shape)


def _solved(dos_e: np.ndarray, energies_e: np.ndarray, n_electrons: float,
            temperature_K: float, method: str, dgrid: DistributedGrid) -> dict:
    """electrons.electronic_structure; an electron count the DOS cannot hold names the grid
    (a grid far coarser than the model's gives a DOS of the wrong size)."""
    try:
        return electrons.electronic_structure(dos_e, energies_e, n_electrons, temperature_K,
                                              method)
    except MlscaleError as error:
        if "cannot place" not in str(error):
            raise
        raise MlscaleError(f"{error}, on the {dgrid.shape[0]}x{dgrid.shape[1]}x{dgrid.shape[2]} "
                           f"grid ({dgrid.voxel_volume:.4g} Å³ per point): is the grid (or "
                           "--electrons) right for this model?") from None


def _at_fermi_level(dos_e: np.ndarray, energies_e: np.ndarray, fermi_energy: float,
                    temperature_K: float, method: str) -> dict[str, float]:
    args = (dos_e, energies_e, fermi_energy, temperature_K, method)
    return {"fermi_energy_eV": float(fermi_energy),
            "band_energy_eV": electrons.band_energy(*args),
            "entropy_contribution_eV": electrons.entropy_contribution(*args),
            "number_of_electrons": electrons.number_of_electrons(*args)}


def energy_terms(density_b: np.ndarray, dgrid: DistributedGrid, atoms: Atoms,
                 pseudopotentials: dict[str, Any], info: ModelInfo,
                 scalars: ElectronicStructure) -> tuple[dict[str, Any], float]:
    """Density-dependent energy terms (eV, without their electron count) and the total
    energy (eV) of a prediction. Collective."""
    terms = energy.density_energy_terms(density_b, dgrid, atoms, pseudopotentials,
                                        ecutrho_Ry=info.ecutrho_Ry)
    del terms["number_of_electrons"]  # ∫n dV: already number_of_electrons_from_density
    return terms, energy.total_energy(scalars.band_energy_eV, scalars.entropy_contribution_eV,
                                      terms)


# -- the pipeline -------------------------------------------------------------------------
def predict(atoms: Atoms, model: Model, dgrid: DistributedGrid, n_electrons: float, *,
            backend: str = "native", method: str = "analytical",
            chunk_points: int = DEFAULT_CHUNK_POINTS,
            pseudopotentials: dict[str, Any] | None = None, fermi_energy: float | None = None,
            timings: Timings | None = None, with_forces: bool = False,
            ldos_dtype: DTypeLike = np.float32) -> Prediction:
    """Predict the electronic structure of ``atoms`` on ``dgrid`` (see :func:`setup`).

    with_forces: also −dE_total/dR (needs pseudopotentials and the Fermi level solved for
    the electron count). ldos_dtype: the stored LDOS (float64 for derivative checks).
    Collective over ``dgrid.comm``; the phases are timed into ``timings``.
    """
    timings = Timings() if timings is None else timings
    info = model.info
    energies_e = info.energy_grid.energies
    if with_forces and (pseudopotentials is None or fermi_energy is not None):
        raise MlscaleError("forces need pseudopotentials and the Fermi level of the "
                           "electron count (no --fermi-energy)")
    if pseudopotentials is not None:
        with dgrid.comm.collective():
            check_pseudopotentials(info, pseudopotentials)
    kept_pf = None  # the forces reuse the descriptors, in the network's input dtype
    if with_forces:
        kept_pf = np.empty((dgrid.local_points, model.n_features),
                           dtype=getattr(model, "dtype", np.float32))
    ldos_pe, local_dos_e = ldos_on_grid(atoms, model, dgrid, backend, chunk_points, timings,
                                        ldos_dtype, kept_pf)
    with timings.phase("electrons"):
        scalars, dos_e, density_b = electrons_from_ldos(
            ldos_pe, dgrid, energies_e, n_electrons, info.temperature_K, method, fermi_energy,
            local_dos_e)
    if not with_forces:
        del ldos_pe
    result = Prediction(info, dgrid, n_electrons, energies_e, dos_e, scalars, density_b)
    if pseudopotentials is not None:
        with timings.phase("energy"):
            result.energy_terms, result.total_energy_eV = energy_terms(
                density_b, dgrid, atoms, pseudopotentials, info, scalars)
    if with_forces and pseudopotentials is not None:  # forces without them raised above
        result.forces = forces.prediction_forces(
            atoms, model, dgrid, ldos_pe, dos_e, scalars.fermi_energy_eV, density_b,
            pseudopotentials, backend=backend, method=method, chunk_points=chunk_points,
            timings=timings, descriptors_pf=kept_pf)
    return result
