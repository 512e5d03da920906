"""A run's output directory: claimed at the start, sealed by results.json at the end.

``results.json`` exists ⇒ the run that wrote it completed, and each file it lists under
``output_files`` (name → SHA-256 and size in bytes) is the file beside it. This holds
under ``kill -9`` at any moment because

* a run first *claims* the directory (:func:`claim_directory`, rank 0): it takes an
  exclusive ``flock`` on ``DIR/.mlscale-lock`` (a second concurrent run into the same
  directory fails with a message naming the holder; the kernel drops the lock when the
  holder dies, so no stale lock survives a kill), removes the previous run's
  ``results.json`` *before anything else* and then its other outputs
  (:data:`OUTPUT_NAMES`), and deletes the ``.tmp-*`` files of killed runs;
* every output file is written under a temporary name and renamed (io/atomic.py);
* ``results.json`` is written last, with the hashes of the files renamed before it.

Before any of that it probes that the directory can be written (a file created and
removed), so an unwritable ``--output`` fails before the expensive work.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import json
import os
import socket
import sys
from pathlib import Path
from typing import IO, Any

from ..errors import MlscaleError
from ..parallel import Comm
from .atomic import TEMPORARY_PREFIX, temporary_path

RESULTS = "results.json"
LOCK = ".mlscale-lock"
#: the files a prediction or ``mlscale electrons -o`` writes besides results.json
OUTPUT_NAMES = ("dos.csv", "density.h5", "density.pmd", "density.vts", "density.cube",
                "density_block.npy")


class DirectoryClaim:
    """This run's hold on an output directory (rank 0 holds the lock; other ranks None).

    The lock is released by :meth:`release`, when the object is garbage-collected, or
    by the kernel when the process ends (also on kill -9).
    """

    def __init__(self, path: Path, handle: IO[str] | None, removed: list[str]) -> None:
        self.path = path
        self.handle = handle
        self.removed = removed  # names deleted on claiming (previous outputs, temporaries)

    def release(self) -> None:
        """Drop the lock (idempotent)."""
        if self.handle is not None:
            self.handle.close()
            self.handle = None


def claim_directory(path: str | Path, comm: Comm, what: str = "--output") -> DirectoryClaim:
    """Create, probe, lock and clean the output directory ``path`` (collective).

    MlscaleError (on every rank) if ``path`` is a file, cannot be created or written,
    or another run holds it. Prints on stderr (rank 0) what it removed.
    """
    path = Path(path)
    claim = DirectoryClaim(path, None, [])
    with comm.collective():
        if comm.rank == 0:
            claim = _claim_on_root(path, what)
    if claim.removed:
        comm.print(f"mlscale: {path}: removed the previous run's "
                   f"{', '.join(claim.removed)}", file=sys.stderr)
    return claim


def _claim_on_root(path: Path, what: str) -> DirectoryClaim:
    if path.exists() and not path.is_dir():
        raise MlscaleError(f"{what} {path} is an existing file, not a directory")
    try:
        path.mkdir(parents=True, exist_ok=True)
        _probe(path)
        handle = open(path / LOCK, "a+", encoding="utf-8")
    except OSError as error:
        raise MlscaleError(f"cannot write into {what} directory {path}: "
                           f"{error.strerror or error}") from None
    _lock(handle, path)
    removed = []
    for name in (RESULTS, *OUTPUT_NAMES):  # results.json first: the run is no longer complete
        if _remove(path / name):
            removed.append(name)
    stale = [p for p in path.iterdir() if p.name.startswith(TEMPORARY_PREFIX)]
    for tmp in stale:
        _remove(tmp)
    if stale:
        removed.append(f"{len(stale)} temporary file(s) of interrupted runs")
    return DirectoryClaim(path, handle, removed)


def probe_writable(path: str | Path, what: str) -> None:
    """MlscaleError unless the file ``path`` (``what`` it is, e.g. ``"-o"``) can be
    written later: its directory exists and takes a new file (created and removed)."""
    directory = Path(path).parent
    if not directory.is_dir():
        raise MlscaleError(f"cannot write {what} {path}: directory {directory} does not exist")
    if Path(path).is_dir():
        raise MlscaleError(f"cannot write {what} {path}: it is a directory")
    try:
        _probe(directory)
    except OSError as error:
        raise MlscaleError(f"cannot write {what} {path}: {error.strerror or error}") from None


def _probe(path: Path) -> None:
    """Create and remove a file in ``path`` (OSError if the directory is not writable)."""
    probe = temporary_path(path / "probe")
    with open(probe, "w", encoding="utf-8") as handle:
        handle.write("probe\n")
    os.remove(probe)


def _lock(handle: IO[str], path: Path) -> None:
    """Take the exclusive lock on the open lock file and record who holds it."""
    try:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as error:
        if error.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
            print(f"mlscale: warning: cannot lock {path / LOCK} ({error.strerror}): a "
                  f"concurrent run into {path} would not be detected", file=sys.stderr)
            return
        handle.seek(0)
        holder = handle.read().strip() or "unknown"
        handle.close()
        raise MlscaleError(f"{path} is in use by another mlscale run ({holder}); wait for "
                           f"it to finish or choose another output directory") from None
    handle.seek(0)
    handle.truncate()
    handle.write(f"pid {os.getpid()} on {socket.gethostname()}\n")
    handle.flush()


def _remove(path: Path) -> bool:
    """Delete a file; False if there was none. MlscaleError naming it otherwise."""
    try:
        os.remove(path)
    except FileNotFoundError:
        return False
    except OSError as error:
        raise MlscaleError(f"cannot remove the previous run's {path}: "
                           f"{error.strerror or error}") from None
    return True


def sha256(path: str | Path) -> str:
    """Hex SHA-256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def output_files(path: str | Path) -> dict[str, dict[str, Any]]:
    """``{name: {"sha256", "bytes"}}`` of the outputs (:data:`OUTPUT_NAMES`) in ``path``."""
    path = Path(path)
    return {name: {"sha256": sha256(path / name), "bytes": (path / name).stat().st_size}
            for name in OUTPUT_NAMES if (path / name).is_file()}


def check_run_directory(path: str | Path) -> str:
    """``"complete"`` (results.json and exactly the files it lists, hashes equal),
    ``"incomplete"`` (no results.json); MlscaleError naming the first mismatch."""
    path = Path(path)
    results = path / RESULTS
    if not results.is_file():
        return "incomplete"
    try:
        listed = json.loads(results.read_text(encoding="utf-8"))["output_files"]
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise MlscaleError(f"{results} lists no output_files ({error})") from None
    present = {p.name for p in path.iterdir() if p.name not in (RESULTS, LOCK)}
    if present != set(listed):
        raise MlscaleError(f"{path}: results.json lists {sorted(listed)} but the directory "
                           f"holds {sorted(present)}")
    for name, entry in listed.items():
        if sha256(path / name) != entry["sha256"]:
            raise MlscaleError(f"{path / name} is not the file results.json describes "
                               f"(SHA-256 differs)")
    return "complete"
