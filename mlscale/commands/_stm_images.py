"""Helpers of ``mlscale stm``: the slab's surface, the PNG writer, the predicted LDOS."""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from ..errors import MlscaleError
from ..io.atomic import atomic_path
from ..parallel import Comm


def slab_top(atoms) -> tuple[float, float]:
    """(z of the topmost atom in Å, width of the vacuum in Å): the vacuum is the widest
    gap between atoms along z (periodic in the cell height), the top is the atom below it."""
    height = float(atoms.cell[2, 2])
    z = np.sort(np.mod(atoms.positions[:, 2], height))
    gaps = np.diff(np.concatenate([z, [z[0] + height]]))
    widest = int(np.argmax(gaps))
    return float(z[widest]), float(gaps[widest])


def save_image(stem: Path, image_xy: np.ndarray, cell_cv: np.ndarray, repeat: int,
               title: str, label: str) -> None:
    """``stem``.npy (the [nx, ny] array) and ``stem``.png (``repeat``² cells, Cartesian
    x, y in Å), both written atomically."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if repeat < 1:
        raise MlscaleError(f"--repeat must be at least 1, got {repeat}")
    with atomic_path(stem.with_suffix(".npy")) as tmp, open(tmp, "wb") as f:
        np.save(f, image_xy)
    nx, ny = image_xy.shape
    tiled = np.tile(image_xy, (repeat, repeat))
    i, j = np.meshgrid(np.arange(nx * repeat + 1) - 0.5, np.arange(ny * repeat + 1) - 0.5,
                       indexing="ij")
    x = i / nx * cell_cv[0, 0] + j / ny * cell_cv[1, 0]
    y = i / nx * cell_cv[0, 1] + j / ny * cell_cv[1, 1]
    figure, axes = plt.subplots(figsize=(5, 4.2))
    mesh = axes.pcolormesh(x, y, tiled, shading="flat", cmap="afmhot")
    figure.colorbar(mesh, ax=axes, label=label)
    axes.set_aspect("equal")
    axes.set_xlabel("x (Å)")
    axes.set_ylabel("y (Å)")
    axes.set_title(title)
    with atomic_path(stem.with_suffix(".png")) as tmp:
        figure.savefig(tmp, format="png", dpi=110, bbox_inches="tight")
    plt.close(figure)


def predicted_ldos(atoms, args: argparse.Namespace, comm: Comm):
    """(LDOS block [bx, by, bz, energy] 1/(eV·Å³), energies eV, μ eV, DistributedGrid)
    predicted by the model (default: the shipped Al model), μ from its electron count."""
    from .. import inference
    from ..examples import shipped_model_path
    from ..model import DEFAULT_CHUNK_POINTS, load_model
    from ..timing import Timings

    with comm.collective():
        model = load_model(args.model or shipped_model_path(), "numpy")
    dgrid, n_electrons = inference.setup(atoms, model.info, comm, shape=args.grid)
    ldos_pe, dos_e = inference.ldos_on_grid(atoms, model, dgrid, "native",
                                            DEFAULT_CHUNK_POINTS, Timings())
    energies_e = model.info.energy_grid.energies
    scalars, _, _ = inference.electrons_from_ldos(ldos_pe, dgrid, energies_e, n_electrons,
                                                  model.info.temperature_K,
                                                  local_dos_e=dos_e)
    return (ldos_pe.reshape(*dgrid.local_shape, -1), energies_e, scalars.fermi_energy_eV,
            dgrid)
