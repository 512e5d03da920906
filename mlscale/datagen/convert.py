"""Convert one finished QE run directory into an mlscale (MALA-style) snapshot.

Every rank reads and writes only its own grid block: descriptors ``.in.npy``
``[nx, ny, nz, F]`` (float32, no coordinate columns), LDOS ``.out.npy``
``[nx, ny, nz, ne]`` in 1/(eV·Å³) (float32), density ``.dens.npy`` ``[nx, ny, nz, 1]``
in 1/Å³ (float64), openPMD copies ``.out.h5`` and ``.dens.h5``, then (rank 0, last,
atomically) ``.info.json`` with the DFT reference values.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np

from ..config import BispectrumSettings
from ..descriptors import compute_descriptors
from ..errors import MlscaleError
from ..grid import Block, DistributedGrid, Grid
from ..io.atomic import write_json_atomic
from ..io.cube import ldos_cube_paths, read_cube_block, read_ldos_cubes
from ..io.numpy_io import write_npy_distributed
from ..io.openpmd_io import DENSITY_UNITS, LDOS_UNITS, write_openpmd
from ..io.qe import parse_pw_output
from ..units import BOHR_ANGSTROM, HARTREE_EV
from .qe_input import DENSITY_CUBE, LDOS_NPY, PREFIX
from .qe_xml import attribute, text
from .settings import DFTSettings, LdosSettings


def convert_snapshot(run_dir, out_dir, name: str, atoms, dft: DFTSettings, ldos: LdosSettings,
                     bispectrum: BispectrumSettings, comm, backend: str = "lammps",
                     openpmd: bool = True) -> Path:
    """Write snapshot ``name`` into ``out_dir`` from the QE results in ``run_dir``.

    The LDOS comes from ``ldos.npy`` (the one-pass LDOS from the wavefunctions) when
    present, else from pp.x's cubes. Collective. Returns the info JSON path. Cube files
    and ``ldos.npy`` are deleted afterwards.
    """
    run_dir, out_dir = Path(run_dir), Path(out_dir)
    header = None
    with comm.collective():
        if comm.rank == 0:
            header = _check_ldos_source(run_dir, atoms, ldos)
    shape, sources = comm.broadcast(header)
    dgrid = DistributedGrid(Grid(np.asarray(atoms.cell), shape), comm)
    stem = out_dir / name

    with comm.collective():
        ldos_be = _read_ldos_block(sources, dgrid.block)
    _write(stem, ".out", "LDOS", ldos_be, dgrid, openpmd, LDOS_UNITS,
           {"energy_grid_ev": list(ldos.energy_grid.energies)})
    del ldos_be
    with comm.collective():
        density_b = read_cube_block(run_dir / DENSITY_CUBE, dgrid.block)[0] / BOHR_ANGSTROM**3
    electrons = comm.sum(float(density_b.sum()) * dgrid.voxel_volume)
    _write(stem, ".dens", "Density", density_b[..., None], dgrid, openpmd, DENSITY_UNITS, {})
    descriptors_bf = compute_descriptors(atoms, dgrid, bispectrum, backend)
    _write(stem, ".in", None, np.asarray(descriptors_bf, dtype=np.float32), dgrid, False,
           None, None)

    info_path = out_dir / f"{name}.info.json"
    with comm.collective():
        if comm.rank == 0:
            info = snapshot_info(run_dir, atoms, dgrid.grid, dft, ldos, bispectrum)
            info["number_of_electrons_from_density"] = electrons
            info["ldos_tool"] = "wavefunctions" if sources[0].endswith(LDOS_NPY) else "pp.x"
            info["files"] = {kind: f"{name}{suffix}" for kind, suffix in (
                ("descriptors", ".in.npy"), ("ldos", ".out.npy"), ("density", ".dens.npy"),
                *((("ldos_openpmd", ".out.h5"), ("density_openpmd", ".dens.h5"))
                  if openpmd else ()))}
            write_json_atomic(info_path, info)
            for path in sources + [run_dir / DENSITY_CUBE]:
                Path(path).unlink()
    return info_path


def snapshot_info(run_dir: Path, atoms, grid: Grid, dft: DFTSettings, ldos: LdosSettings,
                  bispectrum: BispectrumSettings) -> dict:
    """The info dict: QE's reference values (MALA's keys) plus settings, grid and units."""
    info = parse_pw_output(Path(run_dir) / "scf.out")
    band_energy, electrons = band_energy_from_xml(Path(run_dir) / "scf.xml")
    info.update({
        "band_energy_dft_calculation": band_energy,
        "number_of_electrons_from_eigenvals": electrons,
        "temperature": dft.temperature,
        "grid_dimensions": list(grid.shape),
        "cell": np.asarray(atoms.cell).tolist(),
        "symbols": atoms.get_chemical_symbols(),
        "positions": atoms.positions.tolist(),
        "dft_settings": dft.to_dict(),
        "ldos_settings": ldos.to_dict(),
        "descriptor_settings": bispectrum.to_dict(),
        "units": {"energy": "eV", "length": "angstrom", "ldos": "1/(eV*angstrom^3)",
                  "density": "1/angstrom^3", "temperature": "K"},
    })
    return info


def band_energy_from_xml(path: Path) -> tuple[float, float]:
    """Band energy Σ_k w_k Σ_n f_nk ε_nk (eV) and Σ w f from pw.x's XML data file.

    Uses QE's own occupations and full-precision eigenvalues (the printed output
    rounds eigenvalues and the Fermi level to 0.1 meV, which moves the band energy
    of a metal by up to ~meV). k-point weights sum to 2 (spin included).
    """
    try:
        root = ET.parse(path).getroot()
        bands = [(float(attribute(ks, "k_point", "weight")),
                  np.array(text(ks, "eigenvalues").split(), dtype=float),
                  np.array(text(ks, "occupations").split(), dtype=float))
                 for ks in root.iter("ks_energies")]
    except (OSError, ET.ParseError, MlscaleError, ValueError) as error:
        raise MlscaleError(f"cannot read eigenvalues from {path}: {error}") from None
    if not bands:
        raise MlscaleError(f"{path} holds no eigenvalues")
    band = sum(w * float(np.dot(f, e)) for w, e, f in bands) * HARTREE_EV
    return band, sum(w * float(f.sum()) for w, _, f in bands)


def _check_ldos_source(run_dir: Path, atoms, ldos: LdosSettings):
    """Grid shape and the LDOS files: ``[ldos.npy]`` or the cube paths in energy order."""
    npy = run_dir / LDOS_NPY
    if not npy.is_file():
        return _check_cubes(run_dir, atoms, ldos)
    shape = np.load(npy, mmap_mode="r", allow_pickle=False).shape
    if len(shape) != 4 or shape[3] != ldos.energy_grid.count:
        raise MlscaleError(f"{npy} has shape {shape}, expected [nx, ny, nz, "
                           f"{ldos.energy_grid.count}] for the energy grid")
    return tuple(int(n) for n in shape[:3]), [str(npy)]


def _read_ldos_block(sources: list[str], block: Block) -> np.ndarray:
    """This block of the LDOS [bx, by, bz, energy] in 1/(eV·Å³), float32."""
    if sources[0].endswith(LDOS_NPY):
        return np.array(np.load(sources[0], mmap_mode="r", allow_pickle=False)[block.slices],
                        dtype=np.float32)
    return read_ldos_cubes(sources, block).astype(np.float32)


def _check_cubes(run_dir: Path, atoms, ldos: LdosSettings):
    """Grid shape and the LDOS cube paths (in energy order), checked against the settings."""
    paths = ldos_cube_paths(run_dir, PREFIX)
    energies = ldos.energy_grid.energies
    if len(paths) != len(energies):
        raise MlscaleError(f"{run_dir}: pp.x wrote {len(paths)} LDOS cubes, the energy grid "
                           f"has {len(energies)} energies")
    shape: tuple[int, ...] = ()
    for index in (0, len(paths) - 1):
        _, meta = read_cube_block(paths[index], Block((0, 0, 0), (1, 1, 1)))
        if abs(meta.get("energy_ev", np.nan) - energies[index]) > 1e-3:
            raise MlscaleError(f"{paths[index]} is at {meta.get('energy_ev')} eV, "
                               f"expected {energies[index]:.4f} eV")
        shape = tuple(int(n) for n in meta["shape"])
        cell_cv = meta["voxel_cv"] * np.array(shape)[:, None]
        if not np.allclose(cell_cv, np.asarray(atoms.cell), atol=1e-4):
            raise MlscaleError(f"{paths[index]} has another cell than the structure")
    return shape, [str(p) for p in paths]


def _write(stem: Path, suffix: str, mesh: str | None, local, dgrid: DistributedGrid,
           openpmd: bool, units, attributes):
    write_npy_distributed(f"{stem}{suffix}.npy", local, dgrid)
    if openpmd and mesh is not None:
        write_openpmd(f"{stem}{suffix}.h5", mesh, local, dgrid, attributes=attributes,
                      **units)
