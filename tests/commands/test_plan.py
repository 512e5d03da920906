"""`mlscale plan` on the command line: the numbers it prints are the cost model's, and
bad arguments fail with one clear message."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mlscale.costmodel import memory_MiB, read_constants

CONSTANTS_FILE = Path(__file__).resolve().parents[1] / "data" / "bench_constants.json"
CONSTANTS = read_constants(CONSTANTS_FILE)  # made up, not measured


def plan_cli(capsys, *args):
    """`mlscale plan ...` in this process: (exit status, stdout, stderr)."""
    from mlscale.cli import main

    status = main(["plan", *map(str, args)])
    out, err = capsys.readouterr()
    return status, out, err


def test_plan_command_for_the_131072_atom_supercell(al_model, capsys):
    from mlscale.examples import DATA

    status, out, err = plan_cli(capsys, "--supercell-of", DATA / "al_example.xyz", "--repeat",
                                16, 16, 16, "--model", al_model, "--ranks", 4096,
                                "--chunk-points", 8192, "--constants", CONSTANTS_FILE, "--json")
    assert status == 0, err
    result = json.loads(out)
    # pw.x's grid for 129.6 Å at 100 Ry (2·389 + 1 = 779 raised to 2^5·5^2; FFTW builds of
    # QE reject the factor 7 of 784)
    assert result["grid"] == [800, 800, 800]
    assert result["atoms"] == 131072
    assert result["load"]["points"] == 125000  # 50³
    assert 28 <= result["load"]["atoms_in_block"] <= 36  # 32 on average
    # the density's window keeps 22 of the 171 energies per point (0.1 eV steps at 298 K:
    # a ±0.05 eV bracket widened by 36.04 k_BT and a hat's step either side, ≤ 2.15 eV)
    by_hand = memory_MiB(CONSTANTS, 125000, 7500, 171, 131072, kept_energies=22)["total"]
    assert result["memory_MiB"]["total"] == pytest.approx(by_hand)


def test_plan_command_bulk_crystal_and_errors(al_model, capsys):
    crystal = ["--atoms", 2048, "--element", "Al", "--lattice", 4.05]
    status, out, err = plan_cli(capsys, *crystal, "--model", al_model, "--memory-per-rank", 0.6,
                                "--constants", CONSTANTS_FILE)
    assert status == 0, err
    assert "the fewest with memory <= 0.6 GiB" in out
    for args, message in (([*crystal[:1], 2000, *crystal[2:], "--ranks", 2],
                           "not a cubic supercell"),
                          (["--ranks", 2], "give a structure"),
                          (crystal, "rank count or a memory or time budget"),
                          ([*crystal, "--ranks", 2, "--memory-per-rank", 1], "not both"),
                          ([*crystal, "--ranks", 2, "--constants", "/nonexistent/b.json"],
                           "run `mlscale bench`")):
        if "--constants" not in args:
            args = [*args, "--constants", CONSTANTS_FILE]
        status, out, err = plan_cli(capsys, *args, "--model", al_model)
        assert status == 1 and err.startswith("mlscale: error:") and message in err, err


def test_plan_command_refuses_constants_of_other_descriptors(al_model, capsys, tmp_path):
    other = tmp_path / "bench.json"
    other.write_text(json.dumps({**CONSTANTS.to_dict(), "twojmax": 8}))
    status, out, err = plan_cli(capsys, "--atoms", 32, "--element", "Al", "--lattice", 4.05,
                                "--ranks", 2, "--model", al_model, "--constants", other)
    assert status == 1 and "for twojmax 8, the model uses 10" in err, err
