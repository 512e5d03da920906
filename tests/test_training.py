"""Training: epoch order, determinism, output scaling, electron weight, early stopping, resume.

The snapshot data (mlscale.data) are tested in test_data.py, the command in
commands/test_train.py."""

from __future__ import annotations

import json
import signal

import numpy as np
import pytest
import safetensors
import torch

from mlscale import training
from mlscale.config import BispectrumSettings, EnergyGrid, ModelSettings, TrainingSettings
from mlscale.data import SnapshotSet, open_snapshots, scaling_statistics
from mlscale.errors import MlscaleError
from mlscale.model import DEFAULT_CHUNK_POINTS, ModelInfo, TorchModel, save_model
from mlscale.parallel import self_comm
from mlscale.training import TrainingInterrupted, shuffled_points, train
from tests.snapshot_data import N_ENERGIES, N_FEATURES, full_arrays, write_snapshots

LAYERS = ModelSettings(layers=(N_FEATURES, 16, N_ENERGIES))
METADATA = {"descriptors": BispectrumSettings(twojmax=2).with_species(["Be"]).to_dict(),
            "energy_grid": EnergyGrid(-5.0, 2.5, N_ENERGIES).to_dict(),
            "temperature_K": 300.0, "species": ["Be"]}


def predict_ldos(module, x_pf, metadata=METADATA, chunk_points=DEFAULT_CHUNK_POINTS):
    """The torch backend's LDOS [points, energies] from a trained (in-memory) module."""
    return TorchModel(module, ModelInfo.from_metadata(metadata, module.settings))(
        x_pf, chunk_points)


