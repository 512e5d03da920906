"""import-mala: MALA 1.4 archive -> mlscale model, checked against MALA 1.4.0's own prediction.

The reference (tests/data/mala/be2_snapshot0_mala_prediction.*) was computed by
tests/data/mala/make_mala_prediction.py in MALA's venv with MALA's Predictor; the
archive Be_model_mala14.zip is MALA's Be2 test model re-saved by MALA 1.4.0
(tests/data/mala/resave_be_model.py).
"""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from mlscale import electrons
from mlscale.cli import main
from mlscale.errors import MlscaleError
from mlscale.model import (
    DEFAULT_CHUNK_POINTS,
    ModelInfo,
    TorchModel,
    convert_mala_model,
    import_mala,
    load_model,
    read_mala_archive,
)

DATA = Path(__file__).resolve().parents[1] / "data" / "mala"
ARCHIVE = DATA / "Be_model_mala14.zip"
REFERENCE = json.loads((DATA / "be2_snapshot0_mala_prediction.json").read_text())


@pytest.fixture(scope="module")
def be_model(tmp_path_factory):
    path = tmp_path_factory.mktemp("model") / "be.safetensors"
    assert main(["import-mala", str(ARCHIVE), "-o", str(path)]) == 0
    return load_model(path, "torch")  # torch: float32 as MALA's own predictor


def predict_ldos(module, metadata, x_pf, chunk_points=DEFAULT_CHUNK_POINTS):
    """The torch backend's LDOS from a converted (in-memory) module and its metadata."""
    return TorchModel(module, ModelInfo.from_metadata(metadata, module.settings))(
        x_pf, chunk_points)


def test_metadata_from_mala_parameters(be_model):
    metadata = be_model.info.metadata
    assert metadata["species"] == ["Be"]
    assert metadata["energy_grid"] == {"start": -5.0, "step": 2.5, "count": 11}
    assert metadata["temperature_K"] == pytest.approx(299.98637294316444, rel=1e-15)
    assert metadata["valence_electrons"] == {"Be": 2.0}
    assert metadata["ecutrho_Ry"] == 160.0
    d = metadata["descriptors"]
    assert (d["twojmax"], d["rcutfac"], d["rfac0"], d["switchflag"]) == (10, 4.67637, 0.99363, 1)
    assert (d["radii"], d["weights"], d["rmin0"]) == ([0.5], [1.0], 0.0)


def test_ldos_matches_mala_prediction(be_model, be2):
    x_pf = np.load(be2 / "Be_snapshot0.in.npy", allow_pickle=False)[..., 3:].reshape(-1, 91)
    ldos_pe = be_model(x_pf, chunk_points=1000)
    with np.load(DATA / "be2_snapshot0_mala_prediction.npz", allow_pickle=False) as ref:
        np.testing.assert_allclose(ldos_pe[ref["points_p"]], ref["ldos_pe"], rtol=1e-5, atol=0)
        np.testing.assert_allclose(ldos_pe.sum(axis=0), ref["ldos_sum_e"], rtol=1e-5, atol=0)

    info = json.loads((be2 / "Be_snapshot0.info.json").read_text())
    voxel_volume = abs(np.linalg.det(np.array(info["voxel"]["array"])))
    dos_e = electrons.dos_from_ldos(ldos_pe, voxel_volume)
    result = electrons.electronic_structure(dos_e, -5.0 + 2.5 * np.arange(11),
                                            REFERENCE["number_of_electrons"],
                                            REFERENCE["temperature_K"])
    assert result["fermi_energy_eV"] == pytest.approx(REFERENCE["fermi_energy_eV"], abs=1e-6)
    assert result["band_energy_eV"] == pytest.approx(REFERENCE["band_energy_eV"], abs=1e-6)


