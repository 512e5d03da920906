"""Shared fixtures: where MALA's public Be2 test data and the Quantum ESPRESSO Al references
(tests/data/al_qe, its pseudopotential) live, and small helpers."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from tests.energy._qe import AL_DIR, QE_PSEUDO

ROOT = Path(__file__).resolve().parents[1]
MALA_DATA = Path(os.environ.get("MLSCALE_MALA_DATA", ROOT.parent / "shared" / "mala-test-data"))


@pytest.fixture(scope="session")
def be2() -> Path:
    """Directory of MALA's Be2 test data; skips the test when it is absent."""
    path = MALA_DATA / "Be2"
    if not (path / "Be_snapshot0.in.npy").exists():
        pytest.skip(f"MALA test data not found at {path} (set MLSCALE_MALA_DATA)")
    return path


@pytest.fixture(scope="module")
def al_qe():
    return json.loads((AL_DIR / "al.qe.json").read_text())


@pytest.fixture(scope="module")
def al_pseudo(tmp_path_factory):
    path = QE_PSEUDO / "Al.pz-vbc.UPF"
    if not path.is_file():
        pytest.skip(f"{path} not installed (Quantum ESPRESSO pseudopotentials)")
    return {"Al": path}


@pytest.fixture(scope="session")
def al_model(tmp_path_factory) -> Path:
    """An untrained Al model file: twojmax 10 (91 features), 91-400-400-171 (LDOS from
    -4.5 eV in 0.1 eV steps), ecutrho 100 Ry; the cost model's and pipeline's tests."""
    import numpy as np
    import torch

    from mlscale.config import BispectrumSettings, EnergyGrid, ModelSettings
    from mlscale.model import LDOSModel, save_model

    torch.manual_seed(1)
    model = LDOSModel(ModelSettings(layers=(91, 400, 400, 171)))
    model.set_scaling(np.zeros(91), np.ones(91), np.full(171, 0.02), np.full(171, 1e-5))
    metadata = {"descriptors": BispectrumSettings(species=("Al",)).to_dict(),
                "energy_grid": EnergyGrid(-4.5, 0.1, 171).to_dict(), "temperature_K": 298.0,
                "species": ["Al"], "valence_electrons": {"Al": 3}, "ecutrho_Ry": 100.0}
    path = tmp_path_factory.mktemp("model") / "al.safetensors"
    save_model(path, model, metadata)
    return path
