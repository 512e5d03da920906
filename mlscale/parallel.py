"""MPI for mlscale: the communicator, reductions of small data, collective errors.

A :class:`Comm` wraps an mpi4py communicator; mlscale's own reductions, broadcasts and
barriers go through it. Libraries with MPI communication of their own are handed the
wrapped communicator ``comm.mpi``: LAMMPS (descriptors/lammps.py), Horovod
(distributed.py) and mpi4py-fft (energy/fft.py, whose layout exchange around the FFT
also calls ``allgather`` and ``Alltoallv`` on it). A serial run is a run on a
communicator of one rank (``MPI.COMM_SELF`` or ``COMM_WORLD`` of size 1): there is
no separate serial code path anywhere in mlscale.

Errors are collective: code that may fail on some ranks only (reading a file,
validating input) runs inside ``with comm.collective():``. If any rank raises,
every rank raises :class:`~mlscale.errors.MlscaleError` with the message of the
lowest failing rank, so no rank is left waiting in a later collective call.
Code inside such a block must not itself call collectives.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, NoReturn, TypeVar

import numpy as np
from mpi4py import MPI  # noqa: F401  (must be imported before lammps)

from .errors import MlscaleError

T = TypeVar("T")


class Comm:
    """A communicator: rank, size, reductions of small arrays, collective errors."""

    def __init__(self, mpi_comm: MPI.Comm | None = None) -> None:
        self.mpi = MPI.COMM_WORLD if mpi_comm is None else mpi_comm
        self.rank = self.mpi.Get_rank()
        self.size = self.mpi.Get_size()

    # -- reductions (small, replicated data only) ---------------------------------
    def sum(self, value: Any) -> Any:
        """Sum a scalar or a numpy array over ranks; every rank gets the result."""
        if np.isscalar(value):
            return self.mpi.allreduce(value, op=MPI.SUM)
        array = np.ascontiguousarray(value)
        out = np.empty_like(array)
        self.mpi.Allreduce(array, out, op=MPI.SUM)
        return out

    def max(self, value: T) -> T:
        """Maximum of a scalar over ranks."""
        return self.mpi.allreduce(value, op=MPI.MAX)

    def min(self, value: T) -> T:
        """Minimum of a scalar over ranks."""
        return self.mpi.allreduce(value, op=MPI.MIN)

    def broadcast(self, obj: Any, root: int = 0) -> Any:
        """Broadcast a small picklable-free Python object (str, numbers, lists, dicts)."""
        return self.mpi.bcast(obj, root=root)

    def barrier(self) -> None:
        self.mpi.Barrier()

    def idle_barrier(self, poll_s: float = 0.05) -> None:
        """A barrier that sleeps while it waits, leaving the cores to another program
        (e.g. QE started by rank 0); a plain MPI barrier busy-polls."""
        request = self.mpi.Ibarrier()
        while not request.Test():
            time.sleep(poll_s)

    def threads_per_rank(self) -> int:
        """CPU cores of this node divided by the ranks on it (at least 1)."""
        node = self.mpi.Split_type(MPI.COMM_TYPE_SHARED)
        local_ranks = node.Get_size()
        node.Free()
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
        return max(1, (cores or 1) // local_ranks)

    # -- collective error handling ---------------------------------------------------
    @contextmanager
    def collective(self) -> Iterator[None]:
        """Run a block on all ranks; if it fails anywhere, fail everywhere alike.

        The block must not call collectives itself. Raises MlscaleError carrying the
        message of the lowest rank that failed (``MlscaleError`` messages verbatim,
        other exceptions as ``TypeName: message``).
        """
        message = None
        try:
            yield
        except MlscaleError as error:
            message = str(error)
        except Exception as error:  # noqa: BLE001 - turned into a collective error
            message = f"{type(error).__name__}: {error}"
        failed = self.size if message is None else self.rank
        first = self.min(failed)
        if first == self.size:
            return
        message = self.broadcast(message, root=first)
        raise MlscaleError(message)

    def print(self, *args: Any, **kwargs: Any) -> None:
        """print() on rank 0 only (flushed)."""
        if self.rank == 0:
            print(*args, **kwargs, flush=True)


def world() -> Comm:
    """The communicator of all ranks of this job."""
    return Comm(MPI.COMM_WORLD)


def check_launch(comm: Comm, environ: dict[str, str] | None = None) -> None:
    """MlscaleError if a launcher started several tasks that each see an MPI world of
    one rank (Slurm's ``srun`` without the MPI plugin of this MPI, e.g. ``--mpi=none``
    with the pip MPICH): every task would run the whole job alone and race on its output.

    Reads ``SLURM_STEP_NUM_TASKS`` (set by srun for its tasks; not in the batch script
    itself); ``MLSCALE_INDEPENDENT_TASKS=1`` allows deliberately independent tasks."""
    env = os.environ if environ is None else environ
    try:
        tasks = int(env.get("SLURM_STEP_NUM_TASKS", "1"))
    except ValueError:
        return
    if comm.size != 1 or tasks <= 1 or env.get("MLSCALE_INDEPENDENT_TASKS") == "1":
        return
    raise MlscaleError(
        f"srun started {tasks} tasks but MPI sees a world of 1 rank in each (task "
        f"{env.get('SLURM_PROCID', '?')}): every task would run the whole job alone. "
        "Give srun the MPI plugin of the MPI that mpi4py uses (the pip MPICH: "
        "`srun --mpi=pmi2`; `srun --mpi=list` shows the plugins), or launch with that "
        "MPI's mpiexec; set MLSCALE_INDEPENDENT_TASKS=1 if independent tasks are intended")


def self_comm() -> Comm:
    """A communicator of this rank alone (for running one rank's share by itself)."""
    return Comm(MPI.COMM_SELF)


def fail_all(comm: Comm, message: str, status: int = 1) -> NoReturn:
    """Last resort for an unexpected error that may have left ranks in a collective.

    Prints the message and aborts the whole MPI job so nothing hangs.
    """
    sys.stderr.write(f"mlscale: internal error on rank {comm.rank}: {message}\n")
    sys.stderr.flush()
    if comm.size > 1:
        comm.mpi.Abort(status)
    raise SystemExit(status)
