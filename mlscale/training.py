"""Data-parallel training of the LDOS network, identical code for 1 and N ranks.

Each epoch has one order of the training points, drawn from ``(seed, epoch)``
(:func:`epoch_order`: a permutation of all points, or snapshot after snapshot).
Global batch ``i`` is ``order[i*B:(i+1)*B]``; rank ``r`` of ``N`` takes the slice
``[b*r//N, b*(r+1)//N)`` of it and reads only those points from the memory-mapped
snapshots. Its loss is its share of the global mean squared error (in standardised
LDOS units), gradients are averaged over the ranks every step (torch.distributed or
Horovod, see distributed.py), so all ranks take the same Adam step and hold
identical weights, and the result does not depend on N beyond round-off.

Validation loss (same units) is computed on every rank's share of the validation
points and summed. ReduceLROnPlateau lowers the learning rate, early stopping ends
training, and the weights of the best validation epoch are returned.

Checkpoints (safetensors + JSON, no pickle; written atomically by rank 0) hold the
model, the best weights, Adam's and the scheduler's state, the position (epoch,
step), the early-stopping state, the history and the SHA-256 of their tensors
(verified on resume: a corrupted checkpoint is refused). The order is a function of
(seed, epoch), so a resumed run on the same rank count continues bit for bit.
SIGTERM finishes the current step on all ranks, writes a checkpoint and raises
:class:`TrainingInterrupted`.
"""
from __future__ import annotations

import json
import signal
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import safetensors.torch
import torch

from .config import DEVICES, DISTRIBUTED_BACKENDS, SHUFFLES, ModelSettings, TrainingSettings
from .data import (
    CHUNK_POINTS,
    SnapshotFiles,
    SnapshotSet,
    Statistics,
    cache_openpmd,
    open_snapshots,
    scaling_statistics,
)
from .distributed import data_parallel, select_device
from .electrons import fermi_function
from .errors import MlscaleError
from .io.atomic import atomic_path
from .model import LDOSModel, ModelInfo, read_safetensors
from .model._format import tensors_sha256
from .parallel import Comm
from .progress import progress as progress_bar

CHECKPOINT_FORMAT = "mlscale-checkpoint"
CHECKPOINT_VERSION = 1
FEISTEL_ROUNDS = 6
ORDER_BLOCK = 1 << 16  # points of the shuffled order computed at once


class TrainingInterrupted(MlscaleError):
    """Training stopped on SIGTERM after writing a checkpoint."""


@dataclass
class Progress:
    """Where training stands; everything a checkpoint needs besides tensors."""

    epoch: int = 0  # 0-based epoch in progress
    step: int = 0  # next step within that epoch
    epoch_sse: float = 0.0  # sum of squared errors so far in this epoch (global)
    best_loss: float = float("inf")
    best_epoch: int = -1
    bad_epochs: int = 0
    history: list[dict] = field(default_factory=list)


def _mix(values: np.ndarray, key: np.uint64) -> np.ndarray:
    """splitmix64's finaliser of ``values + key`` (uint64 arrays, wrapping arithmetic)."""
    z = values + key
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


