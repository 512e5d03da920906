"""mlscale.costmodel.constants: the bench constants' file (round trip, bad files, path)."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest

from mlscale.costmodel import (
    BenchConstants,
    default_constants_path,
    read_constants,
    write_constants,
)
from mlscale.errors import MlscaleError

DATA = Path(__file__).resolve().parents[1] / "data"
CONSTANTS = read_constants(DATA / "bench_constants.json")


def test_constants_file_holds_the_numbers_written_in_it():
    data = json.loads((DATA / "bench_constants.json").read_text())
    assert CONSTANTS.layers == (91, 400, 400, 171)
    assert CONSTANTS.point_bytes == 700.0 == data["point_bytes"]
    assert CONSTANTS.energy_overhead_MiB == 30.0


def test_constants_round_trip_and_bad_files(tmp_path):
    path = tmp_path / "bench.json"
    path.write_text(json.dumps({**CONSTANTS.to_dict(), "runs": []}))
    assert read_constants(path) == CONSTANTS
    with pytest.raises(MlscaleError, match="mlscale bench"):
        read_constants(tmp_path / "missing.json")
    path.write_text(json.dumps({"format": "something else"}))
    with pytest.raises(MlscaleError, match="not an mlscale-bench"):
        read_constants(path)
    path.write_text("{not json")
    with pytest.raises(MlscaleError, match="cannot read"):
        read_constants(path)


def test_incomplete_constants_are_refused(tmp_path):
    path = tmp_path / "bench.json"
    data = CONSTANTS.to_dict()
    del data["point_bytes"]
    path.write_text(json.dumps(data))
    with pytest.raises(MlscaleError, match="incomplete or invalid"):
        read_constants(path)


def test_written_constants_read_back_with_their_record(tmp_path):
    path = tmp_path / "new" / "dir" / "bench.json"
    constants = replace(CONSTANTS, energy_point_s=None, energy_point_bytes=None,
                        energy_overhead_MiB=None)
    write_constants(path, constants, {"runs": [{"points": 1}], "model": "m.safetensors"})
    assert read_constants(path) == constants
    assert json.loads(path.read_text())["runs"] == [{"points": 1}]


def test_default_path_is_in_the_cache_directory(monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert default_constants_path() == tmp_path / "mlscale" / "bench.json"
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert default_constants_path() == Path.home() / ".cache" / "mlscale" / "bench.json"


def test_from_dict_names_its_source():
    with pytest.raises(MlscaleError, match="^my.json is not"):
        BenchConstants.from_dict({}, "my.json")
