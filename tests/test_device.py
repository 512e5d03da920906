"""The device plumbing (mlscale.device, --device) on a machine without a GPU.

- the network's device path (:class:`DeviceNetwork` on CPU tensors) against the NumPy
  network and electrons.dos_from_ldos (float32 tolerance);
- ``--device cuda`` without a GPU: one clear MlscaleError, on every rank;
- the whole ``predict --device cuda`` in numba's CUDA simulator against ``predict
  --network torch`` on the CPU (the CPU kernel and the same torch network).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from mlscale import Grid, MlscaleError
from mlscale.descriptors.native import compute_block
from mlscale.device import Device, DeviceNetwork, model_device, select_device
from mlscale.electrons import dos_from_ldos
from mlscale.examples import builtin_example, shipped_model_path
from mlscale.model import NumpyNetwork, load_model
from mlscale.parallel import world

ROOT = Path(__file__).resolve().parents[1]


def _gpu_present() -> bool:
    from numba import cuda

    return bool(cuda.is_available())


@pytest.fixture(scope="module")
def shipped_descriptors():
    """The shipped model's descriptors of 60 points of the built-in example (CPU kernel)."""
    atoms = builtin_example()
    info = load_model(shipped_model_path()).info
    grid = Grid(atoms.cell.array, (36, 36, 36))
    from mlscale import Block

    block = Block((4, 10, 0), (7, 14, 5))
    return compute_block(atoms, grid, block, info.descriptors).reshape(block.size, -1)


def test_device_network_on_cpu_tensors_matches_numpy_network(shipped_descriptors):
    import torch

    numpy_net = NumpyNetwork.from_file(shipped_model_path())
    device_net = DeviceNetwork(load_model(shipped_model_path(), "torch"))
    assert model_device(device_net) == "cpu" and model_device(numpy_net) == "cpu"
    reference = numpy_net(shipped_descriptors)
    voxel = 0.137
    for given in (shipped_descriptors, torch.from_numpy(shipped_descriptors)):
        for chunk in (7, 1000):
            ldos_pe, dos_e = device_net.ldos_and_dos(given, voxel, chunk)
            assert ldos_pe.dtype == np.float32 and ldos_pe.shape == reference.shape
            np.testing.assert_allclose(ldos_pe, reference, rtol=2e-5,
                                       atol=2e-6 * np.abs(reference).max())
            np.testing.assert_allclose(dos_e, dos_from_ldos(reference, voxel), rtol=2e-5,
                                       atol=2e-6 * np.abs(dos_e).max())
    np.testing.assert_array_equal(device_net(shipped_descriptors),
                                  device_net.ldos_and_dos(shipped_descriptors, 1.0)[0])


def test_device_network_bad_input(shipped_descriptors):
    net = DeviceNetwork(load_model(shipped_model_path(), "torch"))
    with pytest.raises(MlscaleError, match="shape"):
        net.ldos_and_dos(shipped_descriptors[:, :5], 1.0)
    bad = shipped_descriptors.copy()
    bad[3, 2] = np.nan
    with pytest.raises(MlscaleError, match="NaN"):
        net.ldos_and_dos(bad, 1.0)
    with pytest.raises(MlscaleError, match="chunk_points"):
        net.ldos_and_dos(shipped_descriptors, 1.0, 0)


def test_select_device():
    comm = world()
    assert select_device("cpu", comm) == Device()
    assert Device("cuda", 2).torch_name == "cuda:2" and Device().torch_name == "cpu"
    with pytest.raises(MlscaleError, match="unknown device 'tpu'"):
        select_device("tpu", comm)
    if _gpu_present():
        pytest.skip("a CUDA GPU is present: the no-GPU error cannot be tested")
    with pytest.raises(MlscaleError, match="no CUDA GPU is available"):
        select_device("cuda", comm)


@pytest.mark.parametrize("command", [["predict", "--grid", "3", "3", "3"],
                                     ["descriptors", "STRUCTURE", "--grid", "3", "3", "3"]])
