"""Gradient averaging over the ranks of an MPI job: torch.distributed (default) or Horovod.

Both backends are set up from the MPI communicator, so ``mpiexec``/``srun`` is all a
user needs (no torchrun). A run on one rank goes through the same code with a
process group of size one. This module makes no MPI calls of its own: the rendezvous
goes through :class:`~mlscale.parallel.Comm` (``broadcast``, ``collective``), and
Horovod, which runs its own MPI communication, is handed ``comm.mpi``.

- ``ddp``: ``torch.distributed`` with gloo on CPU, NCCL on GPU. Rank 0 starts a
  TCPStore on a free port of its host and broadcasts host and port over MPI
  (``MASTER_ADDR`` overrides the host name, e.g. for a high-speed interface).
- ``horovod``: ``horovod.torch`` initialised on the same MPI communicator.

Gradients are averaged with ONE all-reduce per step over a flat buffer in fixed
parameter order (what DistributedDataParallel does with a single static bucket),
which also carries a few numbers the training loop needs summed (loss, stop flag).
The DDP wrapper itself is not used because it changes its bucket layout after the
first iteration, and Horovod's tensor fusion orders tensors as they become ready:
on 3+ ranks either makes the summation order, hence the last bit of the weights,
depend on the run's history, and a resumed run would not continue bit for bit.

Watchdog (ddp): a rank waits at most ``MLSCALE_WATCHDOG_S`` seconds (default 120, well
before the process group's 10-minute timeout) for a step's all-reduce; a peer that
stalls (stopped, swapping, hung) then aborts the whole job with a message naming the
wait, instead of a traceback after the timeout. The wait polls in Python, so signal
handlers (SIGTERM's checkpoint, mlscale.signals) run while it waits; once SIGTERM has
arrived it waits at most 10 s more (the checkpoint needs the step; a stalled peer would
never finish it), then aborts.
"""

from __future__ import annotations

import datetime
import os
import signal
import socket
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import torch

from .config import DISTRIBUTED_BACKENDS as BACKENDS
from .errors import MlscaleError
from .parallel import Comm
from .signals import FORWARD_S, received_since

TIMEOUT = datetime.timedelta(minutes=10)
#: seconds a step's gradient all-reduce may wait for the other ranks (environment
#: variable MLSCALE_WATCHDOG_S overrides; 0 disables the watchdog)
DEFAULT_WATCHDOG_S = 120.0
#: seconds a step's all-reduce may still wait once SIGTERM arrived (then: abort)
SIGTERM_WAIT_S = 10.0


def watchdog_seconds() -> float | None:
    """The all-reduce watchdog in seconds from MLSCALE_WATCHDOG_S (None: disabled)."""
    text = os.environ.get("MLSCALE_WATCHDOG_S", str(DEFAULT_WATCHDOG_S))
    try:
        seconds = float(text)
    except ValueError:
        raise MlscaleError(
            f"MLSCALE_WATCHDOG_S must be a number of seconds, got {text!r}") from None
    if not seconds >= 0:
        raise MlscaleError(f"MLSCALE_WATCHDOG_S must be >= 0 seconds, got {text!r}")
    return seconds or None


def local_rank(comm: Comm) -> int:
    """This rank's index on its node, from the launcher's environment (else the MPI rank)."""
    for name in ("SLURM_LOCALID", "MPI_LOCALRANKID", "OMPI_COMM_WORLD_LOCAL_RANK",
                 "PMI_LOCAL_RANK"):
        if os.environ.get(name, "").isdigit():
            return int(os.environ[name])
    return comm.rank


def select_device(name: str, comm: Comm) -> torch.device:
    """``cpu``, or ``cuda``: the GPU ``local_rank % gpus`` of this node."""
    if name == "cpu":
        return torch.device("cpu")
    if name == "cuda":
        if not torch.cuda.is_available():
            raise MlscaleError("--device cuda was requested but torch sees no GPU")
        return torch.device("cuda", local_rank(comm) % torch.cuda.device_count())
    raise MlscaleError(f"unknown device '{name}' (use cpu or cuda)")


class _Averager:
    """Averages the gradients of a list of parameters over all ranks, in place."""

    size: int

    def average_gradients(self, parameters: Sequence[torch.nn.Parameter],
                          extra: Sequence[float] = ()) -> list[float]:
        """Replace the gradients by their mean over the ranks; return the sums over the
        ranks of the ``extra`` numbers, reduced in the same all-reduce."""
        grads = [p.grad for p in parameters if p.grad is not None]
        if len(grads) != len(parameters):
            raise MlscaleError("average_gradients: every parameter needs a gradient")
        extra_t = torch.tensor(extra, dtype=grads[0].dtype, device=grads[0].device)
        flat = torch.cat([g.reshape(-1) for g in grads] + [extra_t])
        if self.size > 1:  # a sum over one rank is the identity
            self._sum_(flat)
        offset = 0
        for g in grads:
            g.copy_(flat[offset:offset + g.numel()].view_as(g) / self.size)
            offset += g.numel()
        return flat[offset:].tolist()

    def _sum_(self, flat: torch.Tensor) -> None:
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError


