"""Tersoff–Hamann STM images (constant height, constant current) for a sample bias.

The field is the LDOS integrated over the bias window (V > 0: E_F .. E_F + eV, empty
states; V < 0: filled states), from one of three sources: pw.x's saved states
(``--qe-save``, QE pp.x ``plot_num = 5`` exactly), an LDOS file on an energy grid
(``--ldos``, e.g. DFT LDOS), or a prediction of the model (``--predict``). Each rank
computes the field of its grid block; the images are assembled from the ranks that own
their points. Writes stm_height.{npy,png}, stm_current.{npy,png}, stm.json (and the
3-D field with --field). Details and the comparison with pp.x: docs/stm.md.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import numpy as np

from .. import stm
from ..datagen.wavefunctions import read_band_structure
from ..errors import MlscaleError
from ..grid import DistributedGrid, Grid, grid_shape
from ..io.grid_arrays import grid_array_format, grid_array_shape, read_grid_block
from ..io.numpy_io import check_finite, write_npy_distributed
from ..io.run_directory import claim_directory
from ..io.structure import read_structure
from ..output import write_results
from ..parallel import Comm
from ._common import print_json
from ._stm_images import save_image, slab_top


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("structure", help="the slab (any ASE-readable file); surface in xy, "
                        "vacuum along +z")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--qe-save", metavar="DIR", help="pw.x <prefix>.save directory "
                        "(norm-conserving, nosym, smeared run): pp.x plot_num=5's field")
    source.add_argument("--ldos", metavar="FILE", help="LDOS [nx,ny,nz,energies] in "
                        "1/(eV·Å³) (.npy, .h5); needs --energy-grid, --fermi-energy")
    source.add_argument("--predict", action="store_true", help="the model's predicted LDOS")
    parser.add_argument("--bias", type=float, required=True, help="sample bias in V (signed)")
    parser.add_argument("--height", type=float, default=3.0,
                        help="constant-height plane, Å above the topmost atom (default 3)")
    parser.add_argument("--current", type=float, metavar="LEVEL", help="constant-current "
                        "level in 1/Å³ (default: the mean of the constant-height image)")
    parser.add_argument("--max-height", type=float, help="Å above the topmost atom where "
                        "the tip starts (default: half the vacuum)")
    parser.add_argument("--energy-grid", nargs=3, type=float,
                        metavar=("START", "STEP", "COUNT"), help="LDOS energies in eV")
    parser.add_argument("--fermi-energy", type=float, metavar="EV", help="E_F of --ldos (eV)")
    parser.add_argument("--window-degauss", type=float, metavar="EV", help="LDOS routes: "
                        "pp.x's smoothed window with this degauss (eV; the pw.x run's) "
                        "instead of the sharp window E_F .. E_F + eV")
    parser.add_argument("--window-smearing", choices=sorted(stm.SMEARINGS), default="gaussian",
                        help="the smearing of --window-degauss (QE's names; default gaussian)")
    parser.add_argument("--model", help="model for --predict (default: the shipped Al model)")
    parser.add_argument("--grid", nargs=3, type=int, metavar=("NX", "NY", "NZ"))
    parser.add_argument("--repeat", type=int, default=3, help="cells per side in the PNGs")
    parser.add_argument("--field", action="store_true", help="also write stm_field.npy")
    parser.add_argument("-o", "--output", default="mlscale-stm", help="output directory")


def run(args: argparse.Namespace, comm: Comm) -> int:
    with comm.collective():
        atoms = read_structure(args.structure)
        stm.check_slab_cell(atoms.cell[:])
        z_top, vacuum = slab_top(atoms)
        max_height = args.max_height if args.max_height is not None else 0.5 * vacuum
        if not 0 < args.height < max_height:
            raise MlscaleError(f"--height {args.height} Å must lie between the surface and "
                               f"the tip's start {max_height:.3f} Å")
    field_b, dgrid, fermi = _field(args, atoms, comm)
    with comm.collective():
        check_finite(field_b, "the STM field")
    claim = claim_directory(Path(args.output), comm)
    height_xy = stm.constant_height_image(field_b, dgrid, z_top + args.height)
    level = args.current if args.current is not None else float(height_xy.mean())
    current_xy = stm.constant_current_image(field_b, dgrid, level, z_top, max_height)
    results: dict[str, Any] = {
        "source": "qe-save" if args.qe_save else "ldos" if args.ldos else "predict",
        "bias_V": args.bias, "fermi_energy_eV": fermi, "grid": list(dgrid.shape),
        "window": "pp.x" if args.qe_save or args.window_degauss else "sharp",
        "ranks": comm.size, "topmost_atom_z_A": z_top, "height_A": args.height,
        "current_level_per_A3": level, "max_height_A": max_height,
        "field_range_at_height_per_A3": [float(height_xy.min()), float(height_xy.max())],
        "height_range_at_current_A": [float(np.nanmin(current_xy)),
                                      float(np.nanmax(current_xy))]}
    with comm.collective():
        if comm.rank == 0:
            for name, image, label in (
                    ("stm_height", height_xy, "field (1/Å³)"),
                    ("stm_current", current_xy, "tip height above the top atom (Å)")):
                kind = (f"constant height {args.height:g} Å" if name == "stm_height"
                        else f"constant current {level:.3g} 1/Å³")
                save_image(claim.path / name, image, atoms.cell[:], args.repeat,
                           f"{kind}, bias {args.bias:+g} V", label)
    if args.field:
        write_npy_distributed(claim.path / "stm_field.npy", field_b, dgrid)
    write_results(claim.path, results, comm)
    claim.release()
    print_json(comm, results)
    return 0


def _field(args: argparse.Namespace, atoms, comm: Comm
           ) -> tuple[np.ndarray, DistributedGrid, float | None]:
    """This rank's block of the STM field (1/Å³), its grid, and E_F (eV) if known."""
    if args.qe_save:
        with comm.collective():
            bands = read_band_structure(Path(args.qe_save) / "data-file-schema.xml")
            dgrid = DistributedGrid(Grid(atoms.cell[:], bands.fft_shape), comm)
            field_b = stm.stm_field_from_wavefunctions(args.qe_save, args.bias, dgrid)
        return field_b, dgrid, bands.fermi_energy
    if args.ldos:
        return _field_from_ldos_file(args, atoms, comm)
    from ._stm_images import predicted_ldos
    ldos_be, energies_e, fermi, dgrid = predicted_ldos(atoms, args, comm)
    with comm.collective():
        field_b = stm.stm_field_from_ldos(ldos_be, energies_e, fermi, args.bias,
                                          _smearing(args))
    return field_b, dgrid, fermi


