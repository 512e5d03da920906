"""The built-in example structure and the shipped model (package data)."""

from __future__ import annotations

from pathlib import Path

from .errors import MlscaleError

DATA = Path(__file__).resolve().parent / "data"


def builtin_example():
    """A thermally displaced fcc Al supercell (32 atoms, 298 K) that is not in the training set."""
    from .io.structure import read_structure

    return read_structure(DATA / "al_example.xyz")


def shipped_model_path() -> Path:
    """The shipped aluminium model (safetensors)."""
    path = DATA / "al_model.safetensors"
    if not path.exists():
        raise MlscaleError(f"the shipped model is missing from the installation ({path})")
    return path