@pytest.fixture(autouse=True)
def one_torch_thread():
    """Small networks train fastest on one thread (and do not fight other processes)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def run(train_specs, validation_specs, settings, **kwargs):
    return train(train_specs, validation_specs, LAYERS, settings, METADATA, self_comm(), **kwargs)


def state_of(model):
    return {name: t.clone() for name, t in model.state_dict().items()}


def assert_same_state(a, b):
    assert a.keys() == b.keys()
    for name in a:
        assert torch.equal(a[name], b[name]), name


# -- training ---------------------------------------------------------------------------


def test_epoch_batches_follow_the_order(monkeypatch):
    monkeypatch.setattr(training, "ORDER_BLOCK", 40)  # several blocks per epoch
    for shuffle in ("points", "snapshots"):
        order = training.epoch_order(3, 2, [300, 1, 700], shuffle, 0, 1001)
        batches = list(training.epoch_batches(3, 2, [300, 1, 700], shuffle, 16, 0))
        assert [len(b) for b in batches] == [16] * 62 + [9]
        np.testing.assert_array_equal(np.concatenate(batches), order)
        tail = list(training.epoch_batches(3, 2, [300, 1, 700], shuffle, 16, 7))
        np.testing.assert_array_equal(np.concatenate(tail), order[7 * 16:])


def test_snapshot_shuffle_visits_snapshots_one_after_another():
    sizes = [300, 1, 700, 50]
    offsets = np.cumsum([0] + sizes)
    orders = [training.epoch_order(7, epoch, sizes, "snapshots", 0, 1051) for epoch in (0, 1)]
    for order in orders:
        assert sorted(order.tolist()) == list(range(1051))
        snapshot = np.searchsorted(offsets, order, side="right") - 1
        assert np.count_nonzero(np.diff(snapshot)) == 3  # each snapshot is one run
        first = order[snapshot == 2]
        assert not np.array_equal(first, np.sort(first))  # shuffled within
    assert not np.array_equal(orders[0], orders[1])


@pytest.mark.parametrize("npoints", [1, 2, 3, 17, 1000, 4097])
def test_shuffled_points_is_a_permutation_in_any_slices(npoints):
    order = shuffled_points((5, 0), npoints, 0, npoints)
    assert sorted(order.tolist()) == list(range(npoints))
    cuts = sorted({0, npoints, npoints // 3, npoints // 2})
    pieces = [shuffled_points((5, 0), npoints, a, b)
              for a, b in zip(cuts[:-1], cuts[1:], strict=True)]
    np.testing.assert_array_equal(np.concatenate(pieces), order)
    if npoints >= 1000:
        assert not np.array_equal(order, shuffled_points((5, 1), npoints, 0, npoints))
        assert not np.array_equal(order, shuffled_points((6, 0), npoints, 0, npoints))
        assert abs(np.corrcoef(order, np.arange(npoints))[0, 1]) < 0.1
        # every position is equally likely for a point: first tenth is spread over all
        assert np.histogram(order[: npoints // 10], bins=5, range=(0, npoints))[0].min() > 10


def test_same_seed_same_model_and_learning(tmp_path):
    train_specs = write_snapshots(tmp_path, 3)
    validation_specs = write_snapshots(tmp_path, 1, seed=1)
    settings = TrainingSettings(epochs=4, batch_size=16, learning_rate=1e-2, seed=7)
    model_a, history_a = run(train_specs, validation_specs, settings)
    model_b, history_b = run(train_specs, validation_specs, settings)
    assert_same_state(state_of(model_a), state_of(model_b))
    assert [h["validation_loss"] for h in history_a] == [h["validation_loss"] for h in history_b]
    model_c, _ = run(train_specs, validation_specs, TrainingSettings(
        epochs=4, batch_size=16, learning_rate=1e-2, seed=8))
    assert not torch.equal(model_a.mlp[0].weight, model_c.mlp[0].weight)
    # it learns: validation loss (standardised units, recomputed here with numpy) drops
    x, y = full_arrays(validation_specs)
    scaled_error = (predict_ldos(model_a, x) - y) / model_a.output_scale.numpy()
    assert np.mean(scaled_error**2) == pytest.approx(
        min(h["validation_loss"] for h in history_a), rel=1e-4)
    assert history_a[-1]["train_loss"] < 0.5 * history_a[0]["train_loss"]


def test_global_output_scaling_is_physical_mse(tmp_path):
    """--output-scaling global: one output scale, the RMS of the per-energy standard
    deviations (numpy), so the validation loss is the LDOS mean squared error / scale²."""
    train_specs = write_snapshots(tmp_path, 3)
    validation_specs = write_snapshots(tmp_path, 1, seed=1)
    settings = TrainingSettings(epochs=3, batch_size=16, learning_rate=1e-2, seed=7,
                                output_scaling="global")
    model, history = run(train_specs, validation_specs, settings)
    _, y_train = full_arrays(train_specs)
    scale = np.sqrt(np.mean(y_train.std(axis=0) ** 2))
    np.testing.assert_allclose(model.output_scale.numpy(), scale, rtol=1e-5)
    np.testing.assert_allclose(model.output_shift.numpy(), y_train.mean(axis=0), rtol=1e-5)
    x, y = full_arrays(validation_specs)
    mse = np.mean((predict_ldos(model, x) - y) ** 2)
    assert mse / scale**2 == pytest.approx(min(h["validation_loss"] for h in history), rel=1e-4)
    per_energy, _ = run(train_specs, validation_specs, TrainingSettings(
        epochs=1, batch_size=16, learning_rate=1e-2, seed=7))
    assert np.ptp(per_energy.output_scale.numpy()) > 0  # the default differs per energy
    with pytest.raises(MlscaleError, match="unknown output scaling"):
        TrainingSettings(output_scaling="minmax")


def test_electron_weight_reduces_the_density_error(tmp_path):
    """--electron-weight: the loss also weighs each point's density error at the given
    Fermi level, Σ_ε ΔLDOS f Δε; with a large weight the validation density error
    (numpy, from the predictions) must come out smaller than without."""
    train_specs = write_snapshots(tmp_path, 3)
    validation_specs = write_snapshots(tmp_path, 1, seed=1)
    x, y = full_arrays(validation_specs)
    grid = EnergyGrid.from_dict(METADATA["energy_grid"])
    weights = (grid.energies < 1.0) * grid.step  # 300 K: a step at μ = 1 eV, 1.25 eV away

    def density_error(settings):
        model, _ = run(train_specs, validation_specs, settings)
        return np.sqrt(np.mean(((predict_ldos(model, x) - y) @ weights) ** 2))

    common = dict(epochs=3, batch_size=16, learning_rate=3e-3, seed=7, output_scaling="global")
    plain = density_error(TrainingSettings(**common))
    weighted = density_error(TrainingSettings(**common, electron_weight=20.0,
                                              electron_fermi_level=1.0))
    assert weighted < 0.9 * plain, (weighted, plain)  # measured 0.82
    # the direction used: s f Δε normalised (numpy, from the model's output scale)
    model = per_energy_model(train_specs)
    [(weight, direction)] = training.loss_directions(METADATA, model, TrainingSettings(
        electron_weight=1.0, electron_fermi_level=1.0))
    expected = model.output_scale.numpy() * occupation(1.0) * grid.step
    assert weight == 1.0
    np.testing.assert_allclose(direction.numpy(), expected / np.linalg.norm(expected),
                               rtol=1e-6, atol=1e-12)
    with pytest.raises(MlscaleError, match="needs electron_fermi_level"):
        TrainingSettings(electron_weight=1.0)
    with pytest.raises(MlscaleError, match="no occupied energies"):
        training.loss_directions(METADATA, model, TrainingSettings(
            electron_weight=1.0, electron_fermi_level=-50.0))


def per_energy_model(train_specs):
    """An untrained model with the per-energy scaling of ``train_specs``."""
    return training.initial_model(LAYERS, 7, scaling_statistics(
        open_snapshots(train_specs, N_FEATURES, N_ENERGIES, self_comm()), self_comm()),
        "per-energy")


def occupation(fermi_level_eV):
    """Fermi–Dirac occupation of METADATA's energies (scipy's logistic function)."""
    from scipy.special import expit
    kt = 8.617333e-5 * METADATA["temperature_K"]  # eV
    energies = EnergyGrid.from_dict(METADATA["energy_grid"]).energies
    return expit((fermi_level_eV - energies) / kt)


def test_band_weight_reduces_the_band_energy_error(tmp_path):
    """--band-weight: the loss also weighs each point's band-energy error at fixed electron
    count, Σ_ε ΔLDOS f (ε − μ) Δε; with a large weight the validation error in that
    direction (numpy, from the predictions) must come out smaller than without. The
    direction is s f (ε − μ) Δε normalised, the electron direction comes first."""
    train_specs = write_snapshots(tmp_path, 3)
    validation_specs = write_snapshots(tmp_path, 1, seed=1)
    x, y = full_arrays(validation_specs)
    grid = EnergyGrid.from_dict(METADATA["energy_grid"])
    weights = occupation(1.0) * (grid.energies - 1.0) * grid.step

    def band_error(settings):
        model, _ = run(train_specs, validation_specs, settings)
        return np.sqrt(np.mean(((predict_ldos(model, x) - y) @ weights) ** 2))

    common = dict(epochs=3, batch_size=16, learning_rate=3e-3, seed=7, output_scaling="global")
    plain = band_error(TrainingSettings(**common))
    weighted = band_error(TrainingSettings(**common, band_weight=20.0, electron_fermi_level=1.0))
    assert weighted < 0.9 * plain, (weighted, plain)
    model = per_energy_model(train_specs)
    directions = training.loss_directions(METADATA, model, TrainingSettings(
        electron_weight=2.0, band_weight=3.0, electron_fermi_level=1.0))
    assert [w for w, _ in directions] == [2.0, 3.0]
    expected = model.output_scale.numpy() * weights
    np.testing.assert_allclose(directions[1][1].numpy(), expected / np.linalg.norm(expected),
                               rtol=1e-6, atol=1e-12)
    with pytest.raises(MlscaleError, match="band_weight > 0 needs electron_fermi_level"):
        TrainingSettings(band_weight=1.0)
    with pytest.raises(MlscaleError, match="unknown dos_terms"):
        TrainingSettings(dos_terms="snapshot")


@pytest.mark.parametrize("dos_terms", ["point", "batch"])
def test_dos_loss_gradient_is_that_of_its_definition(dos_terms):
    """dos_loss's gradient equals autograd's of the written-out terms: Σ_p W·E·(err_p·v)²
    (point) or W·E·(Σ_p err_p·v)² (batch: the error of the batch's DOS estimate)."""
    torch.manual_seed(0)
    network = torch.nn.Linear(N_FEATURES, N_ENERGIES).double()
    x, target = torch.randn(9, N_FEATURES).double(), torch.randn(9, N_ENERGIES).double()
    vectors = [torch.randn(N_ENERGIES).double() for _ in range(2)]
    directions = [(0.7, vectors[0] / vectors[0].norm()), (2.5, vectors[1] / vectors[1].norm())]

    def gradient(loss_of):
        network.zero_grad()
        loss_of(network(x) - target).backward()
        return network.weight.grad.clone()

    def definition(err):
        sums = [(err @ v) ** 2 if dos_terms == "point" else (err @ v).sum() ** 2
                for _, v in directions]
        return sum(w * N_ENERGIES * s.sum() for (w, _), s in zip(directions, sums))

    found = gradient(lambda err: training.dos_loss(err, directions, dos_terms, self_comm()))
    torch.testing.assert_close(found, gradient(definition), rtol=1e-12, atol=1e-12)
    assert found.abs().max() > 0


def test_early_stopping_schedule_and_best_model(tmp_path):
    train_specs = write_snapshots(tmp_path, 2)
    # validation targets of the opposite sign: fitting the training data makes them worse
    validation_specs = write_snapshots(tmp_path, 1, seed=1, sign=-1.0)
    settings = TrainingSettings(epochs=50, batch_size=8, learning_rate=1e-2,
                                early_stopping_patience=3, lr_patience=1, lr_factor=0.5)
    model, history = run(train_specs, validation_specs, settings)
    losses = [h["validation_loss"] for h in history]
    best = int(np.argmin(losses))
    assert len(history) == best + 1 + 3 < 50  # stopped after 3 epochs without improvement
    assert history[best + 2]["lr"] == pytest.approx(0.5 * history[best]["lr"])
    x, y = full_arrays(validation_specs)
    scaled_error = (predict_ldos(model, x) - y) / model.output_scale.numpy()
    assert np.mean(scaled_error**2) == pytest.approx(losses[best], rel=1e-4)


@pytest.mark.parametrize("shuffle", ["points", "snapshots"])
def test_resume_after_sigterm_equals_uninterrupted(tmp_path, monkeypatch, shuffle):
    train_specs = write_snapshots(tmp_path, 2)
    validation_specs = write_snapshots(tmp_path, 1, seed=1)
    settings = TrainingSettings(epochs=3, batch_size=16, learning_rate=3e-3)
    reference, reference_history = run(train_specs, validation_specs, settings, shuffle=shuffle)

    checkpoint = tmp_path / "run.checkpoint.safetensors"
    calls = {"n": 0}
    original = SnapshotSet.read

    def read_then_sigterm(self, points):
        calls["n"] += 1
        if calls["n"] == 13:  # in epoch 2 (8 steps per epoch)
            signal.raise_signal(signal.SIGTERM)
        return original(self, points)

    monkeypatch.setattr(SnapshotSet, "read", read_then_sigterm)
    with pytest.raises(TrainingInterrupted, match="epoch 2 after step 5.*--resume"):
        run(train_specs, validation_specs, settings, checkpoint=checkpoint, shuffle=shuffle)
    monkeypatch.setattr(SnapshotSet, "read", original)
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # handler restored
    with safetensors.safe_open(str(checkpoint), "pt") as handle:
        header = json.loads(handle.metadata()["mlscale"])
    assert (header["progress"]["epoch"], header["progress"]["step"]) == (1, 5)

    resumed, history = run(train_specs, validation_specs, settings, resume=checkpoint,
                           shuffle=shuffle)
    assert_same_state(state_of(resumed), state_of(reference))
    assert [h["validation_loss"] for h in history] == [
        h["validation_loss"] for h in reference_history]
    assert [h["train_loss"] for h in history] == pytest.approx(
        [h["train_loss"] for h in reference_history], rel=1e-12)


def test_periodic_checkpoint_extends_training(tmp_path):
    train_specs = write_snapshots(tmp_path, 2)
    validation_specs = write_snapshots(tmp_path, 1, seed=1)
    settings = TrainingSettings(epochs=4, batch_size=16, learning_rate=3e-3)
    reference, _ = run(train_specs, validation_specs, settings)
    checkpoint = tmp_path / "every.safetensors"
    short = TrainingSettings(epochs=2, batch_size=16, learning_rate=3e-3)
    run(train_specs, validation_specs, short, checkpoint=checkpoint, checkpoint_every=1)
    resumed, history = run(train_specs, validation_specs, settings, resume=checkpoint)
    assert len(history) == 4
    assert_same_state(state_of(resumed), state_of(reference))
    with pytest.raises(MlscaleError, match="cannot resume.*training differs"):
        run(train_specs, validation_specs, TrainingSettings(epochs=4, batch_size=8),
            resume=checkpoint)
    with pytest.raises(MlscaleError, match="cannot resume.*train_points differs"):
        run(train_specs[:1], validation_specs, settings, resume=checkpoint)
    with pytest.raises(MlscaleError, match="cannot resume.*shuffle differs"):
        run(train_specs, validation_specs, settings, resume=checkpoint, shuffle="snapshots")
    not_checkpoint = tmp_path / "model.safetensors"
    save_model(not_checkpoint, reference, METADATA)
    with pytest.raises(MlscaleError, match="'mlscale-model' file, not an mlscale-checkpoint"):
        run(train_specs, validation_specs, settings, resume=not_checkpoint)


def test_train_rejects_bad_settings(tmp_path):
    train_specs = write_snapshots(tmp_path, 1)
    with pytest.raises(MlscaleError, match="energy grid has 11"):
        train(train_specs, train_specs, LAYERS, TrainingSettings(epochs=1),
              {**METADATA, "energy_grid": EnergyGrid(-5, 2.5, 11).to_dict()}, self_comm())
    with pytest.raises(MlscaleError, match="unknown distributed backend"):
        run(train_specs, train_specs, TrainingSettings(epochs=1), backend="mpi")
    with pytest.raises(MlscaleError, match="epochs and batch size"):
        run(train_specs, train_specs, TrainingSettings(epochs=0))
    with pytest.raises(MlscaleError, match="unknown shuffle"):
        run(train_specs, train_specs, TrainingSettings(epochs=1), shuffle="global")


def test_horovod_missing_is_a_clear_error(tmp_path):
    try:
        import horovod.torch  # noqa: F401
    except ImportError:
        train_specs = write_snapshots(tmp_path, 1)
        with pytest.raises(MlscaleError, match="Horovod is not installed; see jobs/"):
            run(train_specs, train_specs, TrainingSettings(epochs=1), backend="horovod")
    else:
        pytest.skip("Horovod is installed (its path is tested in test_training_mpi.py)")


def test_be_model_predicts_unseen_band_energy(be2, tmp_path):
    """Trained on Be snapshot 0 only (z-planes 0-20 train, 21-26 validate), the model
    predicts snapshot 1's band energy closer to DFT than the untrained network does."""
    from mlscale import electrons
    from mlscale.training import initial_model

    x0, y0 = np.load(be2 / "Be_snapshot0.in.npy"), np.load(be2 / "Be_snapshot0.out.npy")
    for name, planes in (("train", slice(0, 21)), ("validation", slice(21, None))):
        np.save(tmp_path / f"{name}.in.npy", x0[:, :, planes])
        np.save(tmp_path / f"{name}.out.npy", y0[:, :, planes])
    specs = {name: f"{tmp_path}/{name}.in.npy:{tmp_path}/{name}.out.npy"
             for name in ("train", "validation")}
    info = json.loads((be2 / "Be_snapshot1.info.json").read_text())
    temperature = info["temperature"]
    energies_e = EnergyGrid(-5.0, 2.5, 11).energies
    metadata = {"descriptors": BispectrumSettings().with_species(["Be"]).to_dict(),
                "energy_grid": EnergyGrid(-5.0, 2.5, 11).to_dict(),
                "temperature_K": temperature, "species": ["Be"]}
    layers = ModelSettings(layers=(91, 100, 100, 11))
    settings = TrainingSettings(epochs=4, batch_size=64, learning_rate=2e-3)
    comm = self_comm()
    model, _ = train([specs["train"]], [specs["validation"]], layers, settings, metadata, comm)
    statistics = scaling_statistics(open_snapshots([specs["train"]], 91, 11, comm), comm)
    untrained = initial_model(layers, settings.seed, statistics)

    x1 = np.load(be2 / "Be_snapshot1.in.npy")[..., 3:].reshape(-1, 91)
    voxel_volume = abs(np.linalg.det(info["voxel"]["array"]))

    def band_energy(network):
        dos_e = electrons.dos_from_ldos(predict_ldos(network, x1, metadata), voxel_volume)
        mu = electrons.fermi_level(dos_e, energies_e, info["number_of_electrons_exact"],
                                   temperature)
        return electrons.band_energy(dos_e, energies_e, mu, temperature)

    dft = info["band_energy_dft_calculation"]
    trained_error = abs(band_energy(model) - dft)
    untrained_error = abs(band_energy(untrained) - dft)
    assert trained_error < 0.5 * untrained_error, (trained_error, untrained_error)


def test_refit_last_layer_zeroes_the_mean_training_residual(tmp_path):
    """jobs/refit_last_layer.py: the hidden layers stay, the last layer becomes the least-
    squares fit of the standardised LDOS on the training points' hidden features (numpy's
    lstsq as the reference), so the mean residual at every energy over those points is
    zero (the normal equation of the bias), which training with early stopping leaves
    non-zero."""
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "jobs" / "refit_last_layer.py"
    spec = importlib.util.spec_from_file_location("refit_last_layer", path)
    refit = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(refit)
    train_specs = write_snapshots(tmp_path, 2, coordinates=False)
    validation_specs = write_snapshots(tmp_path, 1, seed=1, coordinates=False)
    model, _ = run(train_specs, validation_specs, TrainingSettings(
        epochs=1, batch_size=16, learning_rate=3e-3, seed=7, output_scaling="global"))
    save_model(tmp_path / "m.safetensors", model, METADATA)
    names = [spec_.split(":")[0].rsplit("/", 1)[1][:-len(".in.npy")] for spec_ in train_specs]
    assert refit.main([str(tmp_path / "m.safetensors"), str(tmp_path / "r.safetensors"),
                       *names, "--arrays", str(tmp_path), "--ridge", "0"]) == 0
    from mlscale.model import load_model
    refitted = load_model(tmp_path / "r.safetensors", "torch").module
    x, y = full_arrays(train_specs)
    scale = model.output_scale.numpy().astype(np.float64)

    def mean_residual(module):
        return ((predict_ldos(module, x) - y) / scale).mean(axis=0)

    assert np.abs(mean_residual(model)).max() > 1e-3
    np.testing.assert_allclose(mean_residual(refitted), 0.0, atol=1e-5)
    for name in ("mlp.0.weight", "mlp.0.bias"):
        torch.testing.assert_close(refitted.state_dict()[name], model.state_dict()[name])
    with torch.no_grad():
        hidden = model.mlp[:-1](model.normalise_input(torch.from_numpy(x).float())).double()
    design = np.hstack([hidden.numpy(), np.ones((len(x), 1))])
    target = (y - model.output_shift.numpy()) / scale
    expected = np.linalg.lstsq(design, target, rcond=None)[0]
    np.testing.assert_allclose(refitted.mlp[-1].weight.detach().numpy(), expected[:-1].T,
                               rtol=1e-4, atol=1e-4 * np.abs(expected).max())


def test_least_squares_last_layer(tmp_path):
    """--last-layer least-squares: the same training, then the last layer is numpy's
    least-squares fit on the training points' hidden features (ridge 1e-6 of the mean
    diagonal), so the mean training residual is zero at every energy; hidden layers kept."""
    train_specs = write_snapshots(tmp_path, 2)
    validation_specs = write_snapshots(tmp_path, 1, seed=1)
    common = dict(epochs=1, batch_size=16, learning_rate=3e-3, seed=7, output_scaling="global")
    trained, _ = run(train_specs, validation_specs, TrainingSettings(**common))
    refitted, _ = run(train_specs, validation_specs,
                      TrainingSettings(**common, last_layer="least-squares"))
    x, y = full_arrays(train_specs)
    scale = trained.output_scale.numpy().astype(np.float64)

    def mean_residual(module):
        return ((predict_ldos(module, x) - y) / scale).mean(axis=0)

    assert np.abs(mean_residual(trained)).max() > 1e-3
    np.testing.assert_allclose(mean_residual(refitted), 0.0, atol=1e-5)
    for name in ("mlp.0.weight", "mlp.0.bias"):
        torch.testing.assert_close(refitted.state_dict()[name], trained.state_dict()[name])
    with torch.no_grad():
        hidden = trained.mlp[:-1](trained.normalise_input(torch.from_numpy(x).float()))
    design = np.hstack([hidden.double().numpy(), np.ones((len(x), 1))])
    expected = np.linalg.lstsq(design, (y - trained.output_shift.numpy()) / scale,
                               rcond=None)[0]
    np.testing.assert_allclose(refitted.mlp[-1].weight.detach().numpy(), expected[:-1].T,
                               rtol=1e-3, atol=1e-3 * np.abs(expected).max())
    with pytest.raises(MlscaleError, match="unknown last_layer"):
        TrainingSettings(last_layer="ridge")


def test_dos_weighted_least_squares_last_layer(tmp_path):
    """--dos-weight mu: the last layer also fits each training snapshot's mean LDOS (its
    DOS / volume) weighed mu × its points. Reference: numpy's lstsq on the points' rows
    plus one row sqrt(mu n_s)·(h̄_s, ȳ_s) per snapshot. mu = 0 is the plain refit bit for
    bit; a large mu brings every training snapshot's mean residual to zero, which the
    plain refit leaves non-zero (it only zeroes the mean over all snapshots)."""
    train_specs = write_snapshots(tmp_path, 3)
    validation_specs = write_snapshots(tmp_path, 1, seed=1)
    common = dict(epochs=1, batch_size=16, learning_rate=3e-3, seed=7, output_scaling="global",
                  last_layer="least-squares")
    plain, _ = run(train_specs, validation_specs, TrainingSettings(**common))
    zero, _ = run(train_specs, validation_specs, TrainingSettings(**common, dos_weight=0.0))
    assert_same_state(state_of(zero), state_of(plain))
    mu = 10.0
    weighted, _ = run(train_specs, validation_specs, TrainingSettings(**common, dos_weight=mu))
    for name in ("mlp.0.weight", "mlp.0.bias"):
        torch.testing.assert_close(weighted.state_dict()[name], plain.state_dict()[name])
    scale = plain.output_scale.numpy().astype(np.float64)
    design, target, means = [], [], []
    for spec in train_specs:
        x, y = full_arrays([spec])
        with torch.no_grad():
            hidden = plain.mlp[:-1](plain.normalise_input(torch.from_numpy(x).float()))
        h = np.hstack([hidden.double().numpy(), np.ones((len(x), 1))])
        t = (y - plain.output_shift.numpy()) / scale
        design.append(h), target.append(t), means.append((x, y))
        design.append(np.sqrt(mu * len(h)) * h.mean(axis=0, keepdims=True))
        target.append(np.sqrt(mu * len(h)) * t.mean(axis=0, keepdims=True))
    expected = np.linalg.lstsq(np.vstack(design), np.vstack(target), rcond=None)[0]
    np.testing.assert_allclose(weighted.mlp[-1].weight.detach().numpy(), expected[:-1].T,
                               rtol=1e-3, atol=1e-3 * np.abs(expected).max())
    assert not np.allclose(weighted.mlp[-1].weight.detach().numpy(),
                           plain.mlp[-1].weight.detach().numpy(), rtol=1e-2)  # mu acts

    def snapshot_mean_residuals(module):
        return np.array([((predict_ldos(module, x) - y) / scale).mean(axis=0)
                         for x, y in means])

    large, _ = run(train_specs, validation_specs, TrainingSettings(**common, dos_weight=1e6))
    plain_residual = np.abs(snapshot_mean_residuals(plain)).max()
    assert plain_residual > 1e-3
    assert np.abs(snapshot_mean_residuals(large)).max() < 0.02 * plain_residual
    with pytest.raises(MlscaleError, match="needs last_layer least-squares"):
        TrainingSettings(dos_weight=1.0)
    with pytest.raises(MlscaleError, match="dos_weight must be >= 0"):
        TrainingSettings(dos_weight=-1.0, last_layer="least-squares")
