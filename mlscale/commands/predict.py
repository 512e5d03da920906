"""Predict the electronic structure of a structure with a trained model (MPI-parallel).

Writes DIR/results.json (Fermi level, band energy, −TS, electron count, timings per
phase), DIR/dos.csv and DIR/density.h5 (openPMD). Without STRUCTURE, predicts the
built-in example (a thermally displaced Al supercell) with the shipped Al model.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

import numba
from ase import Atoms
from threadpoolctl import threadpool_limits

from .. import ensemble, inference, output
from ..device import DEVICE_CHUNK_POINTS, Device, DeviceNetwork, select_device
from ..energy.upf import find_pseudopotentials
from ..errors import MlscaleError
from ..examples import builtin_example, shipped_model_path
from ..io.run_directory import claim_directory
from ..io.structure import read_structure
from ..model import DEFAULT_CHUNK_POINTS, Model, load_model
from ..parallel import Comm
from ..timing import Timings
from ._common import add_descriptor_backend, add_device, add_integration


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("structure", nargs="?", help="any ASE-readable file (QE output too); "
                        "default: the built-in Al example")
    parser.add_argument("--model", help="model file (.safetensors); default: the shipped Al model")
    parser.add_argument("--output", "-o", default="mlscale-prediction",
                        help="output directory (default: %(default)s)")
    parser.add_argument("--grid", nargs=3, type=int, metavar=("NX", "NY", "NZ"),
                        help="real-space grid; default: QE's FFT grid at the model's ecutrho")
    parser.add_argument("--electrons", type=float,
                        help="number of electrons; default: from the model's valence counts")
    parser.add_argument("--pseudopotentials", metavar="DIR",
                        help="directory with UPF files: also compute the total energy")
    parser.add_argument("--forces", action="store_true",
                        help="also compute the forces −dE/dR (eV/Å) into results.json "
                        "(needs --pseudopotentials; docs/forces.md)")
    parser.add_argument("--chunk-points", type=int,
                        help="grid points per chunk of descriptors, network and LDOS "
                        f"(bounds memory; default: {DEFAULT_CHUNK_POINTS}, with --device "
                        f"cuda {DEVICE_CHUNK_POINTS})")
    parser.add_argument("--fermi-energy", type=float, metavar="EV",
                        help="use this Fermi level instead of solving for the electron count")
    parser.add_argument("--network", choices=("numpy", "torch"), default="numpy",
                        help="evaluate the MLP with NumPy (default: no torch in the ranks, "
                        "~245 MiB less each) or torch (float32 results identical to torch-"
                        "based codes such as MALA, instead of equal to round-off)")
    parser.add_argument("--only-rank", metavar="R/P",
                        help="compute only rank R's share of a P-rank job, on one process "
                        "(native descriptors): to measure one rank's cost and memory")
    parser.add_argument("--format", choices=("openpmd", "cube"), default="openpmd",
                        help="density file: openPMD density.h5 (each rank its block) or "
                        "Gaussian cube density.cube (electrons/Bohr³, for VESTA/VMD/Ovito; "
                        "gathered on rank 0)")
    parser.add_argument("--ensemble", nargs="+", metavar="MODEL", default=[],
                        help="more models of the same descriptors and energy grid: each is "
                        "evaluated on the prediction's descriptors (computed once); "
                        "results.json gets their values, mean and standard deviation "
                        "('ensemble', docs/accuracy.md)")
    add_descriptor_backend(parser)
    add_device(parser)
    add_integration(parser)


def parse_share(text: str) -> tuple[int, int]:
    """'R/P' -> (R, P) with 0 <= R < P."""
    try:
        rank, nranks = (int(part) for part in text.split("/"))
    except ValueError:
        raise MlscaleError(f"--only-rank expects R/P (e.g. 3/64), got {text!r}") from None
    if not 0 <= rank < nranks:
        raise MlscaleError(f"--only-rank {text}: need 0 <= R < P")
    return rank, nranks


def run(args: argparse.Namespace, comm: Comm) -> int:
    with comm.collective():  # before anything is loaded or the output directory claimed
        if args.ensemble and args.forces:
            raise MlscaleError("--ensemble does not compute forces: run --forces without it")
    device = select_device(args.device, comm)  # before loading: the network goes to it
    if args.chunk_points is None:
        args.chunk_points = DEFAULT_CHUNK_POINTS if device.kind == "cpu" else DEVICE_CHUNK_POINTS
    model, atoms, pseudopotentials, share = _inputs(args, comm, device)
    members = ensemble.load_members(args.ensemble, model.info, args.network, comm)
    set_threads(comm)  # after loading: torch's threads too with --network torch
    timings = Timings()
    dgrid, n_electrons = inference.setup(
        atoms, model.info, comm, shape=args.grid, n_electrons=args.electrons, share=share,
        backend=args.backend, with_energy=pseudopotentials is not None)
    # before the allocation, not in it
    inference.check_memory(dgrid, inference.kept_energies(model.info, args.forces))
    warning = inference.grid_spacing_warning(dgrid.grid, model.info)
    if warning:
        comm.print(f"mlscale: warning: {warning}", file=sys.stderr)
    out = Path(args.output)
    claim = claim_directory(out, comm)  # before the work: probe, lock, old results removed
    if members:
        predictions = _ensemble(args, [model, *members], atoms, dgrid, n_electrons,
                                pseudopotentials, timings)
        prediction = predictions[0]
    else:
        prediction = inference.predict(
            atoms, model, dgrid, n_electrons, backend=args.backend, method=args.integration,
            chunk_points=args.chunk_points, pseudopotentials=pseudopotentials,
            fermi_energy=args.fermi_energy, timings=timings, with_forces=args.forces)
    results = output.prediction_results(prediction, atoms, backend=args.backend,
                                        method=args.integration)
    if prediction.forces is not None:
        results["forces_eV_per_A"] = prediction.forces.total_av.tolist()
    if members:
        paths = [str(args.model or shipped_model_path()), *map(str, args.ensemble)]
        results["ensemble"] = ensemble.ensemble_results(predictions, paths, len(atoms))
    with timings.phase("output"):
        output.write_fields(out, prediction.energies_e, prediction.dos_e, prediction.density_b,
                            dgrid, fermi_energy_eV=results["fermi_energy_eV"],
                            cube_atoms=atoms if args.format == "cube" else None)
    results.update(output.timing_results(timings, comm))
    results["provenance"] = output.provenance(
        comm, model=Path(args.model) if args.model else shipped_model_path(),
        structure=Path(args.structure) if args.structure else None)
    output.write_results(out, results, comm)
    claim.release()
    _report(comm, results, share, out)
    return 0


def _inputs(args: argparse.Namespace, comm: Comm, device: Device
            ) -> tuple[Model, Atoms, dict[str, Path] | None, tuple[int, int] | None]:
    """The model, atoms, pseudopotentials and share of the command line (collective)."""
    with comm.collective():
        atoms = read_structure(args.structure) if args.structure else builtin_example()
        model_path = Path(args.model) if args.model else shipped_model_path()
        model = (load_model(model_path, args.network)  # "numpy": no torch in the ranks
                 if device.kind == "cpu" else DeviceNetwork.from_file(model_path, device))
        pseudopotentials: dict[str, Path] | None = None
        if args.pseudopotentials:
            pseudopotentials = find_pseudopotentials(args.pseudopotentials,
                                                     set(atoms.get_chemical_symbols()))
            inference.check_pseudopotentials(model.info, pseudopotentials)  # parsed up front
        if args.forces and not args.pseudopotentials:
            raise MlscaleError("--forces needs --pseudopotentials (the total energy)")
        if args.chunk_points < 1:
            raise MlscaleError("--chunk-points must be positive")
        share = parse_share(args.only_rank) if args.only_rank else None
    return model, atoms, pseudopotentials, share


def _ensemble(args: argparse.Namespace, models: list[Model], atoms: Atoms, dgrid: Any,
              n_electrons: float, pseudopotentials: dict[str, Path] | None,
              timings: Timings) -> list[inference.Prediction]:
    """Every model's prediction on descriptors computed once (mlscale.ensemble)."""
    return ensemble.predict_ensemble(
        atoms, models, dgrid, n_electrons, backend=args.backend, method=args.integration,
        chunk_points=args.chunk_points, pseudopotentials=pseudopotentials,
        fermi_energy=args.fermi_energy, timings=timings)


