"""Synthetic training snapshots shared by the data, training and train-command tests.

Not a test module: ``write_snapshots`` writes MALA-layout ``.npy`` pairs whose LDOS is a
smooth function of the descriptors, ``full_arrays`` reads them back eagerly with
``np.load`` as the tests' independent reference.
"""

from __future__ import annotations

import numpy as np

from mlscale.data import SnapshotFiles

N_FEATURES, N_ENERGIES, GRID = 5, 4, (4, 3, 5)  # twojmax 2: 5 features


def write_snapshots(directory, count, seed=0, coordinates=True, grid=GRID, sign=1.0):
    """Synthetic snapshots: descriptors with unequal scales (+3 coordinate columns, MALA's
    .in.npy layout) and an LDOS that is a smooth function of them. Returns 'IN:OUT' strings."""
    rng = np.random.default_rng(seed)
    mixing = np.random.default_rng(99).normal(size=(N_FEATURES, N_ENERGIES))
    specs = []
    for i in range(count):
        x = rng.normal(size=(*grid, N_FEATURES)) * [1, 10, 0.1, 5, 2] + [3, -20, 0, 100, 1]
        standard = (x - [3, -20, 0, 100, 1]) / [1, 10, 0.1, 5, 2]
        y = sign * (np.tanh(standard @ mixing) + 1.5) * 0.02
        if coordinates:
            x = np.concatenate([rng.uniform(size=(*grid, 3)), x], axis=-1)
        name = f"s{seed}_{i}"
        np.save(directory / f"{name}.in.npy", x.astype(np.float32))
        np.save(directory / f"{name}.out.npy", y.astype(np.float32))
        specs.append(f"{directory / name}.in.npy:{directory / name}.out.npy")
    return specs


def full_arrays(specs):
    """Descriptors and LDOS of snapshots read eagerly with np.load (the reference)."""
    xs, ys = [], []
    for spec in specs:
        files = SnapshotFiles.parse(spec)
        x = np.load(files.descriptors)
        xs.append(x.reshape(-1, x.shape[-1])[:, -N_FEATURES:].astype(np.float64))
        ys.append(np.load(files.ldos).reshape(-1, N_ENERGIES).astype(np.float64))
    return np.concatenate(xs), np.concatenate(ys)
