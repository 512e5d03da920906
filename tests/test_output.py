"""Files and provenance of a run (mlscale.output)."""

from __future__ import annotations

import subprocess

import mlscale
from mlscale.output import provenance
from mlscale.parallel import self_comm


def test_provenance_names_version_files_and_their_sha256(tmp_path):
    model = tmp_path / "m.safetensors"
    model.write_bytes(b"not really a model" * 1000)
    info = provenance(self_comm(), model=model, structure=None)
    expected = subprocess.run(["sha256sum", str(model)], capture_output=True, text=True,
                              check=True).stdout.split()[0]
    assert info["files"]["model"] == {"path": str(model.resolve()), "sha256": expected}
    assert info["files"]["structure"] is None
    assert info["mlscale_version"] == mlscale.__version__ and info["ranks"] == 1
    assert info["date_utc"].endswith("+00:00") and info["command"]
