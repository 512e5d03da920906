"""pw.x output → MALA's info.json: against MALA's own .info.json files and QE 6.7 runs."""

import json
import os
import shutil
import subprocess

import numpy as np
import pytest

from mlscale.errors import MlscaleError
from mlscale.io import parse_pw_output, write_json_atomic

# absolute tolerances: what QE prints (1e-8 Ry = 1.4e-7 eV; positions 1e-7 alat)
TOLERANCE = {
    "fermi_energy_dft": 1e-9, "temperature": 1e-9, "number_of_electrons_exact": 0,
    "band_energy_dft_calculation": 1e-8, "number_of_electrons_from_eigenvals": 1e-10,
    "total_energy_dft_calculation": 2e-7, "entropy_contribution_dft_calculation": 2e-7,
    "one_electron_contribution": 2e-7, "hartree_contribution": 2e-7, "xc_contribution": 2e-7,
    "ewald_contribution": 2e-7, "electrons_per_atom": 0, "ecutwfc": 0, "ecutrho": 0,
    "degauss": 0,
}
# plus relative: MALA converts Ry with ase.units (CODATA 2014), mlscale with CODATA 2018
# (mlscale.units): Rydberg 8.4e-9 apart, the temperature degauss·Ry/k_B 3.3e-7
CODATA_REL = {"temperature": 4e-7}
CODATA_REL_ENERGY = 1e-8


@pytest.mark.parametrize("snapshot", [0, 1])
def test_every_key_matches_mala_info_json(be2, snapshot):
    reference = json.loads((be2 / f"Be_snapshot{snapshot}.info.json").read_text())
    info = parse_pw_output(be2 / f"Be_snapshot{snapshot}.out")
    for key, expected in reference.items():
        value = info[key]
        if key in TOLERANCE:
            rel = CODATA_REL.get(key, CODATA_REL_ENERGY if key.endswith(
                ("_calculation", "_contribution")) else 0)
            assert value == pytest.approx(expected, abs=TOLERANCE[key], rel=rel), key
        elif key in ("grid_dimensions", "ibrav", "pseudopotentials"):
            assert value == expected, key
        elif key == "voxel":
            np.testing.assert_allclose(value["array"], expected["array"], atol=1e-7)
        elif key == "atoms":
            assert value["numbers"] == expected["numbers"] and value["pbc"] == expected["pbc"]
            np.testing.assert_allclose(value["positions"], expected["positions"], atol=1e-6)
            np.testing.assert_allclose(value["cell"], expected["cell"], atol=1e-6)
        elif key == "atomic_forces_dft":
            np.testing.assert_allclose(value, expected, atol=1e-6)  # 1e-8 Ry/Bohr printed
        else:
            pytest.fail(f"untested key {key}")
    assert info["converged"] is True and info["scf_iterations"] == 1


def test_info_json_round_trip(be2, tmp_path):
    info = parse_pw_output(be2 / "Be_snapshot0.out")
    write_json_atomic(tmp_path / "Be.info.json", info)
    assert json.loads((tmp_path / "Be.info.json").read_text()) == info


