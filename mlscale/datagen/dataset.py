"""Generate a data set: per structure, pw.x SCF → pp.x LDOS and density → mlscale snapshot.

A snapshot ``<name>`` is finished when ``<name>.info.json`` exists (written last,
atomically); finished snapshots are skipped, so an interrupted run resumes where it
stopped. QE runs in the scratch directory ``<out>/qe/<name>`` on rank 0 while the
other ranks sleep; the conversion runs on all ranks, each on its own grid block.
"""

from __future__ import annotations

import functools
import json
import os
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np

from ..config import BispectrumSettings
from ..errors import MlscaleError
from ..io.atomic import write_text_atomic
from ..progress import progress
from ..units import HARTREE_EV
from . import qe_xml
from .compact import CompactSettings, write_compact_record
from .convert import convert_snapshot
from .qe_input import LDOS_NPY, OUTDIR, PREFIX, pp_density_input, pp_ldos_input, pw_input
from .qe_run import QERunner, remove_wavefunctions
from .settings import DFTSettings, LdosSettings
from .wavefunctions import is_norm_conserving, ldos_from_wavefunctions

LDOS_TOOLS = ("pp.x", "wavefunctions")


def generate_dataset(structures, out_dir, dft: DFTSettings, ldos: LdosSettings,
                     bispectrum: BispectrumSettings, runner: QERunner, comm,
                     prefix: str = "snapshot", backend: str = "lammps",
                     openpmd: bool = True, ldos_tool: str = "pp.x",
                     records: tuple[Path, CompactSettings] | None = None) -> list[Path]:
    """Make one snapshot per structure in ``out_dir``; return the info JSON paths.

    Snapshot i is named ``f"{prefix}_{i:02d}"`` and consists of ``.in.npy``
    (descriptors), ``.out.npy`` (LDOS), ``.dens.npy`` (density), openPMD copies
    (``.out.h5``, ``.dens.h5``, if ``openpmd``) and ``.info.json``. ldos_tool: "pp.x" or
    "wavefunctions" (see :func:`run_qe`). records: (directory, settings) of compact
    records (:mod:`mlscale.datagen.compact`) written after each snapshot; a snapshot
    whose record exists counts as finished even without its full files.
    """
    out_dir = Path(out_dir)
    with comm.collective():
        runner.check()
        out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    total = len(structures)
    made: list[float] = []  # seconds per snapshot made in this run (for the estimate)
    for index, atoms in progress(enumerate(structures), total=total, desc="datagen",
                                 unit="snapshot", rank=comm.rank):
        name = f"{prefix}_{index:02d}"
        info_path = out_dir / f"{name}.info.json"
        paths.append(info_path)
        label = f"datagen: snapshot {index + 1}/{total} {name}"
        done = [info_path.exists(), records is not None
                and (Path(records[0]) / f"{name}.info.json").exists()]
        full_done, record_done = comm.broadcast(done if comm.rank == 0 else None)
        if record_done or (full_done and records is None):
            comm.print(f"{label}: finished before, skipped")
            continue
        start = time.perf_counter()
        if not full_done:
            run_dir = out_dir / "qe" / name
            _on_root(comm, run_qe, atoms, run_dir, dft, ldos, runner,
                     functools.partial(_say, label), ldos_tool)
            comm.print(f"{label}: converting on {comm.size} rank(s)")
            convert_snapshot(run_dir, out_dir, name, atoms, dft, ldos, bispectrum, comm,
                             backend=backend, openpmd=openpmd)
        if records is not None:
            _on_root(comm, write_compact_record, out_dir / name, records[0], name, records[1])
        seconds = time.perf_counter() - start
        made.append(seconds)
        left = (total - index - 1) * sum(made) / len(made)
        comm.print(f"{label}: done in {seconds:.0f} s; elapsed {sum(made):.0f} s, "
                   f"about {left:.0f} s left for {total - index - 1} snapshot(s)")
    return paths