def test_pickled_scalers_are_refused(tmp_path, be2):
    with pytest.raises(MlscaleError, match=r"pickled.*re-save it with MALA 1\.4.*save_run"):
        import_mala(be2 / "Be_model.zip", tmp_path / "x.safetensors")
    assert not (tmp_path / "x.safetensors").exists()
    assert main(["import-mala", str(be2 / "Be_model.zip"), "-o", str(tmp_path / "x")]) == 1


def rewrite(tmp_path, change=None, drop=(), corrupt=False) -> Path:
    """A copy of the Be archive with member JSON edited by ``change(name, data)``."""
    out = tmp_path / "edited.zip"
    with zipfile.ZipFile(ARCHIVE) as src, zipfile.ZipFile(out, "w") as dst:
        for name in src.namelist():
            if any(name.endswith(d) for d in drop):
                continue
            data = src.read(name)
            if change and name.endswith(".json"):
                member = json.loads(data)
                change(name, member)
                data = json.dumps(member).encode()
            dst.writestr(name, data)
    if corrupt:
        raw = bytearray(out.read_bytes())
        raw[len(raw) // 3: len(raw) // 3 + 64] = b"\0" * 64
        out.write_bytes(bytes(raw))
    return out


def test_corrupt_archives(tmp_path):
    with pytest.raises(MlscaleError, match="corrupt or truncated"):
        read_mala_archive(rewrite(tmp_path, corrupt=True))
    truncated = tmp_path / "truncated.zip"
    truncated.write_bytes(ARCHIVE.read_bytes()[:20000])
    with pytest.raises(MlscaleError, match="corrupt or truncated"):
        read_mala_archive(truncated)
    with pytest.raises(MlscaleError, match="file not found"):
        read_mala_archive(tmp_path / "missing.zip")
    with pytest.raises(MlscaleError, match="lacks Be_model_mala14.network.pth"):
        read_mala_archive(rewrite(tmp_path, drop=(".network.pth",)))


def test_network_file_with_code_is_refused(tmp_path):
    """A .pth that needs arbitrary unpickling (not plain tensors) is rejected."""
    buffer = io.BytesIO()
    torch.save({"layers.0.weight": torch.zeros(2, 2), "extra": Path("x")}, buffer)
    out = tmp_path / "evil.zip"
    with zipfile.ZipFile(ARCHIVE) as src, zipfile.ZipFile(out, "w") as dst:
        for name in src.namelist():
            dst.writestr(name, buffer.getvalue() if name.endswith(".pth") else src.read(name))
    with pytest.raises(MlscaleError, match="weights_only"):
        read_mala_archive(out)


def test_bad_parameters(tmp_path):
    def sizes(name, member):
        if name.endswith("params.json"):
            member["network"]["layer_sizes"] = [91, 50, 11]
    with pytest.raises(MlscaleError, match="does not match layer_sizes"):
        convert_mala_model(read_mala_archive(rewrite(tmp_path, sizes)))

    def std_zero(name, member):
        if name.endswith("iscaler.json"):
            member["stds"][0][5] = 0.0
    with pytest.raises(MlscaleError, match="zero or non-finite scale"):
        convert_mala_model(read_mala_archive(rewrite(tmp_path, std_zero)))


def numpy_mala_forward(archive, x_pf, output_activation):
    """MALA's documented forward pass in NumPy: scale, Linear/ReLU..., activation, unscale."""
    state = {k: v.double().numpy() for k, v in archive.state.items()}
    mean = np.array(archive.input_scaler["means"]).ravel()
    std = np.array(archive.input_scaler["stds"]).ravel()
    h = (x_pf - mean) / std
    h = np.maximum(h @ state["layers.0.weight"].T + state["layers.0.bias"], 0)
    h = h @ state["layers.2.weight"].T + state["layers.2.bias"]
    h = output_activation(h)
    lo, hi = archive.output_scaler["total_min"], archive.output_scaler["total_max"]
    return h * (hi - lo) + lo


@pytest.mark.parametrize("include_output", [True, False])
def test_activation_conventions(tmp_path, include_output):
    """MALA 1.4 layer/activation rules: the output activation only with include_output_layer."""
    def edit(name, member):
        if name.endswith("params.json"):
            member["network"]["layer_activations_include_output_layer"] = include_output
            member["targets"]["restrict_targets"] = None
    archive = read_mala_archive(rewrite(tmp_path, edit))
    model, metadata = convert_mala_model(archive)
    mean = np.array(archive.input_scaler["means"]).ravel()
    std = np.array(archive.input_scaler["stds"]).ravel()
    x_pf = mean + std * np.random.default_rng(1).normal(0.0, 1.5, (200, 91))
    act = (lambda h: np.maximum(h, 0)) if include_output else (lambda h: h)
    expected = numpy_mala_forward(archive, x_pf.astype(np.float32).astype(float), act)
    np.testing.assert_allclose(predict_ldos(model, metadata, x_pf), expected, rtol=1e-4,
                               atol=1e-6 * np.abs(expected).max())
    assert model.settings.layers == ((91, 100, 11, 11) if include_output else (91, 100, 11))
    assert metadata["mala"]["layer_activations"] == ["ReLU", "ReLU" if include_output else None]


@pytest.mark.parametrize("restriction, expected_name, post", [
    ("zero_out_negative", "zero_negative", lambda y: np.maximum(y, 0.0)),
    ("absolute_values", "absolute", np.abs),
    (None, "none", lambda y: y)])
def test_negative_ldos_restriction_as_mala(tmp_path, restriction, expected_name, post):
    """Without an output ReLU the network can give negative LDOS; MALA's predictor then
    zeroes them (or takes absolute values): the converted model must do the same."""
    def edit(name, member):
        if name.endswith("params.json"):
            member["network"]["layer_activations_include_output_layer"] = False
            member["targets"]["restrict_targets"] = restriction
    archive = read_mala_archive(rewrite(tmp_path, edit))
    model, metadata = convert_mala_model(archive)
    assert model.settings.ldos_restriction == expected_name
    assert metadata["mala"]["restrict_targets"] == restriction
    mean = np.array(archive.input_scaler["means"]).ravel()
    std = np.array(archive.input_scaler["stds"]).ravel()
    x_pf = mean + std * np.random.default_rng(2).normal(0.0, 3.0, (400, 91))
    raw = numpy_mala_forward(archive, x_pf.astype(np.float32).astype(float), lambda h: h)
    assert (raw < 0).any(), "the test needs some negative raw outputs"
    np.testing.assert_allclose(predict_ldos(model, metadata, x_pf), post(raw), rtol=1e-4,
                               atol=1e-6 * np.abs(raw).max())


def test_unknown_restriction_is_refused(tmp_path):
    def edit(name, member):
        if name.endswith("params.json"):
            member["targets"]["restrict_targets"] = "clip_to_42"
    with pytest.raises(MlscaleError, match="restrict_targets 'clip_to_42'"):
        convert_mala_model(read_mala_archive(rewrite(tmp_path, edit)))


def test_overrides_and_missing_info(tmp_path):
    archive = read_mala_archive(rewrite(tmp_path, drop=(".info.json",)))
    with pytest.raises(MlscaleError, match="--species"):
        convert_mala_model(archive)
    with pytest.raises(MlscaleError, match="--temperature"):
        convert_mala_model(archive, species=["Be"])
    _, metadata = convert_mala_model(archive, species=["Be"], temperature_K=500.0,
                                     valence_electrons={"Be": 2})
    assert (metadata["temperature_K"], metadata["valence_electrons"]) == (500.0, {"Be": 2.0})
    assert "ecutrho_Ry" not in metadata

    def weights(name, member):
        if name.endswith("params.json"):
            member["descriptors"]["bispectrum_element_weights"] = [1.0]
    with pytest.raises(MlscaleError, match="2 species.*1 MALA bispectrum element weights"):
        convert_mala_model(read_mala_archive(rewrite(tmp_path, weights)), species=["Al", "Be"])
