"""Gaussian cube files as written by QE's pp.x (``output_format = 6``).

Header: two comment lines; atom count and origin; per axis the point count and
step vector (Bohr; a negative count means Å); one line per atom (Z, charge,
x, y, z). Data follow with z fastest, x slowest. QE writes LDOS in 1/(Ry·Bohr³)
and densities in 1/Bohr³; :func:`read_ldos_cubes` converts LDOS to 1/(eV·Å³).
Block reads stream the file and keep only the block's values.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
from ase import Atoms

from ..errors import MlscaleError
from ..grid import Block
from ..units import BOHR_ANGSTROM, RYDBERG_EV
from .numpy_io import check_finite

_CHUNK_CHARS = 1 << 22
_MISSING_E = re.compile(r"(?<=\d)([+-]\d{3})$")  # Fortran drops the E for |exponent| > 99
_ENERGY = re.compile(r"Energy\s*=\s*([-+.\dEe]+)\s*eV,\s*broadening\s*=\s*([-+.\dEe]+)\s*eV")


def _floats(tokens, path) -> np.ndarray:
    try:
        return np.array(tokens, dtype=np.float64)
    except ValueError:
        try:
            return np.array([_MISSING_E.sub(r"E\1", t) for t in tokens], dtype=np.float64)
        except ValueError:
            raise MlscaleError(f"cube file {path} is corrupt (non-numeric data)") from None


def _read_header(f, path) -> tuple[dict, Atoms]:
    """Parse the header into (meta, atoms); leaves ``f`` at the first data value."""
    try:
        comments = [f.readline().rstrip("\n") for _ in range(2)]
        fields = f.readline().split()
        natoms, origin = int(fields[0]), [float(x) for x in fields[1:4]]
        axes = [f.readline().split() for _ in range(3)]
        counts = [int(a[0]) for a in axes]
        step_cv = np.array([[float(x) for x in a[1:4]] for a in axes])
        atom_lines = [f.readline().split() for _ in range(abs(natoms))]
        numbers = [int(a[0]) for a in atom_lines]
        charges = [float(a[1]) for a in atom_lines]
        positions = np.array([[float(x) for x in a[2:5]] for a in atom_lines]).reshape(-1, 3)
        if natoms < 0:  # orbital cube: one more line listing orbitals
            f.readline()
    except (ValueError, IndexError):
        raise MlscaleError(f"cube file {path} has a corrupt or truncated header") from None
    if min(np.abs(counts)) < 1 or not natoms or positions.shape[0] != abs(natoms):
        raise MlscaleError(f"cube file {path} has a corrupt header")
    length = 1.0 if counts[0] < 0 else BOHR_ANGSTROM  # to Å
    shape = tuple(abs(n) for n in counts)
    meta: dict = {
        "comments": comments,
        "shape": shape,
        "origin_c": np.array(origin) * length,
        "voxel_cv": step_cv * length,
        "charges": charges,
    }
    match = _ENERGY.search(comments[1])
    if match:
        meta["energy_ev"], meta["broadening_ev"] = float(match[1]), float(match[2])
    atoms = Atoms(numbers=numbers, positions=positions * length,
                  cell=meta["voxel_cv"] * np.array(shape)[:, None], pbc=True)
    return meta, atoms


def _read_values(f, path, shape, block: Block, must_end: bool) -> np.ndarray:
    """Stream the data section, keeping the values inside ``block`` (C order)."""
    nx, ny, nz = shape
    first = block.start[0] * ny * nz
    end = block.stop[0] * ny * nz  # x-slab that contains the block
    out = np.empty(block.size, dtype=np.float64)
    filled, position, carry = 0, 0, ""
    while True:
        text = f.read(_CHUNK_CHARS)
        tokens = (carry + text).split()
        carry = ""
        if text and tokens and not text[-1].isspace():
            carry = tokens.pop()  # may continue in the next chunk
        lo, hi = max(first - position, 0), min(end - position, len(tokens))
        if lo < hi:
            _, y, z = np.unravel_index(np.arange(position + lo, position + hi), shape)
            keep = ((y >= block.start[1]) & (y < block.stop[1])
                    & (z >= block.start[2]) & (z < block.stop[2]))
            selected = _floats(tokens[lo:hi], path)[keep]
            out[filled:filled + selected.size] = selected
            filled += selected.size
        position += len(tokens)
        if not text:
            break
        if position >= end and not must_end:
            break
    total = nx * ny * nz
    if position < end:
        raise MlscaleError(f"cube file {path} is truncated: {position} of {total} values")
    if must_end and position != total:
        raise MlscaleError(f"cube file {path} has {position} values, its header says {total}")
    return out.reshape(block.shape)


def _open(path):
    path = Path(path)
    if not path.is_file():
        raise MlscaleError(f"file not found: {path}")
    return path, open(path, encoding="ascii", errors="replace")


def read_cube(path) -> tuple[np.ndarray, Atoms, dict]:
    """Whole cube: data ``[nx, ny, nz]`` (file units), atoms (Å), meta.

    meta: ``comments``, ``shape``, ``origin_c`` and ``voxel_cv`` (Å), atom
    ``charges``, and for pp.x LDOS cubes ``energy_ev`` and ``broadening_ev``.
    """
    path, f = _open(path)
    with f:
        meta, atoms = _read_header(f, path)
        shape = meta["shape"]
        data = _read_values(f, path, shape, Block((0, 0, 0), shape), must_end=True)
    return check_finite(data, f"cube file {path}"), atoms, meta


def read_cube_block(path, block: Block | None = None) -> tuple[np.ndarray, dict]:
    """Only ``block`` of a cube's data (file units) and its meta; stops reading after it."""
    path, f = _open(path)
    with f:
        meta, _ = _read_header(f, path)
        shape = meta["shape"]
        if block is None:
            block = Block((0, 0, 0), shape)
        if any(b > n for b, n in zip(block.stop, shape)):
            raise MlscaleError(f"cube file {path} has grid {shape}, too small for block "
                               f"{block.start}..{block.stop}")
        data = _read_values(f, path, shape, block, must_end=False)
    return check_finite(data, f"cube file {path}"), meta


