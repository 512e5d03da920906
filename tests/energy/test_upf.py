"""read_upf (UPF v1 and v2) and find_pseudopotentials, and their errors."""

from __future__ import annotations

import numpy as np
import pytest

from mlscale.energy import find_pseudopotentials, read_upf
from mlscale.errors import MlscaleError

UPF_V1 = """<PP_INFO>
 test
</PP_INFO>
<PP_HEADER>
   0                   Version Number
  Xx                   Element
   NC                  Norm - Conserving pseudopotential
    T                  Nonlinear Core Correction
 SLA  PW   PBE  PBE    PBE  Exchange-Correlation functional
    5.00000000000      Z valence
</PP_HEADER>
<PP_MESH>
  <PP_R>
  0.1 0.2 0.3
  </PP_R>
  <PP_RAB>
  0.1 0.1 0.1
  </PP_RAB>
</PP_MESH>
<PP_NLCC>
  1.0 0.5 0.25
</PP_NLCC>
"""


def test_read_upf_versions(tmp_path, al_pseudo):
    path = tmp_path / "Xx.test.UPF"
    path.write_text(UPF_V1)
    pp = read_upf(path)
    assert (pp.element, pp.z_valence, pp.functional, pp.pseudo_type) == ("Xx", 5.0, "SLA PW PBE PBE", "NC")
    assert np.allclose(pp.core_r, [1.0, 0.5, 0.25]) and np.allclose(pp.r_r, [0.1, 0.2, 0.3])
    al = read_upf(al_pseudo["Al"])
    assert (al.element, al.z_valence, al.core_r) == ("Al", 3.0, None)
    assert len(al.r_r) == 171


def test_upf_errors(tmp_path):
    with pytest.raises(MlscaleError, match="cannot read"):
        read_upf(tmp_path / "missing.UPF")
    bad = tmp_path / "Xx.bad.UPF"
    bad.write_text(UPF_V1.replace("0.1 0.1 0.1", "0.1 x 0.1"))
    with pytest.raises(MlscaleError, match="corrupt"):
        read_upf(bad)
    bad.write_text(UPF_V1.split("<PP_NLCC>")[0])
    with pytest.raises(MlscaleError, match="corrupt"):
        read_upf(bad)
    bad.write_text(UPF_V1.replace("NC    ", "PAW   "))
    with pytest.raises(MlscaleError, match="PAW"):
        read_upf(bad)


def test_find_pseudopotentials(tmp_path):
    for name in ["Al.pz-vbc.UPF", "B.pbe.UPF", "Be.pbe.upf", "Be_2.UPF", "notes.txt"]:
        (tmp_path / name).write_text("x")
    assert find_pseudopotentials(tmp_path, ["Al", "B"]) == {
        "Al": tmp_path / "Al.pz-vbc.UPF", "B": tmp_path / "B.pbe.UPF"}
    with pytest.raises(MlscaleError, match="no pseudopotential for Cu"):
        find_pseudopotentials(tmp_path, ["Al", "Cu"])
    with pytest.raises(MlscaleError, match="several pseudopotentials for Be"):
        find_pseudopotentials(tmp_path, ["Be"])
    with pytest.raises(MlscaleError, match="does not exist"):
        find_pseudopotentials(tmp_path / "nowhere", ["Al"])
