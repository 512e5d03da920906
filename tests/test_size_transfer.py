"""Size transfer of the shipped model: a thermal 108-atom Al cell, 3.4× the training cell,
predicted by the full pipeline and compared with DFT of that same cell.

References (all Quantum ESPRESSO 6.7, the data set's settings: LDA Al.pz-vbc.UPF, 20/80
Ry, Fermi–Dirac at 298 K; committed in data/dft108/):

- k333/: pw.x on the 108-atom cell (`bash jobs/dft_108.sh 3 3 3`), 3×3×3 shifted k (14
  k-points), 72³ grid: Fermi level, band energy Σ w f ε, total energy, −TS, the DOS from
  its eigenvalues (0.05 eV broadening, as the LDOS) and its density ρ(G)
  (charge-density.dat).
- k_offset_ideal.json: the ideal crystal at the two k-samplings (`python
  jobs/k_offset_ideal.py`; supercells fold onto the 4-atom cube exactly): what the
  108-atom 3×3×3 DFT differs from the training data's kind of DFT (32 atoms, 4×4×4
  shifted, 45³) by. The model learnt the latter; the bounds below apply the issue's goals
  for held-out snapshots (band energy 5, total energy 10 meV/atom) to the prediction
  against the 108-atom DFT moved by that offset (docs/accuracy.md, "Size transfer").
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
DFT = ROOT / "data" / "dft108" / "k333"
OFFSET = ROOT / "data" / "dft108" / "k_offset_ideal.json"
PSEUDO = Path("/usr/share/espresso/pseudo") / "Al.pz-vbc.UPF"
needs_pseudo = pytest.mark.skipif(not PSEUDO.is_file(), reason=f"no {PSEUDO} (QE's pseudo)")


@pytest.fixture(scope="module")
def dft() -> dict:
    result = json.loads((DFT / "result.json").read_text())
    energies, dos = np.loadtxt(DFT / "dos.txt", unpack=True)
    return {**result, "energies": energies, "dos": dos}


@pytest.fixture(scope="module")
def offset() -> dict:
    """108-atom 3×3×3 DFT − 32-atom 4×4×4 DFT of the ideal crystal: eV/atom, eV."""
    data = json.loads(OFFSET.read_text())
    small, large = data["runs"]["c32_k4"], data["runs"]["c4_k9"]
    assert small["fft"] == [45, 45, 45] and large["fft"] == [24, 24, 24]  # 72³ / 3
    return {key: large[key] - small[key]
            for key in ("E_per_atom_eV", "band_per_atom_eV", "fermi_eV")}


def dft_density(dgrid) -> np.ndarray:
    from mlscale.io.qe_charge_density import density_from_rho_g, read_charge_density

    data = read_charge_density(DFT / "charge-density.dat")
    return density_from_rho_g(data.rho_sq[0], data.mill_qc, dgrid.shape, data.gamma_only)


@pytest.fixture(scope="module")
def prediction():
    from ase.io import read

    from mlscale.examples import shipped_model_path
    from mlscale.inference import predict, setup
    from mlscale.model import load_model
    from mlscale.parallel import self_comm

    atoms = read(DFT / "structure.xyz")
    model = load_model(shipped_model_path(), "numpy")
    pseudopotentials = {"Al": PSEUDO} if PSEUDO.is_file() else None
    dgrid, n_electrons = setup(atoms, model.info, self_comm(),
                               with_energy=pseudopotentials is not None)
    result = predict(atoms, model, dgrid, n_electrons, pseudopotentials=pseudopotentials)
    return atoms, result


def test_reference_is_the_converged_108_atom_run(dft):
    """The reference is what the claim needs: 108 atoms, 3×3×3 shifted k (14 points with
    time reversal), a converged SCF, a DOS that holds the 324 electrons, and no gaps."""
    from mlscale import electrons

    assert dft["atoms"] == 108 and dft["kgrid"] == "3 3 3 1 1 1" and dft["kpoints"] == 14
    assert dft["scf_iterations"] > 0
    window = (dft["energies"] >= dft["fermi_energy_eV"] - 4) & (
        dft["energies"] <= dft["fermi_energy_eV"] + 1)
    dos = dft["dos"][window]
    assert dos.min() / dos.mean() == pytest.approx(dft["dos_min_over_mean"], abs=1e-6)
    assert dft["dos_min_over_mean"] >= 0.3
    count = electrons.number_of_electrons(dft["dos"] * 108, dft["energies"],
                                          dft["fermi_energy_eV"], 298.0)
    assert count == pytest.approx(324, abs=1.0)


def test_reference_k_sampling_offset(offset):
    """The folding the offset rests on holds (the 32-atom cell at 4×4×4 shifted equals
    the cube at 8×8×8 shifted), and the 108-atom sampling is the finer one: within 1.5
    meV/atom of the densest grid (24×24×24 on the cube) where 4×4×4 on 32 atoms is ~4."""
    runs = json.loads(OFFSET.read_text())["runs"]
    for key in ("E_per_atom_eV", "band_per_atom_eV"):
        assert runs["c4_k8"][key] == pytest.approx(runs["c32_k4"][key], abs=1e-5)
        assert abs(runs["c4_k9"][key] - runs["c4_k24"][key]) < 1.5e-3
        assert abs(runs["c32_k4"][key] - runs["c4_k24"][key]) > 3e-3


@needs_pseudo
def test_energy_functional_on_dft_inputs_reproduces_pw_x(dft):
    """mlscale's total energy from pw.x's own density and eigenvalue sums equals pw.x's
    total energy of the 108-atom cell (E_band − TS + E_H + E_xc − ∫ n v_Hxc + E_Ewald)."""
    from ase.io import read

    from mlscale.energy import density_energy_terms, total_energy
    from mlscale.grid import DistributedGrid, Grid
    from mlscale.parallel import self_comm

    atoms = read(DFT / "structure.xyz")
    dgrid = DistributedGrid(Grid(atoms.cell.array, (72, 72, 72)), self_comm())
    terms = density_energy_terms(dft_density(dgrid), dgrid, atoms, {"Al": PSEUDO},
                                 ecutrho_Ry=80.0)
    assert terms["number_of_electrons"] == pytest.approx(324, rel=1e-8)
    energy = total_energy(dft["band_energy_eV"], dft["minus_TS_eV"], terms)
    assert abs(energy - dft["total_energy_eV"]) / 108 < 1e-4  # eV/atom


@pytest.mark.slow
def test_108_atom_prediction_against_dft(dft, offset, prediction):
    atoms, result = prediction
    n = len(atoms)
    scalars = result.scalars()
    mu = scalars["fermi_energy_eV"]
    # no artificial gaps: min/mean of the DOS per atom on [E_F - 4, E_F + 1] eV >= 0.3
    energies, dos = result.energies_e, result.dos_e / n
    window = (energies >= mu - 4.0) & (energies <= mu + 1.0)
    assert dos[window].min() / dos[window].mean() >= 0.3
    assert np.allclose(energies, dft["energies"])
    # against the 108-atom DFT moved to the training data's k-sampling (the offset)
    band_error = 1e3 * ((scalars["band_energy_eV"] - dft["band_energy_eV"]) / n
                        + offset["band_per_atom_eV"])
    assert abs(band_error) <= 5.0, f"band energy {band_error:+.2f} meV/atom"
    fermi_error = 1e3 * (mu - dft["fermi_energy_eV"] + offset["fermi_eV"])
    assert abs(fermi_error) <= 20.0, f"Fermi level {fermi_error:+.1f} meV"
    # density: within the blind 32-atom records' range (docs/accuracy.md: 0.47–0.89 %)
    n_dft = dft_density(result.dgrid)
    relative_mae = np.abs(result.density_b - n_dft).mean() / n_dft.mean()
    assert relative_mae <= 0.009, f"density MAE/mean {100 * relative_mae:.3f} %"
    if PSEUDO.is_file():
        total_error = 1e3 * ((scalars["total_energy_eV"] - dft["total_energy_eV"]) / n
                             + offset["E_per_atom_eV"])
        assert abs(total_error) <= 10.0, f"total energy {total_error:+.2f} meV/atom"
