"""Compact records: the subsampled LDOS, density and info of a full snapshot, read back.

The reference is a synthetic full snapshot written here with plain NumPy/JSON; the
recomputed descriptors are checked against those of the full grid at the same points.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from ase.build import bulk

from mlscale.config import BispectrumSettings
from mlscale.datagen.compact import (
    CompactSettings,
    read_compact_record,
    record_training_arrays,
    subsample_indices,
    write_compact_record,
)
from mlscale.descriptors import compute_descriptors
from mlscale.errors import MlscaleError
from mlscale.grid import DistributedGrid, Grid

SHAPE, NE = (7, 6, 5), 4


@pytest.fixture()
def full_snapshot(tmp_path):
    rng = np.random.default_rng(3)
    ldos = rng.uniform(0, 0.05, size=(*SHAPE, NE)).astype(np.float32)
    density = rng.uniform(0, 0.1, size=(*SHAPE, 1))
    np.save(tmp_path / "s_00.out.npy", ldos)
    np.save(tmp_path / "s_00.dens.npy", density)
    info = {"fermi_energy_dft": 7.7, "grid_dimensions": list(SHAPE), "files": {"ldos": "x"},
            "cell": (np.diag([2.0, 3.0, 4.0]) + 0.5 * np.eye(3, k=1)).tolist()}
    (tmp_path / "s_00.info.json").write_text(json.dumps(info))
    return tmp_path / "s_00", ldos, density[..., 0]


def test_subsample_takes_every_stride_th_point_per_axis():
    index_gc = subsample_indices((7, 6, 5), 3)
    expected = [(i, j, k) for i in (0, 3, 6) for j in (0, 3) for k in (0, 3)]
    assert [tuple(v) for v in index_gc] == expected


@pytest.mark.parametrize("dtype, rtol", [("float16", 2**-11), ("float32", 0.0)])
def test_record_holds_the_ldos_at_the_subsampled_points(tmp_path, full_snapshot, dtype, rtol):
    stem, ldos, density = full_snapshot
    path = write_compact_record(stem, tmp_path / "records", "s_00", CompactSettings(2, dtype))
    info, arrays = read_compact_record(tmp_path / "records", "s_00")
    assert path == tmp_path / "records" / "s_00.info.json"
    i, j, k = np.meshgrid(range(0, 7, 2), range(0, 6, 2), range(0, 5, 2), indexing="ij")
    np.testing.assert_array_equal(arrays["index_gc"],
                                  np.stack([i, j, k], -1).reshape(-1, 3))
    expected = ldos[i, j, k].reshape(-1, NE)
    np.testing.assert_allclose(arrays["ldos_ge"], expected, rtol=rtol, atol=2**-25)  # subnormals
    np.testing.assert_allclose(arrays["density_b"], density, rtol=2**-24)
    voxel = 2.0 * 3.0 * 4.0 / np.prod(SHAPE)  # det of the (upper triangular) cell
    np.testing.assert_allclose(arrays["dos_e"], ldos.astype(np.float64).sum(axis=(0, 1, 2)) * voxel,
                               rtol=1e-12)
    assert info["fermi_energy_dft"] == 7.7
    assert info["compact"]["stride"] == 2 and info["compact"]["dtype"] == dtype
    assert info["compact"]["points"] == len(expected)
    assert info["files"] == {"record": "s_00.npz"}


def test_bad_compact_settings_raise():
    with pytest.raises(MlscaleError, match="stride"):
        CompactSettings(stride=0)
    with pytest.raises(MlscaleError, match="dtype"):
        CompactSettings(dtype="int8")


def test_missing_record_raises_clear_error(tmp_path):
    with pytest.raises(MlscaleError, match="cannot read compact record"):
        read_compact_record(tmp_path, "nothing")


def test_training_arrays_have_the_descriptors_of_the_subsampled_points(tmp_path):
    """Descriptors from the coarse grid equal the full grid's at every stride-th point."""
    atoms = bulk("Al", "fcc", a=4.05, cubic=True)
    atoms.positions += np.random.default_rng(5).normal(scale=0.1, size=(4, 3))
    shape, stride = (6, 6, 4), 2
    ldos = np.random.default_rng(6).uniform(size=(*shape, NE)).astype(np.float32)
    np.save(tmp_path / "a_00.out.npy", ldos)
    np.save(tmp_path / "a_00.dens.npy", np.ones((*shape, 1)))
    info = {"grid_dimensions": list(shape), "cell": atoms.cell.tolist(),
            "symbols": atoms.get_chemical_symbols(), "positions": atoms.positions.tolist()}
    (tmp_path / "a_00.info.json").write_text(json.dumps(info))
    write_compact_record(tmp_path / "a_00", tmp_path / "rec", "a_00",
                         CompactSettings(stride, "float32"))
    settings = BispectrumSettings(twojmax=2).with_species(["Al"])
    descriptors_pf, ldos_pe = record_training_arrays(tmp_path / "rec", "a_00", settings)
    full_bf = compute_descriptors(atoms, DistributedGrid(Grid(np.asarray(atoms.cell), shape)),
                                  settings, "native")
    np.testing.assert_allclose(descriptors_pf,
                               full_bf[::2, ::2, ::2].reshape(-1, settings.n_features),
                               rtol=1e-12, atol=1e-12)
    np.testing.assert_array_equal(ldos_pe, ldos[::2, ::2, ::2].reshape(-1, NE))


def test_training_arrays_need_a_stride_that_divides_the_grid(tmp_path, full_snapshot):
    stem, _, _ = full_snapshot
    info = json.loads(stem.with_suffix(".info.json").read_text())
    info.update(symbols=["Al"], positions=[[0, 0, 0]])
    stem.with_suffix(".info.json").write_text(json.dumps(info))
    write_compact_record(stem, tmp_path / "rec", "s_00", CompactSettings(2))
    with pytest.raises(MlscaleError, match="does not divide"):
        record_training_arrays(tmp_path / "rec", "s_00", BispectrumSettings(twojmax=2))
