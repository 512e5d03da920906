"""Data-parallel training on several ranks: equal to one rank, identical on all ranks, resume.

Run with ``mpiexec -n 2 python -m pytest --with-mpi tests/test_training_mpi.py``
(3 ranks work too: the global batch is then split unevenly).
"""

from __future__ import annotations

import dataclasses
import signal
from pathlib import Path

import numpy as np
import pytest
import torch

from mlscale.config import TrainingSettings
from mlscale.data import SnapshotSet, cache_openpmd
from mlscale.errors import MlscaleError
from mlscale.parallel import self_comm, world
from mlscale.training import TrainingInterrupted, train
from tests.test_training import LAYERS, METADATA, write_snapshots

pytestmark = pytest.mark.mpi(min_size=2)
SETTINGS = TrainingSettings(epochs=3, batch_size=16, learning_rate=1e-2, seed=3)


@pytest.fixture
def shared_dir(tmp_path) -> Path:
    """Rank 0's tmp_path, seen by every rank."""
    return Path(world().broadcast(str(tmp_path)))


@pytest.fixture
def snapshots(shared_dir):
    comm = world()
    specs = None
    if comm.rank == 0:
        specs = (write_snapshots(shared_dir, 3), write_snapshots(shared_dir, 1, seed=1))
    return comm.broadcast(specs)


def weights(model) -> np.ndarray:
    return np.concatenate([t.detach().numpy().ravel() for t in model.state_dict().values()])


def assert_identical_on_all_ranks(model):
    comm = world()
    mine = weights(model)
    rank0 = mine.copy()
    comm.mpi.Bcast(rank0, root=0)
    np.testing.assert_array_equal(mine, rank0)


def assert_same_weights(model, reference, rtol=1e-5):
    for name, tensor in reference.state_dict().items():
        expected = tensor.numpy()
        np.testing.assert_allclose(model.state_dict()[name].numpy(), expected, rtol=rtol,
                                   atol=rtol * np.abs(expected).max(), err_msg=name)


@pytest.mark.parametrize("shuffle", ["points", "snapshots"])
def test_ddp_equals_one_rank_and_all_ranks_agree(snapshots, shuffle):
    train_specs, validation_specs = snapshots
    reference, reference_history = train(train_specs, validation_specs, LAYERS, SETTINGS,
                                         METADATA, self_comm(), shuffle=shuffle)
    model, history = train(train_specs, validation_specs, LAYERS, SETTINGS, METADATA, world(),
                           shuffle=shuffle)
    assert_identical_on_all_ranks(model)
    assert_same_weights(model, reference)
    assert not torch.equal(model.mlp[0].weight, reference.mlp[0].weight) or world().size == 1
    np.testing.assert_allclose([h["validation_loss"] for h in history],
                               [h["validation_loss"] for h in reference_history], rtol=1e-5)


@pytest.mark.parametrize("dos_terms", ["point", "batch"])
def test_dos_terms_equal_one_rank(snapshots, dos_terms):
    """The electron and band-energy loss terms (batch: summed over the global batch with
    one all-reduce per step) give the one-rank weights on N ranks."""
    train_specs, validation_specs = snapshots
    settings = TrainingSettings(epochs=2, batch_size=16, learning_rate=1e-2, seed=3,
                                electron_weight=0.05, band_weight=0.05,
                                electron_fermi_level=1.0, dos_terms=dos_terms)
    reference, _ = train(train_specs, validation_specs, LAYERS, settings, METADATA, self_comm())
    plain, _ = train(train_specs, validation_specs, LAYERS,
                     dataclasses.replace(settings, electron_weight=0.0, band_weight=0.0),
                     METADATA, self_comm())
    model, _ = train(train_specs, validation_specs, LAYERS, settings, METADATA, world())
    assert_identical_on_all_ranks(model)
    assert_same_weights(model, reference)
    assert not np.allclose(weights(reference), weights(plain), rtol=1e-3)  # the terms act


def test_least_squares_last_layer_equals_one_rank(snapshots):
    """--last-layer least-squares --dos-weight 10: normal equations and the snapshots' sums
    (a snapshot's points may lie on several ranks) summed over the ranks, solved on rank 0
    and broadcast: the one-rank weights, identical on all ranks."""
    train_specs, validation_specs = snapshots
    settings = dataclasses.replace(SETTINGS, last_layer="least-squares", dos_weight=10.0)
    reference, _ = train(train_specs, validation_specs, LAYERS, settings, METADATA, self_comm())
    model, _ = train(train_specs, validation_specs, LAYERS, settings, METADATA, world())
    assert_identical_on_all_ranks(model)
    assert_same_weights(model, reference)


def test_horovod_equals_one_rank(snapshots):
    try:
        import horovod.torch  # noqa: F401
    except ImportError:
        pytest.skip("Horovod is not installed (bash jobs/install_horovod.sh)")
    train_specs, validation_specs = snapshots
    reference, _ = train(train_specs, validation_specs, LAYERS, SETTINGS, METADATA, self_comm())
    model, _ = train(train_specs, validation_specs, LAYERS, SETTINGS, METADATA, world(),
                     backend="horovod")
    assert_identical_on_all_ranks(model)
    assert_same_weights(model, reference)


def test_resume_after_sigterm_on_one_rank(snapshots, shared_dir, monkeypatch):
    comm = world()
    train_specs, validation_specs = snapshots
    reference, _ = train(train_specs, validation_specs, LAYERS, SETTINGS, METADATA, comm)
    checkpoint = shared_dir / "mpi.checkpoint.safetensors"
    calls = {"n": 0}
    original = SnapshotSet.read

    def read_then_sigterm(self, points):
        calls["n"] += 1
        if comm.rank == comm.size - 1 and calls["n"] == 16:  # the scheduler hits one rank
            signal.raise_signal(signal.SIGTERM)
        return original(self, points)

    monkeypatch.setattr(SnapshotSet, "read", read_then_sigterm)
    with pytest.raises(TrainingInterrupted, match="epoch 2 after step 4"):
        train(train_specs, validation_specs, LAYERS, SETTINGS, METADATA, comm,
              checkpoint=checkpoint)
    monkeypatch.setattr(SnapshotSet, "read", original)
    resumed, _ = train(train_specs, validation_specs, LAYERS, SETTINGS, METADATA, comm,
                       resume=checkpoint)
    assert_identical_on_all_ranks(resumed)
    for name, tensor in reference.state_dict().items():
        assert torch.equal(resumed.state_dict()[name], tensor), name
    with pytest.raises(MlscaleError, match="ranks differs"):
        train(train_specs, validation_specs, LAYERS, SETTINGS, METADATA, self_comm(),
              resume=checkpoint)


def test_error_on_one_rank_fails_all(snapshots, shared_dir):
    comm = world()
    train_specs, validation_specs = snapshots
    if comm.rank == 1:
        train_specs = [str(shared_dir / "absent.in.npy") + ":" + train_specs[0].split(":")[1]]
    with pytest.raises(MlscaleError, match="file not found: .*absent.in.npy"):
        train(train_specs, validation_specs, LAYERS, SETTINGS, METADATA, comm)


def test_openpmd_cache_written_by_all_ranks(be2, shared_dir):
    spec = f"{be2}/Be_snapshot1.in.npy:{be2}/Be_snapshot1.out.h5"
    (cached,) = cache_openpmd([spec], shared_dir / "cache", world())
    np.testing.assert_array_equal(np.load(cached.ldos), np.load(be2 / "Be_snapshot1.out.npy"))
