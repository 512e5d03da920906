"""Atomic file output: write to a temporary name in the target directory, then rename.

A reader never sees a half-written file: either the old file or the complete new
one. The temporary name ends with the target's name, so tools that choose a format
by extension (openPMD's ``.h5``, ASE) see the right one.
"""

from __future__ import annotations

import json
import os
import secrets
from contextlib import contextmanager
from pathlib import Path

from ..errors import MlscaleError


def temporary_path(path) -> Path:
    """A fresh hidden name in ``path``'s directory that ends with ``path``'s name."""
    path = Path(path)
    if not path.parent.is_dir():
        raise MlscaleError(f"cannot write {path}: directory {path.parent} does not exist")
    return path.with_name(f".tmp-{os.getpid()}-{secrets.token_hex(4)}-{path.name}")


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
        os.replace(tmp, path)
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