def _field_from_ldos_file(args: argparse.Namespace, atoms, comm: Comm
                          ) -> tuple[np.ndarray, DistributedGrid, float]:
    if args.energy_grid is None or args.fermi_energy is None:
        raise MlscaleError("--ldos needs --energy-grid START STEP COUNT and --fermi-energy")
    start, step, count = args.energy_grid
    if count != int(count) or int(count) < 2 or not step > 0:
        raise MlscaleError(f"--energy-grid: positive step and integer count ≥ 2, got "
                           f"{args.energy_grid}")
    energies_e = start + step * np.arange(int(count))
    with comm.collective():
        grid_array_format(args.ldos, ("npy", "openpmd"), "LDOS (1/(eV·Å³))")
        shape = grid_shape(grid_array_shape(args.ldos, "LDOS")[:3])
        dgrid = DistributedGrid(Grid(atoms.cell[:], shape), comm)
        ldos_be = read_grid_block(args.ldos, dgrid.block, mesh="LDOS")
        check_finite(ldos_be, str(args.ldos))
        field_b = stm.stm_field_from_ldos(ldos_be, energies_e, args.fermi_energy, args.bias,
                                          _smearing(args))
    return field_b, dgrid, float(args.fermi_energy)


def _smearing(args: argparse.Namespace) -> tuple[float, int] | None:
    """(degauss eV, QE ngauss) of pp.x's window for the LDOS routes, or None (sharp)."""
    if args.window_degauss is None:
        return None
    if not args.window_degauss > 0:
        raise MlscaleError(f"--window-degauss must be positive, got {args.window_degauss}")
    return float(args.window_degauss), stm.SMEARINGS[args.window_smearing]
