"""The CUDA bispectrum kernel, run in numba's CUDA simulator, against the CPU kernel.

The simulator must be switched on before numba is imported, so the GPU side runs in a
child process (``NUMBA_ENABLE_CUDASIM=1``) that writes its descriptors as .npy files;
this process computes the reference with the CPU kernel (native backend, itself
matched to LAMMPS in test_native.py) and applies the acceptance metric of issue 6:
|gpu - cpu| <= 1e-10 |cpu| + 1e-13 max|cpu column|. The simulator interprets the
kernel in Python (~0.4 s per point at twojmax 10), so the blocks are small.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from ase import Atoms
from ase.build import bulk

from mlscale import BispectrumSettings, Block, Grid
from mlscale.descriptors.native import compute_block
from mlscale.examples import builtin_example, shipped_model_path
from mlscale.model import read_model_file

from .test_native import assert_matches

ROOT = Path(__file__).resolve().parents[2]
SKIP_STATUS = 77  # the child's exit status when the simulator is unavailable


def _triclinic_two_species():
    cell = np.array([[5.3, 0.0, 0.0], [1.2, 5.0, 0.0], [-0.9, 0.8, 5.5]])
    rng = np.random.default_rng(5)
    atoms = Atoms("Na4Cl4", scaled_positions=rng.random((8, 3)), cell=cell, pbc=True)
    settings = BispectrumSettings(twojmax=5, rcutfac=4.2, rmin0=0.3, species=("Na", "Cl"),
                                  radii=(0.45, 0.6), weights=(1.0, 0.7))
    return atoms, settings


def cases(be2_dir: Path | None) -> dict:
    """name -> (atoms, grid shape, block, settings)."""
    shipped = read_model_file(shipped_model_path())[0].descriptors
    al = builtin_example()
    on_atoms = bulk("Al", "fcc", a=4.05, cubic=True)  # every atom on a point of the 4³ grid
    tri, tri_settings = _triclinic_two_species()
    out = {
        # the shipped model's settings (twojmax 10) on the built-in example: 3 points
        "al_shipped": (al, (36, 36, 36), Block((5, 17, 30), (6, 18, 33)), shipped),
        "al_twojmax6": (al, (20, 18, 22), Block((3, 0, 19), (6, 4, 22)),
                        BispectrumSettings(twojmax=6)),
        "al_on_atoms": (on_atoms, (4, 4, 4), Block((0, 0, 0), (2, 2, 4)),
                        BispectrumSettings(twojmax=4, switchflag=0)),
        "two_species_triclinic": (tri, (10, 9, 11), Block((7, 2, 0), (10, 5, 4)), tri_settings),
        "empty": (al, (8, 8, 8), Block((2, 2, 2), (2, 5, 5)), BispectrumSettings(twojmax=2)),
    }
    if be2_dir is not None:
        info = json.loads((be2_dir / "Be_snapshot0.info.json").read_text())["atoms"]
        be2 = Atoms(numbers=info["numbers"], positions=info["positions"], cell=info["cell"],
                    pbc=True)
        out["be2_twojmax10"] = (be2, (18, 18, 27), Block((4, 9, 20), (5, 10, 24)),
                                BispectrumSettings(species=("Be",)))
        out["be2_twojmax6"] = (be2, (18, 18, 27), Block((0, 15, 24), (3, 18, 27)),
                               BispectrumSettings(twojmax=6, species=("Be",)))
    return out


def _spec(case) -> dict:
    atoms, shape, block, settings = case
    return {"numbers": atoms.numbers.tolist(), "positions": atoms.positions.tolist(),
            "cell": atoms.cell.array.tolist(), "shape": list(shape),
            "start": list(block.start), "stop": list(block.stop),
            "settings": settings.to_dict()}


def simulate(directory: str) -> None:
    """Child process: every case of ``directory/cases.json`` through the CUDA kernel in
    the simulator, into ``directory/<name>.npy``; exit status 77 without the simulator."""
    from numba import config

    if not getattr(config, "ENABLE_CUDASIM", False):
        sys.exit("NUMBA_ENABLE_CUDASIM=1 must be set before numba is imported")
    try:
        from numba import cuda

        assert cuda.is_available()
    except Exception as error:  # noqa: BLE001 - any failure means: skip
        print(f"numba.cuda simulator unavailable: {error!r}", file=sys.stderr)
        sys.exit(SKIP_STATUS)
    from mlscale.descriptors.cuda import compute_block as gpu_block

    path = Path(directory)
    for name, spec in json.loads((path / "cases.json").read_text()).items():
        atoms = Atoms(numbers=spec["numbers"], positions=spec["positions"], cell=spec["cell"],
                      pbc=True)
        grid = Grid(np.array(spec["cell"]), tuple(spec["shape"]))
        block = Block(tuple(spec["start"]), tuple(spec["stop"]))
        settings = BispectrumSettings.from_dict(spec["settings"])
        np.save(path / f"{name}.npy", gpu_block(atoms, grid, block, settings))


@pytest.fixture(scope="module")
def simulated(tmp_path_factory, request):
    """(cases, directory of the simulator's results): one child process for all cases."""
    try:
        be2_dir = request.getfixturevalue("be2")
    except pytest.skip.Exception:
        be2_dir = None
    all_cases = cases(be2_dir)
    directory = tmp_path_factory.mktemp("cudasim")
    (directory / "cases.json").write_text(json.dumps({n: _spec(c) for n, c in all_cases.items()}))
    env = {**os.environ, "NUMBA_ENABLE_CUDASIM": "1", "NUMBA_NUM_THREADS": "1",
           "OMP_NUM_THREADS": "1"}
    child = subprocess.run(
        [sys.executable, "-c", "import sys; from tests.descriptors.test_cuda_sim import "
         "simulate; simulate(sys.argv[1])", str(directory)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    if child.returncode == SKIP_STATUS:
        pytest.skip(child.stderr.strip().splitlines()[-1])
    assert child.returncode == 0, child.stderr[-4000:]
    return all_cases, directory


@pytest.mark.parametrize("name", ["al_shipped", "al_twojmax6", "al_on_atoms",
                                  "two_species_triclinic", "empty", "be2_twojmax10",
                                  "be2_twojmax6"])
def test_cuda_kernel_matches_cpu_kernel(simulated, name):
    all_cases, directory = simulated
    if name not in all_cases:
        pytest.skip("MALA's Be2 test data not found")
    atoms, shape, block, settings = all_cases[name]
    gpu = np.load(directory / f"{name}.npy", allow_pickle=False)
    cpu = compute_block(atoms, Grid(atoms.cell.array, shape), block, settings)
    assert gpu.shape == cpu.shape == (*block.shape, settings.n_features)
    if block.size:
        assert np.any(cpu != 1.0)  # not only the self term: the block sees atoms
        assert_matches(gpu, cpu)


def test_cpu_modules_do_not_import_numba_cuda_or_torch():
    code = ("import sys, mlscale.descriptors, mlscale.inference, mlscale.device, "
            "mlscale.commands.predict, mlscale.calculator; "
            "print(sorted(m for m in sys.modules if m.startswith(('numba.cuda', 'torch'))))")
    child = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                           text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert child.returncode == 0, child.stderr
    assert child.stdout.strip() == "[]"


def test_cuda_kernel_compiles_to_ptx_for_sm90(monkeypatch):
    """The real CUDA target (type inference, lowering, NVVM) on the kernel, without a GPU:
    what the simulator, which runs the Python source, cannot check. Its local memory per
    thread is utot (real and imaginary) and two U layers, 16·n_u + 32·n_layer bytes."""
    from numba import cuda, types
    from numba.cuda import dispatcher
    from numba.cuda.cudadrv import nvvm

    try:
        nvvm.NVVM()
    except Exception as error:  # noqa: BLE001 - no libNVVM: nothing to compile with
        pytest.skip(f"libNVVM unavailable: {error}")
    if not hasattr(dispatcher, "get_current_device"):
        pytest.skip("this numba.cuda asks for the device elsewhere")
    # device functions take the compute capability of the current device: there is none
    monkeypatch.setattr(dispatcher, "get_current_device",
                        lambda: type("Device", (), {"compute_capability": (9, 0)})())
    from mlscale.descriptors._cuda_kernel import bispectrum_kernel

    i8, i4, f8 = types.int64, types.int32, types.float64

    def a(t, n=1):
        return types.Array(t, n, "C")

    signature = (a(i8), a(i8), a(i8), a(f8, 2), a(f8, 2), a(i8), a(f8), a(f8), f8, f8, i8,
                 a(f8), a(f8), a(f8), a(i8), a(i8), a(i4), a(f8, 2), a(i4), a(f8), a(i4),
                 a(i4), a(f8), a(i4), a(i4), a(f8, 2))
    twojmax = 10
    ptx, _ = cuda.compile_ptx(bispectrum_kernel(twojmax).py_func, signature, cc=(9, 0))
    n_u = sum((j + 1) ** 2 for j in range(twojmax + 1))
    n_layer = (twojmax // 2 + 2) * (twojmax + 1)
    assert ".entry" in ptx
    assert f"__local_depot0[{16 * n_u + 32 * n_layer}]" in ptx