def test_cli_device_cuda_without_gpu_is_one_clear_error(tmp_path, command):
    if _gpu_present():
        pytest.skip("a CUDA GPU is present")
    structure = tmp_path / "al.xyz"
    builtin_example().write(structure)
    argv = [str(structure) if a == "STRUCTURE" else a for a in command]
    child = subprocess.run([sys.executable, "-m", "mlscale", *argv, "--device", "cuda",
                            "-o", str(tmp_path / "out.npy")], cwd=tmp_path,
                           capture_output=True, text=True, timeout=300,
                           env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert child.returncode == 1
    assert child.stderr.strip().splitlines()[-1].startswith(
        "mlscale: error: --device cuda: no CUDA GPU is available")
    assert "Traceback" not in child.stderr


@pytest.mark.mpi(min_size=2)
def test_device_error_on_one_rank_fails_all_ranks(monkeypatch):
    import mlscale.device as device

    comm = world()

    def bind(local_rank, need_torch=True):
        if comm.rank == 1:
            raise MlscaleError("--device cuda: no GPU on rank 1's node")
        return Device("cuda", 0)

    monkeypatch.setattr(device, "bind_gpu", bind)
    with pytest.raises(MlscaleError, match="no GPU on rank 1's node"):
        device.select_device("cuda", comm)


def test_predict_device_cuda_in_the_simulator_matches_cpu(tmp_path):
    """The whole --device cuda path (binding, CUDA kernel, device arrays into the torch
    network) in numba's simulator vs --network torch on the CPU: 12 grid points."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "NUMBA_NUM_THREADS": "1"}
    args = [sys.executable, "-m", "mlscale", "predict", "--grid", "2", "2", "3"]
    cpu = subprocess.run([*args, "--network", "torch", "-o", str(tmp_path / "cpu")],
                         capture_output=True, text=True, timeout=300, env=env, cwd=ROOT)
    assert cpu.returncode == 0, cpu.stderr
    sim = subprocess.run([*args, "--device", "cuda", "-o", str(tmp_path / "sim")],
                         capture_output=True, text=True, timeout=300, cwd=ROOT,
                         env={**env, "NUMBA_ENABLE_CUDASIM": "1"})
    if sim.returncode != 0 and "numba" in sim.stderr and "simulator" in sim.stderr.lower():
        pytest.skip(f"numba.cuda simulator unavailable: {sim.stderr[-300:]}")
    assert sim.returncode == 0, sim.stderr
    cpu_r = json.loads((tmp_path / "cpu" / "results.json").read_text())
    sim_r = json.loads((tmp_path / "sim" / "results.json").read_text())
    for key in ("fermi_energy_eV", "band_energy_eV", "entropy_contribution_eV",
                "number_of_electrons_from_density"):
        assert sim_r[key] == pytest.approx(cpu_r[key], rel=1e-7, abs=1e-9), key
    cpu_dos = np.loadtxt(tmp_path / "cpu" / "dos.csv", delimiter=",", skiprows=1, comments="#")
    sim_dos = np.loadtxt(tmp_path / "sim" / "dos.csv", delimiter=",", skiprows=1, comments="#")
    np.testing.assert_allclose(sim_dos, cpu_dos, rtol=1e-7, atol=1e-9 * cpu_dos.max())


def test_descriptors_command_device_cuda_in_the_simulator_matches_cpu(tmp_path):
    structure = tmp_path / "al.xyz"
    builtin_example().write(structure)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "NUMBA_NUM_THREADS": "1",
           "NUMBA_ENABLE_CUDASIM": "1"}
    args = [sys.executable, "-m", "mlscale", "descriptors", str(structure), "--grid", "2", "3",
            "2", "--twojmax", "6"]
    for device in ("cpu", "cuda"):
        child = subprocess.run([*args, "--device", device, "-o", str(tmp_path / f"{device}.npy")],
                               capture_output=True, text=True, timeout=300, env=env, cwd=ROOT)
        assert child.returncode == 0, child.stderr
    cpu = np.load(tmp_path / "cpu.npy", allow_pickle=False)
    gpu = np.load(tmp_path / "cuda.npy", allow_pickle=False)
    assert cpu.shape == (2, 3, 2, 30)
    scale = np.abs(cpu).reshape(-1, cpu.shape[-1]).max(axis=0)
    assert np.all(np.abs(gpu - cpu) <= 1e-10 * np.abs(cpu) + 1e-13 * scale)



def test_calculator_device_cuda_without_gpu_is_a_clear_error():
    from mlscale.calculator import MlscaleCalculator

    if _gpu_present():
        pytest.skip("a CUDA GPU is present")
    with pytest.raises(MlscaleError, match="no CUDA GPU is available"):
        MlscaleCalculator(shipped_model_path(), {}, device="cuda")
    with pytest.raises(MlscaleError, match="unknown device"):
        MlscaleCalculator(shipped_model_path(), {}, device="gpu")
