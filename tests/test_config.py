"""Settings read from dicts (JSON, TOML, model metadata) are checked key by key.

The rules checked: an unknown key is an error naming it and the known ones; a value of
another type than the field's annotation is an error naming the key, the expected type
and the value found; an integer is a valid float (and becomes one), a list a valid tuple.
"""

from __future__ import annotations

import json
import re
from dataclasses import fields

import pytest
import tomllib

from mlscale.config import (
    BispectrumSettings,
    EnergyGrid,
    ModelSettings,
    TrainingSettings,
    checked_fields,
    field_doc,
)
from mlscale.datagen.settings import DFTSettings, LdosSettings
from mlscale.errors import MlscaleError


@pytest.mark.parametrize("cls, key, value, message", [
    (TrainingSettings, "epochs", "3", "training setting 'epochs' must be an integer, got '3' "
                                      "(str)"),
    (TrainingSettings, "batch_size", True, "'batch_size' must be an integer, got True (bool)"),
    (TrainingSettings, "learning_rate", "1e-3", "'learning_rate' must be a number, got '1e-3'"),
    (TrainingSettings, "electron_fermi_level", [0.0], "'electron_fermi_level' must be a number "
                                                      "or null, got [0.0] (list)"),
    (TrainingSettings, "output_scaling", 1, "'output_scaling' must be a string, got 1 (int)"),
    (EnergyGrid, "count", 11.0, "energy grid setting 'count' must be an integer, got 11.0"),
    (BispectrumSettings, "radii", [0.5, "a"], "'radii' must be a list of numbers"),
    (BispectrumSettings, "species", "Al", "'species' must be a list of strings, got 'Al'"),
    (ModelSettings, "layers", "91 100 11", "model setting 'layers' must be a list of integers"),
    (DFTSettings, "kpoints", [2, 2], "DFT setting 'kpoints' must be a list of 3 integers, got "
                                     "[2, 2]"),
    (DFTSettings, "pseudopotentials", ["Al.UPF"], "'pseudopotentials' must be a table"),
    (LdosSettings, "energy_grid", 5, "'energy_grid' must be a table of EnergyGrid settings"),
])
def test_wrong_type_names_key_expected_type_and_value(cls, key, value, message):
    with pytest.raises(MlscaleError, match=re.escape(message)):
        cls.from_dict({key: value})


@pytest.mark.parametrize("cls", [TrainingSettings, BispectrumSettings, ModelSettings,
                                 EnergyGrid, DFTSettings])
def test_unknown_key_names_it_and_the_known_ones(cls):
    known = ", ".join(f.name for f in fields(cls))
    with pytest.raises(MlscaleError, match=rf"unknown .*'colour' \(known: {known}\)"):
        cls.from_dict({"colour": "blue"})


def test_toml_and_json_values_become_the_field_types():
    """TOML integers for floats and arrays for tuples give the same settings as Python's."""
    text = ("start = -5\nstep = 2\ncount = 11\n", "twojmax = 2\nrcutfac = 4\nspecies = ['Be', "
            "'H']\nradii = [0.5, 1]\nweights = [1, 1]\n")
    grid = EnergyGrid.from_dict(tomllib.loads(text[0]))
    assert grid == EnergyGrid(-5.0, 2.0, 11)
    assert isinstance(grid.start, float) and isinstance(grid.step, float)
    bispectrum = BispectrumSettings.from_dict(json.loads(json.dumps(tomllib.loads(text[1]))))
    assert bispectrum == BispectrumSettings(twojmax=2, rcutfac=4.0, species=("Be", "H"),
                                            radii=(0.5, 1.0), weights=(1.0, 1.0))
    assert isinstance(bispectrum.rcutfac, float)
    assert ModelSettings.from_dict({"layers": [5, 8, 4]}).layers == (5, 8, 4)
    training = TrainingSettings.from_dict({"learning_rate": 1, "electron_fermi_level": None})
    assert training.learning_rate == 1.0 and isinstance(training.learning_rate, float)
    assert DFTSettings.from_dict({"kpoints": [3, 3, 1], "ecutrho": 80}).kpoints == (3, 3, 1)


@pytest.mark.parametrize("settings", [
    TrainingSettings(epochs=3, electron_weight=2.0, electron_fermi_level=0.5),
    BispectrumSettings().with_species(["Be", "H"]), ModelSettings(layers=(3, 4)),
    EnergyGrid(-1.0, 0.5, 3), DFTSettings(kpoints=(1, 2, 3)), LdosSettings()])
def test_settings_round_trip_through_json(settings):
    data = json.loads(json.dumps(settings.to_dict()))
    assert type(settings).from_dict(data) == settings


def test_checked_fields_refuses_a_non_table():
    with pytest.raises(MlscaleError, match="training settings must be a table"):
        checked_fields(TrainingSettings, [1, 2], "training setting")


def test_every_training_setting_is_described():
    """--help is generated from these descriptions: none may be missing."""
    for cls in (TrainingSettings, ModelSettings):
        assert all(field_doc(item) for item in fields(cls)), cls


def test_species_with_equal_radius_and_weight_are_reported_indistinguishable():
    """Default per-species radii and weights make species look alike to the bispectrum."""
    alike = BispectrumSettings().with_species(["Al", "Cu", "H"])
    assert alike.indistinguishable_species() == [("Al", "Cu", "H")]
    assert "species Al, Cu, H have the same bispectrum radius and weight" in (
        alike.species_warning())
    partly = BispectrumSettings().with_species(["Al", "Cu", "H"], radii=[0.5, 0.5, 0.3],
                                               weights=[1.0, 1.0, 1.0])
    assert partly.indistinguishable_species() == [("Al", "Cu")]
    distinct = BispectrumSettings().with_species(["Al", "Cu"], radii=[0.5, 0.5],
                                                 weights=[1.0, 0.9])
    assert distinct.indistinguishable_species() == [] and distinct.species_warning() is None
    assert BispectrumSettings().species_warning() is None  # one species
