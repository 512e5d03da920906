"""LDOS in one pass from pw.x's saved wavefunctions (QE 6.7, norm-conserving pseudopotentials).

pp.x (``plot_num = 3``) recomputes every Kohn–Sham state once per LDOS energy. Here each
state ψ_nk is read from ``<prefix>.save/wfc<k>.dat``, put on the FFT grid once, and its
|ψ_nk(r)|² is added into all LDOS energies at once with the same broadening as QE 6.7's
pp.x: w_k·δ_σ(ε − ε_nk), δ_σ(x·σ) = −f′(x)/σ (Fermi–Dirac derivative, σ = degauss_ldos),
cut to zero beyond |x| > 36 as QE's ``w0gauss`` does. The k-point weights of pw.x's XML
sum to 2 (spin included), as in pp.x. Ultrasoft/PAW pseudopotentials add augmentation
charges that this module does not have: it refuses them (use pp.x).

File format (``write_wfc`` of QE 6.7 without HDF5; Fortran unformatted, little-endian,
4-byte record markers): record 1 ``ik (i4), xk(3) (f8), ispin (i4), gamma_only (l4),
scalef (f8)``; record 2 ``ngw, igwx, npol, nbnd (i4)``; record 3 the reciprocal vectors
b1 b2 b3 (3×3 f8); record 4 the Miller indices ``[igwx, 3]`` (i4); then one record of
``npol·igwx`` complex128 coefficients per band.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import scipy.fft
from scipy.io import FortranFile

from ..errors import MlscaleError
from ..units import BOHR_ANGSTROM, HARTREE_EV
from .qe_xml import attribute, child, text

_WEIGHT_CUTOFF = 36.0  # QE's w0gauss (Fermi-Dirac) is zero beyond |x| > 36
_AUGMENTED = re.compile(r"<PP_AUGMENTATION|<PP_QIJ|is_ultrasoft=\"\s*t|is_paw=\"\s*t"
                        r"|pseudo_type=\"\s*(US|USPP|PAW)\b", re.IGNORECASE)


@dataclass(frozen=True)
class Wavefunctions:
    """The plane-wave coefficients of one k-point (one ``wfc<k>.dat``).

    k_index: QE's k-point number (from 1); xk_v: k in Cartesian 2π/alat units; spin: QE's
    ispin; gamma_only: only half of the G-vectors stored (ψ(−G) = ψ(G)*); scale: QE's
    scalef; bvectors_cv: reciprocal vectors b1, b2, b3 (rows, as written);
    miller_qc: integer Miller indices [G-vector, 3]; coefficients_nq: complex [band, G].
    """

    k_index: int
    xk_v: np.ndarray
    spin: int
    gamma_only: bool
    scale: float
    bvectors_cv: np.ndarray
    miller_qc: np.ndarray
    coefficients_nq: np.ndarray


@dataclass(frozen=True)
class BandStructure:
    """What the one-pass LDOS needs from pw.x's ``data-file-schema.xml``.

    eigenvalues_kn: eV (QE's energy zero); weights_k: sum 2 for a spin-unpolarised run;
    fermi_energy: eV; fft_shape: the dense FFT grid (nr1, nr2, nr3); volume: cell volume
    in Å³; nsym: crystal symmetries pw.x used.
    """

    eigenvalues_kn: np.ndarray
    weights_k: np.ndarray
    fermi_energy: float
    fft_shape: tuple[int, int, int]
    volume: float
    nsym: int


def read_wavefunctions(path) -> Wavefunctions:
    """Read one pw.x ``wfc<k>.dat`` (format in the module docstring); MlscaleError if bad."""
    try:
        with FortranFile(path, "r", header_dtype="<u4") as f:
            k_index, xk_v, spin, gamma, scale = f.read_record("<i4", ("<f8", 3), "<i4",
                                                              "<i4", "<f8")
            _ngw, igwx, npol, nbnd = (int(n) for n in f.read_record("<i4"))
            bvectors_cv = f.read_record("<f8").reshape(3, 3)
            miller_qc = f.read_record("<i4").reshape(igwx, 3)
            if npol != 1:
                raise MlscaleError(f"{path}: {npol} spinor components (noncollinear run); "
                                   "the one-pass LDOS supports collinear runs only, use pp.x")
            coefficients_nq = np.stack([f.read_record("<c16") for _ in range(nbnd)])
    except MlscaleError:
        raise
    except (OSError, ValueError, TypeError) as error:
        raise MlscaleError(f"cannot read pw.x wavefunctions {path}: {error}") from None
    if coefficients_nq.shape != (nbnd, igwx):
        raise MlscaleError(f"{path}: band records hold {coefficients_nq.shape[1]} "
                           f"coefficients, the header says {igwx}")
    return Wavefunctions(int(k_index[0]), np.asarray(xk_v).reshape(3), int(spin[0]),
                         bool(gamma[0]), float(scale[0]), bvectors_cv, miller_qc,
                         coefficients_nq)


def read_band_structure(xml_path) -> BandStructure:
    """Eigenvalues, k-weights, Fermi level, FFT grid, volume from pw.x's XML data file."""
    try:
        out = child(ET.parse(xml_path).getroot(), "output")
        bands = child(out, "band_structure")
        if _flag(bands, "lsda") or _flag(bands, "noncolin"):
            raise MlscaleError(f"{xml_path}: spin-polarised or noncollinear run; the one-pass "
                               "LDOS supports spin-unpolarised runs only, use pp.x")
        ks = list(bands.iter("ks_energies"))
        eigenvalues_kn = np.array([text(k, "eigenvalues").split() for k in ks], dtype=float)
        weights_k = np.array([float(attribute(k, "k_point", "weight")) for k in ks])
        nr1, nr2, nr3 = (int(attribute(out, "basis_set/fft_grid", n))
                         for n in ("nr1", "nr2", "nr3"))
        cell_cv = np.array([text(out, f"atomic_structure/cell/{a}").split()
                            for a in ("a1", "a2", "a3")], dtype=float) * BOHR_ANGSTROM
        nsym = int(text(out, "symmetries/nsym"))
        fermi = float(text(bands, "fermi_energy")) * HARTREE_EV
    except MlscaleError as error:
        raise MlscaleError(f"{xml_path}: {error}") from None
    except (OSError, ET.ParseError, ValueError) as error:
        raise MlscaleError(f"cannot read the band structure from {xml_path}: {error}") from None
    return BandStructure(eigenvalues_kn * HARTREE_EV, weights_k, fermi, (nr1, nr2, nr3),
                         float(abs(np.linalg.det(cell_cv))), nsym)


def is_norm_conserving(upf_path) -> bool:
    """Whether a UPF (v1 or v2) pseudopotential has no augmentation charges (not US/PAW)."""
    text = Path(upf_path).read_text(errors="replace")
    return not (_AUGMENTED.search(text) or _upf1_type(text) in ("US", "PAW"))


def check_norm_conserving(save_dir):
    """MlscaleError unless every pseudopotential of the run (the XML's ``pseudo_file``,
    copied into pw.x's save directory) is norm-conserving."""
    save_dir = Path(save_dir)
    try:
        output = child(ET.parse(save_dir / "data-file-schema.xml").getroot(), "output")
        names = [(e.text or "").strip() for e in output.iter("pseudo_file")]
    except (OSError, ET.ParseError, MlscaleError) as error:
        raise MlscaleError(f"cannot read the pseudopotentials of {save_dir}: {error}") from None
    for name in names:
        if not (save_dir / name).is_file():
            raise MlscaleError(f"pseudopotential {name} is not in {save_dir}")
        if not is_norm_conserving(save_dir / name):
            raise MlscaleError(f"{name} is ultrasoft/PAW (augmentation charges): the "
                               "one-pass LDOS from wavefunctions is exact only for "
                               "norm-conserving pseudopotentials; use --ldos-tool pp.x")


def fermi_dirac_delta(x: np.ndarray) -> np.ndarray:
    """−f′(x) = 1/(2 + eˣ + e⁻ˣ) (dimensionless), zero beyond |x| > 36 as QE's w0gauss."""
    t = np.exp(-np.abs(x))
    return np.where(np.abs(x) <= _WEIGHT_CUTOFF, t / (1.0 + t) ** 2, 0.0)


def state_densities(wavefunctions: Wavefunctions, bands, shape) -> np.ndarray:
    """|ψ_n(r)|² on the FFT grid [band, nx·ny·nz], normalised so that Σ_r |ψ|² = 1.

    Grid point (i, j, k) lies at fractional position (i/nx, j/ny, k/nz);
    ψ(r) = Σ_G c_G e^{iG·r} (the Bloch phase e^{ik·r} drops out of |ψ|²).
    """
    miller_qc = wavefunctions.miller_qc
    coefficients_nq = wavefunctions.coefficients_nq[bands]
    grid_nb = np.zeros((len(coefficients_nq), *shape), dtype=np.complex128)
    index = tuple(np.mod(miller_qc[:, c], shape[c]) for c in range(3))
    grid_nb[(slice(None), *index)] = coefficients_nq
    if wavefunctions.gamma_only:  # ψ(−G) = ψ(G)*; G = 0 is stored once
        minus = tuple(np.mod(-miller_qc[:, c], shape[c]) for c in range(3))
        grid_nb[(slice(None), *minus)] = np.conj(coefficients_nq)
    psi_nb = scipy.fft.ifftn(grid_nb, axes=(1, 2, 3), overwrite_x=True)
    density_np = (psi_nb.real ** 2 + psi_nb.imag ** 2).reshape(len(coefficients_nq), -1)
    return density_np / density_np.sum(axis=1, keepdims=True)


def ldos_from_wavefunctions(save_dir, energies_e, broadening: float,
                            bands_per_batch: int = 32) -> np.ndarray:
    """LDOS [nx, ny, nz, energy] in 1/(eV·Å³) from pw.x's ``<prefix>.save`` directory.

    energies_e: LDOS energies in eV (QE's energy zero); broadening: σ = degauss_ldos in eV.
    LDOS(r, ε) = Σ_k w_k Σ_n |ψ_nk(r)|² −f′((ε − ε_nk)/σ)/σ, the states within the
    broadening's reach only, accumulated ``bands_per_batch`` states at a time (one matrix
    product [point, state]·[state, energy] per batch; memory ≈ points·(energies +
    3·bands_per_batch)·8 bytes). MlscaleError for ultrasoft/PAW, spin-polarised or
    symmetry-reduced (nsym > 1) runs.
    """
    save_dir = Path(save_dir)
    check_norm_conserving(save_dir)
    bands = read_band_structure(save_dir / "data-file-schema.xml")
    if bands.nsym > 1:
        raise MlscaleError(f"{save_dir}: pw.x used {bands.nsym} symmetries, the one-pass LDOS "
                           "does not symmetrise: run pw.x with nosym or use pp.x")
    energies_e = np.asarray(energies_e, dtype=float)
    voxel = bands.volume / np.prod(bands.fft_shape)
    ldos_pe = np.zeros((int(np.prod(bands.fft_shape)), len(energies_e)))
    for k, (weight, eigenvalues_n) in enumerate(zip(bands.weights_k, bands.eigenvalues_kn)):
        delta_ne = fermi_dirac_delta((energies_e - eigenvalues_n[:, None]) / broadening)
        active_n = np.flatnonzero(delta_ne.max(axis=1) > 0)
        if not len(active_n):
            continue
        wavefunctions = read_wavefunctions(save_dir / f"wfc{k + 1}.dat")
        if len(wavefunctions.coefficients_nq) != len(eigenvalues_n):
            raise MlscaleError(f"wfc{k + 1}.dat holds {len(wavefunctions.coefficients_nq)} "
                               f"bands, the XML {len(eigenvalues_n)}")
        weight_ne = delta_ne * (weight / broadening)  # 1/eV
        for start in range(0, len(active_n), bands_per_batch):
            batch = active_n[start:start + bands_per_batch]
            density_np = state_densities(wavefunctions, batch, bands.fft_shape)
            ldos_pe += density_np.T @ weight_ne[batch]
    ldos_pe /= voxel  # Σ_r |ψ|² = 1 → Σ_r |ψ|² ΔV = 1 with |ψ|² in 1/Å³
    return ldos_pe.reshape(*bands.fft_shape, len(energies_e))


def _flag(element: ET.Element, tag: str) -> bool:
    """A Fortran logical child element of the XML (absent: false)."""
    found = element.find(tag)
    return found is not None and (found.text or "").strip().lower() in ("true", ".true.", "t")


def _upf1_type(text: str) -> str | None:
    """The pseudopotential type (NC, US, PAW) of a UPF v1 file's <PP_HEADER> block."""
    match = re.search(r"<PP_HEADER>\s*\n(.*?)</PP_HEADER>", text, re.DOTALL)
    if match is None:
        return None
    lines = match.group(1).splitlines()
    return lines[2].split()[0].upper() if len(lines) > 2 and lines[2].split() else None