class _TorchDistributed(_Averager):
    """A torch.distributed process group over the MPI ranks (gloo, or NCCL on GPU)."""

    def __init__(self, comm: Comm, device: torch.device):
        import torch.distributed as dist

        self.dist, self.size, self.comm = dist, comm.size, comm
        self.watchdog_s = watchdog_seconds()
        if dist.is_initialized():
            raise MlscaleError("a torch.distributed process group is already active")
        host, port, error = None, None, None
        if comm.rank == 0:
            host = os.environ.get("MASTER_ADDR") or socket.gethostname()
            try:
                store = dist.TCPStore(host, 0, comm.size, True, timeout=TIMEOUT,
                                      wait_for_workers=False)
                port = store.port
            except (RuntimeError, OSError) as exc:
                error = f"cannot start the DDP rendezvous on {host}: {exc}"
        host, port, error = comm.broadcast((host, port, error))
        if error:
            raise MlscaleError(error)
        with comm.collective():
            if comm.rank != 0:
                store = dist.TCPStore(host, port, comm.size, False, timeout=TIMEOUT)
        backend = "nccl" if device.type == "cuda" else "gloo"
        dist.init_process_group(backend, store=store, rank=comm.rank, world_size=comm.size,
                                timeout=TIMEOUT)
        self.store = store  # rank 0 serves the rendezvous while the group lives

    def _sum_(self, flat: torch.Tensor) -> None:
        if self.watchdog_s is None:
            self.dist.all_reduce(flat)
            return
        work = self.dist.all_reduce(flat, async_op=True)
        deadline = time.monotonic() + self.watchdog_s
        while not work.is_completed():
            now = time.monotonic()
            if now > deadline:
                self._stalled(f"waited {self.watchdog_s:g} s")
            sigterm = received_since(signal.SIGTERM)
            if sigterm is not None and now > sigterm + SIGTERM_WAIT_S:
                self._stalled(f"still waits {SIGTERM_WAIT_S:g} s after SIGTERM")
            time.sleep(0.0002)
        work.wait()  # raises the process group's error, if any

    def _stalled(self, how: str) -> None:
        """Abort the job: a peer has not joined the all-reduce within the watchdog."""
        sys.stderr.write(f"mlscale: error on rank {self.comm.rank}: the gradient all-reduce "
                         f"{how} for the other ranks: a rank is stalled (stopped, swapping "
                         f"or hung); aborting all {self.size} ranks (MLSCALE_WATCHDOG_S "
                         f"sets the limit)\n")
        sys.stderr.flush()
        time.sleep(FORWARD_S)  # mpiexec kills the ranks at once: let it forward the line
        self.comm.mpi.Abort(1)

    def close(self) -> None:
        self.dist.destroy_process_group()


class _Horovod(_Averager):
    """Horovod initialised on the MPI communicator."""

    def __init__(self, comm: Comm, device: torch.device):
        with comm.collective():
            try:
                import horovod.torch as hvd
            except ImportError:
                raise MlscaleError(
                    "Horovod is not installed; see jobs/install_horovod.sh") from None
        self.hvd, self.size = hvd, comm.size
        hvd.init(comm=comm.mpi)
        if hvd.size() != comm.size or hvd.rank() != comm.rank:
            raise MlscaleError("Horovod's ranks differ from the MPI communicator's")

    def _sum_(self, flat: torch.Tensor) -> None:
        self.hvd.allreduce_(flat, op=self.hvd.Sum, name="mlscale.gradients")

    def close(self) -> None:
        self.hvd.shutdown()


@contextmanager
def data_parallel(backend: str, comm: Comm, device: torch.device) -> Iterator[_Averager]:
    """Gradient averaging over ``comm`` for the duration of a ``with`` block.

    Yields an object whose ``average_gradients(parameters, extra)`` replaces every
    rank's gradients by their mean over the ranks (call it between backward and step)
    and returns the sums of the ``extra`` numbers.
    """
    if backend not in BACKENDS:
        raise MlscaleError(f"unknown distributed backend '{backend}' (use {' or '.join(BACKENDS)})")
    parallel = (_TorchDistributed if backend == "ddp" else _Horovod)(comm, device)
    try:
        yield parallel
    finally:
        parallel.close()
