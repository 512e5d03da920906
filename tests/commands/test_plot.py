"""mlscale plot: PNGs of a DOS (E_F marked) and of density slices, written and non-empty."""
from __future__ import annotations

import numpy as np
import pytest
from ase.build import bulk
from ase.io.cube import write_cube

from mlscale.cli import main


def _check_png(path):
    import matplotlib.image

    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    assert len(data) > 5000
    image = matplotlib.image.imread(str(path))
    assert image.std() > 0.01, "uniform image"
    return image


def test_dos_plot_marks_fermi_level(tmp_path):
    energies = np.linspace(-5, 5, 101)
    lines = ["energy_eV,dos_per_eV", "# fermi_energy_eV=1.5"]
    lines += [f"{e},{np.exp(-e * e / 4)}" for e in energies]
    (tmp_path / "dos.csv").write_text("\n".join(lines) + "\n")
    out = tmp_path / "dos.png"
    assert main(["plot", "dos", str(tmp_path), "-o", str(out)]) == 0
    image = _check_png(out)
    red = (image[..., 0] > 0.7) & (image[..., 1] < 0.3) & (image[..., 2] < 0.3)
    assert red.sum() > 50, "no E_F line (C3, red) drawn"


@pytest.mark.parametrize("plane", ["xy", "xz", "yz"])
def test_density_slice_from_cube_and_npy(tmp_path, plane):
    atoms = bulk("Al", "fcc", a=4.05, cubic=True)
    x, y, z = np.meshgrid(*(np.arange(n) / n for n in (8, 10, 12)), indexing="ij")
    field = 1 + np.cos(2 * np.pi * x) * np.sin(2 * np.pi * y) + z
    with open(tmp_path / "density.cube", "w") as f:
        write_cube(f, atoms, data=field)
    np.save(tmp_path / "field.npy", field)
    for source in (tmp_path, tmp_path / "field.npy"):
        out = tmp_path / f"{plane}.png"
        assert main(["plot", "density", str(source), "--plane", plane,
                     "--fraction", "0.25", "-o", str(out)]) == 0
        _check_png(out)


def test_slice_index_out_of_range(tmp_path, capsys):
    np.save(tmp_path / "field.npy", np.ones((4, 4, 4)))
    status = main(["plot", "density", str(tmp_path / "field.npy"), "--index", "9",
                   "-o", str(tmp_path / "x.png")])
    assert status == 1
    assert "--index 9: the grid has 4 planes" in capsys.readouterr().err
