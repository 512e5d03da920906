"""Progress bars for long phases, on rank 0 only, through tqdm (elapsed time and ETA).

Shown only when stderr is a terminal and not quieted (``mlscale -q``, or
``MLSCALE_QUIET=1``): output piped to a file or a log stays free of bar lines.
"""
from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Iterable, Iterator
from typing import TypeVar

T = TypeVar("T")

QUIET_ENV = "MLSCALE_QUIET"


def set_quiet(quiet: bool) -> None:
    """Switch bars off for this process (and the processes it starts) when ``quiet``."""
    if quiet:
        os.environ[QUIET_ENV] = "1"


def enabled(rank: int = 0) -> bool:
    """True on rank 0 when stderr is a terminal and no quiet switch is set."""
    return (rank == 0 and os.environ.get(QUIET_ENV, "") in ("", "0")
            and sys.stderr is not None and sys.stderr.isatty())


def progress(items: Iterable[T], *, total: int | None = None, desc: str = "",
             unit: str = "it", rank: int = 0, initial: int = 0) -> Iterator[T]:
    """``items`` with a tqdm bar on stderr (rank 0, terminal only; otherwise plain);
    ``initial``: steps already done before ``items`` (a resumed run)."""
    if not enabled(rank):
        yield from items
        return
    from tqdm import tqdm
    # a terminal that reports no size (a fresh pty, some batch consoles) counts as 80×24:
    # tqdm would hide its bar on a screen of 0 rows
    size = shutil.get_terminal_size(fallback=(80, 24))
    with tqdm(items, total=total, desc=desc, unit=unit, file=sys.stderr,
              ncols=size.columns, nrows=size.lines, leave=True, mininterval=0.5,
              initial=initial) as bar:
        yield from bar


def note(message: str, rank: int = 0) -> None:
    """A one-line status message on stderr (rank 0, terminal only)."""
    if enabled(rank):
        print(f"mlscale: {message}", file=sys.stderr, flush=True)


def world_rank() -> int:
    """This process's rank in MPI_COMM_WORLD if mpi4py is loaded, else 0 (no MPI import)."""
    mpi = sys.modules.get("mpi4py.MPI")
    return int(mpi.COMM_WORLD.Get_rank()) if mpi is not None else 0


def compile_note(kernel, what: str) -> None:
    """Say once, on rank 0 of a terminal run, that numba is about to compile ``kernel``
    (a ``numba.njit(cache=True)`` dispatcher): when it has no compiled signature in this
    process and no cache index on disk (a fresh install whose cache was not warmed by
    ``python -m mlscale.warm``). Silent otherwise, and never an error."""
    if kernel.signatures or not enabled(world_rank()):
        return
    try:
        index = kernel._cache._cache_file._index_path  # numba's on-disk cache index
    except AttributeError:
        return
    if not os.path.exists(index):
        note(f"compiling the {what} kernel (first use after install, ~30 s; cached "
             f"afterwards: `python -m mlscale.warm` does it ahead of time)")
