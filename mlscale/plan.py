"""What one rank of a prediction holds and costs: its block, its atoms, memory and time.

Pure functions over counts and arrays. The constants come from ``mlscale bench``
(:class:`BenchConstants`, measured on the machine that will run the job). Per rank
with ``n`` local grid points (the model of docs/scaling.md):

    memory = overhead + max(point_bytes·n + chunk_point_bytes·c, (8 + energy_point_bytes)·n)
             + atom_bytes·N  (+ energy_overhead with the energy phase)
    time   = startup + atom_s·N + n·(descriptor_point_s + descriptor_neighbour_s·ν)
             + n·macs·network_mac_s + n·E·electrons_point_energy_s + n·output_point_s
             (+ n·energy_point_s)

c: points of the rank's largest chunk; N: atoms of the structure (every rank reads
them); ν: neighbours per grid point; macs: the network's multiply-adds per point;
E: energies of the LDOS grid (point_bytes is measured at the bench's E and moves by
4 bytes, one float32 LDOS value, per energy). Memory in MiB; times are CPU seconds of
one single-threaded rank, i.e. wall time on a dedicated core.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import numpy as np

from .errors import MlscaleError
from .grid import (Decomposition, atoms_in_block, halo_atoms, halo_c, largest_block,
                   slabs, smallest_block_size)

FORMAT = "mlscale-bench"
FORMAT_VERSION = 1
MIB = 1024.0**2
PHASES = ("startup", "descriptors", "network", "electrons", "energy", "output")


@dataclass(frozen=True)
class BenchConstants:
    """Per-rank cost constants measured by ``mlscale bench`` (seconds, bytes, MiB)."""

    machine: str
    date: str
    twojmax: int               # descriptor settings the descriptor costs belong to
    layers: tuple              # network the memory constants were measured with
    energies: int              # LDOS energies point_bytes was measured at
    startup_s: float           # process start, imports, model load
    atom_s: float              # per atom of the structure: read, checks, halo selection
    descriptor_point_s: float  # per grid point ...
    descriptor_neighbour_s: float  # ... plus per neighbour of the point
    network_mac_s: float       # per multiply-add of the network
    electrons_point_energy_s: float  # DOS, LDOS store, density: per point and energy
    output_point_s: float      # writing the density, per point
    overhead_MiB: float        # peak memory at zero points (libraries, model, buffers)
    point_bytes: float         # per local grid point (LDOS store, density)
    chunk_point_bytes: float   # per point of the largest chunk (descriptors, activations)
    atom_bytes: float          # per atom of the structure
    energy_point_s: float | None = None  # energy phase per point (None: not measured)
    energy_point_bytes: float | None = None  # energy phase per point, beyond the density
    energy_overhead_MiB: float | None = None  # libraries of the energy phase

    def to_dict(self) -> dict:
        return {"format": FORMAT, "format_version": FORMAT_VERSION,
                **{**asdict(self), "layers": list(self.layers)}}

    @classmethod
    def from_dict(cls, data: dict, source="constants") -> "BenchConstants":
        if data.get("format") != FORMAT or data.get("format_version") != FORMAT_VERSION:
            raise MlscaleError(f"{source} is not an {FORMAT} file of version {FORMAT_VERSION}")
        names = {f.name for f in fields(cls)}
        try:
            values = {name: data[name] for name in names if name in data}
            return cls(**{**values, "layers": tuple(int(n) for n in values["layers"])})
        except (KeyError, TypeError, ValueError) as error:
            raise MlscaleError(f"{source}: incomplete or invalid constants ({error})") from None


def read_constants(path) -> BenchConstants:
    """Constants written by ``mlscale bench``; MlscaleError if missing or invalid."""
    path = Path(path)
    if not path.is_file():
        raise MlscaleError(f"no bench constants at {path}: run `mlscale bench` on this "
                           "machine first (or pass --constants FILE)")
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as error:
        raise MlscaleError(f"cannot read bench constants {path}: {error}") from None
    return BenchConstants.from_dict(data, path)


def default_constants_path() -> Path:
    """Where ``mlscale bench`` writes and ``mlscale plan`` reads the constants:
    ``$XDG_CACHE_HOME/mlscale/bench.json`` (``~/.cache/mlscale/bench.json``)."""
    import os

    cache = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(cache) / "mlscale" / "bench.json"


# -- what a rank holds --------------------------------------------------------------------
def neighbours_per_point(n_atoms: int, volume_A3: float, cutoff_A: float) -> float:
    """Mean number of atoms within ``cutoff_A`` of a grid point at uniform density."""
    return n_atoms / volume_A3 * 4.0 / 3.0 * math.pi * cutoff_A**3


def network_macs(layers) -> int:
    """Multiply-adds per grid point of an MLP with these layer sizes."""
    return int(sum(a * b for a, b in zip(layers[:-1], layers[1:])))


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


def rank_load(grid_shape, nranks: int, chunk_points: int, cell_cv=None, frac_ac=None,
              cutoff: float | None = None) -> RankLoad:
    """Decomposition of ``grid_shape`` over ``nranks`` as ``mlscale predict`` does it.

    With ``frac_ac`` (fractional positions), ``cell_cv`` (Å) and ``cutoff`` (Å) also
    counts the atoms of the largest block, without and with its cutoff halo.
    """
    decomposition = Decomposition(tuple(grid_shape), nranks)
    block = largest_block(grid_shape, nranks)
    smallest = smallest_block_size(grid_shape, nranks)
    chunks = slabs(block, chunk_points)
    inside = with_halo = None
    if frac_ac is not None:
        frac_ac = np.asarray(frac_ac, dtype=float)
        inside = atoms_in_block(frac_ac, grid_shape, block)
        with_halo = len(halo_atoms(frac_ac, grid_shape, block, halo_c(cell_cv, cutoff)))
    return RankLoad(nranks, tuple(decomposition.dims), block.shape, block.size, smallest,
                    len(chunks), max(c.size for c in chunks), inside, with_halo)


# -- cost model ---------------------------------------------------------------------------
def memory_MiB(c: BenchConstants, points: int, chunk_points: int, energies: int,
               atoms: int, energy: bool = False) -> dict:
    """Predicted peak memory per rank (MiB) and its parts."""
    point_bytes = c.point_bytes + 4.0 * (energies - c.energies)
    parts = {"overhead": c.overhead_MiB, "points": point_bytes * points / MIB,
             "chunk": c.chunk_point_bytes * chunk_points / MIB, "atoms": c.atom_bytes * atoms / MIB}
    if energy:
        _require_energy(c)
        energy_phase = (8.0 + c.energy_point_bytes) * points / MIB
        parts["points"] = max(parts["points"], energy_phase - parts["chunk"])
        parts["overhead"] += c.energy_overhead_MiB
    parts["total"] = sum(parts.values())
    return parts


def time_s(c: BenchConstants, points: int, neighbours: float, macs: int, energies: int,
           atoms: int, energy: bool = False) -> dict:
    """Predicted time per rank on one dedicated core (s), per phase and ``total``."""
    parts = {
        "startup": c.startup_s + c.atom_s * atoms,
        "descriptors": points * (c.descriptor_point_s + c.descriptor_neighbour_s * neighbours),
        "network": points * macs * c.network_mac_s,
        "electrons": points * energies * c.electrons_point_energy_s,
        "output": points * c.output_point_s,
    }
    if energy:
        _require_energy(c)
        parts["energy"] = points * c.energy_point_s
    parts["total"] = sum(parts.values())
    return parts


def _require_energy(c: BenchConstants):
    if c.energy_point_s is None or c.energy_point_bytes is None or c.energy_overhead_MiB is None:
        raise MlscaleError("the bench constants lack the energy phase: rerun `mlscale bench "
                           "--pseudopotentials DIR`")


def smallest_ranks(fits, first: int = 1, tries: int = 4096) -> int:
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


def plan(c: BenchConstants, grid_shape, cell_cv, frac_ac, layers, energies: int,
         cutoff: float, chunk_points: int, *, ranks: int | None = None,
         memory_GiB: float | None = None, time_budget_s: float | None = None,
         energy: bool = False) -> dict:
    """The prediction on ``ranks`` ranks, or on the fewest ranks that fit the budgets.

    grid_shape: the real-space grid; cell_cv: cell (Å); frac_ac: fractional atom
    positions; layers: network layer sizes; cutoff: descriptor cutoff (Å). Returns
    ``load`` (:class:`RankLoad`), ``memory_MiB`` and ``time_s`` (dicts of parts, see
    :func:`memory_MiB`, :func:`time_s`) and ``neighbours``.
    """
    n_atoms = len(frac_ac)
    npoints = int(np.prod(grid_shape))
    volume = abs(float(np.linalg.det(np.asarray(cell_cv, dtype=float))))
    neighbours = neighbours_per_point(n_atoms, volume, cutoff)
    macs = network_macs(layers)

    def cost(nranks, with_atoms=False):
        load = rank_load(grid_shape, nranks, chunk_points, cell_cv,
                         frac_ac if with_atoms else None, cutoff)
        return (load,
                memory_MiB(c, load.points, load.chunk_points, energies, n_atoms, energy),
                time_s(c, load.points, neighbours, macs, energies, n_atoms, energy))

    if ranks is None:
        if memory_GiB is None and time_budget_s is None:
            raise MlscaleError("give a rank count or a memory or time budget per rank")
        first = 1
        _, memory_one, time_one = cost(1)
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

        def fits(nranks):
            _, memory, times = cost(nranks)
            return ((memory_GiB is None or memory["total"] <= memory_GiB * 1024)
                    and (time_budget_s is None or times["total"] <= time_budget_s))

        ranks = smallest_ranks(fits, min(first, npoints))
    load, memory, times = cost(ranks, with_atoms=True)
    return {"load": load, "memory_MiB": memory, "time_s": times, "neighbours": neighbours,
            "macs": macs, "atoms": n_atoms, "points": npoints}
