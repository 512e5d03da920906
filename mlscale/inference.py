"""The prediction pipeline, top to bottom, identical on 1 and N ranks.

atoms → grid block of this rank → descriptors → MLP → LDOS (local points)
      → DOS (Allreduce) → Fermi level, band energy, −TS (replicated scalars)
      → density n(r) (local points) → openPMD file (each rank writes its block)
      → optional: density-dependent energy terms and total energy.

Nothing global is gathered: each rank holds only its own points; the DOS (one
number per energy) and scalars are the only reduced quantities.
"""

from __future__ import annotations

import resource
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from . import electrons
from .config import BispectrumSettings, EnergyGrid
from .errors import MlscaleError
from .grid import Block, Decomposition, Grid, qe_fft_shape, slabs  # noqa: F401
from .parallel import Comm, self_comm


@dataclass
class Timings:
    """Wall and CPU time (this process, all its threads) per phase in seconds (maximum
    over ranks when reported)."""

    seconds: dict = field(default_factory=dict)
    cpu_seconds: dict = field(default_factory=dict)

    @contextmanager
    def phase(self, name: str):
        start, cpu = time.perf_counter(), time.process_time()
        yield
        self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - start
        self.cpu_seconds[name] = self.cpu_seconds.get(name, 0.0) + time.process_time() - cpu


@dataclass(frozen=True)
class ModelInfo:
    """What the pipeline needs from a model's metadata."""

    descriptors: BispectrumSettings
    energy_grid: EnergyGrid
    temperature_K: float
    species: tuple[str, ...]
    valence_electrons: dict
    ecutrho_Ry: float | None

    @classmethod
    def from_metadata(cls, metadata: dict) -> "ModelInfo":
        try:
            return cls(
                descriptors=BispectrumSettings.from_dict(metadata["descriptors"]),
                energy_grid=EnergyGrid.from_dict(metadata["energy_grid"]),
                temperature_K=float(metadata["temperature_K"]),
                species=tuple(metadata["species"]),
                valence_electrons=dict(metadata.get("valence_electrons", {})),
                ecutrho_Ry=metadata.get("ecutrho_Ry"),
            )
        except KeyError as missing:
            raise MlscaleError(f"model metadata lacks the key {missing}") from None


def peak_rss_mib() -> float:
    """Peak resident memory of this process so far, MiB.

    Linux: VmHWM of /proc/self/status, the high-water mark of this process image. Not
    ru_maxrss: Linux carries it across fork and exec, so a process started from a large
    one (a test runner, a Python driver with torch loaded) would report its parent's
    memory. Elsewhere ru_maxrss (KiB on Linux, bytes on macOS: taken as KiB).
    """
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024.0
    except (OSError, ValueError, IndexError):
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def number_of_electrons(atoms, valence_electrons: dict) -> float:
    """Electron count of a structure from valence electrons per species."""
    symbols = atoms.get_chemical_symbols()
    unknown = sorted(set(symbols) - set(valence_electrons))
    if unknown:
        raise MlscaleError(
            f"no valence electron count for {', '.join(unknown)} in the model; pass --electrons"
        )
    return float(sum(valence_electrons[s] for s in symbols))


def grid_for(atoms, info: ModelInfo, shape=None) -> Grid:
    """The grid of a prediction: given explicitly, or QE's FFT grid at the model's ecutrho."""
    if shape is None:
        if info.ecutrho_Ry is None:
            raise MlscaleError("the model does not record ecutrho_Ry; pass --grid NX NY NZ")
        shape = qe_fft_shape(atoms.cell[:], info.ecutrho_Ry)
    return Grid(np.array(atoms.cell[:]), tuple(shape))


def electronic_summary(dos_e, energies_e, n_electrons, temperature_K, method,
                       fermi_energy=None) -> dict:
    """Fermi level (solved for ``n_electrons``, or given), band energy, −TS, electron count."""
    if fermi_energy is None:
        return electrons.electronic_structure(dos_e, energies_e, n_electrons, temperature_K,
                                              method)
    args = (dos_e, energies_e, fermi_energy, temperature_K, method)
    return {"fermi_energy_eV": float(fermi_energy),
            "band_energy_eV": electrons.band_energy(*args),
            "entropy_contribution_eV": electrons.entropy_contribution(*args),
            "number_of_electrons": electrons.number_of_electrons(*args)}


