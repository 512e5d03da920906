"""Quantum ESPRESSO pw.x output → MALA's ``.info.json`` dictionary.

Energies in eV (QE prints Ry), temperature in K, lengths in Å. The band energy
follows MALA's definition: Σ_k w_k Σ_n f(ε_nk) ε_nk with QE's printed k-point
weights (summing to 2, spin included), eigenvalues and Fermi level, and the
Fermi–Dirac f at T = degauss·Ry/k_B.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
from ase import Atoms
from ase.data import atomic_numbers
from scipy.special import expit

from ..errors import MlscaleError
from ..units import BOHR_ANGSTROM, KB_EV_PER_K, RYDBERG_EV

_FLOAT = r"([-+]?\d*\.\d+(?:[Ee][-+]?\d+)?)"
_NUMBER = r"([-+]?\d*\.?\d+(?:[Ee][-+]?\d+)?)"
_ENERGY_TERMS = {  # info.json key: QE label (values in Ry)
    "total_energy_dft_calculation": r"^!\s+total energy",
    "entropy_contribution_dft_calculation": r"smearing contrib\. \(-TS\)",
    "one_electron_contribution": r"one-electron contribution",
    "hartree_contribution": r"hartree contribution",
    "xc_contribution": r"xc contribution",
    "ewald_contribution": r"ewald contribution",
}
_CONVERGENCE = r"convergence (has been achieved in|NOT achieved after)\s+(\d+)\s+iterations"


def _fermi_dirac(energy_ev, fermi_ev: float, temperature_k: float):
    """Fermi–Dirac occupation f(ε) = 1 / (1 + exp((ε − μ)/k_B T)), energies in eV."""
    return expit(-(np.asarray(energy_ev) - fermi_ev) / (KB_EV_PER_K * temperature_k))


def _last(pattern: str, text: str, path, what: str, required: bool = True):
    """Last match of ``pattern`` (its groups), or None / MlscaleError when absent."""
    matches = re.findall(pattern, text, flags=re.MULTILINE)
    if matches:
        return matches[-1]
    if required:
        raise MlscaleError(f"{path}: no {what} found (truncated or unsupported pw.x output)")
    return None


def _eigenvalues(section: str, n_bands: int, path) -> np.ndarray | None:
    """Eigenvalues ``[k, band]`` (eV) printed after 'End of self-consistent calculation'."""
    bands: list[list[float]] = []
    skipping = False
    for line in section.splitlines():
        if re.match(r"\s*k =.*bands \(ev\)", line):
            bands.append([])
            skipping = False
        elif "occupation numbers" in line:
            skipping = True
        elif bands and not skipping:
            bands[-1].extend(float(x) for x in re.findall(r"-?\d+\.\d{4}", line))
    if not bands:
        return None
    if any(len(b) != n_bands for b in bands):
        raise MlscaleError(f"{path}: corrupt eigenvalue listing (expected {n_bands} per k-point)")
    return np.array(bands)


def _element(label: str, path) -> int:
    """Atomic number of a QE species label such as 'Be', 'Fe1', 'O_up'."""
    letters = re.match(r"[A-Za-z]{1,2}", label)
    for symbol in (letters[0].capitalize(), letters[0][:1].upper()) if letters else ():
        if atomic_numbers.get(symbol, 0) > 0:  # 'X' (0) is ASE's dummy atom
            return atomic_numbers[symbol]
    raise MlscaleError(f"{path}: cannot tell the element of species {label!r}")


def _vectors(text: str, pattern: str, count: int, path, what: str) -> list:
    """The first ``count`` matches of ``pattern``, each with the 3 numbers in its (...)."""
    rows = []
    for match in re.finditer(pattern, text, flags=re.MULTILINE):
        numbers = re.findall(r"-?\d+\.\d+", match["vector"])
        if len(numbers) != 3:
            raise MlscaleError(f"{path}: corrupt {what}")
        rows.append((match.groupdict().get("label"), [float(x) for x in numbers]))
        if len(rows) == count:
            return rows
    raise MlscaleError(f"{path}: {what} incomplete (truncated output?)")


def _structure(text: str, path, n_atoms: int) -> tuple[Atoms, np.ndarray | None]:
    """Atoms (Å) from the header of an SCF output, and forces (eV/Å) if printed."""
    alat = float(_last(r"celldm\(1\)=\s*" + _FLOAT, text, path, "celldm(1)")) * BOHR_ANGSTROM
    axes = _vectors(text, r"a\(\d\) = \((?P<vector>[^)]*)\)", 3, path, "crystal axes")
    start = text.find("positions (alat units)")
    if start < 0:
        raise MlscaleError(f"{path}: no atomic positions found")
    site = r"^\s*\d+\s+(?P<label>\S+)\s+tau\(\s*\d+\) = \((?P<vector>[^)]*)\)"
    sites = _vectors(text[start:], site, n_atoms, path, "atomic positions")
    atoms = Atoms(numbers=[_element(label, path) for label, _ in sites],
                  positions=np.array([v for _, v in sites]) * alat,
                  cell=np.array([v for _, v in axes]) * alat, pbc=True)
    start = text.rfind("Forces acting on atoms")
    forces = None
    if start >= 0:
        rows = _vectors(text[start:], r"atom\s+\d+ type\s+\d+\s+force =(?P<vector>.*)$",
                        n_atoms, path, "forces")
        forces = np.array([v for _, v in rows]) * (RYDBERG_EV / BOHR_ANGSTROM)
    return atoms, forces


def parse_pw_output(path, allow_unconverged: bool = False) -> dict:
    """Parse a pw.x SCF output (Fermi–Dirac smearing) into MALA's info.json keys.

    Returns fermi_energy_dft, temperature (K), number_of_electrons_exact,
    band_energy_dft_calculation, the energy terms (eV), grid_dimensions (dense
    FFT grid), ecutwfc, ecutrho, degauss (Ry), pseudopotentials, atoms, voxel (Å),
    atomic_forces_dft (eV/Å, when printed), converged and scf_iterations.
    An SCF that did not converge raises MlscaleError unless ``allow_unconverged``
    (then values QE did not print are None). SCF runs only (no relax/MD).
    """
    path = Path(path)
    text = _read_scf_text(path)
    info: dict = {}
    smearing = _last(r"number of k points=\s*(\d+)\s+(.*?)smearing, width \(Ry\)=\s*" + _FLOAT,
                     text, path, "smearing line ('... smearing, width (Ry)=')")
    if smearing[1].strip() != "Fermi-Dirac":
        raise MlscaleError(f"{path}: {smearing[1].strip()} smearing; mlscale needs Fermi-Dirac")
    n_kpoints, degauss = int(smearing[0]), float(smearing[2])

    converged = _last(_CONVERGENCE, text, path, "'convergence ...' line (SCF unfinished)")
    if converged[0].startswith("NOT") and not allow_unconverged:
        raise MlscaleError(f"{path}: SCF convergence NOT achieved after {converged[1]} iterations")
    converged_ok = not converged[0].startswith("NOT")
    end = text.rfind("End of self-consistent calculation")
    final = text[end:] if end >= 0 else ""

    fermi = _last(r"the Fermi energy is\s+" + _FLOAT + r"\s*ev", final, path,
                  "'the Fermi energy is' line", required=converged_ok)
    info["fermi_energy_dft"] = float(fermi) if fermi is not None else None
    info["temperature"] = degauss * RYDBERG_EV / KB_EV_PER_K
    info["number_of_electrons_exact"] = _number(text, path, r"number of electrons\s*",
                                                "number of electrons")
    n_atoms = _number(text, path, r"number of atoms/cell\s*", "number of atoms", int)
    atoms, forces = _structure(text, path, n_atoms)
    info["band_energy_dft_calculation"], electrons = _band_energy(text, final, path, n_kpoints,
                                                                  info)
    for key, label in _ENERGY_TERMS.items():
        value = _last(label + r"\s*=\s*" + _FLOAT + r"\s*Ry", final, path, f"'{label}' line",
                      required=converged_ok)
        info[key] = float(value) * RYDBERG_EV if value is not None else None
    info.update(_run_settings(text, path, atoms, info["number_of_electrons_exact"], degauss))
    info["number_of_electrons_from_eigenvals"] = electrons
    if forces is not None:
        info["atomic_forces_dft"] = np.asarray(forces).tolist()
    info["converged"] = converged_ok
    info["scf_iterations"] = int(converged[1])
    return info


def _read_scf_text(path: Path) -> str:
    """The text of a pw.x SCF output; MlscaleError for anything else."""
    if not path.is_file():
        raise MlscaleError(f"file not found: {path}")
    text = path.read_text(encoding="utf-8", errors="replace")
    if "Program PWSCF" not in text[:10000]:
        raise MlscaleError(f"{path} is not a Quantum ESPRESSO pw.x output")
    if "SPIN UP" in text:
        raise MlscaleError(f"{path}: spin-polarised pw.x output is not supported")
    if "Geometry Optimization" in text or "Molecular Dynamics Calculation" in text:
        raise MlscaleError(f"{path}: a relaxation/MD output; parse_pw_output reads SCF runs only")
    return text


def _number(text: str, path, label: str, what: str, convert=float):
    return convert(_last(label + r"\s*=\s*" + _NUMBER, text, path, what))


def _band_energy(text: str, final: str, path, n_kpoints: int, info: dict
                 ) -> tuple[float | None, float | None]:
    """Σ_k w_k Σ_n f_nk ε_nk (eV) and Σ w_k f_nk from the printed eigenvalues (None if
    they are not all printed)."""
    n_bands = _number(text, path, r"number of Kohn-Sham states", "number of Kohn-Sham states",
                      int)
    weights = re.findall(r"k\(\s*\d+\) = \(.*\), wk =\s*" + _FLOAT, text)[:n_kpoints]
    listing_end = final.find("the Fermi energy is")
    eigs = _eigenvalues(final[:listing_end] if listing_end >= 0 else final, n_bands, path)
    if eigs is None or not len(weights) == n_kpoints == len(eigs):
        return None, None
    if info["fermi_energy_dft"] is None:
        return None, None
    w_k = np.array(weights, dtype=float)[:, None]
    f_kn = _fermi_dirac(eigs, info["fermi_energy_dft"], info["temperature"])
    return float(np.sum(w_k * f_kn * eigs)), float(np.sum(w_k * f_kn))


def _run_settings(text: str, path, atoms: Atoms, electrons_exact: float, degauss: float
                  ) -> dict:
    """Grid, cutoffs, smearing, pseudopotentials, voxel and atoms of a pw.x run."""
    dims = _last(r"Dense\s+grid:.*FFT dimensions:\s*\(\s*(\d+),\s*(\d+),\s*(\d+)\)", text,
                 path, "'Dense grid ... FFT dimensions' line")
    grid_dimensions = [int(n) for n in dims]
    pseudo = re.findall(r"PseudoPot\. #\s*\d+ for\s+(\S+)\s+read from file:\s*\n\s*(\S+)", text)
    if not pseudo:
        raise MlscaleError(f"{path}: no pseudopotential lines found")
    voxel_cv = atoms.cell.array / np.array(grid_dimensions)[:, None]
    return {
        "grid_dimensions": grid_dimensions,
        "electrons_per_atom": electrons_exact / len(atoms),
        "ibrav": _number(text, path, r"bravais-lattice index\s*", "bravais-lattice index", int),
        "ecutwfc": _number(text, path, r"kinetic-energy cutoff\s*", "kinetic-energy cutoff"),
        "ecutrho": _number(text, path, r"charge density cutoff\s*", "charge density cutoff"),
        "degauss": degauss,
        "pseudopotentials": {species: Path(file).name for species, file in pseudo},
        "voxel": {"array": voxel_cv.tolist()},
        "atoms": {"numbers": atoms.numbers.tolist(), "positions": atoms.positions.tolist(),
                  "cell": atoms.cell.array.tolist(), "pbc": atoms.pbc.tolist()},
    }
