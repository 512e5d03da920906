"""Bispectrum descriptors on this rank's block of the real-space grid.

``compute_descriptors`` validates the atoms and dispatches to a backend module
(``lammps``: LAMMPS ``compute sna/grid/local``, collective over the rank's whole
block; ``native``: mlscale's own code, local work on any sub-block; with
``device="cuda"`` the native kernel runs on the rank's GPU, module ``cuda``).
:func:`descriptor_blocks` says which blocks a backend computes in one call.
"""

from __future__ import annotations

import importlib

import numpy as np

from ..config import BispectrumSettings
from ..errors import MlscaleError
from ..grid import Block, DistributedGrid
from ..parallel import self_comm
from .atoms import check_atoms, type_indices

BACKENDS = ("lammps", "native")

__all__ = ["BACKENDS", "check_atoms", "compute_descriptors", "descriptor_blocks", "to_host",
           "type_indices"]


def compute_descriptors(atoms, dgrid: DistributedGrid, settings: BispectrumSettings,
                        backend: str = "native", block: Block | None = None,
                        check: bool = True, device: str = "cpu"):
    """Bispectrum components on ``block``: ``[bx, by, bz, settings.n_features]`` float64.

    block: default the rank's block of ``dgrid``; native: any sub-block of it, purely
    local work (no collectives); lammps: only the rank's block, COLLECTIVE over
    ``dgrid.comm``. atoms: ase.Atoms (Å) in the grid's cell. check=False skips
    :func:`check_atoms` (for callers that already checked the same atoms, e.g. once
    per slab). device: "cpu", or "cuda" (native backend on the current GPU, see
    :func:`mlscale.device.select_device`): then a numba CUDA device array of the same
    shape that stays on the GPU (:func:`to_host` copies it). Errors are collective only
    where the call is.
    """
    block = dgrid.block if block is None else block
    collective = backend != "native"
    with (dgrid.comm if collective else self_comm()).collective():
        _check_backend(backend)
        if device != "cpu" and (device != "cuda" or backend != "native"):
            raise MlscaleError(f"device {device!r} with the {backend} descriptor backend: "
                               "the GPU runs only the native backend (device cpu or cuda)")
        if check:
            check_atoms(atoms, settings.species)
        module = _backend(backend)
        if collective and block != dgrid.block:
            raise MlscaleError(f"rank {dgrid.rank} was given block {block}, expected "
                               f"{dgrid.block} (the {backend} backend computes the rank's "
                               "whole block)")
    if collective:
        return module.compute_block(atoms, dgrid, settings)
    if device == "cuda":
        return _backend("cuda").compute_block(atoms, dgrid.grid, block, settings,
                                              on_device=True)
    return module.compute_block(atoms, dgrid.grid, block, settings)


def to_host(descriptors) -> np.ndarray:
    """A NumPy array of :func:`compute_descriptors`' result (copied from a GPU)."""
    return (descriptors.copy_to_host() if hasattr(descriptors, "copy_to_host")
            else np.asarray(descriptors))


def descriptor_blocks(dgrid: DistributedGrid, backend: str, chunk_points: int) -> list[Block]:
    """The blocks ``backend`` computes one call at a time: native, slabs of the rank's block
    of at most ~``chunk_points`` points (bounded memory; local work); lammps, the whole
    block (one collective call)."""
    _check_backend(backend)
    return dgrid.slabs(chunk_points) if backend == "native" else [dgrid.block]


def _check_backend(backend: str) -> None:
    if backend not in BACKENDS:
        raise MlscaleError(f"unknown descriptor backend {backend!r}; choose one of "
                           f"{', '.join(BACKENDS)}")


def _backend(name: str):
    try:
        return importlib.import_module(f"{__name__}.{name}")
    except ModuleNotFoundError as error:
        if error.name not in (f"{__name__}.{name}", name):
            raise
        raise MlscaleError(f"descriptor backend {name!r} is not available "
                           f"(module {error.name} not found)") from None
