"""The model file's metadata, parsed once into ModelInfo, and the chunked evaluation both
backends share."""

from __future__ import annotations

import numpy as np
import pytest

from mlscale.config import BispectrumSettings, EnergyGrid, ModelSettings
from mlscale.errors import MlscaleError
from mlscale.model import DEFAULT_CHUNK_POINTS, ModelInfo
from mlscale.model._format import predict_in_chunks, tensor_shapes

SETTINGS = ModelSettings(layers=(5, 7, 4), activation="Tanh", ldos_restriction="absolute")
METADATA = {"descriptors": BispectrumSettings(twojmax=2).with_species(["Be"]).to_dict(),
            "energy_grid": EnergyGrid(-5.0, 2.5, 4).to_dict(), "temperature_K": 300,
            "species": ["Be"], "valence_electrons": {"Be": 2}, "ecutrho_Ry": 160,
            "training": {"note": "kept"}, "model": SETTINGS.to_dict()}


def test_model_info_holds_the_parsed_metadata():
    info = ModelInfo.from_metadata(METADATA)
    assert info.descriptors == BispectrumSettings(twojmax=2).with_species(["Be"])
    assert info.energy_grid == EnergyGrid(-5.0, 2.5, 4)
    assert info.temperature_K == 300.0 and isinstance(info.temperature_K, float)
    assert info.species == ("Be",)
    assert info.valence_electrons == {"Be": 2.0}
    assert info.ecutrho_Ry == 160.0
    assert info.settings == SETTINGS
    assert info.metadata["training"] == {"note": "kept"}
    METADATA["training"]["note"] = "changed"  # the info holds a copy
    try:
        assert info.metadata["training"] == {"note": "kept"}
    finally:
        METADATA["training"]["note"] = "kept"
    without = {k: v for k, v in METADATA.items() if k not in ("ecutrho_Ry", "model",
                                                               "valence_electrons")}
    other = ModelInfo.from_metadata(without, SETTINGS)
    assert other.ecutrho_Ry is None and other.valence_electrons == {}


@pytest.mark.parametrize("change, message", [
    ({"temperature_K": "warm"}, "invalid model metadata"),
    ({"temperature_K": -1.0}, "temperature must be positive"),
    ({"model": {"layers": [5, 4], "activation": "Swish"}}, "unknown activation 'Swish'"),
    ({"model": {"layers": [5, 7, 4], "width": 3}}, "invalid model settings"),
    ({"energy_grid": EnergyGrid(0.0, 1.0, 9).to_dict()}, "energy grid has 9 energies"),
    ({"descriptors": BispectrumSettings().to_dict()}, "descriptors have 91 features"),
])
def test_model_info_rejects_bad_metadata(change, message):
    with pytest.raises(MlscaleError, match=message):
        ModelInfo.from_metadata({**METADATA, **change})
    with pytest.raises(MlscaleError, match="lacks energy_grid, species"):
        ModelInfo.from_metadata({k: v for k, v in METADATA.items()
                                 if k not in ("energy_grid", "species")})


def test_tensor_shapes_name_the_torch_state_dict():
    torch = pytest.importorskip("torch")
    from mlscale.model import LDOSModel

    state = LDOSModel(ModelSettings(layers=(5, 7, 6, 4))).state_dict()
    assert tensor_shapes((5, 7, 6, 4)) == {name: tuple(t.shape) for name, t in state.items()}
    assert torch.is_tensor(state["input_shift"])


def test_chunks_cover_every_point_once_in_order():
    x_pf = np.arange(23 * 3, dtype=float).reshape(23, 3)
    sizes = []

    def evaluate(chunk):
        sizes.append(len(chunk))
        assert chunk.dtype == np.float32
        return np.repeat(chunk.sum(axis=1, keepdims=True), 2, axis=1)

    out = predict_in_chunks(evaluate, 3, 2, x_pf, chunk_points=5)
    assert sizes == [5, 5, 5, 5, 3] and out.dtype == np.float64
    np.testing.assert_array_equal(out, np.repeat(x_pf.sum(axis=1, keepdims=True), 2, axis=1))
    assert predict_in_chunks(evaluate, 3, 2, np.zeros((0, 3)), 5).shape == (0, 2)
    assert DEFAULT_CHUNK_POINTS == 8192