def test_bad_outputs(be2, tmp_path):
    text = (be2 / "Be_snapshot0.out").read_text()
    with pytest.raises(MlscaleError, match="file not found"):
        parse_pw_output(tmp_path / "none.out")
    (tmp_path / "cut.out").write_text(text[: len(text) // 2])
    with pytest.raises(MlscaleError, match="truncated"):
        parse_pw_output(tmp_path / "cut.out")
    (tmp_path / "cut2.out").write_text(text[: text.index("the Fermi energy is") + 10])
    with pytest.raises(MlscaleError, match="truncated"):
        parse_pw_output(tmp_path / "cut2.out")
    with pytest.raises(MlscaleError, match="not a Quantum ESPRESSO pw.x output"):
        parse_pw_output(be2 / "cubes" / "tmp.pp01Be_ldos.cube")
    (tmp_path / "mv.out").write_text(text.replace("Fermi-Dirac smearing", "Marzari-Vanderbilt smearing"))
    with pytest.raises(MlscaleError, match="needs Fermi-Dirac"):
        parse_pw_output(tmp_path / "mv.out")
    (tmp_path / "xx.out").write_text(text.replace("Be  tau(", "Xx  tau("))
    with pytest.raises(MlscaleError, match="element of species 'Xx'"):
        parse_pw_output(tmp_path / "xx.out")


def test_unconverged_scf(be2, tmp_path):
    text = (be2 / "Be_snapshot0.out").read_text()
    bad = text.replace("convergence has been achieved in   1 iterations",
                       "convergence NOT achieved after   1 iterations: stopping")
    assert bad != text
    (tmp_path / "nc.out").write_text(bad)
    with pytest.raises(MlscaleError, match="convergence NOT achieved after 1 iterations"):
        parse_pw_output(tmp_path / "nc.out")
    info = parse_pw_output(tmp_path / "nc.out", allow_unconverged=True)
    assert info["converged"] is False and info["scf_iterations"] == 1


AL_INPUT = """&CONTROL
   calculation = 'scf', outdir = 'tmp', prefix = 'Al', tprnfor = .true.
   pseudo_dir = '/usr/share/espresso/pseudo/'
/
&SYSTEM
   ibrav = 2, celldm(1) = 7.6, nat = 1, ntyp = 1, ecutwfc = 15, ecutrho = 60
   occupations = 'smearing', smearing = 'fermi-dirac', degauss = 0.01
/
&ELECTRONS
   conv_thr = {conv_thr}, electron_maxstep = {maxstep}
/
ATOMIC_SPECIES
Al 26.98 Al.pz-vbc.UPF
ATOMIC_POSITIONS crystal
Al 0.0 0.0 0.0
K_POINTS automatic
4 4 4 0 0 0
"""


def _run_pw(directory, conv_thr, maxstep):
    if shutil.which("pw.x") is None or not os.path.exists("/usr/share/espresso/pseudo/Al.pz-vbc.UPF"):
        pytest.skip("Quantum ESPRESSO pw.x or its Al pseudopotential not installed")
    (directory / "al.in").write_text(AL_INPUT.format(conv_thr=conv_thr, maxstep=maxstep))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PMI_", "HYDRA_", "MPI"))}
    env["OMP_NUM_THREADS"] = "1"
    with open(directory / "al.out", "w") as out:
        subprocess.run(["pw.x", "-in", "al.in"], cwd=directory, stdout=out,
                       stderr=subprocess.STDOUT, env=env, timeout=120)
    return directory / "al.out"


def test_qe67_run_with_symmetry_weights(tmp_path):
    """fcc Al, 8 irreducible k-points of unequal weight: Σ w f must give the electron count."""
    from ase.io import read

    info = parse_pw_output(_run_pw(tmp_path, "1e-8", 100))
    assert info["converged"] and info["scf_iterations"] > 1
    assert info["number_of_electrons_exact"] == 3.0
    assert info["number_of_electrons_from_eigenvals"] == pytest.approx(3.0, abs=2e-4)
    assert info["temperature"] == pytest.approx(0.01 * 157887.5, rel=1e-5)  # 1 Ry / k_B in K
    assert info["grid_dimensions"] == [15, 15, 15] and info["ibrav"] == 2
    atoms = read(tmp_path / "al.out", format="espresso-out", parallel=False)  # ASE's parser as reference
    # ASE converts with CODATA-2006 Ry, mlscale (like MALA) with ase.units.Rydberg: 1e-7 apart
    assert info["total_energy_dft_calculation"] == pytest.approx(atoms.get_potential_energy(), rel=2e-7)
    assert info["fermi_energy_dft"] == pytest.approx(atoms.calc.get_fermi_level(), abs=1e-9)
    np.testing.assert_allclose(info["atoms"]["cell"], atoms.cell, atol=1e-6)
    # sum of QE's printed terms is its internal energy E = F + TS
    terms = sum(info[k] for k in ("one_electron_contribution", "hartree_contribution",
                                  "xc_contribution", "ewald_contribution"))
    assert terms == pytest.approx(info["total_energy_dft_calculation"]
                                  - info["entropy_contribution_dft_calculation"], abs=1e-6)


def test_qe67_unconverged_run(tmp_path):
    path = _run_pw(tmp_path, "1e-12", 2)
    with pytest.raises(MlscaleError, match="convergence NOT achieved after 2 iterations"):
        parse_pw_output(path)
    info = parse_pw_output(path, allow_unconverged=True)
    assert info["converged"] is False and info["total_energy_dft_calculation"] is None
    assert info["atoms"]["numbers"] == [13]
