"""Atomic file output: write to a temporary name in the target directory, then rename.

A reader never sees a half-written file: either the old file or the complete new
one. The temporary name ends with the target's name, so tools that choose a format
by extension (openPMD's ``.h5``, ASE) see the right one. A failed write (a full disk,
a read-only directory) raises :class:`MlscaleError` naming the target and the reason
before anything is renamed; the temporary file is fsynced before the rename, so a
write error the kernel reports only at writeback is caught too.
"""

from __future__ import annotations

import errno
import json
import os
import secrets
from contextlib import contextmanager
from pathlib import Path

from ..errors import MlscaleError

#: prefix of every temporary file (stale ones of killed runs: ``TEMPORARY_PREFIX*``)
TEMPORARY_PREFIX = ".tmp-"


def temporary_path(path) -> Path:
    """A fresh hidden name in ``path``'s directory that ends with ``path``'s name."""
    path = Path(path)
    if not path.parent.is_dir():
        raise MlscaleError(f"cannot write {path}: directory {path.parent} does not exist")
    return path.with_name(f"{TEMPORARY_PREFIX}{os.getpid()}-{secrets.token_hex(4)}-{path.name}")


def write_error(path, error: OSError) -> MlscaleError:
    """The MlscaleError of a failed write of ``path``: its name and the system's reason."""
    reason = error.strerror or str(error)
    return MlscaleError(f"cannot write {path}: {reason}"
                        + (" (disk full)" if error.errno == errno.ENOSPC else ""))


def free_bytes(directory) -> int:
    """Bytes an unprivileged user may still write on ``directory``'s filesystem."""
    stat = os.statvfs(directory)
    return stat.f_bavail * stat.f_frsize


def check_free_space(path, nbytes: int) -> None:
    """MlscaleError unless ``path``'s filesystem has room for ``nbytes`` (bytes)."""
    path = Path(path)
    free = free_bytes(path.parent)
    if free < nbytes:
        raise MlscaleError(f"cannot write {path}: it needs {nbytes / 2**20:.1f} MiB, the "
                           f"filesystem of {path.parent} has {free / 2**20:.1f} MiB free")


def fsync_file(path) -> None:
    """Flush ``path``'s data to the disk (OSError if the kernel could not write it)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def commit(tmp, path) -> None:
    """fsync ``tmp`` and rename it to ``path``; MlscaleError naming ``path`` on failure."""
    try:
        fsync_file(tmp)
        os.replace(tmp, path)
    except OSError as error:
        raise write_error(path, error) from None


def remove_quietly(path) -> None:
    """Delete a file if it exists (cleanup after a failed write)."""
    try:
        os.remove(path)
    except FileNotFoundError:
        pass


@contextmanager
def atomic_path(path):
    """Yield a temporary path; on success move it to ``path``, on failure delete it."""
    path = Path(path)
    tmp = temporary_path(path)
    try:
        yield tmp
        if not tmp.exists():
            raise MlscaleError(f"nothing was written for {path}")
        commit(tmp, path)
    except OSError as error:
        remove_quietly(tmp)
        raise write_error(path, error) from None
    except BaseException:
        remove_quietly(tmp)
        raise


def _json_default(obj):
    if hasattr(obj, "tolist"):  # numpy scalars and arrays
        return obj.tolist()
    raise TypeError(f"{type(obj).__name__} is not JSON serialisable")


def write_text_atomic(path, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    with atomic_path(path) as tmp:
        Path(tmp).write_text(text, encoding="utf-8")


def write_json_atomic(path, obj) -> None:
    """Write ``obj`` as indented JSON atomically (numpy scalars/arrays become lists)."""
    try:
        text = json.dumps(obj, indent=4, default=_json_default, allow_nan=False)
    except (TypeError, ValueError) as error:
        raise MlscaleError(f"cannot write {path} as JSON: {error}") from None
    write_text_atomic(path, text + "\n")
