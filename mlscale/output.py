"""The files of a prediction (or of ``mlscale electrons``), written atomically.

``DIR/dos.csv`` (rank 0), ``DIR/density.h5`` (openPMD, each rank its block) with
``DIR/density.pmd`` (ParaView's index) and, for a non-diagonal cell, ``DIR/density.vts``
(one rank's share of a job: ``DIR/density_block.npy``) and, last, ``DIR/results.json`` (rank 0), so
that a results.json beside them means the run completed. A command claims DIR first
(:func:`mlscale.io.run_directory.claim_directory`: lock, previous results.json removed,
stale temporaries deleted); results.json lists the SHA-256 of each file beside it
(``output_files``).
"""

from __future__ import annotations

import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
from ase import Atoms

from . import __version__
from .grid import DistributedGrid
from .inference import Prediction
from .io.atomic import atomic_path, write_json_atomic, write_text_atomic
from .io.cube_writer import write_density_cube
from .io.openpmd_io import DENSITY_UNITS, series_index, write_openpmd
from .io.run_directory import output_files, sha256
from .io.vts import write_vts
from .parallel import Comm
from .timing import Timings, peak_rss_mib


def prediction_results(prediction: Prediction, atoms: Atoms, *, backend: str,
                       method: str) -> dict[str, Any]:
    """results.json of a prediction, without timings: scalars, structure, grid, settings."""
    dgrid = prediction.dgrid
    results = {
        **prediction.scalars(),
        "atoms": len(atoms),
        "species": sorted(set(atoms.get_chemical_symbols())),
        "grid": list(dgrid.shape),
        "ranks": dgrid.nranks,
        "process_grid": list(dgrid.decomposition.dims),
        "temperature_K": prediction.info.temperature_K,
        "descriptor_backend": backend,
        "integration": method,
    }
    if dgrid.is_share:
        results["share"] = {"rank": dgrid.rank, "of": dgrid.nranks,
                            "block_start": list(dgrid.block.start),
                            "block_stop": list(dgrid.block.stop), "partial": True}
    return results


def provenance(comm: Comm, **files: Path | None) -> dict[str, Any]:
    """Who made a result: mlscale's version, the UTC date, the command line, the ranks, and
    for each named input file its path and SHA-256 (None: a built-in input). Rank 0
    hashes the files; every rank gets the same dict."""
    info = None
    with comm.collective():
        if comm.rank == 0:
            info = _provenance_on_root(comm.size, files)
    return comm.broadcast(info)


def _provenance_on_root(ranks: int, files: dict[str, Path | None]) -> dict[str, Any]:
    return {"mlscale_version": __version__,
            "date_utc": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "command": [Path(sys.argv[0]).name, *sys.argv[1:]], "ranks": ranks,
            "files": {name: None if path is None else
                      {"path": str(Path(path).resolve()), "sha256": sha256(Path(path))}
                      for name, path in files.items()}}


def timing_results(timings: Timings, comm: Comm) -> dict[str, Any]:
    """Wall and CPU seconds per phase and the peak memory per rank, maxima over ranks."""
    return {
        "timings_s": {name: comm.max(s) for name, s in timings.seconds.items()},
        "cpu_timings_s": {name: comm.max(s) for name, s in timings.cpu_seconds.items()},
        # work counts per rank (max over ranks): "density_passes" (1, or 2 where the solved
        # Fermi level fell outside the first pass's window), "estimate_points"
        "counts": {name: comm.max(n) for name, n in sorted(timings.counts.items())},
        "peak_memory_per_rank_MiB": comm.max(peak_rss_mib()),
    }


def write_fields(output_dir: Path, energies_e: np.ndarray, dos_e: np.ndarray,
                 density_b: np.ndarray, dgrid: DistributedGrid,
                 fermi_energy_eV: float | None = None, cube_atoms: Atoms | None = None) -> None:
    """dos.csv (rank 0) and the density (every rank its block), atomically. Collective.

    dos.csv: the column header, then (with ``fermi_energy_eV``) the comment line
    ``# fermi_energy_eV=E`` (eV), then energy (eV), DOS (states/eV) rows; readers that skip
    one header line and ignore ``#`` lines (``numpy.loadtxt(..., skiprows=1)``) still work.
    With ``cube_atoms``: the density as ``density.cube`` (electrons/Bohr³, gathered on
    rank 0) instead of openPMD ``density.h5``."""
    comm = dgrid.comm
    with comm.collective():
        output_dir.mkdir(parents=True, exist_ok=True)
    if dgrid.is_share:  # the block's place is in results.json ("share")
        with atomic_path(output_dir / "density_block.npy") as tmp:
            np.save(tmp, density_b)
    elif cube_atoms is not None:
        write_density_cube(output_dir / "density.cube", cube_atoms, density_b, dgrid)
    else:
        _write_density_openpmd(output_dir, density_b, dgrid)
    if comm.rank == 0:
        header = ["energy_eV,dos_per_eV"]
        if fermi_energy_eV is not None:
            header.append(f"# fermi_energy_eV={fermi_energy_eV:.12g}")
        lines = header + [f"{e:.10g},{d:.12g}" for e, d in zip(energies_e, dos_e)]
        write_text_atomic(output_dir / "dos.csv", "\n".join(lines) + "\n")


def _write_density_openpmd(output_dir: Path, density_b: np.ndarray,
                           dgrid: DistributedGrid) -> None:
    """density.h5 (scalar openPMD record, 1/Å³), ParaView's index density.pmd and, for a
    cell that is not diagonal (openPMD's box cannot place it), density.vts with the true
    point positions (docs/usage.md, "Viewing the density")."""
    units: dict[str, Any] = DENSITY_UNITS  # openpmd_io types it dict[str, object]
    write_openpmd(output_dir / "density.h5", "Density", density_b, dgrid,
                  unit_si=units["unit_si"], unit_dimension=units["unit_dimension"])
    with dgrid.comm.collective():
        if dgrid.comm.rank == 0:
            series_index(output_dir / "density.pmd", "density.h5")
    cell_cv = dgrid.grid.cell_cv
    if not np.allclose(cell_cv, np.diag(np.diag(cell_cv)), rtol=0, atol=1e-9):
        write_vts(output_dir / "density.vts", "Density", density_b, dgrid)


def write_results(output_dir: Path, results: dict[str, Any], comm: Comm) -> None:
    """results.json on rank 0, atomically: the last file of a run, with the SHA-256 and
    size of each output file beside it under ``output_files``."""
    if comm.rank == 0:
        write_json_atomic(output_dir / "results.json",
                          {**results, "output_files": output_files(output_dir)})
