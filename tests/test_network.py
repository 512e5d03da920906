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
from mlscale.model import ACTIVATIONS, LDOSModel, save_model
from mlscale.network import NumpyNetwork, load_network, predict_ldos

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
    network, metadata = load_network(tmp_path / "m.safetensors")
    assert isinstance(network, NumpyNetwork) and network.settings == model.settings
    assert metadata["energy_grid"] == METADATA["energy_grid"]
    x_pf = np.random.default_rng(1).normal(0.0, 3.0, (500, 5))
    with torch.no_grad():
        raw = model(torch.from_numpy(x_pf.astype(np.float32))).double().numpy()
    assert (raw < 0).any() or activation in ("ReLU", "Sigmoid")
    expected = {"none": raw, "zero_negative": np.maximum(raw, 0), "absolute": np.abs(raw)}
    got = predict_ldos(network, x_pf, chunk_points=77)
    np.testing.assert_allclose(got, expected[restriction], rtol=1e-5,
                               atol=1e-5 * np.abs(raw).max())
    # a torch model passed to the same function gives the same numbers
    np.testing.assert_allclose(predict_ldos(model, x_pf), got, rtol=1e-5,
                               atol=1e-5 * np.abs(raw).max())


def test_numpy_network_rejects_bad_input(tmp_path):
    save_model(tmp_path / "m.safetensors", torch_model(), METADATA)
    network, _ = load_network(tmp_path / "m.safetensors")
    with pytest.raises(MlscaleError, match=r"shape \[points, 5\]"):
        predict_ldos(network, np.zeros((3, 6)))
    with pytest.raises(MlscaleError, match="NaN or infinity"):
        predict_ldos(network, np.full((3, 5), np.nan))
    with pytest.raises(MlscaleError, match="chunk_points must be positive"):
        predict_ldos(network, np.zeros((3, 5)), chunk_points=0)
    with pytest.raises(MlscaleError, match="do not match"):
        NumpyNetwork(ModelSettings((5, 4)), {"mlp.0.weight": np.zeros((4, 5))})


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
