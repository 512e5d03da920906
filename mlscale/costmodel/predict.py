"""What one rank of a prediction holds and costs: its block, its atoms, memory and time.

Pure functions over counts and arrays. The constants come from ``mlscale bench``
(:class:`~mlscale.costmodel.constants.BenchConstants`, measured on the machine that
will run the job). Per rank with ``n`` local grid points (the model of docs/scaling.md):

    memory = overhead + max(point_bytes·n + chunk_point_bytes·c, (8 + energy_point_bytes)·n)
             + atom_bytes·N  (+ energy_overhead with the energy phase)
    time   = startup + atom_s·N + n·(descriptor_point_s + descriptor_neighbour_s·ν)
             + n·macs·network_mac_s + n·E·electrons_point_energy_s + n·output_point_s
             (+ n·energy_point_s)

c: points of the rank's largest chunk; N: atoms of the structure (every rank reads
them); ν: neighbours per grid point; macs: the network's multiply-adds per point;
E: energies of the LDOS grid. point_bytes is measured at the bench's K LDOS energies
kept per point and moves by 4 bytes (one float32 LDOS value) per energy kept: a
prediction keeps the density and the LDOS in a window around μ
(:func:`mlscale.electrons.kept_energies`, 22 of the shipped model's 176 at 298 K),
one with forces all E. Memory in MiB; times are CPU seconds of one single-threaded
rank, i.e. wall time on a dedicated core.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from ..errors import MlscaleError
from ..grid import (
    Decomposition,
    atoms_in_block,
    halo_atoms,
    halo_c,
    largest_block,
    slabs,
    smallest_block_size,
)
from .constants import BenchConstants

MIB = 1024.0**2
PHASES = ("startup", "descriptors", "network", "electrons", "energy", "output")


# -- what a rank holds --------------------------------------------------------------------
def neighbours_per_point(n_atoms: int, volume_A3: float, cutoff_A: float) -> float:
    """Mean number of atoms within ``cutoff_A`` (Å) of a grid point at uniform density
    (``n_atoms`` in ``volume_A3``, Å³)."""
    return n_atoms / volume_A3 * 4.0 / 3.0 * math.pi * cutoff_A**3


def network_macs(layers: Sequence[int]) -> int:
    """Multiply-adds per grid point of an MLP with these layer sizes."""
    return int(sum(a * b for a, b in zip(layers[:-1], layers[1:], strict=True)))


@dataclass(frozen=True)
class RankLoad:
    """What the rank with the largest block holds."""

    ranks: int
    process_grid: tuple
    block_shape: tuple
    points: int          # grid points of the largest block
    min_points: int      # grid points of the smallest block
    chunks: int          # chunks its points are processed in
    chunk_points: int    # points of its largest chunk
    atoms_in_block: int | None  # atoms inside the block (None: positions not given)
    atoms_with_halo: int | None  # atoms the rank needs: inside the block's cutoff box


def rank_load(grid_shape: Sequence[int], nranks: int, chunk_points: int,
              cell_cv: np.ndarray | None = None, frac_ac: np.ndarray | None = None,
              cutoff: float | None = None) -> RankLoad:
    """Decomposition of ``grid_shape`` over ``nranks`` as ``mlscale predict`` does it.

    With ``frac_ac`` (fractional positions), ``cell_cv`` (Å) and ``cutoff`` (Å) also
    counts the atoms of the largest block, without and with its cutoff halo.
    """
    shape = (int(grid_shape[0]), int(grid_shape[1]), int(grid_shape[2]))
    decomposition = Decomposition(shape, nranks)
    block = largest_block(shape, nranks)
    smallest = smallest_block_size(shape, nranks)
    chunks = slabs(block, chunk_points)
    inside = with_halo = None
    if frac_ac is not None:
        if cell_cv is None or cutoff is None:
            raise MlscaleError("counting a block's atoms needs the cell and the cutoff")
        frac_ac = np.asarray(frac_ac, dtype=float)
        inside = atoms_in_block(frac_ac, shape, block)
        with_halo = len(halo_atoms(frac_ac, shape, block, halo_c(cell_cv, cutoff)))
    return RankLoad(nranks, tuple(decomposition.dims), block.shape, block.size, smallest,
                    len(chunks), max(c.size for c in chunks), inside, with_halo)


# -- cost model ---------------------------------------------------------------------------
def memory_MiB(c: BenchConstants, points: int, chunk_points: int, energies: int,
               atoms: int, energy: bool = False,
               kept_energies: int | None = None) -> dict[str, float]:
    """Predicted peak memory per rank (MiB) and its parts (``overhead``, ``points``,
    ``chunk``, ``atoms``, ``total``); ``energy``: with the energy phase; kept_energies:
    the LDOS energies a rank keeps per point (default all ``energies``, the store of a
    prediction with forces)."""
    kept = energies if kept_energies is None else kept_energies
    measured_kept = c.energies if c.kept_energies is None else c.kept_energies
    point_bytes = c.point_bytes + 4.0 * (kept - measured_kept)
    parts = {"overhead": c.overhead_MiB, "points": point_bytes * points / MIB,
             "chunk": c.chunk_point_bytes * chunk_points / MIB, "atoms": c.atom_bytes * atoms / MIB}
    if energy:
        _, energy_point_bytes, energy_overhead_MiB = _energy_constants(c)
        energy_phase = (8.0 + energy_point_bytes) * points / MIB
        parts["points"] = max(parts["points"], energy_phase - parts["chunk"])
        parts["overhead"] += energy_overhead_MiB
    parts["total"] = sum(parts.values())
    return parts


def time_s(c: BenchConstants, points: int, neighbours: float, macs: int, energies: int,
           atoms: int, energy: bool = False) -> dict[str, float]:
    """Predicted time per rank on one dedicated core (s), per phase and ``total``."""
    parts = {
        "startup": c.startup_s + c.atom_s * atoms,
        "descriptors": points * (c.descriptor_point_s + c.descriptor_neighbour_s * neighbours),
        "network": points * macs * c.network_mac_s,
        "electrons": points * energies * c.electrons_point_energy_s,
        "output": points * c.output_point_s,
    }
    if energy:
        parts["energy"] = points * _energy_constants(c)[0]
    parts["total"] = sum(parts.values())
    return parts


def _energy_constants(c: BenchConstants) -> tuple[float, float, float]:
    """The energy phase's (s per point, bytes per point, fixed MiB); MlscaleError if the
    constants were measured without it."""
    if c.energy_point_s is None or c.energy_point_bytes is None or c.energy_overhead_MiB is None:
        raise MlscaleError("the bench constants lack the energy phase: rerun `mlscale bench "
                           "--pseudopotentials DIR`")
    return c.energy_point_s, c.energy_point_bytes, c.energy_overhead_MiB


def smallest_ranks(fits: Callable[[int], bool], first: int = 1, tries: int = 4096) -> int:
    """Smallest rank count >= ``first`` for which ``fits(ranks)`` is true.

    Scans upwards from ``first``, which should be a lower bound (e.g. the count at
    which a perfectly even split would just fit); counts the grid cannot be split
    into are skipped.
    """
    for ranks in range(max(first, 1), max(first, 1) + tries):
        try:
            if fits(ranks):
                return ranks
        except MlscaleError:
            continue
    raise MlscaleError(f"no rank count from {first} to {first + tries - 1} fits the budget")


def plan(c: BenchConstants, grid_shape: Sequence[int], cell_cv: np.ndarray,
         frac_ac: np.ndarray, layers: Sequence[int], energies: int, cutoff: float,
         chunk_points: int, *, ranks: int | None = None, memory_GiB: float | None = None,
         time_budget_s: float | None = None, energy: bool = False,
         kept_energies: int | None = None) -> dict:
    """The prediction on ``ranks`` ranks, or on the fewest ranks that fit the budgets.

    grid_shape: the real-space grid; cell_cv: cell (Å); frac_ac: fractional atom
    positions; layers: network layer sizes; cutoff: descriptor cutoff (Å); memory_GiB
    and time_budget_s: budgets per rank; kept_energies: LDOS energies kept per point
    (:func:`mlscale.electrons.kept_energies`; default all, as with forces). Returns
    ``load`` (:class:`RankLoad`), ``memory_MiB`` and ``time_s`` (dicts of parts, see
    :func:`memory_MiB`, :func:`time_s`), ``neighbours``, ``macs``, ``atoms`` and
    ``points`` (of the grid).
    """
    n_atoms = len(frac_ac)
    npoints = int(np.prod(grid_shape))
    volume = abs(float(np.linalg.det(np.asarray(cell_cv, dtype=float))))
    neighbours = neighbours_per_point(n_atoms, volume, cutoff)
    macs = network_macs(layers)

    def cost(nranks: int, with_atoms: bool = False) -> tuple[RankLoad, dict, dict]:
        load = rank_load(grid_shape, nranks, chunk_points, cell_cv,
                         frac_ac if with_atoms else None, cutoff)
        return (load,
                memory_MiB(c, load.points, load.chunk_points, energies, n_atoms, energy,
                           kept_energies),
                time_s(c, load.points, neighbours, macs, energies, n_atoms, energy))

    if ranks is None:
        if memory_GiB is None and time_budget_s is None:
            raise MlscaleError("give a rank count or a memory or time budget per rank")
        _, memory_one, time_one = cost(1)
        first = _fewest_ranks_bound(memory_one, time_one, memory_GiB, time_budget_s)

        def fits(nranks: int) -> bool:
            _, memory, times = cost(nranks)
            return ((memory_GiB is None or memory["total"] <= memory_GiB * 1024)
                    and (time_budget_s is None or times["total"] <= time_budget_s))

        ranks = smallest_ranks(fits, min(first, npoints))
    load, memory, times = cost(ranks, with_atoms=True)
    return {"load": load, "memory_MiB": memory, "time_s": times, "neighbours": neighbours,
            "macs": macs, "atoms": n_atoms, "points": npoints}


def _fewest_ranks_bound(memory_one: dict, time_one: dict, memory_GiB: float | None,
                        time_budget_s: float | None) -> int:
    """A lower bound on the ranks within the budgets: the count at which the per-point
    parts of one rank's cost, split evenly, would just fit beside the fixed parts."""
    first = 1
    if memory_GiB is not None:
        fixed = memory_one["total"] - memory_one["points"]  # chunk capped by the block
        if memory_GiB * 1024 <= fixed:
            raise MlscaleError(f"{memory_GiB} GiB per rank is below the fixed memory of a "
                               f"rank ({fixed:.0f} MiB)")
        first = max(first, math.ceil(memory_one["points"] / (memory_GiB * 1024 - fixed)))
    if time_budget_s is not None:
        fixed = time_one["startup"]
        if time_budget_s <= fixed:
            raise MlscaleError(f"{time_budget_s} s per rank is below a rank's startup time "
                               f"({fixed:.1f} s)")
        first = max(first, math.ceil((time_one["total"] - fixed) / (time_budget_s - fixed)))
    return first
