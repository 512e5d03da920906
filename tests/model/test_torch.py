"""The torch backend: LDOSModel's forward pass against a NumPy re-implementation, safe
save/load, corrupt files (both backends' readers), ensembles."""

from __future__ import annotations

import json

import numpy as np
import pytest
import safetensors.torch
import torch

from mlscale.config import BispectrumSettings, EnergyGrid, ModelSettings
from mlscale.errors import MlscaleError
from mlscale.model import (
    DEFAULT_CHUNK_POINTS,
    LDOSModel,
    ModelInfo,
    TorchModel,
    ensemble_model,
    load_model,
    save_model,
)

# twojmax 2 gives 5 bispectrum features; 4 energies
SETTINGS = ModelSettings(layers=(5, 8, 6, 4), activation="LeakyReLU")
METADATA = {"descriptors": BispectrumSettings(twojmax=2).with_species(["Be"]).to_dict(),
            "energy_grid": EnergyGrid(-5.0, 2.5, 4).to_dict(), "temperature_K": 300.0,
            "species": ["Be"], "training": {"note": "test"}}


def make_model(seed=0) -> LDOSModel:
    torch.manual_seed(seed)
    model = LDOSModel(SETTINGS)
    rng = np.random.default_rng(seed)
    model.set_scaling(rng.normal(size=5), rng.uniform(0.5, 2, 5), rng.normal(size=4),
                      rng.uniform(0.5, 2, 4))
    return model


def predict_ldos(module: LDOSModel, x_pf, chunk_points=DEFAULT_CHUNK_POINTS) -> np.ndarray:
    """The torch backend's prediction of an in-memory module (METADATA's energies)."""
    return TorchModel(module, ModelInfo.from_metadata(METADATA, module.settings))(
        x_pf, chunk_points=chunk_points)


def numpy_forward(model: LDOSModel, x_pf: np.ndarray) -> np.ndarray:
    """The same network written out in NumPy (float64) from the module's tensors."""
    state = {name: t.double().numpy() for name, t in model.state_dict().items()}
    h = (x_pf - state["input_shift"]) / state["input_scale"]
    linear = sorted({name.split(".")[1] for name in state if name.startswith("mlp.")}, key=int)
    for i, index in enumerate(linear):
        h = h @ state[f"mlp.{index}.weight"].T + state[f"mlp.{index}.bias"]
        if i < len(linear) - 1:
            h = np.where(h > 0, h, 0.01 * h)  # LeakyReLU, slope 0.01
    return h * state["output_scale"] + state["output_shift"]


def write_raw(path, tensors: dict, header: dict | None):
    metadata = None if header is None else {"mlscale": json.dumps(header)}
    path.write_bytes(safetensors.torch.save(tensors, metadata=metadata))


def test_forward_matches_numpy_and_predict_chunks():
    model = make_model()
    x_pf = np.random.default_rng(1).normal(size=(23, 5)) * 3
    reference = numpy_forward(model, x_pf)
    for chunk in (1, 7, 23, 1000):
        ldos = predict_ldos(model, x_pf, chunk_points=chunk)
        assert ldos.dtype == np.float64 and ldos.shape == (23, 4)
        np.testing.assert_allclose(ldos, reference, rtol=2e-5, atol=2e-5)


def test_predict_rejects_bad_input():
    model = make_model()
    with pytest.raises(MlscaleError, match=r"\[points, 5\]"):
        predict_ldos(model, np.zeros((3, 6)))
    bad = np.zeros((4, 5))
    bad[2, 1] = np.nan
    with pytest.raises(MlscaleError, match="NaN"):
        predict_ldos(model, bad, chunk_points=2)


