"""SIGINT/SIGTERM on any rank of a multi-rank job end every rank promptly (MPI_Abort).

Without this, a rank that is interrupted exits alone and the others wait for it forever
in their next collective call. A Python signal handler runs only in the main thread and
only between bytecodes, so a rank blocked in an MPI call (waiting for a peer) would never
get to it; therefore the C-level handler also writes the signal number to a pipe
(:func:`signal.set_wakeup_fd`) that a watcher thread reads, and whichever of the two runs
first aborts the job. The abort's status is 128 + the signal number (130 for SIGINT, 143
for SIGTERM), as a shell reports a process killed by the signal. Should MPI_Abort itself
hang (called from the watcher while the main thread is inside MPI), an alarm ends the
rank a few seconds later and the launcher ends the others.

A handler installed later for the same signal takes precedence: training replaces the
SIGTERM handler with its own (finish the step, write a checkpoint, stop on all ranks),
and the watcher then leaves SIGTERM alone, unless the training does not act on it within
``grace_s`` seconds (a peer that stalls): then it aborts too.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from types import FrameType

from .parallel import Comm

SIGNALS = (signal.SIGINT, signal.SIGTERM)
#: seconds a foreign SIGTERM handler (training's checkpoint) gets before the job is aborted
DEFAULT_GRACE_S = 30.0
#: seconds between the message and MPI_Abort (Hydra may drop a rank's last stderr line)
FORWARD_S = 0.5
#: seconds MPI_Abort may take before SIGALRM ends the rank (mpiexec then ends the job)
ABORT_S = 5


class _Aborter:
    """The handler, the watcher thread and the one abort of a job."""

    def __init__(self, comm: Comm, grace_s: float) -> None:
        self.comm = comm
        self.grace_s = grace_s
        self.lock = threading.Lock()

    def handle(self, signum: int, frame: FrameType | None) -> None:
        self.abort(signum)

    def abort(self, signum: int, note: str = "") -> None:
        """Print which signal reached which rank and abort every rank of the job."""
        if not self.lock.acquire(blocking=False):
            return  # the other path is already aborting
        name = signal.Signals(signum).name
        os.write(2, f"mlscale: {name} on rank {self.comm.rank}{note}: aborting all "
                    f"{self.comm.size} ranks\n".encode())
        signal.alarm(int(FORWARD_S + ABORT_S))  # SIGALRM's default ends the rank if
        time.sleep(FORWARD_S)  # MPI_Abort hangs; mpiexec kills the ranks at once: let it
        self.comm.mpi.Abort(128 + signum)  # forward the line first

    def watch(self, read_fd: int) -> None:
        """Thread body: wait for signal numbers written by the C-level handler."""
        while True:
            try:
                data = os.read(read_fd, 64)
            except OSError:
                return
            if not data:
                return
            for signum in data:
                if signum not in SIGNALS:
                    continue
                _received.setdefault(signum, time.monotonic())
                if signal.getsignal(signum) == self.handle:
                    self.abort(signum)
                else:  # a later handler owns the signal (training): give it time to act
                    threading.Thread(target=self.later, args=(signum,), daemon=True).start()

    def later(self, signum: int) -> None:
        time.sleep(self.grace_s)
        self.abort(signum, f" not acted upon within {self.grace_s:g} s")


_installed: _Aborter | None = None
#: signal number -> when (time.monotonic()) the watcher first saw it
_received: dict[int, float] = {}


def received_since(signum: int) -> float | None:
    """When (``time.monotonic()``) ``signum`` first reached this rank, None if never
    (only known once :func:`abort_on_signals` installed the watcher)."""
    return _received.get(signum)


def abort_on_signals(comm: Comm, grace_s: float = DEFAULT_GRACE_S) -> bool:
    """Install the handlers on a job of several ranks (main thread only); True if done.

    A one-rank run keeps Python's behaviour (KeyboardInterrupt; SIGTERM terminates).
    grace_s: seconds a later, foreign SIGTERM handler may take before the abort.
    """
    global _installed
    if comm.size == 1 or threading.current_thread() is not threading.main_thread():
        return False
    if _installed is not None:  # called again in this process (tests): one watcher
        _installed.comm, _installed.grace_s = comm, grace_s
        for signum in SIGNALS:
            signal.signal(signum, _installed.handle)
        return True
    aborter = _installed = _Aborter(comm, grace_s)
    read_fd, write_fd = os.pipe()
    os.set_blocking(write_fd, False)
    for signum in SIGNALS:
        signal.signal(signum, aborter.handle)
    previous = signal.set_wakeup_fd(write_fd, warn_on_full_buffer=False)
    if previous != -1:  # someone else's wakeup fd (an event loop): keep theirs
        signal.set_wakeup_fd(previous)
        os.close(read_fd)
        os.close(write_fd)
        return True
    threading.Thread(target=aborter.watch, args=(read_fd,), name="mlscale-signals",
                     daemon=True).start()
    return True
