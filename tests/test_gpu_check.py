"""jobs/gpu_check.sh (run only where a GPU is lent): its bash parses, its Python steps
import on the CPU, and their pure functions compute what they say."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]


def _module():
    spec = importlib.util.spec_from_file_location("gpu_check", ROOT / "jobs" / "gpu_check.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_script_parses():
    subprocess.run(["bash", "-n", str(ROOT / "jobs" / "gpu_check.sh")], check=True)


def test_metric_ratio():
    gc = _module()
    ref = np.array([[1.0, 100.0], [2.0, -50.0]])
    assert gc.metric_ratio(ref, ref) == 0.0
    # column 0: bound 1e-10·2 + 1e-13·2 at [1, 0]; an error of exactly half of it
    bound = 1e-10 * 2.0 + 1e-13 * 2.0
    moved = ref.copy()
    moved[1, 0] += 0.5 * bound
    assert gc.metric_ratio(moved, ref) == pytest.approx(0.5, rel=1e-3)
    moved[1, 0] += bound
    assert gc.metric_ratio(moved, ref) > 1.0
    with pytest.raises(ValueError, match="shapes differ"):
        gc.metric_ratio(ref[:1], ref)


def test_compare_results():
    gc = _module()
    cpu = {"fermi_energy_eV": 8.0, "band_energy_eV": -100.0, "atoms": 32}
    same = gc.compare_results(cpu, dict(cpu))
    assert same["ok"] and set(same["keys"]) == {"fermi_energy_eV", "band_energy_eV"}
    off = gc.compare_results(cpu, {**cpu, "band_energy_eV": -100.0 * (1 + 3e-8)})
    assert not off["ok"]
    assert off["keys"]["band_energy_eV"]["relative_difference"] == pytest.approx(3e-8)
    assert not gc.compare_results({}, {})["ok"]


def test_kernel_flop_count_uses_the_tables():
    gc = _module()
    flops = gc.kernel_flops_per_point(10, 26.0)
    assert flops["products"] == 47702 and flops["entries"] == 3444  # _native_tables' doc
    assert flops["zb_per_point"] == 47702 * 12 + 3444 * 6
    assert flops["total"] > flops["zb_per_point"]


def test_structure_and_summary_steps(tmp_path):
    gc = _module()
    assert gc.main(["structure", "2", str(tmp_path / "al.xyz")]) == 0
    from ase.io import read

    assert len(read(tmp_path / "al.xyz")) == 256
    (tmp_path / "a.json").write_text(json.dumps({"x": 1}))
    assert gc.main(["summary", str(tmp_path), str(tmp_path / "summary.json")]) == 0
    assert json.loads((tmp_path / "summary.json").read_text()) == {"a": {"x": 1}}


def test_env_step_runs_on_the_cpu(tmp_path):
    child = subprocess.run([sys.executable, str(ROOT / "jobs" / "gpu_check.py"), "env",
                            str(tmp_path / "env.json")], capture_output=True, text=True,
                           timeout=300, cwd=ROOT)
    assert child.returncode == 0, child.stderr
    assert "numba" in json.loads((tmp_path / "env.json").read_text())


def test_tf32_rounding_of_gpu_precision():
    spec = importlib.util.spec_from_file_location("gpu_precision",
                                                  ROOT / "jobs" / "gpu_precision.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    ulp = 2.0**-10  # TF32's 10 mantissa bits at 1
    x = np.array([1.0, 1 + ulp / 4, 1 + 3 * ulp / 4, 1 + ulp, -3.0 * (1 + ulp / 4), 0.0],
                 dtype=np.float32)
    expected = np.array([1.0, 1.0, 1 + ulp, 1 + ulp, -3.0, 0.0], dtype=np.float32)
    np.testing.assert_array_equal(module.round_tf32(x), expected)
    rng = np.random.default_rng(0).normal(size=1000).astype(np.float32)
    rounded = module.round_tf32(rng)
    assert np.all(np.abs(rounded - rng) <= 2.0**-11 * np.abs(rng))  # half a TF32 ulp
    assert np.all(rounded.view(np.uint32) & np.uint32(0x1FFF) == 0)


def test_compare_step(tmp_path):
    gc = _module()
    for name, band in (("cpu", 314.6188), ("gpu", 314.6188 * (1 + 2e-9))):
        (tmp_path / name).mkdir()
        (tmp_path / name / "results.json").write_text(json.dumps(
            {"fermi_energy_eV": 7.76, "band_energy_eV": band, "timings_s": {"total": 1.0}}))
    out = tmp_path / "compare.json"
    assert gc.main(["compare", str(tmp_path / "cpu"), str(tmp_path / "gpu"), str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["ok"] and result["gpu_timings_s"] == {"total": 1.0}
    assert result["keys"]["band_energy_eV"]["relative_difference"] == pytest.approx(2e-9)


DESCRIPTORS_CHILD = """
import sys
from pathlib import Path
sys.path.insert(0, sys.argv[1])
import gpu_check
from mlscale import BispectrumSettings
cases = gpu_check._cases()
gpu_check._cases = lambda: [(name, atoms, (2, 2, 3), BispectrumSettings(
    twojmax=2, species=settings.species)) for name, atoms, _, settings in cases]
gpu_check._descriptors(Path(sys.argv[2]))
"""


def test_descriptors_step_in_the_simulator(tmp_path):
    """The descriptor step's code on tiny grids (twojmax 2) in numba's CUDA simulator."""
    import os

    out = tmp_path / "descriptors.json"
    child = subprocess.run([sys.executable, "-c", DESCRIPTORS_CHILD, str(ROOT / "jobs"),
                            str(out)], capture_output=True, text=True, timeout=300, cwd=ROOT,
                           env={**os.environ, "NUMBA_ENABLE_CUDASIM": "1",
                                "OMP_NUM_THREADS": "1", "NUMBA_NUM_THREADS": "1"})
    assert child.returncode == 0, child.stderr
    result = json.loads(out.read_text())
    assert len(result) == 2 and "al32_shipped" in result
    assert set(result) <= {"al32_shipped", "be2_mala", "be2_hcp_ase"}
    for case in result.values():
        assert case["points"] == 12 and case["ok"] and case["repeatable"]