def shuffled_points(key: Sequence[int], npoints: int, start: int, stop: int) -> np.ndarray:
    """Positions ``start:stop`` of a pseudo-random permutation of ``range(npoints)``.

    The permutation is drawn from ``key`` (integers, e.g. (seed, epoch)): a Feistel
    network over the smallest even-bit domain >= npoints, restricted to
    ``[0, npoints)`` by cycle walking. Any slice is computed without the whole
    permutation, so memory does not grow with the data set; same on every rank.
    """
    half = max(1, -(-int(npoints - 1).bit_length() // 2))
    mask = np.uint64((1 << half) - 1)
    keys = np.random.default_rng(list(key)).integers(0, 2**63, FEISTEL_ROUNDS, dtype=np.uint64)

    def permute(x):
        left, right = x >> np.uint64(half), x & mask
        for key in keys:
            left, right = right, left ^ (_mix(right, key) & mask)
        return (left << np.uint64(half)) | right

    points = permute(np.arange(start, stop, dtype=np.uint64))
    outside = points >= npoints
    while outside.any():
        points[outside] = permute(points[outside])
        outside = points >= npoints
    return points.astype(np.int64)


def epoch_order(seed: int, epoch: int, sizes: Sequence[int] | np.ndarray, shuffle: str,
                start: int, stop: int) -> np.ndarray:
    """Positions ``start:stop`` of epoch ``epoch``'s order of all training points.

    sizes: points per snapshot (global point numbers run snapshot after snapshot).
    shuffle "points": one permutation of all points. "snapshots": the snapshots in a
    random order, each one's points permuted and visited together (streaming).
    """
    sizes = np.asarray(sizes, dtype=np.int64)
    if shuffle == "points":
        return shuffled_points((seed, epoch), int(sizes.sum()), start, stop)
    offsets = np.concatenate([[0], np.cumsum(sizes)])
    sequence = np.random.default_rng([seed, epoch]).permutation(len(sizes))
    ends = np.cumsum(sizes[sequence])
    begins = ends - sizes[sequence]
    parts = [np.zeros(0, np.int64)]
    for k in np.flatnonzero((begins < stop) & (ends > start)):
        s = int(sequence[k])
        lo, hi = max(start - begins[k], 0), min(stop - begins[k], sizes[s])
        parts.append(offsets[s] + shuffled_points((seed, epoch, s), int(sizes[s]), lo, hi))
    return np.concatenate(parts)


def epoch_batches(seed: int, epoch: int, sizes: Sequence[int] | np.ndarray, shuffle: str,
                  batch_size: int, first_step: int = 0) -> Iterator[np.ndarray]:
    """The global batches (point indices) of an epoch from step ``first_step`` on.

    The order is computed in blocks of about ORDER_BLOCK points (bounded memory).
    """
    npoints = int(np.sum(sizes))
    per_block = max(1, ORDER_BLOCK // batch_size) * batch_size
    for start in range(first_step * batch_size, npoints, per_block):
        block = epoch_order(seed, epoch, sizes, shuffle, start, min(start + per_block, npoints))
        for i in range(0, len(block), batch_size):
            yield block[i:i + batch_size]


def local_range(batch_size: int, comm: Comm) -> tuple[int, int]:
    """This rank's part ``[lo, hi)`` of a global batch of ``batch_size`` points."""
    return batch_size * comm.rank // comm.size, batch_size * (comm.rank + 1) // comm.size


def check_settings(settings: TrainingSettings) -> None:
    """MlscaleError for epochs, batch size, learning rate, weight decay or lr_factor out
    of range."""
    if settings.epochs < 1 or settings.batch_size < 1:
        raise MlscaleError("epochs and batch size must be at least 1")
    if not settings.learning_rate > 0 or settings.weight_decay < 0:
        raise MlscaleError("learning rate must be positive and weight decay non-negative")
    if not 0 < settings.lr_factor < 1:
        raise MlscaleError(f"lr_factor must lie in (0, 1), got {settings.lr_factor}")


def initial_model(model_settings: ModelSettings, seed: int, statistics: Statistics,
                  output_scaling: str = "per-energy") -> LDOSModel:
    """Network with weights drawn from ``seed`` (global RNG untouched) and data scaling.

    ``output_scaling``: ``per-energy`` (each energy's standard deviation) or ``global``
    (one scale for all energies: the root mean square of the per-energy deviations).
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = LDOSModel(model_settings)
    output_std = np.asarray(statistics.output_std, dtype=float)
    if output_scaling == "global":
        output_std = np.full_like(output_std, np.sqrt(np.mean(output_std ** 2)))
    stds = (statistics.input_std, output_std)
    input_scale, output_scale = (np.where(std > 0, std, 1.0) for std in stds)
    model.set_scaling(statistics.input_mean, input_scale, statistics.output_mean, output_scale)
    return model


def loss_directions(metadata: dict, model: LDOSModel,
                    settings: TrainingSettings) -> list[tuple[float, torch.Tensor]]:
    """The DOS terms of the loss: ``(weight, v)`` for the electron count (electron_weight)
    and the band energy (band_weight), each v a unit vector over energies; empty when both
    weights are 0.

    With err the standardised error of a point's LDOS, s the output scale and f the
    Fermi–Dirac occupation at the reference Fermi level μ (``electron_fermi_level``, eV):
    the point's density (electron-count) error is Σ_ε ΔLDOS f Δε = err · (s f Δε), and its
    contribution to the band-energy error at a fixed electron count is
    Σ_ε ΔLDOS f (ε − μ) Δε = err · (s f (ε − μ) Δε) (first order: the solved Fermi level
    moves so that the electron count stays exact, which removes μ·ΔN). v is that vector
    normalised, so that weight · E · (err · v)² weighs the error like weight · E energies'
    squared errors (E energies), whatever the units. ``dos_terms`` says whether err is one
    point's (each point's term) or summed over the batch's points (a DOS estimate): see
    :func:`dos_loss`.
    """
    fermi_level = settings.electron_fermi_level
    weights = (settings.electron_weight, settings.band_weight)
    if fermi_level is None or max(weights) <= 0:  # (TrainingSettings: a weight needs μ)
        return []
    info = ModelInfo.from_metadata(metadata, model.settings)
    grid = info.energy_grid
    occupation = fermi_function(grid.energies, fermi_level, info.temperature_K) * grid.step
    scale = model.output_scale.double().cpu().numpy()
    directions = []
    for weight, vector in zip(weights, (scale * occupation,
                                        scale * occupation * (grid.energies - fermi_level))):
        if weight > 0:
            norm = np.linalg.norm(vector)
            if not norm > 0:
                raise MlscaleError("no occupied energies below electron_fermi_level: cannot "
                                   "weigh the electron count or band energy")
            directions.append((weight, torch.from_numpy(vector / norm).to(torch.float32)))
    return directions


def dos_loss(err: torch.Tensor, directions: Sequence[tuple[float, torch.Tensor]],
             dos_terms: str, comm: Comm) -> torch.Tensor | float:
    """The DOS terms of a step's loss (this rank's share; summed with the squared errors).

    err: this rank's standardised errors [points, E] of the global batch.
    ``point``: Σ_p weight·E·(err_p · v)² over the points. ``batch``: weight·E·(Σ_p err_p · v)²
    with the sum over the whole global batch (all ranks): the error of the batch's DOS
    estimate, Σ_p LDOS_p ∝ its DOS. Each rank's term is then 2·weight·E·S·Σ_local err_p·v
    with S the global sum (one all-reduce): its gradient summed over the ranks is the
    gradient of the global term, on any rank count.
    """
    n_energies = err.shape[1]
    total: torch.Tensor | float = 0.0
    for weight, direction in directions:
        projection = err @ direction
        if dos_terms == "point":
            total = total + (weight * n_energies) * (projection**2).sum()
        else:
            local = projection.sum()
            batch_sum = comm.sum(float(local.detach()))
            total = total + (2.0 * weight * n_energies * batch_sum) * local
    return total


def validation_loss(model: LDOSModel, data: SnapshotSet, comm: Comm, device: torch.device,
                    chunk_points: int) -> float:
    """Mean squared error in standardised LDOS units over all points of ``data``."""
    sse = 0.0
    with torch.no_grad():
        for _, x_pf, ldos_pe in data.chunks(*data.share(comm), chunk_points):
            x, y = torch.from_numpy(x_pf).to(device), torch.from_numpy(ldos_pe).to(device)
            err = model.mlp(model.normalise_input(x)) - model.normalise_output(y)
            sse += float((err.double() ** 2).sum())
    total = comm.sum(sse) / (data.npoints * data.n_energies)
    return comm.broadcast(total)  # one value on every rank, whatever the reduction order


class _StopSignal:
    """Remembers a SIGTERM while installed (main thread only)."""

    def __init__(self):
        self.received = False
        self.previous = None

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            self.previous = signal.signal(signal.SIGTERM, self._handle)
        return self

    def _handle(self, signum, frame):
        self.received = True

    def __exit__(self, *exc):
        if self.previous is not None:
            signal.signal(signal.SIGTERM, self.previous)


@dataclass
class TrainingState:
    """One training run: its data, settings, model, optimiser and where it stands.

    Built by :func:`train` and passed between its stages (setup, steps, epoch ends,
    checkpoints); ``optimizer`` and ``scheduler`` exist once gradient averaging is set up.
    """

    model: LDOSModel
    data: SnapshotSet
    validation: SnapshotSet
    model_settings: ModelSettings
    settings: TrainingSettings
    metadata: dict
    comm: Comm
    device: torch.device
    shuffle: str = SHUFFLES[0]
    chunk_points: int = CHUNK_POINTS
    checkpoint: str | Path | None = None
    checkpoint_every: int = 0
    dos_directions: list[tuple[float, torch.Tensor]] = field(default_factory=list)
    progress: Progress = field(default_factory=Progress)
    best_state: dict[str, torch.Tensor] = field(default_factory=dict)
    parameters: list[torch.nn.Parameter] = field(default_factory=list)
    optimizer: torch.optim.Adam = field(init=False)  # set by _create_optimizer
    scheduler: torch.optim.lr_scheduler.ReduceLROnPlateau = field(init=False)


def train(train_snapshots: Sequence[SnapshotFiles | str],
          validation_snapshots: Sequence[SnapshotFiles | str], model_settings: ModelSettings,
          training_settings: TrainingSettings, metadata: dict, comm: Comm,
          backend: str = DISTRIBUTED_BACKENDS[0], *, device: str = DEVICES[0],
          checkpoint: str | Path | None = None,
          checkpoint_every: int = 0, resume: str | Path | None = None,
          cache_dir: str | Path | None = None, shuffle: str = SHUFFLES[0],
          chunk_points: int = CHUNK_POINTS) -> tuple[LDOSModel, list[dict]]:
    """Train an LDOSModel data-parallel over ``comm``; returns ``(model, history)``.

    train_snapshots, validation_snapshots: lists of SnapshotFiles or "IN:OUT" strings.
    metadata: the model file's metadata (checked against the layers before training).
    checkpoint: file written every ``checkpoint_every`` epochs and on SIGTERM.
    resume: checkpoint file to continue from (same ranks, data and settings).
    cache_dir: where openPMD snapshots are converted to .npy (see data.cache_openpmd).
    shuffle: "points" (one permutation of all points per epoch) or "snapshots"
    (snapshots in random order, points shuffled within each; for data sets larger
    than the page cache, see epoch_order).
    history: one dict per epoch (epoch, train_loss, validation_loss, lr, seconds,
    train_seconds, samples_per_s); losses are mean squared errors of the standardised LDOS.
    The returned model (CPU, eval mode) has the weights of the best validation epoch.
    """
    with comm.collective():
        check_arguments(training_settings, model_settings, metadata, checkpoint_every, shuffle)
        torch_device = select_device(device, comm)
    state = _start(train_snapshots, validation_snapshots, model_settings, training_settings,
                   metadata, comm, torch_device, cache_dir, shuffle, chunk_points)
    state.checkpoint, state.checkpoint_every = checkpoint, checkpoint_every
    saved = _prepare_model(state, resume)
    with data_parallel(backend, comm, torch_device) as parallel, _StopSignal() as stop:
        _create_optimizer(state, saved)
        done, epochs = state.progress.epoch, state.settings.epochs
        for _ in progress_bar(range(done, epochs), total=epochs, initial=done, desc="training",
                              unit="epoch", rank=comm.rank):
            if _run_epoch(state, parallel, stop):
                break
    state.model.load_state_dict(state.best_state)
    if training_settings.last_layer == "least-squares":
        refit_last_layer(state.model, state.data, comm, torch_device, chunk_points,
                         dos_weight=training_settings.dos_weight)
        loss = validation_loss(state.model, state.validation, comm, torch_device, chunk_points)
        comm.print(f"last layer refitted by least squares (dos_weight "
                   f"{training_settings.dos_weight:g}): validation {loss:.6e}")
    return state.model.cpu().eval(), state.progress.history


def refit_last_layer(model: LDOSModel, data: SnapshotSet, comm: Comm, device: torch.device,
                     chunk_points: int, ridge: float = 1e-6, dos_weight: float = 0.0) -> None:
    """Replace the last layer by the least-squares fit of the standardised LDOS on the
    hidden features of all points of ``data`` (collective; the hidden layers stay).

    With hidden features h_p (and a constant 1 for the bias), standardised LDOS y_p, and
    snapshot s's means h̄_s, ȳ_s over its n_s points, the last layer [W; b] minimises

        Σ_p |W h_p − y_p|²  +  dos_weight · Σ_s n_s |W h̄_s − ȳ_s|²

    A snapshot's DOS is V·mean(LDOS), a linear function of h̄_s alone, so ``dos_weight``
    (mu) weighs each training snapshot's DOS against its points' LDOS; at 0 the points
    alone. Each rank accumulates the normal equations (float64) and the per-snapshot sums
    of h and y over its share of the points, the ranks sum them, rank 0 solves (``ridge``
    × the mean diagonal added to the weights' diagonal, not the bias's) and broadcasts,
    so every rank holds the same weights. At the optimum the mean residual over all points
    is zero at every energy (the bias's normal equation), which early stopping leaves
    non-zero: on the aluminium records that offset was most of the seed-to-seed spread of
    the band energy (docs/accuracy.md).
    """
    last = model.mlp[-1]
    assert isinstance(last, torch.nn.Linear)
    n_in, n_out = int(last.in_features), int(last.out_features)
    gram, cross = np.zeros((n_in + 1, n_in + 1)), np.zeros((n_in + 1, n_out))
    n_snapshots = len(data.snapshots)
    h_sum, y_sum = np.zeros((n_snapshots, n_in + 1)), np.zeros((n_snapshots, n_out))
    index = {id(snapshot): s for s, snapshot in enumerate(data.snapshots)}
    with torch.no_grad():
        for snapshot, x_pf, ldos_pe in data.chunks(*data.share(comm), chunk_points):
            x, y = torch.from_numpy(x_pf).to(device), torch.from_numpy(ldos_pe).to(device)
            hidden = model.mlp[:-1](model.normalise_input(x)).double()
            hidden = torch.cat([hidden, hidden.new_ones(len(hidden), 1)], dim=1)
            y_std = model.normalise_output(y).double()
            gram += (hidden.T @ hidden).cpu().numpy()
            cross += (hidden.T @ y_std).cpu().numpy()
            s = index[id(snapshot)]
            h_sum[s] += hidden.sum(dim=0).cpu().numpy()
            y_sum[s] += y_std.sum(dim=0).cpu().numpy()
    gram, cross = comm.sum(gram), comm.sum(cross)
    solution = np.zeros((n_in + 1, n_out))
    if dos_weight > 0:
        h_sum, y_sum = comm.sum(h_sum), comm.sum(y_sum)
    if comm.rank == 0:
        if dos_weight > 0:
            # mu n_s h̄_s h̄_sᵀ = mu h_sum h_sumᵀ / n_s (and the same for the cross term)
            sizes = data.sizes.astype(np.float64)[:, None]
            gram += dos_weight * (h_sum / sizes).T @ h_sum
            cross += dos_weight * (h_sum / sizes).T @ y_sum
        gram[np.diag_indices(n_in)] += ridge * np.trace(gram) / (n_in + 1)
        solution = np.linalg.solve(gram, cross)
    comm.mpi.Bcast(solution, root=0)
    with torch.no_grad():
        last.weight.copy_(torch.from_numpy(solution[:-1].T.copy()))
        last.bias.copy_(torch.from_numpy(solution[-1].copy()))


def check_arguments(settings: TrainingSettings, model_settings: ModelSettings, metadata: dict,
                    checkpoint_every: int, shuffle: str) -> None:
    """MlscaleError for settings, metadata or options :func:`train` cannot use."""
    check_settings(settings)
    ModelInfo.from_metadata(metadata, model_settings)
    if checkpoint_every < 0:
        raise MlscaleError("checkpoint_every must be >= 0")
    if shuffle not in SHUFFLES:
        raise MlscaleError(f"unknown shuffle '{shuffle}' (use {' or '.join(SHUFFLES)})")


def _start(train_snapshots, validation_snapshots, model_settings: ModelSettings,
           settings: TrainingSettings, metadata: dict, comm: Comm, device: torch.device,
           cache_dir, shuffle: str, chunk_points: int) -> TrainingState:
    """Open the data, compute its scaling, build the initial model (not yet on ``device``)."""
    n_features, n_energies = model_settings.layers[0], model_settings.layers[-1]
    data = open_snapshots(cache_openpmd(train_snapshots, cache_dir, comm), n_features,
                          n_energies, comm, streaming=shuffle == "snapshots")
    validation = open_snapshots(cache_openpmd(validation_snapshots, cache_dir, comm), n_features,
                                n_energies, comm)
    statistics = scaling_statistics(data, comm, chunk_points, check=[validation])
    model = initial_model(model_settings, settings.seed, statistics, settings.output_scaling)
    directions = [(w, v.to(device)) for w, v in loss_directions(metadata, model, settings)]
    return TrainingState(model, data, validation, model_settings, settings, metadata, comm,
                         device, shuffle, chunk_points, dos_directions=directions)


def _prepare_model(state: TrainingState, resume: str | Path | None) -> tuple[dict, dict] | None:
    """Continue from the checkpoint ``resume`` if given (returned, for the optimiser's
    state), move the model to the device and take the best weights so far."""
    saved = None
    if resume is not None:
        with state.comm.collective():
            saved = read_checkpoint(resume)
            state.progress = check_resume(saved, state, resume)
    state.model.to(state.device)
    state.best_state = {name: t.clone() for name, t in state.model.state_dict().items()}
    if saved is not None:
        state.best_state = {name: t.to(state.device) for name, t in saved[0]["best"].items()}
    return saved


def _create_optimizer(state: TrainingState, saved: tuple[dict, dict] | None) -> None:
    """Adam and ReduceLROnPlateau over the network's parameters (a checkpoint's state)."""
    settings = state.settings
    state.parameters = list(state.model.mlp.parameters())
    state.optimizer = torch.optim.Adam(state.parameters, lr=settings.learning_rate,
                                       weight_decay=settings.weight_decay)
    state.scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(
        state.optimizer, factor=settings.lr_factor, patience=settings.lr_patience)
    if saved is not None:
        state.optimizer.load_state_dict(saved[0]["optimizer"])
        state.scheduler.load_state_dict(saved[1]["scheduler"])


def _run_epoch(state: TrainingState, parallel, stop: _StopSignal) -> bool:
    """The rest of the current epoch, its validation and bookkeeping; True when training
    is finished (last epoch or early stopping)."""
    progress = state.progress
    epoch_start, first_step = time.perf_counter(), progress.step
    for batch in epoch_batches(state.settings.seed, progress.epoch, state.data.sizes,
                               state.shuffle, state.settings.batch_size, progress.step):
        _train_step(state, batch, parallel, stop)
    train_seconds = time.perf_counter() - epoch_start
    val_loss = validation_loss(state.model, state.validation, state.comm, state.device,
                               state.chunk_points)
    if not (np.isfinite(val_loss) and np.isfinite(progress.epoch_sse)):
        raise MlscaleError(f"training diverged in epoch {progress.epoch + 1} (loss is "
                           "not finite); lower the learning rate")
    state.scheduler.step(val_loss)
    _record_epoch(state, val_loss, epoch_start, train_seconds, first_step)
    return _end_epoch(state, val_loss)


def _train_step(state: TrainingState, batch: np.ndarray, parallel, stop: _StopSignal) -> None:
    """One optimiser step on a global batch: this rank's share of it, gradients averaged.

    On SIGTERM (on any rank) the step is finished, a checkpoint written and
    TrainingInterrupted raised on every rank.
    """
    comm, model, progress = state.comm, state.model, state.progress
    n_energies = state.model_settings.layers[-1]
    batch_size = len(batch)
    lo, hi = local_range(batch_size, comm)
    x_pf, ldos_pe = state.data.read(np.sort(batch[lo:hi]))
    x, y = torch.from_numpy(x_pf).to(state.device), torch.from_numpy(ldos_pe).to(state.device)
    err = model.mlp(model.normalise_input(x)) - model.normalise_output(y)
    sse = (err**2).sum()
    loss = sse + dos_loss(err, state.dos_directions, state.settings.dos_terms, comm)
    state.optimizer.zero_grad(set_to_none=True)
    (loss * (comm.size / (batch_size * n_energies))).backward()
    stop_flag, batch_sse = parallel.average_gradients(
        state.parameters, extra=(float(stop.received), sse.item()))
    state.optimizer.step()
    progress.step += 1
    progress.epoch_sse += batch_sse
    if stop_flag:
        write_checkpoint(state)
        where = (f"; checkpoint written to {state.checkpoint}, continue with --resume "
                 f"{state.checkpoint}" if state.checkpoint is not None else "")
        raise TrainingInterrupted(f"training interrupted by SIGTERM in epoch "
                                  f"{progress.epoch + 1} after step {progress.step}{where}")


def _record_epoch(state: TrainingState, val_loss: float, epoch_start: float,
                  train_seconds: float, first_step: int) -> None:
    """Append the epoch's history entry and print it on rank 0."""
    progress, comm, data = state.progress, state.comm, state.data
    entry = {"epoch": progress.epoch + 1,
             "train_loss": progress.epoch_sse / (data.npoints * state.model_settings.layers[-1]),
             "validation_loss": val_loss,
             "lr": state.optimizer.param_groups[0]["lr"],
             "seconds": comm.max(time.perf_counter() - epoch_start),
             "train_seconds": comm.max(train_seconds)}
    entry["samples_per_s"] = (data.npoints - min(first_step * state.settings.batch_size,
                                                 data.npoints)) / entry["train_seconds"]
    progress.history.append(entry)
    comm.print(f"epoch {entry['epoch']:4d}  train {entry['train_loss']:.6e}  "
               f"validation {val_loss:.6e}  lr {entry['lr']:.3e}  "
               f"{entry['seconds']:.2f} s  "
               f"{entry['samples_per_s']:.0f} samples/s  {_time_left(state)}")


def _time_left(state: TrainingState) -> str:
    """Seconds of the epochs so far (a resumed run included) and at most what is left at
    their mean pace (every epoch up to ``epochs``; early stopping may end sooner)."""
    seconds = [entry["seconds"] for entry in state.progress.history]
    left = (state.settings.epochs - state.progress.epoch - 1) * sum(seconds) / len(seconds)
    return f"elapsed {sum(seconds):.0f} s, <= {left:.0f} s left"


def _end_epoch(state: TrainingState, val_loss: float) -> bool:
    """Keep the best weights, advance to the next epoch, checkpoint; True if finished."""
    progress, settings = state.progress, state.settings
    if val_loss < progress.best_loss:
        progress.best_loss, progress.best_epoch, progress.bad_epochs = (
            val_loss, progress.epoch + 1, 0)
        state.best_state = {name: t.clone() for name, t in state.model.state_dict().items()}
    else:
        progress.bad_epochs += 1
    progress.epoch, progress.step, progress.epoch_sse = progress.epoch + 1, 0, 0.0
    finished = (progress.epoch == settings.epochs or
                0 < settings.early_stopping_patience <= progress.bad_epochs)
    every = state.checkpoint_every
    if every and (progress.epoch % every == 0 or finished):
        write_checkpoint(state)
    if finished and progress.epoch < settings.epochs:
        state.comm.print(f"early stopping: no improvement for {progress.bad_epochs} "
                         f"epochs; best epoch {progress.best_epoch}")
    return finished


# -- checkpoints ------------------------------------------------------------------------


def _fingerprint(state: TrainingState) -> dict:
    """What must be equal for a bit-for-bit resume (epochs may be raised)."""
    training = state.settings.to_dict()
    training.pop("epochs")
    return {"ranks": state.comm.size, "model": state.model_settings.to_dict(),
            "training": training, "shuffle": "snapshots" if state.data.streaming else "points",
            "train_points": state.data.sizes.tolist(),
            "validation_points": state.validation.npoints}


def write_checkpoint(state: TrainingState) -> None:
    """Rank 0 writes ``state.checkpoint`` (if set); collective."""
    if state.checkpoint is not None:
        with state.comm.collective():
            if state.comm.rank == 0:
                save_checkpoint(state.checkpoint, state)


def save_checkpoint(path: str | Path, state: TrainingState) -> None:
    """Write a checkpoint (safetensors + JSON) atomically."""
    tensors = {f"model.{name}": t for name, t in state.model.state_dict().items()}
    tensors.update({f"best.{name}": t for name, t in state.best_state.items()})
    optimizer_state = state.optimizer.state_dict()
    for index, values in optimizer_state["state"].items():
        for key, value in values.items():
            tensors[f"optimizer.{index}.{key}"] = torch.as_tensor(value)
    tensors = {name: t.detach().cpu().contiguous() for name, t in tensors.items()}
    header = {"format": CHECKPOINT_FORMAT, "format_version": CHECKPOINT_VERSION,
              "fingerprint": _fingerprint(state), "progress": state.progress.__dict__,
              "scheduler": state.scheduler.state_dict(),
              "optimizer_param_groups": optimizer_state["param_groups"],
              "epochs": state.settings.epochs, "metadata": state.metadata,
              "tensors_sha256": tensors_sha256({n: t.numpy() for n, t in tensors.items()})}
    with atomic_path(path) as tmp:
        Path(tmp).write_bytes(safetensors.torch.save(tensors,
                                                     metadata={"mlscale": json.dumps(header)}))


def read_checkpoint(path: str | Path) -> tuple[dict, dict]:
    """``(tensors, header)`` of a checkpoint; tensors grouped into model/best/optimizer."""
    tensors, header = read_safetensors(path, CHECKPOINT_FORMAT, CHECKPOINT_VERSION)
    recorded = header.get("tensors_sha256")  # absent in checkpoints written before it
    if recorded is not None and tensors_sha256(
            {n: t.numpy() for n, t in tensors.items()}) != recorded:
        raise MlscaleError(f"{path} is corrupt: the SHA-256 of its tensors differs from the "
                           f"one recorded when it was written")
    groups: dict = {"model": {}, "best": {}, "optimizer_state": {}}
    try:
        for name, tensor in tensors.items():
            group, rest = name.split(".", 1)
            if group == "optimizer":
                index, key = rest.split(".", 1)
                groups["optimizer_state"].setdefault(int(index), {})[key] = tensor
            else:
                groups[group][rest] = tensor
        groups["optimizer"] = {"state": groups.pop("optimizer_state"),
                               "param_groups": header["optimizer_param_groups"]}
    except (KeyError, ValueError):
        raise MlscaleError(f"{path}: unexpected contents in checkpoint") from None
    return groups, header


def check_resume(saved: tuple[dict, dict], state: TrainingState, path: str | Path) -> Progress:
    """Load the saved model state into ``state.model``; the saved Progress. Checks
    that the checkpoint belongs to the same ranks, settings and data."""
    tensors, header = saved
    expected = _fingerprint(state)
    found = dict(header.get("fingerprint", {}))
    if "training" in found:  # settings added since the checkpoint was written: defaults
        defaults = TrainingSettings().to_dict()
        defaults.pop("epochs")
        found["training"] = {**defaults, **found["training"]}
    for key, value in expected.items():
        if found.get(key) != value:
            raise MlscaleError(f"cannot resume from {path}: {key} differs (checkpoint "
                               f"{found.get(key)}, now {value})")
    buffers = ("input_shift", "input_scale", "output_shift", "output_scale")
    for name in buffers:
        if not np.allclose(tensors["model"][name].numpy(), getattr(state.model, name).numpy(),
                           rtol=1e-5, atol=0):
            raise MlscaleError(f"cannot resume from {path}: the training data differ "
                               f"(scaling {name} changed)")
    state.model.load_state_dict(tensors["model"])
    return Progress(**header["progress"])