def test_save_load_round_trip(tmp_path):
    model = make_model(3)
    path = tmp_path / "model.safetensors"
    save_model(path, model, METADATA)
    assert [p.name for p in tmp_path.iterdir()] == ["model.safetensors"]  # no temp files left
    loaded = load_model(path, "torch")
    metadata = loaded.info.metadata
    x_pf = np.random.default_rng(2).normal(size=(10, 5))
    np.testing.assert_array_equal(loaded(x_pf), predict_ldos(model, x_pf))
    assert metadata["format"] == "mlscale-model" and metadata["format_version"] == 1
    assert metadata["model"] == {"layers": [5, 8, 6, 4], "activation": "LeakyReLU",
                                 "ldos_restriction": "none"}
    for key in ("descriptors", "energy_grid", "temperature_K", "species", "training"):
        assert metadata[key] == METADATA[key]
    assert metadata["units"]["ldos"] == "1/(eV*Angstrom^3)"
    assert EnergyGrid.from_dict(metadata["energy_grid"]).count == 4


def test_save_checks_metadata(tmp_path):
    model = make_model()
    with pytest.raises(MlscaleError, match="output layer has 4"):
        save_model(tmp_path / "m.safetensors", model,
                   {**METADATA, "energy_grid": EnergyGrid(-5, 2.5, 11).to_dict()})
    with pytest.raises(MlscaleError, match="input layer has 5"):
        save_model(tmp_path / "m.safetensors", model,
                   {**METADATA, "descriptors": BispectrumSettings().to_dict()})
    with pytest.raises(MlscaleError, match="lacks species"):
        save_model(tmp_path / "m.safetensors", model,
                   {k: v for k, v in METADATA.items() if k != "species"})
    with pytest.raises(MlscaleError, match="does not exist"):
        save_model(tmp_path / "missing" / "m.safetensors", model, METADATA)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("backend", ["torch", "numpy"])
def test_load_errors(tmp_path, backend):
    """Both backends' readers of a model file (TorchModel, NumpyNetwork for predict)."""

    def loader(path):
        return load_model(path, backend)

    good = tmp_path / "good.safetensors"
    save_model(good, make_model(), METADATA)
    data = good.read_bytes()
    tensors = safetensors.torch.load(data)
    with safetensors.safe_open(str(good), "pt") as handle:
        header = json.loads(handle.metadata()["mlscale"])

    with pytest.raises(MlscaleError, match="file not found"):
        loader(tmp_path / "absent.safetensors")

    truncated = tmp_path / "truncated.safetensors"
    truncated.write_bytes(data[:-100])
    with pytest.raises(MlscaleError, match="corrupt or truncated"):
        loader(truncated)

    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(b"\x00\x01 not a model at all" * 10)
    with pytest.raises(MlscaleError, match="corrupt or truncated"):
        loader(garbage)

    plain = tmp_path / "plain.safetensors"
    write_raw(plain, tensors, None)
    with pytest.raises(MlscaleError, match="not an mlscale-model file"):
        loader(plain)

    other = tmp_path / "other.safetensors"
    write_raw(other, tensors, {**header, "format": "mlscale-checkpoint"})
    with pytest.raises(MlscaleError, match="'mlscale-checkpoint' file, not an mlscale-model"):
        loader(other)

    future = tmp_path / "future.safetensors"
    write_raw(future, tensors, {**header, "format_version": 2})
    with pytest.raises(MlscaleError, match="format version 2"):
        loader(future)

    wrong_layers = tmp_path / "layers.safetensors"
    write_raw(wrong_layers, tensors, {**header, "model": {"layers": [5, 9, 6, 4],
                                                          "activation": "LeakyReLU"}})
    with pytest.raises(MlscaleError, match="do not match the declared layers"):
        loader(wrong_layers)

    missing_tensor = tmp_path / "missing.safetensors"
    write_raw(missing_tensor, {k: v for k, v in tensors.items() if k != "output_scale"}, header)
    with pytest.raises(MlscaleError, match="do not match the declared layers"):
        loader(missing_tensor)

    nan = tmp_path / "nan.safetensors"
    write_raw(nan, {**tensors, "mlp.0.bias": torch.full((8,), float("nan"))}, header)
    with pytest.raises(MlscaleError, match="NaN"):
        loader(nan)

    bad_grid = tmp_path / "grid.safetensors"
    write_raw(bad_grid, tensors, {**header, "energy_grid": {"start": 0, "step": 1, "count": 5}})
    with pytest.raises(MlscaleError, match="energy grid has 5"):
        loader(bad_grid)