def _report(comm: Comm, results: dict[str, Any], share: tuple[int, int] | None,
            out: Path) -> None:
    comm.print(f"atoms {results['atoms']}, grid {results['grid']}, ranks {results['ranks']}")
    comm.print(f"Fermi level      {results['fermi_energy_eV']:.6f} eV")
    comm.print(f"band energy      {results['band_energy_eV']:.6f} eV")
    comm.print(f"electrons        {results['number_of_electrons']:.6f}")
    if "total_energy_eV" in results:
        comm.print(f"total energy     {results['total_energy_eV']:.6f} eV")
    if "ensemble" in results:
        spread = results["ensemble"]["std"]
        comm.print(f"ensemble of {results['ensemble']['size']}: std of the Fermi level "
                   f"{1e3 * spread['fermi_energy_eV']:.1f} meV, band energy "
                   f"{1e3 * spread['band_energy_per_atom_eV']:.2f} meV/atom"
                   + (f", total energy {1e3 * spread['total_energy_per_atom_eV']:.2f} meV/atom"
                      if "total_energy_per_atom_eV" in spread else ""))
    if share is not None:
        comm.print(f"rank {share[0]} of {share[1]} only: partial DOS and density block in {out}")
    else:
        density = ("density.cube (cube)" if (out / "density.cube").is_file()
                   else "density.h5 (openPMD)")
        comm.print(f"density written to {out / density}; "
                   f"results in {out / 'results.json'}")


def set_threads(comm: Comm) -> None:
    """Threads per rank for BLAS (the network), torch if loaded, and numba: the node's
    cores shared among its ranks, unless OMP_NUM_THREADS / NUMBA_NUM_THREADS say
    otherwise."""
    threads = comm.threads_per_rank()
    if "OMP_NUM_THREADS" not in os.environ:
        threadpool_limits(limits=threads, user_api="blas")
        if "torch" in sys.modules:
            sys.modules["torch"].set_num_threads(threads)
    if "NUMBA_NUM_THREADS" not in os.environ:
        # numba.config sets NUMBA_NUM_THREADS through globals() at import: mypy cannot see it
        numba_max = numba.config.NUMBA_NUM_THREADS  # type: ignore[attr-defined]
        numba.set_num_threads(min(threads, numba_max))
