"""The prediction pipeline, top to bottom, identical on 1 and N ranks.

    atoms ──► DistributedGrid (this rank's block) ──► descriptors, chunk by chunk
          ──► network ──► LDOS of the chunk (float32)                  :func:`ldos_chunks`
          ──► per point: the fully occupied sum and the LDOS in a window
              around a bracket of μ (a first estimate)                :func:`electrons_on_grid`
          ──► DOS (Allreduce) ──► μ, E_band, −TS ──► n(r) of the block
              (μ outside the bracket: a second pass at μ)
          ──► E_H, E_xc, E_Ewald, −∫ n v_Hxc (distributed FFT)         :func:`energy_terms`
          ──► forces −dE/dR (optional; keeps the whole LDOS,
              :func:`ldos_on_grid` and :func:`electrons_from_ldos`)     :mod:`mlscale.forces`

:func:`predict` composes these stages and returns a :class:`Prediction`; it writes
nothing (the command writes the outputs, :mod:`mlscale.output`). Nothing global is
gathered: each rank holds only its own points; the DOS (one number per energy) and
scalars are the only reduced quantities.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
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
from .grid import (
    Block,
    DistributedGrid,
    Grid,
    grid_shape,
    halo_atoms,
    halo_c,
    qe_fft_shape,
    slabs,
    triple,
)
from .model import DEFAULT_CHUNK_POINTS, Model, ModelInfo
from .parallel import Comm
from .progress import progress
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


def kept_energies(info: ModelInfo, with_forces: bool = False) -> int:
    """LDOS energies a rank keeps per point (float32): all of them with forces, else at
    most :func:`electrons.kept_energies` (the window of :func:`electrons_on_grid`): 22
    of 176 for the shipped model at 298 K."""
    if with_forces:
        return info.energy_grid.count
    return electrons.kept_energies(info.energy_grid.energies, info.temperature_K)


def check_memory(dgrid: DistributedGrid, n_energies: int,
                 available_bytes: int | None = None) -> None:
    """MlscaleError on every rank if the LDOS and density blocks the ranks of a node will
    hold (at least 4 bytes per point and kept energy, float32 LDOS, plus 8 per point;
    n_energies: :func:`kept_energies`) exceed the node's available memory (default
    :func:`available_memory_bytes`). Collective."""
    need = dgrid.local_points * (4 * n_energies + 8)
    node = dgrid.comm.mpi.Split_type(MPI.COMM_TYPE_SHARED)
    node_need, node_ranks = node.allreduce(need), node.Get_size()
    node.Free()
    available = available_memory_bytes() if available_bytes is None else available_bytes
    with dgrid.comm.collective():
        if available is not None and node_need > available:
            raise MlscaleError(
                f"the grid {list(dgrid.shape)} needs at least {need / 2**30:.3g} GiB per rank "
                f"({dgrid.local_points} points × {n_energies} LDOS energies kept × 4 bytes + the "
                f"density), {node_need / 2**30:.3g} GiB for the {node_ranks} rank(s) on this "
                f"node, which has {available / 2**30:.3g} GiB available: use more nodes or "
                f"a coarser --grid (`mlscale plan` estimates the ranks)")


# -- stages -------------------------------------------------------------------------------
def ldos_chunks(atoms: Atoms, model: Model, dgrid: DistributedGrid, backend: str,
                chunk_points: int, timings: Timings,
                descriptors_out: np.ndarray | None = None) -> Iterator[tuple[slice, np.ndarray]]:
    """``(rows, LDOS)`` per chunk of the rank's block: the rows of the block's points (C
    order) and their LDOS ``[chunk points, energies]`` from the network (float32,
    1/(eV·Å³)), descriptors and network timed into ``timings``.

    Memory: one chunk's descriptors and activations (native backend; LAMMPS computes the
    whole block in one call). descriptors_out [points, features]: if given, filled with
    every chunk's descriptors (for the forces, which then need not recompute them).
    """
    settings = model.info.descriptors
    local_atoms = atoms
    if backend == "native":  # only the atoms near the block (>= 1), selected once
        with timings.phase("descriptors"):
            near = dgrid.atoms_near(atoms.positions @ np.linalg.inv(dgrid.cell_cv),
                                    settings.cutoff)
            local_atoms = atoms[near] if len(near) else atoms[:1]
    offset = 0
    chunks = descriptor_blocks(dgrid, backend, chunk_points)
    for chunk in progress(chunks, total=len(chunks), desc="descriptors+network",
                          unit="chunk", rank=dgrid.comm.rank):
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
        yield slice(offset, offset + chunk.size), ldos_chunk
        offset += chunk.size


def ldos_on_grid(atoms: Atoms, model: Model, dgrid: DistributedGrid, backend: str,
                 chunk_points: int, timings: Timings, dtype: DTypeLike = np.float32,
                 descriptors_out: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """LDOS of the rank's points, ``dtype`` (float32; float64 for derivative checks)
    ``[points, energies]`` in 1/(eV·Å³) (C order of the block), and the rank's partial
    DOS (1/eV), accumulated chunk by chunk (:func:`ldos_chunks`).

    Memory: the whole LDOS (4·energies bytes per point in float32) plus one chunk: what
    the forces and ``mlscale stm`` need; :func:`density_pass` keeps far less.
    """
    ldos_pe = np.empty((dgrid.local_points, model.n_energies), dtype=dtype)
    dos_e = np.zeros(model.n_energies)
    for rows, ldos_chunk in ldos_chunks(atoms, model, dgrid, backend, chunk_points, timings,
                                        descriptors_out):
        with timings.phase("electrons"):
            dos_e += electrons.dos_from_ldos(ldos_chunk, dgrid.voxel_volume)
            ldos_pe[rows] = ldos_chunk
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
    summary = dos_scalars(dos_e, dgrid, energies_e, n_electrons, temperature_K, method,
                           fermi_energy)
    density_p = electrons.density(ldos_pe, energies_e, summary["fermi_energy_eV"],
                                  temperature_K, method)
    from_density = dgrid.sum(float(density_p.sum() * dgrid.voxel_volume))
    scalars = ElectronicStructure(**summary, number_of_electrons_from_density=from_density)
    return scalars, dos_e, density_p.reshape(dgrid.local_shape)


def dos_scalars(dos_e: np.ndarray, dgrid: DistributedGrid, energies_e: np.ndarray,
                 n_electrons: float, temperature_K: float, method: str,
                 fermi_energy: float | None) -> dict[str, float]:
    """μ (solved for ``n_electrons``, or ``fermi_energy``), E_band, −TS and the electron
    count of the reduced DOS. Collective."""
    with dgrid.comm.collective():
        if fermi_energy is None:
            return _solved(dos_e, energies_e, n_electrons, temperature_K, method, dgrid)
        return _at_fermi_level(dos_e, energies_e, fermi_energy, temperature_K, method)


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


# -- the density with a bounded store (no LDOS kept) ---------------------------------------
#: the first Fermi level comes from the network on every ESTIMATE_STRIDE-th point per axis
ESTIMATE_STRIDE = 3
#: half-width (eV) of the Fermi-level bracket around that estimate
BRACKET_HALF_WIDTH_EV = electrons.BRACKET_HALF_WIDTH_EV


def electrons_on_grid(atoms: Atoms, model: Model, dgrid: DistributedGrid, n_electrons: float,
                      *, backend: str, method: str, chunk_points: int, timings: Timings,
                      fermi_energy: float | None = None,
                      fermi_bracket: tuple[float, float] | None = None,
                      dtype: DTypeLike = np.float32
                      ) -> tuple[ElectronicStructure, np.ndarray, np.ndarray]:
    """``(scalars, DOS, density block)`` as :func:`electrons_from_ldos` gives them from
    :func:`ldos_on_grid`'s LDOS, to round-off, without keeping the LDOS: per point only
    the density (float64) and the LDOS in an energy window around a bracket of μ
    (:func:`electrons.energy_window`; 8 + 4·window bytes, ≤ 96 for the shipped model).

    The bracket: ``fermi_energy`` itself if given, else ``fermi_bracket`` (eV; (−inf, inf):
    the whole LDOS), else :func:`fermi_estimate` ± BRACKET_HALF_WIDTH_EV. If the solved μ
    falls outside it, a second pass of descriptors and network sums the density at μ
    (correct, only slower). ``dtype``: the window's (float64 for derivative checks).
    Collective.
    """
    info = model.info
    energies_e, temperature_K = info.energy_grid.energies, info.temperature_K
    window = fermi_window(atoms, model, dgrid, n_electrons, method=method,
                          chunk_points=chunk_points, timings=timings,
                          fermi_energy=fermi_energy, fermi_bracket=fermi_bracket)
    pass_args = (atoms, model, dgrid, backend, chunk_points, timings)
    summed_p, window_pw, local_dos_e = density_pass(*pass_args, window, dtype)
    dos_e = dgrid.sum(local_dos_e)
    with timings.phase("electrons"):
        summary = dos_scalars(dos_e, dgrid, energies_e, n_electrons, temperature_K, method,
                               fermi_energy)
    mu = summary["fermi_energy_eV"]
    if not window.contains(mu):  # alike on all ranks: μ is replicated
        del summed_p, window_pw
        window = electrons.EnergyWindow.at(energies_e, mu, temperature_K, method)
        summed_p, window_pw, _ = density_pass(*pass_args, window, dtype)
    with timings.phase("electrons"), dgrid.comm.collective():
        density_p = electrons.finish_density(summed_p, window_pw, window, energies_e, mu,
                                             temperature_K, method)
    del window_pw
    from_density = dgrid.sum(float(density_p.sum() * dgrid.voxel_volume))
    scalars = ElectronicStructure(**summary, number_of_electrons_from_density=from_density)
    return scalars, dos_e, density_p.reshape(dgrid.local_shape)


def fermi_window(atoms: Atoms, model: Model, dgrid: DistributedGrid, n_electrons: float, *,
                 method: str, chunk_points: int, timings: Timings,
                 fermi_energy: float | None = None,
                 fermi_bracket: tuple[float, float] | None = None) -> electrons.EnergyWindow:
    """The energy window of :func:`electrons_on_grid`'s first pass (see there); without a
    bracket (the estimate found none) the empty window: a DOS pass, then the density
    pass. Collective."""
    info = model.info
    energies_e, temperature_K = info.energy_grid.energies, info.temperature_K
    if fermi_energy is not None:
        return electrons.EnergyWindow.at(energies_e, fermi_energy, temperature_K, method)
    if fermi_bracket is None:
        estimate = fermi_estimate(atoms, model, dgrid, n_electrons, method=method,
                                  chunk_points=chunk_points, timings=timings)
        if estimate is None:
            return electrons.EnergyWindow.empty()
        fermi_bracket = (estimate - BRACKET_HALF_WIDTH_EV, estimate + BRACKET_HALF_WIDTH_EV)
    return electrons.energy_window(energies_e, *fermi_bracket, temperature_K, method)


def density_pass(atoms: Atoms, model: Model, dgrid: DistributedGrid, backend: str,
                 chunk_points: int, timings: Timings, window: electrons.EnergyWindow,
                 dtype: DTypeLike = np.float32) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One pass of descriptors and network over the rank's block keeping what the density
    needs within ``window``: ``summed_p`` = Σ_{e < start} summed_e·LDOS_e (float64, 1/Å³),
    ``window_pw`` the LDOS of the window's energies (``dtype``, 1/(eV·Å³)), and the
    rank's partial DOS (1/eV). Per point 8 + 4·window.size bytes (float32), plus one
    chunk."""
    summed_p = np.empty(dgrid.local_points)
    window_pw = np.empty((dgrid.local_points, window.size), dtype=dtype)
    dos_e = np.zeros(model.n_energies)
    timings.count("density_passes")
    for rows, ldos_chunk in ldos_chunks(atoms, model, dgrid, backend, chunk_points, timings):
        with timings.phase("electrons"):
            dos_e += electrons.dos_from_ldos(ldos_chunk, dgrid.voxel_volume)
            summed_p[rows] = electrons.weighted_sum(ldos_chunk[:, :window.start],
                                                    window.summed_e)
            window_pw[rows] = ldos_chunk[:, window.start:window.stop]
    return summed_p, window_pw, dos_e


