"""`mlscale predict --ensemble`: the members' values, mean and spread in results.json,
checked against separate single-model predictions (the existing code path)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from tests.commands.test_predict import mlscale

pytestmark = pytest.mark.slow

KEYS = ("fermi_energy_eV", "band_energy_eV", "entropy_contribution_eV", "total_energy_eV")
# the single prediction keeps its LDOS (or a window of it) in float32 for the density, an
# ensemble member uses its float64 chunks: the density terms of the total energy agree to
# float32 round-off (~1e-7 relative), the DOS scalars to float64 round-off
ABS_EV = {"total_energy_eV": 1e-5}


def _tiny_model(be2, path, seed, energies=(-5.0, 2.5, 11)):
    """An untrained Be model near Be2's mean LDOS (as test_predict's), torch seed ``seed``."""
    import torch

    from mlscale.config import BispectrumSettings, EnergyGrid, ModelSettings
    from mlscale.model import LDOSModel, save_model

    torch.manual_seed(seed)
    descriptors = np.load(be2 / "Be_snapshot0.in.npy")[..., 3:].reshape(-1, 91)
    ldos = np.load(be2 / "Be_snapshot0.out.npy").reshape(-1, 11)
    model = LDOSModel(ModelSettings(layers=(91, 16, energies[2]), activation="Tanh"))
    model.set_scaling(descriptors.mean(0), descriptors.std(0) + 1e-12, ldos.mean(0),
                      0.05 * ldos.std(0) + 1e-12)
    metadata = {
        "descriptors": BispectrumSettings(species=("Be",)).to_dict(),
        "energy_grid": EnergyGrid(*energies).to_dict(),
        "temperature_K": 298.0, "species": ["Be"], "valence_electrons": {"Be": 2},
        "ecutrho_Ry": 160.0,
    }
    save_model(path, model, metadata)
    return path


@pytest.fixture(scope="module")
def models(be2, tmp_path_factory):
    directory = tmp_path_factory.mktemp("ensemble_models")
    return [_tiny_model(be2, directory / f"m{seed}.safetensors", seed) for seed in (7, 8)]


def _predict(be2, tmp_path_factory, name, args, ranks=1):
    out = tmp_path_factory.mktemp(name)
    run = mlscale(["predict", be2 / "Be_snapshot0.out", "--pseudopotentials", be2,
                   "--output", out, *args], ranks=ranks)
    assert run.returncode == 0, run.stderr[-3000:]
    return json.loads((out / "results.json").read_text()), run.stdout


@pytest.fixture(scope="module")
def singles(be2, models, tmp_path_factory):
    """Each model's own prediction, without --ensemble."""
    return [_predict(be2, tmp_path_factory, f"single{i}", ["--model", m])[0]
            for i, m in enumerate(models)]


def test_one_model_twice_has_zero_spread_and_the_single_mean(be2, models, singles,
                                                             tmp_path_factory):
    results, stdout = _predict(be2, tmp_path_factory, "twice",
                               ["--model", models[0], "--ensemble", models[0]])
    ensemble = results["ensemble"]
    assert ensemble["size"] == 2 and ensemble["models"] == [str(models[0])] * 2
    for key in KEYS:
        tol = ABS_EV.get(key, 1e-9)
        assert results[key] == pytest.approx(singles[0][key], rel=1e-9, abs=tol)
        for member in ensemble["members"]:  # the member from the recorded descriptors
            assert member[key] == pytest.approx(singles[0][key], rel=1e-9, abs=tol)
        assert ensemble["mean"][key] == pytest.approx(singles[0][key], rel=1e-9, abs=tol)
        assert ensemble["std"][key] == 0.0  # the same model on the same descriptors
    assert "ensemble of 2" in stdout


@pytest.mark.parametrize("ranks", [1, 2])
def test_two_models_spread_is_the_std_of_their_single_predictions(be2, models, singles,
                                                                  tmp_path_factory, ranks):
    results, _ = _predict(be2, tmp_path_factory, f"pair{ranks}",
                          ["--model", models[0], "--ensemble", models[1]], ranks=ranks)
    ensemble = results["ensemble"]
    n_atoms = results["atoms"]
    for key in KEYS:
        values = np.array([s[key] for s in singles])
        tol = ABS_EV.get(key, 1e-9)
        assert abs(values[1] - values[0]) > 100 * tol  # the two models differ
        assert [m[key] for m in ensemble["members"]] == pytest.approx(values, rel=1e-9, abs=tol)
        assert ensemble["mean"][key] == pytest.approx(values.mean(), rel=1e-9, abs=tol)
        assert ensemble["std"][key] == pytest.approx(np.std(values, ddof=1), rel=1e-6,
                                                     abs=2 * tol)
    for key in ("band_energy", "total_energy"):
        values = np.array([s[f"{key}_eV"] for s in singles]) / n_atoms
        assert ensemble["std"][f"{key}_per_atom_eV"] == pytest.approx(np.std(values, ddof=1),
                                                                     rel=1e-6)
        assert ensemble["mean"][f"{key}_per_atom_eV"] == pytest.approx(values.mean(),
                                                                      rel=1e-9)


@pytest.mark.parametrize("ranks", [1, 2])
def test_incompatible_member_is_one_clear_error(be2, models, tmp_path_factory, ranks):
    other = _tiny_model(be2, tmp_path_factory.mktemp("other") / "grid.safetensors", 9,
                        energies=(-4.0, 2.5, 11))
    out = tmp_path_factory.mktemp("bad")
    run = mlscale(["predict", be2 / "Be_snapshot0.out", "--model", models[0],
                   "--ensemble", other, "--output", out], ranks=ranks)
    assert run.returncode == 1
    lines = [line for line in run.stderr.splitlines() if line.startswith("mlscale: error:")]
    assert len(lines) == 1 and "energy grid" in lines[0], run.stderr[-2000:]
    assert "Traceback" not in run.stderr
    assert not (out / "results.json").exists()


def test_ensemble_with_forces_is_refused_before_the_output_is_touched(be2, models,
                                                                       tmp_path_factory):
    """--ensemble --forces: one clear error, and an earlier run's results stay in place."""
    out = tmp_path_factory.mktemp("forces")
    (out / "results.json").write_text('{"earlier": true}')
    run = mlscale(["predict", be2 / "Be_snapshot0.out", "--model", models[0],
                   "--ensemble", models[1], "--pseudopotentials", be2, "--forces",
                   "--output", out], ranks=2)
    assert run.returncode == 1
    lines = [line for line in run.stderr.splitlines() if line.startswith("mlscale: error:")]
    assert len(lines) == 1 and "--ensemble does not compute forces" in lines[0], run.stderr
    assert json.loads((out / "results.json").read_text()) == {"earlier": True}
