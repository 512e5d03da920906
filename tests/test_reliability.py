"""Faults without data loss (issue 14): writes that fail raise and leave nothing under the
final name, a run's output directory is complete or visibly incomplete, signals end all
ranks, and inconsistent inputs are refused before the work. docs/reliability.md lists
the cases."""

from __future__ import annotations

import errno
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from mlscale.errors import MlscaleError
from mlscale.grid import DistributedGrid, Grid
from mlscale.io import atomic as atomic_module
from mlscale.io import read_openpmd, write_json_atomic, write_npy_distributed, write_openpmd
from mlscale.parallel import self_comm

ROOT = Path(__file__).resolve().parents[1]


# -- a small full filesystem -----------------------------------------------------------
@pytest.fixture
def small_fs(tmp_path):
    """A 256 KiB tmpfs mounted for the test (root and a working ``mount`` only)."""
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root")
    mount = tmp_path / "small"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(mount)],
                          capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs: {done.stderr.strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def _dgrid(shape=(40, 40, 40)) -> DistributedGrid:
    return DistributedGrid(Grid(np.eye(3) * 10.0, shape), self_comm())


def _names(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir())


# -- 1. writers raise before the rename --------------------------------------------------
def test_text_write_on_a_full_filesystem_names_the_file_and_keeps_the_old_one(small_fs):
    target = small_fs / "results.json"
    write_json_atomic(target, {"old": 1})
    with pytest.raises(MlscaleError, match=f"cannot write {target}.*No space left"):
        write_json_atomic(target, {"big": "x" * 400_000})
    assert _names(small_fs) == ["results.json"]
    assert target.read_text().strip().startswith("{") and '"old": 1' in target.read_text()


def test_injected_oserror_at_fsync_leaves_no_file_under_the_final_name(tmp_path, monkeypatch):
    def failing_fsync(fd):
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(atomic_module.os, "fsync", failing_fsync)
    target = tmp_path / "dos.csv"
    with pytest.raises(MlscaleError, match=f"cannot write {target}: Input/output error"):
        atomic_module.write_text_atomic(target, "energy_eV,dos_per_eV\n")
    assert _names(tmp_path) == []


def test_injected_enospc_while_writing_says_disk_full(tmp_path):
    target = tmp_path / "model.safetensors"
    with pytest.raises(MlscaleError, match=f"cannot write {target}: No space.*disk full"):
        with atomic_module.atomic_path(target) as tmp:
            tmp.write_bytes(b"half")
            raise OSError(errno.ENOSPC, "No space left on device")
    assert _names(tmp_path) == []


def test_openpmd_write_too_large_for_the_filesystem_is_refused_before_hdf5(small_fs):
    dgrid = _dgrid()  # 40³ float64 = 500 KiB > 256 KiB
    target = small_fs / "density.h5"
    with pytest.raises(MlscaleError, match=f"cannot write {target}: it needs 0.5 MiB"):
        write_openpmd(target, "Density", np.ones(dgrid.local_shape), dgrid)
    assert _names(small_fs) == []


def test_openpmd_write_that_hdf5_fails_silently_is_detected_by_reading_back(small_fs):
    """Without the free-space check HDF5 runs into the full disk, prints its error stack
    and returns normally; the read-back must catch it (in a subprocess: HDF5's state)."""
    script = textwrap.dedent(f"""
        import numpy as np
        import mlscale.io.openpmd_io as o
        from mlscale.errors import MlscaleError
        from mlscale.grid import DistributedGrid, Grid
        from mlscale.parallel import self_comm
        o.check_free_space = lambda path, nbytes: None
        dgrid = DistributedGrid(Grid(np.eye(3) * 10.0, (40, 40, 40)), self_comm())
        try:
            o.write_openpmd({str(small_fs / 'density.h5')!r}, "Density",
                            np.ones(dgrid.local_shape), dgrid)
        except MlscaleError as error:
            print("MLSCALE-ERROR", error)
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          cwd=ROOT, timeout=120)
    assert f"MLSCALE-ERROR cannot write {small_fs / 'density.h5'}: HDF5 failed" in done.stdout
    assert _names(small_fs) == []


def test_openpmd_write_verifies_a_good_file(tmp_path):
    dgrid = _dgrid((6, 5, 4))
    values_b = np.random.default_rng(3).random(dgrid.local_shape)
    write_openpmd(tmp_path / "d.h5", "Density", values_b, dgrid)
    np.testing.assert_array_equal(read_openpmd(tmp_path / "d.h5", "Density"), values_b)
    assert _names(tmp_path) == ["d.h5"]


def test_npy_write_on_a_full_filesystem_names_the_file(small_fs, monkeypatch):
    dgrid = _dgrid()
    target = small_fs / "descriptors.npy"
    with pytest.raises(MlscaleError, match=f"cannot write {target}: it needs"):
        write_npy_distributed(target, np.ones(dgrid.local_shape), dgrid)
    assert _names(small_fs) == []
    # past the free-space check (another writer filled the disk meanwhile): pwrite fails
    import mlscale.io.numpy_io as numpy_io

    monkeypatch.setattr(numpy_io, "check_free_space", lambda path, nbytes: None)
    with pytest.raises(MlscaleError, match=f"cannot write {target}: No space.*disk full"):
        write_npy_distributed(target, np.ones(dgrid.local_shape), dgrid)
    assert _names(small_fs) == []