def fermi_estimate(atoms: Atoms, model: Model, dgrid: DistributedGrid, n_electrons: float, *,
                   method: str, chunk_points: int, timings: Timings) -> float | None:
    """A first Fermi level (eV): the network's LDOS on a grid ESTIMATE_STRIDE times coarser
    per axis (1/27 of the work), each rank on the coarse points inside its block, the
    DOS reduced and scaled to the blocks' volume; None where that DOS cannot hold
    ``n_electrons`` or there are no coarse points. Native descriptors (an estimate: the
    window built on it is checked against the solved μ). Collective.

    Measured: 7.76157 eV on the built-in example's 15³ points against 7.76151 eV on its
    45³ grid (shipped model).
    """
    info = model.info
    coarse = Grid(dgrid.cell_cv, grid_shape([-(-n // ESTIMATE_STRIDE) for n in dgrid.shape]))
    block = _coarse_block(dgrid, coarse.shape)
    ldos_sum_e = np.zeros(model.n_energies)
    if block.size:
        ldos_sum_e = _ldos_sum(atoms, model, coarse, block, chunk_points, timings)
    timings.count("estimate_points", block.size)  # on every rank: results.json's counts
    totals = dgrid.sum(np.concatenate((ldos_sum_e, [block.size, dgrid.local_points])))
    if totals[-2] == 0:
        return None
    dos_e = totals[:-2] * (totals[-1] * dgrid.voxel_volume / totals[-2])
    try:
        return electrons.fermi_level(dos_e, info.energy_grid.energies, n_electrons,
                                     info.temperature_K, method)
    except MlscaleError:
        return None


def _coarse_block(dgrid: DistributedGrid, coarse_shape: Sequence[int]) -> Block:
    """The points of a coarser grid that lie in the rank's block: index j along an axis of
    n (coarse: m) points when start ≤ j·n/m < stop; the blocks of all ranks partition it."""
    def first(i: int, n: int, m: int) -> int:
        return -(-i * m // n)  # ceil(i·m/n)
    start = tuple(first(a, n, m) for a, n, m in zip(dgrid.block.start, dgrid.shape, coarse_shape))
    stop = tuple(first(b, n, m) for b, n, m in zip(dgrid.block.stop, dgrid.shape, coarse_shape))
    return Block(triple(start), triple(stop))


def _ldos_sum(atoms: Atoms, model: Model, grid: Grid, block: Block, chunk_points: int,
              timings: Timings) -> np.ndarray:
    """Σ over the points of ``block`` of ``grid`` of the network's LDOS (1/(eV·Å³)),
    native descriptors chunk by chunk (local work)."""
    settings = model.info.descriptors
    with timings.phase("descriptors"):
        near = halo_atoms(atoms.positions @ np.linalg.inv(grid.cell_cv), grid.shape, block,
                          halo_c(grid.cell_cv, settings.cutoff))
        local_atoms = atoms[near] if len(near) else atoms[:1]
    whole = DistributedGrid(grid)  # one rank: the native kernel takes any block of it
    total_e = np.zeros(model.n_energies)
    for chunk in slabs(block, chunk_points):
        with timings.phase("descriptors"):
            descriptors_pf = compute_descriptors(local_atoms, whole, settings, "native",
                                                 block=chunk, check=False,
                                                 device=model_device(model)
                                                 ).reshape(chunk.size, -1)
        with timings.phase("network"):
            total_e += model(descriptors_pf, chunk_points).sum(axis=0, dtype=np.float64)
    return total_e


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
            ldos_dtype: DTypeLike = np.float32,
            fermi_bracket: tuple[float, float] | None = None) -> Prediction:
    """Predict the electronic structure of ``atoms`` on ``dgrid`` (see :func:`setup`).

    with_forces: also −dE_total/dR (needs pseudopotentials and the Fermi level solved for
    the electron count; the whole LDOS is then kept through the forces, 4·energies bytes
    per point). ldos_dtype: the stored LDOS (float64 for derivative checks). Without
    forces only a window of it is kept (:func:`electrons_on_grid`; fermi_bracket: its μ
    bracket in eV, default a first estimate).
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
    ldos_pe, kept_pf, scalars, dos_e, density_b = _electrons_stage(
        atoms, model, dgrid, n_electrons, backend=backend, method=method,
        chunk_points=chunk_points, timings=timings, fermi_energy=fermi_energy,
        fermi_bracket=fermi_bracket, with_forces=with_forces, ldos_dtype=ldos_dtype)
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


def _electrons_stage(atoms: Atoms, model: Model, dgrid: DistributedGrid, n_electrons: float,
                     *, backend: str, method: str, chunk_points: int, timings: Timings,
                     fermi_energy: float | None, fermi_bracket: tuple[float, float] | None,
                     with_forces: bool, ldos_dtype: DTypeLike) -> tuple:
    """``(LDOS or None, descriptors or None, scalars, DOS, density block)`` of
    :func:`predict`: with forces the whole LDOS and the descriptors (the forces reuse
    them, in the network's input dtype), else the windowed store only."""
    if not with_forces:
        scalars, dos_e, density_b = electrons_on_grid(
            atoms, model, dgrid, n_electrons, backend=backend, method=method,
            chunk_points=chunk_points, timings=timings, fermi_energy=fermi_energy,
            fermi_bracket=fermi_bracket, dtype=ldos_dtype)
        return None, None, scalars, dos_e, density_b
    kept_pf = np.empty((dgrid.local_points, model.n_features),
                       dtype=getattr(model, "dtype", np.float32))
    ldos_pe, local_dos_e = ldos_on_grid(atoms, model, dgrid, backend, chunk_points, timings,
                                        ldos_dtype, kept_pf)
    with timings.phase("electrons"):
        scalars, dos_e, density_b = electrons_from_ldos(
            ldos_pe, dgrid, model.info.energy_grid.energies, n_electrons,
            model.info.temperature_K, method, fermi_energy, local_dos_e)
    return ldos_pe, kept_pf, scalars, dos_e, density_b