def test_model_settings_errors():
    with pytest.raises(MlscaleError, match="unknown activation"):
        LDOSModel(ModelSettings(layers=(5, 4), activation="Swish9"))
    with pytest.raises(MlscaleError, match="two positive layer sizes"):
        LDOSModel(ModelSettings(layers=(5,)))
    with pytest.raises(MlscaleError, match="nonzero"):
        make_model().set_scaling(np.zeros(5), np.zeros(5), np.zeros(4), np.ones(4))
    with pytest.raises(MlscaleError, match="unknown ldos_restriction"):
        ModelSettings(layers=(5, 4), ldos_restriction="clip")


@pytest.mark.parametrize("restriction", ["zero_negative", "absolute"])
def test_ldos_restriction_in_prediction_and_file(tmp_path, restriction):
    """The restriction acts on predictions (not on the forward pass used in training),
    survives save/load, and files without the key (older files) mean no restriction."""
    model = make_model(3)
    x_pf = np.random.default_rng(3).normal(0.0, 3.0, (300, 5))
    raw = numpy_forward(model, x_pf)
    assert (raw < 0).any() and (raw > 0).any()
    expected = np.maximum(raw, 0.0) if restriction == "zero_negative" else np.abs(raw)
    restricted = LDOSModel(ModelSettings(SETTINGS.layers, SETTINGS.activation, restriction))
    restricted.load_state_dict(model.state_dict())
    np.testing.assert_allclose(predict_ldos(restricted, x_pf), expected, rtol=1e-5, atol=1e-5)
    with torch.no_grad():
        forward = restricted(torch.from_numpy(x_pf.astype(np.float32))).numpy()
    np.testing.assert_allclose(forward, raw, rtol=1e-5, atol=1e-5)
    save_model(tmp_path / "m.safetensors", restricted, METADATA)
    loaded = load_model(tmp_path / "m.safetensors", "torch")
    assert loaded.settings.ldos_restriction == restriction
    np.testing.assert_array_equal(loaded(x_pf), predict_ldos(restricted, x_pf))

    tensors = {name: t.contiguous() for name, t in model.state_dict().items()}
    header = {"format": "mlscale-model", "format_version": 1, **METADATA,
              "model": {"layers": list(SETTINGS.layers), "activation": SETTINGS.activation}}
    write_raw(tmp_path / "old.safetensors", tensors, header)
    old = load_model(tmp_path / "old.safetensors", "torch")
    assert old.settings.ldos_restriction == "none"
    np.testing.assert_allclose(old(x_pf), raw, rtol=1e-5, atol=1e-5)


def test_ensemble_is_the_mean_of_its_members():
    members = []
    for seed in (1, 2, 3):
        model = make_model(0)  # same affine maps
        torch.manual_seed(seed)
        for module in model.mlp:
            if isinstance(module, torch.nn.Linear):
                module.reset_parameters()
        members.append(model)
    x_pf = np.random.default_rng(5).normal(size=(200, 5))
    expected = np.mean([numpy_forward(m, x_pf) for m in members], axis=0)
    ensemble = ensemble_model(members)
    assert ensemble.settings.layers == (5, 24, 18, 4)
    np.testing.assert_allclose(predict_ldos(ensemble, x_pf), expected, rtol=1e-5, atol=1e-5)
    # in float64 from the float32 weights: equal up to the rounding of weights / 3
    np.testing.assert_allclose(numpy_forward(ensemble, x_pf), expected, rtol=1e-6, atol=1e-7)
    other = make_model(1)  # different affine maps
    with pytest.raises(MlscaleError, match="differ in input_shift"):
        ensemble_model([members[0], other])
    with pytest.raises(MlscaleError, match="architecture"):
        ensemble_model([members[0], LDOSModel(ModelSettings(layers=(5, 8, 4)))])
