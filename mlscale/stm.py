"""Tersoff–Hamann STM: the bias-window field and its constant-height / constant-current images.

The field (Tersoff & Hamann, PRB 31, 805 (1985)) at a point r for a sample bias V is the
local density of the states between E_F and E_F + eV (V > 0: empty states probed;
V < 0: filled states, E_F + eV .. E_F). Two routes, both distributed over the grid
(:class:`mlscale.grid.DistributedGrid`: each rank computes the points of its block):

- from pw.x's states (:func:`stm_field_from_wavefunctions`), exactly as QE 6.7's pp.x
  ``plot_num = 5`` (``PP/src/stm.f90``): a state of energy ε at k gets the weight
  w_k inside the window (down, up), w_k·δ̃((down − ε)/σ) below it and w_k·δ̃((up − ε)/σ)
  above it, δ̃ = QE's ``w0gauss`` for the run's smearing and σ its ``degauss``; only the
  states with down − 3σ ≤ ε < up + 3σ are summed (pp.x's first_band..last_band). Note
  that δ̃(0) < 1: pp.x's window drops at its edges (to 1/√π for Gaussian smearing);
  this is its definition and it is reproduced, not corrected;
- from an LDOS on an energy grid (DFT LDOS files or a prediction,
  :func:`stm_field_from_ldos`): ∫ g(ε) LDOS(r, ε) dε with g the sharp window or pp.x's
  window g(ε) above (the weight pp.x gives a state at ε); with pp.x's window and an LDOS
  broadening much smaller than degauss this tends to pp.x's field.

Units: energies and bias in eV (pp.x's ``sample_bias`` is in Ry: V = sample_bias·13.6057);
the field in 1/Å³ (states per volume, spin included: pw.x's k-weights sum to 2); pp.x writes
1/bohr³. Heights in Å along z; the slab must lie in the xy plane (cell vectors a and b with
zero z component), as pp.x requires. Images are [nx, ny] on the grid's x and y points.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
from mpi4py import MPI

from .datagen.qe_xml import attribute, child
from .datagen.wavefunctions import (
    check_norm_conserving,
    read_band_structure,
    read_wavefunctions,
    state_densities,
)
from .errors import MlscaleError
from .grid import DistributedGrid
from .units import HARTREE_EV

SMEARINGS = {"gaussian": 0, "mp": 1, "mv": -1, "fd": -99}  # QE XML name -> QE's ngauss


def w0gauss(x: np.ndarray, ngauss: int) -> np.ndarray:
    """QE's smeared delta function δ̃(x) (dimensionless, ∫ δ̃ dx = 1) for ``ngauss``:
    0 Gaussian, n > 0 Methfessel–Paxton of order n, −1 Marzari–Vanderbilt, −99 Fermi–Dirac."""
    x = np.asarray(x, dtype=float)
    if ngauss == -99:
        t = np.exp(-np.minimum(np.abs(x), 200.0))
        return np.where(np.abs(x) <= 36.0, t / (1.0 + t) ** 2, 0.0)
    if ngauss == -1:
        arg = np.minimum(200.0, (x - 1.0 / np.sqrt(2.0)) ** 2)
        return np.exp(-arg) / np.sqrt(np.pi) * (2.0 - np.sqrt(2.0) * x)
    if ngauss < 0:
        raise MlscaleError(f"unknown smearing ngauss = {ngauss}")
    hermite_prev, hermite = np.zeros_like(x), np.exp(-np.minimum(200.0, x * x))
    coefficient, order = 1.0 / np.sqrt(np.pi), 0
    delta = coefficient * hermite
    for i in range(1, ngauss + 1):  # Methfessel–Paxton: Hermite polynomials H_2i
        hermite_prev = 2.0 * x * hermite - 2.0 * order * hermite_prev
        order += 1
        coefficient = -coefficient / (4.0 * i)
        hermite = 2.0 * x * hermite_prev - 2.0 * order * hermite
        order += 1
        delta = delta + coefficient * hermite
    return delta


def bias_window(fermi: float, bias: float) -> tuple[float, float]:
    """(down, up) in eV: (E_F, E_F + eV) for V > 0, (E_F + eV, E_F) for V < 0."""
    if not np.isfinite(bias) or bias == 0:
        raise MlscaleError(f"the sample bias must be a finite, non-zero voltage, got {bias}")
    return (fermi, fermi + bias) if bias > 0 else (fermi + bias, fermi)


def state_weights(eigenvalues_kn, weights_k, fermi: float, bias: float, degauss: float,
                  ngauss: int) -> np.ndarray:
    """pp.x's STM weight of each state [k, band] (k-weights summing to 2 → sum ≤ 2 per
    band): energies, degauss in eV; zero outside down − 3σ ≤ ε < up + 3σ."""
    if not degauss > 0:
        raise MlscaleError(f"degauss must be positive, got {degauss}")
    down, up = bias_window(fermi, bias)
    e_kn = np.asarray(eigenvalues_kn, dtype=float)
    w_k = np.asarray(weights_k, dtype=float)[:, None]
    below = w0gauss((down - e_kn) / degauss, ngauss)
    above = w0gauss((up - e_kn) / degauss, ngauss)
    weight_kn = np.where(e_kn < down, below, np.where(e_kn > up, above, 1.0)) * w_k
    used = (e_kn >= down - 3.0 * degauss) & (e_kn < up + 3.0 * degauss)
    return np.where(used, weight_kn, 0.0)


def read_smearing(xml_path) -> tuple[float, int]:
    """The run's (degauss in eV, QE ngauss) from pw.x's XML; MlscaleError for fixed
    occupations (pp.x then invents a gap-centred Fermi level, not supported here)."""
    try:
        bands = child(child(ET.parse(xml_path).getroot(), "output"), "band_structure")
        element = bands.find("smearing")
        if element is None:
            raise MlscaleError("no smearing (fixed occupations): STM needs a smeared run")
        degauss = float(attribute(bands, "smearing", "degauss")) * HARTREE_EV
        name = (element.text or "").strip().lower()
    except MlscaleError as error:
        raise MlscaleError(f"{xml_path}: {error}") from None
    except (OSError, ET.ParseError, ValueError) as error:
        raise MlscaleError(f"cannot read the smearing of {xml_path}: {error}") from None
    if name not in SMEARINGS:
        raise MlscaleError(f"{xml_path}: unknown smearing {name!r}")
    return degauss, SMEARINGS[name]


def stm_field_from_wavefunctions(save_dir, bias: float, dgrid: DistributedGrid,
                                 bands_per_batch: int = 32) -> np.ndarray:
    """pp.x's ``plot_num = 5`` field [bx, by, bz] of this rank's block, 1/Å³, from pw.x's
    ``<prefix>.save`` (norm-conserving, spin-unpolarised, nosym run); bias in V.

    Every rank transforms the states in the window to the whole FFT grid (as the one-pass
    LDOS) and keeps its block: memory ≈ bands_per_batch · grid points · 16 bytes."""
    save_dir = Path(save_dir)
    check_norm_conserving(save_dir)
    xml = save_dir / "data-file-schema.xml"
    bands = read_band_structure(xml)
    if bands.nsym > 1:
        raise MlscaleError(f"{save_dir}: pw.x used {bands.nsym} symmetries; pp.x symmetrises "
                           "the STM field, mlscale does not: run pw.x with nosym = .true.")
    if tuple(bands.fft_shape) != tuple(dgrid.shape):
        raise MlscaleError(f"{save_dir}: FFT grid {bands.fft_shape}, the grid is {dgrid.shape}")
    degauss, ngauss = read_smearing(xml)
    weight_kn = state_weights(bands.eigenvalues_kn, bands.weights_k, bands.fermi_energy,
                              bias, degauss, ngauss)
    field_b = dgrid.zeros()
    for k, weight_n in enumerate(weight_kn):
        active_n = np.flatnonzero(weight_n != 0)
        if not len(active_n):
            continue
        wavefunctions = read_wavefunctions(save_dir / f"wfc{k + 1}.dat")
        for start in range(0, len(active_n), bands_per_batch):
            batch = active_n[start:start + bands_per_batch]
            density_n = state_densities(wavefunctions, batch, bands.fft_shape)
            block_nb = density_n.reshape(len(batch), *bands.fft_shape)[(slice(None),
                                                                          *dgrid.block.slices)]
            field_b += np.tensordot(weight_n[batch], block_nb, axes=1)
    return field_b / dgrid.voxel_volume  # Σ_r |ψ|² = 1 → 1/Å³


def qe_window(energies_e, fermi: float, bias: float, degauss: float,
              ngauss: int) -> np.ndarray:
    """pp.x's STM weight g(ε) of a state at energy ε (eV): 1 inside (down, up),
    δ̃((down − ε)/σ) below down − 3σ .. down, δ̃((up − ε)/σ) above up .. up + 3σ, else 0."""
    return state_weights(np.asarray(energies_e, dtype=float)[None, :], [1.0], fermi, bias,
                         degauss, ngauss)[0]


def window_weights(energies_e, fermi: float, bias: float,
                   smearing: tuple[float, int] | None = None) -> np.ndarray:
    """Quadrature weights (eV) of ∫ g(ε) L(ε) dε for L piecewise linear on the increasing
    energy grid ``energies_e`` (eV): g = 1 on the bias window (``smearing`` None) or pp.x's
    window :func:`qe_window` for ``smearing = (degauss eV, ngauss)``. Gauss–Legendre
    (8 points) on each piece between grid points and g's breaks; MlscaleError if the
    window leaves the grid."""
    e = np.asarray(energies_e, dtype=float)
    down, up = bias_window(fermi, bias)
    reach = 0.0 if smearing is None else 3.0 * smearing[0]
    lo, hi = down - reach, up + reach
    if e.ndim != 1 or len(e) < 2 or np.any(np.diff(e) <= 0):
        raise MlscaleError("the LDOS energies must be an increasing grid of ≥ 2 values")
    if lo < e[0] or hi > e[-1]:
        raise MlscaleError(f"the bias window [{lo:.4f}, {hi:.4f}] eV leaves the LDOS "
                           f"energy grid [{e[0]:.4f}, {e[-1]:.4f}] eV")
    nodes = np.unique(np.concatenate([e[(e > lo) & (e < hi)], [lo, down, up, hi]]))
    x_q, w_q = np.polynomial.legendre.leggauss(8)
    a, b = nodes[:-1, None], nodes[1:, None]
    x = (0.5 * (a + b) + 0.5 * (b - a) * x_q).ravel()
    w = (0.5 * (b - a) * w_q).ravel()
    g = (np.where((x > down) & (x < up), 1.0, 0.0) if smearing is None
         else qe_window(x, fermi, bias, *smearing))
    i = np.clip(np.searchsorted(e, x, side="right") - 1, 0, len(e) - 2)
    t = (x - e[i]) / (e[i + 1] - e[i])
    weights = np.zeros(len(e))
    np.add.at(weights, i, w * g * (1.0 - t))
    np.add.at(weights, i + 1, w * g * t)
    return weights


def stm_field_from_ldos(ldos_be: np.ndarray, energies_e, fermi: float, bias: float,
                        smearing: tuple[float, int] | None = None) -> np.ndarray:
    """∫ g(ε) LDOS(r, ε) dε [bx, by, bz] in 1/Å³ from an LDOS block [bx, by, bz, energy]
    in 1/(eV·Å³) on ``energies_e`` (eV); bias in V, fermi in eV (the LDOS's energy zero);
    g: the sharp window, or pp.x's for ``smearing = (degauss eV, ngauss)``
    (:func:`window_weights`)."""
    weights_e = window_weights(energies_e, fermi, bias, smearing)
    if ldos_be.ndim != 4 or ldos_be.shape[3] != len(weights_e):
        raise MlscaleError(f"LDOS block of shape {ldos_be.shape} for {len(weights_e)} energies")
    return np.tensordot(np.asarray(ldos_be, dtype=float), weights_e, axes=([3], [0]))


def check_slab_cell(cell_cv: np.ndarray) -> float:
    """The height of the cell along z (Å); MlscaleError unless a, b lie in the xy plane."""
    cell_cv = np.asarray(cell_cv, dtype=float)
    if abs(cell_cv[0, 2]) > 1e-8 or abs(cell_cv[1, 2]) > 1e-8 or not cell_cv[2, 2] > 0:
        raise MlscaleError("STM images need the surface in the xy plane: cell vectors a and b "
                           "with zero z component and c pointing up (+z)")
    return float(cell_cv[2, 2])


def _owned_plane(field_b: np.ndarray, dgrid: DistributedGrid, k_xy: np.ndarray,
                 valid_xy: np.ndarray) -> np.ndarray:
    """The global [nx, ny] image f(x, y, k(x, y)) assembled from the ranks that own each
    point: each rank fills its own columns at its own planes; zero where not ``valid``."""
    start, stop = dgrid.block.start, dgrid.block.stop
    image = np.zeros(dgrid.shape[:2])
    k_b = np.mod(k_xy, dgrid.shape[2])[start[0]:stop[0], start[1]:stop[1]]
    mine = valid_xy[start[0]:stop[0], start[1]:stop[1]] & (k_b >= start[2]) & (k_b < stop[2])
    i, j = np.nonzero(mine)
    image[i + start[0], j + start[1]] = field_b[i, j, k_b[i, j] - start[2]]
    return dgrid.sum(image)


def constant_height_image(field_b: np.ndarray, dgrid: DistributedGrid,
                          height: float) -> np.ndarray:
    """The field [nx, ny] on the plane z = height (Å, absolute, periodic in c), linear
    between the two grid planes around it; only the ranks owning them contribute."""
    c = check_slab_cell(dgrid.cell_cv)
    nz = dgrid.shape[2]
    position = (height / c % 1.0) * nz
    k0 = int(np.floor(position))
    t = position - k0
    every = np.ones(dgrid.shape[:2], dtype=bool)
    lower = _owned_plane(field_b, dgrid, np.full(dgrid.shape[:2], k0), every)
    upper = _owned_plane(field_b, dgrid, np.full(dgrid.shape[:2], k0 + 1), every)
    return (1.0 - t) * lower + t * upper


def constant_current_image(field_b: np.ndarray, dgrid: DistributedGrid, level: float,
                           z_top: float, max_height: float) -> np.ndarray:
    """Tip height map [nx, ny] (Å above ``z_top``, the topmost atom) where the field first
    reaches ``level`` (1/Å³) coming down from ``z_top + max_height``; log-linear between
    grid planes (the field decays exponentially into the vacuum). NaN where the field stays
    below ``level`` down to ``z_top``; ``max_height`` where it is above it already there."""
    c = check_slab_cell(dgrid.cell_cv)
    nz = dgrid.shape[2]
    dz = c / nz
    k_first = int(np.floor(z_top / dz)) + 1  # the first plane above the topmost atom
    steps = int(np.floor(max_height / dz))
    if steps < 1 or max_height >= c:
        raise MlscaleError(f"max height {max_height} Å: needs at least one grid plane "
                           f"(spacing {dz:.3f} Å) and less than the cell height {c:.3f} Å")
    highest = _highest_at_level(field_b, dgrid, level, k_first, steps)
    found = highest >= 0
    if not np.any(found):
        raise MlscaleError(f"the STM field never reaches the current level {level:g} 1/Å³ "
                           f"above the topmost atom (choose a smaller level)")
    k_low = k_first + np.maximum(highest, 0)
    f_low = _owned_plane(field_b, dgrid, k_low, found)
    f_high = _owned_plane(field_b, dgrid, k_low + 1, found)
    z_low = k_low * dz - z_top
    with np.errstate(divide="ignore", invalid="ignore"):
        t = np.log(f_low / level) / np.log(f_low / f_high)
    t = np.where(np.isfinite(t), np.clip(t, 0.0, 1.0), 0.0)
    height = np.where(highest >= steps - 1, max_height, z_low + t * dz)
    return np.where(found, np.minimum(height, max_height), np.nan)


def _highest_at_level(field_b: np.ndarray, dgrid: DistributedGrid, level: float,
                      k_first: int, steps: int) -> np.ndarray:
    """Per column [nx, ny], the largest step s < steps with field(k_first + s) ≥ level
    (−1 if none): each rank looks at its own planes, a maximum over ranks joins them."""
    start, stop = dgrid.block.start, dgrid.block.stop
    nz = dgrid.shape[2]
    k_s = np.mod(k_first + np.arange(steps), nz)
    local = np.full(dgrid.shape[:2], -1, dtype=np.int64)
    mine = np.flatnonzero((k_s >= start[2]) & (k_s < stop[2]))
    if len(mine):
        above_bs = field_b[:, :, k_s[mine] - start[2]] >= level
        last = np.where(above_bs.any(axis=2),
                        mine[len(mine) - 1 - np.argmax(above_bs[:, :, ::-1], axis=2)], -1)
        local[start[0]:stop[0], start[1]:stop[1]] = last
    out = np.empty_like(local)
    dgrid.comm.mpi.Allreduce(local, out, op=MPI.MAX)
    return out