def predict(atoms, model, metadata: dict, comm: Comm, *, shape=None, n_electrons=None,
            backend: str = "native", method: str = "analytical", chunk_points: int = 8192,
            output_dir: Path | None = None, pseudopotentials: dict | None = None,
            share: tuple[int, int] | None = None, fermi_energy: float | None = None) -> dict:
    """Predict the electronic structure of ``atoms``; collective over ``comm``.

    Memory per rank: the LDOS of the rank's points in float32 (4·energies bytes per
    point) plus the density (8 bytes per point); descriptors and network activations
    exist for one slab of ``chunk_points`` points at a time (native backend; the LAMMPS
    backend computes the rank's whole block in one call).

    share=(R, P): compute only rank R's share of a P-rank job on this one process
    (``comm`` must have one rank); the DOS and all reductions are then R's partial
    sums, and μ is solved for R's proportional share of the electrons. Returns the
    results dict (identical on every rank). With ``output_dir``, rank 0 writes
    results.json and dos.csv and all ranks write their block of density.h5.
    """
    from .descriptors import check_atoms, compute_descriptors
    from .network import predict_ldos
    from .grid import halo_atoms, halo_c

    timings = Timings()
    info = ModelInfo.from_metadata(metadata)
    with comm.collective():
        grid = grid_for(atoms, info, shape)
        if n_electrons is None:
            n_electrons = number_of_electrons(atoms, info.valence_electrons)
        check_atoms(atoms, info.descriptors.species)
        if share is not None and (comm.size != 1 or backend != "native"):
            raise MlscaleError("running one rank's share needs one process and the native "
                               "descriptor backend")
        if share is not None and pseudopotentials is not None:
            raise MlscaleError("the total energy needs the whole density: not with one share")
    rank, nranks = share if share is not None else (comm.rank, comm.size)
    decomposition = Decomposition(grid.shape, nranks)
    block = decomposition.block(rank)
    if share is not None:  # μ of a share: its proportional part of the electrons
        n_electrons *= block.size / grid.npoints
    energies_e = info.energy_grid.energies
    chunks = slabs(block, chunk_points) if backend == "native" else [block]
    local_atoms = atoms
    if backend == "native":  # only the atoms near the block (>= 1), selected once
        with timings.phase("descriptors"):
            near = halo_atoms(atoms.positions @ np.linalg.inv(grid.cell_cv), grid.shape, block,
                              halo_c(grid.cell_cv, info.descriptors.cutoff))
            local_atoms = atoms[near] if len(near) else atoms[:1]

    # native slabs are local work and their number differs between ranks: not collective
    slab_comm = comm if backend != "native" else self_comm()

    ldos_pe = np.empty((block.size, len(energies_e)), dtype=np.float32)
    dos_e = np.zeros(len(energies_e))
    offset = 0
    for chunk in chunks:
        with timings.phase("descriptors"):
            descriptors_pf = compute_descriptors(local_atoms, grid, chunk, info.descriptors,
                                                 slab_comm, backend, check=False
                                                 ).reshape(chunk.size, -1)
        with timings.phase("network"):
            ldos_chunk = predict_ldos(model, descriptors_pf, chunk_points)
            del descriptors_pf
        with timings.phase("electrons"):
            dos_e += electrons.dos_from_ldos(ldos_chunk, grid.voxel_volume)
            ldos_pe[offset:offset + chunk.size] = ldos_chunk
        offset += chunk.size
    with timings.phase("electrons"):
        dos_e = comm.sum(dos_e)
        with comm.collective():
            summary = electronic_summary(dos_e, energies_e, n_electrons, info.temperature_K,
                                         method, fermi_energy)
        mu = summary["fermi_energy_eV"]
        density_p = electrons.density(ldos_pe, energies_e, mu, info.temperature_K, method)
        del ldos_pe
        summary["number_of_electrons_from_density"] = comm.sum(
            float(density_p.sum() * grid.voxel_volume))
    density_b = density_p.reshape(block.shape)

    if pseudopotentials is not None:
        from .energy import density_energy_terms, total_energy

        with timings.phase("energy"):
            terms = density_energy_terms(density_b, grid, block, atoms, pseudopotentials, comm,
                                         ecutrho_Ry=info.ecutrho_Ry)
            del terms["number_of_electrons"]  # ∫n dV: already number_of_electrons_from_density
            summary.update(terms)
            summary["total_energy_eV"] = total_energy(
                summary["band_energy_eV"], summary["entropy_contribution_eV"], terms)

    results = {
        **summary,
        "atoms": len(atoms),
        "species": sorted(set(atoms.get_chemical_symbols())),
        "grid": list(grid.shape),
        "ranks": nranks,
        "process_grid": list(decomposition.dims),
        "temperature_K": info.temperature_K,
        "descriptor_backend": backend,
        "integration": method,
    }
    if share is not None:
        results["share"] = {"rank": rank, "of": nranks, "block_start": list(block.start),
                            "block_stop": list(block.stop), "partial": True}
    if output_dir is not None:
        with timings.phase("output"):
            write_outputs(Path(output_dir), results, energies_e, dos_e, density_b, grid, block,
                          comm, share is not None)
    results["timings_s"] = {name: comm.max(seconds) for name, seconds in timings.seconds.items()}
    results["cpu_timings_s"] = {name: comm.max(seconds)
                                for name, seconds in timings.cpu_seconds.items()}
    results["peak_memory_per_rank_MiB"] = comm.max(peak_rss_mib())
    if output_dir is not None and comm.rank == 0:
        from .io.atomic import write_json_atomic

        write_json_atomic(Path(output_dir) / "results.json", results)
    return results


def write_outputs(output_dir: Path, results: dict, energies_e, dos_e, density_b, grid, block,
                  comm: Comm, partial: bool = False):
    """dos.csv (rank 0) and density.h5 (openPMD, every rank its block), atomically.

    partial: one rank's share only; its density block goes to density_block.npy.
    """
    from .io.atomic import write_text_atomic
    from .io.openpmd_io import DENSITY_UNITS, write_openpmd

    with comm.collective():
        output_dir.mkdir(parents=True, exist_ok=True)
    if partial:  # the block's place is in results.json ("share")
        from .io.atomic import atomic_path

        with atomic_path(output_dir / "density_block.npy") as tmp:
            np.save(tmp, density_b)
    else:
        write_openpmd(output_dir / "density.h5", "Density", density_b, block, grid, comm,
                      unit_si=DENSITY_UNITS["unit_si"], unit_dimension=DENSITY_UNITS["unit_dimension"])
    if comm.rank == 0:
        lines = ["energy_eV,dos_per_eV"] + [f"{e:.10g},{d:.12g}" for e, d in zip(energies_e, dos_e)]
        write_text_atomic(output_dir / "dos.csv", "\n".join(lines) + "\n")
