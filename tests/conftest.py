"""Shared fixtures: where MALA's public Be2 test data lives, and small helpers."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
MALA_DATA = Path(os.environ.get("MLSCALE_MALA_DATA", ROOT.parent / "shared" / "mala-test-data"))


@pytest.fixture(scope="session")
def be2() -> Path:
    """Directory of MALA's Be2 test data; skips the test when it is absent."""
    path = MALA_DATA / "Be2"
    if not (path / "Be_snapshot0.in.npy").exists():
        pytest.skip(f"MALA test data not found at {path} (set MLSCALE_MALA_DATA)")
    return path