def read_ldos_cubes(paths, block: Block | None = None) -> np.ndarray:
    """LDOS ``[bx, by, bz, n_energies]`` in 1/(eV·Å³) from pp.x cubes (one per energy).

    QE writes 1/(Ry·Bohr³); all cubes must share one grid, with its origin at 0.
    """
    paths = [Path(p) for p in paths]
    if not paths:
        raise MlscaleError("no LDOS cube files given")
    planes, reference = [], None
    for path in paths:
        data, meta = read_cube_block(path, block)
        if reference is None:
            reference = (path, meta)
        elif (meta["shape"] != reference[1]["shape"]
              or not np.allclose(meta["voxel_cv"], reference[1]["voxel_cv"], atol=1e-6)):
            raise MlscaleError(
                f"cube grids differ: {reference[0]} has {reference[1]['shape']} points, "
                f"{path} has {meta['shape']} (or different voxel vectors)"
            )
        if np.any(np.abs(meta["origin_c"]) > 1e-6):
            raise MlscaleError(f"cube file {path} has origin {meta['origin_c']} Å; "
                               "mlscale grids start at the cell origin")
        planes.append(data)
    return np.stack(planes, axis=-1) / (RYDBERG_EV * BOHR_ANGSTROM**3)


def ldos_cube_paths(directory, prefix: str) -> list[Path]:
    """pp.x LDOS cubes ``tmp.pp<NN><prefix>_ldos.cube`` in ``directory``, by energy index.

    The indices must run 1, 2, ..., N without gaps.
    """
    directory = Path(directory)
    if not directory.is_dir():
        raise MlscaleError(f"directory not found: {directory}")
    pattern = re.compile(r"tmp\.pp(\d+)" + re.escape(prefix) + r"_ldos\.cube")
    found = {}
    for path in directory.iterdir():
        match = pattern.fullmatch(path.name)
        if match:
            found[int(match[1])] = path
    if not found:
        raise MlscaleError(f"no LDOS cubes tmp.ppNN{prefix}_ldos.cube in {directory}")
    missing = sorted(set(range(1, max(found) + 1)) - set(found))
    if missing:
        raise MlscaleError(f"LDOS cubes in {directory} miss energy index(es) {missing}")
    return [found[i] for i in sorted(found)]
