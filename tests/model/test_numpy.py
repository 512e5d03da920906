"""The NumPy network that `mlscale predict` runs: the same function as the torch
LDOSModel it is read from (every activation and LDOS restriction), and a prediction
that never imports torch."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch

from mlscale.config import BispectrumSettings, EnergyGrid, ModelSettings
from mlscale.errors import MlscaleError
from mlscale.model import (
    ACTIVATION_NAMES,
    ACTIVATIONS,
    LDOSModel,
    ModelInfo,
    NumpyNetwork,
    TorchModel,
    load_model,
    save_model,
)

METADATA = {"descriptors": BispectrumSettings(twojmax=2).with_species(["Be"]).to_dict(),
            "energy_grid": EnergyGrid(-5.0, 2.5, 4).to_dict(), "temperature_K": 300.0,
            "species": ["Be"]}


def torch_model(activation="LeakyReLU", restriction="none", seed=0) -> LDOSModel:
    torch.manual_seed(seed)
    model = LDOSModel(ModelSettings((5, 12, 9, 4), activation, restriction))
    rng = np.random.default_rng(seed)
    model.set_scaling(rng.normal(size=5), rng.uniform(0.5, 2, 5), rng.normal(size=4),
                      rng.uniform(0.5, 2, 4))
    return model.eval()


@pytest.mark.parametrize("activation", sorted(ACTIVATIONS))
@pytest.mark.parametrize("restriction", ["none", "zero_negative", "absolute"])
def test_numpy_network_equals_torch_model(tmp_path, activation, restriction):
    model = torch_model(activation, restriction)
    save_model(tmp_path / "m.safetensors", model, METADATA)
    network = load_model(tmp_path / "m.safetensors")
    metadata = network.info.metadata
    assert isinstance(network, NumpyNetwork) and network.settings == model.settings
    assert metadata["energy_grid"] == METADATA["energy_grid"]
    x_pf = np.random.default_rng(1).normal(0.0, 3.0, (500, 5))
    with torch.no_grad():
        raw = model(torch.from_numpy(x_pf.astype(np.float32))).double().numpy()
    assert (raw < 0).any() or activation in ("ReLU", "Sigmoid")
    expected = {"none": raw, "zero_negative": np.maximum(raw, 0), "absolute": np.abs(raw)}
    got = network(x_pf, chunk_points=77)
    np.testing.assert_allclose(got, expected[restriction], rtol=1e-5,
                               atol=1e-5 * np.abs(raw).max())
    # the torch backend gives the same numbers
    torch_backend = TorchModel(model, network.info)
    np.testing.assert_allclose(torch_backend(x_pf), got, rtol=1e-5,
                               atol=1e-5 * np.abs(raw).max())


def test_numpy_network_rejects_bad_input(tmp_path):
    save_model(tmp_path / "m.safetensors", torch_model(), METADATA)
    network = load_model(tmp_path / "m.safetensors")
    with pytest.raises(MlscaleError, match=r"shape \[points, 5\]"):
        network(np.zeros((3, 6)))
    with pytest.raises(MlscaleError, match="NaN or infinity"):
        network(np.full((3, 5), np.nan))
    with pytest.raises(MlscaleError, match="chunk_points must be positive"):
        network(np.zeros((3, 5)), chunk_points=0)
    with pytest.raises(MlscaleError, match="do not match"):
        NumpyNetwork(ModelInfo.from_metadata(METADATA, ModelSettings((5, 4))),
                     {"mlp.0.weight": np.zeros((4, 5))})


@pytest.mark.slow
def test_predict_never_imports_torch(tmp_path):
    """`mlscale predict` of the built-in example (shipped model) in a fresh interpreter:
    torch must not be loaded (it would cost ~200 MiB per rank)."""
    code = ("import sys\n"
            "from mlscale.cli import main\n"
            f"status = main(['predict', '-o', {str(tmp_path / 'out')!r}])\n"
            "assert status in (0, None), status\n"
            "print('TORCH LOADED' if 'torch' in sys.modules else 'NO TORCH')\n")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    assert "NO TORCH" in run.stdout and "Fermi level" in run.stdout


@pytest.mark.slow
def test_predict_network_torch_and_numpy_agree(tmp_path):
    """`--network torch` (float32 torch, as torch-based codes) and the default NumPy
    network give the same electronic structure to float32 round-off."""
    import json

    results = {}
    for network in ("numpy", "torch"):
        out = tmp_path / network
        code = ("import sys\nfrom mlscale.cli import main\n"
                f"main(['predict', '--network', {network!r}, '-o', {str(out)!r}])\n"
                "print('torch loaded' if 'torch' in sys.modules else 'no torch')\n")
        run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                             timeout=600)
        assert run.returncode == 0, run.stderr[-3000:]
        assert ("torch loaded" if network == "torch" else "no torch") in run.stdout
        results[network] = json.loads((out / "results.json").read_text())
    a, b = results["numpy"], results["torch"]
    assert a["fermi_energy_eV"] == pytest.approx(b["fermi_energy_eV"], abs=1e-6)
    assert a["band_energy_eV"] == pytest.approx(b["band_energy_eV"], abs=1e-5)
    assert a["number_of_electrons_from_density"] == pytest.approx(
        b["number_of_electrons_from_density"], rel=1e-9)


def test_both_backends_know_the_same_activations():
    from mlscale.model._numpy import ACTIVATIONS as NUMPY_ACTIVATIONS
    from mlscale.model._numpy import DERIVATIVES

    assert tuple(NUMPY_ACTIVATIONS) == tuple(DERIVATIVES) == ACTIVATION_NAMES
    assert set(ACTIVATIONS) == set(ACTIVATION_NAMES)


def loss_per_point(network, x_pf, grad_pe) -> np.ndarray:
    return np.einsum("pe,pe->p", network(x_pf), grad_pe)


@pytest.mark.parametrize("activation", sorted(ACTIVATIONS))
@pytest.mark.parametrize("restriction", ["none", "zero_negative", "absolute"])
def test_vjp_equals_central_finite_differences(tmp_path, activation, restriction):
    """The NumPy backward pass, evaluated in float64, against central differences of the
    float64 forward pass (each point's output depends on its own descriptors only, so one
    perturbation of feature f at every point gives the whole column f)."""
    save_model(tmp_path / "m.safetensors", torch_model(activation, restriction, seed=2),
               METADATA)
    network = NumpyNetwork.from_file(tmp_path / "m.safetensors", dtype=np.float64)
    rng = np.random.default_rng(4)
    x_pf = rng.normal(0.0, 3.0, (60, 5))
    grad_pe = rng.normal(size=(60, 4))
    vjp_pf = network.vjp(x_pf, grad_pe, chunk_points=13)
    assert vjp_pf.dtype == np.float64 and vjp_pf.shape == (60, 5)
    eps = 1e-6
    fd_pf = np.empty_like(x_pf)
    for f in range(5):
        step = np.zeros(5)
        step[f] = eps
        fd_pf[:, f] = (loss_per_point(network, x_pf + step, grad_pe)
                       - loss_per_point(network, x_pf - step, grad_pe)) / (2 * eps)
    assert np.abs(fd_pf).max() > 0
    np.testing.assert_allclose(vjp_pf, fd_pf, rtol=1e-6, atol=1e-6 * np.abs(fd_pf).max())


@pytest.mark.parametrize("activation", ["LeakyReLU", "Tanh"])
@pytest.mark.parametrize("restriction", ["none", "zero_negative"])
def test_vjp_affine_equals_central_finite_differences(tmp_path, activation, restriction):
    """vjp_affine (gradient offset + v_p·slope, the last layer's backward pass as two
    vectors) against central differences of the float64 forward pass."""
    save_model(tmp_path / "m.safetensors", torch_model(activation, restriction, seed=6),
               METADATA)
    network = NumpyNetwork.from_file(tmp_path / "m.safetensors", dtype=np.float64)
    rng = np.random.default_rng(7)
    x_pf = rng.normal(0.0, 3.0, (50, 5))
    offset_e, slope_e, v_p = rng.normal(size=4), rng.normal(size=4), rng.normal(size=50)
    vjp_pf = network.vjp_affine(x_pf, offset_e, slope_e, v_p, chunk_points=13)
    assert vjp_pf.dtype == np.float64 and vjp_pf.shape == (50, 5)
    grad_pe = offset_e + v_p[:, None] * slope_e
    eps = 1e-6
    fd_pf = np.empty_like(x_pf)
    for f in range(5):
        step = np.zeros(5)
        step[f] = eps
        fd_pf[:, f] = (loss_per_point(network, x_pf + step, grad_pe)
                       - loss_per_point(network, x_pf - step, grad_pe)) / (2 * eps)
    np.testing.assert_allclose(vjp_pf, fd_pf, rtol=1e-6, atol=1e-6 * np.abs(fd_pf).max())
    with pytest.raises(MlscaleError, match="differ in their number of points"):
        network.vjp_affine(x_pf, offset_e, slope_e, v_p[:-1])


@pytest.mark.parametrize("activation", sorted(ACTIVATIONS))
@pytest.mark.parametrize("restriction", ["none", "zero_negative", "absolute"])
def test_numpy_vjp_equals_torch_autograd(tmp_path, activation, restriction):
    save_model(tmp_path / "m.safetensors", torch_model(activation, restriction, seed=3),
               METADATA)
    rng = np.random.default_rng(5)
    x_pf = rng.normal(0.0, 3.0, (300, 5))
    grad_pe = rng.normal(size=(300, 4))
    numpy_pf = load_model(tmp_path / "m.safetensors", "numpy").vjp(x_pf, grad_pe, 64)
    torch_pf = load_model(tmp_path / "m.safetensors", "torch").vjp(x_pf, grad_pe, 1000)
    assert numpy_pf.dtype == torch_pf.dtype == np.float64
    np.testing.assert_allclose(numpy_pf, torch_pf, rtol=1e-5, atol=1e-5 * np.abs(torch_pf).max())


def test_vjp_rejects_bad_input(tmp_path):
    save_model(tmp_path / "m.safetensors", torch_model(), METADATA)
    for backend in ("numpy", "torch"):
        model = load_model(tmp_path / "m.safetensors", backend)
        with pytest.raises(MlscaleError, match=r"grad_ldos must have shape \[points, 4\]"):
            model.vjp(np.zeros((3, 5)), np.zeros((3, 5)))
        with pytest.raises(MlscaleError, match="differ in their number of points"):
            model.vjp(np.zeros((3, 5)), np.zeros((2, 4)))
        with pytest.raises(MlscaleError, match="grad_ldos contain NaN"):
            model.vjp(np.zeros((3, 5)), np.full((3, 4), np.inf))
    with pytest.raises(MlscaleError, match="unknown network backend 'jax'"):
        load_model(tmp_path / "m.safetensors", "jax")


def test_loading_the_shipped_model_with_numpy_never_imports_torch():
    code = ("import sys\n"
            "import numpy as np\n"
            "import mlscale.examples, mlscale.model\n"
            "model = mlscale.model.load_model(mlscale.examples.shipped_model_path())\n"
            "ldos = model(np.ones((3, model.n_features)))\n"
            "model.vjp(np.ones((3, model.n_features)), np.ones_like(ldos))\n"
            "assert model.info.species == ('Al',), model.info.species\n"
            "assert 'torch' not in sys.modules, 'torch imported'\n"
            "print('NO TORCH')\n")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    assert "NO TORCH" in run.stdout


def test_shipped_model_is_the_same_function_in_both_backends():
    """The file format is unchanged: the shipped model loads in both backends, which agree
    to float32 round-off (and the NumPy one is float32 BLAS: not bit-equal to torch)."""
    from mlscale.examples import shipped_model_path

    numpy_model = load_model(shipped_model_path())
    torch_model_ = load_model(shipped_model_path(), "torch")
    assert numpy_model.info == torch_model_.info
    assert numpy_model.info.settings.layers == (91, 400, 400, 176)
    rng = np.random.default_rng(6)
    x_pf = (numpy_model.input_shift + numpy_model.input_scale
            * rng.normal(size=(400, 91)).astype(np.float32))
    a, b = numpy_model(x_pf, 150), torch_model_(x_pf)
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5 * np.abs(b).max())
