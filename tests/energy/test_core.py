"""The core-charge form factor and its table against Simpson transforms of MALA's Be UPF."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.integrate import simpson

from mlscale.energy import DistributedFFT, read_upf
from mlscale.energy.core import core_form_factor
from mlscale.grid import DistributedGrid, Grid
from mlscale.io import read_structure
from mlscale.parallel import self_comm
from mlscale.units import BOHR_ANGSTROM


def test_core_charge_integrates_to_the_radial_charge(be2):
    """n_core(G=0) Ω per atom equals 4π∫r²ρ_c dr on the full radial mesh (to its 10 Bohr cut)."""
    pp = read_upf(be2 / "Be.pbe-n-rrkjus_psl.1.0.0.UPF")
    total = simpson(4 * np.pi * pp.r_r**2 * pp.core_r, x=pp.r_r)
    assert core_form_factor(pp, np.array([0.0]))[0] == pytest.approx(total, rel=1e-6)


def test_core_form_factor_table_matches_direct_transform(be2):
    """The spline table used on the grid reproduces the Simpson transform at any |G|."""
    from mlscale.energy.core import core_density_q

    pp = read_upf(be2 / "Be.pbe-n-rrkjus_psl.1.0.0.UPF")
    atoms = read_structure(be2 / "recreate_data" / "Be.pw.scf.in")
    fft = DistributedFFT(DistributedGrid(Grid(atoms.cell.array / BOHR_ANGSTROM, (18, 18, 27)), self_comm()))
    frac = atoms.get_scaled_positions()
    n_q = core_density_q(fft, {"Be": pp}, ["Be", "Be"], frac, 160.0)
    inside = fft.g2_q <= 160.0
    g_vq = np.stack([fft.g_q(v) for v in range(3)])
    phase = sum(np.exp(-1j * np.einsum("v...,v->...", g_vq, f @ atoms.cell.array / BOHR_ANGSTROM))
                for f in frac)
    direct = core_form_factor(pp, np.sqrt(fft.g2_q[inside])) * phase[inside] / fft.grid.volume
    assert np.allclose(n_q[inside], direct, rtol=0, atol=1e-14)
    assert not np.any(n_q[~inside])
