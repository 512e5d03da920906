"""check_atoms / type_indices: every error, and the periodic close-pair search."""

import itertools

import numpy as np
import pytest
from ase import Atoms
from ase.build import bulk

from mlscale.descriptors.atoms import check_atoms, closest_close_pair, type_indices
from mlscale.errors import MlscaleError


def _brute_closest(cell_cv, pos_av, cutoff, reach=6):
    """Closest periodic pair below cutoff by summing over (2*reach+1)^3 images."""
    shift_sc = np.array(list(itertools.product(range(-reach, reach + 1), repeat=3)))
    best = None
    for i, j in itertools.product(range(len(pos_av)), repeat=2):
        dist_s = np.linalg.norm(pos_av[j] + shift_sc @ cell_cv - pos_av[i], axis=1)
        if i == j:
            dist_s[len(shift_sc) // 2] = np.inf  # the zero shift
        if dist_s.min() < cutoff and (best is None or dist_s.min() < best):
            best = dist_s.min()
    return best


def _be_al():
    return Atoms("BeAl", positions=[[0, 0, 0], [1.5, 1.5, 1.5]], cell=[3, 3, 3], pbc=True)


def test_valid_structure_passes():
    check_atoms(_be_al(), ("Al", "Be"))


def test_type_indices_follow_species_order():
    atoms = Atoms("BeAlBe", positions=np.eye(3) * 1.5, cell=[4, 4, 4], pbc=True)
    np.testing.assert_array_equal(type_indices(atoms, ("Al", "Be")), [1, 0, 1])
    np.testing.assert_array_equal(type_indices(atoms, ("Be", "Al")), [0, 1, 0])


def test_no_atoms():
    with pytest.raises(MlscaleError, match="no atoms"):
        check_atoms(Atoms(cell=[3, 3, 3], pbc=True), ("Be",))


def test_unknown_species_named():
    with pytest.raises(MlscaleError, match=r"species Al not in .*\(Be, Si\)"):
        check_atoms(_be_al(), ("Be", "Si"))
    with pytest.raises(MlscaleError, match="species Al"):
        type_indices(_be_al(), ("Be",))


def test_non_finite_position():
    atoms = _be_al()
    atoms.positions[1, 2] = np.nan
    with pytest.raises(MlscaleError, match="atom 1 has a non-finite position"):
        check_atoms(atoms, ("Al", "Be"))
    atoms.positions[1, 2] = np.inf
    with pytest.raises(MlscaleError, match="atom 1 has a non-finite position"):
        check_atoms(atoms, ("Al", "Be"))


@pytest.mark.parametrize("cell", [
    np.zeros((3, 3)),                                   # no cell at all (e.g. an xyz file)
    [[3, 0, 0], [0, 3, 0], [6, 6, 0]],                  # coplanar vectors
    [[3, 0, 0], [0, 3, 0], [0, 0, 0]],                  # one vector missing
    [[3, 0, 0], [0, 3, 0], [0, 0, np.nan]],             # not finite
])
def test_degenerate_cell(cell):
    atoms = _be_al()
    atoms.set_cell(cell, scale_atoms=False)
    with pytest.raises(MlscaleError, match="cell"):
        check_atoms(atoms, ("Al", "Be"))


def test_close_pair_named_with_distance():
    atoms = Atoms("Be3", positions=[[0, 0, 0], [1.5, 1.5, 1.5], [1.5, 1.5, 1.8]],
                  cell=[3, 3, 3], pbc=True)
    with pytest.raises(MlscaleError, match=r"atoms 1 \(Be\) and 2 \(Be\) are 0\.3000 Å apart"):
        check_atoms(atoms, ("Be",))


def test_close_pair_across_the_periodic_boundary():
    atoms = Atoms("AlBe", positions=[[0.1, 1, 1], [2.8, 1, 1]], cell=[3, 3, 3], pbc=True)
    with pytest.raises(MlscaleError, match=r"atoms 0 \(Al\) and 1 \(Be\) are 0\.3000 Å apart"):
        check_atoms(atoms, ("Al", "Be"))


def test_cell_smaller_than_min_distance():
    atoms = Atoms("Be", positions=[[0, 0, 0]], cell=[0.3, 3, 3], pbc=True)
    message = r"atom 0 \(Be\) is 0\.3000 Å from its own periodic image"
    with pytest.raises(MlscaleError, match=message):
        check_atoms(atoms, ("Be",))
    # a skewed cell whose vectors are long but whose lattice has a short vector
    atoms.set_cell([[3, 0, 0], [2.9, 3, 0], [0, 0, 3]], scale_atoms=False)
    check_atoms(atoms, ("Be",), min_distance=0.5)
    atoms.set_cell([[3, 0, 0], [3.2, 0.3, 0], [0, 0, 3]], scale_atoms=False)
    with pytest.raises(MlscaleError, match="own periodic image"):
        check_atoms(atoms, ("Be",))


def test_min_distance_parameter():
    atoms = bulk("Al", "fcc", a=4.05)  # nearest neighbours 2.864 Å
    check_atoms(atoms, ("Al",), min_distance=2.8)
    with pytest.raises(MlscaleError, match=r"0 \(Al\) is 2\.8638 Å from its own periodic image"):
        check_atoms(atoms, ("Al",), min_distance=2.9)


def test_close_pair_search_matches_brute_force_image_sum():
    rng = np.random.default_rng(7)
    checked = 0
    while checked < 60:
        cell_cv = rng.normal(size=(3, 3)) * rng.uniform(0.5, 3.0)
        if abs(np.linalg.det(cell_cv)) < 0.1 * np.prod(np.linalg.norm(cell_cv, axis=1)):
            continue
        pos_av = rng.uniform(-1, 2, size=(rng.integers(2, 7), 3)) @ cell_cv
        cutoff = rng.uniform(0.2, 1.5)
        found = closest_close_pair(cell_cv, pos_av, cutoff)
        if found is not None and found[:2] == (0, 0):
            continue  # a short lattice vector: reported as such, not as the closest pair
        expected = _brute_closest(cell_cv, pos_av, cutoff)
        if expected is None:
            assert found is None
        else:
            assert found is not None and found[2] == pytest.approx(expected, rel=1e-12)
        checked += 1


def test_large_structure_finds_the_one_close_pair():
    atoms = bulk("Al", "fcc", a=4.05, cubic=True).repeat((30, 30, 28))  # 100800 atoms
    check_atoms(atoms, ("Al",))
    atoms.positions[54321] = atoms.positions[12345] + [0.2, 0.1, 0.0]
    with pytest.raises(MlscaleError, match=r"atoms 12345 \(Al\) and 54321 \(Al\) are 0\.2236 Å"):
        check_atoms(atoms, ("Al",))


def test_all_atoms_on_one_point_is_fast():
    atoms = Atoms("Al50000", positions=np.zeros((50000, 3)), cell=[10, 10, 10], pbc=True)
    with pytest.raises(MlscaleError, match=r"are 0\.0000 Å apart"):
        check_atoms(atoms, ("Al",))
