"""Validation of atomic structures before descriptors are computed.

The cell is treated as periodic in all three directions, as the descriptors do.
"""

from __future__ import annotations

import itertools

import numpy as np
from ase.geometry import minkowski_reduce

from ..errors import MlscaleError

_PAIR_CHUNK = 1 << 22  # candidate pairs handled at once (bounds memory)
_CROWDED = 1000  # more atoms than this in one bin cannot all be a bin width apart


def type_indices(atoms, species: tuple[str, ...]) -> np.ndarray:
    """0-based index into ``species`` of each atom's symbol, shape ``[natoms]``."""
    species = tuple(species)
    symbols = atoms.get_chemical_symbols()
    unknown = sorted(set(symbols) - set(species))
    if unknown:
        raise MlscaleError(
            f"atoms contain species {', '.join(unknown)} not in the descriptor species "
            f"({', '.join(species)})"
        )
    index = {symbol: i for i, symbol in enumerate(species)}
    return np.array([index[s] for s in symbols], dtype=np.int64)


def check_atoms(atoms, species: tuple[str, ...], min_distance: float = 0.5) -> None:
    """Raise MlscaleError unless ``atoms`` is a usable periodic structure.

    Checks: at least one atom, a finite non-degenerate cell, finite positions, only
    the given species, and no two atoms (periodic images included) closer than
    ``min_distance`` Å.
    """
    if len(atoms) == 0:
        raise MlscaleError("the structure has no atoms")
    cell_cv = np.asarray(atoms.cell.array, dtype=float)
    _check_cell(cell_cv)
    pos_av = np.asarray(atoms.positions, dtype=float)
    bad = np.flatnonzero(~np.all(np.isfinite(pos_av), axis=1))
    if bad.size:
        raise MlscaleError(f"atom {bad[0]} has a non-finite position {pos_av[bad[0]].tolist()}")
    type_indices(atoms, species)
    close = closest_close_pair(cell_cv, pos_av, min_distance)
    if close is not None:
        i, j, distance = close
        symbols = atoms.get_chemical_symbols()
        if i == j:
            raise MlscaleError(
                f"atom {i} ({symbols[i]}) is {distance:.4f} Å from its own periodic image "
                f"(cell too small); minimum allowed distance is {min_distance} Å"
            )
        raise MlscaleError(
            f"atoms {i} ({symbols[i]}) and {j} ({symbols[j]}) are {distance:.4f} Å apart "
            f"(periodic images included); minimum allowed distance is {min_distance} Å"
        )


def _check_cell(cell_cv: np.ndarray) -> None:
    if cell_cv.shape != (3, 3) or not np.all(np.isfinite(cell_cv)):
        raise MlscaleError("the cell must be a finite 3x3 matrix")
    lengths_c = np.linalg.norm(cell_cv, axis=1)
    volume = abs(np.linalg.det(cell_cv))
    if not volume > 1e-6 * np.prod(lengths_c):
        raise MlscaleError(
            f"the cell is degenerate (volume {volume:.3g} Å³, vector lengths "
            f"{np.round(lengths_c, 4).tolist()} Å); a periodic cell needs three independent "
            "vectors"
        )


def closest_close_pair(cell_cv: np.ndarray, pos_av: np.ndarray, cutoff: float):
    """The closest pair ``(i, j, distance/Å)`` nearer than ``cutoff`` (periodic), or None.

    ``(0, 0, length)`` means a lattice vector is shorter than ``cutoff``, so every
    atom is that close to its own periodic image. Otherwise a cell list over the
    Minkowski-reduced cell with bins at least ``cutoff`` wide: linear in the number
    of atoms (after one sort) for any cell size or shape. A bin holding more atoms
    than can be ``cutoff`` apart is answered from that bin alone.
    """
    cell_cv, _ = minkowski_reduce(cell_cv)
    shortest = float(np.linalg.norm(cell_cv[0]))
    if shortest < cutoff:
        return 0, 0, shortest
    volume = abs(np.linalg.det(cell_cv))
    height_c = volume / np.linalg.norm(np.cross(cell_cv[[1, 2, 0]], cell_cv[[2, 0, 1]]), axis=1)
    nbin_c = np.clip(np.floor(height_c / cutoff), 1, 1 << 20).astype(np.int64)
    reach_c = np.ceil(cutoff * nbin_c / height_c).astype(np.int64)  # bins to look across

    frac_ac = pos_av @ np.linalg.inv(cell_cv)
    frac_ac -= np.floor(frac_ac)
    bin_ac = np.minimum((frac_ac * nbin_c).astype(np.int64), nbin_c - 1)
    key_a = np.ravel_multi_index(bin_ac.T, nbin_c)
    order_a = np.argsort(key_a, kind="stable")
    keys_b, start_b, count_b = np.unique(key_a[order_a], return_index=True, return_counts=True)

    crowded = int(np.argmax(count_b))
    if count_b[crowded] > _CROWDED:
        first = start_b[crowded]
        members = order_a[first:first + _CROWDED + 1]
        dist_aa = np.linalg.norm(pos_av[members][None] - pos_av[members][:, None], axis=2)
        np.fill_diagonal(dist_aa, np.inf)
        row, col = np.unravel_index(np.argmin(dist_aa), dist_aa.shape)
        if dist_aa[row, col] < cutoff:
            i, j = sorted((int(members[row]), int(members[col])))
            return i, j, float(dist_aa.min())

    best = None
    for offset_c in itertools.product(*(range(-r, r + 1) for r in reach_c)):
        target_ac = bin_ac + offset_c
        shift_ac = np.floor_divide(target_ac, nbin_c)
        target_a = np.ravel_multi_index((target_ac - shift_ac * nbin_c).T, nbin_c)
        slot_a = np.minimum(np.searchsorted(keys_b, target_a), len(keys_b) - 1)
        ncand_a = np.where(keys_b[slot_a] == target_a, count_b[slot_a], 0)
        ends_a = np.cumsum(ncand_a)
        cuts = np.searchsorted(ends_a, np.arange(_PAIR_CHUNK, ends_a[-1], _PAIR_CHUNK), "right")
        for lo, hi in zip([0, *cuts], [*cuts, len(pos_av)]):
            n_i = ncand_a[lo:hi]
            i_p = np.repeat(np.arange(lo, hi), n_i)
            before_p = np.repeat(ends_a[lo:hi] - n_i, n_i)  # pairs before atom i's first
            skipped = ends_a[lo - 1] if lo else 0
            j_p = order_a[np.repeat(start_b[slot_a[lo:hi]], n_i)
                          + np.arange(len(i_p)) + skipped - before_p]
            shift_pc = shift_ac[i_p]
            dist_p = np.linalg.norm((frac_ac[j_p] + shift_pc - frac_ac[i_p]) @ cell_cv, axis=1)
            dist_p[(i_p == j_p) & np.all(shift_pc == 0, axis=1)] = np.inf
            k = int(np.argmin(dist_p)) if len(dist_p) else 0
            if len(dist_p) and dist_p[k] < cutoff and (best is None or dist_p[k] < best[2]):
                first, second = sorted((int(i_p[k]), int(j_p[k])))
                best = (first, second, float(dist_p[k]))
    return best
