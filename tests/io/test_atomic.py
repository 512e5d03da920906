"""Atomic writes: complete file or nothing, never a half-written one."""

import json

import numpy as np
import pytest

from mlscale.errors import MlscaleError
from mlscale.io import atomic_path, write_json_atomic, write_text_atomic


def test_atomic_path_renames_on_success(tmp_path):
    target = tmp_path / "out.h5"
    with atomic_path(target) as tmp:
        assert tmp.parent == tmp_path and tmp.name.endswith("out.h5") and tmp != target
        tmp.write_text("data")
        assert not target.exists()
    assert target.read_text() == "data"
    assert [p.name for p in tmp_path.iterdir()] == ["out.h5"]


def test_atomic_path_keeps_old_file_and_cleans_up_on_failure(tmp_path):
    target = tmp_path / "out.txt"
    target.write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("crash while writing")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["out.txt"]


def test_atomic_path_errors_when_nothing_written(tmp_path):
    with pytest.raises(MlscaleError, match="nothing was written"):
        with atomic_path(tmp_path / "x"):
            pass


def test_write_json_atomic_converts_numpy(tmp_path):
    path = tmp_path / "info.json"
    write_json_atomic(path, {"a": np.float64(1.5), "b": np.arange(3), "c": [np.int64(2)]})
    assert json.loads(path.read_text()) == {"a": 1.5, "b": [0, 1, 2], "c": [2]}


def test_write_json_atomic_rejects_nan_and_objects(tmp_path):
    with pytest.raises(MlscaleError, match="JSON"):
        write_json_atomic(tmp_path / "x.json", {"a": float("nan")})
    with pytest.raises(MlscaleError, match="JSON"):
        write_json_atomic(tmp_path / "x.json", {"a": object()})
    assert list(tmp_path.iterdir()) == []


def test_write_text_atomic_missing_directory(tmp_path):
    write_text_atomic(tmp_path / "a.txt", "hello")
    assert (tmp_path / "a.txt").read_text() == "hello"
    with pytest.raises(MlscaleError, match="does not exist"):
        write_text_atomic(tmp_path / "no" / "a.txt", "hello")