def run_qe(atoms, run_dir: Path, dft: DFTSettings, ldos: LdosSettings, runner: QERunner,
           say=print, ldos_tool: str = "pp.x"):
    """pw.x SCF, then the LDOS and pp.x's density cube in ``run_dir``; skips finished stages.

    ldos_tool: "pp.x" (one cube per energy) or "wavefunctions" (all energies in one pass
    from pw.x's wavefunctions into ``ldos.npy``, norm-conserving pseudopotentials only).
    Raises MlscaleError when the SCF does not converge or has too few bands to cover
    the LDOS energy grid. Deletes pw.x's scratch (wavefunctions) at the end.
    """
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    if ldos_tool not in LDOS_TOOLS:
        raise MlscaleError(f"unknown LDOS tool {ldos_tool!r}: choose one of {LDOS_TOOLS}")
    ldos_stage = (("pp.x", "pp_ldos", pp_ldos_input(ldos)) if ldos_tool == "pp.x" else
                  ("wavefunctions", "ldos_wavefunctions", json.dumps(ldos.to_dict()) + "\n"))
    stages = [("pw.x", "scf", pw_input(atoms, dft)), ldos_stage,
              ("pp.x", "pp_density", pp_density_input())]
    if all(_done(run_dir / f"{stem}.out", text) for _, stem, text in stages):
        say("QE outputs found, not rerun")
        return
    for program, stem, text in stages:
        start = time.perf_counter()
        write_text_atomic(run_dir / f"{stem}.in", text)
        if program == "wavefunctions":
            _one_pass_ldos(run_dir, ldos, run_dir / f"{stem}.out")
        else:
            runner.run(program, f"{stem}.in", f"{stem}.out", run_dir)
        if program == "pw.x":
            check_bands_cover(run_dir / OUTDIR / f"{PREFIX}.save" / "data-file-schema.xml",
                              ldos)
        say(f"{program} {stem} finished in {time.perf_counter() - start:.0f} s")
    remove_wavefunctions(run_dir, OUTDIR, PREFIX)
    for path in run_dir.glob("tmp.*"):  # pp.x's intermediate files; the cubes stay
        if not path.name.endswith(".cube"):
            path.unlink()


def default_ldos_tool(dft: DFTSettings) -> str:
    """The LDOS tool for these settings: wavefunctions if all pseudopotentials are
    norm-conserving (or missing: pw.x will say so), else pp.x."""
    paths = [Path(dft.pseudo_dir) / name for name in dft.pseudopotentials.values()]
    if all(not path.is_file() or is_norm_conserving(path) for path in paths):
        return "wavefunctions"
    return "pp.x"


def _one_pass_ldos(run_dir: Path, ldos: LdosSettings, log: Path):
    """LDOS from pw.x's wavefunctions into ``run_dir/ldos.npy`` (float32, 1/(eV·Å³))."""
    start = time.perf_counter()
    ldos_ge = ldos_from_wavefunctions(run_dir / OUTDIR / f"{PREFIX}.save",
                                      ldos.energy_grid.energies, ldos.broadening)
    partial = run_dir / "ldos.npy.partial"
    with open(partial, "wb") as f:
        np.save(f, ldos_ge.astype(np.float32), allow_pickle=False)
    os.replace(partial, run_dir / LDOS_NPY)
    write_text_atomic(log, f"one-pass LDOS from wavefunctions: {ldos_ge.shape} in "
                           f"{time.perf_counter() - start:.1f} s\nJOB DONE\n")


def check_bands_cover(xml_path: Path, ldos: LdosSettings):
    """MlscaleError unless every k-point's highest band lies above the LDOS grid.

    The top of the grid plus 5 broadenings (Fermi–Dirac tail e^-5) must lie below
    the lowest "highest eigenvalue" of all k-points, else the LDOS there misses states.
    """
    root = ET.parse(xml_path).getroot()
    tops = [float(qe_xml.text(ks, "eigenvalues").split()[-1]) * HARTREE_EV
            for ks in root.iter("ks_energies")]
    needed = ldos.emax + 5.0 * ldos.broadening
    if not tops or min(tops) < needed:
        raise MlscaleError(f"too few bands: the highest band lies at {min(tops, default=0):.2f} eV "
                           f"at some k-point, the LDOS grid needs states up to {needed:.2f} eV; "
                           "raise nbnd")


def _done(output: Path, input_text: str) -> bool:
    """Whether a QE stage finished earlier with the same input."""
    stage_input = output.with_suffix(".in")
    return (output.is_file() and stage_input.is_file()
            and stage_input.read_text() == input_text
            and "JOB DONE" in output.read_text(errors="replace"))


def _say(label: str, text: str):
    print(f"{label}: {text}", flush=True)


def _on_root(comm, work, *args):
    """Run ``work(*args)`` on rank 0 while the other ranks sleep; failures raise on all ranks."""
    message = None
    if comm.rank == 0:
        try:
            work(*args)
        except MlscaleError as error:
            message = str(error)
        except Exception as error:  # noqa: BLE001 - made collective below
            message = f"{type(error).__name__}: {error}"
    comm.idle_barrier()
    with comm.collective():
        if message is not None:
            raise MlscaleError(message)
