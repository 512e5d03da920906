"""Plot a prediction as PNG: the DOS with the Fermi level marked, or a density slice.

``mlscale plot dos DIR_OR_CSV -o dos.png`` reads ``dos.csv`` (E_F from its
``# fermi_energy_eV=`` line, else from results.json beside it, else --fermi-energy).
``mlscale plot density DIR_OR_FILE --plane xy --index K -o slice.png`` draws the lattice
plane K (grid index along the third axis; or --fraction F) of the density from
density.h5 / density.cube / .npy (any supported grid file; a 4-D LDOS file needs --energy-index).
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from ..errors import MlscaleError

PLANES = {"xy": 2, "xz": 1, "yz": 0}  # plane -> the axis held fixed


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("kind", choices=("dos", "density"), help="what to plot")
    parser.add_argument("source", help="prediction directory or a dos.csv / grid file")
    parser.add_argument("--output", "-o", default="plot.png", help="PNG file to write")
    parser.add_argument("--fermi-energy", type=float, metavar="EV",
                        help="E_F (eV) when the source does not record it")
    parser.add_argument("--plane", choices=sorted(PLANES), default="xy",
                        help="lattice plane of the density slice")
    parser.add_argument("--index", type=int, help="grid index of the slice along the "
                        "fixed axis (default: the middle plane)")
    parser.add_argument("--fraction", type=float,
                        help="fractional position of the slice instead of --index")
    parser.add_argument("--energy-index", type=int,
                        help="for a 4-D LDOS file: the energy index to slice")


def read_dos(source: Path, fermi_energy: float | None) -> tuple[np.ndarray, float | None]:
    """``([energies (eV), DOS (1/eV)] rows, E_F or None)`` from dos.csv or its directory."""
    path = source / "dos.csv" if source.is_dir() else source
    if not path.is_file():
        raise MlscaleError(f"{path}: no such DOS file")
    for line in path.read_text().splitlines():
        if line.startswith("# fermi_energy_eV=") and fermi_energy is None:
            fermi_energy = float(line.split("=", 1)[1])
    results = path.parent / "results.json"
    if fermi_energy is None and results.is_file():
        import json
        fermi_energy = json.loads(results.read_text()).get("fermi_energy_eV")
    try:
        table = np.loadtxt(path, delimiter=",", skiprows=1, ndmin=2)
    except ValueError as error:
        raise MlscaleError(f"{path}: not an energy,DOS table ({error})") from None
    return table, fermi_energy


def plot_dos(source: Path, output: Path, fermi_energy: float | None) -> None:
    table, fermi = read_dos(source, fermi_energy)
    fig, ax = _figure()
    ax.plot(table[:, 0], table[:, 1], color="C0")
    if fermi is not None:
        ax.axvline(fermi, color="C3", linestyle="--", label=f"E_F = {fermi:.3f} eV")
        ax.legend()
    ax.set_xlabel("energy (eV)")
    ax.set_ylabel("DOS (states/eV)")
    _save(fig, output)


def read_field(source: Path) -> np.ndarray:
    """The whole grid field of a directory's density file or of any supported grid file."""
    from ..grid import Block
    from ..io.grid_arrays import grid_array_shape, read_grid_block
    if source.is_dir():
        found = [source / n for n in ("density.h5", "density.cube", "density.npy")
                 if (source / n).is_file()]
        if not found:
            raise MlscaleError(f"{source}: no density.h5, density.cube or density.npy")
        source = found[0]
    shape = grid_array_shape(source, "Density")
    return read_grid_block(source, Block((0, 0, 0), (shape[0], shape[1], shape[2])), "Density")


def density_slice(field: np.ndarray, plane: str, index: int | None,
                  fraction: float | None) -> tuple[np.ndarray, int]:
    axis = PLANES[plane]
    n = field.shape[axis]
    if fraction is not None:
        index = int(round(fraction * n)) % n
    index = n // 2 if index is None else index
    if not 0 <= index < n:
        raise MlscaleError(f"--index {index}: the grid has {n} planes along that axis")
    return np.take(field, index, axis=axis), index


def plot_density(args: argparse.Namespace) -> None:
    field = read_field(Path(args.source))
    if field.ndim == 4:
        if args.energy_index is None:
            raise MlscaleError(f"{args.source} is 4-D (an LDOS): give --energy-index")
        field = field[..., args.energy_index]
    cut, index = density_slice(field, args.plane, args.index, args.fraction)
    fig, ax = _figure()
    image = ax.imshow(cut.T, origin="lower", cmap="viridis", aspect="equal")
    fig.colorbar(image, ax=ax, label="value (file units)")
    ax.set_xlabel(f"grid index along {args.plane[0]}")
    ax.set_ylabel(f"grid index along {args.plane[1]}")
    ax.set_title(f"{args.plane} plane {index}")
    _save(fig, Path(args.output))


def _figure():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt.subplots(figsize=(6, 4.5), dpi=100)


def _save(fig, output: Path) -> None:
    import matplotlib.pyplot as plt

    from ..io.atomic import atomic_path
    with atomic_path(output) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)


def run(args: argparse.Namespace, comm) -> int:
    if comm.rank == 0:
        if args.kind == "dos":
            plot_dos(Path(args.source), Path(args.output), args.fermi_energy)
        else:
            plot_density(args)
        print(f"wrote {args.output}")
    return 0
