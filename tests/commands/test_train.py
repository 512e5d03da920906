"""The train command: options from the settings dataclasses, config files checked key by
key, command line over config file over defaults, a model written."""

from __future__ import annotations

import argparse
import json
import re
from dataclasses import fields

import pytest

from mlscale.cli import build_parser
from mlscale.cli import main as cli_main
from mlscale.commands import train as command
from mlscale.config import ModelSettings, TrainingSettings, checked_fields, field_default
from mlscale.errors import MlscaleError
from mlscale.model import load_model
from tests.snapshot_data import write_snapshots

REQUIRED = ["--train", "a.in.npy:a.out.npy", "--validation", "b.in.npy:b.out.npy",
            "--energy-grid", "-5", "2.5", "4", "--temperature", "300", "--species", "Be",
            "-o", "model.safetensors"]


def parse(*argv: str) -> argparse.Namespace:
    return build_parser().parse_args(["train", *argv])


def test_cli_train_writes_model(tmp_path, capsys):
    train_specs = write_snapshots(tmp_path, 2)
    validation_specs = write_snapshots(tmp_path, 1, seed=1)
    config = tmp_path / "train.toml"
    config.write_text('epochs = 2\nbatch-size = 16\nlayers = [5, 8, 4]\n\n'
                      '[descriptors]\ntwojmax = 2\nspecies = ["Be"]\n')
    output = tmp_path / "model.safetensors"
    status = cli_main(["train", "--config", str(config), "--train", *train_specs,
                       "--validation", *validation_specs, "--energy-grid", "-5", "2.5", "4",
                       "--temperature", "300", "--species", "Be", "--valence-electrons",
                       "Be=2", "--epochs", "3", "-o", str(output)])
    assert status == 0
    out = capsys.readouterr().out
    assert [line.split()[:2] for line in out.splitlines() if line.startswith("epoch")] == [
        ["epoch", "1"], ["epoch", "2"], ["epoch", "3"]]
    assert "model written to" in out
    metadata = load_model(output).info.metadata
    assert metadata["model"]["layers"] == [5, 8, 4]
    assert metadata["valence_electrons"] == {"Be": 2.0}
    assert metadata["training"]["epochs_run"] == 3 and metadata["training"]["ranks"] == 1
    assert cli_main(["train", "--train", *train_specs, "-o", str(output)]) == 1
    assert "--energy-grid is required" in capsys.readouterr().err
    assert cli_main(["train", "--validation", *validation_specs, "--energy-grid", "-5", "2.5",
                     "4", "--temperature", "300", "--species", "Be", "-o", str(output)]) == 1
    assert "--train is required" in capsys.readouterr().err


def test_defaults_are_the_settings_dataclasses_defaults():
    """With only the required options, the settings are the dataclasses' own defaults."""
    job = command.job_from_options(command.resolve_options(parse(*REQUIRED)))
    assert job.training == TrainingSettings()
    assert job.model.activation == ModelSettings().activation
    assert job.model.layers == (91, 100, 100, 4)  # MALA's twojmax 10: 91 features


def test_help_shows_each_default(monkeypatch):
    """Every optional setting's --help line ends in its dataclass default."""
    monkeypatch.setenv("COLUMNS", "1000")  # no line breaks inside the help texts
    parser = argparse.ArgumentParser()
    command.add_arguments(parser)
    text = " ".join(parser.format_help().split())
    for item in fields(TrainingSettings):
        default = field_default(item)
        if default is not None:
            assert f"(default: {default})" in text, item.name
    assert "(default: LeakyReLU)" in text and "(default: ddp)" in text
    assert "--train IN:OUT [IN:OUT ...] training snapshots" in text
    assert text.count("(required)") == len(command.REQUIRED)


@pytest.mark.parametrize("suffix", [".toml", ".json"])
def test_config_file_values_are_checked_per_key(tmp_path, suffix):
    def write(text_toml: str, data: dict):
        path = tmp_path / f"train{suffix}"
        path.write_text(text_toml if suffix == ".toml" else json.dumps(data))
        return path

    bad = write('epochs = "3"\n', {"epochs": "3"})
    with pytest.raises(MlscaleError, match=r"train\.(toml|json): option 'epochs' must be an "
                                           r"integer, got '3' \(str\)"):
        command.read_config(bad)
    bad = write("learning-rate = [0.1]\n", {"learning-rate": [0.1]})
    with pytest.raises(MlscaleError, match=r"'learning_rate' must be a number, got \[0\.1\]"):
        command.read_config(bad)
    bad = write('species = "Be"\n', {"species": "Be"})
    with pytest.raises(MlscaleError, match="'species' must be a list of strings or null"):
        command.read_config(bad)
    bad = write("epoch = 3\n", {"epoch": 3})
    with pytest.raises(MlscaleError, match=r"unknown option\(s\) in .*: epoch"):
        command.read_config(bad)
    good = write("patience = 3\nlr-factor = 1\nlayers = [5, 8, 4]\n",
                 {"patience": 3, "lr-factor": 1, "layers": [5, 8, 4]})
    assert command.read_config(good) == {"early_stopping_patience": 3, "lr_factor": 1.0,
                                         "layers": (5, 8, 4)}
    assert isinstance(command.read_config(good)["lr_factor"], float)


def test_command_line_over_config_over_defaults(tmp_path, capsys):
    config = tmp_path / "train.toml"
    config.write_text("epochs = 7\nseed = 5\n\n[descriptors]\ntwojmax = 2\nspecies = ['Be']\n")
    options = command.resolve_options(parse(*REQUIRED, "--config", str(config), "--seed", "9"))
    job = command.job_from_options(options)
    assert (job.training.epochs, job.training.seed) == (7, 9)
    assert job.training.batch_size == TrainingSettings().batch_size
    assert job.model.layers == (5, 100, 100, 4)  # twojmax 2: 5 features
    config.write_text("[descriptors]\ntwojmax = 2.5\nspecies = ['Be']\n")
    with pytest.raises(MlscaleError, match="bispectrum setting 'twojmax' must be an integer, "
                                           "got 2.5"):
        command.job_from_options(command.resolve_options(parse(*REQUIRED, "--config",
                                                               str(config))))
    config.write_text('electron-weight = "high"\n')
    assert cli_main(["train", *REQUIRED, "--config", str(config)]) == 1
    assert ("option 'electron_weight' must be a number, got 'high' (str)"
            in capsys.readouterr().err)


def test_indistinguishable_species_are_warned_about(tmp_path, capsys):
    """Two species with MALA's default radius and weight: a warning on stderr before
    training starts (here it then fails on the absent snapshot files)."""
    argv = list(REQUIRED)
    species = argv.index("--species")
    argv[species + 1:species + 2] = ["Be", "H"]
    argv[argv.index("-o") + 1] = str(tmp_path / "model.safetensors")
    assert cli_main(["train", *argv]) == 1
    err = capsys.readouterr().err
    assert "mlscale: warning: species Be, H have the same bispectrum radius and weight" in err
    assert "file not found" in err


def test_tables_are_checked_entry_by_entry():
    """A table of numbers (valence electrons per species) refuses a string entry."""
    with pytest.raises(MlscaleError, match=re.escape(
            "option 'valence_electrons' must be a list of strings or a table of numbers, got "
            "{'Be': 'two'} (dict)")):
        checked_fields(command.TrainOptions, {"valence_electrons": {"Be": "two"}}, "option")
    values = checked_fields(command.TrainOptions, {"valence_electrons": {"Be": 2}}, "option")
    assert values == {"valence_electrons": {"Be": 2.0}}
    assert isinstance(values["valence_electrons"]["Be"], float)
